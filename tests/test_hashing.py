"""The vectorised hash paths equal the scalar ones they replace, value for value.

- `chain_hash_array` (xxh3_64 of 16 bytes in numpy) against `chain_hash` (the xxhash C code);
- `PromptHasher.prewarm` builds the same trie, so `hash_prompt` returns the same hashes, as
  hashing prompt by prompt (shared prefixes, partial last trace blocks, unaligned sizes).
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.engine.hashing import PromptHasher, chain_hash, chain_hash_array

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


def _trie(node: dict[int, object]) -> dict[int, object]:
    return {k: (v[0], v[1], _trie(v[2])) for k, v in node.items()}  # type: ignore[index]


PROMPT = st.lists(st.integers(min_value=0, max_value=5), min_size=1, max_size=12).flatmap(
    lambda ids: st.tuples(st.just(tuple(ids)), st.integers(min_value=0, max_value=len(ids) * 64)))


@settings(derandomize=True, max_examples=60, deadline=None)
@given(st.lists(PROMPT, min_size=1, max_size=40), st.sampled_from([(16, 64), (64, 64), (32, 64), (48, 64)]),
       st.integers(min_value=0, max_value=3))
def test_prewarm_gives_the_tries_and_hashes_of_hashing_one_by_one(
        prompts: list[tuple[tuple[int, ...], int]], sizes: tuple[int, int], warm_first: int) -> None:
    block, trace_block = sizes
    one_by_one = PromptHasher(block, trace_block)
    expected = [one_by_one.hash_prompt(ids, n) for ids, n in prompts]
    warmed = PromptHasher(block, trace_block)
    for ids, n in prompts[:warm_first]:  # prewarm on top of a trie that already has nodes
        warmed.hash_prompt(ids, n)
    warmed.prewarm(prompts)
    assert _trie(warmed._root) == _trie(one_by_one._root)
    assert [warmed.hash_prompt(ids, n) for ids, n in prompts] == expected
    assert _trie(warmed._root) == _trie(one_by_one._root)
