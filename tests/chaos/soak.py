"""`make chaos`: the chaos soak. Runs N random fault schedules (default 1,000) through every invariant
of `tests.chaos.schedules` and prints the figures: schedules run, faults injected by kind, requests
lost (target 0), invariant violations (target 0). Exit status 1 when any schedule broke one.

    python -m tests.chaos.soak [--schedules N]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed

from tests.chaos.schedules import run, schedules


def soak(n: int, seed: int = 0) -> dict[str, Any]:
    figures: dict[str, Any] = {"schedules": 0, "faults": Counter(), "lost": 0, "violations": [], "requests": 0,
                               "migrations": 0}

    @hseed(seed)
    @settings(max_examples=n, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(sc=schedules())
    def one(sc: dict[str, Any]) -> None:
        out = run(sc)
        figures["schedules"] += 1
        figures["faults"].update(out.faults)
        figures["lost"] += out.lost
        figures["requests"] += out.report["summary"]["num_requests"]
        figures["migrations"] += out.report["run"]["migrations"]
        if sc["seed"] % 5 == 0 and run(sc).report_bytes != out.report_bytes:
            out.violations.append("same seed, different report")
        figures["violations"].extend((sc["faults"], v) for v in out.violations)

    one()
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos.soak", description=__doc__.splitlines()[0])
    p.add_argument("--schedules", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    started = time.perf_counter()
    f = soak(args.schedules, args.seed)
    wall = time.perf_counter() - started
    print(f"schedules run: {f['schedules']} ({wall:.0f} s wall)")
    print(f"requests: {f['requests']}, migrations: {f['migrations']}")
    print("faults injected (applied), by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(f["faults"].items())))
    print(f"requests lost: {f['lost']}")
    print(f"invariant violations: {len(f['violations'])}")
    for faults, v in f["violations"][:20]:
        print(f"  {v}  <- faults {faults}")
    return 1 if f["violations"] or f["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
