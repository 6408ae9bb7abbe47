"""Prefix index over KV block sequence hashes, fed only by KV events.

The index holds, for every publisher *slot* `(worker_id, dp_rank)`, the set of block
sequence hashes that publisher announced as stored and has not removed since.
`find_matches(h_0..h_{n-1})` returns, per slot, the largest `k` such that the slot
holds `h_0..h_{k-1}` (the number of leading query blocks it could reuse).

Operations
- `apply(event)` / `apply_stored` / `apply_removed` / `clear`: event semantics below.
- `remove_worker(worker_id)`: drop every rank of a worker and free its slots.
- `find_matches(block_hashes, early_exit=False)` -> `OverlapScores`.
- `match_depths(block_hashes)` -> `(slots, depths)` numpy arrays, for the router's
  vectorized scoring (no per-slot Python work for slots that match nothing).
- `dump_events()`: a list of `KvEvent`s that rebuilds this exact state in an empty index.

Representation (see `router.bitsets`): each slot owns one bit; `_masks[h]` is the
bitmask of slots holding `h`; `_held[slot]` is the set of hashes the slot holds
(updated in bulk, at C speed); `_meta[h] = (parent_hash, token_hash)` as first
stored, kept while any slot holds `h` (a sequence hash determines its parent, so one
entry serves all slots).
Mask updates are idempotent (OR to store, AND-NOT to remove), so the hot loop needs
one dict read and one write per block. Invariant (`check_invariants`): bit `s` of
`_masks[h]` is set iff `h in _held[s]`, no mask is zero, and `_meta` has exactly
the keys of `_masks`.

Event semantics. They follow the reference indexer (Dynamo `lib/kv-router`
`radix_tree.rs`, `RadixTree::apply_event`), applied in delivery order:
- Stored, `parent_hash is None`: every block is added (already-held blocks are a
  no-op, so duplicated Stored events are harmless).
- Stored whose `parent_hash` the slot does not hold: the WHOLE event is skipped, as
  the reference does (`ParentBlockNotFound`); `apply_stored` returns False and
  `num_skipped_stored` counts it. Within one event, block i's parent is block i-1.
- Removed: each held block is dropped; blocks the slot does not hold are ignored
  individually (`num_ignored_removed`), the rest still apply.
- Cleared: drops every block of that (worker_id, dp_rank) slot.

Deliberate deviations from the reference (NOTE):
- The reference radix tree is keyed by local (content) hashes and, when no worker
  holds a node any more, detaches its children, so a worker that re-stores an evicted
  parent no longer matches its still-cached children until they are stored again.
  We index sequence hashes directly (a sequence hash fixes its whole prefix), so a
  slot matches block i iff it holds blocks 0..i. Under chained hashes this equals the
  reference's matching except for that detachment artifact.
- The reference's `Cleared` clears every dp rank of the worker; the engine events
  here are per rank (`actors/engine/events.py`), so `Cleared` clears one slot.
  `clear(worker_id)` without a rank clears all ranks, like the reference.
- `OverlapScores.frequencies` are per-depth holder counts (how many slots hold the
  first d+1 query blocks), not the reference's time-windowed traversal counts.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

from actors.engine.events import KvCleared, KvEvent, KvRemoved, KvStored
from router.bitsets import IntArray, decode_runs, iter_bits, leading_runs

SlotKey = tuple[int, int]
"""(worker_id, dp_rank)."""


@dataclass(slots=True)
class OverlapScores:
    """Result of `PrefixIndex.find_matches`.

    `scores[(worker_id, dp_rank)]` = leading blocks matched (only slots with >= 1);
    `frequencies[d]` = number of slots holding query blocks 0..d;
    `tree_sizes[(worker_id, dp_rank)]` = blocks that slot holds in total (scored slots only).
    """

    scores: dict[SlotKey, int] = field(default_factory=dict)
    frequencies: list[int] = field(default_factory=list)
    tree_sizes: dict[SlotKey, int] = field(default_factory=dict)


class PrefixIndex:
    """Per-slot sets of block sequence hashes with fast leading-prefix matching."""

    __slots__ = (
        "_slot_of",
        "_key_of",
        "_bit_of",
        "_inv_of",
        "_held",
        "_free_slots",
        "_masks",
        "_meta",
        "num_skipped_stored",
        "num_ignored_removed",
    )

    def __init__(self) -> None:
        self._slot_of: dict[SlotKey, int] = {}
        self._key_of: list[SlotKey | None] = []
        self._bit_of: list[int] = []
        self._inv_of: list[int] = []
        self._held: list[set[int]] = []
        self._free_slots: list[int] = []
        """Min-heap of freed slot indices; the lowest is reused first (deterministic)."""
        self._masks: dict[int, int] = {}
        self._meta: dict[int, tuple[int | None, int]] = {}
        """block hash -> (parent hash, token hash) as first stored."""
        self.num_skipped_stored = 0
        """Stored events skipped because the slot did not hold their parent."""
        self.num_ignored_removed = 0
        """Removed block hashes the slot did not hold."""

    # ----------------------------------------------------------------------------- slots

    @property
    def slot_capacity(self) -> int:
        """One past the highest slot index ever allocated (size for dense per-slot arrays)."""
        return len(self._key_of)

    def slot(self, worker_id: int, dp_rank: int) -> int:
        """The slot index of `(worker_id, dp_rank)`, allocating the lowest free one if new."""
        key = (worker_id, dp_rank)
        s = self._slot_of.get(key)
        if s is not None:
            return s
        if self._free_slots:
            s = heapq.heappop(self._free_slots)
            self._key_of[s] = key
        else:
            s = len(self._key_of)
            self._key_of.append(key)
            self._bit_of.append(1 << s)
            self._inv_of.append(~(1 << s))
            self._held.append(set())
        self._slot_of[key] = s
        return s

    def peek_slot(self, worker_id: int, dp_rank: int) -> int | None:
        """The slot index of `(worker_id, dp_rank)` if it exists; never allocates."""
        return self._slot_of.get((worker_id, dp_rank))

    def key_of(self, slot: int) -> SlotKey:
        """The `(worker_id, dp_rank)` of a live slot."""
        key = self._key_of[slot]
        if key is None:
            raise KeyError(f"slot {slot} is free")
        return key

    def slots(self) -> list[SlotKey]:
        """Live slot keys, sorted."""
        return sorted(self._slot_of)

    # ---------------------------------------------------------------------------- events

    def apply(self, event: KvEvent) -> None:
        """Apply one KV event (see the module docstring for the semantics)."""
        data = event.data
        if isinstance(data, KvStored):
            self.apply_stored(event.worker_id, event.dp_rank, data.parent_hash, data.block_hashes, data.token_hashes)
        elif isinstance(data, KvRemoved):
            self.apply_removed(event.worker_id, event.dp_rank, data.block_hashes)
        elif isinstance(data, KvCleared):
            self.clear(event.worker_id, event.dp_rank)
        else:  # pragma: no cover - exhaustive over KvEventData
            raise TypeError(f"unknown KV event data {data!r}")

    def apply_stored(
        self,
        worker_id: int,
        dp_rank: int,
        parent_hash: int | None,
        block_hashes: Sequence[int],
        token_hashes: Sequence[int] | None = None,
    ) -> bool:
        """Add a chain of blocks to a slot. Returns False (and skips it) if the parent is unknown."""
        s = self._slot_of.get((worker_id, dp_rank))
        if s is None:
            s = self.slot(worker_id, dp_rank)
        held = self._held[s]
        if parent_hash is not None and parent_hash not in held:
            self.num_skipped_stored += 1
            return False
        bit = self._bit_of[s]
        masks = self._masks
        get = masks.get
        meta = self._meta
        prev = parent_hash
        if token_hashes is None:
            token_hashes = (0,) * len(block_hashes)
        for h, th in zip(block_hashes, token_hashes):
            m = get(h)
            if m is None:
                masks[h] = bit  # shared preallocated int: no allocation for a first holder
                meta[h] = (prev, th)
            elif m != bit:
                masks[h] = m | bit
            prev = h
        held.update(block_hashes)
        return True

    def apply_removed(self, worker_id: int, dp_rank: int, block_hashes: Sequence[int]) -> int:
        """Drop blocks from a slot; returns how many of them the slot did not hold (ignored).

        `block_hashes` are assumed distinct (as engines emit them).
        """
        s = self._slot_of.get((worker_id, dp_rank))
        if s is None:
            self.num_ignored_removed += len(block_hashes)
            return len(block_hashes)
        held = self._held[s]
        n_before = len(held)
        held.difference_update(block_hashes)
        ignored = len(block_hashes) - (n_before - len(held))
        if ignored == len(block_hashes):
            self.num_ignored_removed += ignored
            return ignored
        inv = self._inv_of[s]
        bit = self._bit_of[s]
        masks = self._masks
        get = masks.get
        for h in block_hashes:
            m = get(h)
            if m is None:
                continue
            if m == bit:  # sole holder (the common case): no big-int arithmetic
                del masks[h]
                del self._meta[h]
                continue
            m &= inv
            if m:
                masks[h] = m
            else:
                del masks[h]
                del self._meta[h]
        self.num_ignored_removed += ignored
        return ignored

    def clear(self, worker_id: int, dp_rank: int | None = None) -> None:
        """Drop every block of one rank, or of all ranks of the worker when `dp_rank` is None.

        The slots stay allocated (the worker is still known, with nothing cached).
        """
        for key in self._keys_of_worker(worker_id, dp_rank):
            self._clear_slot(self._slot_of[key])

    def remove_worker(self, worker_id: int) -> None:
        """Drop every rank of a worker and free its slots for reuse."""
        for key in self._keys_of_worker(worker_id, None):
            s = self._slot_of.pop(key)
            self._clear_slot(s)
            self._key_of[s] = None
            heapq.heappush(self._free_slots, s)

    def _keys_of_worker(self, worker_id: int, dp_rank: int | None) -> list[SlotKey]:
        if dp_rank is not None:
            return [(worker_id, dp_rank)] if (worker_id, dp_rank) in self._slot_of else []
        return sorted(k for k in self._slot_of if k[0] == worker_id)

    def _clear_slot(self, s: int) -> None:
        bit = self._bit_of[s]
        masks = self._masks
        for h in self._held[s]:
            m = masks[h] ^ bit
            if m:
                masks[h] = m
            else:
                del masks[h]
                del self._meta[h]
        self._held[s] = set()

    # --------------------------------------------------------------------------- queries

    def find_matches(self, block_hashes: Sequence[int], early_exit: bool = False) -> OverlapScores:
        """Leading-prefix match of `block_hashes` against every slot.

        Args:
            block_hashes: the request's full-block sequence hashes, in order.
            early_exit: stop once a single slot still matches (reference semantics):
                that slot's score is the depth reached, others are exact.

        Returns:
            `OverlapScores` with an entry for every slot matching at least one block.
        """
        dropped, depths, counts = leading_runs(self._masks, block_hashes, early_exit)
        out = OverlapScores(frequencies=counts)
        if not dropped:
            return out
        slots, ds = decode_runs(dropped, depths, len(self._key_of))
        key_of = self._key_of
        held = self._held
        slot_list = slots.tolist()
        keys = [key_of[s] for s in slot_list]
        out.scores = dict(zip(keys, ds.tolist()))  # matched slots are live
        out.tree_sizes = dict(zip(keys, [len(held[s]) for s in slot_list]))
        return out

    def match_depths(self, block_hashes: Sequence[int]) -> tuple[IntArray, IntArray]:
        """`(slots, depths)`: slot indices matching >= 1 leading block and their match length."""
        dropped, depths, _ = leading_runs(self._masks, block_hashes)
        return decode_runs(dropped, depths, len(self._key_of))

    def held_blocks(self, worker_id: int, dp_rank: int) -> frozenset[int]:
        """The block hashes a slot holds (empty if the slot is unknown)."""
        s = self._slot_of.get((worker_id, dp_rank))
        return frozenset(self._held[s]) if s is not None else frozenset()

    def num_blocks(self) -> int:
        """Total (slot, block) entries held."""
        return sum(len(self._held[s]) for s in self._slot_of.values())

    def num_unique_blocks(self) -> int:
        """Distinct block hashes held by at least one slot."""
        return len(self._masks)

    # ------------------------------------------------------------------------------ dump

    def dump_events(self, t_ms: float = 0.0) -> list[KvEvent]:
        """Events that rebuild this exact state when applied, in order, to an empty index.

        One `KvStored` per held block; slots in sorted key order; within a slot, blocks by
        (depth, hash) where depth counts held ancestors along the recorded parents, so a block's
        parent is emitted before it. `parent_hash` is the recorded parent when the slot
        holds it (and it is shallower), else None. `event_id` counts from 0 per slot.
        """
        events: list[KvEvent] = []
        meta = self._meta
        for key in sorted(self._slot_of):
            held = self._held[self._slot_of[key]]
            depth: dict[int, int] = {}
            for h in held:
                path: list[int] = []
                on_path: set[int] = set()
                cur: int | None = h
                while cur is not None and cur in held and cur not in depth and cur not in on_path:
                    path.append(cur)
                    on_path.add(cur)
                    cur = meta[cur][0]
                d = depth[cur] + 1 if cur is not None and cur in depth else 0
                for node in reversed(path):
                    depth[node] = d
                    d += 1
            for eid, h in enumerate(sorted(held, key=lambda x: (depth[x], x))):
                p, th = meta[h]
                if p is None or p not in held or depth[p] >= depth[h]:
                    p = None
                events.append(KvEvent(t_ms, key[0], key[1], eid, KvStored(p, (h,), (th,))))
        return events

    def check_invariants(self) -> None:
        """Raise AssertionError if the masks and the per-slot sets disagree."""
        expected: dict[int, int] = {}
        for key, s in self._slot_of.items():
            assert self._key_of[s] == key, (key, s)
            for h in self._held[s]:
                expected[h] = expected.get(h, 0) | self._bit_of[s]
        for s in self._free_slots:
            assert self._key_of[s] is None and not self._held[s], s
        assert expected == self._masks, "mask/held mismatch"
        assert self._meta.keys() == self._masks.keys()
        assert all(m != 0 for m in self._masks.values())
        for m in self._masks.values():
            for s in iter_bits(m):
                assert self._key_of[s] is not None
