"""Compressed radix tree of KV blocks with the reference indexer's exact semantics.

This is the data structure behind `router.index.PrefixIndex`. It follows, operation by
operation, the single-threaded compressed `RadixTree` of Dynamo 1.6.1 (`lib/kv-router`
`indexer/radix_tree.rs` + `indexer/compressed_radix.rs`, checked query by query against
`dynamo._core.RadixTree` by `benchmarks/index_vs_reference.py`), with one change of key:
the reference keys edges by *local* (token) hashes and looks blocks up by *sequence*
hashes; here both are sequence hashes. Under chained hashing (a block's sequence hash
fixes its parent's and its own token hash) the two are the same tree.

Shape
- A `Node` holds a compressed edge: a run of block hashes `edge[0..n)` with `pos[h]` =
  position of `h`. Slots (publishers, one bit each) cover a *prefix* of the edge: the
  `full` bitmask covers all of it; `cut[s] = k` (0 < k < n) means slot `s` covers
  `edge[0..k)`. Children are keyed by their edge's first hash.
- `lookups[s]` maps each block hash slot `s` holds to the node whose edge contains it.

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

OK, MISSING_PARENT, SELF_REFERENCE = 0, 1, 2
"""`store` outcomes."""


class Node:
    """One compressed edge of the tree (see the module docstring)."""

    __slots__ = ("edge", "pos", "full", "cut", "children", "internal")

    def __init__(self, edge: list[int], full: int) -> None:
        self.edge = edge
        self.pos = dict(zip(edge, range(len(edge))))
        self.full = full
        self.cut: dict[int, int] | None = None
        """slot -> cutoff, for slots covering a strict prefix; None when there are none."""
        self.children: dict[int, Node] = {}
        self.internal = False
        """True once the node had children: it is never extended as a leaf again."""


def new_root() -> Node:
    root = Node([], 0)
    root.internal = True
    return root


def covers(node: Node, s: int, p: int) -> bool:
    """Slot `s` covers position `p` of the node's edge."""
    if node.full >> s & 1:
        return True
    cut = node.cut
    return cut is not None and cut.get(s, 0) > p


def _promote(node: Node, s: int, bit: int) -> None:
    if not node.full & bit:
        if node.cut:
            node.cut.pop(s, None)
        node.full |= bit


def _cover_prefix(node: Node, s: int, bit: int, k: int) -> None:
    if k == 0:
        return
    if k >= len(node.edge):
        _promote(node, s, bit)
    elif not node.full & bit:
        cut = node.cut
        if cut is None:
            node.cut = {s: k}
        elif cut.get(s, 0) < k:
            cut[s] = k


def _append_leaf(node: Node, s: int, bit: int, blocks: list[int]) -> None:
    """Extend a leaf edge: other full slots keep covering only the old edge."""
    edge = node.edge
    old = len(edge)
    others = node.full & ~bit
    if others:
        cut = node.cut if node.cut is not None else {}
        for w in iter_bits(others):
            cut[w] = old
        node.cut = cut
    elif node.cut:
        node.cut.pop(s, None)
    node.full = bit
    pos = node.pos
    for k, h in enumerate(blocks, old):
        pos[h] = k
    edge.extend(blocks)


def _split(node: Node, p: int, lookups: list[dict[int, Node]]) -> None:
    """Cut the node's edge at `p` (0 < p < len): the suffix becomes its only child."""
    tail = node.edge[p:]
    del node.edge[p:]
    pos = node.pos
    for h in tail:
        pos.pop(h, None)
    suffix = Node(tail, node.full)
    if node.cut:
        scut: dict[int, int] = {}
        for w, c in list(node.cut.items()):
            if c < p:
                continue
            del node.cut[w]
            node.full |= 1 << w
            if c > p:
                scut[w] = c - p
        suffix.cut = scut or None
    suffix.children = node.children
    suffix.internal = node.internal
    node.children = {tail[0]: suffix}
    node.internal = True
    for w in iter_bits(suffix.full):
        lk = lookups[w]
        for h in tail:
            lk[h] = suffix
    if suffix.cut:
        for w, c in suffix.cut.items():
            lk = lookups[w]
            for h in tail[:c]:
                lk[h] = suffix


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    k = 0
    while a[k] == b[k]:
        k += 1
    return k


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
            # Hot path (a decode block continuing this slot's own leaf): `_append_leaf`.
            h = hashes[0]
            if node.cut:
                node.cut.pop(s, None)
            node.pos[h] = p + 1
            edge.append(h)
            lookup[h] = node
            return OK
        if n <= suffix_len:  # the store re-covers blocks already on this edge
            if edge[p + 1 : p + 1 + n] == hashes:
                _cover_prefix(node, s, bit, p + 1 + n)
                for h in hashes:
                    lookup[h] = node
                return OK
        elif not node.internal and edge[p + 1 :] == hashes[:suffix_len]:  # continues the leaf
            _append_leaf(node, s, bit, hashes[suffix_len:])
            for h in hashes:
                lookup[h] = node
            return OK
        if edge[-1] != parent_hash:
            _split(node, p + 1, lookups)
        parent = node
    i = 0
    while i < n:
        child = parent.children.get(hashes[i])
        if child is None or not (child.full or child.cut):  # a dead edge (nobody covers it) is replaced
            rest = hashes[i:] if i else hashes
            pe = parent.edge
            if pe and not parent.internal and covers(parent, s, len(pe) - 1):
                _append_leaf(parent, s, bit, rest)
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
        m = _common_prefix(edge, hashes[i : i + elen])
        if m < elen:
            if m == n - i:
                _cover_prefix(child, s, bit, m)
                for h in hashes[i:]:
                    lookup[h] = child
                return OK
            _split(child, m, lookups)
            _promote(child, s, bit)
            for h in hashes[i : i + m]:
                lookup[h] = child
            tail = hashes[i + m :]
            tail_node = Node(tail, bit)
            child.internal = True
            child.children[tail[0]] = tail_node
            for h in tail:
                lookup[h] = tail_node
            return OK
        _promote(child, s, bit)
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


def walk(root: Node, query: list[int], early_exit: bool) -> tuple[list[int], list[int]]:
    """Match a query (sequence hashes) from the root: `(masks, depths)`, disjoint slot masks
    with the number of leading query blocks each matched (the reference `find_matches`)."""
    masks: list[int] = []
    depths: list[int] = []
    n = len(query)
    if not n:
        return masks, depths
    node = root.children.get(query[0])
    active = 0
    depth = 0
    first = True
    while node is not None:
        edge = node.edge
        elen = len(edge)
        m = _common_prefix(edge, query[depth : depth + elen])
        if m == 0:  # pragma: no cover - children are keyed by their first hash
            break
        cut = node.cut
        if first:
            active = node.full
            if cut:
                for w, c in cut.items():
                    masks.append(1 << w)
                    depths.append(min(c, m))
            first = False
        else:
            gone = active & ~node.full
            if gone:
                if cut:
                    for w, c in cut.items():
                        b = 1 << w
                        if gone & b:
                            masks.append(b)
                            depths.append(depth + min(c, m))
                            gone ^= b
                if gone:
                    masks.append(gone)
                    depths.append(depth)
                active &= node.full
        depth += m
        if not active or m < elen or depth == n or (early_exit and active.bit_count() == 1):
            break
        node = node.children.get(query[depth])
    if active:
        masks.append(active)
        depths.append(depth)
    return masks, depths


def iter_bits(mask: int) -> list[int]:
    """Indices of the set bits of `mask`, ascending."""
    out: list[int] = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out
