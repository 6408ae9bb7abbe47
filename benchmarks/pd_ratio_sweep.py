"""Which prefill:decode split serves the Mooncake trace best on a fixed number of GPUs?

For `--gpus N` GPUs (default 8), replays the Mooncake conversation trace (/work/shared/traces) on
every split P prefill + D decode workers (P + D = N, one GPU each) and on N aggregated workers,
all behind the KV router, with the prefill worker's KV transfer at `--bandwidth` GB/s of
`--kv-bytes-per-token` (default 64 GB/s, 131,072 B/token: an 8B Llama-class model in bf16). Writes a CSV
(one row per split: TTFT p50/p99, ITL mean/p99, output throughput per GPU, duration) and a PNG of
those against the split, and prints the winner of each metric. Figures are simulated, so they
are machine-independent; the wall time of each run is printed too.

    python benchmarks/pd_ratio_sweep.py [--gpus 8] [--speedup 1.0] [--out out/pd_ratio_sweep]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TRACE = ROOT.parent / "shared" / "traces" / "mooncake_conversation_trace.jsonl"
COLUMNS = ("split", "prefill", "decode", "p50_ttft_ms", "p99_ttft_ms", "mean_itl_ms", "p99_itl_ms",
           "output_tok_s_per_gpu", "duration_ms", "completed", "wall_s")


def run_split(prefill: int, decode: int, args: argparse.Namespace) -> dict[str, Any]:
    from cluster.replay import run_trace_replay

    common: dict[str, Any] = {"router_mode": "kv_router", "arrival_speedup_ratio": args.speedup}
    if prefill == 0:
        common.update(num_workers=decode)
    else:
        common.update(num_prefill_workers=prefill, num_decode_workers=decode,
                      prefill_engine_args={"engine": {"worker_type": "prefill",
                                                      "kv_transfer_bandwidth": args.bandwidth,
                                                      "kv_transfer_bytes_per_token": args.kv_bytes_per_token}},
                      decode_engine_args={"engine": {"worker_type": "decode"}})
    started = time.perf_counter()
    s = run_trace_replay(str(args.trace), **common).summary
    wall = time.perf_counter() - started
    return {"split": "agg" if prefill == 0 else f"{prefill}P{decode}D", "prefill": prefill, "decode": decode,
            "p50_ttft_ms": s["median_ttft_ms"], "p99_ttft_ms": s["p99_ttft_ms"], "mean_itl_ms": s["mean_itl_ms"],
            "p99_itl_ms": s["p99_itl_ms"], "output_tok_s_per_gpu": s["output_throughput_tok_s"] / args.gpus,
            "duration_ms": s["duration_ms"], "completed": s["completed_requests"], "wall_s": wall}


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no PNG (pip install matplotlib)", file=sys.stderr)
        return False
    labels = [r["split"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    panels = [("TTFT (ms)", ("p50_ttft_ms", "p99_ttft_ms")), ("ITL (ms)", ("mean_itl_ms", "p99_itl_ms")),
              ("output tokens/s per GPU", ("output_tok_s_per_gpu",)), ("duration (ms)", ("duration_ms",))]
    for ax, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            ax.plot(labels, [r[key] for r in rows], marker="o", label=key)
        ax.set_title(title)
        ax.set_yscale("log" if title.startswith("TTFT") else "linear")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Mooncake trace on {rows[0]['prefill'] + rows[0]['decode']} GPUs: prefill:decode split")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpus", type=int, default=8)
    p.add_argument("--trace", type=Path, default=TRACE)
    p.add_argument("--speedup", type=float, default=1.0, help="arrival speedup ratio (load)")
    p.add_argument("--bandwidth", type=float, default=64.0)
    p.add_argument("--kv-bytes-per-token", type=int, default=131072)
    p.add_argument("--out", type=Path, default=ROOT / "out" / "pd_ratio_sweep")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for prefill in range(0, args.gpus):
        decode = args.gpus - prefill
        row = run_split(prefill, decode, args)
        rows.append(row)
        print(" ".join(f"{k}={row[k]:.4g}" if isinstance(row[k], float) else f"{k}={row[k]}" for k in COLUMNS),
              flush=True)
    with open(args.out / "pd_ratio_sweep.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    plotted = plot(rows, args.out / "pd_ratio_sweep.png")
    full = [r for r in rows if r["completed"] == max(x["completed"] for x in rows)]
    for key, better in (("p50_ttft_ms", min), ("p99_ttft_ms", min), ("mean_itl_ms", min),
                        ("output_tok_s_per_gpu", max)):
        best = better(full, key=lambda r: r[key])
        print(f"best {key}: {best['split']} ({best[key]:.4g})")
    print(f"CSV: {args.out / 'pd_ratio_sweep.csv'}" + (f"  PNG: {args.out / 'pd_ratio_sweep.png'}" if plotted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
