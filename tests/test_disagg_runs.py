"""Disaggregated serving through the front doors: scenario files, replay flags, the Python API, Ray."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from actors.engine.records import FailureReason
from cluster.replay import run_synthetic_trace_replay
from tests.scenario_helpers import run_cli, run_report, scenario, write

P1024, D1024 = 32.490712, 5.792699

PREFILL = {"engine": {"worker_type": "prefill", "kv_transfer_bandwidth": 64.0, "kv_transfer_bytes_per_token": 131072}}


def _disagg_scenario(prefill: int = 2, decode: int = 2, **engine: Any) -> dict[str, Any]:
    base = scenario()["deployments"][0]
    eng = {**base["engine"], "kv_transfer_bandwidth": 64.0, "kv_bytes_per_token": 114688, **engine}
    deps = [{**base, "name": "pre", "role": "prefill", "replicas": prefill, "placement": "binpack", "engine": eng},
            {**base, "name": "dec", "role": "decode", "replicas": decode, "placement": "spread",
             "engine": {k: v for k, v in eng.items() if not k.startswith("kv_")}}]
    return scenario(deployments=deps)


def test_lone_request_through_the_python_api() -> None:
    """facts §g: TTFT = P(1024) + transfer + D(1024); every key the reference reports for it."""
    r = run_synthetic_trace_replay(1024, 4, 1, arrival_interval_ms=1000.0, prefill_engine_args=PREFILL,
                                   decode_engine_args={"engine": {"worker_type": "decode"}}, capture_per_request=True)
    s = r.summary
    assert s["mean_ttft_ms"] == pytest.approx(P1024 + 2.097152 + D1024, abs=1e-4)
    assert s["committed_prefill_tokens"] == 1024
    assert s["prefill_worker_seconds"] == pytest.approx(s["duration_ms"] / 1000.0)
    assert s["decode_worker_seconds"] == pytest.approx(s["duration_ms"] / 1000.0)
    assert s["gpu_hours"] == pytest.approx(2 * s["duration_ms"] / 3.6e6)
    assert r.per_request is not None
    row = r.per_request[0]
    assert row["prefill_admit_ms"] == 0.0 and row["source_held_ms"] == pytest.approx(P1024, abs=1e-6)
    assert row["destination_reserved_ms"] == row["source_held_ms"]
    assert row["destination_activated_ms"] == pytest.approx(P1024 + 2.097152, abs=1e-6)
    assert row["transfer_bytes"] == 1024 * 131072 and row["transfer_tokens"] == 1024
    assert row["admission_count"] == 2


def test_replay_flags_run_disaggregated_and_refuse_mixing(tmp_path: Path) -> None:
    from cluster.commands.replay import main

    out = tmp_path / "r.json"
    code = main(["--input-tokens", "1024", "--output-tokens", "4", "--request-count", "1", "--arrival-interval-ms",
                 "1000", "--prefill-engine-args", json.dumps(PREFILL), "--decode-engine-args", "{}",
                 "--num-prefill-workers", "1", "--num-decode-workers", "1", "--no-progress", "--report-json", str(out)])
    assert code == 0
    assert json.loads(out.read_text())["summary"]["mean_ttft_ms"] == pytest.approx(P1024 + 2.097152 + D1024, abs=1e-4)
    assert main(["--num-workers", "2", "--num-prefill-workers", "1", "--no-progress"]) == 2
    assert main(["--prefill-engine-args", '{"worker_type": "decode"}', "--no-progress"]) == 2


def test_scenario_roles_serve_every_request_on_both_pools(tmp_path: Path) -> None:
    report = run_report(tmp_path, _disagg_scenario())
    records = report["_records"]
    assert report["summary"]["completed_requests"] == len(records) == 120
    assert report["summary"]["prefill_worker_seconds"] > 0 and report["summary"]["decode_worker_seconds"] > 0
    prefill_ids = {r.handoff.prefill_worker_id for r in records}
    decode_ids = {r.worker_id for r in records}
    assert prefill_ids <= {0, 1} and decode_ids <= {2, 3} and len(decode_ids) == 2
    for r in records:
        ho = r.handoff
        assert ho.source_held_ms <= ho.destination_reserved_ms <= ho.transfer_done_ms <= r.engine.first_admit_ms
        assert ho.transfer_ms == pytest.approx(r.input_length * 114688 / 64e9 * 1000)
        assert r.first_token_ms > ho.transfer_done_ms


def test_a_scenario_must_have_both_pools(tmp_path: Path) -> None:
    from cluster.scenario.load import load_scenario
    from cluster.scenario.spec import ScenarioError

    sc = _disagg_scenario()
    sc["deployments"] = sc["deployments"][:1]
    with pytest.raises(ScenarioError, match="needs prefill and decode deployments"):
        load_scenario(write(tmp_path, sc))


@pytest.mark.slow
@pytest.mark.parametrize("topology", [False, True])
def test_local_and_ray_are_byte_identical_with_pools_in_different_shards(ray_head: dict[str, str],
                                                                         tmp_path: Path, topology: bool) -> None:
    """Prefill workers binpacked on node n-0, decode workers spread on n-1 and n-2: with 2 shards the
    prefill pool is in one, the decode pool in the other, so every handoff crosses shards (with
    `topology`, the transfers over the NIC are timed in the control shard)."""
    from cluster.runtime.ray import assign_shards
    from tests.scenario_helpers import world_of

    sc = _disagg_scenario()
    world = world_of(tmp_path, sc)
    shards = assign_shards(world.node_of_rank, 2)
    pools = [{world.workers[next(i for i, w in enumerate(world.workers) if g in w.gidxs)].deployment for g in group}
             for group in shards]
    assert sorted(map(sorted, pools)) == [["dec"], ["pre"]], (world.node_of_rank, shards)
    if topology:
        sc["topology"] = True
    path = write(tmp_path, sc)
    local = run_cli(path, tmp_path / "local", None)
    assert run_cli(path, tmp_path / "ray", ray_head, "--runtime", "ray", "--shards", "2") == local


def test_macro_stepping_equals_pass_by_pass(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    fast = run_report(tmp_path / "a", _disagg_scenario(prefill=1, decode=3))
    slow = run_report(tmp_path / "b", _disagg_scenario(prefill=1, decode=3), macro_step=False)
    for a, b in zip(fast["_records"], slow["_records"]):
        assert a.first_token_ms == pytest.approx(b.first_token_ms, abs=1e-9)
        assert a.last_token_ms == pytest.approx(b.last_token_ms, abs=1e-9)
        assert a.handoff.destination_reserved_ms == pytest.approx(b.handoff.destination_reserved_ms, abs=1e-9)


def test_router_queueing_holds_requests_for_the_prefill_pool(tmp_path: Path) -> None:
    sc = _disagg_scenario(prefill=1, decode=2)
    sc["router"] = {"mode": "kv", "router_queue_threshold": 0.0}
    report = run_report(tmp_path, sc)
    records = report["_records"]
    assert report["summary"]["completed_requests"] == len(records)
    pools = [[h["pool"] for h in r.routing_history] for r in records]
    assert all(p == ["prefill", "decode"] for p in pools)
    assert any(r.routing_history[0]["outcome"] == "queued" for r in records)


def test_kv_bytes_per_token_comes_from_the_model_when_not_given(tmp_path: Path) -> None:
    """qwen3-0.6b: 28 layers x 2 x 8 KV heads x 128 x 2 bytes = 114,688 B/token (tests/test_devicemap.py)."""
    sc = _disagg_scenario(prefill=1, decode=1)
    del sc["deployments"][0]["engine"]["kv_bytes_per_token"]
    records = run_report(tmp_path, sc)["_records"]
    assert all(r.handoff.transfer_bytes == r.input_length * 114688 for r in records)


@pytest.mark.parametrize("victim", ["pre-0", "dec-0"])
def test_a_killed_worker_of_either_pool_leaves_no_request_unended(tmp_path: Path, victim: str) -> None:
    sc = _disagg_scenario()
    sc["faults"] = [{"at_s": 0.4, "kill_worker": victim}]
    report = run_report(tmp_path, sc)
    records = report["_records"]  # every turn has a record: a failed turn's later ones end `session_ended`
    assert len(records) == 120
    assert all(r.terminal_status.value in ("completed", "failed") for r in records)
    failed = [r for r in records if r.terminal_status.value == "failed"]
    assert all(r.reason is not None for r in failed)
    dropped = [r for r in failed if r.reason is FailureReason.SESSION_ENDED]
    assert len(dropped) == sum(1 for r in failed if r.turn_index == 0) > 0  # two-turn sessions
    assert report["summary"]["completed_requests"] == len(records) - len(failed) > 0
