"""A world that changes during a run: workers added (placed on free vGPUs, serving after the engine's
startup_time) and removed (drained, or stopped), on the Local and the Ray runtime."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from actors.engine.records import FailureReason, TerminalStatus
from tests.scenario_helpers import run_cli, run_report, scenario, world_of, write


def _dynamic(**edits: Any) -> dict[str, Any]:
    """2 workers, +2 at 10 s (startup 3 s), agg-0 drained at 40 s, on 3 MIG nodes; 300 requests over ~50 s."""
    dep = {"name": "agg", "replicas": 2, "vgpu": {"profile": "3g.40gb"}, "placement": "spread",
           "engine": {"block_size": 16, "num_gpu_blocks": 2000, "max_num_seqs": 16, "startup_time": 3.0},
           "timing": {"model": "roofline"}}
    sc = scenario(
        cluster={"nodes": [{"name": "n", "count": 3, "accelerator": "configs/accelerator/h100x8.toml",
                            "virtualization": {"mode": "mig", "profiles": ["3g.40gb", "3g.40gb"]}}]},
        deployments=[dep],
        workload={"synthetic": {"input_tokens": 800, "output_tokens": 60, "request_count": 300, "request_rate": 6,
                                "shared_prefix_ratio": 0.5, "num_prefix_groups": 4, "block_size": 16}},
        events=[{"at_s": 10, "add_workers": {"deployment": "agg", "count": 2}},
                {"at_s": 40, "remove_workers": {"workers": ["agg-0"]}}])
    sc.update(edits)
    return sc


def _workers(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in report["workers"]}


def test_workers_join_after_startup_leave_after_draining_and_nothing_is_lost(tmp_path: Path) -> None:
    report = run_report(tmp_path, _dynamic())
    records = report["_records"]
    assert all(r.terminal_status is TerminalStatus.COMPLETED for r in records)
    w = _workers(report)
    assert set(w) == {"agg-0", "agg-1", "agg-2", "agg-3"}
    for name in ("agg-2", "agg-3"):
        assert w[name]["started_ms"] == 10_000.0
        assert w[name]["ready_ms"] == pytest.approx(13_000.5)  # the start message's latency, then 3 s
        assert w[name]["completed_requests"] > 0
    assert w["agg-0"]["state"] == "stopped" and 40_000.0 <= w["agg-0"]["stopped_ms"]
    by_id = {v["worker_id"]: v for v in w.values()}
    for r in records:  # the router sends only between a worker's ready and its removal
        worker = by_id[r.worker_id]
        assert r.dispatched_ms > worker["ready_ms"] or worker["ready_ms"] == 0.0
        if worker["name"] == "agg-0":
            assert r.dispatched_ms < 40_000.0
    # GPU-hours: the sum of every worker's lifetime x GPUs
    duration = report["summary"]["duration_ms"]
    lives = [(v["started_ms"], min(v["stopped_ms"] or duration, duration), v["num_gpus"]) for v in w.values()]
    expected = math.fsum((stop - start) * gpus for start, stop, gpus in lives) / 3_600_000.0
    assert report["summary"]["gpu_hours"] == pytest.approx(expected, rel=1e-12)
    assert report["summary"]["gpu_hours"] == pytest.approx(sum(v["gpu_hours"] for v in w.values()), rel=1e-12)
    kinds = [(e["kind"], e.get("worker")) for e in report["fleet_events"]]
    assert kinds == [("add_worker", "agg-2"), ("add_worker", "agg-3"), ("worker_ready", "agg-2"),
                     ("worker_ready", "agg-3"), ("remove_worker", "agg-0"), ("worker_stopped", "agg-0")]
    assert report["event_plane"]["index"]["ranks_diverged"] == 0


def test_removed_vgpus_are_free_again_and_a_full_cluster_says_capacity_exhausted(tmp_path: Path) -> None:
    # One node of 8 whole GPUs, 2 workers; one leaves at 5 s, then 8 more are asked for: 7 fit.
    sc = _dynamic(cluster={"nodes": [{"name": "n", "accelerator": "configs/accelerator/h100x8.toml"}]},
                  events=[{"at_s": 5, "remove_workers": {"deployment": "agg", "count": 1}},
                          {"at_s": 20, "add_workers": {"deployment": "agg", "count": 8}}])
    sc["deployments"][0]["vgpu"] = {}
    report = run_report(tmp_path, sc)
    outcomes = [e["outcome"] for e in report["fleet_events"] if e["kind"] == "add_worker"]
    assert outcomes == ["placed"] * 7 + ["capacity_exhausted"]
    w = _workers(report)
    assert w["agg-1"]["state"] == "stopped"  # the newest worker went first
    assert report["nodes"][0]["vgpus_used"] == 8 and "agg-1" not in report["nodes"][0]["workers"]


def test_removal_without_drain_fails_the_requests_in_flight(tmp_path: Path) -> None:
    sc = _dynamic(events=[{"at_s": 2, "remove_workers": {"workers": ["agg-0"], "drain": False}}])
    sc["workload"]["synthetic"]["request_rate"] = 60  # busy workers: requests are in flight at 2 s
    report = run_report(tmp_path, sc)
    failed = [r for r in report["_records"] if r.terminal_status is TerminalStatus.FAILED]
    assert failed and all(r.reason is FailureReason.WORKER_REMOVED and r.cause == "events.0" for r in failed)
    assert len(report["_records"]) == 300 and report["requests"]["completed"] == 300 - len(failed)


def test_a_node_kill_also_hits_workers_added_there_later(tmp_path: Path) -> None:
    sc = _dynamic(events=[{"at_s": 5, "add_workers": {"deployment": "agg", "count": 4}}],
                  faults=[{"at_s": 30, "kill_node": "n-2"}])
    report = run_report(tmp_path, sc)
    w = _workers(report)
    on_n2 = [v for v in w.values() if "n-2" in v["nodes"]]
    assert any(v["started_ms"] == 5000.0 for v in on_n2)
    assert all(v["state"] == "failed" and v["stopped_ms"] == 30_000.0 for v in on_n2)
    assert report["faults"][0]["workers"] == sorted((v["name"] for v in on_n2), key=lambda n: w[n]["worker_id"])
    assert report["faults"][0]["requests_failed"] == sum(
        1 for r in report["_records"] if r.terminal_status is TerminalStatus.FAILED)


def test_a_worker_killed_while_it_starts_never_serves_and_nothing_is_lost(tmp_path: Path) -> None:
    # agg-2 and agg-3 start at 10 s and would be ready at ~13 s; n-2 dies at 11 s, under one of them.
    sc = _dynamic(faults=[{"at_s": 11, "kill_node": "n-2"}])
    report = run_report(tmp_path, sc)
    w = _workers(report)
    starting = [v for v in w.values() if v["started_ms"] == 10_000.0 and "n-2" in v["nodes"]]
    assert starting and all(v["state"] == "failed" and v["ready_ms"] is None for v in starting)
    assert all(v["completed_requests"] == 0 and v["stopped_ms"] == 11_000.0 for v in starting)
    assert report["faults"][0]["workers"] == [v["name"] for v in starting]
    assert [e for e in report["fleet_events"] if e["kind"] == "worker_failed"] == [
        {"at_ms": 11_000.5, "kind": "worker_failed", "worker": v["name"], "failed_ms": 11_000.0,
         "reason": "worker_killed", "cause": "faults.0"} for v in starting]
    assert len(report["_records"]) == 300 == report["requests"]["completed"]  # it was never sent any


def test_the_control_api_adds_and_removes_during_a_run(tmp_path: Path) -> None:
    """What the planner and chaos issues call: `fleet.add_worker` / `remove_worker` from the control shard."""
    from cluster.runtime.local import run_local

    world = world_of(tmp_path, _dynamic(events=[]))
    setup = world.setup
    original = setup.build_control

    def build(loop: Any, plane: Any, on_done: Any = None) -> Any:
        control = original(loop, plane, on_done)
        control.fleet.add_worker("agg", 2_000.0)
        control.fleet.remove_worker("agg-1", 30_000.0, drain=True)
        return control

    setup.build_control = build  # type: ignore[method-assign]
    result, control = run_local(setup)
    states = {life.info.name: life.state for life in control.fleet.lives.values()}
    assert states == {"agg-0": "ready", "agg-1": "stopped", "agg-2": "ready"}
    assert all(r.terminal_status is TerminalStatus.COMPLETED for r in result.records)


@pytest.mark.slow
def test_a_changing_world_is_byte_identical_on_local_and_ray(ray_head: dict[str, str], tmp_path: Path) -> None:
    # Control messages (start, drain, stop) travel faster than requests: the conservative windows
    # must be bounded by them too.
    plane = {"latency_ms": 50.0, "links": {"control": {"latency": {"dist": "constant", "ms": 0.1}}}}
    path = write(tmp_path, _dynamic(event_plane=plane))
    local = run_cli(path, tmp_path / "local", None)
    assert run_cli(path, tmp_path / "ray", ray_head, "--runtime", "ray", "--shards", "2") == local
    assert len(json.loads(local[0])["workers"]) == 4
