"""clustersim against the reference (Dynamo 1.6.1 offline replay): per-metric relative error, wall ratio
and peak-memory ratio.

Each case is one call of the reference's Python API (`run_trace_replay` / `run_synthetic_trace_replay`,
the same parameter names in `cluster.replay`). Both sides run it in a fresh process of this file in
`--driver` mode: the reference with `--reference-python` (default `$CLUSTERSIM_REFERENCE_PYTHON`, else
`/work/refvenv/bin/python`; its cases are skipped when that interpreter cannot import `dynamo.replay`),
clustersim with this interpreter. Wall times are whole processes (interpreter start, imports, trace
loading, simulation). kv_router cases run the reference `--kv-repeats` times: its random tie-breaks
make runs differ, and that spread is the target there (a metric passes when within 1% of the
reference's mean, or inside the range of its runs). Peak memory is each process's max RSS. The
machine-independent figures are the ratios; on a shared machine, compare them within one run.

    python benchmarks/vs_reference.py [--cases a,b] [--kv-repeats 3] [--verbose] [--json OUT]
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT.parent / "shared" / "traces" / "mooncake_conversation_trace.jsonl"
WALL_KEYS = ("wall_time_ms", "processed_tokens_per_s", "processed_output_tokens_per_s")
TOLERANCE = 0.01

PREFILL = {"engine": {"worker_type": "prefill", "kv_transfer_bandwidth": 64.0, "kv_transfer_bytes_per_token": 131072}}
DECODE = {"engine": {"worker_type": "decode"}}

CASES: dict[str, dict[str, Any]] = {
    # issue 11's speed table, row 1 (README replay example 2): a small run, dominated by start-up
    "small-c100": {"synthetic": [5000, 500, 1000], "num_workers": 1, "replay_concurrency": 100,
                   "extra_engine_args": {"engine": {"block_size": 512}}},
    # facts "run1": the reference's seed experiment
    "seed-kv": {"synthetic": [1024, 32, 200], "num_workers": 2, "router_mode": "kv_router", "request_rate": 20.0,
                "shared_prefix_ratio": 0.5, "num_prefix_groups": 4, "extra_engine_args": {"engine": {"block_size": 64}}},
    # issue 11's closed-loop case: 300 sessions x 3 turns, 250 ms between turns, 16 session slots
    "multiturn-closed": {"synthetic": [1500, 200, 300], "num_workers": 2, "replay_concurrency": 16,
                         "turns_per_session": 3, "inter_turn_delay_ms": 250.0},
    # issue 11's Poisson case: 2000 requests at 20 rps
    "poisson-rr": {"synthetic": [1024, 128, 2000], "num_workers": 4, "request_rate": 20.0},
    "prefix-kv": {"synthetic": [2048, 64, 1000], "num_workers": 4, "router_mode": "kv_router", "request_rate": 40.0,
                  "shared_prefix_ratio": 0.75, "num_prefix_groups": 8},
    # 1024 blocks x 64 tokens per worker for 64 x 4352-token requests: preemption
    "memory-pressure": {"synthetic": [4096, 256, 400], "num_workers": 1, "replay_concurrency": 64,
                        "extra_engine_args": {"engine": {"block_size": 64, "num_gpu_blocks": 1024}}},
    "no-chunk-no-prefix": {"synthetic": [3000, 100, 300], "num_workers": 2, "arrival_interval_ms": 20.0,
                           "extra_engine_args": {"engine": {"enable_chunked_prefill": False,
                                                            "enable_prefix_caching": False}}},
    # disaggregated serving (issue 12): prefill pool + decode pool, KV transfer at 64 GB/s of 128 KiB/token
    "disagg-2p2d-kv": {"synthetic": [2048, 128, 600], "num_prefill_workers": 2, "num_decode_workers": 2,
                       "router_mode": "kv_router", "request_rate": 12.0, "shared_prefix_ratio": 0.5,
                       "num_prefix_groups": 4, "prefill_engine_args": PREFILL, "decode_engine_args": DECODE},
    "disagg-1p3d-kv": {"synthetic": [1024, 256, 600], "num_prefill_workers": 1, "num_decode_workers": 3,
                       "router_mode": "kv_router", "request_rate": 15.0, "shared_prefix_ratio": 0.5,
                       "num_prefix_groups": 4, "prefill_engine_args": PREFILL, "decode_engine_args": DECODE},
    "disagg-2p2d-rr-missing": {"synthetic": [2048, 64, 400], "num_prefill_workers": 2, "num_decode_workers": 2,
                               "request_rate": 10.0, "shared_prefix_ratio": 0.75, "num_prefix_groups": 2,
                               "prefill_engine_args": {"engine": {**PREFILL["engine"],
                                                                  "kv_transfer_timing_mode": "destination_missing"}},
                               "decode_engine_args": DECODE},
    "mooncake-rr": {"trace": str(TRACE), "num_workers": 8},
    "mooncake-kv": {"trace": str(TRACE), "num_workers": 8, "router_mode": "kv_router"},
    # issue 11's speed table, row 4 (minutes on each side: only when named in --cases)
    "scale-1000-kv": {"synthetic": [2048, 128, 100_000], "num_workers": 1000, "router_mode": "kv_router",
                      "request_rate": 2000.0, "shared_prefix_ratio": 0.5, "num_prefix_groups": 200},
}
HEAVY = {"scale-1000-kv"}
"""Cases left out of the default grid."""


# ------------------------------------------------------------------ driver (one case, one process)

def drive(module: str, case: dict[str, Any], out: str) -> None:
    """Run `case` through `module`'s API and write its summary as JSON to `out`."""
    replay = importlib.import_module(module)
    kwargs = {k: v for k, v in case.items() if k not in ("synthetic", "trace")}
    if "trace" in case:
        report = replay.run_trace_replay(case["trace"], **kwargs)
    else:
        report = replay.run_synthetic_trace_replay(*case["synthetic"], **kwargs)
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    Path(out).write_text(json.dumps({"summary": report.summary, "max_rss_mb": peak_mb}))


# ------------------------------------------------------------------ comparison

def run_side(python: str, module: str, case: dict[str, Any]) -> tuple[dict[str, Any], float, float]:
    """(summary, whole-process wall seconds, peak RSS MiB) of one case in a fresh `python` process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "summary.json"
        started = time.perf_counter()
        # DYN_LOG=error: the reference logs every kv_router decision at INFO otherwise, which is not its speed
        env = {**os.environ, "DYN_LOG": os.environ.get("DYN_LOG", "error")}
        proc = subprocess.run([python, __file__, "--driver", module, json.dumps(case), str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        wall_s = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"{module} failed: {proc.stderr.strip().splitlines()[-1:]}")
        got = json.loads(out.read_text())
        return got["summary"], wall_s, got["max_rss_mb"]


def rel_err(ours: Any, ref: Any) -> float:
    """|ours - ref| / |ref| (absolute difference when ref is 0); 0 or inf for non-numbers."""
    if isinstance(ref, bool) or not isinstance(ref, (int, float)) or not isinstance(ours, (int, float)):
        return 0.0 if ours == ref else math.inf
    if ref == 0:
        return abs(float(ours))
    return abs(float(ours) - float(ref)) / abs(float(ref))


def compare(ours: dict[str, Any], refs: list[dict[str, Any]]) -> list[tuple[str, float, float, bool]]:
    """Per metric: (key, error vs the mean of the reference runs, the runs' spread, within target)."""
    rows = []
    for key in sorted(refs[0]):
        if key in WALL_KEYS:
            continue
        values = [r.get(key) for r in refs]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        mean: Any = sum(values) / len(values) if numeric else values[0]  # type: ignore[arg-type]
        err = rel_err(ours.get(key), mean)
        spread = (max(values) - min(values)) / abs(mean) if numeric and mean else 0.0  # type: ignore[type-var]
        inside = numeric and isinstance(ours.get(key), (int, float)) and min(values) <= ours[key] <= max(values)  # type: ignore[type-var]
        rows.append((key, err, spread, err <= TOLERANCE or bool(inside and len(refs) > 1)))
    return rows


def reference_python(given: str | None) -> str | None:
    """The interpreter that imports `dynamo.replay`, or None (reference cases skipped)."""
    candidate = given or os.environ.get("CLUSTERSIM_REFERENCE_PYTHON") or "/work/refvenv/bin/python"
    try:
        ok = subprocess.run([candidate, "-c", "import dynamo.replay"], capture_output=True).returncode == 0
    except OSError:
        ok = False
    return candidate if ok else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--driver", nargs=3, metavar=("MODULE", "CASE_JSON", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--reference-python")
    parser.add_argument("--cases", help=f"comma-separated subset of: {', '.join(CASES)} "
                        f"(default: all but {', '.join(sorted(HEAVY))})")
    parser.add_argument("--kv-repeats", type=int, default=3, help="reference runs per kv_router case")
    parser.add_argument("--verbose", action="store_true", help="print every metric of every case")
    parser.add_argument("--json", type=Path, help="write every case's summaries and errors here")
    args = parser.parse_args()
    if args.driver:
        drive(args.driver[0], json.loads(args.driver[1]), args.driver[2])
        return 0
    names = args.cases.split(",") if args.cases else [n for n in CASES if n not in HEAVY]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}")
    ref_python = reference_python(args.reference_python)
    if ref_python is None:
        print("reference not importable (set --reference-python or CLUSTERSIM_REFERENCE_PYTHON): skipped")
        return 0
    print(f"{'case':<20} {'metrics':>7} {'within':>6}  {'worst metric':<40} {'err':>8} {'ref spread':>10}"
          f"  {'ours s':>7} {'ref s':>6} {'ratio':>6}  {'ours MB':>7} {'ref MB':>6} {'mem':>6}")
    dump: dict[str, Any] = {}
    for name in names:
        case = CASES[name]
        repeats = args.kv_repeats if case.get("router_mode") == "kv_router" else 1
        refs, ref_walls, ref_mbs = [], [], []
        for _ in range(max(1, repeats)):
            summary, wall, mb = run_side(ref_python, "dynamo.replay", case)
            refs.append(summary)
            ref_walls.append(wall)
            ref_mbs.append(mb)
        ours, our_wall, our_mb = run_side(sys.executable, "cluster.replay", case)
        rows = compare(ours, refs)
        worst = max(rows, key=lambda r: (not r[3], r[1]))
        ref_wall = min(ref_walls)
        print(f"{name:<20} {len(rows):>7} {sum(r[3] for r in rows):>6}  {worst[0]:<40} {worst[1]:>7.2%} "
              f"{worst[2]:>10.2%}  {our_wall:>7.2f} {ref_wall:>6.2f} {our_wall / ref_wall:>5.2f}x"
              f"  {our_mb:>7.0f} {max(ref_mbs):>6.0f} {our_mb / max(ref_mbs):>5.2f}x")
        if args.verbose:
            for key, err, spread, ok in rows:
                print(f"    {key:<48} {err:>9.4%}  spread {spread:>8.4%}  {'ok' if ok else 'OFF'}"
                      f"  ours {ours.get(key)!r:>24}  ref {refs[0].get(key)!r:>24}")
        dump[name] = {"case": case, "ours": ours, "reference": refs, "ours_wall_s": our_wall,
                      "reference_wall_s": ref_walls, "ours_max_rss_mb": our_mb, "reference_max_rss_mb": ref_mbs,
                      "errors": {k: {"err": e, "spread": s, "ok": ok} for k, e, s, ok in rows}}
    if args.json is not None:
        args.json.write_text(json.dumps(dump, indent=1, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
