"""Offline replay from Python, and `python -m cluster.replay` (the flags of `clustersim replay`).

`replay_workload(workload, engine, num_workers, ...)` replays an in-memory `Workload` on
identical workers on abstract GPUs, through the same front door as the command line: a
scenario (`cluster.scenario.spec.replay_scenario`), the world builder, the Local runtime. It returns the run's
`RunResult` (client records, inter-token gaps, per-rank counters, KV events when collected).
Unlike the command line it runs prompts no rank can hold: the engine rejects them
(`rejected_prompt_too_long`), which is what engine tests look at.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from actors.engine.config import EngineConfig
from actors.engine.records import RequestRecord
from cluster.runtime.local import run_local
from cluster.runtime.shard import RunResult
from cluster.scenario.load import LoadedScenario
from cluster.scenario.spec import replay_scenario
from cluster.scenario.world import build_world
from cluster.workload.model import Workload


def replay_workload(workload: Workload, engine: EngineConfig | Mapping[str, Any] | None = None,
                    num_workers: int = 1, *, router: Mapping[str, Any] | None = None,
                    concurrency: int | None = None, seed: int = 42, macro_step: bool = True,
                    collect_kv_events: bool = False,
                    on_done: Callable[[RequestRecord], None] | None = None) -> RunResult:
    """Replay `workload` offline (see the module docstring)."""
    cfg = engine if isinstance(engine, EngineConfig) else EngineConfig.model_validate(dict(engine or {}))
    scenario = replay_scenario(cfg, num_workers, router=dict(router) if router is not None else None,
                               workload={"concurrency": concurrency}, seed=seed)
    world = build_world(LoadedScenario(scenario), macro_step=macro_step, collect_kv_events=collect_kv_events,
                        workload=workload, refuse_unfit=False)
    result, _ = run_local(world.setup, on_done)
    return result


if __name__ == "__main__":
    from cluster.commands.replay import main

    sys.exit(main(prog="python -m cluster.replay"))
