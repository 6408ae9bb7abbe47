"""The same load on whole H100s, on MIG 3g.40gb slices and on HAMi shares (half a card each), the
planner choosing replicas in each: GPU-hours (vGPU-hours and physical card-hours) and SLA attainment
side by side. One node of 8 H100s, llama-3.1-8b, roofline timing; the sine load of sine_load.py.
Writes vgpu_planning.{csv,md,png} into --out.

    python planner/experiments/vgpu_planning.py --out out/vgpu [--max-rps 12]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tqdm import tqdm

from common import attainment, poisson_arrivals, run, sine_rate, write_csv, write_markdown, write_trace  # noqa: I001

H100 = "configs/accelerator/h100x8.toml"
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "whole H100": ({"mode": "default"}, {}),
    "MIG 3g.40gb": ({"mode": "mig", "profiles": ["3g.40gb", "3g.40gb"]}, {"profile": "3g.40gb"}),
    "HAMi 1/2 card": ({"mode": "hami-core", "device_split_count": 2, "gpu_scheduler_policy": "binpack"},
                      {"memory_gib": 40, "sm_fraction": 0.5}),
}
"""Name -> (node virtualization, deployment vgpu request)."""


def scenario(name: str, trace: Path, virt: dict[str, Any], vgpu: dict[str, Any], planner: dict[str, Any],
             startup_s: float) -> dict[str, Any]:
    return {"name": "vgpu", "model": "llama-3.1-8b",
            "cluster": {"nodes": [{"name": "n", "accelerator": H100, "virtualization": virt}]},
            "deployments": [{"name": "agg", "replicas": 1, "vgpu": vgpu, "placement": "binpack",
                             "engine": {"block_size": 16, "startup_time": startup_s,
                                        "timing_model": {"type": "roofline"}}}],
            "router": {"mode": "round_robin"}, "planner": planner,
            "workload": {"trace": str(trace), "trace_block_size": 512}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/vgpu"))
    ap.add_argument("--min-rps", type=float, default=2.0)
    ap.add_argument("--max-rps", type=float, default=24.0)
    ap.add_argument("--period-s", type=float, default=300.0)
    ap.add_argument("--isl", type=int, default=1024)
    ap.add_argument("--osl", type=int, default=128)
    ap.add_argument("--ttft-ms", type=float, default=500.0)
    ap.add_argument("--itl-ms", type=float, default=30.0)
    ap.add_argument("--interval-s", type=int, default=10)
    ap.add_argument("--startup-s", type=float, default=5.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    arrivals = poisson_arrivals(lambda t: sine_rate(t, args.min_rps, args.max_rps, args.period_s), args.max_rps,
                                args.period_s, args.seed)
    trace = write_trace(args.out / "vgpu_trace.jsonl", arrivals, args.isl, args.osl)
    rows: list[dict[str, Any]] = []
    with tqdm(total=len(arrivals) * len(VARIANTS), desc="vgpu_planning", unit="req", mininterval=0.5) as bar:
        for name, (virt, vgpu) in VARIANTS.items():
            planner = {"mode": "agg", "throughput_adjustment_interval_seconds": args.interval_s,
                       "load_predictor": "kalman", "ttft_ms": args.ttft_ms, "itl_ms": args.itl_ms,
                       "max_gpu_budget": 64}
            rep = run(scenario(name, trace, virt, vgpu, planner, args.startup_s), bar)
            p = rep["planner"]
            peak = max(r[1] + r[2] for r in p["replicas"]["agg"])
            rows.append({"deployment": name, "sla_attainment": attainment(rep["_records"], args.ttft_ms, args.itl_ms),
                         "vgpu_hours": rep["summary"]["gpu_hours"],
                         "card_hours": sum(n["physical_gpu_hours"] for n in rep["nodes"]),
                         "peak_workers": int(peak), "capacity_exhausted": p["capacity_exhausted"],
                         "engine_rps": p["decisions"][0]["predicted"].get("engine_rps", 0.0),
                         "p99_ttft_ms": rep["summary"]["p99_ttft_ms"], "mean_itl_ms": rep["summary"]["mean_itl_ms"]})
    write_csv(args.out / "vgpu_planning.csv", rows)
    note = (f"one node of 8 H100, llama-3.1-8b (roofline); sine {args.min_rps}-{args.max_rps} rps over "
            f"{args.period_s} s; ISL {args.isl}, OSL {args.osl}; SLA TTFT {args.ttft_ms} ms, ITL {args.itl_ms} ms; "
            f"card_hours: physical cards' worth (MIG slices by SM share, HAMi shares by core limit)")
    print(write_markdown(args.out / "vgpu_planning.md", "Planner on whole GPUs, MIG and HAMi", rows, note))
    _plot(rows, args.out / "vgpu_planning.png")
    return 0


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    names = [r["deployment"] for r in rows]
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["card_hours"] for r in rows], 0.4, label="card-hours", color="tab:red")
    ax.bar([i + 0.2 for i in x], [r["vgpu_hours"] for r in rows], 0.4, label="vGPU-hours", color="tab:orange")
    ax.set_xticks(list(x), names)
    ax.set_ylabel("hours")
    ax2 = ax.twinx()
    ax2.plot(list(x), [r["sla_attainment"] for r in rows], "o-", color="tab:blue", label="SLA attainment")
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("SLA attainment")
    fig.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
