"""KV event intake: per-publisher sequencing (gaps, duplicates, late arrivals) and the feed.

Every publisher slot `(worker_id, dp_rank)` numbers its KV events 0, 1, 2, ... with no
gaps (`actors/engine/events.py`). The subscriber keeps the next expected id and the
set of ids it skipped:

- `event_id == expected`: in order; apply.
- `event_id > expected`: a gap; ids `expected..event_id-1` become *missing*; apply
  (the reference indexer applies what it gets; the host may ask the publisher's replay
  buffer for the missing ids, see `take_gap_reports`).
- `event_id < expected` and missing: a late (reordered or replayed) event; apply, and
  the id is no longer missing.
- otherwise: a duplicate; drop it.

`resync(worker_id, dp_rank, next_id)` restarts a slot after a full resync from a
publisher snapshot: ids below `next_id` count as delivered (the snapshot covers them),
so the slot's missing ids are forgotten and `next_id` is expected next.

Invariant: for each slot, every id below `expected` is either delivered once (or
covered by the slot's last resync snapshot) or in `missing`.

`EventFeed` is the path from arrival to the index that `KvRouter` drives: it holds
events for the event lag, sequences them on release (above; events of unregistered
slots are counted and dropped), and applies the accepted ones to a `PrefixIndex`.
With lag L, an event with time t is released at the first `push`/`push_many`/`release`
whose `now_ms >= t + L`; events released together go in (t + L, arrival) order.
`push_many(events, now)` is exactly `push(e, now)` for each event, in order.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from actors.engine.events import KvEvent
from router.index import PrefixIndex

SlotKey = tuple[int, int]

MAX_UNDRAINED_GAP_REPORTS = 4096
"""Gap reports kept until `take_gap_reports`; older ones are dropped (the counters still count
them), so a host that recovers at the batch level and never drains them holds bounded memory."""


class Delivery(Enum):
    """What `EventSequencer.accept` decided about one event."""

    IN_ORDER = "in_order"
    GAP = "gap"
    """Applied, but earlier ids were skipped."""
    LATE = "late"
    """Applied; it fills an earlier gap."""
    DUPLICATE = "duplicate"
    """Already delivered: drop it."""


@dataclass(frozen=True, slots=True)
class GapReport:
    """Ids `first..last` (inclusive) of a slot were skipped when `seen` arrived."""

    worker_id: int
    dp_rank: int
    first: int
    last: int
    seen: int


class EventSequencer:
    """Tracks expected event ids per slot and counts gaps, duplicates and late events."""

    __slots__ = ("expected", "_ranks_of", "_missing", "_reports", "num_gaps", "num_duplicates", "num_late",
                 "keep_reports")

    def __init__(self) -> None:
        self.expected: dict[SlotKey, int] = {}
        """Next expected id per registered slot. Read-only for callers, except the documented
        fast path: a caller that sees `event_id == expected[key]` may store `event_id + 1`
        itself instead of calling `accept` (same effect, no call overhead)."""
        self._ranks_of: dict[int, int] = {}
        """worker id -> its registered dp_size (its slots are (worker, 0..dp_size-1))."""
        self._missing: dict[SlotKey, set[int]] = {}
        self._reports: deque[GapReport] = deque(maxlen=MAX_UNDRAINED_GAP_REPORTS)
        self.num_gaps = 0
        """Gap occurrences (each jump forward counts once, whatever its width)."""
        self.num_duplicates = 0
        self.num_late = 0
        self.keep_reports = True
        """False when a stream layer upstream already detects and repairs gaps (the cluster's
        event plane, `cluster.plane.recovery`): gaps are then only counted, never reported."""

    def accept(self, worker_id: int, dp_rank: int, event_id: int) -> Delivery:
        """Classify one arriving event and update the slot's state."""
        key = (worker_id, dp_rank)
        expected = self.expected.get(key, 0)
        if event_id == expected:
            self.expected[key] = expected + 1
            return Delivery.IN_ORDER
        if event_id > expected:
            self._missing.setdefault(key, set()).update(range(expected, event_id))
            self.expected[key] = event_id + 1
            self.num_gaps += 1
            if self.keep_reports:
                self._reports.append(GapReport(worker_id, dp_rank, expected, event_id - 1, event_id))
            return Delivery.GAP
        missing = self._missing.get(key)
        if missing is not None and event_id in missing:
            missing.discard(event_id)
            if not missing:
                del self._missing[key]
            self.num_late += 1
            return Delivery.LATE
        self.num_duplicates += 1
        return Delivery.DUPLICATE

    def register(self, worker_id: int, dp_size: int) -> None:
        """Expect ids from 0 for ranks 0..dp_size-1 of a worker (forgetting any old state)."""
        self.reset(worker_id)
        self._ranks_of[worker_id] = dp_size
        for r in range(dp_size):
            self.expected[(worker_id, r)] = 0

    def resync(self, worker_id: int, dp_rank: int, next_event_id: int) -> None:
        """Expect `next_event_id` next on a registered slot and forget its missing ids.

        Lower ids arriving later are duplicates. `next_event_id` may be below the current
        expected id (an older snapshot): ids from it on are then delivered again. Gap
        reports already recorded stay (and so do the counters).

        Raises:
            KeyError: if the slot is not registered.
        """
        key = (worker_id, dp_rank)
        if key not in self.expected:
            raise KeyError(f"slot (worker {worker_id}, rank {dp_rank}) is not registered")
        self.expected[key] = next_event_id
        self._missing.pop(key, None)

    def is_registered(self, worker_id: int, dp_rank: int) -> bool:
        """Whether the slot was registered (events of other slots are not sequenced)."""
        return (worker_id, dp_rank) in self.expected

    def reset(self, worker_id: int) -> None:
        """Forget every rank of a worker (removed, or restarted with ids from 0). Only `register`
        adds slots, so the worker's slots are its registered ranks (no scan of every slot: a
        fleet of N workers registers in O(N))."""
        for r in range(self._ranks_of.pop(worker_id, 0)):
            key = (worker_id, r)
            self.expected.pop(key, None)
            self._missing.pop(key, None)

    def missing(self, worker_id: int, dp_rank: int) -> list[int]:
        """Ids of the slot not yet delivered, ascending."""
        return sorted(self._missing.get((worker_id, dp_rank), ()))

    @property
    def num_missing(self) -> int:
        """Ids currently missing over all slots."""
        return sum(len(m) for m in self._missing.values())

    def take_gap_reports(self) -> list[GapReport]:
        """Drain the gap reports recorded since the last call (for replay requests or resync); at
        most the newest `MAX_UNDRAINED_GAP_REPORTS`."""
        out = list(self._reports)
        self._reports.clear()
        return out


class EventFeed:
    """KV events on their way into a `PrefixIndex`: lag holding, sequencing, application.

    Held events sit in a heap of `(due_ms, arrival seq, events)` entries. An entry holds
    events with the same due time and consecutive arrival seqs (a batch's events share
    their pass's `t_ms`), so releasing it whole keeps the (due, arrival) order.
    """

    __slots__ = (
        "sequencer",
        "_expected",
        "_index",
        "_lag",
        "_use_events",
        "_held",
        "_held_seq",
        "num_held",
        "num_applied",
        "num_unknown",
        "num_ignored",
    )

    def __init__(self, index: PrefixIndex, lag_ms: float, use_events: bool) -> None:
        """
        Args:
            index: where accepted events are applied.
            lag_ms: events are held until `t_ms + lag_ms` (none held when <= 0).
            use_events: False drops every event (counted in `num_ignored`).
        """
        self.sequencer = EventSequencer()
        """Register slots here; events of unregistered slots are dropped."""
        self._expected = self.sequencer.expected
        self._index = index
        self._lag = lag_ms
        self._use_events = use_events
        self._held: list[tuple[float, int, Sequence[KvEvent]]] = []
        self._held_seq = 0
        self.num_held = 0
        """Events currently held by the lag."""
        self.num_applied = 0
        """Events applied to the index."""
        self.num_unknown = 0
        """Events (and resyncs) of unregistered slots, dropped."""
        self.num_ignored = 0
        """Events (and resyncs) dropped because `use_events` is off."""

    def push(self, event: KvEvent, now_ms: float) -> None:
        """An event arrives at `now_ms`: hold it for the lag, and release what is due."""
        if self._lag > 0.0:
            heapq.heappush(self._held, (event.t_ms + self._lag, self._held_seq, (event,)))
            self._held_seq += 1
            self.num_held += 1
            self.release(now_ms)
            return
        if not self._use_events:
            self.num_ignored += 1
            return
        # `_deliver_many` for one event, inlined: the per-event path is hot too.
        key = (event.worker_id, event.dp_rank)
        expected = self._expected.get(key)
        if expected is None:
            self.num_unknown += 1
            return
        eid = event.event_id
        if eid == expected:  # in-order fast path (see EventSequencer.expected)
            self._expected[key] = eid + 1
        elif self.sequencer.accept(key[0], key[1], eid) is Delivery.DUPLICATE:
            return
        self.num_applied += 1
        self._index.apply_many((event,))

    def push_many(self, events: Sequence[KvEvent], now_ms: float) -> None:
        """A batch arrives at `now_ms`: exactly `push(e, now_ms)` for each event, in order."""
        if not events:
            return
        lag = self._lag
        if lag <= 0.0:
            self._deliver_many(events)
            return
        self.push(events[0], now_ms)
        # Now every held event is due after now_ms, so `push` would release each later
        # event at once iff it is itself due: deliver those directly, in order, and hold
        # the others, grouping runs of equal due time into one heap entry.
        held = self._held
        due: list[KvEvent] = []
        group: list[KvEvent] = []
        group_t = 0.0
        seq = self._held_seq
        for i in range(1, len(events)):
            event = events[i]
            t = event.t_ms + lag
            if t <= now_ms:
                due.append(event)
                group = []  # keep each group's arrival seqs consecutive
            elif group and t == group_t:
                group.append(event)
            else:
                group = [event]
                group_t = t
                heapq.heappush(held, (t, seq, group))
            seq += 1
        self.num_held += len(events) - 1 - len(due)
        self._held_seq = seq
        if due:
            self._deliver_many(due)

    def release(self, now_ms: float) -> None:
        """Deliver every held event due at `now_ms`, in (due, arrival) order."""
        held = self._held
        if held and held[0][0] <= now_ms:
            due: list[KvEvent] = []
            while held and held[0][0] <= now_ms:
                due.extend(heapq.heappop(held)[2])
            self.num_held -= len(due)
            self._deliver_many(due)

    def next_due_ms(self) -> float | None:
        """When the next held event becomes due; None if none is held."""
        return self._held[0][0] if self._held else None

    def peek_held(self) -> list[tuple[float, KvEvent]]:
        """Held events with their due times, in release order (for tests and debugging)."""
        return [(t, e) for t, _, events in sorted(self._held, key=lambda x: x[:2]) for e in events]

    def resync(self, worker_id: int, dp_rank: int, block_hashes: Sequence[int], next_event_id: int) -> None:
        """Install a slot snapshot now: the index slot holds exactly `block_hashes` (as roots)
        and the sequencer expects `next_event_id` next (see `EventSequencer.resync`).

        Dropped and counted like an event when `use_events` is off or the slot is unregistered.
        """
        if not self._use_events:
            self.num_ignored += 1
        elif not self.sequencer.is_registered(worker_id, dp_rank):
            self.num_unknown += 1
        else:
            self.sequencer.resync(worker_id, dp_rank, next_event_id)
            self._index.replace_slot(worker_id, dp_rank, block_hashes)

    def check_invariants(self) -> None:
        """Raise AssertionError if the held count or the heap's seqs are off."""
        assert self.num_held == sum(len(events) for _, _, events in self._held) >= 0
        assert all(seq < self._held_seq and events for _, seq, events in self._held)

    def _deliver_many(self, events: Sequence[KvEvent]) -> None:
        """Sequence released events in order and apply the accepted ones to the index.

        Sequencing never looks at the index and the index never at the sequencer, so
        sequencing the whole batch first and then applying it equals doing both per event.
        """
        if not self._use_events:
            self.num_ignored += len(events)
            return
        expected_of = self._expected
        accepted: list[KvEvent] = []
        unknown = 0
        for event in events:
            key = (event.worker_id, event.dp_rank)
            expected = expected_of.get(key)
            if expected is None:
                unknown += 1
                continue
            eid = event.event_id
            if eid == expected:
                expected_of[key] = eid + 1
            elif self.sequencer.accept(key[0], key[1], eid) is Delivery.DUPLICATE:
                continue
            accepted.append(event)
        self.num_unknown += unknown
        self.num_applied += len(accepted)
        self._index.apply_many(accepted)
