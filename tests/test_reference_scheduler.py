"""The engine rank against an independent naive vLLM rank (tests/reference_scheduler).

Random single-rank workloads (integer and float arrival times, shared prefixes, small pools
that force eviction and preemption, chunked prefill on and off, prefix caching on and off,
LIFO and FIFO preemption) run through `RankCore` (macro-stepped and pass by pass) and through
the naive model; every request's status, first/second/last token and end times agree to
1e-9 ms, and so do its prefix reuse, preemption count, output length, and the multiset of
inter-token gaps.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.engine.config import EngineConfig
from actors.engine.hashing import PromptHashers
from actors.engine.protocol import RankOutput
from actors.engine.records import EngineRecord, GapLog
from actors.engine.request import RankRequest
from actors.engine.scheduler.core import RankCore
from actors.engine.timing.models import PolynomialTiming
from tests.reference_scheduler.rank import Config, NaiveRank, Record, Req

TOL_MS = 1e-9

Spec = tuple[float, int, int, int]
"""(arrival ms, input tokens, output tokens, prefix group)."""


def block_ids(isl: int, group: int, bs: int, rid: int) -> tuple[int, ...]:
    """Trace hash ids: a group shares its leading blocks; group 0 means a unique prompt."""
    n = -(-isl // bs)
    if group == 0:
        return tuple(10_000_000 + 1000 * rid + k for k in range(n))
    return tuple(1000 * group + k for k in range(n))


def run_engine(specs: list[Spec], cfg: Config, macro: bool) -> tuple[dict[int, tuple[str, EngineRecord]], list[float]]:
    config = EngineConfig(block_size=cfg.block_size, num_gpu_blocks=cfg.num_gpu_blocks, max_num_seqs=cfg.max_num_seqs,
                          max_num_batched_tokens=cfg.max_num_batched_tokens, enable_chunked_prefill=cfg.chunked,
                          enable_prefix_caching=cfg.caching, preemption_mode="lifo" if cfg.lifo else "fifo")
    gaps = GapLog()
    rank = RankCore(config, PolynomialTiming(cfg.num_gpu_blocks * cfg.block_size), gaps, PromptHashers(),
                    macro_step=macro)
    arrivals = sorted((t, rid, isl, osl, g) for rid, (t, isl, osl, g) in enumerate(specs))
    ended: dict[int, tuple[str, EngineRecord]] = {}

    def took(out: RankOutput) -> None:
        for f in out.finished:
            ended[f.request_id] = (f.status.value, f.record)

    i = 0
    while i < len(arrivals) or not rank.is_idle:
        due = rank.next_due_ms()
        t_next = arrivals[i][0] if i < len(arrivals) else None
        if due is not None and (t_next is None or due <= t_next):  # a pass end comes before arrivals then
            took(rank.advance(due))
            now = due
        elif t_next is not None:
            now = t_next
            while i < len(arrivals) and arrivals[i][0] == t_next:
                _, rid, isl, osl, g = arrivals[i]
                refused = rank.submit(RankRequest(rid, isl, osl, block_ids(isl, g, cfg.block_size, rid),
                                                  cfg.block_size), now)
                if refused is not None:
                    ended[refused.request_id] = (refused.status.value, refused.record)
                i += 1
        else:
            break
        if not rank.busy:
            took(rank.begin(now))
    values, weights = gaps.arrays()
    return ended, [float(v) for v, w in zip(values, weights) for _ in range(int(w))]


def run_model(specs: list[Spec], cfg: Config) -> tuple[dict[int, Record], list[float]]:
    rank = NaiveRank(cfg)
    reqs = [(float(t), Req(rid, isl, osl, block_ids(isl, g, cfg.block_size, rid)))
            for rid, (t, isl, osl, g) in enumerate(specs)]
    records = rank.run(reqs)
    gaps = sorted(b - a for r in records.values() for a, b in zip(r.token_ms, r.token_ms[1:]))
    return records, gaps


def close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and abs(a - b) <= TOL_MS)


def check(specs: list[Spec], cfg: Config, macro: bool) -> None:
    engine, engine_gaps = run_engine(specs, cfg, macro)
    model, model_gaps = run_model(specs, cfg)
    for rid, want in model.items():
        status, got = engine.get(rid, ("incomplete", None))  # type: ignore[arg-type]
        assert status == want.status, (rid, status, want)
        if got is None:
            continue
        for name in ("first_token_ms", "second_token_ms", "last_token_ms", "end_ms"):
            assert close(getattr(got, name), getattr(want, name)), (rid, name, getattr(got, name), getattr(want, name))
        assert (got.reused_input_tokens, got.num_preemptions, got.output_length) == (
            want.reused_input_tokens, want.num_preemptions, want.output_length), rid
    assert len(engine_gaps) == len(model_gaps)
    assert all(abs(a - b) <= TOL_MS for a, b in zip(sorted(engine_gaps), model_gaps))


ARRIVAL = st.one_of(st.integers(0, 400).map(float), st.floats(0.0, 400.0, allow_nan=False))
SPECS = st.lists(st.tuples(ARRIVAL, st.integers(1, 90), st.integers(1, 30), st.integers(0, 3)), min_size=1, max_size=20)
CONFIGS = st.builds(
    Config,
    block_size=st.sampled_from([4, 8, 16]),
    num_gpu_blocks=st.integers(8, 60),
    max_num_seqs=st.integers(1, 5),
    max_num_batched_tokens=st.sampled_from([16, 32, 64, 128, 256]),
    chunked=st.booleans(),
    caching=st.booleans(),
    lifo=st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(specs=SPECS, cfg=CONFIGS, macro=st.booleans())
def test_engine_equals_the_naive_reference_rank(specs: list[Spec], cfg: Config, macro: bool) -> None:
    check(specs, cfg, macro)


CROWDED = st.lists(st.tuples(st.integers(0, 30).map(float), st.integers(4, 40), st.integers(10, 40), st.integers(0, 3)),
                   min_size=2, max_size=12)
"""Requests that arrive together and decode long on a small pool: preemption and recompute."""
SMALL_POOLS = st.builds(Config, block_size=st.sampled_from([4, 8]), num_gpu_blocks=st.integers(10, 24),
                        max_num_seqs=st.integers(2, 6), max_num_batched_tokens=st.sampled_from([32, 64, 128]),
                        chunked=st.booleans(), caching=st.booleans(), lifo=st.booleans())


@settings(max_examples=100, deadline=None)
@given(specs=CROWDED, cfg=SMALL_POOLS, macro=st.booleans())
def test_engine_equals_the_naive_reference_rank_under_preemption(specs: list[Spec], cfg: Config, macro: bool) -> None:
    check(specs, cfg, macro)


@pytest.mark.soak
@settings(max_examples=3000, deadline=None)
@given(specs=SPECS, cfg=CONFIGS, macro=st.booleans())
def test_engine_equals_the_naive_reference_rank_soak(specs: list[Spec], cfg: Config, macro: bool) -> None:
    check(specs, cfg, macro)


def test_two_identical_prompts_in_one_pass_share_blocks() -> None:
    """Facts [EXP 15]-like: the second of two identical prompts admitted in one pass reuses the
    first one's full blocks (all but the last block), in both the engine and the model."""
    cfg = Config(block_size=16, num_gpu_blocks=64, max_num_seqs=4, max_num_batched_tokens=512)
    specs: list[Spec] = [(0.0, 64, 2, 1), (0.0, 64, 2, 1)]
    model, _ = run_model(specs, cfg)
    assert model[1].reused_input_tokens == 48
    check(specs, cfg, macro=False)
