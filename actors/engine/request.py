"""One request inside an engine rank: token progress and the KV blocks it holds.

Token layout (vLLM's view: there is no prefill or decode phase, only
`computed` catching up with `seq_len`):

    | prompt (prompt_len) | generated (generated) |
    |<------ computed ------>|<- to compute ->|           seq_len = prompt_len + generated

The last generated token is "dangling": its KV is computed in the next pass.
Blocks: `block_ids` are cached copies for the full blocks [0, len(block_ids)),
followed by `num_private` private blocks (the partial tail; every block when
prefix caching is off). Invariant after any allocation:
`len(block_ids) + num_private == ceil(computed / block_size)`.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from actors.engine.events import KvStored
from actors.engine.hashing import PromptHasher, chain_hash, generated_token_ids, local_hash, trace_token_id
from actors.engine.kv.block_pool import BlockPool
from actors.engine.records import RequestRecord


class EngineRequest:
    """A request's engine-side state; only the owning rank mutates it."""

    __slots__ = (
        "record", "prompt_len", "max_output", "generated", "computed", "in_decode",
        "block_ids", "num_private", "hashes", "locals", "hash_ids", "trace_block_size",
        "salt", "last_token_ms", "prompt_full_blocks",
    )

    def __init__(
        self,
        record: RequestRecord,
        hash_ids: tuple[int, ...],
        trace_block_size: int,
        hasher: PromptHasher,
        prompt_hashes: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
    ) -> None:
        """`prompt_hashes`: the prompt's (sequence, local) block hashes when a router already
        computed them with the same block size; otherwise `hasher` computes them."""
        self.record = record
        self.prompt_len = record.input_length
        self.max_output = record.requested_output_length
        self.generated = 0
        self.computed = 0
        self.in_decode = False
        self.block_ids: list[int] = []
        self.num_private = 0
        self.hash_ids = hash_ids
        self.trace_block_size = trace_block_size
        self.salt = record.request_id
        self.last_token_ms = 0.0
        if prompt_hashes is None:
            self.hashes, self.locals = hasher.hash_prompt(hash_ids, self.prompt_len)
        else:
            self.hashes, self.locals = list(prompt_hashes[0]), list(prompt_hashes[1])
        self.prompt_full_blocks = len(self.hashes)

    @property
    def seq_len(self) -> int:
        return self.prompt_len + self.generated

    def _tokens(self, start: int, end: int) -> npt.NDArray[np.uint32]:
        """Token ids of positions [start, end) (prompt from trace ids, then generated ids)."""
        split = min(max(start, self.prompt_len), end)
        parts = []
        if split > start:
            tbs = self.trace_block_size
            ids = np.array([trace_token_id(h) for h in self.hash_ids[start // tbs:(split - 1) // tbs + 1]],
                           dtype=np.uint32)
            tokens = np.repeat(ids, tbs)
            offset = start - (start // tbs) * tbs
            parts.append(tokens[offset:offset + split - start])
        if end > split:
            parts.append(generated_token_ids(self.salt, split - self.prompt_len, end - self.prompt_len))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def ensure_hashes(self, num_blocks: int, block_size: int) -> None:
        """Extend sequence/local hashes to the first `num_blocks` full blocks."""
        hashes, locals_ = self.hashes, self.locals
        while len(hashes) < num_blocks:
            i = len(hashes)
            local = local_hash(self._tokens(i * block_size, (i + 1) * block_size))
            hashes.append(chain_hash(hashes[-1] if hashes else None, local))
            locals_.append(local)

    def allocate_to(self, pool: BlockPool, boundary: int, block_size: int, caching: bool) -> bool:
        """Hold blocks for tokens [0, boundary); full blocks become cache-visible now.

        Returns False, changing nothing, when the pool cannot supply the new
        blocks even after evicting every inactive copy (the caller preempts).
        Newly visible hashes are reported as grouped `KvStored` events in `pool.pending`.
        """
        have = len(self.block_ids) + self.num_private
        need = -(-boundary // block_size)
        extra = need - have
        if extra > 0 and not pool.ensure_free(extra):
            return False
        if not caching:
            if extra > 0:
                pool.add_private(extra)
                self.num_private += extra
            return True
        full = boundary // block_size
        i = len(self.block_ids)
        if full > i:
            if len(self.hashes) < full:
                self.ensure_hashes(full, block_size)
            if self.num_private:
                # The partial tail block filled up: it gets its identity in place.
                pool.free_private(1)
                self.num_private = 0
            for a, b in pool.cache_run(self.hashes, i, full, self.block_ids):
                self._emit_stored(pool, a, b, block_size)
        if need > full and self.num_private == 0:
            pool.add_private(1)
            self.num_private = 1
        return True

    def _emit_stored(self, pool: BlockPool, start: int, end: int, block_size: int) -> None:
        parent = self.hashes[start - 1] if start > 0 else None
        tokens = tuple(self._tokens(start * block_size, end * block_size).tolist()) if pool.emit_token_ids else None
        pool.pending.append(KvStored(parent, tuple(self.hashes[start:end]), tuple(self.locals[start:end]), tokens))

    def release(self, pool: BlockPool) -> None:
        """Give every block back, tail first, so suffixes are evicted before prefixes."""
        if self.num_private:
            pool.free_private(self.num_private)
            self.num_private = 0
        pool.release_many(self.block_ids)
        self.block_ids = []

    def touch_prefix(self, pool: BlockPool, num_blocks: int) -> None:
        """Take references on the first `num_blocks` cached blocks (a prefix hit)."""
        assert not self.block_ids and not self.num_private
        self.block_ids = [pool.touch(h) for h in self.hashes[:num_blocks]]
