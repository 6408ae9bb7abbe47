"""`ReplaySimulation`, the offline replay (`clustersim replay`): identical workers behind one
router on a zero-latency plane, so every client-side time equals the engine time and KV
events reach the router the instant their pass ends (the reference semantics).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from actors.engine.config import EngineConfig
from actors.engine.events import KvEvent
from actors.engine.records import GapLog, RequestRecord
from actors.engine.timing.models import TimingModel
from cluster.nodes.host import RankSpec, RankStats
from cluster.runtime.local import run_local
from cluster.runtime.setup import SimulationSetup
from cluster.workload.model import Workload
from router.router import KvRouter

# ------------------------------------------------------------------------------ offline replay


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """Engine counters of one worker (summed over its DP ranks)."""

    worker_id: int
    num_passes: int
    preemptions_total: int
    committed_prefill_tokens: int


@dataclass
class SimulationResult:
    records: list[RequestRecord]
    gaps: GapLog
    workers: list[WorkerStats]
    num_events: int
    end_ms: float
    committed_prefill_tokens: int = 0
    kv_events: list[KvEvent] = field(default_factory=list)
    """Every KV event of the run, per rank in event-id order (only with collect_kv_events)."""
    ranks: list[RankStats] = field(default_factory=list)


def worker_stats(ranks: Sequence[RankStats]) -> list[WorkerStats]:
    """Per-worker sums of rank counters, by worker id."""
    acc: dict[int, list[int]] = {}
    for r in ranks:
        a = acc.setdefault(r.worker_id, [0, 0, 0])
        a[0] += r.num_passes
        a[1] += r.preemptions_total
        a[2] += r.committed_prefill_tokens
    return [WorkerStats(w, *acc[w]) for w in sorted(acc)]


class ReplaySimulation:
    """One aggregated replay: `num_workers` identical workers behind one router, zero latency."""

    def __init__(
        self,
        workload: Workload,
        engine: EngineConfig,
        num_workers: int,
        *,
        concurrency: int | None = None,
        timing: TimingModel | None = None,
        timings: Sequence[TimingModel] | None = None,
        contention: Sequence[Sequence[tuple[int, float]]] = (),
        macro_step: bool = True,
        on_request_done: Callable[[RequestRecord], None] | None = None,
        collect_kv_events: bool = False,
        kv_router: KvRouter | None = None,
    ) -> None:
        if num_workers < 1:
            raise ValueError("num_workers must be at least 1")
        if timings is not None and len(timings) != num_workers:
            raise ValueError(f"timings has {len(timings)} models for {num_workers} workers")
        per_worker = list(timings) if timings is not None else [timing] * num_workers
        group_of: dict[int, tuple[int | None, float]] = {}
        for k, group in enumerate(contention):
            for w, share in group:
                group_of[w] = (k, share)
        ranks: list[RankSpec] = []
        for w in range(num_workers):
            gid, limit = group_of.get(w, (None, 1.0))
            for r in range(engine.dp_size):
                ranks.append(RankSpec(len(ranks), w, r, engine, per_worker[w], cotenant_group=gid, core_limit=limit))
        self.setup = SimulationSetup(workload, ranks, concurrency=concurrency, kv_router=kv_router,
                                     macro_step=macro_step, collect_kv_events=collect_kv_events)
        self._on_done = on_request_done

    def run(self) -> SimulationResult:
        result, _ = run_local(self.setup, self._on_done)
        workers = worker_stats(result.ranks)
        return SimulationResult(
            records=result.records, gaps=result.gaps, workers=workers, num_events=result.num_events,
            end_ms=result.end_ms, committed_prefill_tokens=sum(w.committed_prefill_tokens for w in workers),
            kv_events=result.kv_events, ranks=result.ranks)
