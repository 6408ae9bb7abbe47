"""Adjustment interval: the planner's loop interval from 1 to 300 s under the sine load (latency,
attainment, GPU-hours and scaling events). `--loop throughput` sweeps
`throughput_adjustment_interval_seconds`; `--loop load` sweeps `load_adjustment_interval_seconds`
with load scaling on (the throughput loop then runs every 300 s as its floor).
Writes interval_sweep.{csv,md,png} into --out.

    python planner/experiments/interval_sweep.py --out out/interval [--intervals 1,5,10,30,60,120,300]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sweeps import finish, planner_config, sine_arguments, sweep  # noqa: I001 - a sibling script module


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/interval"))
    ap.add_argument("--intervals", default="1,5,10,30,60,120,300")
    ap.add_argument("--loop", choices=("throughput", "load"), default="throughput")
    sine_arguments(ap)
    args = ap.parse_args(argv)
    points = [int(x) for x in args.intervals.split(",")]

    def edit(a: argparse.Namespace, interval: int) -> tuple[dict[str, Any], dict[str, Any]]:
        cfg = planner_config(a)
        if a.loop == "throughput":
            cfg["throughput_adjustment_interval_seconds"] = interval
        else:
            cfg.update(enable_load_scaling=True, load_adjustment_interval_seconds=interval,
                       throughput_adjustment_interval_seconds=300)
        return cfg, {"startup_time": a.startup_s}
    rows = sweep(args, "interval_sweep", points, edit, "interval_s")
    finish(args, "interval_sweep", f"{args.loop} adjustment interval", rows, "interval_s", log_x=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
