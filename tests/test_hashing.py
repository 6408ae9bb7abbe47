"""The vectorised hash paths equal the scalar ones they replace, value for value.

- `chain_hash_array` (xxh3_64 of 16 bytes in numpy) against `chain_hash` (the xxhash C code);
- `generated_token_bytes` and `EngineRequest.ensure_hashes` (blocks made in one go) against
  `generated_token_ids` and hashing block by block;
- `PromptHasher.prewarm` builds the same trie, so `hash_prompt` returns the same hashes, as
  hashing prompt by prompt (shared prefixes, partial last trace blocks, unaligned sizes), and
  drops what it made once the prompts it counted were hashed.
"""

from __future__ import annotations

import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.engine.hashing import (PromptHasher, chain_hash, chain_hash_array, generated_token_bytes, generated_token_ids,
                                   local_hash)
from actors.engine.request import EngineRequest, RankRequest

U64 = st.integers(min_value=0, max_value=2**64 - 1)


@settings(derandomize=True, max_examples=50, deadline=None)
@given(st.lists(st.tuples(U64, U64), min_size=1, max_size=300))
def test_chain_hash_array_is_chain_hash(pairs: list[tuple[int, int]]) -> None:
    parents = np.array([p for p, _ in pairs], dtype=np.uint64)
    locals_ = np.array([x for _, x in pairs], dtype=np.uint64)
    assert chain_hash_array(parents, locals_).tolist() == [chain_hash(p, x) for p, x in pairs]


def test_chain_hash_array_edges() -> None:
    edge = [0, 1, 2**32 - 1, 2**32, 2**63, 2**64 - 1]
    pairs = [(p, x) for p in edge for x in edge]
    got = chain_hash_array(np.array([p for p, _ in pairs], dtype=np.uint64),
                           np.array([x for _, x in pairs], dtype=np.uint64)).tolist()
    assert got == [chain_hash(p, x) for p, x in pairs]


def _trie(node: dict[int, list[object]]) -> dict[int, object]:
    """The trie's hashes (chains and locals by path), without the visit counts."""
    return {k: (v[0], v[1], _trie(v[2])) for k, v in node.items()}  # type: ignore[arg-type]


PROMPT = st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=12).flatmap(
    lambda ids: st.tuples(st.just(tuple(ids)), st.integers(min_value=0, max_value=len(ids) * 64)))


@settings(derandomize=True, max_examples=60, deadline=None)
@given(st.lists(PROMPT, min_size=1, max_size=40), st.sampled_from([(16, 64), (64, 64), (32, 64), (48, 64)]),
       st.integers(min_value=0, max_value=3), st.randoms(use_true_random=False))
def test_prewarm_gives_the_tries_and_hashes_of_hashing_one_by_one(
        prompts: list[tuple[tuple[int, ...], int]], sizes: tuple[int, int], warm_first: int, rnd: random.Random) -> None:
    """Prewarmed, the trie holds what hashing one by one builds; the prompts, hashed in any
    order (some twice), get the same hashes; once each prewarmed prompt was hashed, nothing
    prewarm made is left."""
    block, trace_block = sizes
    one_by_one = PromptHasher(block, trace_block)
    expected = [one_by_one.hash_prompt(ids, n) for ids, n in prompts]
    warmed = PromptHasher(block, trace_block)
    for ids, n in prompts[:warm_first]:  # prewarm on top of a trie that already has (kept) nodes
        warmed.hash_prompt(ids, n)
    warmed.prewarm(prompts)
    assert _trie(warmed._root) == _trie(one_by_one._root)
    order = list(range(len(prompts)))
    rnd.shuffle(order)
    again = order[: len(order) // 3]
    for i in order + again:
        assert warmed.hash_prompt(*prompts[i]) == expected[i]
    kept = PromptHasher(block, trace_block)
    for ids, n in prompts[:warm_first]:
        kept.hash_prompt(ids, n)
    for i in again:  # re-hashed after their nodes were dropped: made afresh, kept
        kept.hash_prompt(*prompts[i])
    assert _trie(warmed._root) == _trie(kept._root)


@settings(derandomize=True, max_examples=80, deadline=None)
@given(st.integers(min_value=0, max_value=2**63), st.integers(min_value=0, max_value=5000),
       st.integers(min_value=0, max_value=300))
def test_generated_token_bytes_are_the_generated_ids(salt: int, start: int, count: int) -> None:
    assert generated_token_bytes(salt, start, start + count) == \
        generated_token_ids(salt, start, start + count).astype("<u4").tobytes()


@settings(derandomize=True, max_examples=60, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.integers(min_value=0, max_value=300),
       st.sampled_from([4, 16, 64]), st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=6))
def test_ensure_hashes_equals_hashing_block_by_block(prompt_len: int, generated: int, block: int,
                                                     steps: list[int]) -> None:
    """Extending in steps (prompt blocks, blocks across the prompt's end, decode blocks) gives
    the chain of `local_hash` / `chain_hash` over each block's tokens."""
    ids = tuple(range(7, 7 + -(-prompt_len // 64)))
    request = RankRequest(request_id=11, input_length=prompt_len, output_length=generated + 1, hash_ids=ids,
                          trace_block_size=64, generated_tokens=generated)
    req = EngineRequest(request, PromptHasher(block, 64))
    total = (prompt_len + generated) // block
    target = 0
    for step in steps:
        target = min(total, target + step)
        req.ensure_hashes(target, block)
    expect_seq: list[int] = []
    expect_local: list[int] = []
    for i in range(target):
        local = local_hash(req.tokens(i * block, (i + 1) * block))
        expect_seq.append(chain_hash(expect_seq[-1] if expect_seq else None, local))
        expect_local.append(local)
    assert req.hashes[:target] == expect_seq and req.locals[:target] == expect_local
