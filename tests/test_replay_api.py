"""`cluster.replay.run_trace_replay` / `run_synthetic_trace_replay`: the reference's Python API.

The script `tests/data/reference_api_script.py` was written against `dynamo.replay` (1.6.1) and takes
the module to import as its argument; its output under the reference was recorded once in
`reference_api_script.expected.json` (`/work/refvenv/bin/python tests/data/reference_api_script.py
dynamo.replay tests/data/mooncake_head60.jsonl OUT_DIR`). Here it runs unchanged against `cluster.replay`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cluster.replay import ReplayReport, run_synthetic_trace_replay, run_trace_replay

DATA = Path(__file__).parent / "data"
TRACE = DATA / "mooncake_head60.jsonl"
DISTRIBUTION_SKETCHED = ("itl", "output_token_throughput_per_user")
"""Distributions over every token gap: the reference's percentiles of them differ from exact order statistics
by up to 0.1% (a histogram with three significant digits, by the look of it); every other key agrees to 1e-5."""
CUT_DIFFERS = ("committed_prefill_tokens", "decode_worker_seconds", "gpu_hours")
"""With max_sim_time_ms, clustersim still counts the in-flight requests' token gaps and their prefill chunk
under way; the reference counts completed requests only (a known difference, README)."""


def _close(want: Any, got: Any, rel: float) -> bool:
    if isinstance(want, bool) or not isinstance(want, (int, float)) or not isinstance(got, (int, float)):
        return bool(want == got)
    return abs(want - got) <= rel * max(abs(want), 1e-9)


def test_a_reference_script_runs_unchanged_but_for_the_import(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(DATA / "reference_api_script.py"), "cluster.replay", str(TRACE),
                           str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    ours = json.loads(proc.stdout)
    ref = json.loads((DATA / "reference_api_script.expected.json").read_text())
    assert set(ours) == set(ref)
    assert ours["trace_rr_jsonl_lines"] == ref["trace_rr_jsonl_lines"] == 60
    for case, want in ref.items():
        if not isinstance(want, dict):
            continue
        got = ours[case]
        assert got["summary_keys"] == want["summary_keys"], case
        for key, value in want["summary"].items():
            if case == "trace_rr_cut" and (key in CUT_DIFFERS or "itl" in key or "per_user" in key):
                continue
            rel = 2e-3 if any(d in key for d in DISTRIBUTION_SKETCHED) else 1e-5
            assert _close(value, got["summary"][key], rel), (case, key, value, got["summary"][key])
        if "per_request" in want:
            assert len(got["per_request"]) == len(want["per_request"])
            for w, g in zip(want["per_request"], got["per_request"]):
                assert w[0:3] == g[0:3] and w[5:] == g[5:], (case, w, g)
                assert all(_close(a, b, 1e-6) for a, b in zip(w[3:5], g[3:5])), (case, w, g)


def test_report_object_has_the_references_shape(tmp_path: Path) -> None:
    jsonl = tmp_path / "r.jsonl"
    report = run_trace_replay([TRACE], capture_per_request=True, report_jsonl_path=jsonl, num_workers=2)
    assert isinstance(report, ReplayReport)
    assert report.per_request is not None and len(report.per_request) == report.summary["completed_requests"] == 60
    assert report.coverage == {"capture_per_request": True, "capture_planner_details": False,
                               "per_request_records": 60}
    assert report.planner is None and report.to_dict()["summary"] == report.summary
    assert len(jsonl.read_text().splitlines()) == 60
    assert report.summary["wall_time_ms"] > 0
    plain = run_synthetic_trace_replay(256, 4, 5, arrival_interval_ms=10.0)
    assert plain.per_request is None and plain.coverage["per_request_records"] == 0


def test_planner_config_runs_the_planner_and_returns_its_section() -> None:
    cfg = {"type": "scripted", "tick_s": 2, "steps": [{"at_s": 2, "workers": 2}]}
    report = run_synthetic_trace_replay(512, 16, 200, request_rate=40.0, extra_engine_args={"startup_time": 1},
                                        planner_config=cfg)
    assert report.planner is not None and report.coverage["capture_planner_details"]
    placed = [o for d in report.planner["decisions"] for o in d["outcomes"] if o.get("outcome") == "placed"]
    assert [(o["at_ms"], o["ready_ms"]) for o in placed] == [(2000.0, 3000.0)]
    assert report.to_dict()["planner"] == report.planner


@pytest.mark.parametrize(("call", "needle"), [
    (lambda: run_trace_replay(TRACE, prefill_engine_args={"engine": {}}, extra_engine_args={}),
     "extra_engine_args is for aggregated replay"),
    (lambda: run_trace_replay(TRACE, planner_config={"mode": "agg", "ttft_ms": -1}), "ttft_ms"),
    (lambda: run_trace_replay(TRACE, num_decode_workers=2), "num_decode_workers needs prefill_engine_args"),
    (lambda: run_trace_replay(TRACE, trace_format="weka"), "not built yet"),
    (lambda: run_trace_replay([TRACE, TRACE]), "exactly one trace file"),
    (lambda: run_trace_replay(TRACE, extra_engine_args={"engine": {"worker_type": "decode"}}),
     "aggregated replay needs worker_type 'aggregated'"),
    (lambda: run_trace_replay(TRACE, replay_mode="online"), "online"),
    (lambda: run_synthetic_trace_replay(100, 4, 3), "exactly one of replay_concurrency"),
    (lambda: run_synthetic_trace_replay(100, 4, 3, request_rate=1.0, arrival_interval_ms=1.0), "exactly one"),
    (lambda: run_synthetic_trace_replay(100, 4, 3, arrival_interval_ms=1.0, telemetry_options=object()),
     "telemetry_options: not built yet"),
])
def test_unbuilt_and_bad_parameters_raise_value_error(call: Any, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        call()


def test_kv_event_lag_reaches_the_router() -> None:
    common: dict[str, Any] = dict(router_mode="kv_router", num_workers=4, arrival_interval_ms=5.0,
                                  shared_prefix_ratio=0.9, num_prefix_groups=2, capture_per_request=True,
                                  extra_engine_args={"engine": {"block_size": 16}})

    def workers(report: ReplayReport) -> list[Any]:
        assert report.per_request is not None
        return [r["decode_worker_idx"] for r in report.per_request]

    prompt = workers(run_synthetic_trace_replay(512, 4, 40, **common))
    lagged = workers(run_synthetic_trace_replay(512, 4, 40, kv_event_lag_ms=1000.0, **common))
    # with a 1 s lag the router sees no cached prefix during the 200 ms run, so it places requests differently
    assert prompt != lagged


def _vs_reference() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "vs_reference.py"
    spec = importlib.util.spec_from_file_location("vs_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vs_reference_cases_bind_to_the_api_and_errors_are_relative() -> None:
    """benchmarks/vs_reference.py's grid is made of valid calls of the shared API (no run here)."""
    import inspect

    bench = _vs_reference()
    for name, case in bench.CASES.items():
        kwargs = {k: v for k, v in case.items() if k not in ("synthetic", "trace")}
        if "trace" in case:
            inspect.signature(run_trace_replay).bind(case["trace"], **kwargs)
        else:
            inspect.signature(run_synthetic_trace_replay).bind(*case["synthetic"], **kwargs)
    assert bench.rel_err(101.0, 100.0) == pytest.approx(0.01) and bench.rel_err(None, None) == 0.0
    rows = {k: (e, ok) for k, e, _, ok in bench.compare({"a": 103.0, "b": 1.0}, [{"a": 100.0, "b": 1.0},
                                                                                   {"a": 104.0, "b": 1.0}])}
    assert rows["a"] == (pytest.approx(1 / 102), True) and rows["b"] == (0.0, True)
    off = bench.compare({"a": 110.0}, [{"a": 100.0}])
    assert off[0][3] is False


@pytest.mark.parametrize(("seed", "duration_ms", "mean_ttft_ms"), [
    (7, 4476.360541729209, 29.53852584147812), (42, 4589.777829118053, 28.331451557680357)])
def test_arrival_seed_seeds_the_arrival_stream(seed: int, duration_ms: float, mean_ttft_ms: float) -> None:
    """Recorded from the reference: `run_synthetic_trace_replay(512, 8, 100, request_rate=20.0,
    arrival_seed=seed, num_workers=2).summary` (round robin, so no tie-break spread)."""
    s = run_synthetic_trace_replay(512, 8, 100, request_rate=20.0, arrival_seed=seed, num_workers=2).summary
    assert s["duration_ms"] == pytest.approx(duration_ms, rel=1e-6)
    assert s["mean_ttft_ms"] == pytest.approx(mean_ttft_ms, rel=1e-6)


def test_no_prefix_groups_shares_nothing_as_in_the_reference() -> None:
    """The reference's default num_prefix_groups is 0: a shared_prefix_ratio alone shares nothing
    (its prefix_cache_reused_ratio is 0.0 here; 0.495 with num_prefix_groups=1)."""
    common: dict[str, Any] = dict(request_rate=50.0, shared_prefix_ratio=0.5, num_workers=2,
                                  extra_engine_args={"engine": {"block_size": 64}})
    assert run_synthetic_trace_replay(1024, 16, 200, **common).summary["prefix_cache_reused_ratio"] == 0.0
    grouped = run_synthetic_trace_replay(1024, 16, 200, num_prefix_groups=1, **common).summary
    assert grouped["prefix_cache_reused_ratio"] == pytest.approx(0.495, rel=1e-3)
