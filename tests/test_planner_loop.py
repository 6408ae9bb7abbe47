"""The planner in the loop: scripted, user-class and SLA planners acting through the fleet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cluster.commands.replay import main as replay_main
from tests.planner_plugins import StepTo
from tests.scenario_helpers import run_report, scenario

SCRIPTED = {"type": "scripted", "tick_s": 5, "steps": [{"at_s": 10, "workers": 3}, {"at_s": 40, "workers": 1}]}
# The reference replay's scaling hook on the same run (benchmarks/planner_vs_reference.py, dynamo 1.6.1):
REFERENCE = {"duration_ms": 59327.55496599967, "gpu_hours": 0.03346249693989974, "mean_ttft_ms": 59.719041868767356,
             "p99_ttft_ms": 144.62430538555782, "mean_itl_ms": 14.582340540905484,
             "mean_e2e_latency_ms": 1911.676290563758, "decode_worker_seconds": 120.46498898363907}


def _replay(tmp_path: Path, planner: dict[str, Any], *flags: str) -> dict[str, Any]:
    out = tmp_path / "r.json"
    rc = replay_main(["--input-tokens", "1024", "--output-tokens", "128", "--request-count", "1200",
                      "--request-rate", "20", "--extra-engine-args", '{"startup_time": 3}',
                      "--planner-config", json.dumps(planner), "--report-json", str(out), "--no-progress", *flags])
    assert rc == 0
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def test_scripted_scaling_matches_the_reference_hook(tmp_path: Path) -> None:
    report = _replay(tmp_path, SCRIPTED)
    s = report["summary"]
    for key, ref in REFERENCE.items():
        assert s[key] == pytest.approx(ref, rel=1e-3), key
    p = report["planner"]
    added = [o for d in p["decisions"] for o in d["outcomes"] if o["kind"] == "add_worker"]
    assert [(o["at_ms"], o["outcome"], o["ready_ms"]) for o in added] == [(10000.0, "placed", 13000.0)] * 2
    removed = [o for d in p["decisions"] for o in d["outcomes"] if o["kind"] == "remove_worker"]
    assert [o["at_ms"] for o in removed] == [40000.0, 40000.0] and all(o["stopped_ms"] > 40000 for o in removed)
    replicas = p["replicas"]["agg"]
    assert replicas[0] == [0.0, 1.0, 0.0, 0.0] and [10000.0, 1.0, 2.0, 0.0] in replicas
    assert [13000.0, 3.0, 0.0, 0.0] in replicas and replicas[-1][1:] == [1.0, 0.0, 0.0]
    assert p["gpu_hours"]["agg"] == pytest.approx(s["gpu_hours"])


def test_advisory_planner_records_and_does_not_act(tmp_path: Path) -> None:
    report = _replay(tmp_path, {**SCRIPTED, "advisory": True})
    p = report["planner"]
    assert [a["outcome"] for d in p["decisions"] for a in d["applied"]] == ["advisory"]  # at 40 s the target 1 is the current count
    assert all(not d["outcomes"] for d in p["decisions"])
    assert report["summary"]["decode_worker_seconds"] == pytest.approx(report["summary"]["duration_ms"] / 1000)


def test_planner_config_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert replay_main(["--planner-config", '{"type": "scripted"}', "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "steps" in err[0]
    assert replay_main(["--planner-config", "nope.json", "--no-progress"]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_python_class_planner_sees_the_reference_snapshot(tmp_path: Path) -> None:
    report = _replay(tmp_path, {"type": "python", "class": "tests.planner_plugins:StepTo",
                                "args": {"at_ms": 20000, "workers": 2, "tick_ms": 5000}})
    seen = StepTo.seen
    assert seen[0]["now_ms"] == 5000.0 and seen[0]["active_decode_count"] == 1
    assert seen[0]["traffic"]["num_req"] > 0 and seen[0]["traffic"]["avg_isl"] == 1024.0
    assert seen[0]["decode_fpm_snapshots"], "load metrics reach a user planner over the event plane"
    fpm = seen[0]["decode_fpm_snapshots"][0]
    # the rank's latest forward pass, in the reference's FPM snapshot keys (wall_time in seconds)
    assert fpm["wall_time"] > 0 and fpm["num_decode_requests"] + fpm["num_prefill_requests"] > 0
    if fpm["num_decode_requests"]:
        assert fpm["sum_decode_kv_tokens"] >= fpm["num_decode_requests"] * 1024
    assert seen[0]["prefill_fpm_snapshots"] == []
    later = [s for s in seen if s["now_ms"] == 25000.0][0]
    assert later["active_decode_count"] == 2 and later["non_draining_decode_count"] == 2
    d = report["summary"]["duration_ms"]
    assert report["summary"]["gpu_hours"] == pytest.approx((d + d - 20000.0) / 3.6e6)


def test_capacity_exhausted_is_recorded(tmp_path: Path) -> None:
    sc = scenario(planner={"type": "scripted", "tick_s": 0.2, "steps": [{"at_s": 0.2, "workers": 20}]})
    sc["cluster"]["nodes"][0]["count"] = 1  # 8 cards x 2 MIG slices = 16 vGPUs
    sc["deployments"][0]["replicas"] = 2
    report = run_report(tmp_path, sc)
    p = report["planner"]
    outcomes = [o["outcome"] for d in p["decisions"] for o in d["outcomes"]]
    assert outcomes.count("placed") == 14 and outcomes.count("capacity_exhausted") == 4
    assert p["capacity_exhausted"] == 4


def _bursty_trace(path: Path) -> Path:
    """30 rps for 40 s, silence until 100 s, then a few requests: the planner must scale down."""
    lines = []
    for k in range(1200):
        lines.append({"timestamp": int(k * 1000 / 30), "input_length": 1024, "output_length": 128,
                      "hash_ids": [k * 4 + j for j in range(2)]})
    for k in range(5):
        lines.append({"timestamp": 100000 + k * 500, "input_length": 1024, "output_length": 128,
                      "hash_ids": [10_000 + k]})
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_sla_planner_scales_up_under_load_and_down_to_min_endpoint_when_traffic_stops(tmp_path: Path) -> None:
    trace = _bursty_trace(tmp_path / "t.jsonl")
    out = tmp_path / "r.json"
    cfg = {"mode": "agg", "throughput_adjustment_interval_seconds": 10, "load_predictor": "constant",
           "ttft_ms": 200, "itl_ms": 20, "min_endpoint": 1, "max_gpu_budget": 8}
    rc = replay_main([str(trace), "--trace-block-size", "512", "--extra-engine-args", '{"startup_time": 2}',
                      "--planner-config", json.dumps(cfg), "--report-json", str(out), "--no-progress"])
    assert rc == 0
    report = json.loads(out.read_text())
    p = report["planner"]
    targets = [(d["at_ms"], d["targets"]["decode"]) for d in p["decisions"]]
    peak = max(t for _, t in targets if t is not None)
    assert peak == 2 and targets[0] == (10000.0, 2), targets  # 30 rps over ~18 rps per engine
    assert [t for at, t in targets if 50000 <= at <= 100000] and all(
        t == 1 for at, t in targets if 60000 <= at <= 100000), targets
    assert p["sla"]["ttft_ms"] == 200 and 0.0 <= p["sla"]["attainment"] <= 1.0
    assert p["decisions"][0]["predicted"]["engine_rps"] > 0


@pytest.mark.slow
def test_planner_scenario_is_byte_identical_on_local_and_ray(ray_head: dict[str, str], tmp_path: Path) -> None:
    from tests.scenario_helpers import run_cli, write

    wl = scenario()["workload"]
    wl["synthetic"].update(request_count=400, request_rate=60)
    sc = scenario(workload=wl, planner={
        "mode": "agg", "throughput_adjustment_interval_seconds": 2, "load_adjustment_interval_seconds": 1,
        "enable_load_scaling": True, "load_predictor": "kalman", "ttft_ms": 300, "itl_ms": 30, "max_gpu_budget": 12})
    sc["deployments"][0]["replicas"] = 2
    sc["deployments"][0]["engine"]["startup_time"] = 0.5
    path = write(tmp_path, sc)
    local = run_cli(path, tmp_path / "local", None)
    report = json.loads(local[0])
    assert any(d["applied"] for d in report["planner"]["decisions"]), "the planner changed the fleet"
    assert report["event_plane"]["links"]["metrics"]["delivered"] > 0
    assert run_cli(path, tmp_path / "ray2", ray_head, "--runtime", "ray", "--shards", "2") == local


def test_sla_planner_with_a_profile_uses_the_classic_formulas(tmp_path: Path) -> None:
    from cluster.cli import main

    prof = tmp_path / "prof"
    assert main(["profile", "--output-dir", str(prof), "--no-progress", "--isl", "256,1024,4096",
                 "--context", "256,1024,2048", "--concurrency", "1,8,32,128"]) == 0
    trace = _bursty_trace(tmp_path / "t.jsonl")
    out = tmp_path / "r.json"
    cfg = {"mode": "agg", "throughput_adjustment_interval_seconds": 10, "load_predictor": "constant",
           "ttft_ms": 200, "itl_ms": 20, "profile_results_dir": str(prof)}
    assert replay_main([str(trace), "--trace-block-size", "512", "--planner-config", json.dumps(cfg),
                        "--report-json", str(out), "--no-progress"]) == 0
    decisions = json.loads(out.read_text())["planner"]["decisions"]
    first = decisions[1]["predicted"]
    assert {"p_corr", "d_corr", "prefill_replicas", "decode_replicas"} <= set(first)
    assert max(d["targets"]["decode"] or 0 for d in decisions) >= 2
    assert decisions[-1]["targets"]["decode"] == 1
    bad = {**cfg, "profile_results_dir": str(tmp_path / "none")}
    assert replay_main([str(trace), "--planner-config", json.dumps(bad), "--no-progress"]) == 2


def test_prefill_targets_wait_for_a_prefill_pool(tmp_path: Path) -> None:
    """Disaggregated targets travel through config and decisions; without a prefill deployment
    the decision says so and the decode target still applies."""
    report = _replay(tmp_path, {"type": "scripted", "tick_s": 5, "steps": [{"at_s": 5, "prefill": 2, "decode": 2}]})
    d = report["planner"]["decisions"][0]
    assert d["targets"] == {"decode": 2, "prefill": 2}
    assert {"pool": "prefill", "outcome": "no_prefill_pool"} in d["applied"]
    assert [o["outcome"] for o in d["outcomes"]] == ["placed"]


def test_scripted_prefill_and_decode_targets_scale_their_pools(tmp_path: Path) -> None:
    """A disaggregated replay: `prefill`/`decode` targets go to the deployments of those roles."""
    out = tmp_path / "r.json"
    engine = '{"startup_time": 1}'
    planner = {"type": "scripted", "tick_s": 5, "steps": [{"at_s": 5, "prefill": 2, "decode": 3}]}
    rc = replay_main(["--input-tokens", "1024", "--output-tokens", "64", "--request-count", "400",
                      "--request-rate", "20", "--prefill-engine-args", engine, "--decode-engine-args", engine,
                      "--planner-config", json.dumps(planner), "--report-json", str(out), "--no-progress"])
    assert rc == 0
    report = json.loads(out.read_text())
    applied = report["planner"]["decisions"][0]["applied"]
    assert sorted((a["pool"], a["deployment"], a["change"]) for a in applied) == [
        ("decode", "decode", 2), ("prefill", "prefill", 1)]
    replicas = report["planner"]["replicas"]
    assert replicas["prefill"][-1][:2] == [6000.0, 2.0] and replicas["decode"][-1][:2] == [6000.0, 3.0]


@pytest.mark.parametrize("planner", [SCRIPTED, {"type": "python", "class": "tests.planner_plugins:StepTo",
                                                "args": {"at_ms": 1000, "workers": 2}},
                                     {"mode": "agg", "ttft_ms": 300, "load_predictor": "kalman"}])
def test_dump_scenario_keeps_the_planner(tmp_path: Path, planner: dict[str, Any]) -> None:
    from cluster.scenario.load import load_scenario
    from planner.config import parse_planner_config

    dump = tmp_path / "sc.yaml"
    assert replay_main(["--request-count", "10", "--input-tokens", "64", "--output-tokens", "4", "--request-rate",
                        "10", "--planner-config", json.dumps(planner), "--dump-scenario", str(dump),
                        "--no-progress"]) == 0
    assert load_scenario(dump).scenario.planner == parse_planner_config(planner)
