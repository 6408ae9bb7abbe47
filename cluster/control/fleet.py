"""The fleet: which workers exist, from when to when, and the control API that changes them.

The control shard owns the fleet (like a cluster scheduler): it allocates worker ids and rank
addresses, places new workers through a `WorkerSource` (the scenario's worker builder: vGPUs,
timing, KV size), and tells node hosts what to run (`cluster.plane.ranks`). The control API,
for the planner, chaos tests and scheduled scenario events:

- `add_worker(deployment, at_ms)`: at `at_ms`, place a worker (`capacity_exhausted` when no
  vGPU fits) and start its ranks; it serves after the engine's `startup_time`. The router adds
  it when every rank has reported ready.
- `remove_worker(worker, at_ms, drain=True)`: at `at_ms` the router stops sending it requests;
  with `drain` it finishes those already sent, else it stops at once and they fail
  (`worker_removed`). When every rank has stopped its vGPUs are free again.
A fault that kills a worker ends its life too (`restart_worker`: a fresh worker of its deployment is
added once the loss is known); `drain_worker` is a removal with drain and a deadline. Every worker is charged for its lifetime, from
its placement to its stop (`lives`); `actions` logs what was asked and what happened.
Invariant: the router sends a request to a worker only between its ready and its removal.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from actors.engine.config import ROLE_TRAITS
from actors.engine.records import FailureReason
from cluster.control.router_host import RouterHost
from cluster.control.workers import WorkerInfo, WorkerSource
from cluster.plane.endpoint import PlaneEndpoint
from cluster.plane.messages import CONTROL_ADDR, Topic, WorkerDownMsg
from cluster.plane.ranks import (
    DrainRankMsg,
    RankKill,
    RankReadyMsg,
    RankSpec,
    RankStoppedMsg,
    SlowdownPlan,
    StartRankMsg,
    StopRankMsg,
    rank_addr,
)
from cluster.sim.clock import EventLoop, Priority

_ACTION_KEY = 1 << 41
"""Loop keys of fleet actions (CONTROL priority) sort after node-side CONTROL events of an instant."""


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """A scheduled kill, as workers added during the run must learn of it (`faults.<key>`)."""

    t_ms: float
    key: int
    worker: str | None
    node: str | None
    reason: FailureReason
    detail: str
    restart: bool = False
    """A fresh worker of the killed one's deployment is added once its loss is known (restart_worker)."""

    def hits(self, info: WorkerInfo) -> bool:
        """A worker with any rank on the node dies whole: its other ranks cannot serve alone."""
        return self.worker == info.name or (self.node is not None and self.node in info.rank_nodes)

    def kill(self, gidxs: tuple[int, ...]) -> RankKill:
        """The kill of these ranks (the ranks of the workers it hits)."""
        return RankKill(self.t_ms, gidxs, self.reason, self.detail, f"faults.{self.key}", self.key)


@dataclass(frozen=True, slots=True)
class FleetAction:
    """A scheduled change of the fleet (a scenario `events:` entry): add `count` workers of a
    deployment, or remove named workers, or the `count` newest of a deployment."""

    at_ms: float
    kind: str
    """"add" | "remove" | "restart_router" | "switch_mode"."""
    deployment: str | None = None
    workers: tuple[str, ...] = ()
    count: int = 1
    drain: bool = True
    cause: str | None = None
    deadline_ms: float | None = None
    """A drain's deadline (drain_worker): what still runs then stops (`drain_deadline`)."""
    switch: tuple[Any, float, bool] | None = None
    """A node mode switch (switch_mode; `workers` holds the node): (virtualization, switch ms, fail)."""

    def apply(self, fleet: Fleet) -> None:
        if self.kind == "restart_router":
            fleet.restart_router(self.at_ms, self.cause)
        elif self.kind == "switch_mode":
            assert self.switch is not None
            fleet.switch_mode(self.workers[0], self.at_ms, *self.switch, deadline_ms=self.deadline_ms,
                              cause=self.cause)
        elif self.kind == "add":
            assert self.deployment is not None
            for _ in range(self.count):
                fleet.add_worker(self.deployment, self.at_ms, self.cause)
        elif self.workers:
            for name in self.workers:
                fleet.remove_worker(name, self.at_ms, self.drain, self.cause, self.deadline_ms)
        else:
            assert self.deployment is not None
            fleet.remove_workers(self.deployment, self.count, self.at_ms, self.drain, self.cause)


@dataclass
class WorkerLife:
    """A worker's lifecycle: starting -> ready -> draining -> stopped (or failed: a fault)."""

    info: WorkerInfo
    state: str
    started_ms: float
    ready_ms: float | None = None
    stopped_ms: float | None = None
    failed_by: str | None = None
    """The fault (`faults.<k>`) that killed it, when one did."""
    ready_ranks: set[int] = field(default_factory=set)
    stopped_ranks: set[int] = field(default_factory=set)


class Fleet:
    """See the module docstring. `initial` workers serve from time 0."""

    def __init__(self, loop: EventLoop, plane: PlaneEndpoint, router: RouterHost, source: WorkerSource | None,
                 initial: list[WorkerInfo], faults: tuple[FaultPlan, ...] = (),
                 send_times: list[float] | None = None, slow_plans: tuple[SlowdownPlan, ...] = ()) -> None:
        self.loop = loop
        self.plane = plane
        self.router = router
        self.source = source
        self.faults = faults
        self.slow_plans = slow_plans
        self.slowed_later: dict[str, list[str]] = {}
        """A slow_gpu fault (`faults.<key>`) -> workers placed during the run that its window slowed."""
        self._send_times = send_times
        self.lives: dict[int, WorkerLife] = {}
        self._by_name: dict[str, WorkerLife] = {}
        self.actions: list[dict[str, object]] = []
        """What was asked of the fleet and what happened, in order."""
        self._next_index: dict[str, int] = {}
        self._next_gidx = 0
        self._next_key = 0
        self.over = False
        """The workload is over (every request ended): actions due later are not applied."""
        self._restarts = {f"faults.{f.key}" for f in faults if f.restart}
        self._switching: dict[str, tuple[str | None, list[str]]] = {}
        """Nodes switching mode: the fault, and the deployments of the workers drained for it."""
        self._switch_timed: set[str] = set()
        self._up = 0
        """Workers starting or ready (the router fails requests at once when there is none)."""
        router.serving = lambda: self._up > 0
        for info in initial:
            self._record(WorkerLife(info, "ready", 0.0, ready_ms=0.0, ready_ranks=set(range(len(info.gidxs)))))

    def _record(self, life: WorkerLife) -> None:
        info = life.info
        self._up += 1
        self.lives[info.worker_id] = life
        self._by_name[info.name] = life
        self._next_gidx = max(self._next_gidx, max(info.gidxs) + 1)
        self._next_index[info.deployment] = self._next_index.get(info.deployment, 0) + 1
        for g, node in zip(info.gidxs, info.rank_nodes):
            self.plane.node_of[rank_addr(g)] = node

    @property
    def workers(self) -> list[WorkerInfo]:
        """Every worker that ever existed, by worker id."""
        return [self.lives[w].info for w in sorted(self.lives)]

    def addresses(self) -> list[int]:
        """Every rank address ever allocated, ascending."""
        return sorted(rank_addr(g) for life in self.lives.values() for g in life.info.gidxs)

    # ------------------------------------------------------------------ the control API

    def _schedule(self, at_ms: float, handler: Callable[[float, Any], None], arg: object) -> None:
        at_ms = max(at_ms, self.loop.now_ms)
        self.loop.schedule(at_ms, Priority.CONTROL, _ACTION_KEY + self._next_key, self._unless_over, (handler, arg))
        self._next_key += 1
        if self._send_times is not None:  # an action sends messages: the Ray runtime's lookahead
            heapq.heappush(self._send_times, at_ms)

    def _unless_over(self, now: float, item: tuple[Callable[[float, Any], None], object]) -> None:
        """Once the workload is over (`over`), nothing changes the fleet any more: an action due
        then is logged as not applied (a worker added now would serve nothing, forever)."""
        handler, arg = item
        if self.over:
            self._log(now, "not_applied", action=handler.__name__.removeprefix("_on_"), reason="the run is over")
            return
        handler(now, arg)

    def add_worker(self, deployment: str, at_ms: float, cause: str | None = None) -> None:
        """At `at_ms`, add a worker of `deployment` (see the module docstring)."""
        self._schedule(at_ms, self._on_add, (deployment, cause))

    def remove_worker(self, worker: str, at_ms: float, drain: bool = True, cause: str | None = None,
                      deadline_ms: float | None = None) -> None:
        """At `at_ms`, remove worker `worker`, draining it or not (see the module docstring); a drain
        with `deadline_ms` stops what still runs that long after (`drain_deadline`)."""
        self._schedule(at_ms, self._on_remove, (worker, drain, cause))
        if drain and deadline_ms is not None:
            self._schedule(at_ms + deadline_ms, self._on_deadline, (worker, cause))

    def remove_workers(self, deployment: str, count: int, at_ms: float, drain: bool = True,
                       cause: str | None = None) -> None:
        """At `at_ms`, remove the `count` newest serving or starting workers of `deployment`."""
        self._schedule(at_ms, self._on_remove_newest, (deployment, count, drain, cause))

    def restart_router(self, at_ms: float, cause: str | None = None) -> None:
        """At `at_ms` the router restarts: its index is rebuilt from the workers' streams."""
        self._schedule(at_ms, self._on_restart_router, cause)

    # ------------------------------------------------------------------ actions

    def _log(self, now: float, kind: str, **fields: object) -> None:
        self.actions.append({"at_ms": now, "kind": kind, **{k: v for k, v in fields.items() if v is not None}})

    def _on_add(self, now: float, arg: tuple[str, str | None]) -> None:
        deployment, cause = arg
        k = self.source.deployment_index(deployment) if self.source is not None else None
        if k is None or self.source is None:
            self._log(now, "add_worker", deployment=deployment, outcome="unknown_deployment", cause=cause)
            return
        index = self._next_index.get(deployment, 0)
        name = f"{deployment}-{index}"
        worker_id = len(self.lives)
        info = self.source.build(k, worker_id, name, self._next_gidx)
        if info is None:
            self._log(now, "add_worker", deployment=deployment, outcome="capacity_exhausted", cause=cause)
            return
        self._record(WorkerLife(info, "starting", now))
        startup_ms = (info.engine.startup_time or 0.0) * 1000.0
        kills = tuple(f.kill(info.gidxs) for f in self.faults if f.t_ms > now and f.hits(info))
        slow = [p for p in self.slow_plans if p.until_ms > now and p.hits(info.name, info.rank_nodes)]
        for p in slow:
            self.slowed_later.setdefault(f"faults.{p.key}", []).append(name)
        slowdowns = tuple(p.slowdown(info.gidxs) for p in slow)
        for spec in info.ranks:
            start = StartRankMsg(_with_startup(spec, startup_ms), kills, slowdowns)
            self.plane.send(Topic.CONTROL, CONTROL_ADDR, spec.addr, start, now)
        self._log(now, "add_worker", deployment=deployment, worker=name, outcome="placed", cause=cause)

    def _on_remove_newest(self, now: float, arg: tuple[str, int, bool, str | None]) -> None:
        deployment, count, drain, cause = arg
        up = [life for w, life in sorted(self.lives.items(), reverse=True)
              if life.info.deployment == deployment and life.state in ("starting", "ready")]
        for life in up[:count]:
            self._on_remove(now, (life.info.name, drain, cause))
        if len(up) < count:
            self._log(now, "remove_worker", deployment=deployment, outcome="no_worker_left", cause=cause)

    def _on_remove(self, now: float, arg: tuple[str, bool, str | None]) -> None:
        name, drain, cause = arg
        life = self._by_name.get(name)
        if life is None or life.state not in ("starting", "ready"):
            self._log(now, "remove_worker", worker=name, outcome="not_running", cause=cause)
            return
        info = life.info
        sent = self.router.stop_routing(info.worker_id) if life.state == "ready" else {}
        life.state = "draining"
        self._up -= 1
        for r, g in enumerate(info.gidxs):
            msg: DrainRankMsg | StopRankMsg = (
                DrainRankMsg(info.worker_id, r, sent.get(g, 0)) if drain else
                StopRankMsg(info.worker_id, r, FailureReason.WORKER_REMOVED, f"worker {name} removed", cause))
            self.plane.send(Topic.CONTROL, CONTROL_ADDR, rank_addr(g), msg, now)
        self._log(now, "remove_worker", worker=name, drain=drain, outcome="draining" if drain else "stopping",
                  cause=cause)

    def switch_mode(self, node: str, at_ms: float, cfg: Any, switch_ms: float, fail: bool = False,
                    deadline_ms: float | None = None, cause: str | None = None) -> None:
        """At `at_ms`, switch `node` to virtualization `cfg`: its workers drain (with a deadline, what
        still runs then stops and may migrate), the node is `switching` for `switch_ms`, then its new
        vGPUs appear and as many workers of the drained ones' deployments are placed again (anywhere);
        with `fail` the node ends `switch-failed` and stays out (the workers are placed elsewhere)."""
        self._schedule(at_ms, self._on_switch, (node, cfg, switch_ms, fail, deadline_ms, cause))

    def _on_switch(self, now: float, arg: tuple[str, Any, float, bool, float | None, str | None]) -> None:
        node, cfg, switch_ms, fail, deadline_ms, cause = arg
        assert self.source is not None
        try:
            names = self.source.switch_node(node, cfg, now, switch_ms, fail)
        except ValueError as exc:
            self._log(now, "switch_mode", node=node, outcome="refused", detail=str(exc), cause=cause)
            return
        self._switching[node] = (cause, [self._by_name[n].info.deployment for n in names if n in self._by_name])
        self._log(now, "switch_mode", node=node, outcome="draining", workers=names, cause=cause)
        for name in names:
            self._on_remove(now, (name, True, cause))
            if deadline_ms is not None:
                self._schedule(now + deadline_ms, self._on_deadline, (name, cause))
        self._watch_switches()

    def _watch_switches(self) -> None:
        """Schedule the end of every switch whose node has drained."""
        assert self.source is not None
        for node in sorted(self._switching):
            done = self.source.switch_done_ms(node)
            if done is not None and node not in self._switch_timed:
                self._switch_timed.add(node)
                self._schedule(done, self._on_switch_done, node)

    def _on_switch_done(self, now: float, node: str) -> None:
        assert self.source is not None
        status = self.source.complete_switch(node, now)
        self._switch_timed.discard(node)
        cause, deployments = self._switching.pop(node)
        self._log(now, "switch_done", node=node, status=status, cause=cause)
        for deployment in deployments:  # the drained workers come back, on the new vGPUs or elsewhere
            self._on_add(now, (deployment, cause))

    def _on_restart_router(self, now: float, cause: str | None) -> None:
        self.router.restart(now)
        self._log(now, "router_restarted", cause=cause)

    def _on_deadline(self, now: float, arg: tuple[str, str | None]) -> None:
        name, cause = arg
        life = self._by_name.get(name)
        if life is None or life.state != "draining":
            return  # it finished draining in time (or died)
        for r, g in enumerate(life.info.gidxs):
            msg = StopRankMsg(life.info.worker_id, r, FailureReason.DRAIN_DEADLINE,
                              f"worker {name} drained past its deadline", cause)
            self.plane.send(Topic.CONTROL, CONTROL_ADDR, rank_addr(g), msg, now)
        self._log(now, "drain_deadline", worker=name, cause=cause)

    # ------------------------------------------------------------------ what the nodes say

    def on_ready(self, now: float, msg: RankReadyMsg) -> None:
        life = self.lives[msg.worker_id]
        life.ready_ranks.add(msg.dp_rank)
        if life.state == "starting" and len(life.ready_ranks) == len(life.info.gidxs):
            life.state = "ready"
            life.ready_ms = msg.t_ms
            self.router.add_worker(now, msg.worker_id, life.info.gidxs,
                                   decode=not ROLE_TRAITS[life.info.engine.worker_type].prefills)
            self._log(now, "worker_ready", worker=life.info.name, ready_ms=msg.t_ms)

    def on_stopped(self, now: float, msg: RankStoppedMsg) -> None:
        life = self.lives[msg.worker_id]
        life.stopped_ranks.add(msg.dp_rank)
        if life.state == "draining" and len(life.stopped_ranks) == len(life.info.gidxs):
            self._end(now, life, "stopped", msg.t_ms)
            self._log(now, "worker_stopped", worker=life.info.name, stopped_ms=msg.t_ms)

    def on_down(self, now: float, msg: WorkerDownMsg) -> None:
        """A rank died: its whole worker fails and leaves routing (its other ranks cannot serve alone)."""
        life = self.lives[msg.worker_id]
        if life.state not in ("stopped", "failed"):
            life.failed_by = msg.cause
            self._end(now, life, "failed", msg.t_ms)
            self._log(now, "worker_failed", worker=life.info.name, failed_ms=msg.t_ms, reason=msg.reason.value,
                      cause=msg.cause)
            if msg.cause in self._restarts and not self.over:
                self._on_add(now, (life.info.deployment, msg.cause))

    def _end(self, now: float, life: WorkerLife, state: str, t_ms: float) -> None:
        if life.state in ("starting", "ready"):
            self._up -= 1
        life.state = state
        life.stopped_ms = t_ms
        self.router.remove_worker(now, life.info.worker_id)
        if self.source is not None:
            self.source.free(life.info.name, now)
        if self._switching:  # a node switching mode may have drained now
            self._watch_switches()
        if not self._up:  # nothing left to serve what waits in the router queue
            self.router.fail_pending(now, f"no worker is serving or starting (the last, {life.info.name}, "
                                          f"{'failed' if state == 'failed' else 'stopped'})", life.failed_by)


def _with_startup(spec: RankSpec, startup_ms: float) -> RankSpec:
    return replace(spec, startup_ms=startup_ms)
