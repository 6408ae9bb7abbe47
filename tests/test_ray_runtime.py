"""The Ray runtime gives byte-identical reports to the Local runtime, and `ray job submit` works.

The session's one Ray head (`ray_head` in tests/conftest.py: started like a user would, with
token authentication, in a private HOME and temp dir, and stopped at the end) serves these
tests. Marked slow: CI runs them; `pytest -m "not slow"` skips them.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.golden.cases import GOLDEN_DIR
from tests.scenario_helpers import BIN, ROOT, run_cli, scenario, write

pytestmark = pytest.mark.slow

def _shipped(tmp_path: Path, name: str, **workload: Any) -> Path:
    import yaml

    sc: dict[str, Any] = yaml.safe_load((ROOT / "configs" / "scenarios" / name).read_text())
    sc["workload"].update(workload)
    if "trace" in sc["workload"]:
        sc["workload"]["trace"] = str((ROOT / sc["workload"]["trace"]).resolve())
    return write(tmp_path, sc, name)


@pytest.mark.parametrize("name, workload", [
    ("smoke.yaml", {}),
    ("mooncake-kv16.yaml", {"max_sessions": 1500}),
])
def test_shipped_scenarios_are_byte_identical_on_local_and_ray(ray_head: dict[str, str], tmp_path: Path,
                                                                name: str, workload: dict[str, Any]) -> None:
    path = _shipped(tmp_path, name, **workload)
    local = run_cli(path, tmp_path / "local", None)
    if name == "smoke.yaml":  # so smoke on Ray must equal the Local golden too
        assert local[0] == (GOLDEN_DIR / "run-smoke.report.json").read_bytes()
    for shards in (1, 2, 4):
        ray_out = run_cli(path, tmp_path / f"ray{shards}", ray_head, "--runtime", "ray", "--shards", str(shards))
        assert ray_out == local, f"{name}: {shards} shard(s)"


def test_lossy_plane_faults_and_queueing_are_identical_on_both_channels(ray_head: dict[str, str],
                                                                       tmp_path: Path) -> None:
    wl = scenario()["workload"]
    wl["synthetic"]["request_rate"] = 4000
    sc = scenario(
        event_plane={"latency": {"dist": "lognormal", "median_ms": 0.4, "sigma": 0.6, "min_ms": 0.2}, "loss": 0.2,
                     "duplicate": 0.05, "reorder": 0.1, "replay_buffer_batches": 4},
        router={"mode": "kv", "router_queue_threshold": 0.0, "router_temperature": 0.5},
        faults=[{"at_s": 0.05, "partition": {"nodes": ["n-1"], "duration_s": 0.1}}, {"at_s": 0.1, "kill_node": "n-2"}],
        workload=wl)
    path = write(tmp_path, sc)
    local = run_cli(path, tmp_path / "local", None)
    report = json.loads(local[0])
    plane = report["event_plane"]
    assert plane["kv_sync"]["replay_requests"] > 0 and plane["router"]["queued"] > 0
    assert plane["index"]["ranks_diverged"] == 0 and report["requests"]["failed"] > 0
    assert run_cli(path, tmp_path / "zmq", ray_head, "--runtime", "ray", "--shards", "2") == local
    assert run_cli(path, tmp_path / "calls", ray_head, "--runtime", "ray", "--shards", "3",
                    "--channel", "ray") == local


def test_ray_job_submit_runs_the_smoke_scenario(ray_head: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "job-out"
    runtime_env = json.dumps({"working_dir": str(ROOT), "excludes": [".venv", ".git", "out", "*.egg-info"]})
    cmd = [str(BIN / "ray"), "job", "submit", "--address", ray_head["RAY_DASHBOARD"], "--runtime-env-json",
           runtime_env, "--", "clustersim", "run", "configs/scenarios/smoke.yaml", "--runtime", "ray",
           "--shards", "2", "--no-progress", "--output-dir", str(out)]
    env = {k: v for k, v in ray_head.items() if k != "RAY_ADDRESS"}
    for _ in range(12):  # the head's job agent may still be starting on a loaded machine: Ray asks to retry
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if "No available agent to submit job" not in done.stderr:
            break
        time.sleep(5.0)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout + done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["completed_requests"] == 240
    assert (out / "report.json").read_bytes() == (GOLDEN_DIR / "run-smoke.report.json").read_bytes()  # = Local
