"""KV stream recovery: whatever the network loses, duplicates or reorders, a subscriber with
recovery ends with exactly the publisher's state; without recovery the damage is counted."""

from __future__ import annotations

import heapq
import random
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.engine.events import KvCleared, KvEvent, KvRemoved, KvStored
from cluster.plane.messages import KvBatchMsg, KvSnapshot, ReplayReplyMsg
from cluster.plane.recovery import KvPublisher, KvSubscriber

ops = st.lists(st.tuples(st.sampled_from(["add", "add", "add", "remove", "clear"]), st.integers(0, 30)),
               min_size=1, max_size=4)


class _World:
    """One publisher, one subscriber, a lossy network on a tiny event queue."""

    def __init__(self, recovery: bool, loss: float, dup: float, buffer: int, seed: int) -> None:
        self.rnd = random.Random(seed)
        self.loss, self.dup = loss, dup
        self.now = 0.0
        self.queue: list[tuple[float, int, str, Any]] = []
        self.n = 0
        self.pub = KvPublisher(0, 0, buffer)
        self.pub_state: set[int] = set()
        self.sub_state: set[int] = set()
        self.applied: list[int] = []
        self.event_id = 0
        self.sub = KvSubscriber(recovery, self._apply, self._resync, self._request)

    def _push(self, t: float, kind: str, payload: Any) -> None:
        self.n += 1
        heapq.heappush(self.queue, (t, self.n, kind, payload))

    # subscriber callbacks
    def _apply(self, batch: KvBatchMsg) -> None:
        self.applied.append(batch.seq)
        for e in batch.events:
            _apply_data(self.sub_state, e.data)

    def _resync(self, w: int, r: int, snap: KvSnapshot) -> None:
        self.sub_state = set(snap.block_hashes)

    def _request(self, w: int, r: int, from_seq: int) -> None:
        self._push(self.now + self.rnd.uniform(0.1, 2.0), "replay_request", from_seq)

    # network
    def publish(self, batch_ops: list[tuple[str, int]]) -> None:
        events = []
        for op, h in batch_ops:
            data: Any = KvStored(None, (h,), (0,)) if op == "add" else KvRemoved((h,)) if op == "remove" else KvCleared()
            _apply_data(self.pub_state, data)
            events.append(KvEvent(self.now, 0, 0, self.event_id, data))
            self.event_id += 1
        batch = self.pub.batch(self.now, tuple(events))
        self._lossy(batch, "batch")

    def heartbeat(self, reliable: bool = False) -> None:
        if reliable:
            self._push(self.now + 1.0, "heartbeat", self.pub.last_seq)
        else:
            self._lossy(self.pub.last_seq, "heartbeat")

    def _lossy(self, payload: Any, kind: str) -> None:
        if self.rnd.random() < self.loss:
            return
        self._push(self.now + self.rnd.uniform(0.1, 3.0), kind, payload)
        if self.rnd.random() < self.dup:
            self._push(self.now + self.rnd.uniform(0.1, 3.0), kind, payload)

    def run_until(self, t: float) -> None:
        while self.queue and self.queue[0][0] <= t:
            self.now, _, kind, payload = heapq.heappop(self.queue)
            if kind == "batch":
                self.sub.on_batch(payload)
            elif kind == "heartbeat":
                self.sub.on_heartbeat(0, 0, payload)
            elif kind == "replay_request":
                snap = KvSnapshot(tuple(sorted(self.pub_state)), self.event_id, self.pub.last_seq)
                reply = self.pub.replay(payload, lambda s=snap: s)
                self._push(self.now + self.rnd.uniform(0.1, 2.0), "replay_reply", reply)
            else:
                assert isinstance(payload, ReplayReplyMsg)
                self.sub.on_replay(payload)
        self.now = max(self.now, t)


def _apply_data(state: set[int], data: Any) -> None:
    if isinstance(data, KvStored):
        state.update(data.block_hashes)
    elif isinstance(data, KvRemoved):
        state.difference_update(data.block_hashes)
    else:
        state.clear()


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, min_size=1, max_size=60), st.floats(0.0, 0.5), st.floats(0.0, 0.3), st.integers(1, 8),
       st.integers(0, 2**32))
def test_recovery_converges_to_the_publisher_state(batches: list[list[tuple[str, int]]], loss: float, dup: float,
                                                   buffer: int, seed: int) -> None:
    w = _World(recovery=True, loss=loss, dup=dup, buffer=buffer, seed=seed)
    for k, b in enumerate(batches):
        w.run_until(float(k))
        w.publish(b)
        if k % 5 == 4:
            w.heartbeat()
    w.run_until(len(batches) + 5.0)
    w.heartbeat(reliable=True)  # the tail of the stream is announced at least once
    w.run_until(1e9)
    assert w.sub_state == w.pub_state
    # Applied batches are strictly increasing in seq: nothing applied twice or out of order.
    assert all(a < b for a, b in zip(w.applied, w.applied[1:]))
    st_ = w.sub.stats
    assert st_.batches_applied == len(w.applied)
    assert w.sub.expected(0, 0) == w.pub.next_seq
    if st_.resyncs == 0:
        assert w.applied == list(range(w.pub.next_seq))


def test_without_recovery_losses_are_counted_and_the_state_drifts() -> None:
    w = _World(recovery=False, loss=0.3, dup=0.2, buffer=4, seed=5)
    for k in range(200):
        w.run_until(float(k))
        w.publish([("add", k), ("remove", k - 3)])
    w.run_until(1e9)
    stats = w.sub.stats
    assert stats.gaps_detected > 0 and stats.batches_missing > 0
    assert stats.duplicates_dropped > 0
    assert stats.replay_requests == 0 and stats.resyncs == 0
    assert w.sub_state != w.pub_state


def test_replay_older_than_the_buffer_answers_with_a_snapshot() -> None:
    pub = KvPublisher(3, 1, buffer_batches=2)
    for t in range(5):
        pub.batch(float(t), ())
    snap = KvSnapshot((1, 2), 9, 4)
    assert [b.seq for b in pub.replay(3, lambda: snap).batches] == [3, 4]
    reply = pub.replay(1, lambda: snap)
    assert reply.batches == () and reply.snapshot == snap and (reply.worker_id, reply.dp_rank) == (3, 1)
    assert pub.replay(5, lambda: snap).batches == ()  # nothing missing yet
