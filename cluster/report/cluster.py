"""The report of a scenario run: the reference summary plus cluster sections (DESIGN §11).

Sections:
- `summary`: the reference replay's keys (`cluster.report.summary.build_summary`); `gpu_hours`
  counts every vGPU of every worker for the whole run;
- `workers`, `nodes`: placement, KV capacity and engine counters;
- `event_plane`: per-topic link counters, the router's KV stream reassembly
  (`kv_sync`), the router's own counters, and `index`: how far the router's prefix index
  is from the workers' real caches at the end (blocks missing from / extra in the index,
  per live rank). With stream recovery on it is 0 once every gap was repaired;
- `faults`: what was injected and which requests it cost.
Nothing here depends on the runtime or the wall clock, so Local and Ray reports of one
scenario are byte-identical (wall time is added by the CLI only when asked).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import Any

from actors.engine.records import TerminalStatus
from cluster.control.host import ControlHost
from cluster.report.summary import build_summary
from cluster.runtime.shard import RunResult
from cluster.scenario.world import World


def index_divergence(control: ControlHost, result: RunResult) -> dict[str, int] | None:
    """Router index vs the live ranks' real caches at the end of the run (None without a KV index)."""
    kv = control.router.kv_router
    if kv is None or not control.router.subscribes_kv:
        return None
    missing = extra = diverged = 0
    for rank in result.ranks:
        if not rank.alive:
            continue
        truth = set(rank.cached_blocks)
        held = kv.index.held_blocks(rank.worker_id, rank.dp_rank)
        m, e = len(truth - held), len(held - truth)
        missing += m
        extra += e
        diverged += bool(m or e)
    return {"ranks_diverged": diverged, "blocks_missing": missing, "blocks_extra": extra,
            "ranks_checked": sum(1 for r in result.ranks if r.alive)}


def build_report(world: World, result: RunResult, control: ControlHost) -> dict[str, Any]:
    sc = world.loaded.scenario
    records = result.records
    ranks = result.ranks
    vgpus_per_worker = [sum(len(r) for r in w.vgpus) for w in world.workers]
    summary = build_summary(records, result.gaps, num_workers=len(world.workers),
                            gpus_per_worker=max(vgpus_per_worker, default=1),
                            committed_prefill_tokens=sum(r.committed_prefill_tokens for r in ranks),
                            wall_time_ms=None)
    duration_h = float(summary["duration_ms"] or 0.0) / 3_600_000.0
    summary["gpu_hours"] = sum(vgpus_per_worker) * duration_h
    completed = Counter(r.worker_id for r in records if r.terminal_status is TerminalStatus.COMPLETED)
    by_gidx = {r.gidx: r for r in ranks}
    workers = []
    for w in world.workers:
        rs = [by_gidx[g] for g in w.gidxs]
        workers.append({
            "name": w.name, "worker_id": w.worker_id, "deployment": w.deployment,
            "nodes": sorted({v.node for rank in w.vgpus for v in rank}),
            "vgpus": [[v.vgpu_id for v in rank] for rank in w.vgpus],
            "num_gpu_blocks": w.engine.num_gpu_blocks, "block_size": w.engine.block_size_tokens,
            "num_passes": sum(r.num_passes for r in rs), "preemptions_total": sum(r.preemptions_total for r in rs),
            "committed_prefill_tokens": sum(r.committed_prefill_tokens for r in rs),
            "completed_requests": completed[w.worker_id], "alive": all(r.alive for r in rs),
        })
    nodes = []
    for n in world.nodes:
        held = [(v, h) for v, h in n.vgpus()]
        nodes.append({
            "name": n.name, "mode": n.mode.mode, "status": n.status,
            "cards": [c.gpu.name for c in n.cards],
            "vgpus": len(held), "vgpus_used": sum(1 for _, h in held if h),
            "workers": n.workers(),
            "physical_gpu_hours": _physical_share(held) * duration_h,
        })
    statuses = Counter(r.terminal_status.value for r in records)
    failed_by_cause = Counter(r.cause for r in records if r.terminal_status is TerminalStatus.FAILED)
    faults = []
    for f in world.faults:
        entry = {k: v for k, v in f.items() if k != "id"}
        entry["requests_failed"] = failed_by_cause.get(str(f["id"]), 0)
        faults.append(entry)
    kv = control.router.kv_router
    plane: dict[str, Any] = {
        "links": {t.value: asdict(c) for t, c in result.counters.items() if c.sent},
        "kv_sync": asdict(control.router.subscriber.stats),
        "router": asdict(kv.stats()) if kv is not None else None,
        "index": index_divergence(control, result),
    }
    return {
        "scenario": {"name": sc.name, "seed": sc.seed, "model": sc.model, "file": world.loaded.path.name},
        "config": {
            "workload": world.workload_description,
            "router": kv.config.model_dump(mode="json") if kv is not None else None,
            "event_plane": sc.event_plane.model_dump(mode="json"),
            "deployments": [d.model_dump(mode="json") for d in sc.deployments],
            "num_workers": len(world.workers), "num_ranks": len(ranks),
        },
        "summary": summary,
        "requests": dict(sorted(statuses.items())),
        "workers": workers,
        "nodes": nodes,
        "event_plane": plane,
        "faults": faults,
    }


def _physical_share(held: list[Any]) -> float:
    """Physical cards' worth of the vGPUs in use (MIG slices by their SM share, shares by core limit)."""
    total = 0.0
    for v, holder in held:
        if holder:
            total += v.sm_fraction if v.isolation != "time-sliced" else v.core_limit
    return total

