"""`clustersim replay` end to end: outputs, determinism, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.cli import main
from tests.golden.cases import TRACE

TRACE_DIR = TRACE.parent


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["replay", "--no-progress", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _trace(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "trace.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


GOOD = [
    '{"timestamp": 0, "input_length": 1000, "output_length": 20, "hash_ids": [1, 2]}',
    '{"timestamp": 10, "input_length": 700, "output_length": 5, "hash_ids": [1, 3]}',
]


def test_trace_replay_writes_report_and_per_request_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = _trace(tmp_path, GOOD)
    report, per_req = tmp_path / "r.json", tmp_path / "r.jsonl"
    code, out, _ = _run([str(trace), "--num-workers", "2", "--report-json", str(report),
                         "--per-request-jsonl", str(per_req)], capsys)
    assert code == 0
    assert "Time to First Token (ms)" in out
    data = json.loads(report.read_text())
    summary = data["summary"]
    assert summary["completed_requests"] == 2 and summary["total_output_tokens"] == 25
    assert summary["wall_time_ms"] is None  # not byte-reproducible, so only with --record-wall-time
    rows = [json.loads(line) for line in per_req.read_text().splitlines()]
    assert [r["decode_worker_idx"] for r in rows] == [0, 1]  # round robin


def test_same_inputs_give_byte_identical_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outputs = []
    for k in range(2):
        path = tmp_path / f"r{k}.json"
        code, _, _ = _run(["--input-tokens", "700", "--output-tokens", "40", "--request-count", "60",
                           "--request-rate", "20", "--shared-prefix-ratio", "0.5", "--num-prefix-groups", "3",
                           "--num-workers", "3", "--report-json", str(path)], capsys)
        assert code == 0
        outputs.append(path.read_bytes())
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])["summary"]["prefix_cache_reused_ratio"] > 0


def test_concurrency_mode_caps_requests_in_flight(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.jsonl"
    code, _, _ = _run(["--input-tokens", "500", "--output-tokens", "10", "--request-count", "8",
                       "--arrival-interval-ms", "0", "--replay-concurrency", "2", "--per-request-jsonl", str(path)],
                      capsys)
    assert code == 0
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    events = sorted([(r["dispatched_at_ms"], 1) for r in rows] + [(r["terminal_time_ms"], -1) for r in rows])
    in_flight, peak = 0, 0
    for _, delta in events:
        in_flight += delta
        peak = max(peak, in_flight)
    assert peak == 2


@pytest.mark.parametrize("argv, needle", [
    (["--extra-engine-args", '{"block_sise": 64}'], "block_sise: unknown key"),
    (["--extra-engine-args", '{"num_gpu_blocks": -4}'], "num_gpu_blocks"),
    (["--extra-engine-args", '{"max_num_seqs": 0}'], "max_num_seqs"),
    (["--extra-engine-args", "{not json"], "invalid JSON"),
    (["--input-tokens", "-5", "--output-tokens", "3", "--request-count", "2"], "input_tokens"),
    (["--input-tokens", "100", "--output-tokens", "3"], "--request-count"),
    (["--input-tokens", "9000", "--output-tokens", "3", "--request-count", "1", "--extra-engine-args",
      '{"num_gpu_blocks": 10}'], "prompt larger than the KV cache"),
    (["--num-workers", "0", "--input-tokens", "10", "--output-tokens", "3", "--request-count", "1"], "--num-workers"),
    (["--replay-mode", "online"], "online"),
])
def test_bad_input_is_one_line_and_exit_2(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(argv, capsys)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("line, needle", [
    ("this is not json", "JSON"),
    ('{"timestamp": 0, "input_length": 10, "output_length": 2}', "hash_ids"),
])
def test_bad_trace_line_names_the_line(tmp_path: Path, line: str, needle: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    trace = _trace(tmp_path, [GOOD[0], line])
    code, _, err = _run([str(trace)], capsys)
    assert code == 2
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and needle in lines[0] and "trace.jsonl:2:" in lines[0], err


def test_engine_args_from_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "engine.json"
    cfg.write_text('{"block_size": 16, "num_gpu_blocks": 4096}')
    report = tmp_path / "r.json"
    code, _, _ = _run(["--input-tokens", "100", "--output-tokens", "3", "--request-count", "2",
                       "--extra-engine-args", str(cfg), "--report-json", str(report)], capsys)
    assert code == 0
    assert json.loads(report.read_text())["config"]["engine"]["block_size"] == 16


def test_embedded_sample_is_the_default_workload(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["--num-workers", "4", "--arrival-speedup-ratio", "4"], capsys)
    assert code == 0 and "embedded Mooncake sample" in err
    assert "Request Count" in out


def test_module_entry_point_runs() -> None:
    proc = subprocess.run([sys.executable, "-m", "cluster.replay", "--input-tokens", "64", "--output-tokens", "2",
                           "--request-count", "1", "--no-progress"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Request Count" in proc.stdout


def test_real_mooncake_trace_head_replays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert TRACE_DIR.is_dir(), f"{TRACE_DIR} is missing: the tests need the repository's sibling shared/"
    head = tmp_path / "head.jsonl"
    with open(TRACE_DIR / "mooncake_conversation_trace.jsonl") as src:
        head.write_text("".join(next(src) for _ in range(300)))
    report = tmp_path / "r.json"
    code, _, _ = _run([str(head), "--num-workers", "4", "--report-json", str(report)], capsys)
    assert code == 0
    summary = json.loads(report.read_text())["summary"]
    assert summary["completed_requests"] == 300
    assert 0 < summary["prefix_cache_reused_ratio"] < 1
