"""One request inside an engine rank: token progress, prompt hashes, and its KV cache handle.

Token layout (vLLM's view: there is no prefill or decode phase, only
`computed` catching up with `seq_len`):

    | prompt (prompt_len) | generated (generated) |
    |<------ computed ------>|<- to compute ->|           seq_len = prompt_len + generated

The last generated token is "dangling": its KV is computed in the next pass.
The KV cache handle (`block_ids`, `num_private`) belongs to the rank's KV cache
(`actors.engine.kv`), which alone changes it; the scheduler changes token progress.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from actors.engine.hashing import (PromptHasher, block_hash, chain_hash, generated_token_bytes, generated_token_ids,
                                   trace_token_id)
from actors.engine.records import EngineRecord


@dataclass(frozen=True, slots=True)
class RankRequest:
    """A request as a rank receives it. Requests are not token strings: the prompt is `hash_ids`,
    one id per `trace_block_size` tokens (Mooncake style), truncated to `input_length`.

    `prompt_hashes` are the prompt's (sequence, local) full-block hashes when a router already
    computed them with the rank's block size; otherwise the rank computes them.
    """

    request_id: int
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]
    trace_block_size: int
    prompt_hashes: tuple[tuple[int, ...], tuple[int, ...]] | None = None
    generated_tokens: int = 0
    """Tokens another rank generated before the request migrated here: the rank prefills prompt +
    these (the same token ids, so the same block hashes) and generates the rest of `output_length`."""
    last_token_ms: float = 0.0
    """When the last of them was generated (the next inter-token gap runs from there)."""
    transferred: bool = False
    """The prompt's KV arrived from a prefill worker (disaggregated decode): the rank computes no
    prompt token; admitted, the request decodes at once, its first pass timed as a decode pass over
    the prompt (facts §g)."""


class EngineRequest:
    """A request's engine-side state; only the owning rank mutates it."""

    __slots__ = (
        "request_id", "record", "prompt_len", "max_output", "generated", "computed", "in_decode",
        "block_ids", "num_private", "hashes", "locals", "hash_ids", "trace_block_size",
        "last_token_ms", "transferred",
    )

    def __init__(self, request: RankRequest, hasher: PromptHasher) -> None:
        self.request_id = request.request_id
        self.record = EngineRecord()
        self.prompt_len = request.input_length
        self.max_output = request.output_length
        self.generated = request.generated_tokens
        self.computed = 0
        self.in_decode = False
        self.block_ids: list[int] = []
        """Cached copies holding the full blocks [0, len(block_ids)) (the KV cache's handle)."""
        self.num_private = 0
        """Private blocks after them: the partial tail, or every block when prefix caching is off."""
        self.hash_ids = request.hash_ids
        self.trace_block_size = request.trace_block_size
        self.last_token_ms = request.last_token_ms
        self.transferred = request.transferred
        self.record.output_length = self.generated
        given = request.prompt_hashes
        if given is None:
            self.hashes, self.locals = hasher.hash_prompt(request.hash_ids, self.prompt_len)
        else:
            self.hashes, self.locals = list(given[0]), list(given[1])

    @property
    def seq_len(self) -> int:
        return self.prompt_len + self.generated

    def tokens(self, start: int, end: int) -> npt.NDArray[np.uint32]:
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
            parts.append(generated_token_ids(self.request_id, split - self.prompt_len, end - self.prompt_len))
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def ensure_hashes(self, num_blocks: int, block_size: int) -> None:
        """Extend sequence/local hashes to the first `num_blocks` full blocks.

        The missing blocks' tokens are made in one go: little-endian u32 bytes (the bytes
        `local_hash` hashes), packed directly for generated tokens, which is what decode
        blocks hold, and through `tokens` where the range starts in the prompt.
        """
        hashes, locals_ = self.hashes, self.locals
        i = len(hashes)
        if i >= num_blocks:
            return
        start, end = i * block_size, num_blocks * block_size
        if start >= self.prompt_len:
            data = generated_token_bytes(self.request_id, start - self.prompt_len, end - self.prompt_len)
        else:
            data = self.tokens(start, end).astype("<u4").tobytes()
        step = 4 * block_size
        parent = hashes[-1] if hashes else None
        for k in range(0, len(data), step):
            local = block_hash(data[k:k + step])
            parent = chain_hash(parent, local)
            hashes.append(parent)
            locals_.append(local)
