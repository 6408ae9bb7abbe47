"""Sinusoidal load: the SLA planner against static deployments sized for the mean and for the peak.

rate(t) = (min+max)/2 + (max-min)/2 * sin(2 pi t / P - pi/2) (the reference planner's sine test),
Poisson arrivals, fixed ISL/OSL. The static sizes come from the same perf model the planner uses
(`planner.perf_model`, the deployment's own timing): ceil(rate / engine capacity under the SLA).
Writes sine_load.csv (one row per deployment), sine_load.md, sine_load.png (replicas and rate over
time) and sine_timeline.csv into --out.

    python planner/experiments/sine_load.py --out out/sine [--min-rps 5 --max-rps 60 --period-s 300 --periods 2]
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from common import abstract_scenario, attainment, poisson_arrivals, run, sine_rate, write_csv, write_markdown, \
    write_trace  # noqa: I001 - a sibling script module


def capacity_rps(isl: int, osl: int, ttft_ms: float, itl_ms: float) -> float:
    from actors.engine.config import EngineConfig
    from actors.engine.timing.registry import timing_from_config
    from planner.perf_model import perf_from_engine

    engine = EngineConfig()
    return perf_from_engine(timing_from_config(engine), engine).agg_capacity(isl, osl, ttft_ms, itl_ms).rps


def planner_config(args: argparse.Namespace) -> dict[str, Any]:
    return {"mode": "agg", "throughput_adjustment_interval_seconds": args.interval_s, "load_predictor": args.predictor,
            "ttft_ms": args.ttft_ms, "itl_ms": args.itl_ms, "min_endpoint": 1, "max_gpu_budget": args.budget,
            "enable_load_scaling": args.load_scaling, "load_adjustment_interval_seconds": args.load_interval_s}


def sine_arguments(ap: argparse.ArgumentParser, periods: float = 1.0) -> None:
    """The sinusoidal load's and the planner's flags (the sweeps take them too)."""
    ap.add_argument("--min-rps", type=float, default=5.0)
    ap.add_argument("--max-rps", type=float, default=60.0)
    ap.add_argument("--period-s", type=float, default=300.0)
    ap.add_argument("--periods", type=float, default=periods)
    ap.add_argument("--isl", type=int, default=1024)
    ap.add_argument("--osl", type=int, default=128)
    ap.add_argument("--ttft-ms", type=float, default=500.0)
    ap.add_argument("--itl-ms", type=float, default=50.0)
    ap.add_argument("--interval-s", type=int, default=10)
    ap.add_argument("--load-scaling", action="store_true")
    ap.add_argument("--load-interval-s", type=int, default=5)
    ap.add_argument("--predictor", default="kalman")
    ap.add_argument("--startup-s", type=float, default=5.0)
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/sine"))
    sine_arguments(ap, periods=2.0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    duration = args.period_s * args.periods
    arrivals = poisson_arrivals(lambda t: sine_rate(t, args.min_rps, args.max_rps, args.period_s), args.max_rps,
                                duration, args.seed)
    trace = write_trace(args.out / "sine_trace.jsonl", arrivals, args.isl, args.osl)
    cap = capacity_rps(args.isl, args.osl, args.ttft_ms, args.itl_ms)
    mean_n = math.ceil((args.min_rps + args.max_rps) / 2 / cap)
    peak_n = math.ceil(args.max_rps / cap)
    engine = {"startup_time": args.startup_s}
    runs = [("planner", 1, planner_config(args)), (f"static-mean ({mean_n})", mean_n, None),
            (f"static-peak ({peak_n})", peak_n, None)]
    rows: list[dict[str, Any]] = []
    reports: dict[str, dict[str, Any]] = {}
    with tqdm(total=len(arrivals) * len(runs), desc="sine_load", unit="req", mininterval=0.5) as bar:
        for name, n, planner in runs:
            rep = run(abstract_scenario("sine", trace, n, engine, planner, args.seed), bar)
            reports[name] = rep
            s = rep["summary"]
            rows.append({"deployment": name, "requests": len(rep["_records"]),
                         "sla_attainment": attainment(rep["_records"], args.ttft_ms, args.itl_ms),
                         "gpu_hours": s["gpu_hours"], "mean_ttft_ms": s["mean_ttft_ms"],
                         "p99_ttft_ms": s["p99_ttft_ms"], "mean_itl_ms": s["mean_itl_ms"],
                         "p99_itl_ms": s["p99_itl_ms"],
                         "scaling_events": len([d for d in rep.get("planner", {}).get("decisions", []) if d["applied"]])})
    peak_hours = rows[2]["gpu_hours"]
    for r in rows:
        r["gpu_hours_vs_peak"] = r["gpu_hours"] / peak_hours
    write_csv(args.out / "sine_load.csv", rows)
    timeline = reports["planner"]["planner"]["replicas"]["agg"]
    write_csv(args.out / "sine_timeline.csv", [{"t_s": t / 1000, "ready": a, "starting": b, "draining": c}
                                               for t, a, b, c in timeline])
    note = (f"rate {args.min_rps}-{args.max_rps} rps, period {args.period_s} s x {args.periods}; ISL {args.isl}, "
            f"OSL {args.osl}; SLA TTFT {args.ttft_ms} ms, ITL {args.itl_ms} ms; engine capacity {cap:.2f} rps "
            f"(perf model); planner: {args.predictor}, throughput interval {args.interval_s} s"
            f"{', load scaling' if args.load_scaling else ''}; startup {args.startup_s} s; seed {args.seed}.")
    print(write_markdown(args.out / "sine_load.md", "Sine load: planner vs static", rows, note))
    _plot(args, timeline, cap, rows, args.out / "sine_load.png")
    return 0


def _plot(args: argparse.Namespace, timeline: list[list[float]], cap: float, rows: list[dict[str, Any]],
          path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    t = np.linspace(0, args.period_s * args.periods, 500)
    ax.plot(t, sine_rate(t, args.min_rps, args.max_rps, args.period_s) / cap, color="grey", lw=1,
            label="rate / engine capacity")
    ts = [r[0] / 1000 for r in timeline] + [args.period_s * args.periods]
    ready = [r[1] for r in timeline] + [timeline[-1][1]]
    up = [r[1] + r[2] for r in timeline] + [timeline[-1][1] + timeline[-1][2]]
    ax.step(ts, up, where="post", color="tab:orange", lw=1, label="ready + starting")
    ax.step(ts, ready, where="post", color="tab:blue", lw=2, label="ready workers (planner)")
    for r, c in ((rows[1], "tab:green"), (rows[2], "tab:red")):
        n = float(r["deployment"].split("(")[1].rstrip(")"))
        ax.axhline(n, color=c, ls="--", lw=1, label=r["deployment"])
    ax.set_xlabel("time (s)")
    ax.set_ylabel("workers")
    p = rows[0]
    ax.set_title(f"planner: SLA attainment {p['sla_attainment']:.3f}, GPU-h {p['gpu_hours_vs_peak']:.2f} of static peak")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
