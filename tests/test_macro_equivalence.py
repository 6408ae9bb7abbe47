"""Macro-stepped decode runs give exactly the pass-by-pass results (DESIGN §5).

Random workloads (sharing prefixes, small KV pools that force eviction and
preemption, chunked prefill on and off, DP ranks, closed-loop concurrency) are
replayed twice; per-request timestamps must agree to 1e-9 ms and the KV event
streams must be identical.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.engine.records import RequestRecord
from actors.engine.scheduler.macro import boundary_crossings, crossing_passes
from cluster.runtime.shard import RunResult as SimulationResult
from tests.engine_helpers import replay

FIELDS = ("first_token_ms", "second_token_ms", "last_token_ms", "terminal_ms", "first_admit_ms")


def _request_view(rec: RequestRecord) -> tuple[Any, ...]:
    return (rec.output_length, rec.reused_input_tokens, rec.num_preemptions, rec.admission_count,
            rec.terminal_status, rec.worker_id, rec.dp_rank)


def assert_equivalent(a: SimulationResult, b: SimulationResult) -> None:
    assert len(a.records) == len(b.records)
    for ra, rb in zip(a.records, b.records):
        assert _request_view(ra) == _request_view(rb), ra.request_id
        for name in FIELDS:
            va, vb = getattr(ra, name), getattr(rb, name)
            assert (va is None) == (vb is None), (ra.request_id, name)
            if va is not None:
                assert va == pytest.approx(vb, abs=1e-9), (ra.request_id, name)
    assert len(a.kv_events) == len(b.kv_events)
    for ea, eb in zip(a.kv_events, b.kv_events):
        assert (ea.worker_id, ea.dp_rank, ea.event_id, ea.data) == (eb.worker_id, eb.dp_rank, eb.event_id, eb.data)
        assert ea.t_ms == pytest.approx(eb.t_ms, abs=1e-9)
    assert a.gaps.total_weight() == b.gaps.total_weight()
    assert sorted(a.gaps.arrays()[0].repeat(a.gaps.arrays()[1])) == pytest.approx(
        sorted(b.gaps.arrays()[0].repeat(b.gaps.arrays()[1])), abs=1e-9)


request_st = st.tuples(
    st.floats(0, 400, allow_nan=False),          # arrival
    st.integers(1, 700),                          # input tokens
    st.integers(1, 90),                           # output tokens
    st.integers(0, 3),                            # prefix family
    st.integers(0, 12),                           # shared blocks of the family
)


def _specs(reqs: list[tuple[float, int, int, int, int]], first_id: int) -> list[tuple[float, int, int, list[int]]]:
    """Request specs: each prompt starts with `shared` blocks of its prefix family, then unique ids."""
    specs = []
    next_id = first_id
    for t, isl, osl, family, shared in reqs:
        n_ids = -(-isl // 64)
        ids = [family * 100 + j for j in range(min(shared, n_ids))]
        ids += list(range(next_id, next_id + n_ids - len(ids)))
        next_id += n_ids
        specs.append((float(t), isl, osl, ids))
    return specs


@st.composite
def scenario(draw: st.DrawFn) -> dict[str, Any]:
    block_size = draw(st.sampled_from([4, 16, 64]))
    specs = _specs(draw(st.lists(request_st, min_size=1, max_size=14)), 10_000)
    engine = {
        "block_size": block_size,
        "num_gpu_blocks": draw(st.integers(12, 400)) * (64 // block_size),
        "max_num_seqs": draw(st.integers(1, 8)),
        "max_num_batched_tokens": draw(st.sampled_from([None, 64, 256, 8192])),
        "enable_chunked_prefill": draw(st.booleans()),
        "enable_prefix_caching": draw(st.booleans()),
        "preemption_mode": draw(st.sampled_from(["lifo", "fifo"])),
        "dp_size": draw(st.integers(1, 2)),
        "speedup_ratio": draw(st.sampled_from([1.0, 3.0])),
    }
    return {
        "specs": specs,
        "engine": engine,
        "num_workers": draw(st.integers(1, 2)),
        "concurrency": draw(st.sampled_from([None, 1, 3])),
    }


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_macro_stepping_equals_pass_by_pass(case: dict[str, Any]) -> None:
    check_macro_equivalence(case)


def check_macro_equivalence(case: dict[str, Any]) -> None:
    """A `scenario()` case replays the same macro-stepped and pass by pass (also the soak test's body)."""
    kwargs = dict(trace_block_size=64, num_workers=case["num_workers"], engine=case["engine"],
                  concurrency=case["concurrency"], collect_kv_events=True)
    macro = replay(case["specs"], macro_step=True, **kwargs)
    single = replay(case["specs"], macro_step=False, **kwargs)
    assert_equivalent(macro, single)


def test_macro_stepping_actually_skips_events() -> None:
    specs = [(float(i), 300, 400, list(range(100 * i, 100 * i + 5))) for i in range(6)]
    macro = replay(specs, macro_step=True, collect_kv_events=True)
    single = replay(specs, macro_step=False, collect_kv_events=True)
    assert_equivalent(macro, single)
    assert macro.num_events * 10 < single.num_events


def test_long_decode_with_eviction_and_preemption_pressure() -> None:
    # 8 long requests on a pool that cannot hold them all: preemption, re-admission and
    # eviction all happen inside and between decode runs.
    specs = [(float(3 * i), 200 + 37 * i, 300, [i % 2] + list(range(1000 * (i + 1), 1000 * (i + 1) + 8)))
             for i in range(8)]
    engine = {"block_size": 16, "num_gpu_blocks": 120, "max_num_seqs": 8}
    macro = replay(specs, engine=engine, collect_kv_events=True)
    single = replay(specs, engine=engine, collect_kv_events=True, macro_step=False)
    assert_equivalent(macro, single)
    assert sum(r.num_preemptions for r in macro.records) > 0
    assert all(r.output_length == 300 for r in macro.records)


def test_arrival_exactly_at_a_pass_end_inside_a_run() -> None:
    # B arrives at the exact end of A's third pass; the pass starting then must include B in both modes.
    first = replay([(0.0, 1024, 40, list(range(1, 17)))])
    a = first.records[0]
    from tests.test_engine_vectors import D  # the reference decode polynomial

    assert a.second_token_ms == a.first_token_ms + D(1025)  # D times the engine's decode passes
    t = a.first_token_ms + D(1025) + D(1026)  # end of the third pass, as the engine adds it
    specs = [(0.0, 1024, 40, list(range(1, 17))), (t, 256, 5, list(range(100, 104)))]
    macro = replay(specs, collect_kv_events=True)
    single = replay(specs, collect_kv_events=True, macro_step=False)
    assert_equivalent(macro, single)
    b = macro.records[1]
    assert b.first_admit_ms == t


@given(st.lists(st.integers(0, 5000), min_size=1, max_size=12), st.integers(1, 64), st.integers(1, 200),
       st.integers(0, 200))
@settings(max_examples=200, deadline=None)
def test_crossing_passes_are_the_passes_of_boundary_crossings(computed0: list[int], block_size: int, first: int,
                                                             span: int) -> None:
    last = first + span - 1
    expected = sorted({j for j, _ in boundary_crossings(computed0, block_size, first, last)})
    assert crossing_passes(computed0, block_size, first, last).tolist() == expected


# ---- integer times: messages and kills that land exactly on pass ends ------------------------------

int_request_st = st.tuples(
    st.integers(0, 150),                         # arrival, whole ms
    st.integers(1, 400),                         # input tokens
    st.integers(2, 60),                          # output tokens
    st.integers(0, 2),                           # prefix family
    st.integers(0, 6),                           # shared blocks of the family
)


@st.composite
def integer_case(draw: st.DrawFn) -> dict[str, Any]:
    """Fixed whole-millisecond pass times and whole-millisecond arrivals: many arrivals coincide with
    a pass end inside a decode run, where an off-by-one in cutting the run would show."""
    specs = _specs(draw(st.lists(int_request_st, min_size=2, max_size=10)), 20_000)
    engine = {
        "block_size": draw(st.sampled_from([4, 16])),
        "num_gpu_blocks": draw(st.integers(40, 400)),
        "max_num_seqs": draw(st.integers(1, 6)),
        "max_num_batched_tokens": draw(st.sampled_from([64, 256, 8192])),
        "timing_model": {"type": "fixed", "prefill_ms": draw(st.sampled_from([3.0, 5.0, 8.0])),
                         "decode_ms": draw(st.sampled_from([1.0, 2.0]))},
    }
    return {"specs": specs, "engine": engine, "num_workers": draw(st.integers(1, 2))}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(integer_case())
def test_arrivals_on_exact_pass_ends_are_the_same_macro_stepped(case: dict[str, Any]) -> None:
    check_integer_case(case)


def check_integer_case(case: dict[str, Any]) -> None:
    """An `integer_case()` replays the same macro-stepped and pass by pass (also the soak test's body)."""
    kwargs = dict(num_workers=case["num_workers"], engine=case["engine"], collect_kv_events=True)
    assert_equivalent(replay(case["specs"], macro_step=True, **kwargs),
                      replay(case["specs"], macro_step=False, **kwargs))


def _killed_run(specs: list[Any], engine: dict[str, Any], kill_ms: int, macro_step: bool) -> SimulationResult:
    from cluster.runtime.local import run_local
    from cluster.scenario.load import LoadedScenario
    from cluster.scenario.spec import Scenario
    from cluster.scenario.world import build_world
    from tests.engine_helpers import workload

    sc = Scenario.model_validate({
        "name": "kill", "deployments": [{"name": "agg", "replicas": 2, "engine": engine}],
        "router": {"mode": "round_robin"}, "faults": [{"at_s": kill_ms / 1000.0, "kill_worker": "agg-0"}]})
    world = build_world(LoadedScenario(sc), macro_step=macro_step, collect_kv_events=True, workload=workload(specs),
                        refuse_unfit=False)
    return run_local(world.setup)[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(integer_case(), st.integers(1, 120))
def test_a_kill_on_an_exact_pass_end_is_the_same_macro_stepped(case: dict[str, Any], kill_ms: int) -> None:
    """A kill at time t comes before the passes ending at t (CONTROL before FINISH): their tokens are lost."""
    macro = _killed_run(case["specs"], case["engine"], kill_ms, True)
    single = _killed_run(case["specs"], case["engine"], kill_ms, False)
    assert_equivalent(macro, single)
    assert [r.reason for r in macro.records] == [r.reason for r in single.records]
