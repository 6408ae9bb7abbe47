"""The Rust `StdRng` port (`cluster.workload.rust_rng`) and the synthetic generator's streams,
against ChaCha's published vector and streams recorded from the reference replay
(`tests/data/reference_arrivals/record.py`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cluster.workload.rust_rng import RustStdRng, chacha_blocks
from cluster.workload.synthetic import SyntheticSpec, arrival_times_ms, synthesize

STREAMS = json.loads((Path(__file__).parent / "data" / "reference_arrivals" / "streams.json").read_text())


def test_chacha20_zero_key_matches_the_published_keystream() -> None:
    """RFC 7539 A.1 vector 1 (all-zero key, nonce and counter), as rand_chacha's own test reads it."""
    words = chacha_blocks((0,) * 8, 0, 1, double_rounds=10)
    assert [int(w) for w in words] == [
        0xADE0B876, 0x903DF1A0, 0xE56A5D40, 0x28BD8653, 0xB819D2BD, 0x1AED8DA0, 0xCCEF36A8, 0xC70D778B,
        0x7C5941DA, 0x8D485751, 0x3FE02477, 0x374AD8B8, 0xF4B8436A, 0x1CA11815, 0x69B687C3, 0x8665EEB2,
    ]


def test_blocks_are_independent_of_how_they_are_batched() -> None:
    key = tuple(range(1, 9))
    together = chacha_blocks(key, 5, 6)
    apart = np.concatenate([chacha_blocks(key, 5 + i, 1) for i in range(6)])
    assert np.array_equal(together, apart)


def test_draws_share_one_word_stream() -> None:
    """next_u64 is two consecutive words (low first), also across a refill; f64 is its top 53 bits."""
    words = RustStdRng(9)
    flat = [words.next_u32() for _ in range(200)]
    mixed = RustStdRng(9)
    assert mixed.next_u32() == flat[0]
    pairs = [mixed.next_u64() for _ in range(99)]
    assert pairs == [flat[1 + 2 * i] | (flat[2 + 2 * i] << 32) for i in range(99)]
    assert mixed.next_u32() == flat[199]
    f = RustStdRng(9).f64s(100)
    assert np.array_equal(f, np.array([((flat[2 * i] | (flat[2 * i + 1] << 32)) >> 11) * 2.0 ** -53
                                       for i in range(100)]))
    assert np.all((f >= 0.0) & (f < 1.0))


@pytest.mark.parametrize("n", [1, 2, 3, 7, 20, 61, 1 << 16, (1 << 31) + 5, (1 << 32) - 1, 1 << 32])
def test_bulk_ranges_equal_single_draws(n: int) -> None:
    bulk, single = RustStdRng(n), RustStdRng(n)
    assert bulk.ranges(n, 3000) == [single.random_range(n) for _ in range(3000)]
    assert bulk.next_u32() == single.next_u32()  # both consumed the same words


def test_range_is_unbiased_enough_and_in_bounds() -> None:
    draws = np.array(RustStdRng(3).ranges(7, 70_000))
    assert draws.min() == 0 and draws.max() == 6
    assert np.all(np.abs(np.bincount(draws) - 10_000) < 500)


@pytest.mark.parametrize("case", STREAMS["arrivals"], ids=lambda c: f"seed{c['seed']}-rate{c['rate']}")
def test_poisson_arrivals_equal_the_reference(case: dict[str, Any]) -> None:
    ref = case["arrival_ms"]
    spec = SyntheticSpec(input_tokens=16, output_tokens=2, request_count=len(ref), request_rate=case["rate"],
                         arrival_seed=case["seed"])
    ours = arrival_times_ms(spec)
    assert len(ours) == len(ref) == 200
    assert np.max(np.abs(np.array(ours) - np.array(ref))) <= 1e-9
    # prefix groups, turns and length noise draw from the other stream: arrivals do not move
    noisy = spec.model_copy(update={"shared_prefix_ratio": 0.5, "num_prefix_groups": 9, "turns_per_session": 3,
                                    "input_stddev": 4.0})
    assert [s.start_ms for s in synthesize(noisy).sessions] == ours


@pytest.mark.parametrize("case", STREAMS["constant"], ids=lambda c: f"interval{c['interval_ms']}")
def test_constant_arrivals_equal_the_reference_bit_for_bit(case: dict[str, Any]) -> None:
    ref = case["arrival_ms"]
    spec = SyntheticSpec(input_tokens=16, output_tokens=2, request_count=len(ref),
                         arrival_interval_ms=case["interval_ms"])
    assert arrival_times_ms(spec) == ref


@pytest.mark.parametrize("case", STREAMS["groups"], ids=lambda c: f"seed{c['arrival_seed']}-g{c['groups']}")
def test_prefix_groups_equal_the_reference(case: dict[str, Any]) -> None:
    """A request reuses its 64 prefix tokens exactly when an earlier session has its group; the
    reference draws groups from a stream seeded 42 whatever its arrival seed."""
    ref = case["reused_input_tokens"]
    spec = SyntheticSpec(input_tokens=128, output_tokens=2, request_count=len(ref), arrival_interval_ms=1000.0,
                         arrival_seed=case["arrival_seed"], shared_prefix_ratio=0.5,
                         num_prefix_groups=case["groups"], block_size=16)
    seen: set[tuple[int, ...]] = set()
    predicted = []
    for session in synthesize(spec).sessions:
        prefix = session.turns[0].hash_ids[:4]
        predicted.append(64 if prefix in seen else 0)
        seen.add(prefix)
    assert predicted == ref
    assert 0 < sum(r > 0 for r in ref) < len(ref)


def test_no_groups_means_no_shared_prefix() -> None:
    """As the reference: num_prefix_groups 0 shares nothing, whatever the ratio."""
    w = synthesize(SyntheticSpec(input_tokens=128, output_tokens=2, request_count=5, shared_prefix_ratio=0.5,
                                 num_prefix_groups=0, block_size=16))
    ids = [h for s in w.sessions for t in s.turns for h in t.hash_ids]
    assert ids == list(range(1, 41))
