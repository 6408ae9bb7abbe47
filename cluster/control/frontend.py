"""The frontend: workload arrivals, sessions, closed-loop concurrency and request records.

Flow of one request: its arrival (a trace timestamp, or the previous turn of its session
completing plus the turn's delay) reaches the frontend at ARRIVE priority and is dispatched
at once. Dispatch creates the request's record (ids are dispatch order) and hands it to the
router (`cluster.control.router_host`), which sends it to a rank now or after queueing.

Sessions, as the reference replay's workload driver (facts §k):
- open loop (`concurrency` None): every session's first turn arrives at its `start_ms`;
- closed loop (`concurrency` N): N session slots. A slot takes the next session in file
  order (`Workload.session_order`; first-turn timestamps ignored), whose first turn arrives
  when the slot takes it, and holds it across all its turns and think times; only when the
  session has ended does the slot take the next one. So at most N sessions are open and at
  most N requests in flight;
- in both, turn k+1 arrives `delay_ms` after turn k ends; a completed or rejected turn lets
  the session go on, a failed one ends it: its remaining turns are never sent, and each gets
  a record at once, failed with reason `session_ended` (nothing in the workload goes unrecorded);
- same-instant arrivals go in file order of their sessions (the reference's ready heap
  orders by time, then session index).

Responses come back over the event plane:
- `FirstTokenMsg`: the client sees the first token when the message arrives; the gap
  between arrival and engine time is the stream's latency, added to later engine times;
- `CompletionMsg`: the engine-side record is merged; a completed request's last token
  and end are the message's arrival; the session's next turn is scheduled `delay_ms`
  later, or, when the session has ended, its slot takes the next session.
With a zero-latency plane every client time equals the engine time (the offline replay).

Invariant: every dispatched request ends in exactly one terminal status, reported once
to `on_done`; `records[i].request_id == i`; every turn of the workload gets exactly one
record; the run is done when every record has ended.
"""

from __future__ import annotations

import heapq
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
        self._open_sessions = 0
        """Closed loop: sessions holding a slot (started, not ended)."""
        self._next_session = 0
        """Closed loop: the position in `workload.session_order` of the next session a free slot takes."""
        order = workload.session_order
        self._file_rank = list(range(len(order)))
        """Session index -> its position in file order (the same-instant tie-break)."""
        for position, session_idx in enumerate(order):
            self._file_rank[session_idx] = position
        self.num_dropped_turns = 0
        """Turns never sent because an earlier turn of their session failed (each has a record,
        failed with reason `session_ended`)."""
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
        """Schedule the first turns (open loop) or fill the session slots (closed loop)."""
        if self.concurrency is None:
            for i, session in enumerate(self.workload.sessions):
                self._schedule_arrival(session.start_ms, i, 0)
        else:
            self._fill_slots(0.0)
        if self.workload.num_requests == 0:
            self.done_ms = 0.0

    # ------------------------------------------------------------------ arrivals

    def _schedule_arrival(self, t_ms: float, session_idx: int, turn_idx: int) -> None:
        # key = the session's file position: a session has at most one pending turn, and
        # same-instant arrivals go in file order whenever they were scheduled.
        self.loop.schedule(t_ms, Priority.ARRIVE, self._file_rank[session_idx], self._on_arrival,
                           (session_idx, turn_idx))
        if self._send_times is not None:
            heapq.heappush(self._send_times, t_ms)

    def _on_arrival(self, now: float, arg: object) -> None:
        assert isinstance(arg, tuple)
        self._dispatch(now, arg, arrival_ms=now)

    def _fill_slots(self, now: float) -> None:
        """Closed loop: every free slot takes the next session; its first turn arrives now."""
        assert self.concurrency is not None
        order = self.workload.session_order
        while self._open_sessions < self.concurrency and self._next_session < len(order):
            self._schedule_arrival(now, order[self._next_session], 0)
            self._next_session += 1
            self._open_sessions += 1

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
        """A request ended: record it, then schedule its session's next turn, or end the session
        (last turn, or a failed one, whose later turns are recorded as `session_ended`) and let
        its slot take the next session."""
        self._end(now, rec, status, reason, detail, cause)
        session_idx, turn_idx = self._session_of.pop(rec.request_id)
        session = self.workload.sessions[session_idx]
        remaining = len(session.turns) - turn_idx - 1
        if remaining and status is not TerminalStatus.FAILED:
            self._schedule_arrival(now + session.turns[turn_idx + 1].delay_ms, session_idx, turn_idx + 1)
        else:
            if status is TerminalStatus.FAILED:
                self._drop_turns(now, session_idx, turn_idx, reason, cause)
            if self.concurrency is not None:
                self._open_sessions -= 1
                self._fill_slots(now)
        if self.num_terminal == self.workload.num_requests:
            self.done_ms = now
            if self._on_finished is not None:
                self._on_finished(now)

    def _end(self, now: float, rec: RequestRecord, status: TerminalStatus, reason: FailureReason | None,
             detail: str | None, cause: str | None) -> None:
        assert rec.terminal_status is TerminalStatus.INCOMPLETE, f"request {rec.request_id} ended twice"
        rec.terminal_status = status
        rec.terminal_ms = now
        rec.reason, rec.reason_detail, rec.cause = reason, detail, cause
        self.num_terminal += 1
        if self._on_done is not None:
            self._on_done(rec)

    def _drop_turns(self, now: float, session_idx: int, failed_turn: int, reason: FailureReason | None,
                    cause: str | None) -> None:
        """Record the turns after `failed_turn` of a session as failed `session_ended` at `now`:
        never sent, so never routed (no worker, no engine record)."""
        session = self.workload.sessions[session_idx]
        why = reason.value if reason is not None else "failed"
        detail = f"turn {failed_turn} of session {session.session_id} failed ({why})"
        for turn_idx in range(failed_turn + 1, len(session.turns)):
            turn = session.turns[turn_idx]
            rec = RequestRecord(
                request_id=len(self.records), session_id=session.session_id, turn_index=turn_idx,
                input_length=turn.input_length, requested_output_length=turn.output_length,
                arrival_ms=now, dispatched_ms=now,
            )
            self.records.append(rec)
            self.num_dropped_turns += 1
            self._end(now, rec, TerminalStatus.FAILED, FailureReason.SESSION_ENDED, detail, cause)
