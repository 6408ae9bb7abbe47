"""Summary statistics, table and JSON writers (facts §h definitions), with hand-computed values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.engine.records import EngineRecord, FailureReason, GapLog, RequestRecord, TerminalStatus
from cluster.report.outputs import per_request_rows, write_per_request_jsonl, write_report_json
from cluster.report.summary import build_summary, weighted_stats
from cluster.report.table import format_table, format_value

DIST_STATS = ("mean", "min", "max", "median", "p75", "p90", "p95", "p99", "std")
SUMMARY_KEYS = {
    "kv_eviction_policy", "committed_prefill_tokens", "num_requests", "completed_requests", "total_input_tokens",
    "total_output_tokens", "duration_ms", "wall_time_ms", "request_throughput_rps", "input_throughput_tok_s",
    "output_throughput_tok_s", "total_throughput_tok_s", "prefill_worker_seconds", "decode_worker_seconds",
    "prefill_gpus_per_worker", "decode_gpus_per_worker", "gpu_hours", "power_w", "power_coverage", "processed_tokens",
    "processed_tokens_per_s", "processed_output_tokens_per_s", "prefix_cache_reused_ratio",
    "first_admission_prefix_cache_reused_ratio", "num_ttft_samples", "num_tpot_samples", "num_e2e_latency_samples",
    *(f"{s}_{m}_ms" for s in DIST_STATS for m in ("ttft", "ttst", "tpot", "itl", "e2e_latency")),
    *(f"{s}_output_token_throughput_per_user" for s in DIST_STATS),
}
GOODPUT_KEYS = {"goodput_completed_requests", "goodput_request_throughput_rps", "goodput_output_throughput_tok_s"}


# ---------------------------------------------------------------- order statistics


def test_percentiles_of_one_to_ten() -> None:
    s = weighted_stats(list(range(10, 0, -1)))  # unsorted input on purpose
    # n = 10: index round(q * 9): median 4.5 -> 5; p75 6.75 -> 7; p90 8.1 -> 8; p95 8.55, p99 8.91 -> 9
    assert (s["median"], s["p75"], s["p90"], s["p95"], s["p99"]) == (6.0, 8.0, 9.0, 10.0, 10.0)
    assert (s["min"], s["max"], s["mean"]) == (1.0, 10.0, 5.5)
    assert s["std"] == pytest.approx(math.sqrt(8.25))  # population: mean of (x - 5.5)^2 = 8.25


def test_percentiles_equal_the_reference_on_recorded_runs() -> None:
    """The reference's TTFT percentiles of five runs (n = 7..101, recorded once) from their per-request TTFTs:
    index round(q * (n - 1)), half away from zero; nearest rank ceil(q * n) - 1 misses some of them."""
    data = json.loads((Path(__file__).parent / "data" / "reference_percentiles.json").read_text())
    for case in data["cases"]:
        got = weighted_stats(case["ttft_ms"])
        for key, want in case["summary"].items():
            assert got[key.removesuffix("_ttft_ms")] == want, (len(case["ttft_ms"]), key)


def test_percentiles_have_no_float_off_by_one() -> None:
    """round(0.99 * 99) and friends: p99 of 1..100 is 99, p95 of 1..20 is 19."""
    s100 = weighted_stats(np.arange(1, 101))
    assert (s100["median"], s100["p75"], s100["p90"], s100["p95"], s100["p99"]) == (51.0, 75.0, 90.0, 95.0, 99.0)
    s20 = weighted_stats(np.arange(1, 21))
    assert (s20["median"], s20["p95"], s20["p99"]) == (11.0, 19.0, 20.0)
    one = weighted_stats([7.0])
    assert all(one[k] == 7.0 for k in DIST_STATS if k != "std") and one["std"] == 0.0


def test_empty_distribution_is_all_none() -> None:
    assert weighted_stats([]) == {k: None for k in DIST_STATS}
    assert weighted_stats([1.0, 2.0], [0, 0]) == {k: None for k in DIST_STATS}


def test_weighted_example_by_hand() -> None:
    # expanded: [1, 5, 5, 5, 9, 9] -> median sorted[3] = 5, p75 sorted[ceil(4.5)-1 = 4] = 9
    s = weighted_stats([9.0, 1.0, 5.0], [2, 1, 3])
    assert (s["min"], s["median"], s["p75"], s["max"]) == (1.0, 5.0, 9.0, 9.0)
    assert s["mean"] == pytest.approx(34 / 6)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), st.integers(min_value=0, max_value=20)),
        min_size=1,
        max_size=40,
    )
)
def test_weighted_equals_expanded(pairs: list[tuple[float, int]]) -> None:
    values = [v for v, _ in pairs]
    weights = [w for _, w in pairs]
    expanded = [v for v, w in pairs for _ in range(w)]
    got = weighted_stats(values, weights)
    want = weighted_stats(expanded)
    if not expanded:
        assert got == want == {k: None for k in DIST_STATS}
        return
    ordered = sorted(expanded)
    n = len(ordered)
    assert want["median"] == ordered[n // 2]
    assert want["p90"] == ordered[int(math.floor(0.9 * (n - 1) + 0.5))]  # round(0.9 (n - 1)), half up
    for key in ("min", "max", "median", "p75", "p90", "p95", "p99"):
        assert got[key] == want[key]
    assert got["mean"] == pytest.approx(float(np.mean(expanded)), rel=1e-9, abs=1e-6)
    assert got["std"] == pytest.approx(float(np.std(expanded)), rel=1e-6, abs=1e-6)


def test_weights_validation() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        weighted_stats([1.0, 2.0], [1])
    with pytest.raises(ValueError, match="non-negative"):
        weighted_stats([1.0], [-1])


# ---------------------------------------------------------------- build_summary


def _records() -> list[RequestRecord]:
    done = TerminalStatus.COMPLETED
    return [
        RequestRecord(
            request_id=0, session_id="s0", turn_index=0, input_length=100, requested_output_length=3, arrival_ms=0.0,
            dispatched_ms=0.0, worker_id=0, first_token_ms=10.0, second_token_ms=14.0, last_token_ms=20.0,
            terminal_ms=20.0, terminal_status=done,
            engine=EngineRecord(output_length=3, first_admit_ms=1.0, reused_input_tokens=40, admission_count=1,
                                admitted_tokens_total=100, reused_tokens_total=40),
        ),
        RequestRecord(
            request_id=1, session_id="s1", turn_index=0, input_length=300, requested_output_length=1, arrival_ms=5.0,
            dispatched_ms=5.0, worker_id=1, first_token_ms=35.0, last_token_ms=35.0, terminal_ms=35.0,
            terminal_status=done,
            engine=EngineRecord(output_length=1, first_admit_ms=6.0, admission_count=2, admitted_tokens_total=600,
                                reused_tokens_total=250, num_preemptions=1),
        ),
        RequestRecord(
            request_id=2, session_id="s2", turn_index=1, input_length=1000, requested_output_length=50, arrival_ms=8.0,
            dispatched_ms=8.0, worker_id=2, first_token_ms=40.0, second_token_ms=50.0, last_token_ms=50.0,
            engine=EngineRecord(output_length=2, first_admit_ms=9.0, reused_input_tokens=500, admission_count=1,
                                admitted_tokens_total=1000, reused_tokens_total=500),
        ),
        RequestRecord(
            request_id=3, session_id="s3", turn_index=0, input_length=99_999, requested_output_length=5,
            arrival_ms=9.0, terminal_ms=9.0, terminal_status=TerminalStatus.REJECTED,
            reason=FailureReason.REJECTED_PROMPT_TOO_LONG, reason_detail="too long",
        ),
    ]


def _gaps() -> GapLog:
    """Gaps: request 0 emits at 10, 14, 20 (gaps 4, 6); in-flight request 2 at 40, 50 (gap 10)."""
    log = GapLog()
    log.add(4.0)
    log.add_run(np.array([6.0, 10.0]), 1)
    return log


def test_summary_values_by_hand() -> None:
    s = build_summary(_records(), _gaps(), num_workers=3, gpus_per_worker=2, committed_prefill_tokens=777,
                      wall_time_ms=202.0)
    assert set(s) == SUMMARY_KEYS
    assert s["kv_eviction_policy"] == "lru" and s["committed_prefill_tokens"] == 777
    assert (s["num_requests"], s["completed_requests"]) == (4, 2)
    assert (s["total_input_tokens"], s["total_output_tokens"], s["processed_tokens"]) == (400, 4, 404)
    assert s["duration_ms"] == 35.0 and s["wall_time_ms"] == 202.0
    assert s["request_throughput_rps"] == pytest.approx(2 / 0.035)
    assert s["input_throughput_tok_s"] == pytest.approx(400 / 0.035)
    assert s["output_throughput_tok_s"] == pytest.approx(4 / 0.035)
    assert s["total_throughput_tok_s"] == pytest.approx(404 / 0.035)
    assert s["prefill_worker_seconds"] == 0.0 and s["decode_worker_seconds"] == pytest.approx(3 * 0.035)
    assert (s["prefill_gpus_per_worker"], s["decode_gpus_per_worker"]) == (0, 2)
    assert s["gpu_hours"] == pytest.approx(3 * 0.035 * 2 / 3600)
    assert s["power_w"] is None and s["power_coverage"] is None
    assert s["processed_tokens_per_s"] == pytest.approx(2000.0)
    assert s["processed_output_tokens_per_s"] == pytest.approx(4 / 0.202)
    assert s["prefix_cache_reused_ratio"] == pytest.approx((40 + 250 + 500) / (100 + 600 + 1000))
    assert s["first_admission_prefix_cache_reused_ratio"] == pytest.approx(40 / 400)
    assert (s["num_ttft_samples"], s["num_tpot_samples"], s["num_e2e_latency_samples"]) == (2, 1, 2)
    # TTFT over completed only: [10, 30]
    assert (s["mean_ttft_ms"], s["min_ttft_ms"], s["max_ttft_ms"], s["median_ttft_ms"]) == (20.0, 10.0, 30.0, 30.0)
    assert s["std_ttft_ms"] == 10.0 and s["p75_ttft_ms"] == 30.0
    assert s["mean_ttst_ms"] == 4.0 and s["std_ttst_ms"] == 0.0  # only request 0 has a second token
    assert s["mean_tpot_ms"] == 5.0  # (20 - 10) / (3 - 1)
    assert (s["mean_e2e_latency_ms"], s["p99_e2e_latency_ms"]) == (25.0, 30.0)
    # ITL: every gap in the log, [4, 6, 10]
    assert s["mean_itl_ms"] == pytest.approx(20 / 3)
    assert (s["min_itl_ms"], s["median_itl_ms"], s["p75_itl_ms"], s["max_itl_ms"]) == (4.0, 6.0, 10.0, 10.0)
    # per-user throughput: 1000 / gap -> [250, 166.67, 100]; min = 1000 / max gap
    assert s["min_output_token_throughput_per_user"] == 100.0
    assert s["max_output_token_throughput_per_user"] == 250.0
    assert s["mean_output_token_throughput_per_user"] == pytest.approx((250 + 1000 / 6 + 100) / 3)
    assert not GOODPUT_KEYS & set(s)
    json.dumps(s, allow_nan=False)  # plain JSON types only
    assert all(type(v) in (int, float, str, type(None)) for v in s.values())


@pytest.mark.parametrize(
    ("sla", "good", "good_tokens"),
    [
        ({"sla_ttft_ms": 20.0}, 1, 3),  # request 0 (ttft 10); request 1 has ttft 30
        ({"sla_ttft_ms": 10.0}, 1, 3),  # bound is inclusive
        ({"sla_tpot_ms": 4.0}, 1, 1),  # request 0 has tpot 5; request 1 has one token, tpot skipped
        ({"sla_e2e_ms": 25.0}, 1, 3),
        ({"sla_ttft_ms": 100.0, "sla_e2e_ms": 100.0, "sla_tpot_ms": 100.0}, 2, 4),
        ({"sla_ttft_ms": 5.0}, 0, 0),
    ],
)
def test_goodput(sla: dict[str, float], good: int, good_tokens: int) -> None:
    s = build_summary(_records(), _gaps(), num_workers=1, committed_prefill_tokens=0, wall_time_ms=None, **sla)
    assert set(s) == SUMMARY_KEYS | GOODPUT_KEYS
    assert s["goodput_completed_requests"] == good
    assert s["goodput_request_throughput_rps"] == pytest.approx(good / 0.035)
    assert s["goodput_output_throughput_tok_s"] == pytest.approx(good_tokens / 0.035)
    assert s["processed_tokens_per_s"] is None and s["wall_time_ms"] is None


def test_zero_gaps_are_left_out_of_per_user_throughput() -> None:
    log = GapLog()
    log.add_run(np.array([10.0, 0.0, 20.0]), 2)
    s = build_summary([], log, num_workers=1, committed_prefill_tokens=0, wall_time_ms=None)
    assert s["min_itl_ms"] == 0.0 and s["median_itl_ms"] == 10.0  # zero gaps stay in ITL
    assert s["min_output_token_throughput_per_user"] == 50.0
    assert s["mean_output_token_throughput_per_user"] == 75.0


def test_empty_run() -> None:
    s = build_summary([], GapLog(), num_workers=2, committed_prefill_tokens=0, wall_time_ms=0.0)
    assert set(s) == SUMMARY_KEYS
    assert s["duration_ms"] == 0.0 and s["request_throughput_rps"] == 0.0 and s["gpu_hours"] == 0.0
    assert s["prefix_cache_reused_ratio"] == 0.0 and s["processed_tokens_per_s"] == 0.0
    assert s["mean_ttft_ms"] is None and s["p99_itl_ms"] is None and s["std_output_token_throughput_per_user"] is None


# ---------------------------------------------------------------- table


def _cells(table: str, label: str) -> list[str]:
    row = next(line for line in table.splitlines() if label in line)
    return [c.strip() for c in row.strip("│ ").split("│")][1:]


def test_format_value() -> None:
    assert format_value(1234.567) == "1,234.57"
    assert format_value(1_234_567) == "1,234,567"
    assert [format_value(v) for v in (None, float("nan"), "x", True)] == ["N/A"] * 4


def test_table_layout() -> None:
    s = build_summary(_records(), _gaps(), num_workers=1, committed_prefill_tokens=0, wall_time_ms=1234.5)
    text = format_table(s)
    lines = text.splitlines()
    assert lines[0].strip() == "clustersim | LLM Metrics"
    for label in (
        "Time to First Token (ms)", "Time to Second Token (ms)", "Inter Token Latency (ms)",
        "Time per Output Token (ms)", "Request Latency (ms)", "Output Token Throughput Per User (tokens/sec/user)",
        "Output Token Throughput (tokens/sec)", "Request Throughput (requests/sec)", "Request Count (requests)",
    ):
        assert sum(label in line for line in lines) == 1
    header = next(line for line in lines if line.startswith("┃ Metric"))
    assert [c.strip() for c in header.strip("┃ ").split("┃")][1:] == ["avg", "min", "max", "p99", "p90", "p75", "std"]
    assert _cells(text, "Time to First Token") == [
        "20.00", "10.00", "30.00", "30.00", "30.00", "30.00", "10.00",
    ]
    assert _cells(text, "Request Count") == ["2", *["N/A"] * 6]
    assert "Prefix Cache Reused Ratio: 0.46" in lines  # 790 / 1700
    assert "Wall Time (ms, wall clock): 1,234.50" in lines
    assert any(line.startswith("Duration (ms, simulated): ") for line in lines)
    assert len({len(line) for line in lines[1:12]}) == 1  # box lines all the same width


def test_table_shows_na_for_missing_values() -> None:
    text = format_table({"completed_requests": 0})
    assert _cells(text, "Time to First Token") == ["N/A"] * 7
    assert _cells(text, "Request Count") == ["0", *["N/A"] * 6]
    assert "Prefix Cache Reused Ratio" not in text


# ---------------------------------------------------------------- JSON outputs


def test_report_json_is_byte_deterministic(tmp_path: Path) -> None:
    s = build_summary(_records(), _gaps(), num_workers=1, committed_prefill_tokens=5, wall_time_ms=None)
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_report_json(s, a)
    write_report_json(dict(reversed(list(s.items()))), b)
    assert a.read_bytes() == b.read_bytes()
    text = a.read_text()
    assert text.endswith("}\n") and text.startswith('{\n  "committed_prefill_tokens": 5,')
    assert json.loads(text) == s
    with pytest.raises(ValueError):
        write_report_json({"x": float("nan")}, tmp_path / "c.json")


def test_per_request_rows_and_jsonl(tmp_path: Path) -> None:
    records = _records()
    rows = per_request_rows(list(reversed(records)))
    assert [r["uuid"] for r in rows] == ["0", "1", "2", "3"]  # by arrival, then id
    first = rows[0]
    assert first == {
        "session_id": "s0", "turn_index": 0, "uuid": "0", "arrival_time_ms": 0.0, "dispatched_at_ms": 0.0,
        "first_admit_ms": 1.0, "terminal_time_ms": 20.0, "first_token_ms": 10.0, "last_token_ms": 20.0,
        "ttft_ms": 10.0, "ttst_ms": 4.0, "e2e_latency_ms": 20.0, "itl_ms": 5.0, "input_length": 100,
        "requested_output_length": 3, "output_length": 3, "reused_input_tokens": 40, "decode_worker_idx": 0,
        "dp_rank": 0, "admission_count": 1, "readmission_count": 0, "terminal_status": "completed",
        "routing_history": [],
    }
    rejected = rows[3]
    assert rejected["dispatched_at_ms"] is None  # NaN default becomes null
    assert rejected["decode_worker_idx"] is None and rejected["ttft_ms"] is None
    assert rejected["terminal_status"] == "rejected"
    assert rows[1]["readmission_count"] == 1

    path = tmp_path / "req.jsonl"
    write_per_request_jsonl(records, path)
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and path.read_text().endswith("\n")
    assert [json.loads(line) for line in lines] == rows
    keys = list(json.loads(lines[0]))
    assert keys == sorted(keys)
