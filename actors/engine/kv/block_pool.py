"""Paged KV block pool of one DP rank: capacity, cached copies, and the LRU of inactive blocks.

Model (facts §e, the reference vLLM pool):

    capacity = free + private + cached copies
    cached copies = active (refs > 0) + inactive (refs == 0, on the LRU list)

- A *private* block holds a partial block (or any block when prefix caching is
  off); it has no identity and is counted, not tracked.
- A *cached copy* is a full block with a sequence hash. Several physical
  copies of one hash may exist (two requests computed the same block before
  either became visible). `KvStored` is due when a hash gets its first copy,
  `KvRemoved` when its last copy is evicted.
- Inactive copies sit on an intrusive doubly linked LRU list: head is evicted
  first, tail is the most recently released. Requests release their blocks
  tail-first, so a sequence's suffix is evicted before the prefix it shares.
- Allocation uses free capacity first and evicts from the LRU head only when
  free capacity runs out; `ensure_free` is all-or-nothing.
- Copy ids are allocated lazily: the per-copy arrays grow as copies are first made
  (id 0 is the LRU sentinel), so an idle rank, or a huge `num_gpu_blocks`, costs only
  what has been used. Freed ids are reused first (last freed, first reused).

Operations: `lookup_prefix`, `count_active_prefix`, `touch`, `ensure_free`,
`cache_new`, `add_private`, `free_private`, `release`. Events produced by
evictions are appended to `pending` (the owner stamps them at pass end). `PagedKvCache`
(`actors.engine.kv.cache`) puts a request's blocks on top of it.
"""

from __future__ import annotations

from actors.engine.events import KvEventData, KvRemoved


class BlockPool:
    """KV blocks of one rank. All counts are in blocks."""

    __slots__ = (
        "num_blocks", "num_private", "num_cached", "num_inactive", "pending",
        "_hash", "_refs", "_prev", "_next", "_free_ids", "_copies", "_head",
    )

    def __init__(self, num_blocks: int) -> None:
        if num_blocks <= 0:
            raise ValueError(f"num_blocks must be positive, got {num_blocks}")
        self.num_blocks = num_blocks
        self.num_private = 0
        self.num_cached = 0
        self.num_inactive = 0
        self.pending: list[KvEventData] = []
        # Per-copy arrays, grown on demand (see the module docstring); index 0 is the LRU sentinel
        # (head side = _next[sentinel]), copies are 1.. . `_free_ids` holds freed ids only.
        self._head = 0
        self._hash = [0]
        self._refs = [0]
        self._prev = [0]
        self._next = [0]
        self._free_ids: list[int] = []
        self._copies: dict[int, list[int]] = {}

    # ---- counters -------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        return self.num_blocks - self.num_private - self.num_cached

    @property
    def num_active(self) -> int:
        return self.num_private + self.num_cached - self.num_inactive

    @property
    def num_allocatable(self) -> int:
        """Blocks an allocation may take: free capacity plus evictable inactive copies."""
        return self.num_blocks - self.num_private - self.num_cached + self.num_inactive

    def contains(self, block_hash: int) -> bool:
        return block_hash in self._copies

    def cached_hashes(self) -> list[int]:
        """Every hash with at least one physical copy, in first-copy order."""
        return list(self._copies)

    # ---- prefix cache ---------------------------------------------------------------------
    def lookup_prefix(self, hashes: list[int], limit: int) -> int:
        """Number of leading hashes (at most `limit`) that have a cached copy."""
        copies = self._copies
        n = 0
        while n < limit and hashes[n] in copies:
            n += 1
        return n

    def count_active_prefix(self, hashes: list[int], n: int) -> int:
        """How many of the first `n` hashes have a copy that is currently referenced."""
        refs = self._refs
        count = 0
        for i in range(n):
            for cid in self._copies[hashes[i]]:
                if refs[cid] > 0:
                    count += 1
                    break
        return count

    def touch(self, block_hash: int) -> int:
        """Take a reference on a cached copy (re-activating it if inactive); returns its id.

        An already active copy is preferred so that no inactive copy is pulled out
        of the LRU needlessly.
        """
        copies = self._copies[block_hash]
        refs = self._refs
        chosen = copies[0]
        for cid in copies:
            if refs[cid] > 0:
                chosen = cid
                break
        if refs[chosen] == 0:
            self._unlink(chosen)
            self.num_inactive -= 1
        refs[chosen] += 1
        return chosen

    # ---- allocation -----------------------------------------------------------------------
    def ensure_free(self, n: int) -> bool:
        """Make `n` blocks of free capacity, evicting LRU-head copies as needed.

        Returns False, changing nothing, when free plus inactive is less than `n`.
        """
        free = self.num_blocks - self.num_private - self.num_cached
        if n <= free:
            return True
        if n > free + self.num_inactive:
            return False
        removed: list[int] = []
        nxt, prv, sentinel = self._next, self._prev, self._head
        copies_map, hashes = self._copies, self._hash
        for _ in range(n - free):
            cid = nxt[sentinel]
            after = nxt[cid]
            nxt[sentinel] = after
            prv[after] = sentinel
            h = hashes[cid]
            copies = copies_map[h]
            if len(copies) == 1:
                del copies_map[h]
                removed.append(h)
            else:
                copies.remove(cid)
            self._free_ids.append(cid)
        evicted = n - free
        self.num_cached -= evicted
        self.num_inactive -= evicted
        if removed:
            self.pending.append(KvRemoved(tuple(removed)))
        return True

    def cache_new(self, block_hash: int) -> tuple[int, bool]:
        """Turn one unit of free capacity into a referenced cached copy.

        Returns (copy id, whether this is the hash's first copy). The caller
        must have called `ensure_free`.
        """
        out: list[int] = []
        first = self.cache_run([block_hash], 0, 1, out)
        return out[0], bool(first)

    def cache_run(self, hashes: list[int], start: int, end: int, out: list[int]) -> list[tuple[int, int]]:
        """`cache_new` for hashes[start:end], appending copy ids to `out`.

        Returns the maximal index ranges [a, b) whose hashes got their first copy
        (the groups a `KvStored` event reports).
        """
        free_ids, hash_arr, refs, copies_map = self._free_ids, self._hash, self._refs, self._copies
        groups: list[tuple[int, int]] = []
        group_start = -1
        for j in range(start, end):
            h = hashes[j]
            if free_ids:
                cid = free_ids.pop()
                hash_arr[cid] = h
                refs[cid] = 1
            else:  # a copy id never used before: grow the arrays
                cid = len(hash_arr)
                hash_arr.append(h)
                refs.append(1)
                self._prev.append(-1)
                self._next.append(-1)
            out.append(cid)
            copies = copies_map.get(h)
            if copies is None:
                copies_map[h] = [cid]
                if group_start < 0:
                    group_start = j
            else:
                copies.append(cid)
                if group_start >= 0:
                    groups.append((group_start, j))
                    group_start = -1
        if group_start >= 0:
            groups.append((group_start, end))
        self.num_cached += end - start
        return groups

    def release_many(self, cids: list[int]) -> None:
        """`release` each copy in reverse order (a request's suffix reaches the LRU first)."""
        refs, prv, nxt, sentinel = self._refs, self._prev, self._next, self._head
        added = 0
        for cid in reversed(cids):
            r = refs[cid] - 1
            refs[cid] = r
            if r == 0:
                last = prv[sentinel]
                nxt[last] = cid
                prv[cid] = last
                nxt[cid] = sentinel
                prv[sentinel] = cid
                added += 1
        self.num_inactive += added

    def add_private(self, n: int = 1) -> None:
        self.num_private += n

    def free_private(self, n: int) -> None:
        self.num_private -= n
        assert self.num_private >= 0, "private block count went negative"

    def release(self, cid: int) -> None:
        """Drop one reference; a copy with no references goes to the LRU tail."""
        self.release_many([cid])

    def clear(self) -> None:
        """Forget every inactive copy (active ones stay: their requests still run)."""
        sentinel = self._head
        cid = self._next[sentinel]
        while cid != sentinel:
            nxt = self._next[cid]
            h = self._hash[cid]
            copies = self._copies[h]
            copies.remove(cid)
            if not copies:
                del self._copies[h]
            self._free_ids.append(cid)
            self.num_cached -= 1
            cid = nxt
        self._next[sentinel] = sentinel
        self._prev[sentinel] = sentinel
        self.num_inactive = 0

    def _unlink(self, cid: int) -> None:
        p, n = self._prev[cid], self._next[cid]
        self._next[p] = n
        self._prev[n] = p

    # ---- checks ---------------------------------------------------------------------------
    def lru_order(self) -> list[int]:
        """Inactive copy ids from head (next to evict) to tail."""
        out = []
        cid = self._next[self._head]
        while cid != self._head:
            out.append(cid)
            cid = self._next[cid]
        return out

    def hash_of(self, cid: int) -> int:
        return self._hash[cid]

    def refs_of(self, cid: int) -> int:
        return self._refs[cid]

    def check_invariants(self) -> None:
        """free + active + inactive == capacity; LRU holds exactly the unreferenced copies."""
        assert self.num_free >= 0 and self.num_private >= 0
        assert self.num_free + self.num_active + self.num_inactive == self.num_blocks
        lru = self.lru_order()
        assert len(lru) == self.num_inactive == len(set(lru))
        lru_set = set(lru)
        in_use = {cid for copies in self._copies.values() for cid in copies}
        assert len(in_use) == self.num_cached
        assert lru_set <= in_use
        for cid in in_use:
            assert self._refs[cid] >= 0
            assert (self._refs[cid] == 0) == (cid in lru_set)
        assert not in_use & set(self._free_ids)
        never_used = self.num_blocks - (len(self._hash) - 1)
        assert never_used >= 0 and len(self._free_ids) + never_used == self.num_blocks - self.num_cached
