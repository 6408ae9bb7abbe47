"""A simulation as components on the event plane, and its Local runtime (one process, one loop).

`SimulationSetup` says what runs: the workload, the ranks (`RankSpec`, global index
order), the router (a `KvRouter` or a simple `RoutingPolicy`), the event plane, faults.
`run_local(setup)` builds ONE shard holding the control components (frontend + router)
and every rank, and runs its loop to the end. `cluster.runtime` runs the same setup
sharded over Ray actors; both produce the same `RunResult`.

`ReplaySimulation` is the offline replay (`clustersim replay`): identical workers behind
one router on a zero-latency plane, so every client-side time equals the engine time and
KV events reach the router the instant their pass ends (the reference semantics).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from actors.engine.config import EngineConfig
from actors.engine.events import KvEvent
from actors.engine.hashing import PromptHasher
from actors.engine.records import GapLog, RequestRecord
from actors.engine.timing import TimingModel
from cluster.clock import EventLoop
from cluster.control import ControlHost
from cluster.eventplane import CONTROL_ADDR, KvBatchMsg, Topic
from cluster.links import LinkCounters, Partition
from cluster.nodehost import HostOptions, RankKill, RankSpec, RankStats
from cluster.plane import ZERO_LATENCY, EventPlaneConfig, PlaneEndpoint
from cluster.routing import RoundRobinRouter, RouteQuery, RouterHost, RoutingPolicy
from cluster.shard import NodeShardResult, RunResult, Shard, ShardPlan
from cluster.workload import Workload
from router.router import KvRouter

__all__ = ["ReplaySimulation", "RoundRobinRouter", "RouteQuery", "RoutingPolicy", "SimulationResult",
           "SimulationSetup", "WorkerStats", "run_local"]


@dataclass
class SimulationSetup:
    """What a run simulates. `ranks[g].gidx == g`; every rank of a worker shares its block size."""

    workload: Workload
    ranks: list[RankSpec]
    seed: int = 0
    plane: EventPlaneConfig = ZERO_LATENCY
    concurrency: int | None = None
    kv_router: KvRouter | None = None
    policy: RoutingPolicy | None = None
    """Used when `kv_router` is None; default round robin over ranks."""
    macro_step: bool = True
    collect_kv_events: bool = False
    kills: tuple[RankKill, ...] = ()
    partitions: tuple[Partition, ...] = ()
    mirror_kv: bool = False
    """Publish KV batches for an outside observer (a ZMQ mirror) even when no router subscribes."""

    def __post_init__(self) -> None:
        for g, spec in enumerate(self.ranks):
            if spec.gidx != g:
                raise ValueError(f"ranks[{g}] has gidx {spec.gidx}")
        sizes = {spec.engine.block_size_tokens for spec in self.ranks}
        if len(sizes) > 1:
            raise ValueError(f"all workers behind one router need one KV block size, got {sorted(sizes)}")
        if self.kv_router is not None and self.policy is not None:
            raise ValueError("give either kv_router or policy")

    @property
    def block_size(self) -> int:
        return self.ranks[0].engine.block_size_tokens if self.ranks else 64

    @property
    def subscribes_kv(self) -> bool:
        return self.kv_router is not None and self.kv_router.config.use_kv_events

    @property
    def uses_metrics(self) -> bool:
        """Whether ranks publish load metrics (the router blends them, or heartbeats are on)."""
        if self.kv_router is None:
            return False
        return self.kv_router.config.load_metrics_weight > 0 or self.heartbeat_ms is not None

    @property
    def heartbeat_ms(self) -> float | None:
        if not self.subscribes_kv:
            return None
        return self.plane.effective_heartbeat_ms(partitions=bool(self.partitions))

    def host_options(self) -> HostOptions:
        return HostOptions(
            macro_step=self.macro_step, publish_kv=self.subscribes_kv or self.mirror_kv,
            collect_kv=self.collect_kv_events,
            publish_metrics=self.uses_metrics, heartbeat_ms=self.heartbeat_ms,
            heartbeat_count=self.plane.heartbeat_count, replay_buffer_batches=self.plane.replay_buffer_batches)

    def subscribers(self) -> tuple[tuple[Topic, tuple[int, ...]], ...]:
        subs: list[tuple[Topic, tuple[int, ...]]] = []
        if self.subscribes_kv:
            subs.append((Topic.KV_EVENTS, (CONTROL_ADDR,)))
        if self.uses_metrics:
            subs.append((Topic.METRICS, (CONTROL_ADDR,)))
        return tuple(subs)

    def shard_plan(self, ranks: Sequence[RankSpec]) -> ShardPlan:
        return ShardPlan(self.plane, self.seed, tuple(ranks), self.host_options(), self.kills, self.partitions,
                         self.subscribers())

    def build_control(self, loop: EventLoop, plane: PlaneEndpoint,
                      on_done: Callable[[RequestRecord], None] | None = None) -> ControlHost:
        control = ControlHost(loop, plane)
        policy = None
        if self.kv_router is None:
            policy = self.policy if self.policy is not None else RoundRobinRouter(len(self.ranks))
        hasher = PromptHasher(self.block_size, self.workload.trace_block_size)
        router = RouterHost([(s.worker_id, s.dp_rank) for s in self.ranks], policy, self.kv_router, plane,
                            control.send_request, control.reject, hasher, recovery=self.plane.recovery)
        lossy = self.plane.kv_lossy or bool(self.partitions)
        control.wire(self.workload, router, self.concurrency, on_done=on_done, stream_lossy=lossy,
                     announce_shutdown=self.heartbeat_ms is not None)
        return control


def finish_run(control: ControlHost, nodes: Sequence[NodeShardResult],
               counter_sets: Sequence[dict[Topic, LinkCounters]], num_events: int, end_ms: float) -> RunResult:
    """Merge the node shards' results and the plane counters of every shard into one `RunResult`."""
    ranks = sorted((r for n in nodes for r in n.ranks), key=lambda r: r.gidx)
    gaps = GapLog()
    for n in nodes:
        gaps.extend(n.gaps)
    where = {r.gidx: (n, k) for n in nodes for k, r in enumerate(n.ranks)}
    kv_events = [e for g in range(len(ranks)) for e in where[g][0].kv_events[where[g][1]]]
    counters: dict[Topic, LinkCounters] = {t: LinkCounters() for t in Topic}
    for source in counter_sets:
        for topic, c in source.items():
            total = counters[topic]
            for name in ("sent", "delivered", "lost", "duplicated", "reordered", "partitioned"):
                setattr(total, name, getattr(total, name) + getattr(c, name))
    kv = control.router.kv_router
    if kv is not None:
        kv.advance(float("inf"))  # events still held by kv_event_lag_ms reach the index
    return RunResult(records=control.frontend.records, gaps=gaps, ranks=ranks, kv_events=kv_events,
                     counters=counters, num_events=num_events, end_ms=end_ms)


def run_local(setup: SimulationSetup, on_done: Callable[[RequestRecord], None] | None = None,
              kv_tap: Callable[[KvBatchMsg], None] | None = None) -> tuple[RunResult, ControlHost]:
    """Run `setup` in this process on one event loop (the Local runtime).

    `kv_tap` sees every KV batch the ranks publish, as they publish it (e.g. a ZMQ mirror).
    """
    shard = Shard(setup.shard_plan(setup.ranks), hosts_control=True)
    shard.nodes.kv.kv_tap = kv_tap
    control = shard.attach_control(lambda loop, plane: setup.build_control(loop, plane, on_done))
    control.frontend.start()
    shard.advance(float("inf"))
    result = finish_run(control, [shard.node_result()], [shard.plane.counters], shard.loop.num_events,
                        shard.loop.now_ms)
    return result, control


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
        router: RoutingPolicy | None = None,
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
        if kv_router is not None and router is not None:
            raise ValueError("give either router or kv_router")
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
        self.setup = SimulationSetup(workload, ranks, concurrency=concurrency, kv_router=kv_router, policy=router,
                                     macro_step=macro_step, collect_kv_events=collect_kv_events)
        self._on_done = on_request_done

    def run(self) -> SimulationResult:
        result, _ = run_local(self.setup, self._on_done)
        workers = worker_stats(result.ranks)
        return SimulationResult(
            records=result.records, gaps=result.gaps, workers=workers, num_events=result.num_events,
            end_ms=result.end_ms, committed_prefill_tokens=sum(w.committed_prefill_tokens for w in workers),
            kv_events=result.kv_events, ranks=result.ranks)
