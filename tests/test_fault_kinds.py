"""Fault kinds beyond kills and partitions: drain_worker (graceful, with a deadline), restart_worker
(killed, then a fresh worker after startup_time), slow_gpu (stragglers for a window); one registry."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest

from actors.engine.records import FailureReason, TerminalStatus
from cluster.scenario.load import load_scenario
from cluster.scenario.faults import FAULT_TAGS, Fault
from cluster.scenario.spec import ScenarioError
from cluster.scenario.world import FAULT_KINDS
from tests.scenario_helpers import run_report, scenario, write


def _busy(*faults: dict[str, Any], limit: int = 0) -> dict[str, Any]:
    """Long outputs, so workers hold requests when a fault comes."""
    sc = scenario(faults=list(faults))
    sc["workload"]["synthetic"].update(output_tokens=200, output_stddev=0)
    sc["deployments"][0]["migration_limit"] = limit
    sc["deployments"][0]["engine"]["startup_time"] = 0.1
    return sc


def test_every_fault_kind_is_registered() -> None:
    union, _discriminator = typing.get_args(Fault)  # Annotated[Union[...], keyed_union(...)]
    kinds = {cls.kind for cls in typing.get_args(union)}
    assert kinds == set(FAULT_KINDS) == set(FAULT_TAGS)


def test_a_drain_finishes_what_it_has_and_its_deadline_fails_the_rest(tmp_path: Path) -> None:
    graceful = run_report(tmp_path, _busy({"at_s": 0.3, "drain_worker": {"worker": "agg-1"}}))
    assert all(r.terminal_status is TerminalStatus.COMPLETED for r in graceful["_records"])
    life = {w["name"]: w for w in graceful["workers"]}["agg-1"]
    assert life["state"] == "stopped" and life["stopped_ms"] > 300.0
    assert not [r for r in graceful["_records"] if r.worker_id == 1 and r.dispatched_ms > 300.0]

    hard = run_report(tmp_path, _busy({"at_s": 0.3, "drain_worker": {"worker": "agg-1", "deadline_s": 0.005}}))
    cut = [r for r in hard["_records"] if r.reason is FailureReason.DRAIN_DEADLINE]
    assert cut and all(r.cause == "faults.0" and r.terminal_ms >= 305.0 for r in cut)
    assert hard["faults"][0]["requests_failed"] == len(cut)
    assert {w["name"]: w for w in hard["workers"]}["agg-1"]["stopped_ms"] == pytest.approx(305.5)

    moved = run_report(tmp_path, _busy({"at_s": 0.3, "drain_worker": {"worker": "agg-1", "deadline_s": 0.005}},
                                       limit=1))
    assert all(r.terminal_status is TerminalStatus.COMPLETED for r in moved["_records"])
    assert {r.request_id for r in moved["_records"] if r.migrated_from == [1]} == {r.request_id for r in cut}


def test_a_restarted_worker_comes_back_after_its_startup_time(tmp_path: Path) -> None:
    report = run_report(tmp_path, _busy({"at_s": 0.3, "restart_worker": "agg-2"}))
    workers = {w["name"]: w for w in report["workers"]}
    assert workers["agg-2"]["state"] == "failed"
    fresh = workers["agg-8"]
    assert fresh["state"] == "ready" and fresh["ready_ms"] == pytest.approx(300.5 + 100.0 + 0.5)
    assert fresh["completed_requests"] > 0
    assert report["faults"][0]["workers"] == ["agg-2"]
    assert report["run"]["unaccounted"] == 0


def test_a_straggler_window_slows_only_its_ranks_and_only_meanwhile(tmp_path: Path) -> None:
    window = {"node": "n-3", "duration_s": 0.4}
    base = run_report(tmp_path, _busy())
    same = run_report(tmp_path, _busy({"at_s": 0.2, "slow_gpu": {**window, "factor": 1.0}}))
    slow = run_report(tmp_path, _busy({"at_s": 0.2, "slow_gpu": {**window, "factor": 5.0}}))
    assert [r.terminal_ms for r in same["_records"]] == [r.terminal_ms for r in base["_records"]]
    assert slow["faults"][0]["workers"] == ["agg-3", "agg-7"]

    def e2e(report: dict[str, Any], workers: set[int]) -> float:
        rs = [r for r in report["_records"] if r.worker_id in workers and 200.0 <= r.dispatched_ms < 600.0]
        assert rs
        return sum(r.terminal_ms - r.dispatched_ms for r in rs) / len(rs)

    assert e2e(slow, {3, 7}) > 1.2 * e2e(base, {3, 7})  # the window covers part of their lives
    before = [r.terminal_ms for r in base["_records"] if r.terminal_ms < 200.0]
    assert before == [r.terminal_ms for r in slow["_records"] if r.terminal_ms < 200.0]


def test_a_restarted_router_rebuilds_its_index_from_the_workers(tmp_path: Path) -> None:
    base = run_report(tmp_path, _busy())
    report = run_report(tmp_path, _busy({"at_s": 0.5, "restart_router": True}))
    sync = report["event_plane"]["kv_sync"]
    assert sync["replay_requests"] >= 8 and sync["batches_replayed"] > 0  # every serving rank replays
    assert report["event_plane"]["index"]["ranks_diverged"] == 0
    assert {"at_ms": 500.0, "kind": "router_restarted", "cause": "faults.0"} in report["fleet_events"]
    # after the rebuild the router sees the same caches, so it routes as it would have
    assert [r.worker_id for r in report["_records"]] == [r.worker_id for r in base["_records"]]


def test_a_degraded_link_is_slower_and_loses_kv_events_the_router_recovers(tmp_path: Path) -> None:
    base = run_report(tmp_path, _busy())
    slow = run_report(tmp_path, _busy({"at_s": 0.0, "degrade_link": {"topic": "responses", "latency_ms": 20,
                                                                       "duration_s": 10}}))
    # every first token crosses the slowed response stream: 20 ms more than the fastest one before
    fastest = min(r.ttft_ms for r in base["_records"])
    assert min(r.ttft_ms for r in slow["_records"]) >= fastest + 20.0 - 1e-9  # float sums of times
    lossy = run_report(tmp_path, _busy({"at_s": 0.2, "degrade_link": {"nodes": ["n-1"], "topic": "kv_events",
                                                                        "loss": 0.5, "duration_s": 0.5}}))
    plane = lossy["event_plane"]
    assert plane["links"]["kv_events"]["lost"] > 0 and plane["kv_sync"]["replay_requests"] > 0
    assert plane["index"]["ranks_diverged"] == 0
    assert all(r.terminal_status is TerminalStatus.COMPLETED for r in lossy["_records"])


@pytest.mark.parametrize("fail", [False, True])
def test_a_node_switching_mode_drains_switches_and_its_workers_are_placed_again(tmp_path: Path, fail: bool) -> None:
    mig = {"mode": "mig", "profiles": ["3g.40gb", "2g.20gb", "1g.10gb"]}
    sc = _busy({"at_s": 0.3, "switch_mode": {"node": "n-0", "virtualization": mig, "switch_s": 0.2, "fail": fail}})
    sc["cluster"]["nodes"][0]["count"] = 3
    sc["deployments"][0]["replicas"] = 4  # agg-0 and agg-3 on n-0
    before = {n["name"]: n for n in run_report(tmp_path, _busy())["nodes"]}
    report = run_report(tmp_path, sc)
    events = report["fleet_events"]
    drained = next(e for e in events if e["kind"] == "switch_mode")
    assert drained["workers"] == ["agg-0", "agg-3"] and drained["outcome"] == "draining"
    stopped = max(e["stopped_ms"] for e in events if e["kind"] == "worker_stopped")
    done = next(e for e in events if e["kind"] == "switch_done")
    assert done["at_ms"] == pytest.approx(stopped + 0.5 + 200.0)  # switching for switch_s once drained
    assert done["status"] == ("switch-failed" if fail else "ready")
    added = [e for e in events if e["kind"] == "add_worker"]
    assert [e["outcome"] for e in added] == ["placed", "placed"] and all(e["at_ms"] == done["at_ms"] for e in added)
    node = {n["name"]: n for n in report["nodes"]}["n-0"]
    assert node["status"] == done["status"]
    if fail:
        assert node["vgpus"] == 0
    else:
        assert node["vgpus"] != before["n-0"]["vgpus"]  # the new layout's vGPUs
    assert all(r.terminal_status is TerminalStatus.COMPLETED for r in report["_records"])


@pytest.mark.parametrize(("fault", "message"), [
    ({"at_s": 1, "drain_worker": {"worker": "nope"}}, "faults.0.drain_worker.worker: no worker named 'nope'"),
    ({"at_s": 1, "restart_worker": "nope"}, "faults.0.restart_worker: no worker named 'nope'"),
    ({"at_s": 1, "slow_gpu": {"node": "x", "factor": 2, "duration_s": 1}}, "faults.0.slow_gpu.node: no node named 'x'"),
    ({"at_s": 1, "degrade_link": {"topic": "requests", "loss": 0.5, "duration_s": 1}}, "faults.0"),  # 'requests' is reliable
])
def test_a_fault_naming_nothing_is_refused_before_the_run(tmp_path: Path, fault: dict[str, Any], message: str) -> None:
    with pytest.raises(ScenarioError, match=message.replace(".", r"\.")):
        load_scenario(write(tmp_path, scenario(faults=[fault])))


def test_a_straggler_window_slows_workers_placed_inside_it(tmp_path: Path) -> None:
    def added(*faults: dict[str, Any]) -> dict[str, Any]:
        sc = _busy(*faults)
        sc["events"] = [{"at_s": 0.25, "add_workers": {"deployment": "agg", "count": 1}}]
        return sc

    base = run_report(tmp_path, added())
    new = {w["name"]: w for w in base["workers"]}["agg-8"]
    slow = run_report(tmp_path, added({"at_s": 0.2, "slow_gpu": {"node": new["nodes"][0], "duration_s": 5.0,
                                                                   "factor": 5.0}}))
    assert "agg-8" in slow["faults"][0]["workers"]  # placed at 0.25 s on the slowed node, inside the window

    def itl(report: dict[str, Any]) -> float:
        """Mean inter-token time of agg-8's requests (all inside the window: pass times x factor)."""
        rs = [r for r in report["_records"] if r.worker_id == new["worker_id"] and r.terminal_ms < 5200.0]
        assert rs
        return sum((r.terminal_ms - r.first_token_ms) / (r.output_length - 1) for r in rs) / len(rs)

    assert itl(slow) > 3.0 * itl(base)
