"""Rebuilding a prefix index: KV events that recreate a `PrefixIndex`'s matching state.

Used to check the index against models (tests) and to hand a router's view to another.
"""

from __future__ import annotations

from collections import deque

from actors.engine.events import KvEvent, KvStored
from router.bitsets import iter_bits
from router.index import PrefixIndex
from router.radix_node import Node


def dump_events(index: PrefixIndex, t_ms: float = 0.0) -> list[KvEvent]:
    """Events that, applied in order to an empty index, give every query the same scores.

    The tree is walked breadth first from the root (children in insertion order); each
    node yields, per slot covering some of its edge, one `KvStored` of the covered prefix
    of the edge with the parent edge's last hash as parent (None under the root). Events
    are grouped by slot key (sorted), in walk order within a slot, `event_id` counting
    from 0 per slot. Token hashes are 0 (the index keeps sequence hashes only). Subtrees
    detached from the root (see `router.radix`) match nothing and are not dumped.
    """
    per_slot: dict[tuple[int, int], list[KvStored]] = {}
    queue: deque[tuple[Node, int | None]] = deque((child, None) for child in index.root().children.values())
    while queue:
        node, parent = queue.popleft()
        covered = [(s, len(node.edge)) for s in iter_bits(node.full)]
        covered += sorted((node.cut or {}).items())
        for s, k in sorted(covered):
            hashes = tuple(node.edge[:k])
            per_slot.setdefault(index.key_of(s), []).append(KvStored(parent, hashes, (0,) * k))
        queue.extend((child, node.edge[-1]) for child in node.children.values())
    return [
        KvEvent(t_ms, key[0], key[1], eid, data)
        for key in sorted(per_slot)
        for eid, data in enumerate(per_slot[key])
    ]
