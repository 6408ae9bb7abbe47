"""Block pool: white-box LRU checks, engine-request allocation, and a stateful property test
against a naive model (lists and dicts, no links)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from actors.engine.events import KvRemoved, KvStored
from actors.engine.hashing import PromptHasher
from actors.engine.kv.block_pool import BlockPool
from actors.engine.kv.cache import PagedKvCache
from actors.engine.request import EngineRequest, RankRequest


def test_lru_evicts_head_first_and_release_appends_to_tail() -> None:
    pool = BlockPool(4)
    assert pool.ensure_free(3)
    ids = [pool.cache_new(h)[0] for h in (11, 12, 13)]
    for cid in reversed(ids):  # a request releases tail first
        pool.release(cid)
    # head -> 13 -> 12 -> 11 -> tail: the suffix goes first
    assert [pool.hash_of(c) for c in pool.lru_order()] == [13, 12, 11]
    assert pool.ensure_free(3)  # 1 free + evict 2
    assert pool.pending == [KvRemoved((13, 12))]
    assert [pool.hash_of(c) for c in pool.lru_order()] == [11]
    pool.check_invariants()


def test_touch_reactivates_and_prefers_active_copies() -> None:
    pool = BlockPool(4)
    pool.ensure_free(2)
    a, first_a = pool.cache_new(7)
    b, first_b = pool.cache_new(7)  # a second physical copy of the same hash
    assert (first_a, first_b) == (True, False)
    pool.release(a)
    assert pool.touch(7) == b  # the referenced copy, not the inactive one
    assert pool.num_inactive == 1
    pool.release(b)
    pool.release(b)
    # evicting one copy of 7 emits nothing; the last copy emits Removed
    pool.ensure_free(3)
    assert pool.pending == []
    pool.ensure_free(4)
    assert pool.pending == [KvRemoved((7,))]
    pool.check_invariants()


def test_ensure_free_is_all_or_nothing() -> None:
    pool = BlockPool(3)
    pool.ensure_free(2)
    pool.cache_new(1)
    pool.add_private(1)
    assert not pool.ensure_free(2)
    assert pool.num_free == 1 and pool.pending == []


def _request(rid: int, ids: tuple[int, ...], prompt: int, hasher: PromptHasher) -> EngineRequest:
    return EngineRequest(RankRequest(rid, prompt, 10, ids, 16), hasher)


def test_allocation_groups_stored_events_and_skips_duplicates() -> None:
    hasher = PromptHasher(4, 16)
    kv = PagedKvCache(32, 4, caching=True)
    pool = kv.pool
    a = _request(0, (1, 2), 32, hasher)
    assert kv.allocate(a, 10)  # 2 full blocks + 1 partial
    assert (len(a.block_ids), a.num_private) == (2, 1)
    assert kv.take_pending() == [KvStored(None, tuple(a.hashes[:2]), tuple(a.locals[:2]))]
    b = _request(1, (1, 2), 32, hasher)
    assert kv.allocate(b, 16)  # 4 blocks: first 2 already cached -> one group for 3..4
    assert kv.take_pending() == [KvStored(a.hashes[1], tuple(b.hashes[2:4]), tuple(b.locals[2:4]))]
    assert kv.allocate(a, 12)  # A's partial block fills: hash 3 already has B's copy
    assert pool.pending == [] and a.num_private == 0
    kv.free(a)
    kv.free(b)
    pool.check_invariants()
    assert pool.num_active == 0 and pool.num_inactive == 7


# ---- stateful property test ------------------------------------------------------------------

@dataclass
class NaiveCopy:
    block_hash: int
    refs: int = 1


@dataclass
class NaivePool:
    """Reference model: a list of copies and an explicit LRU list, everything O(n)."""

    capacity: int
    private: int = 0
    copies: dict[int, NaiveCopy] = field(default_factory=dict)  # keyed by the real pool's copy id
    lru: list[int] = field(default_factory=list)

    def free(self) -> int:
        return self.capacity - self.private - len(self.copies)

    def holders(self, h: int) -> list[int]:
        return [cid for cid, c in self.copies.items() if c.block_hash == h]


class PoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pool = BlockPool(12)
        self.naive = NaivePool(12)
        self.held: list[int] = []  # copy ids holding one reference each
        self.removed_seen: list[int] = []

    @rule(n=st.integers(1, 5), hashes=st.lists(st.integers(0, 8), min_size=1, max_size=5))
    def allocate(self, n: int, hashes: list[int]) -> None:
        hashes = hashes[:n]
        before = {c.block_hash for c in self.naive.copies.values()}
        ok = self.pool.ensure_free(len(hashes))
        expect_ok = len(hashes) <= self.naive.free() + len(self.naive.lru)
        assert ok == expect_ok
        if not ok:
            return
        evict = len(hashes) - self.naive.free()
        for _ in range(max(0, evict)):
            cid = self.naive.lru.pop(0)
            del self.naive.copies[cid]
        after = {c.block_hash for c in self.naive.copies.values()}
        expected_removed = before - after
        got = [h for ev in self.pool.pending for h in ev.block_hashes]  # type: ignore[union-attr]
        self.pool.pending.clear()
        assert sorted(got) == sorted(expected_removed)
        assert len(got) == len(set(got))  # exactly one Removed per evicted hash
        for h in hashes:
            cid, first = self.pool.cache_new(h)
            assert first == (not self.naive.holders(h))
            assert cid not in self.naive.copies
            self.naive.copies[cid] = NaiveCopy(h)
            self.held.append(cid)

    @precondition(lambda self: self.held)
    @rule(k=st.integers(0, 100))
    def release(self, k: int) -> None:
        cid = self.held.pop(k % len(self.held))
        self.pool.release(cid)
        copy = self.naive.copies[cid]
        copy.refs -= 1
        if copy.refs == 0:
            self.naive.lru.append(cid)

    @rule(h=st.integers(0, 8))
    def touch(self, h: int) -> None:
        if not self.pool.contains(h):
            assert not self.naive.holders(h)
            return
        cid = self.pool.touch(h)
        copy = self.naive.copies[cid]
        assert copy.block_hash == h
        active = [c for c in self.naive.holders(h) if self.naive.copies[c].refs > 0]
        assert not active or cid in active
        if copy.refs == 0:
            self.naive.lru.remove(cid)
        copy.refs += 1
        self.held.append(cid)

    @rule(n=st.integers(1, 3))
    def private(self, n: int) -> None:
        if self.pool.ensure_free(n):
            evict = n - self.naive.free()
            for _ in range(max(0, evict)):
                del self.naive.copies[self.naive.lru.pop(0)]
            self.pool.pending.clear()
            self.pool.add_private(n)
            self.naive.private += n

    @precondition(lambda self: self.naive.private > 0)
    @rule()
    def free_private(self) -> None:
        self.pool.free_private(1)
        self.naive.private -= 1

    @invariant()
    def agrees_with_naive(self) -> None:
        pool, naive = self.pool, self.naive
        pool.check_invariants()
        assert pool.lru_order() == naive.lru
        assert pool.num_private == naive.private
        assert pool.num_cached == len(naive.copies)
        assert pool.num_inactive == len(naive.lru)
        assert pool.num_free == naive.free() >= 0
        assert pool.num_free + pool.num_active + pool.num_inactive == pool.num_blocks
        for cid, copy in naive.copies.items():
            assert pool.refs_of(cid) == copy.refs >= 0
            assert pool.hash_of(cid) == copy.block_hash
        assert sorted(pool.cached_hashes()) == sorted({c.block_hash for c in naive.copies.values()})


TestPoolMachine = PoolMachine.TestCase
TestPoolMachine.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_pool_rejects_nonpositive_capacity() -> None:
    with pytest.raises(ValueError, match="num_blocks"):
        BlockPool(0)


def test_a_request_releases_its_blocks_tail_first() -> None:
    """Releasing a request's blocks puts its suffix at the LRU head: evicted before the prefix it shares."""
    pool = BlockPool(8)
    assert pool.ensure_free(3)
    cids: list[int] = []
    pool.cache_run([11, 12, 13], 0, 3, cids)
    pool.release_many(cids)
    assert [pool.hash_of(c) for c in pool.lru_order()] == [13, 12, 11]
    assert pool.ensure_free(6)  # 5 free: evicts one inactive copy, the suffix
    assert pool.pending == [KvRemoved((13,))]
    assert pool.lookup_prefix([11, 12, 13], 3) == 2
