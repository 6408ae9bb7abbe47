"""The compressed radix tree's shape: nodes, the edge edits events are made of, and the match walk.

`router.radix` applies KV events to this tree with the reference indexer's semantics (its
docstring says which); this module holds what those events are built from.

Shape (the invariants every function here keeps)
- A `Node` holds a compressed edge: a run of block hashes `edge[0..n)` with `pos[h]` =
  position of `h`. Slots (publishers, one bit each) cover a *prefix* of the edge: the
  `full` bitmask covers all of it; `cut[s] = k` (0 < k < n) means slot `s` covers
  `edge[0..k)`. Children are keyed by their edge's first hash.
- `lookups[s]` maps each block hash slot `s` holds to the node whose edge contains it;
  `split` keeps those entries pointing at the node that now holds each hash.
- The root has an empty edge and is `internal` (never extended as a leaf).
"""

from __future__ import annotations

from router.bitsets import iter_bits


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


def promote(node: Node, s: int, bit: int) -> None:
    if not node.full & bit:
        if node.cut:
            node.cut.pop(s, None)
        node.full |= bit


def cover_prefix(node: Node, s: int, bit: int, k: int) -> None:
    if k == 0:
        return
    if k >= len(node.edge):
        promote(node, s, bit)
    elif not node.full & bit:
        cut = node.cut
        if cut is None:
            node.cut = {s: k}
        elif cut.get(s, 0) < k:
            cut[s] = k


def append_leaf(node: Node, s: int, bit: int, blocks: list[int]) -> None:
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


def split(node: Node, p: int, lookups: list[dict[int, Node]]) -> None:
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


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    k = 0
    while a[k] == b[k]:
        k += 1
    return k


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
        m = common_prefix(edge, query[depth : depth + elen])
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
