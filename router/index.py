"""Prefix index over KV block sequence hashes, fed only by KV events.

The index holds, for every publisher *slot* `(worker_id, dp_rank)`, the set of block
sequence hashes that publisher announced as stored and has not removed since.
`find_matches(h_0..h_{n-1})` returns, per slot, the largest `k` such that the slot
holds `h_0..h_{k-1}` (the number of leading query blocks it could reuse).

Operations
- `apply(event)` / `apply_many(events)` / `apply_stored` / `apply_removed` / `clear`:
  event semantics below; `apply_many` is `apply` on each event in order, in one loop.
- `replace_slot(worker_id, dp_rank, block_hashes)`: make a slot hold exactly the given
  blocks, as roots (a full resync from a publisher snapshot).
- `remove_worker(worker_id)`: drop every rank of a worker and free its slots.
- `find_matches(block_hashes, early_exit=False)` -> `OverlapScores`.
- `match_depths(block_hashes)` -> `(slots, depths)` numpy arrays, for the router's
  vectorized scoring (no per-slot Python work for slots that match nothing).
- `router.dump.dump_events(index)`: `KvEvent`s that rebuild this exact state in an empty index.

Representation (see `router.bitsets`): each slot owns one bit; `_masks[h]` is the
bitmask of slots holding `h`; `_held[slot]` maps each hash the slot holds to its
*record*: `(parent_hash, block_hashes, token_hashes)` of the Stored event that made the
slot hold it (first time; the block's parent and token hash follow from its position),
or None for a block set by `replace_slot` (a root with token hash 0). A record is shared
by all the blocks of its event, so storing a block allocates nothing but dict entries.
Mask updates are idempotent (OR to store, AND-NOT to remove), and a block that is
stored again by a slot that holds it is skipped, so the hot loop needs one lookup in
the slot's dict and one read and one write of `_masks` per block.
Invariant (`check_invariants`): bit `s` of `_masks[h]` is set iff `h in _held[s]`,
and no mask is zero.

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
  reference's matching except for that detachment artifact. For the same reason a
  block needs no parent to be matched, which is what lets `replace_slot` store a
  snapshot's blocks as roots.
- The reference's `Cleared` clears every dp rank of the worker; the engine events
  here are per rank (`actors/engine/events.py`), so `Cleared` clears one slot.
  `clear(worker_id)` without a rank clears all ranks, like the reference.
- `OverlapScores.frequencies` are per-depth holder counts (how many slots hold the
  first d+1 query blocks), not the reference's time-windowed traversal counts.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from actors.engine.events import KvCleared, KvEvent, KvRemoved, KvStored
from router.bitsets import IntArray, decode_runs, iter_bits, leading_runs

SlotKey = tuple[int, int]
"""(worker_id, dp_rank)."""

Record = tuple[int | None, tuple[int, ...], tuple[int, ...]] | None
"""What a slot recorded for a held block: `(parent_hash, block_hashes, token_hashes)` of the
Stored that added it (one tuple per event, shared by its blocks; not the event itself,
which may carry token ids), or None for a root."""

_ABSENT = object()
"""`dict.pop` default that no held block maps to (records may be None)."""

ObjectArray = npt.NDArray[np.object_]


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
        "_arrays",
        "_masks",
        "num_skipped_stored",
        "num_ignored_removed",
    )

    def __init__(self) -> None:
        self._slot_of: dict[SlotKey, int] = {}
        self._key_of: list[SlotKey | None] = []
        self._bit_of: list[int] = []
        self._inv_of: list[int] = []
        self._held: list[dict[int, Record]] = []
        """Per slot: held block hash -> its record. A slot's dict object is never replaced."""
        self._free_slots: list[int] = []
        """Min-heap of freed slot indices; the lowest is reused first (deterministic)."""
        self._arrays: tuple[ObjectArray, ObjectArray] | None = None
        """`_key_of` and `_held` as object arrays, for bulk gathers; rebuilt after slot changes."""
        self._masks: dict[int, int] = {}
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
            self._held.append({})
        self._slot_of[key] = s
        self._arrays = None
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
        self.apply_many((event,))

    def apply_many(self, events: Iterable[KvEvent]) -> None:
        """Apply KV events in order: the same as `apply` on each, in one loop.

        A Removed of one block (engines evict block by block: most events) is handled
        inline; Stored events go through `_store`, the rest through `apply_removed`/`clear`.
        """
        slot_of = self._slot_of
        held_of = self._held
        bit_of = self._bit_of
        masks = self._masks
        absent = _ABSENT
        for event in events:
            data = event.data
            if type(data) is KvRemoved:
                hashes = data.block_hashes
                s = slot_of.get((event.worker_id, event.dp_rank))
                if s is None or len(hashes) != 1:
                    self.apply_removed(event.worker_id, event.dp_rank, hashes)
                    continue
                h = hashes[0]
                if held_of[s].pop(h, absent) is absent:
                    self.num_ignored_removed += 1
                    continue
                m = masks[h]
                if m == bit_of[s]:  # sole holder (the common case): no big-int arithmetic
                    del masks[h]
                else:  # other holders remain, so the result is nonzero
                    masks[h] = m & self._inv_of[s]
            elif type(data) is KvStored:
                s = slot_of.get((event.worker_id, event.dp_rank))
                if s is None:
                    s = self.slot(event.worker_id, event.dp_rank)
                self._store(s, (data.parent_hash, data.block_hashes, data.token_hashes))
            else:
                self._apply_other(event)

    def _apply_other(self, event: KvEvent) -> None:
        """`apply` for Cleared, and for subclasses of the event data types."""
        data = event.data
        if isinstance(data, KvStored):
            rec = (data.parent_hash, data.block_hashes, data.token_hashes)
            self._store(self.slot(event.worker_id, event.dp_rank), rec)
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
        """Add a chain of blocks to a slot. Returns False (and skips it) if the parent is unknown.

        `token_hashes` default to 0 (they only matter to `router.dump`).
        """
        tokens = tuple(token_hashes) if token_hashes is not None else (0,) * len(block_hashes)
        return self._store(self.slot(worker_id, dp_rank), (parent_hash, tuple(block_hashes), tokens))

    def _store(self, s: int, rec: tuple[int | None, tuple[int, ...], tuple[int, ...]]) -> bool:
        held = self._held[s]
        parent = rec[0]
        if parent is not None and parent not in held:
            self.num_skipped_stored += 1
            return False
        bit = self._bit_of[s]
        masks = self._masks
        get = masks.get
        for h in rec[1]:
            if h in held:  # already held (its mask has the bit); keep the first record
                continue
            held[h] = rec
            m = get(h)
            masks[h] = bit if m is None else m | bit  # a first holder shares the preallocated bit
        return True

    def apply_removed(self, worker_id: int, dp_rank: int, block_hashes: Sequence[int]) -> int:
        """Drop blocks from a slot; returns how many of them the slot did not hold (ignored).

        A hash listed twice is dropped once and ignored once.
        """
        s = self._slot_of.get((worker_id, dp_rank))
        if s is None:
            self.num_ignored_removed += len(block_hashes)
            return len(block_hashes)
        held = self._held[s]
        bit = self._bit_of[s]
        inv = self._inv_of[s]
        masks = self._masks
        ignored = 0
        for h in block_hashes:
            if held.pop(h, _ABSENT) is _ABSENT:
                ignored += 1
                continue
            m = masks[h]
            if m == bit:
                del masks[h]
            else:
                masks[h] = m & inv
        self.num_ignored_removed += ignored
        return ignored

    def clear(self, worker_id: int, dp_rank: int | None = None) -> None:
        """Drop every block of one rank, or of all ranks of the worker when `dp_rank` is None.

        The slots stay allocated (the worker is still known, with nothing cached).
        """
        for key in self._keys_of_worker(worker_id, dp_rank):
            self._clear_slot(self._slot_of[key])

    def replace_slot(self, worker_id: int, dp_rank: int, block_hashes: Iterable[int]) -> None:
        """Make a slot hold exactly `block_hashes` (allocating the slot if new).

        Every block becomes a root (parent None, token hash 0): matching is by sequence
        hash, which fixes the whole prefix, so no parent is needed. Blocks the slot held
        before keep nothing of their old record. Unlike events, this skips nothing.
        """
        s = self.slot(worker_id, dp_rank)
        held = self._held[s]
        new: dict[int, Record] = dict.fromkeys(block_hashes)
        self.apply_removed(worker_id, dp_rank, [h for h in held if h not in new])  # all held: none ignored
        bit = self._bit_of[s]
        get = self._masks.get
        for h in new:
            if h not in held:
                m = get(h)
                self._masks[h] = bit if m is None else m | bit
        held.clear()
        held.update(new)

    def remove_worker(self, worker_id: int) -> None:
        """Drop every rank of a worker and free its slots for reuse."""
        for key in self._keys_of_worker(worker_id, None):
            s = self._slot_of.pop(key)
            self._clear_slot(s)
            self._key_of[s] = None
            self._arrays = None
            heapq.heappush(self._free_slots, s)

    def _keys_of_worker(self, worker_id: int, dp_rank: int | None) -> list[SlotKey]:
        if dp_rank is not None:
            return [(worker_id, dp_rank)] if (worker_id, dp_rank) in self._slot_of else []
        return sorted(k for k in self._slot_of if k[0] == worker_id)

    def _clear_slot(self, s: int) -> None:
        bit = self._bit_of[s]
        masks = self._masks
        held = self._held[s]
        for h in held:
            m = masks[h] ^ bit
            if m:
                masks[h] = m
            else:
                del masks[h]
        held.clear()  # in place: `_arrays` refers to the same dict

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
        key_arr, held_arr = self._slot_arrays()
        keys = key_arr[slots].tolist()  # gathers at C speed (matched slots are live)
        out.scores = dict(zip(keys, ds.tolist()))
        out.tree_sizes = dict(zip(keys, map(len, held_arr[slots].tolist())))
        return out

    def _slot_arrays(self) -> tuple[ObjectArray, ObjectArray]:
        if self._arrays is None:  # fromiter: np.array would unpack the key tuples
            n = len(self._key_of)
            self._arrays = (
                np.fromiter(self._key_of, dtype=object, count=n),
                np.fromiter(self._held, dtype=object, count=n),
            )
        return self._arrays

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

    def slot_records(self) -> list[tuple[SlotKey, dict[int, Record]]]:
        """Every slot (sorted by key) with its held blocks' records (read-only use: `router.dump`)."""
        return [(key, self._held[self._slot_of[key]]) for key in sorted(self._slot_of)]

    def check_invariants(self) -> None:
        """Raise AssertionError if the masks and the per-slot dicts disagree."""
        expected: dict[int, int] = {}
        for key, s in self._slot_of.items():
            assert self._key_of[s] == key, (key, s)
            for h in self._held[s]:
                expected[h] = expected.get(h, 0) | self._bit_of[s]
        for s in self._free_slots:
            assert self._key_of[s] is None and not self._held[s], s
        if self._arrays is not None:
            assert self._arrays[0].tolist() == self._key_of
            assert all(a is b for a, b in zip(self._arrays[1].tolist(), self._held, strict=True))
        assert expected == self._masks, "mask/held mismatch"
        assert all(m != 0 for m in self._masks.values())
        for m in self._masks.values():
            for s in iter_bits(m):
                assert self._key_of[s] is not None

