"""Scenario runs on the Local runtime: latency on the event plane, lossy KV streams with and
without recovery, faults, and macro-stepping under all of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from actors.engine.records import TerminalStatus
from cluster.cli import main
from cluster.report.outputs import per_request_rows
from tests.scenario_helpers import BASE, run_report, scenario


def _one_request(latency_ms: float) -> dict[str, Any]:
    return scenario(
        cluster={"nodes": [{"name": "n", "accelerator": "configs/accelerator/h100x8.toml"}]},
        deployments=[{"name": "agg", "replicas": 1, "engine": {"block_size": 64}, "timing": {"model": "polynomial"}}],
        event_plane={"latency_ms": latency_ms},
        workload={"synthetic": {"input_tokens": 1024, "output_tokens": 20, "request_count": 1, "block_size": 64}},
        model=None)


def test_latency_reaches_the_client_on_both_paths(tmp_path: Path) -> None:
    base = run_report(tmp_path, _one_request(0.0))["_records"][0]
    slow = run_report(tmp_path, _one_request(2.5))["_records"][0]
    # Request path + response path; the engine's own timeline is unchanged.
    assert slow.ttft_ms == pytest.approx(base.ttft_ms + 5.0, abs=1e-9)
    assert slow.e2e_latency_ms == pytest.approx(base.e2e_latency_ms + 5.0, abs=1e-9)
    assert slow.ttst_ms == pytest.approx(base.ttst_ms, abs=1e-9)
    assert slow.first_admit_ms == pytest.approx(base.first_admit_ms + 2.5, abs=1e-9)


def test_kv_routing_scenario_keeps_the_router_index_exact(tmp_path: Path) -> None:
    rep = run_report(tmp_path, scenario())
    assert rep["requests"] == {"completed": 120}
    assert rep["event_plane"]["index"] == {"ranks_diverged": 0, "blocks_missing": 0, "blocks_extra": 0,
                                           "ranks_checked": 8}
    assert rep["event_plane"]["kv_sync"]["gaps_detected"] == 0
    assert rep["summary"]["prefix_cache_reused_ratio"] > 0.3
    routed = [h for r in rep["_records"] for h in r.routing_history]
    assert len(routed) == 120 and all(h["outcome"] == "immediate" for h in routed)


LOSSY = {"latency": {"dist": "uniform", "low_ms": 0.2, "high_ms": 1.5}, "loss": 0.2, "duplicate": 0.05,
         "reorder": 0.1, "replay_buffer_batches": 8}


def test_lossy_kv_stream_with_recovery_converges_to_the_true_caches(tmp_path: Path) -> None:
    rep = run_report(tmp_path, scenario(event_plane=LOSSY))
    plane = rep["event_plane"]
    assert plane["links"]["kv_events"]["lost"] > 20
    assert plane["kv_sync"]["gaps_detected"] > 0 and plane["kv_sync"]["replay_requests"] > 0
    assert plane["index"]["ranks_diverged"] == 0 and plane["index"]["ranks_checked"] == 8
    assert plane["router"]["events_missing"] == 0 and plane["router"]["event_gaps"] == 0


def test_without_recovery_the_divergence_is_detected_and_reported(tmp_path: Path) -> None:
    rep = run_report(tmp_path, scenario(event_plane={**LOSSY, "recovery": False}))
    plane = rep["event_plane"]
    assert plane["kv_sync"]["replay_requests"] == 0
    assert plane["kv_sync"]["batches_missing"] > 0 and plane["kv_sync"]["gaps_detected"] > 0
    assert plane["router"]["events_missing"] > 0  # the router's own sequence check sees it too
    assert plane["index"]["ranks_diverged"] > 0
    assert plane["index"]["blocks_missing"] + plane["index"]["blocks_extra"] > 0


def test_a_tail_loss_is_found_by_heartbeats(tmp_path: Path) -> None:
    # Every KV batch after t=1.0 s is lost to a partition of all nodes; only heartbeats after it heals
    # tell the router what it missed.
    sc = scenario(event_plane={"latency_ms": 0.5, "replay_buffer_batches": 1},
                  faults=[{"at_s": 1.0, "partition": {"nodes": ["n-0", "n-1", "n-2", "n-3"], "duration_s": 30}}])
    rep = run_report(tmp_path, sc)
    plane = rep["event_plane"]
    assert plane["links"]["kv_events"]["partitioned"] > 0
    assert plane["kv_sync"]["resyncs"] > 0
    assert plane["index"]["ranks_diverged"] == 0
    assert rep["requests"] == {"completed": 120}  # requests and responses waited for the heal


def test_macro_stepping_is_exact_on_a_lossy_plane_with_faults(tmp_path: Path) -> None:
    sc = scenario(event_plane=LOSSY, faults=[{"at_s": 1.0, "kill_node": "n-2"}],
                  router={"mode": "kv", "router_queue_threshold": 0.0, "router_temperature": 0.3})
    macro = run_report(tmp_path, sc, macro_step=True)
    single = run_report(tmp_path, sc, macro_step=False)
    assert per_request_rows(macro.pop("_records")) == per_request_rows(single.pop("_records"))
    assert macro["event_plane"]["kv_sync"]["replay_requests"] > 0 and macro["requests"].get("failed", 0) > 0
    # Everything, including ITL mean/std (exactly rounded sums) and the killed ranks' pass counts.
    assert json.dumps(macro, sort_keys=True) == json.dumps(single, sort_keys=True)


def test_killing_a_node_fails_its_requests_and_routing_avoids_it(tmp_path: Path) -> None:
    sc = scenario(faults=[{"at_s": 0.8, "kill_node": "n-1"}])
    rep = run_report(tmp_path, sc)
    dead = {w["name"] for w in rep["workers"] if not w["alive"]}
    assert dead == set(rep["faults"][0]["workers"]) and dead
    records = rep["_records"]
    failed = [r for r in records if r.terminal_status is TerminalStatus.FAILED]
    assert failed and rep["faults"][0]["requests_failed"] == len(failed)
    assert all(r.terminal_ms >= 800.0 for r in failed)
    dead_ids = {w["worker_id"] for w in rep["workers"] if not w["alive"]}
    late = [r for r in records if r.dispatched_ms > 801.0]
    assert late and all(r.worker_id not in dead_ids for r in late)
    assert rep["event_plane"]["index"]["ranks_checked"] == 8 - len(dead)


def test_router_queueing_holds_requests_until_workers_free_up(tmp_path: Path) -> None:
    wl = json.loads(json.dumps(BASE["workload"]))
    wl["synthetic"]["request_rate"] = 4000
    rep = run_report(tmp_path, scenario(workload=wl, router={"mode": "kv", "router_queue_threshold": 0.0,
                                                             "router_queue_policy": "wspt"}))
    history = [h for r in rep["_records"] for h in r.routing_history]
    queued = [h for h in history if h["outcome"] == "queued"]
    assert queued and all(h["queue_wait_ms"] >= 0 for h in queued)
    assert rep["event_plane"]["router"]["queued"] == len(queued)
    assert rep["requests"] == {"completed": 120}


def test_run_command_writes_the_report_and_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                             ) -> None:
    out = tmp_path / "out"
    assert main(["run", "configs/scenarios/smoke.yaml", "--no-progress", "--output-dir", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["scenario"]["name"] == "smoke" and report["summary"]["completed_requests"] == 240
    lines = (out / "requests.jsonl").read_text().splitlines()
    assert len(lines) == 240 and "routing_history" in json.loads(lines[0])
    text = capsys.readouterr().out
    assert "clustersim | LLM Metrics" in text and "router index vs caches: 0 of 8 ranks differ" in text
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncluster: {nodes: []}\n")
    assert main(["run", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad.yaml" in err[0] and "cluster.nodes" in err[0]
