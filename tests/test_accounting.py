"""Nothing unaccounted, ever: every request of the workload ends completed, rejected or failed with
a reason; the run ends when the last request ends; faults are counted once, and a fault due after
the run ended is reported as not applied (issue 14)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from actors.engine.records import FailureReason, TerminalStatus
from tests.scenario_helpers import run_report, scenario


def _kills(*faults: dict[str, Any]) -> dict[str, Any]:
    """8 workers on 4 nodes, 60 two-turn sessions (120 requests) over ~1.5 s; the given faults."""
    return scenario(faults=list(faults))


def _check_all_ended(report: dict[str, Any], expected: int) -> list[Any]:
    records = report["_records"]
    assert len(records) == expected, "every turn of every session is dispatched"
    for r in records:
        assert r.terminal_status is not TerminalStatus.INCOMPLETE, r
        assert r.terminal_ms is not None
        if r.terminal_status is not TerminalStatus.COMPLETED:
            assert r.reason is not None, r
    assert (report["run"]["end_ms"], report["run"]["unaccounted"]) == (max(r.terminal_ms for r in records), 0)
    return list(records)


def test_killing_every_node_fails_every_request_with_a_reason(tmp_path: Path) -> None:
    report = run_report(tmp_path, _kills(*({"at_s": 0.3, "kill_node": f"n-{k}"} for k in range(4))))
    records = _check_all_ended(report, 120)
    reasons = Counter(r.reason for r in records if r.terminal_status is TerminalStatus.FAILED)
    assert reasons[FailureReason.WORKER_KILLED] > 0
    assert reasons[FailureReason.NO_LIVE_WORKER] > 0  # later arrivals, and every second turn after them
    # a session whose first turn failed ends: its second turn is recorded, never sent, at that moment
    dropped = [r for r in records if r.reason is FailureReason.SESSION_ENDED]
    assert dropped and all(r.turn_index == 1 and r.worker_id == -1 and r.terminal_ms == r.arrival_ms for r in dropped)
    late = [r for r in records if r.arrival_ms > 300.0 and r.reason is not FailureReason.SESSION_ENDED]
    assert late and all(r.reason is FailureReason.NO_LIVE_WORKER and r.terminal_ms == r.dispatched_ms for r in late)
    # the run lasts as long as arrivals do, not until the last completion
    assert report["run"]["end_ms"] >= max(r.arrival_ms for r in records) > report["summary"]["duration_ms"]
    assert sum(f["requests_failed"] for f in report["faults"]) == reasons[FailureReason.WORKER_KILLED]
    killed_sessions = {r.session_id for r in records if r.reason is FailureReason.WORKER_KILLED and r.turn_index == 0}
    assert sum(f["turns_dropped"] for f in report["faults"]) == len(killed_sessions)


def test_requests_waiting_for_a_starting_worker_are_served_by_it(tmp_path: Path) -> None:
    sc = _kills(*({"at_s": 0.3, "kill_node": f"n-{k}"} for k in range(2)))
    sc["cluster"]["nodes"][0]["count"] = 3
    sc["deployments"][0]["replicas"] = 2  # on n-0 and n-1 (killed); spread places agg-2 on n-2
    sc["deployments"][0]["engine"]["startup_time"] = 0.2
    sc["events"] = [{"at_s": 0.25, "add_workers": {"deployment": "agg", "count": 1}}]
    report = run_report(tmp_path, sc)
    records = _check_all_ended(report, 120)
    # between 0.3 s (the kills) and 0.45 s (agg-2 ready) requests wait for agg-2; none fails for want of a worker
    assert not [r for r in records if r.reason is FailureReason.NO_LIVE_WORKER]
    waited = [r for r in records if 300.0 < r.arrival_ms < 450.0 and r.reason is not FailureReason.SESSION_ENDED]
    assert waited and all(r.worker_id == 2 and r.terminal_status is TerminalStatus.COMPLETED for r in waited)
    assert all(r.first_token_ms is not None and r.first_token_ms > 450.0 for r in waited)


def test_overlapping_kills_count_each_failed_request_once(tmp_path: Path) -> None:
    report = run_report(tmp_path, _kills({"at_s": 0.4, "kill_node": "n-0"}, {"at_s": 0.4, "kill_worker": "agg-0"},
                                         {"at_s": 0.6, "kill_node": "n-0"}))
    records = _check_all_ended(report, 120)
    killed = sum(1 for r in records if r.reason is FailureReason.WORKER_KILLED)
    assert killed > 0
    assert sum(f["requests_failed"] for f in report["faults"]) == killed
    hit = [w for f in report["faults"] for w in f["workers"]]
    assert sorted(hit) == sorted(set(hit)), "a worker dies once, for one fault"
    assert [f["applied"] for f in report["faults"]] == [True, True, True]


def test_a_fault_due_after_the_run_ended_is_not_applied(tmp_path: Path) -> None:
    report = run_report(tmp_path, _kills({"at_s": 500, "kill_worker": "agg-1"},
                                         {"at_s": 600, "partition": {"nodes": ["n-1"], "duration_s": 1}}))
    _check_all_ended(report, 120)
    assert [f["applied"] for f in report["faults"]] == [False, False]
    assert report["faults"][0]["workers"] == []
    assert {w["state"] for w in report["workers"]} == {"ready"}, "no worker died after the run"
