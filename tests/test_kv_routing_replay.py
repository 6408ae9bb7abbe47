"""kv_router inside a replay: it follows the KV events, raises prefix reuse, and keeps
macro-stepped and pass-by-pass runs identical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.cli import main
from cluster.replay import replay_workload
from cluster.workload.synthetic import SyntheticSpec, synthesize
from tests.test_macro_equivalence import assert_equivalent


def _workload():  # type: ignore[no-untyped-def]
    # 24 prefix groups of ~19 blocks: too many for one worker's 260 blocks, few enough for four.
    return synthesize(SyntheticSpec(input_tokens=1500, output_tokens=40, request_count=160, request_rate=12,
                                    shared_prefix_ratio=0.8, num_prefix_groups=24, block_size=64))


def _run(mode: str, macro_step: bool = True, lag_ms: float | None = None):  # type: ignore[no-untyped-def]
    router = {"mode": "kv", "kv_event_lag_ms": lag_ms} if mode == "kv" else None
    return replay_workload(_workload(), {"num_gpu_blocks": 260}, 4, router=router, seed=3, macro_step=macro_step,
                           collect_kv_events=True)


def _reuse(res) -> float:  # type: ignore[no-untyped-def]
    return sum(r.reused_input_tokens for r in res.records) / sum(r.input_length for r in res.records)


def test_kv_routing_reuses_more_prefix_than_round_robin() -> None:
    rr, kv = _run("rr"), _run("kv")
    assert _reuse(kv) > _reuse(rr) + 0.1
    assert sum(r.ttft_ms for r in kv.records) < sum(r.ttft_ms for r in rr.records)  # type: ignore[misc]


@pytest.mark.parametrize("lag_ms", [None, 25.0])
def test_kv_routing_is_identical_macro_stepped_or_pass_by_pass(lag_ms: float | None) -> None:
    assert_equivalent(_run("kv", True, lag_ms), _run("kv", False, lag_ms))


def test_cli_kv_router_mode_and_bad_router_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "kv.json"
    args = ["replay", "--no-progress", "--input-tokens", "1024", "--output-tokens", "8", "--request-count", "40",
            "--shared-prefix-ratio", "0.5", "--num-prefix-groups", "2", "--num-workers", "2"]
    assert main([*args, "--router-mode", "kv_router", "--router-config", '{"router_temperature": 0.0}',
                 "--report-json", str(report)]) == 0
    assert json.loads(report.read_text())["config"]["router_mode"] == "kv_router"
    capsys.readouterr()
    assert main([*args, "--router-mode", "kv_router", "--router-config", '{"overlap_weight": 1}']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "overlap_weight" in err[0]


def test_router_queueing_in_replay_holds_requests_and_stays_exact(tmp_path: Path) -> None:
    # 400 requests at 200/s on 4 workers: every worker busy often, so requests wait in the router (wspt order).
    args = ["replay", "--no-progress", "--input-tokens", "2000", "--output-tokens", "50", "--request-count", "400",
            "--request-rate", "200", "--num-workers", "4", "--shared-prefix-ratio", "0.5", "--num-prefix-groups",
            "4", "--router-mode", "kv_router",
            "--router-config", '{"router_queue_threshold": 0.2, "router_queue_policy": "wspt"}']
    outs = []
    for flag in ([], ["--no-macro-step"]):
        report, rows = tmp_path / f"r{len(outs)}.json", tmp_path / f"r{len(outs)}.jsonl"
        assert main([*args, *flag, "--report-json", str(report), "--per-request-jsonl", str(rows)]) == 0
        outs.append((report.read_bytes(), rows.read_bytes()))
    assert outs[0] == outs[1]  # macro-stepped and pass by pass: the same bytes
    lines = [json.loads(line) for line in outs[0][1].decode().splitlines()]
    history = [h for row in lines for h in row["routing_history"]]
    assert len(history) == 400 and all(row["terminal_status"] == "completed" for row in lines)
    queued = [h for h in history if h["outcome"] == "queued"]
    assert queued and all(h["queue_wait_ms"] > 0 for h in queued)
    assert all(h["outcome"] == "immediate" and h["queue_wait_ms"] == 0 for h in history if h not in queued)
