"""Engine ranks on one shard's event loop: the node side of the simulation.

`NodeHost` drives the `VllmRank`s placed on a shard's nodes with the rank protocol of
`actors.engine.worker` and talks to the rest of the cluster only through the event plane:
- `RequestMsg` in: the rank's decode run in flight is cut after its current pass, the
  request is queued (or refused: `CompletionMsg` rejected), and the rank is woken;
- at each pass end: `FirstTokenMsg` / `CompletionMsg` out (responses), the pass's KV
  events as one numbered `KvBatchMsg` (kv_events topic), and load metrics when the pass
  admitted, preempted, emitted a first token or completed something;
- inside a macro-stepped decode run, the passes where a request fills or starts a block
  (the only ones that can change the cache) get a publish tick at their exact end, so
  KV batches leave at the same instants, in the same grouping, as pass by pass;
- `ReplayRequestMsg` in: buffered batches or a snapshot back (`cluster.kvsync`);
- heartbeats every `heartbeat_ms` on a fixed grid, carrying the rank's last KV seq, from
  the start of the run until `heartbeat_count` periods after a `ShutdownMsg` (the control
  plane's "workload over"), so batches lost at the tail of a stream are noticed too;
- faults: a killed rank fails its requests, drops its cache and announces `WorkerDownMsg`.

Same-instant order: a rank's START/FINISH/publish events use its global index as key, so
the order never depends on which other ranks share the shard. `response_bound_ms()` is
the earliest time this host could send a response (the Ray runtime's lookahead).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

from actors.engine.config import EngineConfig
from actors.engine.hashing import PromptHasher
from actors.engine.kv.block_pool import BlockPool
from actors.engine.records import GapLog, RequestRecord, TerminalStatus
from actors.engine.request import EngineRequest
from actors.engine.scheduler.vllm import VllmRank
from actors.engine.timing.models import TimingModel
from actors.engine.timing.registry import timing_from_config
from cluster.nodes.kv_streams import KvStreams
from cluster.plane.endpoint import PlaneEndpoint
from cluster.plane.messages import (
    CONTROL_ADDR,
    CompletionMsg,
    FirstTokenMsg,
    LoadMetricsMsg,
    Message,
    ReplayRequestMsg,
    RequestMsg,
    ShutdownMsg,
    Topic,
    WorkerDownMsg,
    rank_addr,
)
from cluster.sim.clock import EventLoop, Priority


@runtime_checkable
class ContendedTiming(Protocol):
    """A timing model whose speed depends on busy co-tenants of its physical card."""

    def set_busy_cotenants(self, limits: Sequence[float]) -> None:
        """Core limits of the other time-sliced vGPUs on the card that are busy now."""
        ...


@dataclass(frozen=True, slots=True)
class RankSpec:
    """One (worker, dp_rank) slot to host: what it runs and where.

    `cotenant_group`: ranks with the same id share one physical card as time-sliced vGPUs
    and slow each other while busy (their timing models must be `ContendedTiming`);
    `core_limit` is this rank's share of that card.
    """

    gidx: int
    worker_id: int
    dp_rank: int
    engine: EngineConfig
    timing: TimingModel | None = None
    worker_name: str = ""
    node: str = ""
    cotenant_group: int | None = None
    core_limit: float = 1.0


@dataclass(frozen=True, slots=True)
class HostOptions:
    """What the host publishes and keeps; fixed for a run."""

    macro_step: bool = True
    publish_kv: bool = False
    """Someone subscribes to kv_events (a KV-aware router)."""
    collect_kv: bool = False
    """Keep every KV event of every rank (tests and equivalence checks)."""
    publish_metrics: bool = False
    heartbeat_ms: float | None = None
    heartbeat_count: int = 8
    replay_buffer_batches: int = 10_000


@dataclass(frozen=True, slots=True)
class RankKill:
    """Kill the ranks with these global indices at `t_ms` (a fault)."""

    t_ms: float
    gidxs: tuple[int, ...]
    reason: str


@dataclass(slots=True)
class RankStats:
    """Engine counters of one rank at the end of a run."""

    gidx: int
    worker_id: int
    dp_rank: int
    num_passes: int
    preemptions_total: int
    committed_prefill_tokens: int
    num_admissions: int
    alive: bool
    cached_blocks: list[int] = field(default_factory=list)
    """Hashes with a physical copy at the end (what a KV subscriber should know)."""


class NodeHost:
    """Hosts ranks on one loop. See the module docstring."""

    def __init__(
        self,
        specs: Sequence[RankSpec],
        loop: EventLoop,
        plane: PlaneEndpoint,
        gaps: GapLog,
        options: HostOptions = HostOptions(),
        kills: Sequence[RankKill] = (),
    ) -> None:
        self.specs = list(specs)
        self.loop = loop
        self.plane = plane
        self.gaps = gaps
        self.options = options
        emit = options.publish_kv or options.collect_kv
        self.ranks: list[VllmRank] = []
        for spec in self.specs:
            timing = spec.timing if spec.timing is not None else timing_from_config(spec.engine)
            self.ranks.append(VllmRank(spec.engine, timing, gaps, worker_id=spec.worker_id, dp_rank=spec.dp_rank,
                                       macro_step=options.macro_step, emit_events=emit))
        n = len(self.specs)
        self._local = {spec.gidx: i for i, spec in enumerate(self.specs)}
        self._addr = [rank_addr(spec.gidx) for spec in self.specs]
        self.kv = KvStreams(self.ranks, [s.gidx for s in self.specs], loop, plane, options.publish_kv,
                            options.collect_kv, options.replay_buffer_batches)
        self._hashers: dict[tuple[int, int], PromptHasher] = {}
        self._finish_token = [0] * n
        self._start_pending = [False] * n
        self._counters_at_start = [(0, 0)] * n
        self._alive = [True] * n
        # Contention: local index -> members (local index, core limit) of its card's group.
        groups: dict[int, list[tuple[int, float]]] = {}
        for i, spec in enumerate(self.specs):
            if spec.cotenant_group is not None:
                if not isinstance(self.ranks[i].timing, ContendedTiming):
                    raise ValueError(f"rank {spec.gidx} shares a card but its timing model ignores contention")
                groups.setdefault(spec.cotenant_group, []).append((i, spec.core_limit))
        self._group_of = {i: g for g in groups.values() for i, _ in g}
        self._busy = [False] * n
        # Lookahead bookkeeping: times of queued events that may send a response.
        self._response_times: list[float] = []
        # Heartbeats on a fixed grid, until `heartbeat_count` periods after shutdown.
        self._shut = [False] * n
        self._hb_left = [options.heartbeat_count] * n
        if options.heartbeat_ms is not None and n:
            self.loop.schedule(options.heartbeat_ms, Priority.CONTROL, -1, self._on_heartbeat)
        for k, kill in enumerate(sorted(kills, key=lambda x: x.t_ms)):
            mine = tuple(g for g in kill.gidxs if g in self._local)
            if mine:
                self.loop.schedule(kill.t_ms, Priority.CONTROL, k, self._on_kill, RankKill(kill.t_ms, mine, kill.reason))
                heapq.heappush(self._response_times, kill.t_ms)

    # ------------------------------------------------------------------ messages in

    def on_message(self, now: float, item: tuple[int, Message]) -> None:
        addr, msg = item
        i = self._local[addr - 1]
        if isinstance(msg, RequestMsg):
            self._on_request(now, i, msg)
        elif isinstance(msg, ReplayRequestMsg):
            if self._alive[i]:
                self.kv.answer_replay(now, i, msg)
        elif isinstance(msg, ShutdownMsg):
            self._shut[i] = True
        else:  # pragma: no cover - the plane only routes these kinds to ranks
            raise TypeError(f"rank {addr - 1} cannot handle {type(msg).__name__}")

    def _hasher(self, block_size: int, trace_block_size: int) -> PromptHasher:
        key = (block_size, trace_block_size)
        h = self._hashers.get(key)
        if h is None:
            h = self._hashers[key] = PromptHasher(block_size, trace_block_size)
        return h

    def _on_request(self, now: float, i: int, msg: RequestMsg) -> None:
        record = RequestRecord(request_id=msg.request_id, session_id="", turn_index=0, input_length=msg.input_length,
                               requested_output_length=msg.output_length, arrival_ms=msg.dispatched_ms,
                               dispatched_ms=msg.dispatched_ms, worker_id=msg.worker_id, dp_rank=msg.dp_rank)
        if not self._alive[i]:
            self._end_on_arrival(now, i, record, TerminalStatus.FAILED, "worker is down")
            return
        rank = self.ranks[i]
        given = None if msg.block_hashes is None or msg.local_hashes is None else (msg.block_hashes, msg.local_hashes)
        req = EngineRequest(record, msg.hash_ids, msg.trace_block_size,
                            self._hasher(rank.block_size, msg.trace_block_size), given)
        new_end = rank.interrupt(now)
        if new_end is not None:
            self._arm_finish(i, new_end)
        reason = rank.submit(req)
        if reason is not None:
            self._end_on_arrival(now, i, record, TerminalStatus.REJECTED, reason)
            return
        if self.options.publish_metrics:
            self._publish_metrics(now, i)
        self._wake(i, now)

    # ------------------------------------------------------------------ responses out

    def _end_on_arrival(self, now: float, i: int, record: RequestRecord, status: TerminalStatus,
                        reason: str) -> None:
        record.terminal_status = status
        record.reject_reason = reason
        record.terminal_ms = now
        self._respond_terminal(now, i, record)

    def _respond_terminal(self, now: float, i: int, rec: RequestRecord) -> None:
        status = rec.terminal_status
        msg = CompletionMsg(
            rec.request_id, rec.worker_id, rec.dp_rank, status, rec.output_length, rec.first_admit_ms,
            rec.first_token_ms, rec.second_token_ms, rec.last_token_ms,
            rec.terminal_ms if rec.terminal_ms is not None else now, rec.reused_input_tokens, rec.admission_count,
            rec.admitted_tokens_total, rec.reused_tokens_total, rec.num_preemptions, rec.reject_reason)
        self.plane.send(Topic.RESPONSES, self._addr[i], CONTROL_ADDR, msg, now)

    def _publish_metrics(self, now: float, i: int) -> None:
        msg = LoadMetricsMsg(self.ranks[i].load_metrics(now), self.kv.last_seq(i))
        self.plane.publish(Topic.METRICS, self._addr[i], msg, now)

    # ------------------------------------------------------------------ the rank protocol

    def _wake(self, i: int, now: float) -> None:
        if self.ranks[i].busy_until is None and not self._start_pending[i]:
            self._start_pending[i] = True
            self.loop.schedule(now, Priority.START, self.specs[i].gidx, self._on_start, i)
            heapq.heappush(self._response_times, now)

    def _arm_finish(self, i: int, end_ms: float) -> None:
        self._finish_token[i] += 1
        self.loop.schedule(end_ms, Priority.FINISH, self.specs[i].gidx, self._on_finish, (i, self._finish_token[i]))
        heapq.heappush(self._response_times, end_ms)

    def _on_start(self, now: float, i: int) -> None:
        self._start_pending[i] = False
        if not self._alive[i]:
            return
        rank = self.ranks[i]
        self._counters_at_start[i] = (rank.num_admissions, rank.preemptions_total)
        end = rank.start(now)
        for req in rank.take_rejected():
            self._respond_terminal(now, i, req.record)
        self.kv.flush(now, i)  # evictions made visible at a start that scheduled nothing
        if end is not None:
            self._arm_finish(i, end)
            if rank.run is not None:
                self.kv.start_run(i, rank.run)
        if self._group_of:
            self._update_contention(i, now)

    def _on_finish(self, now: float, arg: tuple[int, int]) -> None:
        i, token = arg
        if token != self._finish_token[i] or not self._alive[i]:
            return  # superseded: the run was cut short and re-armed (or the rank died)
        rank = self.ranks[i]
        self.kv.end_run(i)
        first, done = rank.finish(now)
        self.kv.flush(now, i)
        addr = self._addr[i]
        send = self.plane.send
        for req in first:
            send(Topic.RESPONSES, addr, CONTROL_ADDR, FirstTokenMsg(req.record.request_id, rank.worker_id,
                                                                   rank.dp_rank, now), now)
        for req in done:
            self._respond_terminal(now, i, req.record)
        if self.options.publish_metrics and (
                first or done or self._counters_at_start[i] != (rank.num_admissions, rank.preemptions_total)):
            self._publish_metrics(now, i)
        self._wake(i, now)

    def _update_contention(self, i: int, now: float) -> None:
        """Rank i may have become busy or idle: re-time its card's co-tenants.

        A pass keeps the speed it started with; co-tenants' decode runs are cut after the
        pass in progress so that later passes use the new speed.
        """
        busy = self.ranks[i].busy_until is not None
        group = self._group_of.get(i)
        if group is None or busy == self._busy[i]:
            return
        self._busy[i] = busy
        for u, _ in group:
            if u == i:
                continue
            limits = [limit for v, limit in group if v != u and self._busy[v]]
            rank = self.ranks[u]
            model = rank.timing
            assert isinstance(model, ContendedTiming)
            model.set_busy_cotenants(limits)
            new_end = rank.interrupt(now)
            if new_end is not None:
                self._arm_finish(u, new_end)

    # ------------------------------------------------------------------ heartbeats

    def _on_heartbeat(self, now: float, _: object) -> None:
        hb = self.options.heartbeat_ms
        assert hb is not None
        keep = False
        for i, rank in enumerate(self.ranks):
            if not self._alive[i]:
                continue
            if self._shut[i]:
                if self._hb_left[i] <= 0:
                    continue
                self._hb_left[i] -= 1
            rank.flush(now, inclusive=False)  # CONTROL priority: passes ending now have not ended yet
            self.kv.flush(now, i)
            self._publish_metrics(now, i)
            keep = keep or not self._shut[i] or self._hb_left[i] > 0
        if keep:
            self.loop.schedule(now + hb, Priority.CONTROL, -1, self._on_heartbeat)

    # ------------------------------------------------------------------ faults

    def _on_kill(self, now: float, kill: RankKill) -> None:
        for g in kill.gidxs:
            i = self._local[g]
            if not self._alive[i]:
                continue
            rank = self.ranks[i]
            self._alive[i] = False
            self._finish_token[i] += 1
            self.kv.end_run(i)
            rank.flush(now, inclusive=False)  # CONTROL priority: a pass ending now is lost with the rank
            if rank.run is not None:
                # Pass by pass, the pass in progress was counted when it started; count it here too.
                rank.num_passes += rank.run.passes_started_before(now) - rank.run.done
            self.kv.flush(now, i)
            victims = sorted({id(r): r for r in [*rank.running, *rank.waiting]}.values(),
                             key=lambda r: r.record.request_id)
            for req in victims:
                rec = req.record
                rec.terminal_status = TerminalStatus.FAILED
                rec.reject_reason = kill.reason
                rec.terminal_ms = now
                self._respond_terminal(now, i, rec)
            rank.running.clear()
            rank.waiting.clear()
            rank.run = None
            rank.busy_until = None
            rank.pool = BlockPool(rank.config.num_gpu_blocks)
            rank.pool.emit_token_ids = rank.config.emit_kv_token_ids
            self.plane.send(Topic.CONTROL, self._addr[i], CONTROL_ADDR,
                            WorkerDownMsg(rank.worker_id, rank.dp_rank, now, kill.reason), now)
            if self._group_of:
                self._update_contention(i, now)

    # ------------------------------------------------------------------ lookahead and results

    def response_bound_ms(self, processed_before_ms: float) -> float:
        """No response leaves this host before this time, given that every event before
        `processed_before_ms` has been processed and no new message arrives meanwhile."""
        times = self._response_times
        while times and times[0] < processed_before_ms:
            heapq.heappop(times)
        return times[0] if times else math.inf

    def finalize(self) -> None:
        """Publish and collect what the ranks still hold stamped (end of run)."""
        for i in range(len(self.ranks)):
            self.kv.flush(self.loop.now_ms, i)

    def rank_stats(self) -> list[RankStats]:
        return [
            RankStats(s.gidx, s.worker_id, s.dp_rank, r.num_passes, r.preemptions_total, r.committed_prefill_tokens,
                      r.num_admissions, self._alive[i], r.pool.cached_hashes())
            for i, (s, r) in enumerate(zip(self.specs, self.ranks))
        ]
