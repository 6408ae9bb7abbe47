"""Bad input (issue 14): one line on stderr naming the field, before the run, never a traceback.

One row per case of the issue: the command line (in-process, `cluster.cli.main`), the expected
exit status and a fragment of the one stderr line. Ctrl-C and a closed pipe need a real process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from cluster.cli import main

ROOT = Path(__file__).resolve().parent.parent
H100 = str(ROOT / "configs/accelerator/h100x8.toml")
GOOD = [{"timestamp": 0, "input_length": 100, "output_length": 5, "hash_ids": [1]},
        {"timestamp": 10, "input_length": 100, "output_length": 5, "hash_ids": [2]}]


def _trace(d: Path, name: str, rows: list[dict[str, Any]], prefix: bytes = b"") -> str:
    path = d / name
    path.write_bytes(prefix + "".join(json.dumps(r) + "\n" for r in rows).encode())
    return str(path)


def _scenario(d: Path, name: str = "sc.yaml", engine: dict[str, Any] | None = None, **top: Any) -> str:
    sc: dict[str, Any] = {
        "name": "t", "seed": 1, "router": {"mode": "round_robin"},
        "deployments": [{"name": "agg", "replicas": 2, "engine": {"num_gpu_blocks": 256, "block_size": 16,
                                                                   **(engine or {})}}],
        "workload": {"trace": _trace(d, "good.jsonl", GOOD), "trace_block_size": 128},
        "outputs": {"dir": str(d / "out")}}
    sc.update(top)
    path = d / name
    path.write_text(yaml.safe_dump(sc))
    return str(path)


def _file(d: Path) -> str:
    (d / "afile").write_text("x")
    return str(d / "afile")


def _node(d: Path, old: str, new: str) -> str:
    path = d / "node.toml"
    path.write_text(Path(H100).read_text().replace(old, new))
    return str(path)


_CLUSTER = {"nodes": [{"name": "n", "accelerator": H100}]}

# (case, argv builder, exit status, fragment of the one stderr line)
CASES: list[tuple[str, Callable[[Path], list[str]], int, str]] = [
    ("--report-json unwritable",
     lambda d: ["replay", _trace(d, "t.jsonl", GOOD), "--report-json", _file(d) + "/r.json"], 2,
     "--report-json: "),
    ("--per-request-jsonl unwritable",
     lambda d: ["replay", _trace(d, "t.jsonl", GOOD), "--per-request-jsonl", _file(d) + "/r.jsonl"], 2,
     "--per-request-jsonl: "),
    ("--output-dir unwritable", lambda d: ["run", _scenario(d), "--output-dir", _file(d) + "/out"], 2,
     "--output-dir: "),
    ("outputs.dir unwritable", lambda d: ["run", _scenario(d, outputs={"dir": _file(d) + "/o"})], 2, "outputs.dir: "),
    ("interpolated table missing",
     lambda d: ["run", _scenario(d, engine={"timing_model": {"type": "interpolated", "path": str(d / "no.npz")}})], 2,
     "timing_model.path: file not found"),
    ("interpolated table unreadable",
     lambda d: ["run", _scenario(d, engine={"timing_model": {"type": "interpolated", "path": _file(d)}})], 2,
     "timing_model.path: cannot read timing table"),
    ("external table missing",
     lambda d: ["run", _scenario(d, engine={"timing_model": {"type": "external", "provider": "dynamo_profile",
                                                              "config": {"path": str(d / "no.npz")}}})], 2,
     "timing_model.config.path: file not found"),
    ("planner_profile_data unreadable", lambda d: ["run", _scenario(d, engine={"planner_profile_data": _file(d)})], 2,
     "planner_profile_data: cannot read timing table"),
    ("num_gpu_blocks 1e12 (a float)", lambda d: ["run", _scenario(d, engine={"num_gpu_blocks": 1e12})], 2,
     "engine.num_gpu_blocks: Input should be a valid integer"),
    ("block_size true", lambda d: ["run", _scenario(d, engine={"block_size": True})], 2,
     "engine.block_size: Input should be a valid integer"),
    ("speedup_ratio 1e-300", lambda d: ["run", _scenario(d, engine={"speedup_ratio": 1e-300})], 2,
     "engine.speedup_ratio: must be 0"),
    ("all rejected by max_model_len", lambda d: ["run", _scenario(d, engine={"max_model_len": 50})], 3,
     "warning: 2 of 2 requests did not complete (rejected_max_model_len 2)"),
    ("5M-token output rejected late",
     lambda d: ["replay", _trace(d, "t.jsonl", [{**GOOD[0], "output_length": 5_000_000}, GOOD[1]])], 0,
     "warning: 1 of 2 requests did not complete (rejected_kv_capacity 1); the last ended at 25,"),
    ("output_length 1e11", lambda d: ["replay", _trace(d, "t.jsonl", [{**GOOD[0], "output_length": 10**11}])], 3,
     "rejected_kv_capacity 1"),
    ("timestamp 1e18", lambda d: ["replay", _trace(d, "t.jsonl", [{**GOOD[0], "timestamp": 1e18}])], 2,
     "t.jsonl:1: timestamp 1e+18 ms is beyond 1e+12 ms"),
    ("--sla-ttft-ms nan", lambda d: ["replay", _trace(d, "t.jsonl", GOOD), "--sla-ttft-ms", "nan"], 2,
     "--sla-ttft-ms must be a positive number"),
    ("--sla-ttft-ms negative", lambda d: ["replay", _trace(d, "t.jsonl", GOOD), "--sla-ttft-ms=-5"], 2,
     "--sla-ttft-ms must be a positive number"),
    ("--arrival-speedup-ratio inf", lambda d: ["replay", _trace(d, "t.jsonl", GOOD), "--arrival-speedup-ratio", "inf"],
     2, "--arrival-speedup-ratio must be a positive number"),
    ("links.requests.loss", lambda d: ["run", _scenario(d, event_plane={"links": {"requests": {"loss": 0.5}}})], 2,
     "links.requests.loss: requests is a reliable (TCP-like) topic"),
    ("--shards 2 without --runtime ray", lambda d: ["run", _scenario(d), "--shards", "2"], 2, "add --runtime ray"),
    ("memory_size 80 (bytes)", lambda d: ["cluster", "show", _node(d, 'memory_size = "80G"', 'memory_size = "80"')],
     2, "devices.0.memory_size: 80 B is not the memory of"),
    ("duplicate mother_uuid",
     lambda d: ["cluster", "show", _node(d, "0000-000000000001", "0000-000000000000")], 2,
     "devices.0.mother_uuid: 'GPU-h100-0000-0000-0000-000000000000' is used by another device"),
    ("device_split_count 1000000",
     lambda d: ["cluster", "show", H100, "--mode", "hami-core", "--set", "device_split_count=1000000"], 2,
     "--set device_split_count: Input should be less than or equal to 1024"),
    ("partition duration_s 0",
     lambda d: ["run", _scenario(d, cluster=_CLUSTER, faults=[{"at_s": 1, "partition": {"nodes": ["n"],
                                                                                        "duration_s": 0}}])], 2,
     "faults.0.partition.duration_s: Input should be greater than 0"),
    ("negative at_s", lambda d: ["run", _scenario(d, cluster=_CLUSTER, faults=[{"at_s": -1, "kill_node": "n"}])], 2,
     "faults.0.at_s (kill_node): Input should be greater than or equal to 0"),
    ("fault of no kind", lambda d: ["run", _scenario(d, cluster=_CLUSTER, faults=[{"at_s": 1}])], 2,
     "faults.0: a fault needs exactly one of kill_node, kill_worker, partition"),
    ("--mode bogus", lambda d: ["cluster", "show", H100, "--mode", "bogus"], 2,
     "--mode: 'bogus' is not a virtualization mode"),
    ("--num-workers 1e9", lambda d: ["replay", _trace(d, "t.jsonl", GOOD), "--num-workers", str(10**9)], 2,
     "--num-workers: the run needs about 22,888.2 GiB of memory (1,000,000,000 engine ranks"),
    ("synthetic request_count 1e12",
     lambda d: ["run", _scenario(d, workload={"synthetic": {"input_tokens": 10, "output_tokens": 2,
                                                            "request_count": 10**12}})], 2,
     "workload.synthetic.request_count: the run needs about"),
    ("--input-tokens 1e15", lambda d: ["replay", "--input-tokens", str(10**15), "--output-tokens", "2",
                                       "--request-count", "2"], 2, "lower --input-tokens"),
    ("pydantic 'Value error,' prefix",
     lambda d: ["run", _scenario(d, workload={"trace": "x.jsonl", "synthetic": {"input_tokens": 1, "output_tokens": 1,
                                                                                 "request_count": 1}})], 2,
     "workload: give trace or synthetic, not both"),
]


@pytest.mark.parametrize("argv, status, fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line(argv: Callable[[Path], list[str]], status: int, fragment: str, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    args = argv(tmp_path)
    if args[0] in ("replay", "run"):
        args.insert(1, "--no-progress")
    code = main(args)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == status and len(lines) == 1 and fragment in lines[0], err
    assert "Traceback" not in err and "Value error," not in err


def test_output_paths_are_refused_before_the_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # an unwritable output must not cost the run: nothing is simulated, nothing printed on stdout
    code = main(["replay", "--no-progress", _trace(tmp_path, "t.jsonl", GOOD), "--report-json", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 2 and "is a directory" in err and out == ""


def test_a_bom_trace_is_accepted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = _trace(tmp_path, "plain.jsonl", GOOD)
    bom = _trace(tmp_path, "bom.jsonl", GOOD, prefix=b"\xef\xbb\xbf")
    reports = []
    for name, trace in (("a", plain), ("b", bom)):
        assert main(["replay", "--no-progress", trace, "--report-json", str(tmp_path / f"{name}.json")]) == 0
        reports.append(json.loads((tmp_path / f"{name}.json").read_text())["summary"])
    assert reports[0] == reports[1] and capsys.readouterr().err == ""


@pytest.mark.parametrize("blocks", [10**9, 10**12])
def test_huge_kv_caches_cost_only_what_they_use(blocks: int, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    # block ids are allocated lazily: 1e12 blocks used to raise MemoryError at startup
    code = main(["replay", "--no-progress", _trace(tmp_path, "t.jsonl", GOOD),
                 "--extra-engine-args", json.dumps({"num_gpu_blocks": blocks})])
    assert code == 0 and capsys.readouterr().err == ""


def test_unknown_replay_flag_shows_the_replay_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["replay", "--bogus-flag", "3"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("usage: clustersim replay")
    assert err.splitlines()[-1] == "clustersim replay: error: unrecognized arguments: --bogus-flag"


def test_cluster_show_into_a_closed_pipe_is_quiet() -> None:
    cmd = f"{Path(sys.executable).parent / 'clustersim'} cluster show {ROOT / 'configs/accelerator'}/*.toml | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("node ") and done.stderr == "" and done.returncode == 141


def test_ctrl_c_writes_a_partial_report_and_exits_130(tmp_path: Path) -> None:
    # a run long enough to be interrupted: 5,000 requests of 2,000 output tokens on one worker
    out = tmp_path / "r.json"
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "clustersim"), "replay", "--no-progress", "--input-tokens", "100",
         "--output-tokens", "2000", "--request-count", "5000", "--no-macro-step", "--report-json", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    time.sleep(6.0)  # imports and world building, then well into the run
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "interrupted at" in lines[0] and "Traceback" not in stderr, stderr
    report = json.loads(out.read_text())
    assert report["partial"] is True
    assert "Report written to" in stdout


def test_memory_check_names_the_largest_knob() -> None:
    from cluster.commands.guard import RANK_BYTES, check_memory, ranks_need

    needs = [ranks_need("deployments.0.replicas", 10), ranks_need("deployments.1.replicas", 1000)]
    check_memory(needs, available=1010 * RANK_BYTES)  # fits exactly
    with pytest.raises(ValueError, match=r"^deployments\.1\.replicas: .*lower deployments\.1\.replicas$"):
        check_memory(needs, available=1009 * RANK_BYTES)


def test_idle_workers_are_cheap(tmp_path: Path) -> None:
    # lazy KV block ids: an idle rank no longer holds num_gpu_blocks-sized lists (~1.2 MB each)
    import tracemalloc

    from actors.engine.config import EngineConfig
    from cluster.runtime.local import run_local
    from cluster.scenario.load import LoadedScenario
    from cluster.scenario.spec import replay_scenario
    from cluster.scenario.world import build_world

    tracemalloc.start()
    try:
        sc = replay_scenario(EngineConfig(), 2000, workload={"trace": _trace(tmp_path, "t.jsonl", GOOD)})
        run_local(build_world(LoadedScenario(sc)).setup)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2000 * 64 * 1024, peak  # was ~2.4 GB for 2,000 default workers
