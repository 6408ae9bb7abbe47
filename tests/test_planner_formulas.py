"""The planner's formulas against worked examples checked with the reference planner's code.

Expected values were computed with dynamo 1.6.1's own functions (`planner/core/budget.py`
`proportional_clamp_single` / `proportional_clamp_pair`, `core/load/predictors.py`
`LOAD_PREDICTORS[...]` on SERIES, `core/load_scaling.py` `_scale_decision`) in the reference
venv, and are written here so the test needs no reference.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from actors.engine.timing.models import FixedTiming, PolynomialTiming
from planner.config import SlaPlannerConfig, parse_planner_config
from planner.load import EASY_THRESHOLDS, consolidation, easy_decode, easy_prefill, scale_decision
from planner.perf_model import EnginePerf
from planner.predictors import PREDICTORS
from planner.budget import clamp_pair, clamp_single
from planner.throughput import (
    cap_replicas,
    classic_budget,
    classic_decode_replicas,
    classic_itl_target,
    classic_prefill_replicas,
    decode_correction,
    prefill_correction,
    replicas_for,
)

# (desired, engine_gpu, min_gpus, max_gpus, min_endpoint) -> reference proportional_clamp_single
SINGLE = [((10, 1, -1, 8, 1), 8), ((10, 2, -1, 8, 1), 4), ((3, 2, -1, 8, 1), 3), ((1, 1, 6, 8, 1), 6),
          ((1, 2, -1, 1, 1), 0), ((5, 1, 4, 8, 2), 5)]
# (p, d, p_gpu, d_gpu, min_gpus, max_gpus, min_endpoint) -> reference proportional_clamp_pair
PAIR = [((6, 10, 1, 1, -1, 8, 1), (3, 5)), ((3, 9, 2, 1, -1, 8, 1), (1, 6)), ((1, 1, 1, 1, 6, 10, 1), (3, 3)),
        ((2, 3, 2, 2, -1, 4, 1), (1, 1)), ((1, 1, 1, 1, -1, 1, 1), (0, 0)), ((0, 0, 1, 1, 5, 10, 1), (3, 2))]

SERIES = [0, 0, 12.0, 15.0, 11.0, math.nan, 18.0, 22.0, 19.0, 25.0, 30.0, 28.0, 35.0, 33.0, 40.0, 38.0, 45.0]
REFERENCE_PREDICTIONS = {
    "constant": [0, 0, 12.0, 15.0, 11.0, 0, 18.0, 22.0, 19.0, 25.0, 30.0, 28.0, 35.0, 33.0, 40.0, 38.0, 45.0],
    "arima": [0, 0, 12.0, 15.0, 11.0, 0.0, 7.613896245849644, 9.145783387994909, 10.17870684111955,
              11.422642521827683, 12.751193553914238, 13.816431108622165, 15.061868672799328, 16.097613929576045,
              17.287553085932327, 18.30405615540293, 19.45453444083187],
    "kalman": [0, 0, 12.0, 15.0, 11.0, 0, 10.933420640071748, 20.006682691133808, 21.456662049363995,
               25.73670868533756, 30.69692389798308, 32.09270360021277, 36.2860789887064, 37.473593146403715,
               41.38669263307882, 42.50259667115875, 46.316398449303186],
}


# dynamo 1.6.1 `LOAD_PREDICTORS["prophet"]` (prophet 1.5.0, cmdstanpy 1.3.2) on SERIES, raw and log1p
REFERENCE_PROPHET = {
    False: [0, 0, 12.0, 15.0, 11.0, 0.0, 10.336959060546118, 17.80538412725969, 19.8342518874131, 23.904264475689107,
            28.55990127240155, 30.66706873021069, 34.515607632509244, 36.48105959135038, 40.02900484035624,
            42.003790914290775, 45.394500137301215],
    True: [0, 0, 12.0, 14.999999999999998, 11.0, 0.0, 3.7508161502075827, 10.114252203891498, 14.924921929636785,
           21.273853953117502, 28.300019311323457, 32.87496410246103, 39.43689459779407, 43.391706976907194,
           49.36370103635539, 53.07168612922667, 58.37932504162838],
}


@pytest.mark.parametrize("log1p", [False, True])
def test_prophet_matches_reference(log1p: bool) -> None:
    pytest.importorskip("prophet", reason="the optional extra: pip install 'clustersim[prophet]'")
    pred = PREDICTORS["prophet"](SlaPlannerConfig(load_predictor="prophet", load_predictor_log1p=log1p))
    got = []
    for v in SERIES:
        pred.add_data_point(v)
        got.append(pred.predict_next())
    assert got == pytest.approx(REFERENCE_PROPHET[log1p], rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("args,expected", SINGLE)
def test_budget_single_matches_reference(args: tuple[int, int, int, int, int], expected: int) -> None:
    assert clamp_single(*args) == expected


@pytest.mark.parametrize("args,expected", PAIR)
def test_budget_pair_matches_reference(args: tuple[int, ...], expected: tuple[int, int]) -> None:
    p, d, gp, gd, lo, hi, m = args
    assert clamp_pair(p, d, gp, gd, lo, hi, m, m) == expected


@pytest.mark.parametrize("name", ["constant", "arima", "kalman"])
def test_predictors_match_reference_libraries(name: str) -> None:
    pred = PREDICTORS[name](SlaPlannerConfig(load_predictor=name))  # type: ignore[arg-type]
    got = []
    for v in SERIES:
        pred.add_data_point(v)
        got.append(pred.predict_next())
    assert got == pytest.approx(REFERENCE_PREDICTIONS[name], rel=1e-9, abs=1e-9)


def test_predictors_skip_leading_zeros_and_count_nan_as_zero() -> None:
    p = PREDICTORS["constant"](SlaPlannerConfig())
    for v in (0.0, math.nan, 0.0):
        p.add_data_point(v)
    assert p.data == [] and p.predict_next() == 0.0
    p.add_data_point(3.0)
    p.add_data_point(math.nan)
    assert p.data == [3.0, 0.0]


def test_cap_and_min_endpoint() -> None:
    assert cap_replicas(20, 2, 8) == 10
    assert cap_replicas(0, 12, 8) == 4
    assert cap_replicas(5, 3, 8) == 5
    assert replicas_for(0.0, 3.0, 2) == 2
    assert replicas_for(10.0, 3.0, 1) == 4  # ceil(3.33)
    assert replicas_for(10.0, 0.0, 1) is None


def test_classic_formulas_worked_example() -> None:
    # 600 requests of ISL 3000 per 60 s interval; observed TTFT 80 vs interpolated 100 -> p_corr 0.8
    p_corr = prefill_correction(80.0, 100.0)
    assert p_corr == pytest.approx(0.8)
    # 600 * 3000 / 60 * 0.8 = 24000 tok/s over 5000 tok/s/GPU -> 4.8 -> 5 replicas
    assert classic_prefill_replicas(600, 3000, 60, p_corr, 5000.0, 1, 1) == 5
    # p_corr above 1 is not applied (min(1, p_corr)): 30000 / 5000 = 6
    assert classic_prefill_replicas(600, 3000, 60, 1.5, 5000.0, 1, 1) == 6
    d_corr = decode_correction(60.0, 40.0)
    assert classic_itl_target(50.0, d_corr) == pytest.approx(50.0 / 1.5)
    assert classic_itl_target(50.0, 0.0) == 50.0
    # 600 * 150 / 60 = 1500 tok/s over 400 tok/s/GPU on 2-GPU engines -> ceil(1.875) = 2
    assert classic_decode_replicas(600, 150, 60, 400.0, 2, 1) == 2
    # budget 8: 4 + 2*3 = 10 GPUs -> scale 0.8: p = round(3.2) = 3, d = round((8 - 3)/2) = 2 (round half even)
    assert classic_budget(4, 3, 1, 2, 8, 1) == (3, 2)
    assert classic_budget(2, 2, 1, 1, 8, 1) == (2, 2)


def test_load_scale_decision_rules() -> None:
    assert scale_decision([60.0, 55.0], 50.0, 2, 1, True) == 3  # all above the SLA
    assert scale_decision([60.0, 45.0], 50.0, 2, 1, False) is None
    assert scale_decision([10.0, 12.0], 50.0, 2, 1, True) == 1
    assert scale_decision([10.0], 50.0, 1, 1, True) == 1  # never below min_endpoint
    assert scale_decision([], 50.0, 2, 1, True) is None
    assert consolidation(4) == pytest.approx(4 / 3) and consolidation(1) == 1.0
    t = EASY_THRESHOLDS["throughput"]
    assert easy_decode([1.1, 1.2], t, 2, 1) == 3
    assert easy_decode([0.5, 0.3], t, 2, 1) == 1
    assert easy_decode([0.5, 0.7], t, 2, 1) is None
    assert easy_prefill([0.0, 0.0], EASY_THRESHOLDS["latency"], 3, 1, latency=True) == 2
    assert easy_prefill([1.0, 2.0], t, 3, 1, latency=False) == 4


def test_perf_model_capacities() -> None:
    perf = EnginePerf(FixedTiming(100.0, 10.0), 8192, 256, 1 << 20)
    assert perf.prefill_capacity(1000).rps == pytest.approx(10.0)
    d = perf.decode_capacity(1000, 100, 50.0)
    assert d.batch == 256 and d.rps == pytest.approx(256 / (100 * 0.010))
    assert perf.decode_capacity(1000, 100, 5.0).batch == 1  # even one request misses the target
    poly = EnginePerf(PolynomialTiming(16384 * 16), 8192, 256, 16384 * 16)
    cap = poly.agg_capacity(1024, 128, 500.0, 50.0)
    assert cap.itl_ms <= 50.0 and cap.ttft_ms <= 500.0 and cap.rps > 0
    # chunked prefill: a 10000-token prompt is P(8192) + P(1808)
    assert poly.prefill_ms(10000) == pytest.approx(poly.prefill_pass_ms(8192) + poly.prefill_pass_ms(1808))


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.integers(0, 40), st.integers(1, 4), st.integers(-1, 30), st.integers(1, 3))
def test_clamp_single_never_exceeds_budget(desired: int, gpu: int, hi: int, min_ep: int) -> None:
    out = clamp_single(desired, gpu, -1, hi, min_ep)
    if hi >= 0 and min_ep * gpu <= hi:
        assert out * gpu <= hi and out >= min(desired, min_ep)
    elif hi < 0:
        assert out == desired


def test_config_names_and_defaults() -> None:
    c = parse_planner_config({})
    assert isinstance(c, SlaPlannerConfig)
    assert (c.throughput_adjustment_interval_seconds, c.load_adjustment_interval_seconds, c.ttft_ms, c.itl_ms,
            c.load_predictor, c.max_gpu_budget, c.min_endpoint, c.max_throughput_scaling_replicas) == \
        (180, 5, 500.0, 50.0, "arima", 8, 1, 8)
    with pytest.raises(ValueError):
        parse_planner_config({"ttft_msx": 3})
    s = parse_planner_config({"type": "scripted", "steps": [{"at_s": 1, "workers": 2}]})
    assert s.type == "scripted"
    with pytest.raises(ValueError):
        parse_planner_config({"type": "scripted", "steps": [{"at_s": 1, "workers": 2, "decode": 1}]})
    assert np.isfinite(c.tick_s)
