"""What the sweep scripts share: one sine workload, one planner run per sweep point, rows out."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from common import abstract_scenario, attainment, poisson_arrivals, run, sine_rate, write_csv, write_markdown, \
    write_trace  # noqa: I001 - sibling script modules
from sine_load import planner_config, sine_arguments


def sweep(args: argparse.Namespace, name: str, points: list[Any],
          edit: Callable[[argparse.Namespace, Any], tuple[dict[str, Any], dict[str, Any]]],
          key: str) -> list[dict[str, Any]]:
    """One planner run per point: `edit(args, point)` -> (planner config, engine keys)."""
    args.out.mkdir(parents=True, exist_ok=True)
    arrivals = poisson_arrivals(lambda t: sine_rate(t, args.min_rps, args.max_rps, args.period_s), args.max_rps,
                                args.period_s * args.periods, args.seed)
    trace = write_trace(args.out / f"{name}_trace.jsonl", arrivals, args.isl, args.osl)
    rows: list[dict[str, Any]] = []
    with tqdm(total=len(arrivals) * len(points), desc=name, unit="req", mininterval=0.5) as bar:
        for point in points:
            planner, engine = edit(args, point)
            rep = run(abstract_scenario(name, trace, 1, engine, planner, args.seed), bar)
            s = rep["summary"]
            decisions = rep["planner"]["decisions"]
            rows.append({key: point, "sla_attainment": attainment(rep["_records"], args.ttft_ms, args.itl_ms),
                         "gpu_hours": s["gpu_hours"], "mean_ttft_ms": s["mean_ttft_ms"], "p99_ttft_ms": s["p99_ttft_ms"],
                         "mean_itl_ms": s["mean_itl_ms"], "p99_itl_ms": s["p99_itl_ms"],
                         "scaling_events": sum(1 for d in decisions if d["applied"]),
                         "workers_added": sum(1 for d in decisions for o in d["outcomes"] if o["kind"] == "add_worker")})
    write_csv(args.out / f"{name}.csv", rows)
    return rows


def plot(rows: list[dict[str, Any]], key: str, path: Path, title: str, log_x: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r[key] for r in rows]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(xs, [r["sla_attainment"] for r in rows], "o-", color="tab:blue", label="SLA attainment")
    ax.axhline(0.95, color="tab:blue", ls=":", lw=1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(key)
    ax.set_ylabel("SLA attainment")
    if log_x:
        ax.set_xscale("symlog", linthresh=1)
    ax2 = ax.twinx()
    ax2.plot(xs, [r["gpu_hours"] for r in rows], "s--", color="tab:red", label="GPU-hours")
    ax2.set_ylabel("GPU-hours")
    ax.set_title(title)
    fig.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def finish(args: argparse.Namespace, name: str, title: str, rows: list[dict[str, Any]], key: str,
           log_x: bool = False) -> None:
    note = (f"sine {args.min_rps}-{args.max_rps} rps, period {args.period_s} s x {args.periods}; ISL {args.isl}, "
            f"OSL {args.osl}; SLA TTFT {args.ttft_ms} ms, ITL {args.itl_ms} ms; predictor {args.predictor}; "
            f"seed {args.seed}.")
    print(write_markdown(args.out / f"{name}.md", title, rows, note))
    plot(rows, key, args.out / f"{name}.png", title, log_x)


__all__ = ["sine_arguments", "sweep", "finish", "planner_config", "write_csv"]
