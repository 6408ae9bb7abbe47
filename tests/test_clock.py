"""The event loop's same-instant ordering is pinned: priority, then key, then insertion order."""

from __future__ import annotations

import pytest

from cluster.sim.clock import EventLoop, Priority
from cluster.sim.seeds import component_rng


def test_same_time_order_is_priority_then_key_then_insertion() -> None:
    loop = EventLoop()
    log: list[str] = []

    def note(t: float, name: object) -> None:
        log.append(f"{t}:{name}")

    loop.schedule(5.0, Priority.START, 0, note, "start-0")
    loop.schedule(5.0, Priority.DELIVER, 7, note, "deliver-7")
    loop.schedule(5.0, Priority.FINISH, 3, note, "finish-3")
    loop.schedule(5.0, Priority.FINISH, 1, note, "finish-1")
    loop.schedule(5.0, Priority.DELIVER, 7, note, "deliver-7-later")
    loop.schedule(5.0, Priority.CONTROL, 9, note, "control")
    loop.schedule(1.0, Priority.START, 0, note, "early")
    loop.run()
    assert log == ["1.0:early", "5.0:control", "5.0:finish-1", "5.0:finish-3", "5.0:deliver-7",
                   "5.0:deliver-7-later", "5.0:start-0"]
    assert loop.num_events == 7 and loop.now_ms == 5.0


def test_events_scheduled_while_running_keep_the_order() -> None:
    loop = EventLoop()
    log: list[str] = []

    def finish(t: float, _: object) -> None:
        log.append("finish")
        loop.schedule(t, Priority.DELIVER, 0, lambda t2, a: log.append("deliver"))

    loop.schedule(2.0, Priority.START, 0, lambda t, a: log.append("start"))
    loop.schedule(2.0, Priority.FINISH, 0, finish)
    loop.run()
    assert log == ["finish", "deliver", "start"]


def test_scheduling_in_the_past_is_refused() -> None:
    loop = EventLoop()
    loop.schedule(3.0, Priority.CONTROL, 0, lambda t, a: loop.schedule(1.0, Priority.CONTROL, 0, lambda *_: None))
    with pytest.raises(ValueError, match="before now"):
        loop.run()


def test_run_until_stops_before_later_events() -> None:
    loop = EventLoop()
    seen: list[float] = []
    for t in (1.0, 2.0, 3.0):
        loop.schedule(t, Priority.CONTROL, 0, lambda now, a: seen.append(now))
    loop.run(until_ms=2.0)
    assert seen == [1.0, 2.0] and loop.peek_ms() == 3.0


def test_component_rngs_are_seeded_and_independent_of_each_other() -> None:
    a1 = component_rng(7, "router").random(3)
    a2 = component_rng(7, "router").random(3)
    b = component_rng(7, "planner").random(3)
    c = component_rng(8, "router").random(3)
    assert list(a1) == list(a2)
    assert list(a1) != list(b) and list(a1) != list(c)
