"""Slot bitsets: map block hashes to Python-int bitmasks of publisher slots.

Both the KV prefix index and the router's active-block tracker answer the same
question: "for each slot (one (worker_id, dp_rank) pair), how many leading blocks
of this query does it hold?". They store, per block hash, an int whose bit `s` is
set iff slot `s` holds the block. A query is then a walk over the query's hashes
that ANDs masks: O(len(query)) big-int operations of ceil(num_slots / 64) machine
words each, independent of how many slots hold nothing. Only slots that match at
least one block cost per-slot work (bit decoding), and above a small count that
decoding is done by numpy.

Invariant relied on by `leading_runs`: the walk's running mask only loses bits, so
every slot leaves it exactly once and its depth is the step at which it left.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]

_PY_DECODE_MAX_BITS = 24
"""Above this many set bits in total, decode with numpy instead of a Python loop."""


def leading_runs(
    masks: dict[int, int], block_hashes: Sequence[int], early_exit: bool = False
) -> tuple[list[int], list[int], list[int]]:
    """Walk `block_hashes` and report where slots drop out of the leading match.

    Args:
        masks: block hash -> bitmask of slots holding it.
        block_hashes: the query, in sequence order.
        early_exit: stop as soon as exactly one slot is still matching (the
            reference indexer's early exit); that slot gets the depth reached so far.

    Returns:
        `(dropped, depths, counts)`: `dropped[i]` is a nonzero bitmask of slots whose
        leading match is exactly `depths[i]` blocks (masks are disjoint; depths strictly
        increase); `counts[d]` is the number of slots that hold blocks 0..d (the
        per-depth holder counts, one entry per matched depth).
    """
    dropped: list[int] = []
    depths: list[int] = []
    counts: list[int] = []
    if not block_hashes:
        return dropped, depths, counts
    active = masks.get(block_hashes[0], 0)
    if not active:
        return dropped, depths, counts
    n_active = active.bit_count()
    counts.append(n_active)
    depth = 1
    if not (early_exit and n_active == 1):
        get = masks.get
        for h in block_hashes[1:]:
            nxt = active & get(h, 0)
            if nxt != active:
                dropped.append(active ^ nxt)
                depths.append(depth)
                active = nxt
                if not active:
                    return dropped, depths, counts
                n_active = active.bit_count()
            counts.append(n_active)
            depth += 1
            if early_exit and n_active == 1:
                break
    dropped.append(active)
    depths.append(depth)
    return dropped, depths, counts


def decode_runs(dropped: list[int], depths: list[int], num_bits: int) -> tuple[IntArray, IntArray]:
    """Turn `leading_runs` output into parallel arrays `(slots, depths)`, slots ascending per run.

    Args:
        dropped: disjoint slot bitmasks.
        depths: the depth of each mask.
        num_bits: an upper bound on the highest slot index + 1.
    """
    total = 0
    for m in dropped:
        total += m.bit_count()
    if total == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    if total <= _PY_DECODE_MAX_BITS:
        slots: list[int] = []
        ds: list[int] = []
        for m, d in zip(dropped, depths):
            while m:
                low = m & -m
                slots.append(low.bit_length() - 1)
                ds.append(d)
                m ^= low
        return np.asarray(slots, dtype=np.int64), np.asarray(ds, dtype=np.int64)
    shift = max(num_bits - 1, 7).bit_length()  # rows of 2**shift bits: split positions by shifting
    nbytes = 1 << (shift - 3)
    buf = b"".join([m.to_bytes(nbytes, "little") for m in dropped])
    # NOTE: flatnonzero over a bool view is ~10x faster than nonzero over uint8.
    pos = np.flatnonzero(np.unpackbits(np.frombuffer(buf, dtype=np.uint8), bitorder="little").view(np.bool_))
    return pos & ((1 << shift) - 1), np.asarray(depths, dtype=np.int64)[pos >> shift]


def iter_bits(mask: int) -> list[int]:
    """Indices of the set bits of `mask`, ascending."""
    out: list[int] = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out
