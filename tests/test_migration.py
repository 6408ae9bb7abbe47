"""Request migration (`deployments[].migration_limit`, `--migration-limit`): a request whose worker
died moves to a live worker with the tokens generated so far, at most `migration_limit` times."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from actors.engine.config import EngineConfig
from actors.engine.hashing import PromptHashers
from actors.engine.protocol import RankOutput
from actors.engine.records import FailureReason, GapLog, TerminalStatus
from actors.engine.request import RankRequest
from actors.engine.scheduler.core import RankCore
from actors.engine.timing.models import FixedTiming
from tests.scenario_helpers import run_cli, run_report, scenario, write


def _drive(rank: RankCore, request: RankRequest) -> tuple[list[RankOutput], float]:
    assert rank.submit(request, 0.0) is None
    outs = [rank.begin(0.0)]
    now = 0.0
    while not rank.is_idle:
        due = rank.next_due_ms()
        assert due is not None
        now = due
        outs.append(rank.advance(now))
        if not rank.busy:
            outs.append(rank.begin(now))
    return outs, now


@pytest.mark.parametrize("macro", [True, False])
def test_a_migrated_request_prefills_its_generated_tokens_and_generates_the_rest(macro: bool) -> None:
    config = EngineConfig(block_size=16, num_gpu_blocks=64, max_num_seqs=4, max_num_batched_tokens=512)
    gaps = GapLog()
    rank = RankCore(config, FixedTiming(prefill_ms=3.0, decode_ms=2.0), gaps, PromptHashers(), macro_step=macro)
    outs, end = _drive(rank, RankRequest(7, 100, 30, tuple(range(7)), 16, generated_tokens=12, last_token_ms=-5.0))
    assert not [t for o in outs for t in o.first_tokens], "the client saw its first token on the first worker"
    (done,) = [f for o in outs for f in o.finished]
    assert done.status is TerminalStatus.COMPLETED and done.record.output_length == 30
    assert done.record.admitted_tokens_total == 112  # prompt + the 12 tokens generated before
    assert done.record.first_token_ms is None
    values, weights = gaps.arrays()
    assert int(weights.sum()) == 18  # the 18 tokens generated here, the first one's gap from the last one before
    assert float((values * weights).sum()) == pytest.approx(end + 5.0)


def _kill(limit: int, *faults: dict[str, Any], **edits: Any) -> dict[str, Any]:
    sc = scenario(faults=list(faults), **edits)
    sc["deployments"][0]["migration_limit"] = limit
    return sc


def test_killing_a_node_with_migration_loses_no_request_a_live_worker_can_serve(tmp_path: Path) -> None:
    kill = {"at_s": 0.5, "kill_node": "n-0"}
    off = run_report(tmp_path, _kill(0, kill))
    on = run_report(tmp_path, _kill(3, kill))
    failed = [r for r in off["_records"] if r.terminal_status is TerminalStatus.FAILED]
    # without migration: the killed requests, and the later turns their failure ended
    assert failed and {r.reason for r in failed} == {FailureReason.WORKER_KILLED, FailureReason.SESSION_ENDED}
    lost = [r for r in failed if r.reason is FailureReason.WORKER_KILLED]
    records = on["_records"]
    assert all(r.terminal_status is TerminalStatus.COMPLETED for r in records)
    moved = [r for r in records if r.migrated_from]
    turn = lambda r: (r.session_id, r.turn_index)  # noqa: E731 (ids differ: dropped turns take ids)
    assert {turn(r) for r in moved} == {turn(r) for r in lost}, "the requests lost without it moved"
    assert on["run"]["migrations"] == on["run"]["requests_migrated"] == len(moved)
    dead = {w["worker_id"] for w in on["workers"] if w["state"] == "failed"}
    for r in moved:
        assert set(r.migrated_from) <= dead and r.worker_id not in dead
        assert r.output_length == r.requested_output_length
        assert r.first_token_ms is not None and r.first_token_ms <= r.last_token_ms
    # a request that had streamed tokens before the kill kept its first token time
    before = {r.request_id: r for r in off["_records"]}
    streamed = [r for r in moved if before[r.request_id].first_token_ms is not None]
    assert streamed and all(r.first_token_ms == before[r.request_id].first_token_ms for r in streamed)
    assert on["summary"]["total_output_tokens"] == sum(r.requested_output_length for r in records)


def test_past_the_limit_a_request_fails_with_migration_limit(tmp_path: Path) -> None:
    # agg-0..5 spread over n-0..2 under heavy load; n-0 dies, its requests move to n-1 and n-2; n-1 dies
    # just after: the requests that had already moved once fail with migration_limit, the others move.
    sc = _kill(1, {"at_s": 0.5, "kill_node": "n-0"}, {"at_s": 0.502, "kill_node": "n-1"})
    sc["cluster"]["nodes"][0]["count"] = 3
    sc["deployments"][0]["replicas"] = 6
    sc["workload"]["synthetic"]["request_rate"] = 200
    report = run_report(tmp_path, sc)
    records = report["_records"]
    assert all(r.terminal_status is not TerminalStatus.INCOMPLETE for r in records)
    over = [r for r in records if r.reason is FailureReason.MIGRATION_LIMIT]
    assert over, Counter(r.reason for r in records)
    for r in over:
        assert len(r.migrated_from) == 1 and r.cause == "faults.1"
        assert "migration_limit 1" in (r.reason_detail or "")
    assert not [r for r in records if r.reason is FailureReason.WORKER_KILLED], "the first loss always migrates"


def test_migration_with_every_worker_dead_ends_every_request(tmp_path: Path) -> None:
    report = run_report(tmp_path, _kill(3, *({"at_s": 0.4, "kill_node": f"n-{k}"} for k in range(4))))
    records = report["_records"]
    assert all(r.terminal_status is TerminalStatus.COMPLETED or r.reason is not None for r in records)
    assert report["run"]["unaccounted"] == 0
    assert Counter(r.reason for r in records)[FailureReason.NO_LIVE_WORKER] > 0


def test_replay_takes_a_migration_limit(tmp_path: Path) -> None:
    import argparse

    from cluster.commands.replay import ReplayError, add_arguments, scenario_from_flags

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--num-workers", "2", "--migration-limit", "2"])
    assert scenario_from_flags(args).deployments[0].migration_limit == 2
    with pytest.raises(ReplayError, match="--migration-limit"):
        scenario_from_flags(parser.parse_args(["--migration-limit", "-1"]))


@pytest.mark.slow
def test_migration_is_byte_identical_on_local_and_ray(ray_head: dict[str, str], tmp_path: Path) -> None:
    path = write(tmp_path, _kill(2, {"at_s": 0.5, "kill_node": "n-0"}, {"at_s": 0.7, "kill_worker": "agg-1"}))
    local = run_cli(path, tmp_path / "local", None)
    ray = run_cli(path, tmp_path / "ray", ray_head, "--runtime", "ray", "--shards", "2")
    assert local == ray
