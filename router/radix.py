"""Compressed radix tree of KV blocks with the reference indexer's exact semantics.

This is the data structure behind `router.index.PrefixIndex`. It follows, operation by
operation, the single-threaded compressed `RadixTree` of Dynamo 1.6.1 (`lib/kv-router`
`indexer/radix_tree.rs` + `indexer/compressed_radix.rs`, checked query by query against
`dynamo._core.RadixTree` by `benchmarks/index_vs_reference.py`), with one change of key:
the reference keys edges by *local* (token) hashes and looks blocks up by *sequence*
hashes; here both are sequence hashes. Under chained hashing (a block's sequence hash
fixes its parent's and its own token hash) the two are the same tree.

The tree's shape (nodes, compressed edges, per-slot coverage and lookups) and the match walk
are in `router.radix_node`.

Semantics that differ from "a slot matches block i iff it holds blocks 0..i" (why a plain
per-slot set of hashes disagrees with the reference on adversarial event sequences):
- Removing block `edge[p]` truncates the slot's coverage of that edge at `p`: the later
  blocks of the same edge are dropped from its lookup too (their own Removed events are
  then ignored). Blocks in descendant nodes stay in its lookup.
- When no slot covers a node's full edge any more, its children are detached (the
  reference's `clear_children_if_unreachable`): a slot that re-stores the evicted block no
  longer matches the still-cached blocks below it until they are stored again.
- Edge boundaries come from the history of Stored events (an event's new blocks form
  one edge; a leaf edge is extended by a Stored that continues it; edges are split where
  stores diverge), so the above depends on that history, exactly as in the reference.
- A Stored whose parent the slot does not hold (or no longer covers) is skipped whole;
  one whose blocks contain its parent hash is rejected (self reference).
"""

from __future__ import annotations

from collections.abc import Sequence

from router.radix_node import Node, append_leaf, common_prefix, cover_prefix, covers, promote, split

OK, MISSING_PARENT, SELF_REFERENCE = 0, 1, 2
"""`store` outcomes."""


def store(root: Node, lookups: list[dict[int, Node]], s: int, parent_hash: int | None, hashes: list[int]) -> int:
    """Apply a Stored event of slot `s`; returns OK, MISSING_PARENT or SELF_REFERENCE."""
    if parent_hash is not None and parent_hash in hashes:
        return SELF_REFERENCE
    lookup = lookups[s]
    bit = 1 << s
    n = len(hashes)
    if parent_hash is None:
        parent = root
    else:
        node = lookup.get(parent_hash)
        if node is None:
            return MISSING_PARENT
        p = node.pos.get(parent_hash)
        if p is None:
            return MISSING_PARENT
        full = node.full
        if not full & bit and not (node.cut is not None and node.cut.get(s, 0) > p):
            del lookup[parent_hash]
            return MISSING_PARENT
        edge = node.edge
        suffix_len = len(edge) - p - 1
        if n == 1 and not suffix_len and full == bit and not node.internal:
            # Hot path (a decode block continuing this slot's own leaf): `append_leaf`.
            h = hashes[0]
            if node.cut:
                node.cut.pop(s, None)
            node.pos[h] = p + 1
            edge.append(h)
            lookup[h] = node
            return OK
        if n <= suffix_len:  # the store re-covers blocks already on this edge
            if edge[p + 1 : p + 1 + n] == hashes:
                cover_prefix(node, s, bit, p + 1 + n)
                for h in hashes:
                    lookup[h] = node
                return OK
        elif not node.internal and edge[p + 1 :] == hashes[:suffix_len]:  # continues the leaf
            append_leaf(node, s, bit, hashes[suffix_len:])
            for h in hashes:
                lookup[h] = node
            return OK
        if edge[-1] != parent_hash:
            split(node, p + 1, lookups)
        parent = node
    i = 0
    while i < n:
        child = parent.children.get(hashes[i])
        if child is None or not (child.full or child.cut):  # a dead edge (nobody covers it) is replaced
            rest = hashes[i:] if i else hashes
            pe = parent.edge
            if pe and not parent.internal and covers(parent, s, len(pe) - 1):
                append_leaf(parent, s, bit, rest)
                target = parent
            else:
                target = Node(rest, bit)
                parent.internal = True
                parent.children[rest[0]] = target
            for h in rest:
                lookup[h] = target
            return OK
        edge = child.edge
        elen = len(edge)
        m = common_prefix(edge, hashes[i : i + elen])
        if m < elen:
            if m == n - i:
                cover_prefix(child, s, bit, m)
                for h in hashes[i:]:
                    lookup[h] = child
                return OK
            split(child, m, lookups)
            promote(child, s, bit)
            for h in hashes[i : i + m]:
                lookup[h] = child
            tail = hashes[i + m :]
            tail_node = Node(tail, bit)
            child.internal = True
            child.children[tail[0]] = tail_node
            for h in tail:
                lookup[h] = tail_node
            return OK
        promote(child, s, bit)
        for h in edge:
            lookup[h] = child
        i += elen
        parent = child
    return OK


def remove(lookup: dict[int, Node], s: int, hashes: Sequence[int]) -> int:
    """Apply a Removed event of slot `s`; returns how many hashes were ignored (not held).

    Consecutive hashes on one edge are removed together at their lowest position.
    """
    bit = 1 << s
    i, n = 0, len(hashes)
    if n == 1:  # hot path (engines evict block by block): the loop below for one hash
        h = hashes[0]
        node = lookup.pop(h, None)
        if node is None:
            return 1
        p = node.pos.get(h)
        if p is None:  # pragma: no cover - a lookup entry always points at its edge
            lookup[h] = node
            return 1
        full = node.full
        cut = node.cut
        edge = node.edge
        if p < (len(edge) if full & bit else (cut.get(s, 0) if cut else 0)):
            if full & bit:
                node.full = full = full & ~bit
            if p:
                if cut is None:
                    node.cut = {s: p}
                else:
                    cut[s] = p
            elif cut:
                cut.pop(s, None)
            for sh in edge[p + 1 :]:
                lookup.pop(sh, None)
        if not full:
            node.children = {}
        return 0
    ignored = 0
    eager: set[int] | None = None
    while i < n:
        h = hashes[i]
        i += 1
        node = lookup.pop(h, None)
        if node is None:
            if eager is None or h not in eager:
                ignored += 1
            continue
        pos = node.pos
        p = pos.get(h)
        if p is None:  # pragma: no cover - a lookup entry always points at its edge
            lookup[h] = node
            ignored += 1
            continue
        low, low_hash = p, h
        if i < n and covers(node, s, p):
            while i < n:
                c = hashes[i]
                if lookup.get(c) is not node:
                    break
                cp = pos.get(c)
                if cp is None or not covers(node, s, cp):
                    break
                if cp < low:
                    low, low_hash = cp, c
                i += 1
        full = node.full
        cutoff = len(node.edge) if full & bit else (node.cut.get(s, 0) if node.cut else 0)
        if low >= cutoff:
            stale = [low_hash]
        else:
            stale = node.edge[low:]
            if full & bit:
                node.full = full = full & ~bit
            if low == 0:
                if node.cut:
                    node.cut.pop(s, None)
            else:
                if node.cut is None:
                    node.cut = {}
                node.cut[s] = low
        if not full:
            node.children = {}
        if i >= n:  # the last hash of the event: no later hash can be one of these
            for sh in stale:
                lookup.pop(sh, None)
            continue
        if eager is None:
            eager = set()
        for sh in stale:
            lookup.pop(sh, None)
            eager.add(sh)
    return ignored


def drop_slot(lookup: dict[int, Node], s: int) -> None:
    """Remove slot `s` from every node it holds blocks on and empty its lookup."""
    inv = ~(1 << s)
    seen: set[int] = set()
    for node in lookup.values():
        if id(node) in seen:
            continue
        seen.add(id(node))
        node.full &= inv
        if node.cut:
            node.cut.pop(s, None)
        if not node.full:
            node.children = {}
    lookup.clear()


def scrub_slot(root: Node, lookups: list[dict[int, Node]], s: int) -> None:
    """Erase slot `s` from every node still reachable (from the root or any lookup).

    Run before a slot index is reused, so a new publisher inherits nothing.
    """
    inv = ~(1 << s)
    stack = [root]
    for lk in lookups:
        stack.extend(lk.values())
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        node.full &= inv
        if node.cut:
            node.cut.pop(s, None)
        stack.extend(node.children.values())
