"""The fleet through its seams: `Fleet` with a fake worker source (room for N workers), a fake router host
and a recording plane; it starts, drains, stops and frees workers and forwards faults to new ones."""

from __future__ import annotations

from dataclasses import replace
from typing import cast

import pytest

from actors.engine.config import EngineConfig
from actors.engine.records import FailureReason
from cluster.control.fleet import FaultPlan, Fleet
from cluster.control.workers import WorkerInfo, WorkerSource
from cluster.control.router_host import RouterHost
from cluster.plane.messages import Topic, WorkerDownMsg
from cluster.plane.ranks import (
    DrainRankMsg,
    RankKill,
    RankReadyMsg,
    RankSpec,
    RankStoppedMsg,
    StartRankMsg,
    StopRankMsg,
)
from cluster.sim.clock import EventLoop
from tests.room_fakes import FakePlane, plane_of

KILLED, REMOVED = FailureReason.WORKER_KILLED, FailureReason.WORKER_REMOVED


ENGINE = EngineConfig(startup_time=2.5)


def info(worker_id: int, name: str, first: int, dp: int = 2, node: str = "n0") -> WorkerInfo:
    gidxs = tuple(range(first, first + dp))
    ranks = tuple(RankSpec(g, worker_id, r, ENGINE, worker_name=name, node=node) for r, g in enumerate(gidxs))
    return WorkerInfo(worker_id, name, name.rsplit("-", 1)[0], gidxs, (), ENGINE, dp, (node,) * dp, ranks)


class FakeSource:
    """A `WorkerSource` with room for `capacity` workers of deployment "dec", all on node n1."""

    def __init__(self, capacity: int = 10) -> None:
        self.capacity = capacity
        self.built: list[tuple[int, int, str, int]] = []
        self.freed: list[tuple[str, float]] = []

    def deployment_index(self, name: str) -> int | None:
        return {"dec": 0}.get(name)

    def build(self, k: int, worker_id: int, name: str, first_gidx: int) -> WorkerInfo | None:
        self.built.append((k, worker_id, name, first_gidx))
        self.capacity -= 1
        return info(worker_id, name, first_gidx, node="n1") if self.capacity >= 0 else None

    def free(self, name: str, now_ms: float) -> None:
        self.freed.append((name, now_ms))


class FakeRouterHost:
    """What the fleet needs of a router host; `sent[w]` is what `stop_routing(w)` answers."""

    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []
        self.sent: dict[int, dict[int, int]] = {}

    def add_worker(self, now: float, worker_id: int, gidxs: tuple[int, ...], decode: bool = False) -> None:
        self.calls.append(("add", now, worker_id, tuple(gidxs)))

    def stop_routing(self, worker_id: int) -> dict[int, int]:
        self.calls.append(("stop", worker_id))
        return self.sent.get(worker_id, {})

    def remove_worker(self, now: float, worker_id: int) -> None:
        self.calls.append(("remove", now, worker_id))

    def fail_pending(self, now: float, detail: str, cause: str | None) -> None:
        self.calls.append(("fail_pending", now, cause))


def fleet(source: FakeSource | None = None, faults: tuple[FaultPlan, ...] = ()) -> tuple[
        Fleet, EventLoop, FakePlane, FakeRouterHost, FakeSource, list[float]]:
    """A fleet whose initial worker dec-0 (ranks 0, 1 on n0) is ready."""
    loop, plane, rh, src = EventLoop(), FakePlane(), FakeRouterHost(), source or FakeSource()
    times: list[float] = []
    f = Fleet(loop, plane_of(plane), cast(RouterHost, rh), cast(WorkerSource, src), [info(0, "dec-0", 0)], faults, times)
    return f, loop, plane, rh, src, times


def test_add_worker_starts_every_rank_of_a_fresh_worker() -> None:
    f, loop, plane, rh, src, times = fleet()
    f.add_worker("dec", 100.0, "events.0")
    loop.run()
    new = info(1, "dec-1", 2, node="n1")
    assert src.built == [(0, 1, "dec-1", 2)]
    assert plane.out == [(Topic.CONTROL, 0, g + 1, StartRankMsg(replace(s, startup_ms=2500.0)), 100.0)
                         for g, s in zip(new.gidxs, new.ranks)]
    assert f.actions == [{"at_ms": 100.0, "kind": "add_worker", "deployment": "dec", "worker": "dec-1",
                          "outcome": "placed", "cause": "events.0"}]
    assert (f.lives[1].state, f.lives[1].started_ms, f.lives[1].ready_ms) == ("starting", 100.0, None)
    assert f.addresses() == [1, 2, 3, 4] and plane.node_of == {1: "n0", 2: "n0", 3: "n1", 4: "n1"}
    assert times == [100.0] and rh.calls == []
    f.add_worker("dec", 150.0)
    loop.run()
    assert src.built[-1] == (0, 2, "dec-2", 4)


def test_no_capacity_or_an_unknown_deployment_is_logged() -> None:
    f, loop, plane, _, src, _ = fleet(FakeSource(capacity=0))
    f.add_worker("dec", 10.0)
    f.add_worker("zzz", 20.0)
    loop.run()
    src.capacity = 1
    f.add_worker("dec", 30.0)
    loop.run()
    assert [(a["at_ms"], a["outcome"], a.get("worker")) for a in f.actions] == [
        (10.0, "capacity_exhausted", None), (20.0, "unknown_deployment", None), (30.0, "placed", "dec-1")]
    assert [m.spec.gidx for _, _, _, m, _ in plane.out] == [2, 3]  # type: ignore[union-attr]


def test_the_router_learns_of_a_worker_only_when_every_rank_is_ready() -> None:
    f, loop, _, rh, _, _ = fleet()
    f.add_worker("dec", 0.0)
    loop.run()
    f.on_ready(2500.0, RankReadyMsg(1, 0, 2500.0))
    assert rh.calls == [] and f.lives[1].state == "starting"
    f.on_ready(2600.0, RankReadyMsg(1, 1, 2590.0))
    f.on_ready(2700.0, RankReadyMsg(1, 1, 2700.0))  # again: nothing more
    assert rh.calls == [("add", 2600.0, 1, (2, 3))]
    assert (f.lives[1].state, f.lives[1].ready_ms) == ("ready", 2590.0)
    assert f.actions[-1] == {"at_ms": 2600.0, "kind": "worker_ready", "worker": "dec-1", "ready_ms": 2590.0}


@pytest.mark.parametrize("drain", [True, False])
def test_remove_worker_drains_or_stops_every_rank(drain: bool) -> None:
    f, loop, plane, rh, _, _ = fleet()
    rh.sent[0] = {0: 3, 1: 5}
    f.remove_worker("dec-0", 50.0, drain=drain, cause="events.3")
    f.remove_worker("dec-0", 60.0)
    loop.run()
    msgs = [DrainRankMsg(0, 0, 3), DrainRankMsg(0, 1, 5)] if drain else [
        StopRankMsg(0, r, REMOVED, "worker dec-0 removed", "events.3") for r in (0, 1)]
    assert plane.out == [(Topic.CONTROL, 0, 1, msgs[0], 50.0), (Topic.CONTROL, 0, 2, msgs[1], 50.0)]
    assert rh.calls == [("stop", 0)] and f.lives[0].state == "draining"
    assert [(a["worker"], a.get("drain"), a["outcome"]) for a in f.actions] == [
        ("dec-0", drain, "draining" if drain else "stopping"), ("dec-0", None, "not_running")]


def test_a_starting_worker_is_drained_without_asking_the_router() -> None:
    f, loop, plane, rh, _, _ = fleet()
    f.add_worker("dec", 0.0)
    f.remove_worker("dec-1", 10.0)
    loop.run()
    assert [m for _, _, _, m, t in plane.out if t == 10.0] == [DrainRankMsg(1, 0, 0), DrainRankMsg(1, 1, 0)]
    assert rh.calls == []


def test_a_stopped_or_failed_worker_leaves_the_router_and_frees_its_gpus_once() -> None:
    f, loop, _, rh, src, _ = fleet()
    f.add_worker("dec", 100.0)
    f.remove_worker("dec-1", 3000.0)
    loop.run(until_ms=200.0)
    f.on_ready(2600.0, RankReadyMsg(1, 0, 2600.0))
    f.on_ready(2600.0, RankReadyMsg(1, 1, 2600.0))
    loop.run()
    f.on_stopped(3050.0, RankStoppedMsg(1, 0, 3050.0))
    assert rh.calls == [("add", 2600.0, 1, (2, 3)), ("stop", 1)] and src.freed == []
    f.on_stopped(3100.0, RankStoppedMsg(1, 1, 3090.0))
    assert rh.calls[2:] == [("remove", 3100.0, 1)] and src.freed == [("dec-1", 3100.0)]
    life = f.lives[1]
    assert (life.state, life.started_ms, life.ready_ms, life.stopped_ms) == ("stopped", 100.0, 2600.0, 3090.0)
    assert f.actions[-1] == {"at_ms": 3100.0, "kind": "worker_stopped", "worker": "dec-1", "stopped_ms": 3090.0}
    f.on_down(3200.0, WorkerDownMsg(1, 0, 3200.0, KILLED, "late"))  # already stopped: nothing
    f.on_down(70.0, WorkerDownMsg(0, 1, 69.0, KILLED, "boom", "faults.4"))
    f.on_down(71.0, WorkerDownMsg(0, 0, 70.0, KILLED, "boom", "faults.4"))
    # the last worker is gone and none is starting: what waits in the router fails
    assert rh.calls[3:] == [("remove", 70.0, 0), ("fail_pending", 70.0, "faults.4")]
    assert src.freed[1:] == [("dec-0", 70.0)] and not rh.serving()
    assert (f.lives[0].state, f.lives[0].stopped_ms, life.state) == ("failed", 69.0, "stopped")
    assert (f.lives[0].failed_by, life.failed_by) == ("faults.4", None)
    assert f.actions[-1] == {"at_ms": 70.0, "kind": "worker_failed", "worker": "dec-0", "failed_ms": 69.0,
                             "reason": "worker_killed", "cause": "faults.4"}
    assert sum(a["kind"] == "worker_failed" for a in f.actions) == 1  # its second rank's news adds nothing


def test_the_router_serves_while_some_worker_is_starting_or_ready() -> None:
    f, loop, _, rh, _, _ = fleet()
    assert rh.serving()
    f.add_worker("dec", 100.0)
    loop.run()
    f.on_down(150.0, WorkerDownMsg(0, 0, 150.0, KILLED, "boom", "faults.0"))
    assert rh.serving() and ("fail_pending", 150.0, "faults.0") not in rh.calls  # dec-1 is starting
    f.remove_worker("dec-1", 200.0)
    loop.run()
    assert not rh.serving()  # draining serves nothing new


def test_faults_that_hit_a_new_worker_travel_in_its_start_messages() -> None:
    faults = (FaultPlan(500.0, 3, "dec-1", None, KILLED, "boom"), FaultPlan(50.0, 4, "dec-1", None, KILLED, "past"),
              FaultPlan(900.0, 5, None, "n1", KILLED, "node"), FaultPlan(800.0, 6, "dec-0", "n9", KILLED, "other"))
    f, loop, plane, _, _, _ = fleet(faults=faults)
    f.add_worker("dec", 100.0)
    loop.run()
    kills = (RankKill(500.0, (2, 3), KILLED, "boom", "faults.3", 3), RankKill(900.0, (2, 3), KILLED, "node", "faults.5", 5))
    assert [m.kills for _, _, _, m, _ in plane.out] == [kills, kills]  # type: ignore[union-attr]
