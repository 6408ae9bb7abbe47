"""Prefix index over KV block sequence hashes, fed only by KV events.

The index holds, for every publisher *slot* `(worker_id, dp_rank)`, the blocks that
publisher announced as stored, arranged as the reference indexer arranges them: a
compressed radix tree (`router.radix`, Dynamo 1.6.1 `RadixTree` semantics, keyed by
sequence hash). `find_matches(h_0..h_{n-1})` returns, per slot, how many leading query
blocks it matches walking the tree from the root: on event sequences an engine produces
that is the largest `k` such that the slot holds `h_0..h_{k-1}`; after interior removals,
re-stores and detached subtrees it is what the reference reports (see `router.radix`).

Operations
- `apply(event)` / `apply_many(events)` / `apply_stored` / `apply_removed` / `clear`:
  event semantics below; `apply_many` is `apply` on each event in order, in one loop.
- `replace_slot(worker_id, dp_rank, block_hashes)`: make a slot hold exactly the given
  blocks (a resync from a publisher snapshot; see its docstring).
- `remove_worker(worker_id)`: drop every rank of a worker and free its slots.
- `find_matches(block_hashes, early_exit=False)` -> `OverlapScores`.
- `match_depths(block_hashes)` -> `(slots, depths)` numpy arrays, for the router's
  vectorized scoring (no per-slot Python work for slots that match nothing).
- `router.dump.dump_events(index)`: `KvEvent`s that rebuild the matching state.

Representation: each slot owns one bit; tree nodes carry bitmasks of the slots covering
their edge, so a query is a walk over O(query blocks / edge length) nodes with big-int
ANDs, and only slots that drop out cost per-slot work (bit decoding, numpy above a few).
`_held[slot]` maps each block hash the slot holds to its tree node.
Invariant (`check_invariants`): every held hash is on the part of its node's edge that the
slot covers; no free slot's bit is set anywhere; cutoffs lie strictly inside their edge.

Event semantics (the reference's `RadixTree::apply_event`, in delivery order):
- Stored: added under its parent (`parent_hash` None: under the root). A parent the slot
  does not hold skips the WHOLE event (`ParentBlockNotFound`); so does a parent hash
  listed among the event's blocks (self reference). `apply_stored` returns False and
  `num_skipped_stored` counts both. Within one event, block i's parent is block i-1.
  Storing held blocks again is a no-op, so duplicated Stored events are harmless.
- Removed: each held block is dropped, truncating the slot's coverage of its edge there;
  blocks the slot does not hold are ignored individually (`num_ignored_removed`).
- Cleared: drops every block of that (worker_id, dp_rank) slot (1.6.1 clears one rank).
  `clear(worker_id)` without a rank clears all ranks (the reference's `clear_all_blocks`).

Deliberate deviations from the reference (NOTE):
- Edges are keyed by sequence hash, not token hash (the same tree under chained hashing;
  the router queries by sequence hash).
- `replace_slot` has no parents to go by (a snapshot lists hashes only): blocks the slot
  already held keep their place, new ones become root edges (matched only as a first block).
- `OverlapScores.frequencies` are per-depth counts of matching slots, not the reference's
  time-windowed traversal counts (empty there unless a window is configured).
- A freed slot is scrubbed from every node before reuse, so a new publisher never
  inherits stale coverage (the reference keys by worker id and never reuses one).
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from actors.engine.events import KvCleared, KvEvent, KvRemoved, KvStored
from router import radix, radix_node
from router.bitsets import IntArray, decode_runs
from router.radix_node import Node

SlotKey = tuple[int, int]
"""(worker_id, dp_rank)."""

ObjectArray = npt.NDArray[np.object_]


@dataclass(slots=True)
class OverlapScores:
    """Result of `PrefixIndex.find_matches`.

    `scores[(worker_id, dp_rank)]` = leading blocks matched (only slots with >= 1);
    `frequencies[d]` = number of slots matching more than d blocks;
    `tree_sizes[(worker_id, dp_rank)]` = blocks that slot holds in total (scored slots only).
    """

    scores: dict[SlotKey, int] = field(default_factory=dict)
    frequencies: list[int] = field(default_factory=list)
    tree_sizes: dict[SlotKey, int] = field(default_factory=dict)


class PrefixIndex:
    """Per-slot KV blocks in a compressed radix tree with the reference's matching."""

    __slots__ = (
        "_slot_of",
        "_key_of",
        "_held",
        "_free_slots",
        "_arrays",
        "_root",
        "num_skipped_stored",
        "num_ignored_removed",
    )

    def __init__(self) -> None:
        self._slot_of: dict[SlotKey, int] = {}
        self._key_of: list[SlotKey | None] = []
        self._held: list[dict[int, Node]] = []
        """Per slot: held block hash -> its tree node. A slot's dict object is never replaced."""
        self._free_slots: list[int] = []
        """Min-heap of freed slot indices; the lowest is reused first (deterministic)."""
        self._arrays: tuple[ObjectArray, ObjectArray] | None = None
        """`_key_of` and `_held` as object arrays, for bulk gathers; rebuilt after slot changes."""
        self._root = radix_node.new_root()
        self.num_skipped_stored = 0
        """Stored events skipped: unknown (or no longer covered) parent, or self reference."""
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
        """Apply KV events in order: the same as `apply` on each, in one loop."""
        slot_of = self._slot_of
        held_of = self._held
        root = self._root
        store = radix.store
        remove = radix.remove
        for event in events:
            data = event.data
            if type(data) is KvRemoved:
                s = slot_of.get((event.worker_id, event.dp_rank))
                if s is None:
                    self.num_ignored_removed += len(data.block_hashes)
                else:
                    self.num_ignored_removed += remove(held_of[s], s, data.block_hashes)
            elif type(data) is KvStored:
                s = slot_of.get((event.worker_id, event.dp_rank))
                if s is None:
                    s = self.slot(event.worker_id, event.dp_rank)
                if store(root, held_of, s, data.parent_hash, list(data.block_hashes)):
                    self.num_skipped_stored += 1
            else:
                self._apply_other(event)

    def _apply_other(self, event: KvEvent) -> None:
        """`apply` for Cleared, and for subclasses of the event data types."""
        data = event.data
        if isinstance(data, KvStored):
            self.apply_stored(event.worker_id, event.dp_rank, data.parent_hash, data.block_hashes)
        elif isinstance(data, KvRemoved):
            self.apply_removed(event.worker_id, event.dp_rank, data.block_hashes)
        elif isinstance(data, KvCleared):
            self.clear(event.worker_id, event.dp_rank)
        else:  # pragma: no cover - exhaustive over KvEventData
            raise TypeError(f"unknown KV event data {data!r}")

    def apply_stored(
        self, worker_id: int, dp_rank: int, parent_hash: int | None, block_hashes: Sequence[int]
    ) -> bool:
        """Add a chain of blocks to a slot. Returns False (and skips it) if the reference would."""
        s = self.slot(worker_id, dp_rank)
        if radix.store(self._root, self._held, s, parent_hash, list(block_hashes)):
            self.num_skipped_stored += 1
            return False
        return True

    def apply_removed(self, worker_id: int, dp_rank: int, block_hashes: Sequence[int]) -> int:
        """Drop blocks from a slot; returns how many of them the slot did not hold (ignored)."""
        s = self._slot_of.get((worker_id, dp_rank))
        ignored = len(block_hashes) if s is None else radix.remove(self._held[s], s, block_hashes)
        self.num_ignored_removed += ignored
        return ignored

    def clear(self, worker_id: int, dp_rank: int | None = None) -> None:
        """Drop every block of one rank, or of all ranks of the worker when `dp_rank` is None.

        The slots stay allocated (the worker is still known, with nothing cached).
        """
        for key in self._keys_of_worker(worker_id, dp_rank):
            s = self._slot_of[key]
            radix.drop_slot(self._held[s], s)

    def replace_slot(self, worker_id: int, dp_rank: int, block_hashes: Iterable[int]) -> None:
        """Make a slot hold exactly `block_hashes` (allocating the slot if new).

        Blocks the slot holds and the snapshot lists stay where they are; the others are
        removed (one Removed of them, in hash order); snapshot blocks it did not hold are
        stored as single-block root edges, in the given order (a snapshot has no parents).
        Unlike events, this skips nothing.
        """
        s = self.slot(worker_id, dp_rank)
        held = self._held[s]
        new = dict.fromkeys(block_hashes)
        gone = sorted(h for h in held if h not in new)
        if gone:
            radix.remove(held, s, gone)
        for h in new:
            if h not in held:
                radix.store(self._root, self._held, s, None, [h])

    def remove_worker(self, worker_id: int) -> None:
        """Drop every rank of a worker and free its slots for reuse."""
        for key in self._keys_of_worker(worker_id, None):
            s = self._slot_of.pop(key)
            radix.drop_slot(self._held[s], s)
            radix.scrub_slot(self._root, self._held, s)
            self._key_of[s] = None
            self._arrays = None
            heapq.heappush(self._free_slots, s)

    def _keys_of_worker(self, worker_id: int, dp_rank: int | None) -> list[SlotKey]:
        if dp_rank is not None:
            return [(worker_id, dp_rank)] if (worker_id, dp_rank) in self._slot_of else []
        return sorted(k for k in self._slot_of if k[0] == worker_id)

    # --------------------------------------------------------------------------- queries

    def find_matches(self, block_hashes: Sequence[int], early_exit: bool = False) -> OverlapScores:
        """Leading-prefix match of `block_hashes` against every slot (the reference's walk).

        Args:
            block_hashes: the request's full-block sequence hashes, in order.
            early_exit: stop once a single slot still matches (reference semantics):
                that slot's score is the depth reached, others are exact.

        Returns:
            `OverlapScores` with an entry for every slot matching at least one block.
        """
        masks, depths = radix_node.walk(self._root, list(block_hashes), early_exit)
        out = OverlapScores()
        if not masks:
            return out
        slots, ds = decode_runs(masks, depths, len(self._key_of))
        key_arr, held_arr = self._slot_arrays()
        keys = key_arr[slots].tolist()  # gathers at C speed (matched slots are live)
        out.scores = dict(zip(keys, ds.tolist()))
        out.tree_sizes = dict(zip(keys, map(len, held_arr[slots].tolist())))
        counts = np.bincount(ds)[::-1].cumsum()[::-1]  # counts[d] = slots matching >= d blocks
        out.frequencies = counts[1:].tolist()
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
        masks, depths = radix_node.walk(self._root, list(block_hashes), False)
        return decode_runs(masks, depths, len(self._key_of))

    def held_blocks(self, worker_id: int, dp_rank: int) -> frozenset[int]:
        """The block hashes a slot holds (empty if the slot is unknown)."""
        s = self._slot_of.get((worker_id, dp_rank))
        return frozenset(self._held[s]) if s is not None else frozenset()

    def num_blocks(self) -> int:
        """Total (slot, block) entries held."""
        return sum(len(self._held[s]) for s in self._slot_of.values())

    def num_unique_blocks(self) -> int:
        """Distinct block hashes held by at least one slot."""
        return len(set().union(*(self._held[s] for s in self._slot_of.values())))

    def root(self) -> Node:
        """The tree's root (read-only use: `router.dump`)."""
        return self._root

    def check_invariants(self) -> None:
        """Raise AssertionError if the lookups and the tree disagree (see the module docstring)."""
        live = 0
        for key, s in self._slot_of.items():
            assert self._key_of[s] == key, (key, s)
            live |= 1 << s
            for h, node in self._held[s].items():
                k = len(node.edge) if node.full >> s & 1 else (node.cut or {}).get(s, 0)
                assert h in node.edge[:k], (key, h)
        for s in self._free_slots:
            assert self._key_of[s] is None and not self._held[s], s
        if self._arrays is not None:
            assert self._arrays[0].tolist() == self._key_of
            assert all(a is b for a, b in zip(self._arrays[1].tolist(), self._held, strict=True))
        stack = [self._root, *(n for lk in self._held for n in lk.values())]
        seen: set[int] = set()
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            assert node.full & ~live == 0, "a free slot's bit is set"
            for s, c in (node.cut or {}).items():
                assert 0 < c < len(node.edge) and not node.full >> s & 1 and live >> s & 1, (s, c)
            assert all(child.edge and child.edge[0] == h for h, child in node.children.items())
            stack.extend(node.children.values())
