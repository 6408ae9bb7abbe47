"""Per-publisher event sequence tracking: gap, duplicate and late-arrival detection.

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

Invariant: for each slot, every id below `expected` is either delivered once or in
`missing`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

SlotKey = tuple[int, int]


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

    __slots__ = ("expected", "_missing", "_reports", "num_gaps", "num_duplicates", "num_late")

    def __init__(self) -> None:
        self.expected: dict[SlotKey, int] = {}
        """Next expected id per registered slot. Read-only for callers, except the documented
        fast path: a caller that sees `event_id == expected[key]` may store `event_id + 1`
        itself instead of calling `accept` (same effect, no call overhead)."""
        self._missing: dict[SlotKey, set[int]] = {}
        self._reports: list[GapReport] = []
        self.num_gaps = 0
        """Gap occurrences (each jump forward counts once, whatever its width)."""
        self.num_duplicates = 0
        self.num_late = 0

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
        for r in range(dp_size):
            self.expected[(worker_id, r)] = 0

    def is_registered(self, worker_id: int, dp_rank: int) -> bool:
        """Whether the slot was registered (events of other slots are not sequenced)."""
        return (worker_id, dp_rank) in self.expected

    def reset(self, worker_id: int) -> None:
        """Forget every rank of a worker (removed, or restarted with ids from 0)."""
        for key in [k for k in self.expected if k[0] == worker_id]:
            del self.expected[key]
            self._missing.pop(key, None)

    def missing(self, worker_id: int, dp_rank: int) -> list[int]:
        """Ids of the slot not yet delivered, ascending."""
        return sorted(self._missing.get((worker_id, dp_rank), ()))

    @property
    def num_missing(self) -> int:
        """Ids currently missing over all slots."""
        return sum(len(m) for m in self._missing.values())

    def take_gap_reports(self) -> list[GapReport]:
        """Drain the gap reports recorded since the last call (for replay requests or resync)."""
        out, self._reports = self._reports, []
        return out
