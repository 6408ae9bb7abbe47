"""Garbage-collector settings for a run: fewer, cheaper collections; nothing else changes.

A run keeps millions of long-lived container objects (records, KV state, hash chains), and
CPython's default thresholds (700, 10, 10) re-traverse them in full collections that cost a
quarter of a Mooncake replay's CPU. `fewer_collections` freezes what exists when the run
starts (the workload, the built world: they live to its end) and raises the thresholds while
it runs; cyclic garbage is still collected, only less often. Reports cannot depend on it:
no simulation object has a finalizer, and collection order is not observable by the sim.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

RUN_THRESHOLDS = (20_000, 20, 100)
"""gen0 allocations, gen0 collections per gen1, gen1 collections per full collection."""


_depth = 0
"""How many `fewer_collections` blocks are open (the outermost one unfreezes)."""


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Within the block: the objects alive at entry are frozen (never traversed) and the
    thresholds are `RUN_THRESHOLDS`. A nested block freezes what was built since (the
    loaded world, when a command wraps the runtime's block); the outermost one restores the
    thresholds and unfreezes at exit."""
    global _depth
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*RUN_THRESHOLDS)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        gc.set_threshold(*before)
        if _depth == 0:
            gc.unfreeze()
