"""vLLM pass semantics beyond the fact-sheet vectors: preemption, admission limits, rejection."""

from __future__ import annotations

import pytest

from actors.engine.records import FailureReason, TerminalStatus
from tests.engine_helpers import replay, unique_ids
from tests.test_engine_vectors import P


def _pressure(mode: str) -> list:  # type: ignore[type-arg]
    # Two requests of 64 prompt tokens growing by 60 tokens each need 2 x 8 blocks of 16; the pool has 10.
    return [replay([(0.0, 64, 60, [1, 2]), (0.0, 64, 60, [3, 4])],
                   trace_block_size=32,
                   engine={"block_size": 16, "num_gpu_blocks": 10, "preemption_mode": mode},
                   collect_kv_events=True)]


@pytest.mark.parametrize("mode, victim", [("lifo", 1), ("fifo", 0)])
def test_preemption_picks_the_policy_victim_and_everyone_finishes(mode: str, victim: int) -> None:
    (res,) = _pressure(mode)
    recs = res.records
    assert all(r.terminal_status is TerminalStatus.COMPLETED and r.output_length == 60 for r in recs)
    assert recs[victim].num_preemptions >= 1
    assert recs[1 - victim].num_preemptions == 0
    v = recs[victim]
    assert v.admission_count == 1 + v.num_preemptions
    # TTFT is not changed by a later preemption: both got their first token in the first pass.
    assert recs[0].first_token_ms == recs[1].first_token_ms == pytest.approx(P(128) / 1.0, rel=1e-12)
    # re-admission finds at least the victim's own prompt blocks still cached
    assert v.engine.reused_tokens_total > v.reused_input_tokens


def test_max_num_seqs_blocks_the_waiting_head() -> None:
    res = replay([(0.0, 64, 5, unique_ids(1, 1)), (0.0, 64, 5, unique_ids(10, 1))], engine={"max_num_seqs": 1})
    a, b = res.records
    assert b.first_admit_ms == a.terminal_ms
    assert b.first_token_ms == pytest.approx(a.terminal_ms + P(64), abs=1e-9)


def test_prompt_larger_than_the_pool_is_rejected_not_hung() -> None:
    res = replay([(0.0, 2000, 5, unique_ids(1, 32)), (1.0, 64, 2, unique_ids(100, 1))],
                 engine={"num_gpu_blocks": 16})
    big, small = res.records
    assert big.terminal_status is TerminalStatus.REJECTED and big.reason is FailureReason.REJECTED_PROMPT_TOO_LONG
    assert "KV blocks" in (big.reason_detail or "")
    assert small.terminal_status is TerminalStatus.COMPLETED


def test_prompt_over_budget_without_chunking_is_rejected() -> None:
    res = replay([(0.0, 9000, 2, unique_ids(1, 141))], engine={"enable_chunked_prefill": False})
    assert res.records[0].terminal_status is TerminalStatus.REJECTED
    assert res.records[0].reason is FailureReason.REJECTED_TOKEN_BUDGET


def test_sequence_outgrowing_the_pool_is_rejected_when_it_can_never_fit() -> None:
    # 60 prompt tokens fit 4 blocks of 16; growing to 60+40 needs 7 > 5 blocks: preempted, then refused.
    res = replay([(0.0, 60, 40, [1, 2])], trace_block_size=32, engine={"block_size": 16, "num_gpu_blocks": 5})
    rec = res.records[0]
    assert rec.terminal_status is TerminalStatus.REJECTED and rec.reason is FailureReason.REJECTED_KV_CAPACITY
    assert rec.output_length > 0 and rec.num_preemptions == 1


def test_dp_ranks_have_their_own_pools() -> None:
    ids = unique_ids(1, 16)
    res = replay([(0.0, 1024, 2, ids), (100.0, 1024, 2, ids)], engine={"dp_size": 2})
    a, b = res.records
    assert (a.dp_rank, b.dp_rank) == (0, 1)
    assert b.reused_input_tokens == 0  # rank 1 never saw the prefix


def test_prefix_caching_off_reuses_nothing_and_emits_no_events() -> None:
    ids = unique_ids(1, 16)
    res = replay([(0.0, 1024, 2, ids), (100.0, 1024, 2, ids)], engine={"enable_prefix_caching": False},
                 collect_kv_events=True)
    assert [r.reused_input_tokens for r in res.records] == [0, 0]
    assert res.kv_events == []


def test_kv_events_are_stamped_at_pass_end_with_monotonic_ids() -> None:
    res = replay([(0.0, 1024, 70, unique_ids(1, 16))], collect_kv_events=True)
    events = res.kv_events
    assert [e.event_id for e in events] == list(range(len(events)))
    first = events[0]
    assert first.t_ms == pytest.approx(P(1024)) and first.data.parent_hash is None  # type: ignore[union-attr]
    assert len(first.data.block_hashes) == 16  # type: ignore[union-attr]
    # decode fills block 17 (tokens 1024..1087) when token 1088 is computed: 64 passes later
    assert len(events) == 2 and events[1].data.parent_hash == first.data.block_hashes[-1]  # type: ignore[union-attr]



@pytest.mark.parametrize("macro", [True, False])
def test_load_metrics_carry_the_last_forward_pass(macro: bool) -> None:
    """A pass's figures as the reference's forward-pass metrics count them: computed prefill
    tokens, decode requests and their context; a macro-stepped decode run reports its last pass,
    so it agrees with pass by pass."""
    from actors.engine.config import EngineConfig
    from actors.engine.hashing import PromptHashers
    from actors.engine.records import GapLog
    from actors.engine.request import RankRequest
    from actors.engine.scheduler.core import RankCore
    from actors.engine.timing.models import FixedTiming

    rank = RankCore(EngineConfig(block_size=16, num_gpu_blocks=64), FixedTiming(prefill_ms=3.0, decode_ms=2.0),
                    GapLog(), PromptHashers(), macro_step=macro)
    assert rank.load_metrics(0.0).last_pass is None
    rank.submit(RankRequest(1, 100, 6, tuple(range(7)), 16), 0.0)
    rank.begin(0.0)
    rank.advance(float(rank.next_due_ms()))  # type: ignore[arg-type]
    first = rank.load_metrics(3.0).last_pass
    assert first is not None and (first.wall_ms, first.prefill_requests, first.prefill_tokens) == (3.0, 1, 100)
    assert first.decode_requests == 0
    now = 3.0
    while not rank.is_idle:
        if not rank.busy:
            rank.begin(now)
        now = float(rank.next_due_ms())  # type: ignore[arg-type]
        rank.advance(now)
    last = rank.load_metrics(now).last_pass
    # the 6th token's pass decoded one request of context 100 + 5
    assert last is not None and (last.wall_ms, last.decode_requests, last.decode_kv_tokens) == (2.0, 1, 105)
    assert last.prefill_requests == last.prefill_tokens == 0
