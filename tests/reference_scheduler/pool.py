"""A naive vLLM block pool (facts section e): physical copies, refcounts, an LRU of inactive copies.

- Capacity counts physical blocks: private ones (a request's partial tail, or every block
  without prefix caching) and cached copies (a full block with an identity). Several copies
  of one identity may exist: a request that computes a full block always makes a new copy.
- A copy with refs > 0 is active; at refs 0 it joins the LRU tail; evictions take the head.
- Prefix hit: leading identities that have any copy; taking one prefers an active copy, else
  the oldest copy (which leaves the LRU).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable


@dataclass
class Copy:
    ident: Hashable
    refs: int
    born: int


@dataclass
class Pool:
    num_blocks: int
    copies: dict[int, Copy] = field(default_factory=dict)
    lru: list[int] = field(default_factory=list)
    """Inactive copy ids, head (evicted first) at index 0."""
    private: int = 0
    _next_id: int = 0

    def free(self) -> int:
        return self.num_blocks - self.private - len(self.copies)

    def active(self) -> int:
        return self.private + sum(1 for c in self.copies.values() if c.refs > 0)

    def copies_of(self, ident: Hashable) -> list[int]:
        return sorted((cid for cid, c in self.copies.items() if c.ident == ident), key=lambda cid: self.copies[cid].born)

    def make_room(self, n: int) -> bool:
        """Free capacity for `n` blocks by evicting LRU-head copies; False (nothing changed) if impossible."""
        if n <= self.free():
            return True
        if n > self.free() + len(self.lru):
            return False
        while self.free() < n:
            del self.copies[self.lru.pop(0)]
        return True

    def new_copy(self, ident: Hashable) -> int:
        cid = self._next_id
        self._next_id += 1
        self.copies[cid] = Copy(ident, 1, cid)
        return cid

    def take(self, ident: Hashable) -> int:
        """Reference a cached copy of `ident` (a prefix hit)."""
        ids = self.copies_of(ident)
        chosen = next((cid for cid in ids if self.copies[cid].refs > 0), ids[0])
        if self.copies[chosen].refs == 0:
            self.lru.remove(chosen)
        self.copies[chosen].refs += 1
        return chosen

    def release(self, cid: int) -> None:
        c = self.copies[cid]
        c.refs -= 1
        if c.refs == 0:
            self.lru.append(cid)
