"""Rebuilding a prefix index: the KV events that recreate a `PrefixIndex`'s exact state.

Used to check the index against models (tests) and to hand a router's view to another.
"""

from __future__ import annotations

from actors.engine.events import KvEvent, KvStored
from router.index import PrefixIndex, Record


def dump_events(index: PrefixIndex, t_ms: float = 0.0) -> list[KvEvent]:
    """Events that rebuild the index's exact state when applied, in order, to an empty index.

    One `KvStored` per held block; slots in sorted key order; within a slot, blocks by
    (depth, hash) where depth counts held ancestors along the parents the slot recorded,
    so a block's parent is emitted before it. `parent_hash` is the recorded parent when
    the slot holds it (and it is shallower), else None; roots from `replace_slot` have
    parent None and token hash 0. `event_id` counts from 0 per slot.
    """
    events: list[KvEvent] = []
    for key, held in index.slot_records():
        meta = {h: _parent_and_token(h, rec) for h, rec in held.items()}
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


def _parent_and_token(h: int, rec: Record) -> tuple[int | None, int]:
    """The parent hash and token hash that `rec` gives block `h` (a root if `rec` is None)."""
    if rec is None:
        return None, 0
    parent, hashes, tokens = rec
    i = hashes.index(h)
    return hashes[i - 1] if i else parent, tokens[i] if i < len(tokens) else 0
