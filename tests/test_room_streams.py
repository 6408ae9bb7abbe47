"""The node room's two per-rank helpers on their own: `KvStream` (numbered KV batches, buffered replay or a
snapshot) and `Contention` (co-tenants of one card re-timed when one becomes busy)."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest

from actors.engine.events import KvEvent, KvStored
from actors.engine.protocol import EngineRank
from cluster.nodes.contention import Contention
from cluster.nodes.kv_streams import KvStream
from cluster.plane.messages import (
    KvBatchMsg,
    KvSnapshot,
    ReplayReplyMsg,
    ReplayRequestMsg,
    Topic,
)
from tests.room_fakes import FakePlane, FakeRank, FakeTiming, event, plane_of


def stream(rank: FakeRank, publish: bool = True, buffer: int = 10,
           tap: Callable[[KvBatchMsg], None] | None = None) -> tuple[KvStream, FakePlane]:
    plane = FakePlane()
    return KvStream(cast(EngineRank, rank), 9, plane_of(plane), publish, True, buffer, tap=tap), plane


def test_a_stream_sends_one_numbered_batch_per_stamp_time() -> None:
    taps: list[KvBatchMsg] = []
    s, plane = stream(FakeRank(4, 1), tap=taps.append)
    e = [KvEvent(t, 4, 1, i, KvStored(None, (i,), (i,))) for i, t in enumerate([5.0, 5.0, 7.0, 8.0])]
    s.send(e[:3], 7.0)
    s.send([], 7.5)
    s.send(e[3:], 8.0)
    batches = [KvBatchMsg(4, 1, 0, 5.0, (e[0], e[1])), KvBatchMsg(4, 1, 1, 7.0, (e[2],)), KvBatchMsg(4, 1, 2, 8.0, (e[3],))]
    assert plane.out == [(Topic.KV_EVENTS, 9, None, batches[0], 7.0), (Topic.KV_EVENTS, 9, None, batches[1], 7.0),
                         (Topic.KV_EVENTS, 9, None, batches[2], 8.0)]
    assert taps == batches and s.collected == e and s.last_seq == 2
    quiet, plane = stream(FakeRank(0, 0), publish=False)
    quiet.send(e[:1], 1.0)
    assert plane.out == [] and quiet.collected == e[:1] and quiet.last_seq == -1


def test_a_replay_sends_buffered_batches_or_a_snapshot() -> None:
    rank = FakeRank(0, 0)
    rank.snapshot = ((100, 101), 3)
    s, plane = stream(rank, buffer=2)
    for i in range(3):
        s.send([event(float(i), i)], float(i))
    plane.out.clear()
    s.answer_replay(10.0, cast(EngineRank, rank), ReplayRequestMsg(0, 0, 1, 0))
    s.answer_replay(11.0, cast(EngineRank, rank), ReplayRequestMsg(0, 0, 0, 0))
    kept = tuple(KvBatchMsg(0, 0, i, float(i), (event(float(i), i),)) for i in (1, 2))
    assert plane.out == [(Topic.KV_REPLAY, 9, 0, ReplayReplyMsg(0, 0, 1, kept, None), 10.0),
                         (Topic.KV_REPLAY, 9, 0, ReplayReplyMsg(0, 0, 0, (), KvSnapshot((100, 101), 3, 2)), 11.0)]


def test_a_busy_rank_re_times_and_interrupts_its_co_tenants() -> None:
    rearmed: list[tuple[int, float]] = []
    c = Contention(lambda key, now: rearmed.append((key, now)))
    assert not c
    ranks = [FakeRank(i, 0) for i in range(4)]
    timings = [FakeTiming() for _ in ranks]
    for i, (group, limit) in enumerate([(9, 0.5), (9, 0.25), (9, 0.125), (8, 1.0)]):
        c.join(i, group, cast(EngineRank, ranks[i]), timings[i], limit)
    assert c
    ranks[0].end = 50.0
    c.update(0, 7.0)
    c.update(0, 8.0)  # no change: nothing
    c.update(42, 8.0)  # not a member: nothing
    assert [t.limits for t in timings] == [[], [[0.5]], [[0.5]], []]
    assert rearmed == [(1, 7.0), (2, 7.0)]
    assert ranks[1].log == [("interrupt", 7.0, None)] and ranks[3].log == []
    ranks[1].end = 60.0
    c.update(1, 9.0)
    ranks[0].end = None
    c.update(0, 10.0)
    assert [t.limits for t in timings] == [[[0.25]], [[0.5], []], [[0.5], [0.5, 0.25], [0.25]], []]
    assert rearmed[2:] == [(0, 9.0), (2, 9.0), (1, 10.0), (2, 10.0)]


def test_a_timing_model_that_ignores_contention_is_refused() -> None:
    c = Contention(lambda rank, now: None)
    with pytest.raises(ValueError, match="rank 3 shares a card but its timing model ignores contention"):
        c.join(3, 1, cast(EngineRank, FakeRank(0, 0)), object(), 0.5)
    assert not c
