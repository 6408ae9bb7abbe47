"""The planner in the control shard: ticks on the virtual clock, observes, acts through the fleet.

`PlannerHost` drives a planner (`planner.policy.PLANNERS`: sla, scripted, python) with the
reference scaling hook's protocol: `initial_tick_ms()`, then at each tick `on_tick(snapshot)` ->
absolute targets and the next tick. What it observes arrives like any control component's input:
- traffic: the requests that arrived at the frontend since the last tick (count, mean ISL) and
  those that completed (their responses came over the event plane): mean OSL, TTFT, ITL;
- load: each rank's latest `LoadMetricsMsg` as delivered on the METRICS topic (late or lost
  when the plane is lossy or partitioned: the planner sees what arrived), with its latest forward
  pass (the reference's FPM snapshot: wall time, scheduled prefill tokens, decode KV tokens);
- pools: the fleet's workers per deployment (ready, starting, draining).
It acts through the fleet's control API: a target above the pool's current (ready + starting)
count adds workers (placed on free vGPUs, `capacity_exhausted` when none fits, serving after
`startup_time`), below it removes the newest with drain. Actions carry the cause
`planner.<tick>`, so the report joins each decision with what happened. Advisory planners
record decisions and do not act. A prefill target applies only when the scenario has a prefill
deployment (else the decision says `no_prefill_pool`).
Invariants: ticks are CONTROL events keyed after the fleet's actions; every tick time is in the
control shard's `send_times` before it is due (the Ray runtime's lookahead); no tick is scheduled
once the workload is over, so the run ends.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from actors.engine.records import RequestRecord, TerminalStatus
from actors.engine.timing.registry import timing_from_config
from cluster.control.fleet import Fleet
from cluster.control.workers import WorkerInfo
from cluster.plane.messages import LoadMetricsMsg
from cluster.sim.clock import EventLoop, Priority
from planner.perf_model import EnginePerf, perf_from_engine
from planner.profile_tables import ProfileTables
from planner.policy import PLANNERS, Decision, EngineLoad, Planner, PoolState, Snapshot, Traffic
from planner.sla import PlannerContext

_TICK_KEY = 1 << 42
"""Loop keys of planner ticks (CONTROL priority): after the fleet's actions of an instant."""


@dataclass
class DecisionRecord:
    tick: int
    at_ms: float
    observed: dict[str, float]
    predicted: dict[str, float]
    current: dict[str, int]
    targets: dict[str, int | None]
    reason: str
    applied: list[dict[str, Any]] = field(default_factory=list)
    """What was asked of the fleet: per pool, the change (+n / -n) or why nothing (advisory, no pool)."""

    @property
    def cause(self) -> str:
        return f"planner.{self.tick}"


class PlannerHost:
    def __init__(self, loop: EventLoop, fleet: Fleet, config: Any, context: Any, send_times: list[float],
                 arrivals: list[RequestRecord] | None = None) -> None:
        """`config` names its pools (`decode_deployment`, `prefill_deployment` or None): the world
        builder resolves them from the deployments' roles."""
        self.loop = loop
        self.fleet = fleet
        self.config = config
        self.planner: Planner = PLANNERS[config.type](config, context)
        self.decode_deployment: str = config.decode_deployment
        self.prefill_deployment: str | None = config.prefill_deployment
        self._send_times = send_times
        self._window: list[tuple[int, int, float, float]] = []
        self._arrivals = arrivals if arrivals is not None else []
        """The frontend's records, in arrival order: those after `_seen` arrived in this window."""
        self._seen = 0
        self._window_start_ms = 0.0
        self._loads: dict[tuple[int, int], EngineLoad] = {}
        self._tick = 0
        self.decisions: list[DecisionRecord] = []

    def start(self) -> None:
        self._schedule(self.planner.initial_tick_ms())

    def _schedule(self, at_ms: float) -> None:
        at_ms = max(at_ms, self.loop.now_ms)
        self.loop.schedule(at_ms, Priority.CONTROL, _TICK_KEY + self._tick, self._on_tick, None)
        heapq.heappush(self._send_times, at_ms)  # a tick may send (StartRank, Drain): the lookahead

    # ------------------------------------------------------------------ observations

    def on_done(self, rec: RequestRecord) -> None:
        """A request ended at the frontend: completed ones count in the traffic window."""
        if rec.terminal_status is not TerminalStatus.COMPLETED or rec.first_token_ms is None:
            return
        osl = rec.engine.output_length
        ttft = rec.first_token_ms - rec.arrival_ms
        itl = ((rec.last_token_ms or rec.first_token_ms) - rec.first_token_ms) / (osl - 1) if osl > 1 else 0.0
        self._window.append((rec.input_length, osl, ttft, itl))

    def on_metrics(self, msg: LoadMetricsMsg) -> None:
        m = msg.metrics
        life = self.fleet.lives.get(m.worker_id)
        bs = life.info.engine.block_size_tokens if life is not None else 1
        prefill = life is not None and self.prefill_deployment is not None \
            and life.info.deployment == self.prefill_deployment
        self._loads[(m.worker_id, m.dp_rank)] = EngineLoad(m.worker_id, m.dp_rank, m.t_ms, m.running_requests,
                                                            m.waiting_requests, m.active_blocks * bs,
                                                            m.total_blocks * bs, m.last_pass, prefill)

    def _pool(self, deployment: str | None) -> PoolState | None:
        if deployment is None:
            return None
        counts = {"ready": 0, "starting": 0, "draining": 0}
        ready: list[int] = []
        for w in sorted(self.fleet.lives):
            life = self.fleet.lives[w]
            if life.info.deployment == deployment and life.state in counts:
                counts[life.state] += 1
                if life.state == "ready":
                    ready.append(w)
        return PoolState(counts["ready"], counts["starting"], counts["draining"], tuple(ready))

    def _traffic(self, now: float) -> Traffic:
        """Requests that arrived in the window (count, mean ISL), and the OSL, TTFT and ITL of
        those that completed in it (the frontend's request and latency metrics)."""
        w = self._window
        n = len(w)
        self._window = []
        arrived = self._arrivals[self._seen:]
        self._seen = len(self._arrivals)
        duration = (now - self._window_start_ms) / 1000.0
        self._window_start_ms = now
        a = len(arrived)
        isl = sum(r.input_length for r in arrived) / a if a else 0.0
        if not n:
            return Traffic(duration, a, isl, 0.0, 0.0, 0.0)
        return Traffic(duration, a, isl, sum(x[1] for x in w) / n, sum(x[2] for x in w) / n, sum(x[3] for x in w) / n)

    # ------------------------------------------------------------------ ticks

    def _on_tick(self, now: float, _arg: object) -> None:
        if self.fleet.over:
            return
        decode = self._pool(self.decode_deployment)
        assert decode is not None
        prefill = self._pool(self.prefill_deployment)
        live = {w for w, life in self.fleet.lives.items() if life.state in ("ready", "draining")}
        loads = tuple(v for k, v in sorted(self._loads.items()) if k[0] in live)
        snap = Snapshot(self._tick, now, decode, prefill, self._traffic(now), loads)
        decision = self.planner.on_tick(snap)
        record = DecisionRecord(self._tick, now, dict(decision.observed) | {"num_req_window": snap.traffic.num_req},
                                dict(decision.predicted),
                                {"decode": decode.current} | ({"prefill": prefill.current} if prefill else {}),
                                {"decode": decision.target_decode, "prefill": decision.target_prefill},
                                decision.reason)
        self.decisions.append(record)
        self._apply(now, record, decision, decode, prefill)
        self._tick += 1
        if decision.next_tick_ms is not None:
            self._schedule(max(decision.next_tick_ms, now + 1e-3))

    def _apply(self, now: float, record: DecisionRecord, d: Decision, decode: PoolState,
               prefill: PoolState | None) -> None:
        pools = [("decode", self.decode_deployment, d.target_decode, decode),
                 ("prefill", self.prefill_deployment, d.target_prefill, prefill)]
        for pool, deployment, target, state in pools:
            if target is None:
                continue
            if deployment is None or state is None:
                record.applied.append({"pool": pool, "outcome": "no_prefill_pool"})
                continue
            change = target - state.current
            if change == 0:
                continue
            if getattr(self.config, "advisory", False):
                record.applied.append({"pool": pool, "deployment": deployment, "change": change,
                                       "outcome": "advisory"})
                continue
            record.applied.append({"pool": pool, "deployment": deployment, "change": change})
            if change > 0:
                for _ in range(change):
                    self.fleet.add_worker(deployment, now, record.cause)
            else:
                self.fleet.remove_workers(deployment, -change, now, True, record.cause)


def planner_context(config: Any, workers: list[WorkerInfo]) -> PlannerContext | None:
    """The perf models of the planner's pools, from their first workers' engines and timing, and
    the profile folder's tables when `profile_results_dir` is set (the classic formulas' input)."""
    if config is None or config.type != "sla":
        return None

    def perf(name: str | None) -> EnginePerf | None:
        for w in workers:
            if w.deployment == name:
                spec = w.ranks[0]
                timing = spec.timing if spec.timing is not None else timing_from_config(spec.engine)
                return perf_from_engine(timing, spec.engine)
        return None
    profile = ProfileTables.load(config.profile_results_dir) if config.profile_results_dir else None
    return PlannerContext(perf(config.decode_deployment), perf(config.prefill_deployment), profile)
