"""The KV cache interface a scheduling policy sees (`KvCache`), and its paged implementation.

Operations (all counts in blocks of `block_size` tokens):
- `prefix_hit(req, limit)`: (leading full blocks of the request already cached, how many of
  them some running request holds), at most `limit`;
- `touch_prefix(req, n)`: take references on the first n cached blocks (a prefix hit);
- `allocate(req, boundary)`: hold blocks for tokens [0, boundary); full blocks become
  cache-visible now (their `KvStored` events are pending). False, changing nothing, when the
  cache cannot supply them even after evicting every inactive copy (the caller preempts);
- `free(req)`: give every block back, tail first, so suffixes are evicted before prefixes;
- `take_pending()`: the KV event data made visible since the last call (the rank stamps it
  with the end of the pass that caused it).
`PagedKvCache` is the vLLM-style block pool (`actors.engine.kv.block_pool`); a radix cache and
lower memory tiers implement the same interface.

Invariant after any allocation (paged): `len(req.block_ids) + req.num_private ==
ceil(computed / block_size)`.
"""

from __future__ import annotations

from typing import Protocol

from actors.engine.events import KvEventData, KvStored
from actors.engine.kv.block_pool import BlockPool
from actors.engine.request import EngineRequest


class KvCache(Protocol):
    """What scheduling policies and the rank core may ask of a rank's KV cache."""

    @property
    def num_blocks(self) -> int: ...

    @property
    def num_active(self) -> int:
        """Blocks referenced by requests (cached copies in use plus private blocks)."""
        ...

    @property
    def num_inactive(self) -> int: ...

    @property
    def num_allocatable(self) -> int:
        """Blocks an allocation may take: free capacity plus evictable inactive copies."""
        ...

    def prefix_hit(self, req: EngineRequest, limit: int) -> tuple[int, int]:
        """(full blocks of the first `limit` served from the cache, how many of those are active);
        (0, 0) without prefix caching."""
        ...

    def touch_prefix(self, req: EngineRequest, num_blocks: int) -> None: ...

    def allocate(self, req: EngineRequest, boundary: int) -> bool: ...

    def free(self, req: EngineRequest) -> None: ...

    def take_pending(self) -> list[KvEventData]: ...

    def cached_hashes(self) -> list[int]:
        """Every block hash with a copy now (what a KV subscriber should know)."""
        ...

    def check_invariants(self) -> None: ...


class PagedKvCache:
    """A `BlockPool` of `num_blocks` blocks of `block_size` tokens, with or without prefix caching."""

    __slots__ = ("pool", "block_size", "caching", "emit_token_ids")

    def __init__(self, num_blocks: int, block_size: int, caching: bool, emit_token_ids: bool = False) -> None:
        self.pool = BlockPool(num_blocks)
        self.block_size = block_size
        self.caching = caching
        self.emit_token_ids = emit_token_ids
        """Stored events carry the blocks' token ids (for wire formats that need them)."""

    @property
    def num_blocks(self) -> int:
        return self.pool.num_blocks

    @property
    def num_active(self) -> int:
        return self.pool.num_active

    @property
    def num_inactive(self) -> int:
        return self.pool.num_inactive

    @property
    def num_allocatable(self) -> int:
        return self.pool.num_allocatable

    def prefix_hit(self, req: EngineRequest, limit: int) -> tuple[int, int]:
        if not self.caching:  # nothing is ever cached: skip hashing the prompt
            return 0, 0
        if len(req.hashes) < limit:
            req.ensure_hashes(limit, self.block_size)
        pool = self.pool
        cached = pool.lookup_prefix(req.hashes, limit)
        return cached, (pool.count_active_prefix(req.hashes, cached) if cached else 0)

    def touch_prefix(self, req: EngineRequest, num_blocks: int) -> None:
        assert not req.block_ids and not req.num_private
        touch = self.pool.touch
        req.block_ids = [touch(h) for h in req.hashes[:num_blocks]]

    def allocate(self, req: EngineRequest, boundary: int) -> bool:
        bs = self.block_size
        full = boundary // bs
        if self.caching and full <= len(req.block_ids) and (req.num_private or full * bs == boundary):
            return True  # the common decode step: full blocks cached, the partial tail held (nothing below runs)
        pool = self.pool
        have = len(req.block_ids) + req.num_private
        need = -(-boundary // bs)
        extra = need - have
        if extra > 0 and not pool.ensure_free(extra):
            return False
        if not self.caching:
            if extra > 0:
                pool.add_private(extra)
                req.num_private += extra
            return True
        i = len(req.block_ids)
        if full > i:
            if len(req.hashes) < full:
                req.ensure_hashes(full, bs)
            if req.num_private:
                # The partial tail block filled up: it gets its identity in place.
                pool.free_private(1)
                req.num_private = 0
            for a, b in pool.cache_run(req.hashes, i, full, req.block_ids):
                self._stored(req, a, b)
        if need > full and req.num_private == 0:
            pool.add_private(1)
            req.num_private = 1
        return True

    def _stored(self, req: EngineRequest, start: int, end: int) -> None:
        bs = self.block_size
        parent = req.hashes[start - 1] if start > 0 else None
        tokens = tuple(req.tokens(start * bs, end * bs).tolist()) if self.emit_token_ids else None
        self.pool.pending.append(KvStored(parent, tuple(req.hashes[start:end]), tuple(req.locals[start:end]), tokens))

    def free(self, req: EngineRequest) -> None:
        pool = self.pool
        if req.num_private:
            pool.free_private(req.num_private)
            req.num_private = 0
        pool.release_many(req.block_ids)
        req.block_ids = []

    def take_pending(self) -> list[KvEventData]:
        out, self.pool.pending = self.pool.pending, []
        return out

    def cached_hashes(self) -> list[int]:
        return self.pool.cached_hashes()

    def check_invariants(self) -> None:
        self.pool.check_invariants()
