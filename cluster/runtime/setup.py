"""What a run simulates: `SimulationSetup` (workload, ranks, router, event plane, faults).

`SimulationSetup` says what runs: the workload, the ranks (`RankSpec`, global index
order), the router (a `KvRouter` in any mode), the event plane, faults.
The runtimes (`cluster.runtime.local`, `cluster.runtime.ray`) run it; both produce the
same `RunResult`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

from actors.engine.config import ROLE_TRAITS
from actors.engine.hashing import PromptHasher
from actors.engine.records import RequestRecord
from cluster.control.fleet import FaultPlan, Fleet, FleetAction
from cluster.control.workers import WorkerInfo, WorkerSource
from cluster.control.host import ControlHost
from cluster.control.planner_host import PlannerHost
from cluster.control.router_host import RouterHost
from cluster.nodes.hosted import HostOptions
from cluster.plane.endpoint import ZERO_LATENCY, EventPlaneConfig, PlaneEndpoint
from cluster.plane.links import Partition
from cluster.plane.messages import CONTROL_ADDR, Topic
from cluster.plane.ranks import RankKill, RankSlowdown, RankSpec, SlowdownPlan
from cluster.runtime.shard import ShardPlan
from cluster.sim.clock import EventLoop
from cluster.workload.model import Workload
from router.router import KvRouter


@dataclass
class SimulationSetup:
    """What a run simulates. `ranks[g].gidx == g`; every rank of a worker shares its block size."""

    workload: Workload
    ranks: list[RankSpec]
    kv_router: KvRouter
    seed: int = 0
    plane: EventPlaneConfig = ZERO_LATENCY
    concurrency: int | None = None
    macro_step: bool = True
    collect_kv_events: bool = False
    kills: tuple[RankKill, ...] = ()
    partitions: tuple[Partition, ...] = ()
    mirror_kv: bool = False
    """Publish KV batches for an outside observer (a ZMQ mirror) even when no router subscribes."""
    workers: list[WorkerInfo] = field(default_factory=list)
    """The initial fleet (its ranks are `ranks`)."""
    source: WorkerSource | None = None
    """Places workers added during the run."""
    faults: tuple[FaultPlan, ...] = ()
    """Scheduled kills, for workers added during the run."""
    actions: tuple[FleetAction, ...] = ()
    """Scheduled changes of the fleet (scenario `events:`)."""
    slowdowns: tuple[RankSlowdown, ...] = ()
    """Straggler windows (slow_gpu faults) of the initial ranks."""
    slow_plans: tuple[SlowdownPlan, ...] = ()
    """The same windows, for workers placed during the run."""
    decode_router: KvRouter | None = None
    """Disaggregated serving: the decode stage's router (`kv_router` routes over the prefill pool)."""
    migration_limits: dict[str, int] = field(default_factory=dict)
    """Per deployment, how many times a request may migrate off a worker that went away (0: never)."""
    topology: tuple[float, Literal["per_gpu", "per_node"]] | None = None
    """KV transfers over modelled links: (NIC GB/s, `per_gpu` | `per_node` rails); None: flat bandwidth."""
    planner: Any = None
    """The planner config (`planner.config`), None: no planner."""
    planner_context: Any = None
    """What the planner knows of the deployments (`planner.sla.PlannerContext`)."""

    def __post_init__(self) -> None:
        for g, spec in enumerate(self.ranks):
            if spec.gidx != g:
                raise ValueError(f"ranks[{g}] has gidx {spec.gidx}")
        sizes = {spec.engine.block_size_tokens for spec in self.ranks}
        if len(sizes) > 1:
            raise ValueError(f"all workers behind one router need one KV block size, got {sorted(sizes)}")

    @property
    def block_size(self) -> int:
        return self.ranks[0].engine.block_size_tokens if self.ranks else 64

    @property
    def subscribes_kv(self) -> bool:
        return self.kv_router.needs_kv_events

    @property
    def uses_metrics(self) -> bool:
        """Whether ranks publish load metrics (the router blends them, or heartbeats are on)."""
        return (self.kv_router.config.load_metrics_weight > 0 or self.heartbeat_ms is not None
                or self.planner_reads_load)

    @property
    def planner_reads_load(self) -> bool:
        """A planner that reads the ranks' load metrics (load scaling, or a user's class)."""
        p = self.planner
        return p is not None and (p.type == "python" or (p.type == "sla" and p.enable_load_scaling))

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
                         self.subscribers(), self.slowdowns)

    def build_control(self, loop: EventLoop, plane: PlaneEndpoint,
                      on_done: Callable[[RequestRecord], None] | None = None) -> ControlHost:
        control = ControlHost(loop, plane)
        planner: list[PlannerHost] = []
        done = on_done
        if self.planner is not None:
            def done(rec: RequestRecord) -> None:  # the planner counts what the frontend saw end
                planner[0].on_done(rec)
                if on_done is not None:
                    on_done(rec)
        hasher = PromptHasher(self.block_size, self.workload.trace_block_size)
        # every prompt is known up front: hash their chains together, not one block at a time
        hasher.prewarm((t.hash_ids, t.input_length) for s in self.workload.sessions for t in s.turns)
        decode_workers = frozenset(s.worker_id for s in self.ranks if not ROLE_TRAITS[s.engine.worker_type].prefills)
        router = RouterHost([(s.worker_id, s.dp_rank) for s in self.ranks], self.kv_router, plane,
                            control.send_request, control.reject, hasher, recovery=self.plane.recovery,
                            fail=control.fail, decode_router=self.decode_router, decode_workers=decode_workers,
                            send_decode=control.send_decode)
        fleet = Fleet(loop, plane, router, self.source, self.workers, self.faults, control.send_times,
                      self.slow_plans)
        # A restarted router asks for replays, whose replies may ask again: stream messages can trigger sends.
        lossy = self.plane.kv_lossy or bool(self.partitions) or any(a.kind == "restart_router" for a in self.actions)
        limits = self.migration_limits
        limit_of = (lambda w: limits.get(fleet.lives[w].info.deployment, 0)) if any(limits.values()) else None
        if self.topology is not None:
            from cluster.control.kv_links import KvLinks

            nic_gbps, rails = self.topology
            control.links = KvLinks(loop, nic_gbps, rails, control.send_times)
        control.wire(self.workload, router, fleet, self.concurrency, on_done=done, stream_lossy=lossy,
                     announce_shutdown=self.heartbeat_ms is not None or bool(self.kills or self.faults),
                     migration_limit_of=limit_of)
        for action in self.actions:
            action.apply(fleet)
        if self.planner is not None:
            planner.append(PlannerHost(loop, fleet, self.planner, self.planner_context,
                                       control.send_times, control.frontend.records))
            control.planner = planner[0]
            planner[0].start()
        return control
