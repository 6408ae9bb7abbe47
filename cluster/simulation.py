"""Aggregated offline replay on the Local runtime: frontend, router, engine workers, one event loop.

Flow of one request: an arrival (trace timestamp, or a session's previous turn
completing plus its delay) reaches the frontend; in concurrency mode it waits
for one of `concurrency` in-flight slots. Dispatch routes it to a (worker, dp
rank), which queues it. Ranks run passes; first tokens and completions go back
to the router (load release) and the frontend (next turn, freed slot).

Everything here is deterministic: same workload, config and seed give the same
records, whether ranks macro-step decode runs or execute pass by pass.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence, runtime_checkable

from actors.engine.config import EngineConfig
from actors.engine.events import KvEvent
from actors.engine.hashing import PromptHasher
from actors.engine.records import GapLog, RequestRecord, TerminalStatus
from actors.engine.sequence import EngineRequest
from actors.engine.timing import TimingModel
from actors.engine.vllm import VllmRank
from actors.engine.worker import EngineWorker
from cluster.clock import EventLoop, Priority
from cluster.kv_routing import KvRouting
from cluster.workload import Workload
from router.router import KvRouter


class Router(Protocol):
    """Chooses a rank for each request; told when first tokens and completions happen."""

    def route(self, req: EngineRequest, now_ms: float) -> int:
        """Global rank index for this request."""
        ...

    def on_first_token(self, req: EngineRequest, now_ms: float) -> None: ...

    def on_complete(self, req: EngineRequest, now_ms: float) -> None: ...


class RoundRobinRouter:
    """Cycles over (worker, dp_rank) pairs in order."""

    def __init__(self, num_ranks: int) -> None:
        self.num_ranks = num_ranks
        self._next = 0

    def route(self, req: EngineRequest, now_ms: float) -> int:
        idx = self._next
        self._next = (idx + 1) % self.num_ranks
        return idx

    def on_first_token(self, req: EngineRequest, now_ms: float) -> None:
        pass

    def on_complete(self, req: EngineRequest, now_ms: float) -> None:
        pass


@runtime_checkable
class ContendedTiming(Protocol):
    """A timing model whose speed depends on busy co-tenants of its physical card."""

    def set_busy_cotenants(self, limits: Sequence[float]) -> None:
        """Core limits of the other time-sliced vGPUs on the card that are busy now."""
        ...


@dataclass
class SimulationResult:
    records: list[RequestRecord]
    gaps: GapLog
    workers: list[EngineWorker]
    num_events: int
    end_ms: float
    committed_prefill_tokens: int = field(default=0)
    kv_events: list[KvEvent] = field(default_factory=list)
    """Every KV event of the run, per rank in event-id order (only with collect_kv_events)."""


class ReplaySimulation:
    """One aggregated replay: `num_workers` identical workers behind one router."""

    def __init__(
        self,
        workload: Workload,
        engine: EngineConfig,
        num_workers: int,
        *,
        concurrency: int | None = None,
        router: Router | None = None,
        timing: TimingModel | None = None,
        timings: Sequence[TimingModel] | None = None,
        contention: Sequence[Sequence[tuple[int, float]]] = (),
        macro_step: bool = True,
        on_request_done: Callable[[RequestRecord], None] | None = None,
        collect_kv_events: bool = False,
        kv_router: "KvRouter | None" = None,
    ) -> None:
        if num_workers < 1:
            raise ValueError("num_workers must be at least 1")
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.workload = workload
        self.engine = engine
        self.loop = EventLoop()
        self.gaps = GapLog()
        self.hasher = PromptHasher(engine.block_size_tokens, workload.trace_block_size)
        self.collect_kv_events = collect_kv_events
        if timings is not None and len(timings) != num_workers:
            raise ValueError(f"timings has {len(timings)} models for {num_workers} workers")
        per_worker = list(timings) if timings is not None else [timing] * num_workers
        emit = collect_kv_events or kv_router is not None
        self.workers = [EngineWorker(w, engine, self.gaps, per_worker[w], macro_step, emit_events=emit)
                        for w in range(num_workers)]
        # Time-sliced vGPUs sharing a card: worker -> its group of (worker, core limit).
        self._group_of: dict[int, Sequence[tuple[int, float]]] = {}
        for group in contention:
            for w, _ in group:
                model = self.workers[w].ranks[0].timing
                if not isinstance(model, ContendedTiming):
                    raise ValueError(f"worker {w} shares a card but its timing model ignores contention")
                self._group_of[w] = group
        self._busy = [False] * num_workers
        self.ranks: list[VllmRank] = [r for w in self.workers for r in w.ranks]
        if kv_router is not None and router is not None:
            raise ValueError("give either router or kv_router")
        self.router: Router
        if kv_router is not None:
            self.router = KvRouting(kv_router, self.ranks)
        else:
            self.router = router if router is not None else RoundRobinRouter(len(self.ranks))
        self.concurrency = concurrency
        self.records: list[RequestRecord] = []
        self._on_done = on_request_done
        self._finish_token = [0] * len(self.ranks)
        self._start_pending = [False] * len(self.ranks)
        self._ready: deque[tuple[int, int]] = deque()
        self._in_flight = 0
        self._arrival_key = 0
        self._session_of: dict[int, tuple[int, int]] = {}

    # ---- frontend -----------------------------------------------------------------------------
    def _schedule_arrival(self, t_ms: float, session_idx: int, turn_idx: int) -> None:
        self._arrival_key += 1
        self.loop.schedule(t_ms, Priority.DELIVER, self._arrival_key, self._on_arrival, (session_idx, turn_idx))

    def _on_arrival(self, now: float, arg: tuple[int, int]) -> None:
        if self.concurrency is None:
            self._dispatch(now, arg, arrival_ms=now)
        else:
            self._ready.append(arg)
            self._fill_slots(now)

    def _fill_slots(self, now: float) -> None:
        assert self.concurrency is not None
        while self._ready and self._in_flight < self.concurrency:
            self._dispatch(now, self._ready.popleft(), arrival_ms=now)

    def _dispatch(self, now: float, arg: tuple[int, int], arrival_ms: float) -> None:
        session_idx, turn_idx = arg
        session = self.workload.sessions[session_idx]
        turn = session.turns[turn_idx]
        rid = len(self.records)
        record = RequestRecord(
            request_id=rid, session_id=session.session_id, turn_index=turn_idx,
            input_length=turn.input_length, requested_output_length=turn.output_length,
            arrival_ms=arrival_ms, dispatched_ms=now,
        )
        self.records.append(record)
        self._session_of[rid] = arg
        self._in_flight += 1
        req = EngineRequest(record, turn.hash_ids, self.workload.trace_block_size, self.hasher)
        idx = self.router.route(req, now)
        rank = self.ranks[idx]
        record.worker_id, record.dp_rank = rank.worker_id, rank.dp_rank
        new_end = rank.interrupt(now)
        if new_end is not None:
            self._arm_finish(idx, new_end)
        reason = rank.submit(req)
        if reason is not None:
            record.terminal_status = TerminalStatus.REJECTED
            record.reject_reason = reason
            record.terminal_ms = now
            self._terminal(now, req)
            return
        self._wake(idx, now)

    def _terminal(self, now: float, req: EngineRequest) -> None:
        """A request ended (completed or rejected): release its slot, queue the session's next turn."""
        self._in_flight -= 1
        self.router.on_complete(req, now)
        if self._on_done is not None:
            self._on_done(req.record)
        session_idx, turn_idx = self._session_of.pop(req.record.request_id)
        session = self.workload.sessions[session_idx]
        if turn_idx + 1 < len(session.turns):
            self._schedule_arrival(now + session.turns[turn_idx + 1].delay_ms, session_idx, turn_idx + 1)
        if self.concurrency is not None and self._ready:
            self.loop.schedule(now, Priority.DELIVER, 0, self._on_slot_freed)

    def _on_slot_freed(self, now: float, _: object) -> None:
        self._fill_slots(now)

    # ---- ranks --------------------------------------------------------------------------------
    def _wake(self, idx: int, now: float) -> None:
        if self.ranks[idx].busy_until is None and not self._start_pending[idx]:
            self._start_pending[idx] = True
            self.loop.schedule(now, Priority.START, idx, self._on_start, idx)

    def _arm_finish(self, idx: int, end_ms: float) -> None:
        self._finish_token[idx] += 1
        self.loop.schedule(end_ms, Priority.FINISH, idx, self._on_finish, (idx, self._finish_token[idx]))

    def _on_start(self, now: float, idx: int) -> None:
        self._start_pending[idx] = False
        rank = self.ranks[idx]
        end = rank.start(now)
        for req in rank.take_rejected():
            self._terminal(now, req)
        if end is not None:
            self._arm_finish(idx, end)
        if self._group_of:
            self._update_contention(rank.worker_id, now)

    def _update_contention(self, w: int, now: float) -> None:
        """Worker w may have become busy or idle: re-time its card's co-tenants.

        A pass keeps the speed it started with; co-tenants' decode runs are cut
        after the pass in progress so that later passes use the new speed.
        """
        busy = any(r.busy_until is not None for r in self.workers[w].ranks)
        group = self._group_of.get(w)
        if group is None or busy == self._busy[w]:
            return
        self._busy[w] = busy
        for u, _ in group:
            if u == w:
                continue
            limits = [limit for v, limit in group if v != u and self._busy[v]]
            for rank in self.workers[u].ranks:
                model = rank.timing
                assert isinstance(model, ContendedTiming)
                model.set_busy_cotenants(limits)
                new_end = rank.interrupt(now)
                if new_end is not None:
                    self._arm_finish(self.ranks.index(rank), new_end)

    def _on_finish(self, now: float, arg: tuple[int, int]) -> None:
        idx, token = arg
        if token != self._finish_token[idx]:
            return  # superseded: the run was cut short and re-armed
        rank = self.ranks[idx]
        first, done = rank.finish(now)
        for req in first:
            self.router.on_first_token(req, now)
        for req in done:
            self._terminal(now, req)
        self._wake(idx, now)

    # ---- driver -------------------------------------------------------------------------------
    def run(self) -> SimulationResult:
        if self.concurrency is None:
            for i, session in enumerate(self.workload.sessions):
                self._schedule_arrival(session.start_ms, i, 0)
        else:
            # Closed loop: first turns ignore their timestamps and queue for slots in trace order.
            for i in range(len(self.workload.sessions)):
                self._ready.append((i, 0))
            self.loop.schedule(0.0, Priority.DELIVER, 0, self._on_slot_freed)
        self.loop.run()
        events = [e for rank in self.ranks for e in rank.take_events()]
        return SimulationResult(
            kv_events=events,
            records=self.records,
            gaps=self.gaps,
            workers=self.workers,
            num_events=self.loop.num_events,
            end_ms=self.loop.now_ms,
            committed_prefill_tokens=sum(w.committed_prefill_tokens for w in self.workers),
        )
