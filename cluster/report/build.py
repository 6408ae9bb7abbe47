"""The one report builder: the reference summary plus, per layout, the sections around it (DESIGN §11).

Two layouts of the same run:
- `replay` (what `clustersim replay` writes, the reference replay's report): `summary`,
  `config` (workload, workers, router mode, concurrency, engine keys) and per-worker counters;
- `scenario` (what `clustersim run` writes): the sections below.

Sections of the scenario layout:
- `summary`: the reference replay's keys (`cluster.report.summary.build_summary`); worker
  seconds and `gpu_hours` charge every worker's GPUs (vGPUs, or abstract GPUs) for its lifetime;
- `workers` (every worker that existed, with its lifecycle: state, started/ready/stopped ms, GPU-hours),
  `nodes` (vGPUs in use at the end, physical GPU-hours over the run): placement, KV capacity,
  engine counters;
- `event_plane`: per-topic link counters, the router's KV stream reassembly
  (`kv_sync`), the router's own counters, and `index`: how far the router's prefix index
  is from the workers' real caches at the end (blocks missing from / extra in the index,
  per live rank). With stream recovery on it is 0 once every gap was repaired;
- `run`: when the last request ended (`end_ms`: the run ends then, every request completed,
  rejected or failed with a reason), how many requests did not end (`unaccounted`, 0 unless
  the simulation was cut short), and request migrations (`migrations`, `requests_migrated`);
- `faults`: what was injected, whether it was applied (a fault due after the run ended is not),
  the workers it killed and the requests it cost (each failed request counts for one fault, its cause);
- `fleet_events`: the fleet changes asked for (scheduled events, the control API) and what came of them;
- `planner` (only with a planner): its decisions, replicas over time, GPU-hours per deployment,
  SLA attainment and goodput (`cluster.report.planner`); both layouts.
Nothing here depends on the runtime or the wall clock, so Local and Ray reports of one
scenario are byte-identical (wall time is added by the CLI only when asked).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from actors.engine.config import ROLE_TRAITS
from actors.engine.records import FailureReason, RequestRecord, TerminalStatus
from cluster.control.fleet import Fleet, WorkerLife
from cluster.control.workers import WorkerInfo
from cluster.control.host import ControlHost
from cluster.report.summary import WorkerLifetime, build_summary
from cluster.runtime.shard import RunResult
from cluster.scenario.world import World


def index_divergence(control: ControlHost, result: RunResult) -> dict[str, int] | None:
    """Router index vs the live ranks' real caches at the end of the run (None without a KV index)."""
    kv = control.router.kv_router
    if kv is None or not control.router.subscribes_kv:
        return None
    missing = extra = diverged = checked = 0
    decode_pool = control.router.decode_pool
    for rank in result.ranks:
        if not rank.alive or rank.worker_id in decode_pool:  # decode workers publish no KV events
            continue
        checked += 1
        truth = set(rank.cached_blocks)
        held = kv.index.held_blocks(rank.worker_id, rank.dp_rank)
        m, e = len(truth - held), len(held - truth)
        missing += m
        extra += e
        diverged += bool(m or e)
    return {"ranks_diverged": diverged, "blocks_missing": missing, "blocks_extra": extra,
            "ranks_checked": checked}


@dataclass(frozen=True, slots=True)
class ReportOptions:
    """What the command line adds to a report: wall time (not byte-reproducible) and SLA bounds."""

    wall_time_ms: float | None = None
    sla_ttft_ms: float | None = None
    sla_tpot_ms: float | None = None
    sla_e2e_ms: float | None = None


Layout = Literal["replay", "scenario"]
ROUTER_MODE_FLAGS = {"kv": "kv_router"}
"""Router modes as the replay flags spell them (the others are spelled alike)."""


def build_report(world: World, result: RunResult, control: ControlHost, layout: Layout = "scenario",
                 options: ReportOptions = ReportOptions()) -> dict[str, Any]:
    """The report of a run in one of the two layouts (see the module docstring)."""
    report = (_replay_report if layout == "replay" else _scenario_report)(world, result, control, options)
    if control.handoffs is not None:  # disaggregated serving
        report["kv_transfer"] = kv_transfer_report(result.records, control)
    return report


def kv_transfer_report(records: list[RequestRecord], control: ControlHost) -> dict[str, Any]:
    """Transfers of disaggregated requests: count, bytes, mean/p99 time; with `topology`, the links'."""
    hos = [r.handoff for r in records if r.handoff is not None and r.handoff.source_released_ms is not None]
    times = sorted(h.transfer_ms for h in hos)
    out: dict[str, Any] = {
        "transfers": len(times), "bytes": sum(h.transfer_bytes for h in hos),
        "mean_transfer_ms": math.fsum(times) / len(times) if times else 0.0,
        "p99_transfer_ms": times[max(0, math.ceil(0.99 * len(times)) - 1)] if times else 0.0,
    }
    if control.links is not None:
        duration = max((r.terminal_ms or 0.0 for r in records), default=0.0)
        link = control.links.summary(duration)
        out.update(topology=True, busiest_link=link["busiest_link"],
                   busiest_link_utilization=link["busiest_link_utilization"])
    return out


def _lives(fleet: Fleet) -> list[WorkerLife]:
    """Every worker that existed, in worker id order."""
    return [life for _, life in sorted(fleet.lives.items())]


def _lifetime(life: WorkerLife) -> WorkerLifetime:
    """When the worker held its GPUs: from its placement until it stopped (None: to the end)."""
    return WorkerLifetime(life.started_ms, life.stopped_ms, life.info.num_gpus,
                          prefill=not ROLE_TRAITS[life.info.engine.worker_type].decodes)


def _summary(world: World, result: RunResult, control: ControlHost, options: ReportOptions) -> dict[str, Any]:
    gpus = [w.num_gpus for w in world.workers]
    return build_summary(result.records, result.gaps, num_workers=len(world.workers),
                         gpus_per_worker=max(gpus, default=1),
                         committed_prefill_tokens=sum(r.committed_prefill_tokens for r in result.ranks),
                         wall_time_ms=options.wall_time_ms, sla_ttft_ms=options.sla_ttft_ms,
                         sla_tpot_ms=options.sla_tpot_ms, sla_e2e_ms=options.sla_e2e_ms,
                         lifetimes=[_lifetime(life) for life in _lives(control.fleet)])


def _engine_counters(result: RunResult) -> Callable[[WorkerInfo], dict[str, int]]:
    """A worker's engine counters, summed over its ranks, and its completed requests."""
    completed = Counter(r.worker_id for r in result.records if r.terminal_status is TerminalStatus.COMPLETED)
    by_gidx = {r.gidx: r for r in result.ranks}

    def counters(w: WorkerInfo) -> dict[str, int]:
        rs = [by_gidx[g] for g in w.gidxs]
        return {"num_passes": sum(r.num_passes for r in rs), "preemptions_total": sum(r.preemptions_total for r in rs),
                "committed_prefill_tokens": sum(r.committed_prefill_tokens for r in rs),
                "completed_requests": completed[w.worker_id]}
    return counters


def _replay_report(world: World, result: RunResult, control: ControlHost, options: ReportOptions) -> dict[str, Any]:
    sc = world.loaded.scenario
    counters = _engine_counters(result)
    workers = [{"worker_id": w.worker_id, **counters(w)} for w in control.fleet.workers]
    mode = sc.router.mode
    return {
        "summary": _summary(world, result, control, options),
        "config": {
            "workload": world.workload_description, "num_workers": len(world.workers),
            "router_mode": ROUTER_MODE_FLAGS.get(mode, mode), "replay_concurrency": sc.workload.concurrency,
            "arrival_speedup_ratio": sc.workload.arrival_speedup_ratio,
            "trace_block_size": sc.workload.trace_block_size,
            "engine": sc.deployments[0].engine.model_dump(mode="json"),
        },
        "workers": workers,
        **_planner(result, control, options),
    }


def _planner(result: RunResult, control: ControlHost, options: ReportOptions) -> dict[str, Any]:
    """The `planner` section (`cluster.report.planner`), only when the run has a planner."""
    if control.planner is None:
        return {}
    from cluster.report.planner import planner_section

    duration_ms = max((r.terminal_ms for r in result.records if r.terminal_status is TerminalStatus.COMPLETED
                       and r.terminal_ms is not None), default=0.0)
    return {"planner": planner_section(control.planner, control.fleet, result.records, duration_ms,
                                       options.sla_ttft_ms, options.sla_tpot_ms)}


def _scenario_report(world: World, result: RunResult, control: ControlHost,
                     options: ReportOptions) -> dict[str, Any]:
    sc = world.loaded.scenario
    records = result.records
    ranks = result.ranks
    summary = _summary(world, result, control, options)
    duration_ms = float(summary["duration_ms"] or 0.0)
    counters = _engine_counters(result)
    alive = {r.gidx: r.alive for r in ranks}
    fleet = control.fleet
    lives = _lives(fleet)
    workers = []
    for life in lives:
        w = life.info
        workers.append({
            "name": w.name, "worker_id": w.worker_id, "deployment": w.deployment,
            "nodes": w.nodes,
            "vgpus": [[v.vgpu_id for v in rank] for rank in w.vgpus],
            "num_gpu_blocks": w.engine.num_gpu_blocks, "block_size": w.engine.block_size_tokens,
            **counters(w), "alive": all(alive[g] for g in w.gidxs),
            "state": life.state, "started_ms": life.started_ms, "ready_ms": life.ready_ms,
            "stopped_ms": life.stopped_ms, "num_gpus": w.num_gpus,
            "gpu_hours": w.num_gpus * _lifetime(life).span_ms(duration_ms) / 3_600_000.0,
        })
    physical = _physical_ms(lives, duration_ms)
    nodes = []
    for n in world.nodes:
        held = [(v, h) for v, h in n.vgpus()]
        nodes.append({
            "name": n.name, "mode": n.mode.mode, "status": n.status,
            "cards": [c.gpu.name for c in n.cards],
            "vgpus": len(held), "vgpus_used": sum(1 for _, h in held if h),
            "workers": n.workers(),
            "physical_gpu_hours": physical.get(n.name, 0.0) / 3_600_000.0,
        })
    statuses = Counter(r.terminal_status.value for r in records)
    # a fault fails the requests it hit; later turns of their sessions, never sent, are its `turns_dropped`
    failed_by_cause = Counter(r.cause for r in records if r.terminal_status is TerminalStatus.FAILED
                              and r.reason is not FailureReason.SESSION_ENDED)
    dropped_by_cause = Counter(r.cause for r in records if r.reason is FailureReason.SESSION_ENDED)
    killed: dict[str, list[str]] = {}  # a kill also hits workers added after the run began
    for life in lives:
        if life.failed_by is not None:
            killed.setdefault(life.failed_by, []).append(life.info.name)
    end_ms = control.frontend.done_ms
    faults = []
    for f in world.faults:
        entry = {k: v for k, v in f.items() if k != "id"}
        hit = killed.get(str(f["id"]), [])
        at_ms = f["at_ms"]
        assert isinstance(at_ms, float)
        entry["applied"] = bool(hit) or (end_ms is not None and at_ms <= end_ms)
        if f["kind"] not in ("partition", "degrade_link"):
            entry.setdefault("workers", hit)  # killed by it; a slowdown lists the workers it slowed
        if f["kind"] == "slow_gpu":  # and the workers placed inside its window
            initial = entry["workers"]
            assert isinstance(initial, list)
            entry["workers"] = [*initial, *control.fleet.slowed_later.get(str(f["id"]), [])]
        entry["requests_failed"] = failed_by_cause.get(str(f["id"]), 0)
        entry["turns_dropped"] = dropped_by_cause.get(str(f["id"]), 0)
        faults.append(entry)
    kv = control.router.kv_router
    plane: dict[str, Any] = {
        "links": {t.value: asdict(c) for t, c in result.counters.items() if c.sent},
        "kv_sync": asdict(control.router.subscriber.stats),
        "router": asdict(kv.stats()) if kv is not None else None,
        "index": index_divergence(control, result),
    }
    return {
        "scenario": {"name": sc.name, "seed": sc.seed, "model": sc.model, "file": world.loaded.file_name},
        "config": {
            "workload": world.workload_description,
            "router": kv.config.model_dump(mode="json") if kv is not None else None,
            "event_plane": sc.event_plane.model_dump(mode="json"),
            "deployments": [d.model_dump(mode="json") for d in sc.deployments],
            "num_workers": len(world.workers), "num_ranks": len(ranks),
        },
        "summary": summary,
        "requests": dict(sorted(statuses.items())),
        "run": {"end_ms": end_ms, "unaccounted": statuses.get(TerminalStatus.INCOMPLETE.value, 0),
                "migrations": sum(len(r.migrated_from) for r in records),
                "requests_migrated": sum(1 for r in records if r.migrated_from)},
        "workers": workers,
        "nodes": nodes,
        "event_plane": plane,
        "faults": faults,
        "fleet_events": fleet.actions,
        **_planner(result, control, options),
    }


def _physical_ms(lives: list[WorkerLife], duration_ms: float) -> dict[str, float]:
    """Per node, physical cards' worth of vGPU-milliseconds its workers held (MIG slices by their SM
    share, time-sliced shares by their core limit)."""
    out: dict[str, list[float]] = {}
    for life in lives:
        span = _lifetime(life).span_ms(duration_ms)
        for rank in life.info.vgpus:
            for v in rank:
                share = v.sm_fraction if v.isolation != "time-sliced" else v.core_limit
                out.setdefault(v.node, []).append(share * span)
    return {node: math.fsum(parts) for node, parts in out.items()}
