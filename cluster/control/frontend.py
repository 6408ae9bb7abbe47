"""The frontend: workload arrivals, sessions, closed-loop concurrency and request records.

Flow of one request: its arrival (a trace timestamp, or the previous turn of its session
completing plus the turn's delay) reaches the frontend at ARRIVE priority; in concurrency
mode it waits for one of `concurrency` in-flight slots. Dispatch creates the request's
record (ids are dispatch order) and hands it to the router (`cluster.control.router_host`), which
sends it to a rank now or after queueing. Responses come back over the event plane:
- `FirstTokenMsg`: the client sees the first token when the message arrives; the gap
  between arrival and engine time is the stream's latency, added to later engine times;
- `CompletionMsg`: the engine-side record is merged; a completed request's last token
  and end are the message's arrival; the slot is freed and the session's next turn is
  scheduled `delay_ms` later.
With a zero-latency plane every client time equals the engine time (the offline replay).

Invariant: every dispatched request ends in exactly one terminal status, reported once
to `on_done`; `records[i].request_id == i`.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Callable

from actors.engine.records import EngineRecord, FailureReason, RequestRecord, TerminalStatus
from cluster.plane.messages import CompletionMsg, FirstTokenMsg
from cluster.sim.clock import EventLoop, Priority
from cluster.workload.model import Workload

Dispatch = Callable[[float, RequestRecord, tuple[int, ...]], None]
"""Hands a new request (record, its hash ids) to the router at `now`."""


class Frontend:
    """See the module docstring."""

    def __init__(
        self,
        workload: Workload,
        loop: EventLoop,
        dispatch: Dispatch,
        concurrency: int | None = None,
        on_done: Callable[[RequestRecord], None] | None = None,
        send_times: list[float] | None = None,
        on_finished: Callable[[float], None] | None = None,
    ) -> None:
        if concurrency is not None and concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.workload = workload
        self.loop = loop
        self._dispatch_to_router = dispatch
        self.concurrency = concurrency
        self._on_done = on_done
        self._send_times = send_times
        self._on_finished = on_finished
        self.records: list[RequestRecord] = []
        self._ready: deque[tuple[int, int]] = deque()
        self._in_flight = 0
        self._arrival_key = 0
        self._session_of: dict[int, tuple[int, int]] = {}
        self._token_shift: dict[int, float] = {}
        self.num_terminal = 0
        self.done_ms: float | None = None
        """When the last request of the workload became terminal."""

    @property
    def closed_loop(self) -> bool:
        """Whether completions cause new dispatches (concurrency slots or multi-turn sessions)."""
        return self.concurrency is not None or any(len(s.turns) > 1 for s in self.workload.sessions)

    def start(self) -> None:
        """Schedule the first turns (trace mode) or fill the slots (concurrency mode)."""
        if self.concurrency is None:
            for i, session in enumerate(self.workload.sessions):
                self._schedule_arrival(session.start_ms, i, 0)
        else:
            # Closed loop: first turns ignore their timestamps and queue for slots in trace order.
            for i in range(len(self.workload.sessions)):
                self._ready.append((i, 0))
            self._schedule(0.0, 0, self._on_slot_freed, None)
        if self.workload.num_requests == 0:
            self.done_ms = 0.0

    # ------------------------------------------------------------------ arrivals

    def _schedule(self, t_ms: float, key: int, handler: Callable[[float, object], None], arg: object) -> None:
        self.loop.schedule(t_ms, Priority.ARRIVE, key, handler, arg)
        if self._send_times is not None:
            heapq.heappush(self._send_times, t_ms)

    def _schedule_arrival(self, t_ms: float, session_idx: int, turn_idx: int) -> None:
        self._arrival_key += 1
        self._schedule(t_ms, self._arrival_key, self._on_arrival, (session_idx, turn_idx))

    def _on_arrival(self, now: float, arg: object) -> None:
        assert isinstance(arg, tuple)
        if self.concurrency is None:
            self._dispatch(now, arg, arrival_ms=now)
        else:
            self._ready.append(arg)
            self._fill_slots(now)

    def _fill_slots(self, now: float) -> None:
        assert self.concurrency is not None
        while self._ready and self._in_flight < self.concurrency:
            self._dispatch(now, self._ready.popleft(), arrival_ms=now)

    def _on_slot_freed(self, now: float, _: object) -> None:
        self._fill_slots(now)

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
        self._dispatch_to_router(now, record, turn.hash_ids)

    # ------------------------------------------------------------------ responses

    def on_first_token(self, now: float, msg: FirstTokenMsg) -> None:
        rec = self.records[msg.request_id]
        rec.first_token_ms = now
        self._token_shift[msg.request_id] = now - msg.t_ms

    def on_completion(self, now: float, msg: CompletionMsg) -> None:
        """The request ended on a rank: attach the engine's record; client times are shifted by
        the latency the response stream had (the first token's), a completion's end is now."""
        rec = self.records[msg.request_id]
        shift = self._token_shift.pop(msg.request_id, 0.0)
        engine = msg.record
        rec.engine = engine
        if engine.second_token_ms is not None:
            rec.second_token_ms = engine.second_token_ms + shift
        if msg.status is TerminalStatus.COMPLETED:
            rec.last_token_ms = now
        elif engine.last_token_ms is not None:
            rec.last_token_ms = engine.last_token_ms + shift
        self.terminal(now, rec, msg.status, msg.reason, msg.detail, msg.cause)

    def hash_ids_of(self, request_id: int) -> tuple[int, ...]:
        """The prompt's trace hash ids of a request not yet ended."""
        session_idx, turn_idx = self._session_of[request_id]
        return self.workload.sessions[session_idx].turns[turn_idx].hash_ids

    def keep_progress(self, rec: RequestRecord, engine: EngineRecord) -> None:
        """The request leaves a failed rank to run elsewhere (migration): keep what the client saw
        (its second token, if any) and the engine record, which counts the tokens generated so far."""
        if engine.second_token_ms is not None and rec.second_token_ms is None:
            rec.second_token_ms = engine.second_token_ms + self._token_shift.get(rec.request_id, 0.0)
        rec.engine = engine

    def terminal(self, now: float, rec: RequestRecord, status: TerminalStatus, reason: FailureReason | None = None,
                 detail: str | None = None, cause: str | None = None) -> None:
        """A request ended: record it, free its slot, schedule its session's next turn."""
        assert rec.terminal_status is TerminalStatus.INCOMPLETE, f"request {rec.request_id} ended twice"
        rec.terminal_status = status
        rec.terminal_ms = now
        rec.reason, rec.reason_detail, rec.cause = reason, detail, cause
        self._in_flight -= 1
        self.num_terminal += 1
        if self._on_done is not None:
            self._on_done(rec)
        session_idx, turn_idx = self._session_of.pop(rec.request_id)
        session = self.workload.sessions[session_idx]
        if turn_idx + 1 < len(session.turns):
            self._schedule_arrival(now + session.turns[turn_idx + 1].delay_ms, session_idx, turn_idx + 1)
        if self.concurrency is not None and self._ready:
            self._schedule(now, 0, self._on_slot_freed, None)
        if self.num_terminal == self.workload.num_requests:
            self.done_ms = now
            if self._on_finished is not None:
                self._on_finished(now)
