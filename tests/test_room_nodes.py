"""The node room through its seams: `NodeHost`, `KvStream` and `Contention` driven with a scripted
fake engine rank (injected for `build_rank`) and a fake event plane that records every send."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from actors.engine.config import EngineConfig
from actors.engine.records import EngineRecord, FailureReason, GapLog, TerminalStatus
from actors.engine.timing.models import PolynomialTiming
from cluster.nodes.host import NodeHost
from cluster.nodes.hosted import HostOptions
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
    DrainRankMsg,
    RankKill,
    RankReadyMsg,
    RankSpec,
    RankStoppedMsg,
    StartRankMsg,
    StopRankMsg,
)
from cluster.sim.clock import EventLoop, Priority
from tests.room_fakes import FakePlane, FakeRank, FakeTiming, event, plane_of

ENGINE = EngineConfig()
KILLED, REMOVED = FailureReason.WORKER_KILLED, FailureReason.WORKER_REMOVED


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> list[FakeRank]:
    """Every rank NodeHost builds, in build order (a FakeRank instead of the engine)."""
    out: list[FakeRank] = []

    def factory(config: EngineConfig, timing: object, gaps: GapLog, hashers: object, worker_id: int, dp_rank: int,
                **kw: Any) -> FakeRank:
        rank = FakeRank(worker_id, dp_rank)
        rank.build_args = {"timing": timing, **kw}
        out.append(rank)
        return rank

    monkeypatch.setattr("cluster.nodes.host.build_rank", factory)
    return out


def spec(gidx: int, worker_id: int | None = None, **kw: Any) -> RankSpec:
    return RankSpec(gidx, gidx if worker_id is None else worker_id, 0, ENGINE, node=f"n{gidx}", **kw)


def host(specs: Sequence[RankSpec], options: HostOptions | None = None,
         kills: Sequence[RankKill] = ()) -> tuple[NodeHost, EventLoop, FakePlane]:
    loop, plane = EventLoop(), FakePlane()
    h = NodeHost(specs, loop, plane_of(plane), GapLog(), options or HostOptions(), kills)
    return h, loop, plane


def deliver(loop: EventLoop, h: NodeHost, t: float, addr: int, msg: Message, key: int = 0) -> None:
    loop.schedule(t, Priority.DELIVER, key, h.on_message, (addr, msg))


def req(rid: int, worker_id: int = 0) -> RequestMsg:
    return RequestMsg(rid, worker_id, 0, 64, 4, (1,), 64, 0.0)


def probe(loop: EventLoop, rank: FakeRank, t: float, prio: Priority, name: str) -> None:
    loop.schedule(t, prio, 0, lambda now, _: rank.log.append((name, now, None)))


def test_ranks_are_built_with_the_host_options(built: list[FakeRank]) -> None:
    h, _, plane = host([spec(0), spec(1)], HostOptions(macro_step=False, publish_kv=True))
    assert [(r.worker_id, r.dp_rank) for r in built] == [(0, 0), (1, 0)]
    args = built[0].build_args
    assert isinstance(args.pop("timing"), PolynomialTiming)
    assert args == {"macro_step": False, "emit_events": True, "publish_ticks": True}
    assert h.addresses == [1, 2] and plane.node_of == {1: "n0", 2: "n1"}
    host([spec(0)], HostOptions(collect_kv=True))
    assert built[-1].build_args["emit_events"] is True and built[-1].build_args["publish_ticks"] is False


def test_requests_of_one_instant_wake_the_rank_once_at_start_priority(built: list[FakeRank]) -> None:
    h, loop, plane = host([spec(0)])
    deliver(loop, h, 5.0, 1, req(0), key=0)
    deliver(loop, h, 5.0, 1, req(1), key=1)
    probe(loop, built[0], 5.0, Priority.ARRIVE, "arrive")
    loop.run()
    assert built[0].log == [("submit", 5.0, 0), ("submit", 5.0, 1), ("arrive", 5.0, None), ("begin", 5.0, None),
                            ("advance", 15.0, None), ("begin", 15.0, None)]
    assert [(t, m.request_id, m.status) for t, m in plane.msgs(CompletionMsg)] == [
        (15.0, 0, TerminalStatus.COMPLETED), (15.0, 1, TerminalStatus.COMPLETED)]


def test_a_refused_request_answers_a_rejected_completion(built: list[FakeRank]) -> None:
    h, loop, plane = host([spec(0)])
    built[0].refuse = {7}
    deliver(loop, h, 3.0, 1, req(7))
    loop.run()
    assert plane.out == [(Topic.RESPONSES, 1, 0, CompletionMsg(
        7, 0, 0, TerminalStatus.REJECTED, EngineRecord(end_ms=3.0), FailureReason.REJECTED_PROMPT_TOO_LONG,
        "too long", None), 3.0)]
    assert built[0].log == [("submit", 3.0, 7)]


def test_the_due_event_runs_at_finish_priority_and_an_interrupt_supersedes_it(built: list[FakeRank]) -> None:
    h, loop, plane = host([spec(0)])
    rank = built[0]
    rank.pass_ms, rank.cut_ms = 100.0, 20.0
    deliver(loop, h, 0.0, 1, req(0))
    deliver(loop, h, 5.0, 1, req(1))  # cuts the pass in flight: due 100 -> 20
    probe(loop, rank, 20.0, Priority.CONTROL, "control")
    probe(loop, rank, 20.0, Priority.DELIVER, "deliver")
    loop.run()
    assert rank.calls("advance") == [20.0, 120.0]
    assert [c for c in rank.log if c[1] == 20.0] == [("control", 20.0, None), ("advance", 20.0, None),
                                                     ("deliver", 20.0, None), ("begin", 20.0, None)]
    assert [(t, m.request_id) for t, m in plane.msgs(CompletionMsg)] == [(20.0, 0), (120.0, 1)]


@pytest.mark.parametrize("load_changed", [True, False])
def test_a_pass_end_sends_kv_batches_first_tokens_completions_then_metrics(built: list[FakeRank],
                                                                          load_changed: bool) -> None:
    h, loop, plane = host([spec(0)], HostOptions(publish_kv=True, publish_metrics=True))
    rank = built[0]
    rank.load_changed = load_changed
    rank.kv_at_advance = [event(8.0, 0), event(10.0, 1)]
    deliver(loop, h, 0.0, 1, req(0), key=0)
    deliver(loop, h, 0.0, 1, req(1), key=1)
    loop.run()
    at_end = [(topic, type(m).__name__) for topic, _, _, m, now in plane.out if now == 10.0]
    expected = [(Topic.KV_EVENTS, "KvBatchMsg")] * 2 + [(Topic.RESPONSES, "FirstTokenMsg")] * 2 + \
        [(Topic.RESPONSES, "CompletionMsg")] * 2 + [(Topic.METRICS, "LoadMetricsMsg")] * load_changed
    assert at_end == expected
    assert [(b.seq, b.t_ms) for _, b in plane.msgs(KvBatchMsg)] == [(0, 8.0), (1, 10.0)]
    assert [m.kv_seq for _, m in plane.msgs(LoadMetricsMsg)] == [-1, -1] + [1] * load_changed
    assert plane.msgs(FirstTokenMsg) == [(10.0, FirstTokenMsg(0, 0, 0, 10.0)), (10.0, FirstTokenMsg(1, 0, 0, 10.0))]


def test_a_killed_rank_fails_its_requests_and_announces_worker_down(built: list[FakeRank]) -> None:
    kill = RankKill(50.0, (0, 5), KILLED, "node lost", "faults.2", key=2)  # gidx 5 lives elsewhere
    h, loop, plane = host([spec(0)], HostOptions(publish_kv=True), kills=[kill])
    rank = built[0]
    rank.pass_ms, rank.kv_at_kill = 100.0, [event(40.0, 0)]
    deliver(loop, h, 0.0, 1, req(0), key=0)
    deliver(loop, h, 0.0, 1, req(1), key=1)
    deliver(loop, h, 60.0, 1, req(2))
    loop.run()
    failed = [CompletionMsg(r, 0, 0, TerminalStatus.FAILED, EngineRecord(end_ms=50.0), KILLED, "node lost",
                            "faults.2") for r in (0, 1)]
    assert [m for t, m in plane.timeline() if t == 50.0] == [
        KvBatchMsg(0, 0, 0, 40.0, (event(40.0, 0),)), *failed, WorkerDownMsg(0, 0, 50.0, KILLED, "node lost", "faults.2")]
    assert plane.msgs(CompletionMsg)[-1] == (60.0, CompletionMsg(
        2, 0, 0, TerminalStatus.FAILED, EngineRecord(end_ms=60.0), KILLED, "worker is down", None))
    assert rank.calls("advance") == [] and rank.calls("submit") == [0.0, 0.0]
    stats = h.rank_stats()[0]
    assert (stats.alive, stats.stopped_ms) == (False, 50.0)


def test_started_ranks_are_ready_startup_ms_later_unless_killed_or_drained(built: list[FakeRank]) -> None:
    h, loop, plane = host([])
    deliver(loop, h, 100.0, 4, StartRankMsg(spec(3, worker_id=2, startup_ms=250.0)))
    kill = RankKill(200.0, (4,), KILLED, "boom", "faults.0")  # kills come with the start message
    deliver(loop, h, 100.0, 5, StartRankMsg(spec(4, startup_ms=250.0), (kill,)), key=1)
    deliver(loop, h, 0.0, 6, StartRankMsg(spec(5, startup_ms=100.0)))
    deliver(loop, h, 10.0, 6, DrainRankMsg(5, 0, expected=0))  # drained while starting: stops when ready
    loop.run()
    assert plane.out == [(Topic.CONTROL, 6, 0, RankReadyMsg(5, 0, 100.0), 100.0),
                         (Topic.CONTROL, 6, 0, RankStoppedMsg(5, 0, 100.0), 100.0),
                         (Topic.CONTROL, 5, 0, WorkerDownMsg(4, 0, 200.0, KILLED, "boom", "faults.0"), 200.0),
                         (Topic.CONTROL, 4, 0, RankReadyMsg(2, 0, 350.0), 350.0)]
    assert h.addresses == [6, 4, 5] and plane.node_of == {4: "n3", 5: "n4", 6: "n5"}


def test_a_draining_rank_stops_once_it_received_and_finished_the_expected(built: list[FakeRank]) -> None:
    h, loop, plane = host([spec(0), spec(1)])
    deliver(loop, h, 0.0, 1, req(0))
    deliver(loop, h, 1.0, 1, DrainRankMsg(0, 0, expected=2))
    deliver(loop, h, 30.0, 1, req(1))  # sent before the drain, arrives after it
    deliver(loop, h, 0.0, 2, req(2, worker_id=1))
    deliver(loop, h, 25.0, 2, DrainRankMsg(1, 0, expected=1))  # idle, everything received: stops at once
    loop.run()
    assert plane.msgs(RankStoppedMsg) == [(25.0, RankStoppedMsg(1, 0, 25.0)), (40.0, RankStoppedMsg(0, 0, 40.0))]
    assert [(t, m.request_id) for t, m in plane.msgs(CompletionMsg)] == [
        (10.0, 0), (10.0, 2), (40.0, 1)]
    assert [r.stopped_ms for r in h.rank_stats()] == [40.0, 25.0]


def test_a_draining_rank_stops_when_its_last_expected_request_is_refused(built: list[FakeRank]) -> None:
    h, loop, plane = host([spec(0)])
    built[0].refuse = {0}
    deliver(loop, h, 0.0, 1, DrainRankMsg(0, 0, expected=1))
    deliver(loop, h, 5.0, 1, req(0))
    loop.run()
    assert plane.msgs(RankStoppedMsg) == [(5.0, RankStoppedMsg(0, 0, 5.0))]


def test_a_stop_fails_requests_in_flight_with_worker_removed(built: list[FakeRank]) -> None:
    h, loop, plane = host([spec(0)])
    deliver(loop, h, 0.0, 1, req(0))
    deliver(loop, h, 5.0, 1, StopRankMsg(0, 0, REMOVED, "worker w-0 removed", "events.1"))
    deliver(loop, h, 6.0, 1, StopRankMsg(0, 0, REMOVED, "again"))  # already stopped: nothing
    loop.run()
    assert plane.timeline() == [
        (5.0, CompletionMsg(0, 0, 0, TerminalStatus.FAILED, EngineRecord(end_ms=5.0), REMOVED, "worker w-0 removed",
                            "events.1")), (5.0, RankStoppedMsg(0, 0, 5.0))]
    assert built[0].calls("advance") == []


def test_heartbeats_stop_heartbeat_count_periods_after_shutdown(built: list[FakeRank]) -> None:
    h, loop, plane = host([spec(0)], HostOptions(heartbeat_ms=100.0, heartbeat_count=3))
    deliver(loop, h, 250.0, 1, ShutdownMsg(250.0))
    loop.run()
    assert [(t, m.kv_seq) for t, m in plane.msgs(LoadMetricsMsg)] == [
        (100.0, -1), (200.0, -1), (300.0, -1), (400.0, -1), (500.0, -1)]
    assert len(loop) == 0


def test_heartbeats_of_a_started_rank_keep_the_grid_and_wait_for_ready(built: list[FakeRank]) -> None:
    h, loop, plane = host([], HostOptions(heartbeat_ms=100.0, heartbeat_count=2))
    deliver(loop, h, 250.0, 4, StartRankMsg(spec(3, startup_ms=120.0)))
    deliver(loop, h, 380.0, 4, ShutdownMsg(380.0))
    loop.run()
    assert [t for t, _ in plane.msgs(LoadMetricsMsg)] == [400.0, 500.0]


def test_response_bound_never_lies(built: list[FakeRank]) -> None:
    kill = RankKill(45.0, (1,), KILLED, "boom")
    h, loop, plane = host([spec(0)])
    deliver(loop, h, 0.0, 1, req(0), key=0)
    deliver(loop, h, 0.0, 1, req(1), key=1)
    deliver(loop, h, 0.0, 2, StartRankMsg(spec(1, startup_ms=30.0), (kill,)), key=2)
    horizons = [0.5 * k for k in range(1, 121)]
    bounds = []
    for hz in horizons:
        loop.run_before(hz)
        bounds.append(h.response_bound_ms(hz))
    sent = [now for topic, _, _, _, now in plane.out if topic in (Topic.RESPONSES, Topic.CONTROL)]
    assert sent == [10.0, 10.0, 10.0, 10.0, 30.0, 45.0]
    for hz, b in zip(horizons, bounds):
        assert all(t >= b for t in sent if t >= hz), (hz, b)
    bound_at = dict(zip(horizons, bounds))
    assert [bound_at[x] for x in (0.5, 10.5, 30.5, 45.5)] == [10.0, 30.0, 45.0, float("inf")]


def test_replay_requests_and_finalize_go_through_the_stream(built: list[FakeRank]) -> None:
    h, loop, plane = host([spec(0)], HostOptions(publish_kv=True, collect_kv=True))
    taps: list[KvBatchMsg] = []
    h.kv_tap = taps.append
    built[0].stamped = [event(3.0, 0)]
    deliver(loop, h, 5.0, 1, ReplayRequestMsg(0, 0, 0, 0))
    loop.run()
    batch = KvBatchMsg(0, 0, 0, 3.0, (event(3.0, 0),))
    assert plane.out == [(Topic.KV_EVENTS, 1, None, batch, 5.0),
                         (Topic.KV_REPLAY, 1, 0, ReplayReplyMsg(0, 0, 0, (batch,), None), 5.0)]
    assert taps == [batch]
    built[0].stamped = [event(9.0, 1)]
    h.finalize()
    assert h.collected_kv_events() == [[event(3.0, 0), event(9.0, 1)]]


def test_the_host_re_times_co_tenants_when_one_becomes_busy(built: list[FakeRank]) -> None:
    ta, tb = FakeTiming(), FakeTiming()
    h, loop, plane = host([spec(0, timing=ta, cotenant_group=1, core_limit=0.5),
                           spec(1, timing=tb, cotenant_group=1, core_limit=0.25)])
    a, b = built
    a.pass_ms, a.cut_ms = 100.0, 30.0
    deliver(loop, h, 0.0, 1, req(0))
    deliver(loop, h, 10.0, 2, req(1, worker_id=1))
    loop.run()
    assert a.calls("advance") == [30.0] and b.calls("advance") == [20.0]
    assert ta.limits == [[0.25], []] and tb.limits == [[0.5], []]
    assert [(t, m.request_id) for t, m in plane.msgs(CompletionMsg)] == [(20.0, 1), (30.0, 0)]
    assert a.calls("interrupt") == [10.0, 20.0] and b.calls("interrupt") == [0.0, 30.0]


def test_a_shared_card_rank_without_contended_timing_is_refused(built: list[FakeRank]) -> None:
    with pytest.raises(ValueError, match="rank 0 shares a card"):
        host([spec(0, timing=object(), cotenant_group=1)])
