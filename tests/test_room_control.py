"""The control room through its seams: `Frontend` (fake dispatch), `RouterHost` (real `KvRouter`, fake
callbacks and plane), `Fleet` (fake worker source and router host) and `ControlHost` (fake parts)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from actors.engine.events import KvEvent, KvStored, LoadMetrics
from actors.engine.hashing import PromptHasher
from actors.engine.records import (
    EngineRecord,
    FailureReason,
    RequestRecord,
    TerminalStatus,
)
from cluster.control.fleet import Fleet
from cluster.control.frontend import Frontend
from cluster.control.host import ControlHost
from cluster.control.router_host import RouterHost
from cluster.plane.messages import (
    CompletionMsg,
    FirstTokenMsg,
    KvBatchMsg,
    LoadMetricsMsg,
    Message,
    ReplayReplyMsg,
    ReplayRequestMsg,
    RequestMsg,
    ShutdownMsg,
    Topic,
    WorkerDownMsg,
)
from cluster.plane.ranks import (
    RankReadyMsg,
    RankStoppedMsg,
)
from cluster.sim.clock import EventLoop, Priority
from cluster.workload.model import Session, Turn, Workload
from router.config import KvRouterConfig
from router.router import KvRouter
from tests.room_fakes import FakePlane, plane_of

TBS = 16
DONE, FAILED = TerminalStatus.COMPLETED, TerminalStatus.FAILED
KILLED, REMOVED = FailureReason.WORKER_KILLED, FailureReason.WORKER_REMOVED


def workload(*sessions: tuple[float, list[tuple[int, float]]]) -> Workload:
    """Sessions as (start_ms, [(input_length, delay_ms), ...]); output length 4."""
    return Workload(tuple(Session(f"s{i}", start, tuple(Turn(isl, 4, (i, k), d) for k, (isl, d) in enumerate(turns)))
                          for i, (start, turns) in enumerate(sessions)), TBS)


def at(loop: EventLoop, t: float, fn: Any, *args: Any) -> None:
    loop.schedule(t, Priority.DELIVER, 0, lambda now, _: fn(now, *args))


def completion(rid: int, status: TerminalStatus = DONE, record: EngineRecord | None = None,
               reason: FailureReason | None = None) -> CompletionMsg:
    return CompletionMsg(rid, 0, 0, status, record or EngineRecord(), reason, None if reason is None else "why",
                         None if reason is None else "faults.1")


class Dispatch:
    def __init__(self) -> None:
        self.calls: list[tuple[float, RequestRecord, tuple[int, ...]]] = []

    def __call__(self, now: float, record: RequestRecord, hash_ids: tuple[int, ...]) -> None:
        self.calls.append((now, record, hash_ids))

    def seen(self) -> list[tuple[float, int, str, int]]:
        return [(t, r.request_id, r.session_id, r.turn_index) for t, r, _ in self.calls]


def test_trace_mode_dispatches_at_session_starts() -> None:
    loop, d, send_times = EventLoop(), Dispatch(), []  # type: ignore[var-annotated]
    fe = Frontend(workload((0.0, [(32, 0.0)]), (5.0, [(16, 0.0)]), (5.0, [(20, 0.0)])), loop, d, send_times=send_times)
    fe.start()
    loop.run()
    assert d.seen() == [(0.0, 0, "s0", 0), (5.0, 1, "s1", 0), (5.0, 2, "s2", 0)]
    assert [h for _, _, h in d.calls] == [(0, 0), (1, 0), (2, 0)]
    assert [(r.arrival_ms, r.dispatched_ms, r.input_length, r.requested_output_length) for r in fe.records] == [
        (0.0, 0.0, 32, 4), (5.0, 5.0, 16, 4), (5.0, 5.0, 20, 4)]
    assert sorted(send_times) == [0.0, 5.0, 5.0] and not fe.closed_loop and fe.done_ms is None


def test_a_session_sends_its_next_turn_delay_ms_after_the_previous_completes() -> None:
    loop, d = EventLoop(), Dispatch()
    fe = Frontend(workload((10.0, [(16, 0.0), (16, 30.0), (16, 5.0)])), loop, d)
    fe.start()
    at(loop, 50.0, fe.on_completion, completion(0))
    at(loop, 90.0, fe.on_completion, completion(1, TerminalStatus.REJECTED))
    loop.run()
    assert d.seen() == [(10.0, 0, "s0", 0), (80.0, 1, "s0", 1), (95.0, 2, "s0", 2)]  # a rejected turn goes on
    assert fe.records[1].arrival_ms == 80.0 and fe.closed_loop


def test_a_failed_turn_ends_its_session() -> None:
    """As the reference's driver: the failed session's later turns are never sent; each is recorded
    at once as failed `session_ended`, so every turn of the workload has a record."""
    loop, d, finished = EventLoop(), Dispatch(), []  # type: ignore[var-annotated]
    fe = Frontend(workload((10.0, [(16, 0.0), (16, 30.0), (16, 5.0)]), (20.0, [(16, 0.0)])), loop, d,
                  on_finished=finished.append)
    fe.start()
    at(loop, 50.0, fe.on_completion, completion(0, FAILED, reason=KILLED))
    at(loop, 60.0, fe.on_completion, completion(1))
    loop.run()
    assert d.seen() == [(10.0, 0, "s0", 0), (20.0, 1, "s1", 0)]
    assert (fe.num_terminal, fe.num_dropped_turns, fe.done_ms, finished) == (4, 2, 60.0, [60.0])
    dropped = [(r.request_id, r.turn_index, r.terminal_status, r.reason, r.terminal_ms, r.reason_detail)
               for r in fe.records if r.reason is FailureReason.SESSION_ENDED]
    assert dropped == [(2, 1, FAILED, FailureReason.SESSION_ENDED, 50.0, "turn 0 of session s0 failed (worker_killed)"),
                       (3, 2, FAILED, FailureReason.SESSION_ENDED, 50.0, "turn 0 of session s0 failed (worker_killed)")]


def test_concurrency_mode_keeps_at_most_n_in_flight() -> None:
    loop, d = EventLoop(), Dispatch()
    fe = Frontend(workload(*[(100.0 * i, [(16, 0.0)]) for i in range(4)]), loop, d, concurrency=2)
    fe.start()
    at(loop, 40.0, fe.on_completion, completion(0))
    at(loop, 50.0, fe.on_completion, completion(1, FAILED, reason=KILLED))
    loop.run(until_ms=45.0)
    assert d.seen() == [(0.0, 0, "s0", 0), (0.0, 1, "s1", 0), (40.0, 2, "s2", 0)]
    loop.run()
    assert d.seen()[3:] == [(50.0, 3, "s3", 0)]
    assert [(r.arrival_ms, r.dispatched_ms) for r in fe.records] == [(0.0, 0.0), (0.0, 0.0), (40.0, 40.0),
                                                                      (50.0, 50.0)]
    assert fe.closed_loop
    with pytest.raises(ValueError, match="concurrency must be at least 1"):
        Frontend(workload(), loop, d, concurrency=0)


def test_a_slot_holds_its_session_across_turns_and_think_time() -> None:
    """cap 1: s1 starts only when s0's last turn ends, not while s0 thinks (facts §k)."""
    loop, d = EventLoop(), Dispatch()
    fe = Frontend(workload((0.0, [(16, 0.0), (16, 5.0)]), (0.0, [(16, 0.0)])), loop, d, concurrency=1)
    fe.start()
    at(loop, 10.0, fe.on_completion, completion(0))
    at(loop, 20.0, fe.on_completion, completion(1))
    at(loop, 26.0, fe.on_completion, completion(2))
    loop.run()
    assert d.seen() == [(0.0, 0, "s0", 0), (15.0, 1, "s0", 1), (20.0, 2, "s1", 0)]
    assert [(r.arrival_ms, r.dispatched_ms) for r in fe.records] == [(0.0, 0.0), (15.0, 15.0), (20.0, 20.0)]
    assert fe.done_ms == 26.0


def test_slots_take_sessions_in_workload_order_ignoring_timestamps() -> None:
    """cap 2 over 4 sessions: both slots start at 0; a failed session frees its slot at once."""
    loop, d = EventLoop(), Dispatch()
    fe = Frontend(workload((0.0, [(16, 0.0), (16, 100.0)]), (7.0, [(16, 0.0), (16, 1.0)]),
                           (50.0, [(16, 0.0)]), (900.0, [(16, 0.0)])), loop, d, concurrency=2)
    fe.start()
    at(loop, 10.0, fe.on_completion, completion(1, FAILED, reason=KILLED))  # s1 turn 0: s1 ends
    at(loop, 30.0, fe.on_completion, completion(0))  # s0 turn 0: s0 thinks 100 ms
    at(loop, 40.0, fe.on_completion, completion(3))  # s2: s3 takes the slot
    at(loop, 140.0, fe.on_completion, completion(5))
    at(loop, 150.0, fe.on_completion, completion(4))
    loop.run()
    # id 2 is s1's second turn, recorded (not sent) as session_ended when s1's first failed
    assert d.seen() == [(0.0, 0, "s0", 0), (0.0, 1, "s1", 0), (10.0, 3, "s2", 0), (40.0, 4, "s3", 0),
                        (130.0, 5, "s0", 1)]
    assert (fe.records[2].session_id, fe.records[2].turn_index, fe.records[2].reason) == (
        "s1", 1, FailureReason.SESSION_ENDED)
    assert fe.done_ms == 150.0


def test_same_instant_arrivals_go_in_session_order() -> None:
    """s0's second turn (due at 10, scheduled at 10) goes before s1's first (due at 10, scheduled at start)."""
    loop, d = EventLoop(), Dispatch()
    fe = Frontend(workload((0.0, [(16, 0.0), (16, 0.0)]), (10.0, [(16, 0.0)])), loop, d)
    fe.start()
    at(loop, 10.0, fe.on_completion, completion(0))
    loop.run()
    assert d.seen() == [(0.0, 0, "s0", 0), (10.0, 1, "s0", 1), (10.0, 2, "s1", 0)]


def test_client_token_times_are_shifted_by_the_response_latency() -> None:
    loop, d = EventLoop(), Dispatch()
    fe = Frontend(workload((0.0, [(16, 0.0)]), (0.0, [(16, 0.0)])), loop, d)
    fe.start()
    loop.run()
    fe.on_first_token(12.0, FirstTokenMsg(0, 0, 0, 10.0))
    engine = EngineRecord(4, 1.0, 10.0, 15.0, 25.0, 25.0)
    fe.on_completion(30.0, completion(0, record=engine))
    rec = fe.records[0]
    assert rec.engine is engine
    assert (rec.first_token_ms, rec.second_token_ms, rec.last_token_ms, rec.terminal_ms) == (12.0, 17.0, 30.0, 30.0)
    assert (rec.terminal_status, rec.reason, rec.reason_detail, rec.cause) == (DONE, None, None, None)
    fe.on_completion(40.0, completion(1, FAILED, EngineRecord(2, last_token_ms=25.0), KILLED))
    rec = fe.records[1]  # no first token came back: no shift, the engine's last token
    assert (rec.first_token_ms, rec.second_token_ms, rec.last_token_ms, rec.terminal_ms) == (None, None, 25.0, 40.0)
    assert (rec.terminal_status, rec.reason, rec.reason_detail, rec.cause) == (FAILED, KILLED, "why", "faults.1")
    with pytest.raises(AssertionError, match="request 1 ended twice"):
        fe.on_completion(41.0, completion(1))


def test_the_last_request_ending_sets_done_ms_and_calls_on_finished() -> None:
    loop, done, finished = EventLoop(), [], []  # type: ignore[var-annotated]
    fe = Frontend(workload((0.0, [(16, 0.0)]), (3.0, [(16, 0.0)])), loop, Dispatch(),
                  on_done=lambda r: done.append(r.request_id), on_finished=finished.append)
    fe.start()
    at(loop, 20.0, fe.on_completion, completion(1))
    at(loop, 30.0, fe.on_completion, completion(0))
    loop.run(until_ms=25.0)
    assert (done, finished, fe.done_ms, fe.num_terminal) == ([1], [], None, 1)
    loop.run()
    assert (done, finished, fe.done_ms, fe.num_terminal) == ([1, 0], [30.0], 30.0, 2)
    empty = Frontend(workload(), EventLoop(), Dispatch(), on_finished=finished.append)
    empty.start()
    assert empty.done_ms == 0.0 and finished == [30.0]


def router(slots: list[tuple[int, int]], mode: str = "round_robin",
           **cfg: Any) -> tuple[RouterHost, SimpleNamespace, FakePlane]:
    calls, plane = SimpleNamespace(sent=[], rejected=[]), FakePlane()
    kv = KvRouter(KvRouterConfig(router_mode=mode, **cfg), 16, 0)
    host = RouterHost(slots, kv, plane_of(plane), lambda now, r, ids, g, hashes: calls.sent.append((now, r.request_id, g)),
                      lambda now, r, reason, detail: calls.rejected.append((now, r.request_id, reason, detail)),
                      PromptHasher(16, TBS))
    return host, calls, plane


def rec(rid: int) -> RequestRecord:
    return RequestRecord(rid, f"s{rid}", 0, 64, 4, 0.0, dispatched_ms=0.0)


def route(host: RouterHost, now: float, *rids: int) -> None:
    for rid in rids:
        host.route(now, rec(rid), (1, 2, 3, 4))


def test_round_robin_goes_over_the_slots_and_only_kv_mode_keeps_history() -> None:
    host, calls, _ = router([(0, 0), (1, 0), (2, 0)])
    records = [rec(i) for i in range(4)]
    for r in records:
        host.route(1.0, r, (1, 2, 3, 4))
    assert calls.sent == [(1.0, 0, 0), (1.0, 1, 1), (1.0, 2, 2), (1.0, 3, 0)]
    assert [(r.worker_id, r.dp_rank) for r in records] == [(0, 0), (1, 0), (2, 0), (0, 0)]  # the routing fields
    assert all(r.routing_history == [] for r in records) and not host.keeps_history
    host, calls, _ = router([(0, 0), (1, 0)], mode="kv")
    r = rec(0)
    host.route(2.0, r, (1, 2, 3, 4))
    assert len(calls.sent) == 1 and len(r.routing_history) == 1
    entry = r.routing_history[0]
    assert (entry["outcome"], entry["logical_worker_id"], entry["released_at_ms"]) == (
        "immediate", calls.sent[0][2], 2.0)


def test_a_full_router_queue_rejects() -> None:
    host, calls, _ = router([(0, 0)], router_queue_max_size=0, router_queue_threshold=0.0)
    route(host, 1.0, 0, 1)
    assert calls.sent == [(1.0, 0, 0)]
    assert calls.rejected == [(1.0, 1, FailureReason.ROUTER_QUEUE_FULL, "router queue is full")]


def test_a_new_worker_is_routable_and_releases_queued_requests() -> None:
    host, calls, _ = router([(0, 0)], router_queue_threshold=0.0)
    route(host, 1.0, 0, 1)
    assert calls.sent == [(1.0, 0, 0)] and calls.rejected == []
    host.add_worker(7.0, 5, [1])
    assert calls.sent[1:] == [(7.0, 1, 1)] and host.slots[1] == (5, 0)
    route(host, 8.0, 2)  # both busy: queued until a first token frees prefill load
    assert len(calls.sent) == 2
    host.on_first_token(9.0, 0)
    assert calls.sent[2:] == [(9.0, 2, 0)]


def test_stop_routing_counts_sent_requests_and_routes_elsewhere() -> None:
    host, calls, _ = router([(0, 0), (0, 1), (1, 0)])
    route(host, 1.0, 0, 1, 2)
    assert host.stop_routing(0) == {0: 1, 1: 1}
    route(host, 2.0, 3, 4, 5)
    assert [g for _, _, g in calls.sent] == [0, 1, 2, 2, 2, 2]
    assert host.stop_routing(1) == {2: 4}


def test_a_removed_or_downed_worker_is_forgotten() -> None:
    host, calls, plane = router([(0, 0), (0, 1), (1, 0)])
    host.remove_worker(5.0, 1)
    assert host.kv_router.workers() == [(0, 0), (0, 1)]
    route(host, 6.0, 0, 1, 2)
    assert [g for _, _, g in calls.sent] == [0, 1, 0]
    host.remove_worker(7.0, 0)  # every rank of the worker
    host.remove_worker(8.0, 0)  # already gone: nothing
    assert host.kv_router.workers() == []
    for w, r in ((1, 0), (0, 1)):  # deaf to their streams: nothing applied, no replay asked
        host.on_kv_batch(9.0, KvBatchMsg(w, r, 3, 9.0, (kv_event(w, 3, 0),)))
    assert host.subscriber.stats.batches_received == 0 and plane.out == []


def test_a_worker_killed_while_starting_is_ignored_by_the_router() -> None:
    host, calls, _ = router([(0, 0)])
    host.remove_worker(3.0, 7)  # worker 7 never reported ready
    route(host, 4.0, 0)
    assert host.kv_router.workers() == [(0, 0)] and calls.sent == [(4.0, 0, 0)]


def kv_event(w: int, eid: int, h: int, parent: int | None = None) -> KvEvent:
    return KvEvent(1.0, w, 0, eid, KvStored(parent, (h,), (h + 1000,)))


def test_a_kv_sequence_gap_asks_the_rank_for_a_replay() -> None:
    host, _, plane = router([(0, 0), (3, 0)], mode="kv")
    host.on_kv_batch(4.0, KvBatchMsg(3, 0, 1, 2.0, (kv_event(3, 1, 11, parent=10),)))
    assert plane.out == [(Topic.KV_REPLAY, 0, 2, ReplayRequestMsg(3, 0, 0, 0), 4.0)]
    host.on_kv_batch(5.0, KvBatchMsg(3, 0, 0, 1.0, (kv_event(3, 0, 10),)))
    assert host.subscriber.stats.batches_applied == 2 and host.kv_router.stats().events_applied == 2
    host.on_metrics(6.0, LoadMetricsMsg(LoadMetrics(6.0, 0, 0, 1, 0, 10, 1, 0, 0), 0))  # a heartbeat: seq 0 lost
    host.remove_worker(7.0, 3)
    host.on_metrics(8.0, LoadMetricsMsg(LoadMetrics(8.0, 3, 0, 1, 0, 10, 1, 0, 0), 9))  # gone: deaf to it
    assert plane.out[1:] == [(Topic.KV_REPLAY, 0, 1, ReplayRequestMsg(0, 0, 0, 0), 6.0)]


class Recorder:
    """A frontend, router or fleet that records every method call into `log` as (prefix.name, args)."""

    def __init__(self, log: list[tuple[str, tuple[Any, ...]]], prefix: str) -> None:
        self._log, self._prefix = log, prefix

    def __getattr__(self, name: str) -> Any:
        return lambda *args: self._log.append((f"{self._prefix}.{name}", args))


SAMPLES: list[Message] = [
    KvBatchMsg(0, 0, 0, 1.0, ()), FirstTokenMsg(3, 0, 0, 1.0), completion(3),
    LoadMetricsMsg(LoadMetrics(1.0, 0, 0, 0, 0, 1, 0, 0, 0), -1), ReplayReplyMsg(0, 0, 0, (), None),
    WorkerDownMsg(0, 0, 1.0, KILLED, "x"), RankReadyMsg(0, 0, 1.0), RankStoppedMsg(0, 0, 1.0)]


def test_messages_are_dispatched_by_type() -> None:
    log: list[tuple[str, tuple[Any, ...]]] = []
    control = ControlHost(EventLoop(), plane_of(FakePlane()))
    control.frontend = cast(Frontend, Recorder(log, "fe"))
    control.router = cast(RouterHost, Recorder(log, "rt"))
    control.fleet = cast(Fleet, Recorder(log, "fl"))
    for m in SAMPLES:
        control.on_message(2.0, (0, m))
    k, ft, c, lm, rr, wd, ready, stopped = SAMPLES
    assert log == [("rt.on_kv_batch", (2.0, k)), ("fe.on_first_token", (2.0, ft)), ("rt.on_first_token", (2.0, 3)),
                   ("fe.on_completion", (2.0, c)), ("rt.on_complete", (2.0, 3)), ("rt.on_metrics", (2.0, lm)),
                   ("rt.on_replay", (2.0, rr)), ("fl.on_down", (2.0, wd)),
                   ("fl.on_ready", (2.0, ready)), ("fl.on_stopped", (2.0, stopped))]


def wired(wl: Workload, concurrency: int | None = None, queueing: bool = False, recovery: bool = True,
          subscribes: bool = True, lossy: bool = False, shutdown: bool = False,
          route: Any = None) -> tuple[ControlHost, FakePlane, EventLoop]:
    loop, plane = EventLoop(), FakePlane()
    control = ControlHost(loop, plane_of(plane))
    rt = SimpleNamespace(route=route or (lambda *a: None), queueing=queueing, subscribes_kv=subscribes,
                         decode_router=None,
                         subscriber=SimpleNamespace(recovery=recovery), slots={3: (2, 1)})
    fl = SimpleNamespace(addresses=lambda: [1, 2])
    control.wire(wl, cast(RouterHost, rt), cast(Fleet, fl), concurrency, stream_lossy=lossy, announce_shutdown=shutdown)
    return control, plane, loop


ONE = workload((0.0, [(16, 0.0)]))
LIFE = {WorkerDownMsg, RankReadyMsg, RankStoppedMsg}
"""Always triggering: a worker coming releases requests waiting for it; the last one going fails them."""
RESP = {CompletionMsg} | LIFE
QUEUE = {CompletionMsg, FirstTokenMsg} | LIFE
STREAM = {KvBatchMsg, LoadMetricsMsg, ReplayReplyMsg}


@pytest.mark.parametrize(("kw", "expected"), [
    ({}, LIFE), ({"concurrency": 2}, RESP), ({"wl": workload((0.0, [(16, 0.0), (16, 1.0)]))}, RESP),
    ({"shutdown": True}, RESP), ({"queueing": True}, QUEUE), ({"lossy": True}, STREAM | LIFE),
    ({"lossy": True, "recovery": False}, LIFE), ({"lossy": True, "subscribes": False}, LIFE),
    ({"lossy": True, "queueing": True}, QUEUE | STREAM)])
def test_triggering_kinds_follow_the_configuration(kw: dict[str, Any], expected: set[type]) -> None:
    control, _, _ = wired(kw.pop("wl", ONE), **kw)
    assert {type(m) for m in SAMPLES if control.is_triggering(m)} == expected
    assert control.reacts_to_stream == bool(expected & STREAM)


def test_send_request_addresses_the_rank_the_router_chose() -> None:
    control, plane, _ = wired(ONE)
    r = RequestRecord(9, "s0", 0, 16, 4, 1.0, dispatched_ms=1.5, worker_id=2, dp_rank=1)  # as the router wrote it
    control.send_request(7.0, r, (5, 6), 3, ((11,), (12,)))
    assert plane.out == [(Topic.REQUESTS, 0, 4, RequestMsg(9, 2, 1, 16, 4, (5, 6), TBS, 1.5, (11,), (12,)), 7.0)]


def test_a_rejection_ends_the_request_and_the_end_of_the_workload_is_announced() -> None:
    holder: list[ControlHost] = []
    control, plane, loop = wired(workload((0.0, [(16, 0.0)]), (40.0, [(16, 0.0)])), shutdown=True,
                                 route=lambda now, r, ids: holder[0].reject(now, r, FailureReason.ROUTER_QUEUE_FULL,
                                                                            "full"))
    holder.append(control)
    control.frontend.start()
    assert [control.next_send_ms(x) for x in (0.0, 1.0, 41.0)] == [0.0, 40.0, float("inf")]
    loop.run()
    assert [(r.terminal_status, r.reason, r.reason_detail, r.terminal_ms) for r in control.frontend.records] == [
        (TerminalStatus.REJECTED, FailureReason.ROUTER_QUEUE_FULL, "full", t) for t in (0.0, 40.0)]
    assert plane.out == [(Topic.CONTROL, 0, a, ShutdownMsg(40.0), 40.0) for a in (1, 2)]
