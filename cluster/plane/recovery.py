"""Keeping a subscriber's view of KV event streams whole: sequence numbers, replay, resync.

Publisher side (`KvPublisher`, one per rank): numbers its batches 0, 1, 2, ... and keeps
the last `buffer_batches` of them. A replay request from `from_seq` is answered with the
buffered batches from there on, or, when the buffer no longer reaches back that far, with
a snapshot of everything the rank has cached (a full resync).

Subscriber side (`KvSubscriber`, one per subscribing component, state per publisher
slot). With recovery on, a slot's batches are applied strictly in sequence order:
- `seq == expected`: applied, then any held successors;
- `seq > expected`: a gap. The batch is held and a replay from `expected` is requested
  (one outstanding request per slot);
- `seq < expected`, or already held: a duplicate, dropped;
- a heartbeat announcing `kv_seq >= expected` reveals batches lost at the tail of the
  stream: a replay is requested;
- a replay reply applies its batches in order; a snapshot replaces the slot's state
  (`resync`) and makes the subscriber expect `last_seq + 1`, unless the missing batches
  arrived (late) before the reply and the slot is already past the snapshot.
Invariant (recovery on): the applied batches of a slot are exactly seqs 0..expected-1,
each once, in order, or a snapshot followed by the batches after it. So once every
publisher's last batch has been announced and answered, the subscriber's view equals
the publishers' caches.

With recovery off, batches are applied as they come (duplicates and gaps are only
counted), which is what lets a run show how far an unprotected index drifts.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from actors.engine.events import KvEvent
from cluster.plane.messages import KvBatchMsg, KvSnapshot, ReplayReplyMsg

SlotKey = tuple[int, int]
"""(worker_id, dp_rank)."""


class KvPublisher:
    """Batch numbering and the bounded replay buffer of one rank."""

    __slots__ = ("worker_id", "dp_rank", "next_seq", "_buffer")

    def __init__(self, worker_id: int, dp_rank: int, buffer_batches: int) -> None:
        if buffer_batches < 1:
            raise ValueError(f"buffer_batches must be >= 1, got {buffer_batches}")
        self.worker_id = worker_id
        self.dp_rank = dp_rank
        self.next_seq = 0
        self._buffer: deque[KvBatchMsg] = deque(maxlen=buffer_batches)

    @property
    def last_seq(self) -> int:
        """Seq of the last batch published; -1 before the first."""
        return self.next_seq - 1

    def batch(self, t_ms: float, events: tuple[KvEvent, ...]) -> KvBatchMsg:
        """Number the next batch and keep it for replays."""
        b = KvBatchMsg(self.worker_id, self.dp_rank, self.next_seq, t_ms, events)
        self.next_seq += 1
        self._buffer.append(b)
        return b

    def replay(self, from_seq: int, snapshot: Callable[[], KvSnapshot]) -> ReplayReplyMsg:
        """Buffered batches from `from_seq` on, or a snapshot when the buffer starts later."""
        buf = self._buffer
        oldest = buf[0].seq if buf else self.next_seq
        if from_seq >= oldest:
            batches = tuple(b for b in buf if b.seq >= from_seq)
            return ReplayReplyMsg(self.worker_id, self.dp_rank, from_seq, batches, None)
        return ReplayReplyMsg(self.worker_id, self.dp_rank, from_seq, (), snapshot())


@dataclass(slots=True)
class _SlotState:
    expected: int = 0
    held: dict[int, KvBatchMsg] = field(default_factory=dict)
    replay_outstanding: bool = False


@dataclass(slots=True)
class SyncStats:
    """Subscriber-side counters, for the report's event-plane section."""

    batches_received: int = 0
    batches_applied: int = 0
    duplicates_dropped: int = 0
    gaps_detected: int = 0
    """Occurrences of a batch (or heartbeat) revealing missing seqs."""
    batches_missing: int = 0
    """Recovery off: seqs skipped over and never seen (a later arrival reduces it)."""
    replay_requests: int = 0
    batches_replayed: int = 0
    resyncs: int = 0
    max_held: int = 0


class KvSubscriber:
    """Per-slot stream reassembly for one subscribing component; see the module docstring.

    Args:
        recovery: hold batches after a gap and recover them (True), or apply as they come.
        apply: called with each batch to apply, in the order the policy above decides.
        resync: called with a slot's snapshot; must replace the slot's state with it.
        request_replay: called to send a replay request for a slot from a seq.
    """

    def __init__(
        self,
        recovery: bool,
        apply: Callable[[KvBatchMsg], None],
        resync: Callable[[int, int, KvSnapshot], None],
        request_replay: Callable[[int, int, int], None],
    ) -> None:
        self.recovery = recovery
        self._apply = apply
        self._resync = resync
        self._request = request_replay
        self._slots: dict[SlotKey, _SlotState] = {}
        self._seen: dict[SlotKey, set[int]] = {}
        self.stats = SyncStats()

    def forget(self, worker_id: int, dp_rank: int) -> None:
        """Drop a slot's state (its worker left); later batches from it start a fresh stream."""
        self._slots.pop((worker_id, dp_rank), None)
        self._seen.pop((worker_id, dp_rank), None)

    def restart(self, worker_id: int, dp_rank: int) -> None:
        """The subscriber restarted and knows nothing of the slot: with recovery, ask for the whole
        stream again (a replay from seq 0, or a snapshot when the buffer no longer reaches back)."""
        self.forget(worker_id, dp_rank)
        if self.recovery:
            self._ask((worker_id, dp_rank), self._state((worker_id, dp_rank)))

    def expected(self, worker_id: int, dp_rank: int) -> int:
        """The next seq the slot's stream needs."""
        st = self._slots.get((worker_id, dp_rank))
        return 0 if st is None else st.expected

    def _state(self, key: SlotKey) -> _SlotState:
        st = self._slots.get(key)
        if st is None:
            st = self._slots[key] = _SlotState()
        return st

    # ------------------------------------------------------------------ arrivals

    def on_batch(self, batch: KvBatchMsg) -> None:
        stats = self.stats
        stats.batches_received += 1
        key = (batch.worker_id, batch.dp_rank)
        st = self._state(key)
        if not self.recovery:
            self._unprotected(key, st, batch)
            return
        seq = batch.seq
        if seq < st.expected or seq in st.held:
            stats.duplicates_dropped += 1
            return
        if seq == st.expected:
            self._apply_one(st, batch)
            self._drain(key, st)
            return
        st.held[seq] = batch
        stats.max_held = max(stats.max_held, len(st.held))
        self._ask(key, st)

    def on_heartbeat(self, worker_id: int, dp_rank: int, kv_seq: int) -> None:
        """A publisher announced its last seq; batches up to it that never came are a gap."""
        key = (worker_id, dp_rank)
        st = self._state(key)
        if not self.recovery:
            if kv_seq >= st.expected:
                self._count_unprotected_gap(key, st, kv_seq + 1)
            return
        if kv_seq >= st.expected and not st.replay_outstanding:
            self._ask(key, st)

    def on_replay(self, reply: ReplayReplyMsg) -> None:
        key = (reply.worker_id, reply.dp_rank)
        st = self._state(key)
        st.replay_outstanding = False
        snap = reply.snapshot
        # A snapshot older than what was applied meanwhile (the missing batches arrived late,
        # after all) would roll the slot back: ignore it.
        if snap is not None and snap.last_seq >= st.expected:
            self.stats.resyncs += 1
            self._resync(reply.worker_id, reply.dp_rank, snap)
            st.expected = snap.last_seq + 1
            for seq in [s for s in st.held if s <= snap.last_seq]:
                del st.held[seq]
        for b in reply.batches:
            self.stats.batches_replayed += 1
            if b.seq == st.expected:
                st.held.pop(b.seq, None)
                self._apply_one(st, b)
                self._drain(key, st)
        if st.held:
            self._ask(key, st)  # the reply did not close every gap (later batches were lost too)

    # ------------------------------------------------------------------ internals

    def _apply_one(self, st: _SlotState, batch: KvBatchMsg) -> None:
        st.expected = batch.seq + 1
        self.stats.batches_applied += 1
        self._apply(batch)

    def _drain(self, key: SlotKey, st: _SlotState) -> None:
        held = st.held
        while st.expected in held:
            self._apply_one(st, held.pop(st.expected))

    def _ask(self, key: SlotKey, st: _SlotState) -> None:
        if st.replay_outstanding:
            return
        st.replay_outstanding = True
        self.stats.gaps_detected += 1
        self.stats.replay_requests += 1
        self._request(key[0], key[1], st.expected)

    def _unprotected(self, key: SlotKey, st: _SlotState, batch: KvBatchMsg) -> None:
        seen = self._seen.setdefault(key, set())
        if batch.seq in seen:
            self.stats.duplicates_dropped += 1
            return
        seen.add(batch.seq)
        if batch.seq >= st.expected:
            self._count_unprotected_gap(key, st, batch.seq)
            st.expected = batch.seq + 1
        else:
            self.stats.batches_missing -= 1  # a late batch fills part of an earlier gap
        self.stats.batches_applied += 1
        self._apply(batch)

    def _count_unprotected_gap(self, key: SlotKey, st: _SlotState, upto: int) -> None:
        """Seqs expected..upto-1 were skipped (recovery off): count them once."""
        if upto > st.expected:
            self.stats.gaps_detected += 1
            self.stats.batches_missing += upto - st.expected
            st.expected = upto
