"""Runtime scaling: the Mooncake scenario on Local vs Ray (1/2/4 shards), the scale scenario on Local.

Issue 5's targets: Ray with 4 shards at most 2x the Local wall time on
`configs/scenarios/mooncake-kv16.yaml`; `configs/scenarios/scale-1000.yaml` (1,000 workers,
100,000 requests) under 5 minutes on Local.

Times cover building the world and running it (for Ray: creating the shard actors, every
window, collecting results); starting Ray itself (`ray.init` of a local cluster, a one-time
cost) is reported separately. Machine-independent figures: the Ray/Local ratio, simulated
tokens per wall second, loop events per wall second, windows and wall microseconds per
window. Every Ray report is checked byte for byte against the Local one.

    python benchmarks/runtime_scaling.py [--skip-scale] [--skip-ray] [--shards 1 2 4]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from cluster.report.build import build_report
from cluster.runner import run_world
from cluster.scenario.load import load_scenario
from cluster.scenario.world import build_world

ROOT = Path(__file__).resolve().parents[1]
MOONCAKE = ROOT / "configs" / "scenarios" / "mooncake-kv16.yaml"
SCALE = ROOT / "configs" / "scenarios" / "scale-1000.yaml"


def _run(path: Path, runtime: str, shards: int = 1) -> tuple[float, str, dict[str, Any], Any]:
    t0 = time.perf_counter()
    world = build_world(load_scenario(path))
    result, control = run_world(world, runtime, shards)  # type: ignore[arg-type]
    report = build_report(world, result, control)
    wall = time.perf_counter() - t0
    return wall, json.dumps(report, sort_keys=True), report, result


def _row(name: str, wall: float, report: dict[str, Any], result: Any, local_wall: float | None) -> str:
    s = report["summary"]
    tokens = s["total_input_tokens"] + s["total_output_tokens"]
    ratio = f"{wall / local_wall:5.2f}x Local" if local_wall else "           "
    windows = result.extra.get("windows")
    per_window = f"{windows:>7,} windows {wall / windows * 1e6:7.0f} us/window" if windows else ""
    return (f"{name:<24} {wall:8.2f} s  {ratio}  {tokens / wall:>12,.0f} sim tok/s  "
            f"{result.num_events / wall:>10,.0f} events/s  {per_window}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-ray", action="store_true")
    ap.add_argument("--shards", type=int, nargs="*", default=[1, 2, 4])
    args = ap.parse_args()

    local_wall, local_json, report, result = _run(MOONCAKE, "local")
    print(f"Mooncake conversation trace, {report['config']['num_workers']} workers, kv routing "
          f"({report['summary']['completed_requests']:,} requests)")
    print(_row("Local", local_wall, report, result, None))
    if not args.skip_ray:
        import ray

        t0 = time.perf_counter()
        ray.init(log_to_driver=False, configure_logging=False, include_dashboard=False)
        print(f"{'(ray.init, local cluster)':<24} {time.perf_counter() - t0:8.2f} s  one-time start-up, not in the rows")
        for shards in args.shards:
            wall, js, rep, res = _run(MOONCAKE, "ray", shards)
            same = "identical report" if js == local_json else "REPORT DIFFERS"
            target = "  target <= 2.00x: " + ("OK" if wall <= 2 * local_wall else "MISSED") if shards == 4 else ""
            print(_row(f"Ray, {shards} shard{'s' if shards > 1 else ''}", wall, rep, res, local_wall) + f"  {same}"
                  + target)
        ray.shutdown()
    if not args.skip_scale:
        wall, _, rep, res = _run(SCALE, "local")
        print(f"Scale: {rep['config']['num_workers']:,} workers, {rep['summary']['num_requests']:,} requests")
        print(_row("Local", wall, rep, res, None) + f"  target < 300 s: {'OK' if wall < 300 else 'MISSED'}")


if __name__ == "__main__":
    main()
