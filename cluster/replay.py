"""Offline replay from Python, and `python -m cluster.replay` (the flags of `clustersim replay`).

Two entry points:

- `run_trace_replay(trace_files, ...)` and `run_synthetic_trace_replay(input_tokens, output_tokens,
  request_count, ...)` take the parameters of the reference's Python API (`dynamo.replay`, 1.6.1) under
  the same names and return a `ReplayReport` with `.summary` (the reference's keys), `.per_request`
  (with `capture_per_request=True`: one dict per completed request, the reference's per-request keys
  that clustersim tracks), `.coverage` and `.to_dict()`; a script written for the reference runs by
  changing its import. They run exactly what `clustersim replay` runs for the matching flags
  (`cluster.commands.replay.run_replay`), so every check and refusal is the command's: bad input
  raises `ValueError` with the command's one-line message, and parameters whose feature is not built
  (`NOT_BUILT_PARAMS`) raise `ValueError("...: not built yet: ...")`.
- `replay_workload(workload, engine, num_workers, ...)` replays an in-memory `Workload` on
  identical workers on abstract GPUs, through the same front door as the command line: a
  scenario (`cluster.scenario.spec.replay_scenario`), the world builder, the Local runtime. It returns the run's
  `RunResult` (client records, inter-token gaps, per-rank counters, KV events when collected).
  Unlike the command line it runs prompts no rank can hold: the engine rejects them
  (`rejected_prompt_too_long`), which is what engine tests look at.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actors.engine.config import EngineConfig
from actors.engine.records import RequestRecord, TerminalStatus
from cluster.runtime.local import run_local
from cluster.runtime.shard import RunResult
from cluster.scenario.load import LoadedScenario
from cluster.scenario.spec import replay_scenario
from cluster.scenario.world import build_world
from cluster.workload.model import Workload

PLANNER = "planner-in-the-loop replay"
NOT_BUILT_PARAMS: dict[str, str] = {
    "ais_perf_config": "AIS/AIC performance models",
    "agentic_lanes": "agentic trace formats",
    "execution_model": "agentic trace formats",
    "weka_nested_timestamp_basis": "the weka trace format",
    "performance_model_metadata": PLANNER,
    "telemetry_options": "periodic telemetry samples",
}
"""Reference parameters (None by default) whose feature is not built: giving one raises."""


@dataclass
class ReplayReport:
    """What the reference's offline replay returns: `summary`, `per_request` (None unless captured),
    `coverage`; `planner` is the report's planner section with a `planner_config` (else None);
    `telemetry` is always None (not built)."""

    summary: dict[str, Any]
    per_request: list[dict[str, Any]] | None
    coverage: dict[str, Any]
    planner: dict[str, Any] | None = None
    telemetry: None = None

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary, "per_request": self.per_request, "coverage": self.coverage,
                "planner": self.planner}


def _json_arg(value: Any, name: str) -> str | None:
    """An engine / router setting as the command line takes it: JSON text or a path."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, EngineConfig):
        return value.model_dump_json(exclude_unset=True)
    if isinstance(value, Mapping):
        return json.dumps(dict(value))
    if hasattr(value, "model_dump_json"):  # clustersim's KvRouterConfig
        return str(value.model_dump_json(exclude_unset=True))
    raise TypeError(f"{name} must be a dict, JSON text or a path, got {type(value).__name__}")


def _refuse_not_built(params: Mapping[str, Any]) -> None:
    for name, feature in NOT_BUILT_PARAMS.items():
        if params.get(name) is not None:
            raise ValueError(f"{name}: not built yet: {feature}")


def _pool_flags(params: Mapping[str, Any]) -> dict[str, Any]:
    """The replay flags of the worker pools: disaggregated when prefill or decode engine args are given
    (then `num_prefill_workers` / `num_decode_workers` count the pools), else `num_workers` aggregated."""
    if params.get("prefill_engine_args") is None and params.get("decode_engine_args") is None:
        for name in ("num_prefill_workers", "num_decode_workers"):
            if params.get(name, 1) != 1:
                raise ValueError(f"{name} needs prefill_engine_args or decode_engine_args (disaggregated replay)")
        return {"extra_engine_args": _json_arg(params.get("extra_engine_args"), "extra_engine_args"),
                "num_workers": params.get("num_workers", 1)}
    if params.get("extra_engine_args") is not None:
        raise ValueError("extra_engine_args is for aggregated replay; give prefill_engine_args and decode_engine_args")
    return {"prefill_engine_args": _json_arg(params.get("prefill_engine_args") or {}, "prefill_engine_args"),
            "decode_engine_args": _json_arg(params.get("decode_engine_args") or {}, "decode_engine_args"),
            "num_prefill_workers": params.get("num_prefill_workers", 1),
            "num_decode_workers": params.get("num_decode_workers", 1)}


def _run(flags: dict[str, Any], *, router_config: Any, kv_event_lag_ms: float | None, capture_per_request: bool,
         report_jsonl_path: str | os.PathLike[str] | None) -> ReplayReport:
    from cluster.commands.replay import ReplayError, add_arguments, run_replay
    from cluster.report.outputs import per_request_rows, write_per_request_jsonl
    from cluster.scenario.spec import ScenarioError
    from cluster.workload.model import WorkloadError

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    router = _json_arg(router_config, "router_config")
    if kv_event_lag_ms is not None:
        router = json.dumps({**json.loads(router or "{}"), "kv_event_lag_ms": kv_event_lag_ms})
    for name, value in {**flags, "router_config": router, "no_progress": True, "record_wall_time": True}.items():
        if not hasattr(args, name):
            raise AssertionError(f"replay has no flag for {name}")
        setattr(args, name, value)
    try:
        report, records, _ = run_replay(args)
    except (ReplayError, ValueError, WorkloadError, ScenarioError) as exc:
        raise ValueError(str(exc)) from None
    if report_jsonl_path is not None:
        write_per_request_jsonl(records, Path(report_jsonl_path))
    done: list[RequestRecord] = [r for r in records if r.terminal_status is TerminalStatus.COMPLETED]
    per_request = [dict(row) for row in per_request_rows(done)] if capture_per_request else None
    planner = report.get("planner")
    coverage = {"capture_per_request": capture_per_request, "capture_planner_details": planner is not None,
                "per_request_records": len(per_request) if per_request is not None else 0}
    return ReplayReport(summary=dict(report["summary"]), per_request=per_request, coverage=coverage,
                        planner=planner)


def run_trace_replay(
    trace_files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
    extra_engine_args: Any = None, prefill_engine_args: Any = None, decode_engine_args: Any = None,
    router_config: Any = None, ais_perf_config: Any = None, num_workers: int = 1, num_prefill_workers: int = 1,
    num_decode_workers: int = 1, replay_concurrency: int | None = None, agentic_lanes: int | None = None,
    replay_mode: str = "offline", router_mode: str = "round_robin", arrival_speedup_ratio: float = 1.0,
    trace_block_size: int | None = None, trace_format: str = "mooncake", trace_shared_prefix_ratio: float = 0.0,
    trace_num_prefix_groups: int = 0, report_jsonl_path: str | os.PathLike[str] | None = None,
    max_sim_time_ms: float | None = None, model_name: str | None = None, sla_ttft_ms: float | None = None,
    sla_itl_ms: float | None = None, sla_e2e_ms: float | None = None, planner_config: Any = None,
    performance_model_metadata: dict[str, Any] | None = None, benchmark_granularity: int = 8,
    capture_per_request: bool = False, capture_planner_details: bool = True, execution_model: str | None = None,
    weka_nested_timestamp_basis: str | None = None, telemetry_options: Any = None,
    kv_event_lag_ms: float | None = None,
) -> ReplayReport:
    """Replay one trace file, as the reference's `dynamo.replay.run_trace_replay` (see the module docstring)."""
    _refuse_not_built(locals())
    pools = _pool_flags(locals())
    files = [trace_files] if isinstance(trace_files, (str, os.PathLike)) else list(trace_files)
    if len(files) != 1:
        raise ValueError(f"trace_format={trace_format!r} requires exactly one trace file, got {len(files)}")
    if trace_format not in ("mooncake",):
        raise ValueError(f"trace_format {trace_format!r}: not built yet: that trace format (built: mooncake)")
    flags = {
        "trace_files": [os.fspath(files[0])], **pools, "replay_concurrency": replay_concurrency,
        "replay_mode": replay_mode,
        "router_mode": router_mode, "arrival_speedup_ratio": arrival_speedup_ratio,
        "trace_block_size": 512 if trace_block_size is None else trace_block_size, "trace_format": trace_format,
        "trace_shared_prefix_ratio": trace_shared_prefix_ratio, "trace_num_prefix_groups": trace_num_prefix_groups,
        "max_sim_time_seconds": None if max_sim_time_ms is None else max_sim_time_ms / 1000.0,
        "model_name": model_name, "sla_ttft_ms": sla_ttft_ms, "sla_itl_ms": sla_itl_ms, "sla_e2e_ms": sla_e2e_ms,
        "planner_config": _json_arg(planner_config, "planner_config"),
    }
    return _run(flags, router_config=router_config, kv_event_lag_ms=kv_event_lag_ms,
                capture_per_request=capture_per_request, report_jsonl_path=report_jsonl_path)


def run_synthetic_trace_replay(
    input_tokens: int, output_tokens: int, request_count: int, *,
    extra_engine_args: Any = None, prefill_engine_args: Any = None, decode_engine_args: Any = None,
    router_config: Any = None, ais_perf_config: Any = None, num_workers: int = 1, num_prefill_workers: int = 1,
    num_decode_workers: int = 1, replay_concurrency: int | None = None, replay_mode: str = "offline",
    router_mode: str = "round_robin", arrival_speedup_ratio: float = 1.0, request_rate: float | None = None,
    arrival_interval_ms: float | None = None, arrival_seed: int = 42, turns_per_session: int = 1,
    shared_prefix_ratio: float = 0.0, num_prefix_groups: int = 0, inter_turn_delay_ms: float = 0.0,
    model_name: str | None = None, sla_ttft_ms: float | None = None, sla_itl_ms: float | None = None,
    sla_e2e_ms: float | None = None, planner_config: Any = None,
    performance_model_metadata: dict[str, Any] | None = None, benchmark_granularity: int = 8,
    capture_per_request: bool = False, capture_planner_details: bool = True, telemetry_options: Any = None,
    kv_event_lag_ms: float | None = None,
) -> ReplayReport:
    """A synthetic workload, as the reference's `dynamo.replay.run_synthetic_trace_replay`.

    `arrival_seed` seeds the arrival stream and prefix groups as the reference's does
    (`clustersim replay --arrival-seed`), and the router's tie-breaks (`--seed`). As in the
    reference, exactly one of `replay_concurrency`, `request_rate` and `arrival_interval_ms` sets
    the load, and `num_prefix_groups` 0 (its default) shares no prefix whatever the ratio.
    """
    _refuse_not_built(locals())
    pools = _pool_flags(locals())
    if sum(v is not None for v in (replay_concurrency, request_rate, arrival_interval_ms)) != 1:
        raise ValueError("synthetic replay requires exactly one of replay_concurrency, request_rate, "
                         "or arrival_interval_ms")
    flags = {
        "input_tokens": input_tokens, "output_tokens": output_tokens, "request_count": request_count,
        **pools, "replay_concurrency": replay_concurrency, "replay_mode": replay_mode, "router_mode": router_mode,
        "arrival_speedup_ratio": arrival_speedup_ratio, "request_rate": request_rate,
        "arrival_interval_ms": arrival_interval_ms, "seed": arrival_seed, "arrival_seed": arrival_seed,
        "turns_per_session": turns_per_session,
        "shared_prefix_ratio": shared_prefix_ratio, "num_prefix_groups": num_prefix_groups,
        "inter_turn_delay_ms": inter_turn_delay_ms, "model_name": model_name, "sla_ttft_ms": sla_ttft_ms,
        "sla_itl_ms": sla_itl_ms, "sla_e2e_ms": sla_e2e_ms, "planner_config": _json_arg(planner_config, "planner_config"),
    }
    return _run(flags, router_config=router_config, kv_event_lag_ms=kv_event_lag_ms,
                capture_per_request=capture_per_request, report_jsonl_path=None)


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
