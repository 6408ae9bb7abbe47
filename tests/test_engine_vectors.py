"""The fact sheet's test vectors (facts §a, §b, §c, §e, §h), reproduced end to end."""

from __future__ import annotations

import numpy as np
import pytest

from actors.engine.hashing import PromptHasher, chain_hash, local_hash, trace_token_id
from actors.engine.timing.models import InterpolatedTiming, PolynomialTiming, batched_new_tokens
from tests.engine_helpers import replay, unique_ids

CAP = 16384 * 64
POLY = PolynomialTiming(CAP)


def P(tokens: int) -> float:
    return POLY.prefill_ms([tokens], [0])


def D(active: int) -> float:
    return float(POLY.decode_ms(np.array([float(active)]), 1)[0])


@pytest.mark.parametrize("tokens, expected", [
    (1, 16.516604), (64, 17.474885), (512, 24.385704), (1024, 32.490712),
    (2048, 49.362902), (4096, 85.75598), (8192, 169.136918),
])
def test_prefill_polynomial_vectors(tokens: int, expected: float) -> None:
    assert P(tokens) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("active, expected", [(1025, 5.792771), (100000, 10.656691), (524288, 26.31), (CAP, 34.01)])
def test_decode_polynomial_vectors(active: int, expected: float) -> None:
    assert D(active) == pytest.approx(expected, abs=1e-6)


def test_empty_prefill_costs_nothing_and_batches_use_integer_means() -> None:
    assert POLY.prefill_ms([], []) == 0.0
    assert batched_new_tokens([1000, 301], [0, 0]) == 1300
    assert POLY.prefill_ms([1000, 301], [0, 0]) == pytest.approx(P(1300))


def test_lone_request_ttft_gaps_and_e2e() -> None:
    rec = replay([(0.0, 1024, 4, unique_ids(1000, 16))]).records[0]
    assert rec.first_token_ms == pytest.approx(32.490712, abs=1e-6)
    assert rec.ttst_ms == pytest.approx(D(1025), abs=1e-9)
    assert rec.terminal_ms == pytest.approx(P(1024) + D(1025) + D(1026) + D(1027), abs=1e-9)
    assert rec.terminal_ms == pytest.approx(49.86918, abs=1e-5)


def test_chunked_prefill_alone_takes_two_passes() -> None:
    rec = replay([(0.0, 10000, 2, unique_ids(1000, 157))]).records[0]
    assert rec.first_token_ms == pytest.approx(214.466186, abs=1e-6)
    assert rec.first_token_ms == pytest.approx(P(8192) + P(1808), abs=1e-9)


def test_chunked_prefill_next_to_a_decoder_shares_the_budget() -> None:
    # A (1024 tokens) is decoding when B (10000 tokens) arrives: B's chunks are 8191 then 1809.
    a_ttft = P(1024)
    res = replay([(0.0, 1024, 50, unique_ids(1, 16)), (a_ttft, 10000, 2, unique_ids(5000, 157))])
    b = res.records[1]
    d1, d2 = D(1025), D(1026)
    expected = a_ttft + (P(8191) + d1) + (P(1809) + d2)
    assert b.first_token_ms == pytest.approx(expected, abs=1e-9)


def test_identical_pair_reuses_960_in_the_same_pass() -> None:
    ids = unique_ids(1000, 16)
    res = replay([(0.0, 1024, 2, ids), (0.0, 1024, 2, ids)])
    first, second = res.records
    assert first.first_token_ms == pytest.approx(33.519358, abs=1e-6) == second.first_token_ms
    assert (first.reused_input_tokens, second.reused_input_tokens) == (0, 960)


def test_full_cache_hit_recomputes_the_last_block() -> None:
    ids = unique_ids(1000, 16)
    res = replay([(0.0, 1024, 2, ids), (1000.0, 1024, 2, ids)])
    second = res.records[1]
    assert second.reused_input_tokens == 960
    assert second.ttft_ms == pytest.approx(P(64), abs=1e-9)


def test_mixed_pass_is_prefill_plus_decode_of_earlier_decoders() -> None:
    # A decodes; B (512 tokens) arrives when A's length is 1030: B's TTFT = rest of A's pass + P(512) + D(1030).
    a_ttft = P(1024)
    t = a_ttft + D(1025) + D(1026) + D(1027) + D(1028) + D(1029)
    res = replay([(0.0, 1024, 100, unique_ids(1, 16)), (t - 0.001, 512, 3, unique_ids(500, 8))])
    b = res.records[1]
    assert b.first_token_ms == pytest.approx(t + P(512) + D(1030), abs=1e-9)


def test_speedup_scales_prefill_and_decode_with_floor_before_scaling() -> None:
    res = replay([(0.0, 1024, 3, unique_ids(1, 16))], engine={"speedup_ratio": 2, "decode_speedup_ratio": 3})
    rec = res.records[0]
    assert rec.ttft_ms == pytest.approx(16.245356, abs=1e-6)
    assert rec.ttst_ms == pytest.approx(D(1025) / 6, abs=1e-9)
    assert rec.ttst_ms == pytest.approx(0.965462, abs=1e-6)


def test_speedup_zero_means_no_modelled_delay() -> None:
    rec = replay([(5.0, 1024, 3, unique_ids(1, 16))], engine={"speedup_ratio": 0}).records[0]
    assert rec.first_token_ms == rec.terminal_ms == 5.0


def test_trace_blocks_expand_to_engine_blocks() -> None:
    # trace block 512, engine block 64: a shared first id reuses 512 tokens of a 700-token prompt.
    res = replay([(0.0, 700, 2, [7, 8]), (1000.0, 700, 2, [7, 9])], trace_block_size=512)
    assert res.records[1].reused_input_tokens == 512


def test_prompt_hasher_matches_direct_token_hashing() -> None:
    hasher = PromptHasher(64, 512)
    ids = (3, 99, 12345678901)
    seqs, locals_ = hasher.hash_prompt(ids, 1500)
    tokens = np.repeat(np.array([trace_token_id(i) for i in ids], dtype=np.uint32), 512)[:1500]
    parent = None
    for i in range(1500 // 64):
        local = local_hash(tokens[i * 64:(i + 1) * 64])
        parent = chain_hash(parent, local)
        assert (seqs[i], locals_[i]) == (parent, local)
    assert len(seqs) == 1500 // 64
    unaligned = PromptHasher(96, 512).hash_prompt(ids, 1500)
    assert len(unaligned[0]) == 1500 // 96


def test_hash_vectors() -> None:
    a = local_hash([1, 2, 3, 4])
    b = local_hash([5, 6, 7, 8])
    assert a == 14643705804678351452
    assert b == 16777012769546811212
    assert chain_hash(a, b) == 4945711292740353085
    assert local_hash([5, 5, 5, 5]) == 3680150612935552118
    assert chain_hash(None, a) == a


def test_interpolated_model_vectors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "perf.npz"
    np.savez(path, prefill_isl=np.array([0.0, 10000.0]), prefill_ttft_ms=np.array([10.0, 110.0]),
             decode_active_kv_tokens=np.array([0.0, 1e6]), decode_context_length=np.array([1.0, 1e5]),
             decode_itl=np.array([[2.0, 4.0], [12.0, 14.0]]))
    model = InterpolatedTiming.from_npz(path)
    assert model.prefill_ms([1024], [0]) == pytest.approx(20.24, abs=1e-9)
    assert float(model.decode_ms(np.array([1025.0]), 1)[0]) == pytest.approx(2.030730, abs=1e-6)
    low = InterpolatedTiming(np.array([0.0, 1.0]), np.array([1.0, 1.0]), np.array([0.0, 1.0]),
                             np.array([1.0, 2.0]), np.array([[0.51, 0.51], [0.51, 0.51]]))
    assert float(low.decode_ms(np.array([0.5]), 1)[0]) == 1.0
    # extrapolation past the table
    assert model.prefill_ms([20000], [0]) == pytest.approx(210.0)
    res = replay([(0.0, 1024, 2, unique_ids(1, 16))],
                 engine={"timing_model": {"type": "interpolated", "path": str(path)}})
    assert res.records[0].ttft_ms == pytest.approx(20.24, abs=1e-9)


def test_interpolated_model_rejects_bad_tables(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.npz"
    np.savez(path, prefill_isl=np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="lacks arrays"):
        InterpolatedTiming.from_npz(path)


def test_token_synthesis_matches_the_per_token_definition() -> None:
    from actors.engine.hashing import generated_token_id
    from actors.engine.request import EngineRequest, RankRequest

    hasher = PromptHasher(64, 512)
    for salt in (0, 5, 123456789):
        req = EngineRequest(RankRequest(salt, 700, 500, (3, 2**40 + 7), 512), hasher)
        for a, b in [(0, 64), (640, 704), (690, 760), (700, 900), (512, 700)]:
            expected = [trace_token_id(req.hash_ids[p // 512]) if p < 700 else generated_token_id(salt, p - 700)
                        for p in range(a, b)]
            assert list(req.tokens(a, b)) == expected, (salt, a, b)


def test_trace_token_ids_truncate_small_ids_and_keep_synthetic_groups_apart() -> None:
    assert trace_token_id(7) == 7 and trace_token_id(0xFFFFFFFF) == 0xFFFFFFFF
    group_a = (0xD00D << 48) | (1 << 32) | 5
    group_b = (0xD00D << 48) | (2 << 32) | 5
    assert trace_token_id(group_a) != trace_token_id(group_b)
