"""Small scenario files for tests: a base dict, edited per test, written as YAML."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from cluster.report.build import build_report
from cluster.runner import run_world
from cluster.scenario.load import load_scenario
from cluster.scenario.world import World, build_world

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

BASE: dict[str, Any] = {
    "name": "tiny",
    "seed": 3,
    "model": "qwen3-0.6b",
    "cluster": {"nodes": [{"name": "n", "count": 4, "accelerator": "configs/accelerator/h100x8.toml",
                           "virtualization": {"mode": "mig", "profiles": ["3g.40gb", "3g.40gb"]}}]},
    "deployments": [{"name": "agg", "replicas": 8, "vgpu": {"profile": "3g.40gb"}, "placement": "spread",
                     "engine": {"block_size": 16, "num_gpu_blocks": 600, "max_num_seqs": 16},
                     "timing": {"model": "roofline"}}],
    "router": {"mode": "kv"},
    "event_plane": {"latency_ms": 0.5},
    "workload": {"synthetic": {"input_tokens": 500, "output_tokens": 30, "input_stddev": 150, "output_stddev": 8,
                               "request_count": 60, "request_rate": 40, "turns_per_session": 2,
                               "inter_turn_delay_ms": 30, "shared_prefix_ratio": 0.6, "num_prefix_groups": 4,
                               "block_size": 16}},
}


def scenario(**edits: Any) -> dict[str, Any]:
    """A deep copy of BASE with top-level keys replaced (a value of None deletes the key)."""
    sc = copy.deepcopy(BASE)
    for key, value in edits.items():
        if value is None:
            sc.pop(key, None)
        else:
            sc[key] = value
    return sc


def write(tmp_path: Path, sc: dict[str, Any], name: str = "sc.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(sc, sort_keys=False))
    return path


def world_of(tmp_path: Path, sc: dict[str, Any], macro_step: bool = True) -> World:
    return build_world(load_scenario(write(tmp_path, sc)), macro_step=macro_step)


def run_report(tmp_path: Path, sc: dict[str, Any], runtime: str = "local", shards: int = 1,
               macro_step: bool = True, **kwargs: Any) -> dict[str, Any]:
    """Build and run a scenario; the report dict (what `clustersim run` writes)."""
    world = world_of(tmp_path, sc, macro_step)
    result, control = run_world(world, runtime, shards, **kwargs)  # type: ignore[arg-type]
    report = build_report(world, result, control)
    report["_records"] = result.records
    return report


def run_cli(scenario_path: Path, out: Path, env: dict[str, str] | None, *flags: str) -> tuple[bytes, bytes]:
    """`clustersim run` in a subprocess, as a user runs it; (report JSON, per-request JSONL) bytes.
    `env`: the Ray head's environment (`ray_head` fixture), or None for the Local runtime."""
    cmd = [str(BIN / "clustersim"), "run", str(scenario_path), "--no-progress", "--output-dir", str(out), *flags]
    run_env = None if env is None else {k: v for k, v in env.items() if k != "RAY_DASHBOARD"}
    done = subprocess.run(cmd, cwd=ROOT, env=run_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return (out / "report.json").read_bytes(), (out / "requests.jsonl").read_bytes()
