"""Cold start: the engine's `startup_time` from 0 to 300 s under the sine load, the planner scaling;
where SLA attainment breaks (the cliff). Writes cold_start_sweep.{csv,md,png} into --out.

    python planner/experiments/cold_start_sweep.py --out out/cold [--startups 0,5,10,20,40,60,120,300]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sweeps import finish, planner_config, sine_arguments, sweep  # noqa: I001 - a sibling script module


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/cold"))
    ap.add_argument("--startups", default="0,5,10,20,40,60,120,300")
    sine_arguments(ap)
    args = ap.parse_args(argv)
    points = [float(x) for x in args.startups.split(",")]

    def edit(a: argparse.Namespace, startup: float) -> tuple[dict[str, Any], dict[str, Any]]:
        return planner_config(a), {"startup_time": startup}
    rows = sweep(args, "cold_start_sweep", points, edit, "startup_s")
    ok = [r["startup_s"] for r in rows if r["sla_attainment"] >= 0.95]
    broken = [r["startup_s"] for r in rows if r["sla_attainment"] < 0.95]
    title = "Cold start vs SLA attainment"
    if broken:
        title += f" (>= 95% up to {max([x for x in ok if x < min(broken)], default=0):g} s, breaks at {min(broken):g} s)"
    finish(args, "cold_start_sweep", title, rows, "startup_s", log_x=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
