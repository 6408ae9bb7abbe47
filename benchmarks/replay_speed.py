"""Replay speed: wall seconds and simulated tokens per wall second (issue 2's targets).

(a) 1000 requests x 5000 input / 500 output tokens, closed loop at concurrency 100, one worker,
    block_size 512 (target on the 2-core dev box: < 0.75 s);
(b) the Mooncake conversation trace (../shared/traces) on 8 workers, round robin (target: < 15 s).

Times cover the simulation only (workload loading is reported separately); each case runs
`--repeat` times and the best is reported. Machine-independent figures: simulated tokens per
wall second, engine passes per wall second, and the pass-by-pass / macro-stepped event ratio.

    python benchmarks/replay_speed.py [--repeat 3] [--trace PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from actors.engine.config import EngineConfig
from cluster.replay import replay_workload
from cluster.runtime.shard import RunResult
from cluster.workload.model import Workload
from cluster.workload.mooncake import load_mooncake
from cluster.workload.synthetic import SyntheticSpec, synthesize

DEFAULT_TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "mooncake_conversation_trace.jsonl"


def _time(workload: Workload, engine: EngineConfig, workers: int, concurrency: int | None,
          repeat: int) -> tuple[float, RunResult]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = replay_workload(workload, engine, workers, concurrency=concurrency)
        best = min(best, time.perf_counter() - t0)
    assert result is not None
    return best, result


def _row(name: str, wall_s: float, res: RunResult, target_s: float) -> str:
    tokens = sum(r.input_length + r.output_length for r in res.records)
    passes = sum(r.num_passes for r in res.ranks)
    return (f"{name:<34} {wall_s:8.3f} s  target < {target_s:5.2f} s  {'OK ' if wall_s < target_s else 'MISS'}  "
            f"{tokens / wall_s:14,.0f} sim tok/s  {passes / wall_s:12,.0f} passes/s  "
            f"{res.num_events:9,d} events  sim {res.end_ms / 1000:9.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    args = parser.parse_args()

    spec = SyntheticSpec(input_tokens=5000, output_tokens=500, request_count=1000, block_size=512)
    wl_a = synthesize(spec)
    engine_a = EngineConfig(block_size=512)
    wall_a, res_a = _time(wl_a, engine_a, 1, 100, args.repeat)
    print(_row("(a) synthetic 1000x5000/500 c=100", wall_a, res_a, 0.75))

    t0 = time.perf_counter()
    wl_b = load_mooncake(args.trace)
    load_s = time.perf_counter() - t0
    wall_b, res_b = _time(wl_b, EngineConfig(), 8, None, max(1, args.repeat - 2))
    print(_row("(b) Mooncake trace, 8 workers RR", wall_b, res_b, 15.0) + f"  (trace load {load_s:.2f} s)")

    # How much work macro-stepping saves, on (a): the same replay pass by pass.
    t0 = time.perf_counter()
    single = replay_workload(wl_a, engine_a, 1, concurrency=100, macro_step=False)
    single_s = time.perf_counter() - t0
    print(f"macro-stepping on (a): {single.num_events / res_a.num_events:.1f}x fewer events, "
          f"{single_s / wall_a:.1f}x faster than pass by pass ({single_s:.2f} s)")


if __name__ == "__main__":
    main()
