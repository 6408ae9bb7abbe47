"""Block hashing: token content hashes and chained sequence hashes (facts §e).

- A token id is a u32; block bytes are the little-endian u32 tokens.
- local hash (content, position independent) = xxh3_64(block bytes, seed=1337).
- sequence hash: block 0 = its local hash; block i = xxh3_64(LE u64 parent ||
  LE u64 local_i, seed=1337).
- Only complete blocks are hashed.

Requests are not token strings: a prompt is a list of trace hash ids, each
standing for `trace_block_size` copies of the token id `u32(hash_id)`
(Mooncake convention), truncated to the input length. Generated tokens get
request-unique ids (see `generated_token_id`), so two requests never share a
block that holds generated tokens.

`PromptHasher` memoises chains in a trie over trace hash ids, so requests that
share a prefix (the common case in conversation traces) hash it once; `prewarm` fills
that trie for a whole workload at once with `chain_hash_array`, xxh3_64 of 16-byte
inputs in numpy (equal to `chain_hash` value for value, tests/test_hashing.py).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import xxhash

XXH3_SEED = 1337
_U32 = 0xFFFFFFFF
_PAIR = struct.Struct("<QQ")
_xxh3 = xxhash.xxh3_64_intdigest


def trace_token_id(hash_id: int) -> int:
    """The token id a trace hash id stands for: u32(h) for ids below 2^32 (the reference rule).

    NOTE: larger ids (the synthetic generator's `0xD00D<<48 | group<<32 | block`)
    are folded, high word XOR low word, instead of truncated: truncation would give
    every prefix group the same tokens and so the same cached blocks.
    """
    return (hash_id ^ (hash_id >> 32)) & _U32


def local_hash(tokens: npt.NDArray[np.uint32] | list[int]) -> int:
    """Content hash of one full block of tokens."""
    data = np.asarray(tokens, dtype="<u4").tobytes()
    return _xxh3(data, seed=XXH3_SEED)


def block_hash(data: bytes) -> int:
    """`local_hash` of a block given as its little-endian u32 bytes."""
    return _xxh3(data, seed=XXH3_SEED)


def chain_hash(parent: int | None, local: int) -> int:
    """Sequence hash of a block given its parent's sequence hash (None for block 0)."""
    if parent is None:
        return local
    return _xxh3(_PAIR.pack(parent, local), seed=XXH3_SEED)


# xxh3_64 of a 16-byte input with seed XXH3_SEED (XXH3_len_9to16_64b): the input words are
# XORed with these words of the default secret (bytes 24..55) plus/minus the seed.
_BITFLIP1 = np.uint64(((0x1F67B3B7A4A44072 ^ 0x78E5C0CC4EE679CB) + XXH3_SEED) & 0xFFFFFFFFFFFFFFFF)
_BITFLIP2 = np.uint64(((0x2172FFCC7DD05A82 ^ 0x8E2443F7744608B8) - XXH3_SEED) & 0xFFFFFFFFFFFFFFFF)
_LO32 = np.uint64(0xFFFFFFFF)
_S32, _S37 = np.uint64(32), np.uint64(37)
_LEN16 = np.uint64(16)
_AVALANCHE = np.uint64(0x165667919E3779F9)


def chain_hash_array(parents: npt.NDArray[np.uint64], locals_: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """`chain_hash(parents[i], locals_[i])` for every i (parents never None), vectorised.

    xxh3_64(LE u64 parent || LE u64 local, seed=1337) written out for 16-byte inputs in
    uint64 arithmetic (wrapping mod 2^64, as the C code); the 128-bit product is folded
    from 32-bit halves as in xxhash's portable `XXH_mult64to128`.
    """
    lo = parents ^ _BITFLIP1
    hi = locals_ ^ _BITFLIP2
    a_lo, a_hi = lo & _LO32, lo >> _S32
    b_lo, b_hi = hi & _LO32, hi >> _S32
    lo_lo = a_lo * b_lo
    hi_lo = a_hi * b_lo
    lo_hi = a_lo * b_hi
    cross = (lo_lo >> _S32) + (hi_lo & _LO32) + lo_hi
    upper = (hi_lo >> _S32) + (cross >> _S32) + a_hi * b_hi
    lower = (cross << _S32) | (lo_lo & _LO32)
    acc = _LEN16 + lo.byteswap() + hi + (lower ^ upper)
    acc ^= acc >> _S37
    acc *= _AVALANCHE
    acc ^= acc >> _S32
    out: npt.NDArray[np.uint64] = acc
    return out


def _chain_of_uniform(parent: int | None, local: int, count: int) -> list[int]:
    """Sequence hashes of `count` consecutive blocks that all have local hash `local`
    (`chain_hash` unrolled: this runs once per engine block of every new trace block)."""
    chain: list[int] = []
    if parent is None:
        parent = local
        chain.append(local)
        count -= 1
    pack, xxh3 = _PAIR.pack, _xxh3
    for _ in range(count):
        parent = xxh3(pack(parent, local), seed=XXH3_SEED)
        chain.append(parent)
    return chain


_GEN_A = 0x9E3779B1
_GEN_B = 0x85EBCA77


def generated_token_id(salt: int, index: int) -> int:
    """Token id of the `index`-th generated token of the request with this salt (u32)."""
    return ((salt + 1) * _GEN_A + index * _GEN_B) & _U32


def generated_token_ids(salt: int, start: int, end: int) -> npt.NDArray[np.uint32]:
    """`generated_token_id(salt, i)` for i in [start, end), vectorised (u64 arithmetic wraps mod 2^64)."""
    idx = np.arange(start, end, dtype=np.uint64)
    base = np.uint64(((salt + 1) * _GEN_A) & 0xFFFFFFFFFFFFFFFF)
    return ((base + idx * np.uint64(_GEN_B)) & np.uint64(_U32)).astype(np.uint32)


def generated_token_bytes(salt: int, start: int, end: int) -> bytes:
    """`generated_token_ids(salt, start, end)` as little-endian u32 bytes, in plain Python
    (a decode block is a few dozen tokens: cheaper than building numpy arrays)."""
    base = (salt + 1) * _GEN_A
    ids = [(base + i * _GEN_B) & _U32 for i in range(start, end)]
    return struct.pack(f"<{len(ids)}I", *ids)


class PromptHasher:
    """Sequence and local hashes of prompt blocks, memoised per trace-id prefix.

    When the engine block size divides the trace block size, every engine block
    inside one trace block holds identical tokens, so a trie node per trace id
    stores the chain of its engine blocks; a partial last trace block uses a
    prefix of that chain. Otherwise prompts are hashed directly from tokens.
    """

    def __init__(self, block_size: int, trace_block_size: int) -> None:
        if block_size <= 0 or trace_block_size <= 0:
            raise ValueError("block sizes must be positive")
        self.block_size = block_size
        self.trace_block_size = trace_block_size
        self._aligned = trace_block_size % block_size == 0
        self._per_trace = trace_block_size // block_size if self._aligned else 0
        self._uniform_local: dict[int, int] = {}
        # trie node: hash_id -> [seq hashes of its engine blocks, their local hash, children, visits left]
        # (visits left: None = kept for good; n = `prewarm` counted n prompts through it, and the
        # n-th `hash_prompt` through it drops it, so a workload's unshared suffixes do not stay)
        self._root: dict[int, list[Any]] = {}

    def _uniform(self, token: int) -> int:
        """Local hash of a block of `block_size` copies of one token."""
        h = self._uniform_local.get(token)
        if h is None:
            h = _xxh3(token.to_bytes(4, "little") * self.block_size, seed=XXH3_SEED)
            self._uniform_local[token] = h
        return h

    def prompt_tokens(self, hash_ids: tuple[int, ...], input_length: int) -> npt.NDArray[np.uint32]:
        ids = np.array([trace_token_id(h) for h in hash_ids], dtype=np.uint32)
        return np.repeat(ids, self.trace_block_size)[:input_length]

    def hash_prompt(self, hash_ids: tuple[int, ...], input_length: int) -> tuple[list[int], list[int]]:
        """(sequence hashes, local hashes) of the prompt's full engine blocks."""
        num_full = input_length // self.block_size
        if not self._aligned:
            return self._hash_tokens(self.prompt_tokens(hash_ids, input_length), num_full)
        seqs: list[int] = []
        locals_: list[int] = []
        node = self._root
        parent: int | None = None
        per = self._per_trace
        for hid in hash_ids:
            if len(seqs) >= num_full:
                break
            entry = node.get(hid)
            if entry is None:
                local = self._uniform(trace_token_id(hid))
                entry = [_chain_of_uniform(parent, local, per), local, {}, None]
                node[hid] = entry
            chain, local, children, left = entry
            if left is not None:
                if left <= 1:
                    del node[hid]  # the last prompt prewarm counted through it
                else:
                    entry[3] = left - 1
            take = num_full - len(seqs)
            if take >= per:
                seqs.extend(chain)
                locals_.extend([local] * per)
            else:
                seqs.extend(chain[:take])
                locals_.extend([local] * take)
            parent = chain[-1]
            node = children
        return seqs, locals_

    def prewarm(self, prompts: Iterable[tuple[tuple[int, ...], int]]) -> None:
        """Memoise the chains of every `(hash_ids, input_length)` prompt at once.

        `hash_prompt` then finds them in the trie instead of hashing block by block. The
        trie gets exactly the nodes `hash_prompt` would create for these prompts, with the
        same chains: new nodes are made depth by depth, each depth's chains hashed together
        (`chain_hash_array`, one step per engine block of a trace block). Each node counts the
        prompts through it; once that many `hash_prompt` calls went through, it is dropped
        (a prompt hashed again after that, e.g. a migrated request, hashes it afresh).
        """
        if not self._aligned:
            return
        per, bs = self._per_trace, self.block_size
        # cursors: (trie level, parent's last sequence hash, hash ids, trace blocks hash_prompt visits)
        cursors: list[tuple[dict[int, Any], int | None, tuple[int, ...], int]] = []
        for hash_ids, input_length in prompts:
            visits = min(len(hash_ids), -(-(input_length // bs) // per))
            if visits:
                cursors.append((self._root, None, hash_ids, visits))
        depth = 0
        while cursors:
            pending: list[tuple[dict[int, Any], int, int | None]] = []
            for level, parent, hash_ids, _ in cursors:
                hid = hash_ids[depth]
                entry = level.get(hid)
                if entry is None:
                    level[hid] = [None, 0, None, 1]  # claimed; hashed below
                    pending.append((level, hid, parent))
                elif entry[3] is not None:
                    entry[3] += 1
            if pending:
                locals_ = [self._uniform(trace_token_id(hid)) for _, hid, _ in pending]
                chains = self._chains([parent for _, _, parent in pending], locals_, per)
                for (level, hid, _), chain, local in zip(pending, chains, locals_):
                    entry = level[hid]
                    entry[0], entry[1], entry[2] = chain, local, {}
            depth += 1
            nxt: list[tuple[dict[int, Any], int | None, tuple[int, ...], int]] = []
            for level, _, hash_ids, visits in cursors:
                if depth < visits:
                    chain, _, children, _ = level[hash_ids[depth - 1]]
                    nxt.append((children, chain[-1], hash_ids, visits))
            cursors = nxt

    @staticmethod
    def _chains(parents: list[int | None], locals_: list[int], count: int) -> list[list[int]]:
        """`_chain_of_uniform(parents[i], locals_[i], count)` for every i."""
        if len(parents) < 4:
            return [_chain_of_uniform(p, loc, count) for p, loc in zip(parents, locals_)]
        loc = np.array(locals_, dtype=np.uint64)
        root = np.array([p is None for p in parents])
        par = np.array([0 if p is None else p for p in parents], dtype=np.uint64)
        out = np.empty((len(parents), count), dtype=np.uint64)
        cur = chain_hash_array(par, loc)
        if root.any():
            cur = np.where(root, loc, cur)
        out[:, 0] = cur
        for j in range(1, count):
            cur = out[:, j] = chain_hash_array(cur, loc)
        chains: list[list[int]] = out.tolist()
        return chains

    def _hash_tokens(self, tokens: npt.NDArray[np.uint32], num_full: int) -> tuple[list[int], list[int]]:
        seqs: list[int] = []
        locals_: list[int] = []
        parent: int | None = None
        bs = self.block_size
        data = tokens.astype("<u4")
        for i in range(num_full):
            local = _xxh3(data[i * bs:(i + 1) * bs].tobytes(), seed=XXH3_SEED)
            parent = chain_hash(parent, local)
            seqs.append(parent)
            locals_.append(local)
        return seqs, locals_


class PromptHashers:
    """One `PromptHasher` per (engine block size, trace block size), shared by the ranks of a host
    so requests that share a prefix hash it once however they are spread over ranks."""

    __slots__ = ("_by_sizes",)

    def __init__(self) -> None:
        self._by_sizes: dict[tuple[int, int], PromptHasher] = {}

    def get(self, block_size: int, trace_block_size: int) -> PromptHasher:
        key = (block_size, trace_block_size)
        hasher = self._by_sizes.get(key)
        if hasher is None:
            hasher = self._by_sizes[key] = PromptHasher(block_size, trace_block_size)
        return hasher
