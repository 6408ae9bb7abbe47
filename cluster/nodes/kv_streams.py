"""The KV event stream of one hosted rank: what leaves, in which batches, and the replay buffer.

Events a rank stamped (at the end of the pass that made them visible) leave as `KvBatchMsg`s,
one batch per stamp time, numbered by the rank's `KvPublisher` (replay buffer included), on
the `kv_events` topic. The node host hands a stream every event a rank call returned, right
after the call, so batches leave at the instants pass-by-pass execution would send them (the
rank's decode runs stop at their cache-changing passes, see `actors.engine.scheduler.core`).
A replay request is answered with the buffered batches, or a snapshot of the rank's cache.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from actors.engine.events import KvEvent
from actors.engine.protocol import EngineRank
from cluster.plane.endpoint import PlaneEndpoint
from cluster.plane.messages import KvBatchMsg, KvSnapshot, ReplayRequestMsg, Topic
from cluster.plane.recovery import KvPublisher

KvTap = Callable[[KvBatchMsg], None]
"""Sees every published batch (an outside observer such as a ZMQ mirror)."""


class KvStream:
    """One rank's stream. `publish`: send batches; `collect`: keep every event (tests)."""

    __slots__ = ("addr", "plane", "publish_batches", "collect", "publisher", "collected", "tap")

    def __init__(self, rank: EngineRank, addr: int, plane: PlaneEndpoint, publish: bool, collect: bool,
                 buffer_batches: int, tap: KvTap | None = None) -> None:
        self.addr = addr
        self.plane = plane
        self.publish_batches = publish
        self.collect = collect
        self.publisher = KvPublisher(rank.worker_id, rank.dp_rank, buffer_batches)
        self.collected: list[KvEvent] = []
        self.tap = tap

    @property
    def last_seq(self) -> int:
        return self.publisher.last_seq

    def send(self, events: Sequence[KvEvent], now: float) -> None:
        """Publish stamped events, one batch per stamp time."""
        if not events:
            return
        if self.collect:
            self.collected.extend(events)
        if not self.publish_batches:
            return
        pub = self.publisher
        start = 0
        for k in range(1, len(events) + 1):
            if k == len(events) or events[k].t_ms != events[start].t_ms:
                batch = pub.batch(events[start].t_ms, tuple(events[start:k]))
                self.plane.publish(Topic.KV_EVENTS, self.addr, batch, now)
                if self.tap is not None:
                    self.tap(batch)
                start = k

    def answer_replay(self, now: float, rank: EngineRank, msg: ReplayRequestMsg) -> None:
        """Reply with the buffered batches from `msg.from_seq`, or a snapshot of the rank's cache."""
        self.send(rank.take_kv_events(), now)  # a snapshot must cover every event already stamped
        pub = self.publisher

        def snapshot() -> KvSnapshot:
            hashes, next_event_id = rank.kv_snapshot()
            return KvSnapshot(hashes, next_event_id, pub.last_seq)

        self.plane.send(Topic.KV_REPLAY, self.addr, msg.reply_to, pub.replay(msg.from_seq, snapshot), now)
