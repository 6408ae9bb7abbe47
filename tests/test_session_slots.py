"""Property test of the frontend's session logic (`cluster.control.frontend`) against a naive model of
the reference's workload driver (facts §k): random sessions, think times, service times and failed
turns, open loop and closed loop with N session slots."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.engine.records import EngineRecord, FailureReason, RequestRecord, TerminalStatus
from cluster.control.frontend import Frontend
from cluster.plane.messages import CompletionMsg
from cluster.sim.clock import EventLoop, Priority
from cluster.workload.model import Session, Turn, Workload

# a turn: (think time before it, service time, fails)
TurnSpec = tuple[int, int, bool]
SessionSpec = tuple[int, list[TurnSpec]]


def naive(sessions: list[SessionSpec], concurrency: int | None,
          file_order: list[int]) -> tuple[list[tuple[float, int, int]], float]:
    """(dispatch time, session, turn) in dispatch order, and when the last turn ended.

    Straight from the rules: a slot takes sessions in file order; a turn is sent `think` after the
    previous one ends; a failed turn ends its session; ties go by time, then file position."""
    rank = {s: k for k, s in enumerate(file_order)}
    ready: list[tuple[float, int, int]] = []  # (time, file position, turn) waiting to be sent
    ends: list[tuple[float, int, int]] = []  # (time, session, turn) in service
    next_session, open_sessions = 0, 0
    if concurrency is None:
        ready = [(float(start), rank[i], 0) for i, (start, _) in enumerate(sessions)]
    sent: list[tuple[float, int, int]] = []
    last_end = 0.0

    def take_sessions(now: float) -> None:
        nonlocal next_session, open_sessions
        while concurrency is not None and open_sessions < concurrency and next_session < len(sessions):
            ready.append((now, next_session, 0))  # file position == next_session
            next_session, open_sessions = next_session + 1, open_sessions + 1

    take_sessions(0.0)
    while ready or ends:
        t_ready = min(ready)[0] if ready else float("inf")
        t_end = min(ends)[0] if ends else float("inf")
        if t_end <= t_ready:  # completions at an instant come before arrivals at it
            now, s, k = min(ends, key=lambda e: e[0])
            ends.remove((now, s, k))
            last_end = max(last_end, now)
            turns = sessions[s][1]
            if k + 1 < len(turns) and not turns[k][2]:
                ready.append((now + turns[k + 1][0], rank[s], k + 1))
            elif concurrency is not None:
                open_sessions -= 1
                take_sessions(now)
        else:
            item = min(ready)
            ready.remove(item)
            now, s, k = item[0], file_order[item[1]], item[2]
            sent.append((now, s, k))
            ends.append((now + sessions[s][1][k][1], s, k))
    return sent, last_end


def run_frontend(sessions: list[SessionSpec], concurrency: int | None,
                 file_order: list[int]) -> tuple[list[tuple[float, int, int]], float]:
    wl = Workload(tuple(
        Session(f"s{i}", float(start),
                tuple(Turn(1, 1, (i,), float(think if k else 0)) for k, (think, _, _) in enumerate(turns)))
        for i, (start, turns) in enumerate(sessions)), 16, tuple(file_order))
    loop = EventLoop()
    sent: list[tuple[float, int, int]] = []
    frontend: Frontend

    def dispatch(now: float, record: RequestRecord, hash_ids: tuple[int, ...]) -> None:
        s, k = int(record.session_id[1:]), record.turn_index
        sent.append((now, s, k))
        _, service, fails = sessions[s][1][k]
        status = TerminalStatus.FAILED if fails else TerminalStatus.COMPLETED
        msg = CompletionMsg(record.request_id, 0, 0, status, EngineRecord(),
                            FailureReason.WORKER_KILLED if fails else None, None, None)
        loop.schedule(now + service, Priority.DELIVER, 0, lambda t, m: frontend.on_completion(t, m), msg)

    frontend = Frontend(wl, loop, dispatch, concurrency=concurrency)
    frontend.start()
    loop.run()
    assert frontend.done_ms is not None
    return sent, frontend.done_ms


turn = st.tuples(st.integers(0, 6), st.integers(1, 6), st.integers(0, 5).map(lambda v: v == 0))  # 1 in 6 fails
session = st.tuples(st.integers(0, 20), st.lists(turn, min_size=1, max_size=4))


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[SessionSpec], list[int]]:
    """Sessions sorted by start, and a file order (a trace need not list sessions by start)."""
    sessions = sorted(draw(st.lists(session, min_size=1, max_size=8)), key=lambda s: s[0])
    in_order = draw(st.booleans())
    file_order = list(range(len(sessions))) if in_order else draw(st.permutations(range(len(sessions))))
    return sessions, file_order


@settings(max_examples=300, deadline=None)
@given(workloads(), st.one_of(st.none(), st.integers(1, 4)))
def test_frontend_sends_what_the_naive_driver_sends(workload: tuple[list[SessionSpec], list[int]],
                                                    concurrency: int | None) -> None:
    sessions, file_order = workload
    assert run_frontend(sessions, concurrency, file_order) == naive(sessions, concurrency, file_order)
