"""The reference CLI's further replay flags (`cluster.commands.replay_compat`) and engine-JSON spellings
(`actors.engine.spellings`): what they do, and one-line refusals for what is not built."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from actors.engine.config import ConfigError, EngineConfig, parse_engine_args
from cluster.cli import main

DATA = Path(__file__).parent / "data"
TRACE = DATA / "mooncake_head60.jsonl"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["replay", "--no-progress", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _summary(tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, object]:
    report = tmp_path / "r.json"
    code, _, err = _run([*argv, "--report-json", str(report)], capsys)
    assert code == 0, err
    summary: dict[str, object] = json.loads(report.read_text())["summary"]
    return summary


def test_max_sim_time_cuts_the_run_as_the_reference(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Recorded from the reference (run_trace_replay(head 50 of the Mooncake trace, max_sim_time_ms=...)):
    5 s -> 26 arrived, 1 completed at 1048.898614 ms; 20 s -> 50 arrived, 16 completed, last at 19937.468561."""
    head = tmp_path / "head50.jsonl"
    head.write_text("".join(TRACE.read_text().splitlines(keepends=True)[:50]))
    for seconds, arrived, completed, duration_ms, input_tokens in ((5, 26, 1, 1048.898614, 6760),
                                                                    (20, 50, 16, 19937.468561, 149596)):
        s = _summary(tmp_path, [str(head), "--max-sim-time-seconds", str(seconds)], capsys)
        assert (s["num_requests"], s["completed_requests"], s["total_input_tokens"]) == (arrived, completed,
                                                                                         input_tokens)
        assert s["duration_ms"] == pytest.approx(duration_ms, abs=1e-5)
    full = _summary(tmp_path, [str(head)], capsys)
    assert full["completed_requests"] == 50


def test_sla_itl_is_the_tpot_bound(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--input-tokens", "512", "--output-tokens", "16", "--request-count", "20", "--arrival-interval-ms", "5"]
    by_itl = _summary(tmp_path, [*args, "--sla-itl-ms", "7.0"], capsys)
    by_tpot = _summary(tmp_path, [*args, "--sla-tpot-ms", "7.0"], capsys)
    assert by_itl["goodput_completed_requests"] == by_tpot["goodput_completed_requests"]
    loose = _summary(tmp_path, [*args, "--sla-itl-ms", "1000"], capsys)
    tight = _summary(tmp_path, [*args, "--sla-itl-ms", "0.001"], capsys)
    assert (loose["goodput_completed_requests"], tight["goodput_completed_requests"]) == (20, 0)


def test_report_jsonl_is_per_request_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "req.jsonl"
    code, _, err = _run([str(TRACE), "--report-jsonl", str(out)], capsys)
    assert code == 0, err
    assert len(out.read_text().splitlines()) == 60


def test_model_name_alone_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _summary(tmp_path, [str(TRACE), "--model-name", "m"], capsys) == _summary(tmp_path, [str(TRACE)], capsys)


@pytest.mark.parametrize(("argv", "needle"), [
    ([str(TRACE), str(TRACE)], "--trace-format mooncake takes exactly one trace file, got 2"),
    ([str(TRACE), "--trace-format", "mooncake-delta"], "--trace-format mooncake-delta: not built yet"),
    ([str(TRACE), "--trace-format", "dynamo"], "not built yet"),
    ([str(TRACE), "--trace-shared-prefix-ratio", "0.5"], "applied_compute_agentic only"),
    ([str(TRACE), "--trace-num-prefix-groups", "4"], "applied_compute_agentic only"),
    ([str(TRACE), "--planner-config", "{bad"], "--planner-config: not JSON"),
    ([str(TRACE), "--planner-config", '{"type": "python", "class": "no.such:Planner"}'], "planner.class"),
    ([str(TRACE), "--router-policy-config", "p.yaml"], "--router-policy-config: not built yet"),
    ([str(TRACE), "--num-workers", "2", "--prefill-engine-args", "{}"], "--num-workers is for aggregated replay"),
    ([str(TRACE), "--extra-engine-args", "{}", "--decode-engine-args", "{}"],
     "--extra-engine-args is for aggregated replay"),
    ([str(TRACE), "--num-prefill-workers", "0"], "--num-prefill-workers must be at least 1"),
    ([str(TRACE), "--prefill-engine-args", '{"worker_type": "decode"}'], "worker_type 'decode', expected 'prefill'"),
    ([str(TRACE), "--aic-backend", "vllm"], "--aic-backend: not built yet"),
    ([str(TRACE), "--max-sim-time-seconds", "0"], "--max-sim-time-seconds must be positive"),
    (["--input-tokens", "10", "--output-tokens", "2", "--request-count", "2", "--max-sim-time-seconds", "1"],
     "trace replay only"),
    ([str(TRACE), "--sla-itl-ms", "5", "--sla-tpot-ms", "6"], "one bound"),
    ([str(TRACE), "--extra-engine-args", '{"engine_type": "sglang"}'], "backend 'sglang': not built yet"),
    ([str(TRACE), "--extra-engine-args", '{"worker_type": "prefill"}'], "aggregated replay needs worker_type"),
])
def test_refusals_are_one_line_exit_2(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
    assert "unknown key" not in lines[0] and "Traceback" not in err


# ------------------------------------------------------------------ engine JSON spellings

def test_flat_nested_and_own_spellings_give_one_config() -> None:
    own = parse_engine_args('{"backend": "vllm", "block_size": 16, "startup_time": 2.0, "dp_size": 1}')
    flat = parse_engine_args('{"engine_type": "vllm", "block_size": 16, "startup_time": 2.0, "dp_size": 1, '
                             '"worker_type": "aggregated", "is_prefill": false, "kv_transfer_bandwidth": null}')
    nested = parse_engine_args('{"engine": {"backend": "vllm", "block_size": 16}, "startup_time": 2.0, '
                               '"dp_size": 1, "num_gpu_blocks_is_explicit": false}')
    assert own == flat == nested
    assert nested.startup_time == 2.0 and nested.block_size_tokens == 16


def test_disaggregation_keys_lower_onto_the_engine() -> None:
    flat = parse_engine_args('{"is_decode": true}')
    nested = parse_engine_args('{"engine": {"worker_type": "prefill", "kv_transfer_bytes_per_token": 10, '
                               '"kv_transfer_bandwidth": 64, "kv_transfer_timing_mode": "destination_missing"}}')
    assert flat.worker_type == "decode"
    assert (nested.worker_type, nested.kv_bytes_per_token, nested.kv_transfer_bandwidth) == ("prefill", 10, 64.0)
    assert nested.kv_transfer_timing_mode == "destination_missing"


def test_lowering_is_idempotent_through_a_dump() -> None:
    cfg = parse_engine_args('{"engine": {"block_size": 32, "max_num_seqs": 8}, "tensor_parallel_size": 2}')
    again = EngineConfig.model_validate(cfg.model_dump(mode="json", exclude_unset=True))
    assert again == cfg and again.tensor_parallel_size == 2


@pytest.mark.parametrize(("raw", "needle"), [
    ('{"engine": {"block_size": 16}, "bogus": 1}', "bogus: unknown key beside engine"),
    ('{"bogus": 1}', "bogus: unknown key"),
    ('{"engine": 3}', "engine: must be an object"),
    ('{"engine": {"startup_time": 1}, "startup_time": 2}', "startup_time: given both"),
    ('{"engine_type": "vllm", "backend": "trtllm"}', "backend: conflicts with engine_type"),
    ('{"is_decode": "yes"}', "is_decode: must be true or false"),
    ('{"gpu_memory_utilization": 0.9}', "gpu_memory_utilization: not built yet"),
    ('{"engine": {"sglang": {"schedule_policy": "fifo"}}}', "sglang: not built yet"),
    ('{"aic_backend": "vllm"}', "aic_backend: not built yet"),
])
def test_engine_key_errors_name_the_key(raw: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as info:
        parse_engine_args(raw)
    assert "\n" not in str(info.value)
