"""Workload loading (Mooncake JSONL) and synthesis (facts §h)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from cluster.workload.model import Session, Turn, Workload, WorkloadError
from cluster.workload.mooncake import load_mooncake
from cluster.workload.synthetic import SyntheticSpec, prefix_hash_id, synthesize
from tests.golden.cases import TRACE

REAL_TRACE = TRACE
"""The repository's sibling `shared/` (CI always has it)."""


def _write(tmp_path: Path, rows: list[object] | str) -> Path:
    path = tmp_path / "trace.jsonl"
    text = rows if isinstance(rows, str) else "".join(json.dumps(r) + "\n" for r in rows)
    path.write_text(text)
    return path


def _row(**kw: object) -> dict[str, object]:
    row: dict[str, object] = {"timestamp": 0, "input_length": 10, "output_length": 2, "hash_ids": [1]}
    row.update(kw)
    return row


# ---------------------------------------------------------------- Mooncake loader


def test_two_sessions_with_explicit_and_inferred_delays(tmp_path: Path) -> None:
    """Session b starts first (timestamps 1000 vs 1500); a's turn 2 infers its delay."""
    path = _write(
        tmp_path,
        [
            {"session_id": "a", "timestamp": 1500, "input_length": 700, "output_length": 5, "hash_ids": [7, 8]},
            {"session_id": "b", "timestamp": 1000, "input_length": 100, "output_length": 3, "hash_ids": [9]},
            {"session_id": "a", "timestamp": 1800, "input_length": 900, "output_length": 4, "hash_ids": [7, 8, 10]},
            {"session_id": "b", "timestamp": 9999, "delay": 250, "input_length": 30, "output_length": 1, "hash_ids": [9]},
            {"session_id": "b", "delay_ms": 40.5, "input_length": 30, "output_length": 1, "hash_ids": [9]},
        ],
    )
    w = load_mooncake(path, trace_block_size=512, arrival_speedup_ratio=2.0)
    assert [s.session_id for s in w.sessions] == ["b", "a"]
    b, a = w.sessions
    assert b.start_ms == 0.0 and a.start_ms == 250.0  # (1500 - 1000) / 2
    assert [t.delay_ms for t in b.turns] == [0.0, 125.0, 20.25]  # explicit delays / 2
    assert [t.delay_ms for t in a.turns] == [0.0, 150.0]  # (1800 - 1500) / 2
    assert a.turns[0] == Turn(input_length=700, output_length=5, hash_ids=(7, 8), delay_ms=0.0)
    assert w.num_requests == 5 and w.num_sessions == 2
    assert w.total_input_tokens == 700 + 100 + 900 + 30 + 30
    assert w.total_output_tokens == 5 + 3 + 4 + 1 + 1


def test_rows_without_session_are_own_sessions_and_ties_keep_file_order(tmp_path: Path) -> None:
    path = _write(tmp_path, [_row(timestamp=5), _row(timestamp=3), _row(timestamp=5)])
    w = load_mooncake(path)
    assert [(s.session_id, s.start_ms) for s in w.sessions] == [
        ("request_1", 0.0),
        ("request_0", 2.0),
        ("request_2", 2.0),
    ]


def test_input_length_clamped_to_hash_blocks(tmp_path: Path) -> None:
    path = _write(tmp_path, [_row(input_length=2000, hash_ids=[1, 2])])
    assert load_mooncake(path, trace_block_size=512).sessions[0].turns[0].input_length == 1024
    assert load_mooncake(path, trace_block_size=1024).sessions[0].turns[0].input_length == 2000


def test_inferred_delay_is_floored_at_zero(tmp_path: Path) -> None:
    path = _write(tmp_path, [_row(session_id="s", timestamp=100), _row(session_id="s", timestamp=40)])
    assert load_mooncake(path).sessions[0].turns[1].delay_ms == 0.0


def test_inferred_delay_is_against_the_sessions_last_timestamp(tmp_path: Path) -> None:
    """As the reference: a turn with only a delay keeps the last timestamp; a turn with neither has no delay."""
    row = {"input_length": 10, "output_length": 2, "hash_ids": [1], "session_id": "s"}
    path = _write(tmp_path, [{**row, "timestamp": 100}, {**row, "delay": 7}, {**row, "timestamp": 250}, row])
    assert [t.delay_ms for t in load_mooncake(path).sessions[0].turns] == [0.0, 7.0, 150.0, 0.0]


def test_file_order_is_kept_beside_start_order(tmp_path: Path) -> None:
    """Sessions are sorted by start; `trace_order` keeps the file's order (closed-loop slots take that)."""
    path = _write(tmp_path, [_row(session_id="A", timestamp=1000), _row(session_id="B", timestamp=0),
                             _row(session_id="C", timestamp=500), _row(session_id="B", delay=10)])
    w = load_mooncake(path)
    assert [s.session_id for s in w.sessions] == ["B", "C", "A"]
    assert w.trace_order == w.session_order == (2, 0, 1)
    assert w.scaled(2.0).trace_order == (2, 0, 1)
    assert w.first(2).trace_order == (0, 1) and [s.session_id for s in w.first(2).sessions] == ["B", "C"]
    in_order = load_mooncake(_write(tmp_path, [_row(timestamp=1), _row(timestamp=2)]))
    assert in_order.trace_order is None and in_order.session_order == (0, 1)
    with pytest.raises(ValueError, match="permutation"):
        Workload(w.sessions, w.trace_block_size, (0, 0, 1))


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    good = json.dumps(_row())
    path = _write(tmp_path, f"{good}\n\n{good}\n{{oops\n")
    with pytest.raises(WorkloadError) as err:
        load_mooncake(path)
    assert f"{path}:4: line is not valid JSON" in str(err.value)


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ('{"timestamp": 0, "input_length": 5', "line is not valid JSON"),
        ("[1, 2]", "line is not a JSON object"),
        ('{"timestamp": 0, "input_length": 5, "output_length": 3}', "missing required field 'hash_ids'"),
        (json.dumps(_row(input_length="5")), "field 'input_length': Input should be a valid integer"),
        (json.dumps(_row(input_length=5.5)), "field 'input_length': Input should be a valid integer"),
        (json.dumps(_row(output_length=True)), "field 'output_length': Input should be a valid integer"),
        (json.dumps(_row(input_length=-5)), "field 'input_length': Input should be greater than or equal to 0"),
        (json.dumps(_row(output_length=-1)), "field 'output_length': Input should be greater than or equal to 0"),
        (json.dumps(_row(hash_ids=[1, "x"])), "field 'hash_ids.1': Input should be a valid integer"),
        (json.dumps(_row(hash_ids=5)), "field 'hash_ids': Input should be a valid array"),
        (json.dumps(_row(timestamp="soon")), "field 'timestamp': Input should be a valid number"),
        (json.dumps({"input_length": 1, "output_length": 1, "hash_ids": [1]}), "missing required field 'timestamp'"),
    ],
)
def test_bad_rows_give_one_line_with_file_and_line_number(tmp_path: Path, bad_line: str, expected: str) -> None:
    path = _write(tmp_path, json.dumps(_row()) + "\n" + bad_line + "\n")
    with pytest.raises(WorkloadError) as err:
        load_mooncake(path)
    message = str(err.value)
    assert message.startswith(f"{path}:2: ")
    assert expected in message
    assert "\n" not in message
    assert isinstance(err.value, ValueError)


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = _write(tmp_path, "\n  \n")
    with pytest.raises(WorkloadError, match="trace is empty"):
        load_mooncake(empty)
    with pytest.raises(WorkloadError, match="trace file not found") as err:
        load_mooncake(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in str(err.value)


def test_bad_loader_arguments(tmp_path: Path) -> None:
    path = _write(tmp_path, [_row()])
    with pytest.raises(WorkloadError, match="arrival_speedup_ratio"):
        load_mooncake(path, arrival_speedup_ratio=0.0)
    with pytest.raises(WorkloadError, match="trace_block_size"):
        load_mooncake(path, trace_block_size=0)


def test_real_mooncake_trace() -> None:
    w = load_mooncake(REAL_TRACE)
    assert w.num_requests == 12_031
    assert w.num_sessions == 12_031  # no session_id column: every row is its own session
    assert w.total_input_tokens / w.num_requests == pytest.approx(12_035, abs=1)  # traces README
    assert w.sessions[0].start_ms == 0.0
    assert w.last_start_ms == pytest.approx(58.9 * 60_000, rel=0.01)  # "12,031 over 58.9 min"
    fast = load_mooncake(REAL_TRACE, arrival_speedup_ratio=4.0)
    assert fast.last_start_ms == w.last_start_ms / 4.0


# ---------------------------------------------------------------- Workload invariants


def test_workload_rejects_unsorted_sessions_and_first_turn_delay() -> None:
    turn = Turn(input_length=1, output_length=1, hash_ids=(1,), delay_ms=0.0)
    with pytest.raises(ValueError, match="not sorted"):
        Workload(sessions=(Session("a", 5.0, (turn,)), Session("b", 1.0, (turn,))), trace_block_size=4)
    delayed = Turn(input_length=1, output_length=1, hash_ids=(1,), delay_ms=3.0)
    with pytest.raises(ValueError, match="has a delay"):
        Workload(sessions=(Session("a", 0.0, (delayed,)),), trace_block_size=4)
    too_long = Turn(input_length=5, output_length=1, hash_ids=(1,), delay_ms=0.0)
    with pytest.raises(ValueError, match="exceeds"):
        Workload(sessions=(Session("a", 0.0, (too_long,)),), trace_block_size=4)


# ---------------------------------------------------------------- Synthetic generator


def test_shared_prefix_example_from_facts() -> None:
    """1024 tokens, r = 0.5, block size 64: 16 blocks, the first 8 shared by the group."""
    spec = SyntheticSpec(
        input_tokens=1024, output_tokens=8, request_count=50, shared_prefix_ratio=0.5, num_prefix_groups=4, block_size=64
    )
    w = synthesize(spec)
    assert w.trace_block_size == 64
    seen_unique: list[int] = []
    groups = set()
    for session in w.sessions:
        (turn,) = session.turns
        assert turn.input_length == 1024 and len(turn.hash_ids) == 16
        shared, unique = turn.hash_ids[:8], turn.hash_ids[8:]
        group = (shared[0] >> 32) & 0xFFFF
        groups.add(group)
        assert shared == tuple((0xD00D << 48) | (group << 32) | i for i in range(8))
        assert all(h < (1 << 32) for h in unique)
        seen_unique.extend(unique)
    assert seen_unique == list(range(1, 50 * 8 + 1))  # unique ids count up from 1
    assert groups <= {0, 1, 2, 3} and len(groups) > 1
    assert prefix_hash_id(3, 7) == 0xD00D_0003_0000_0007


def test_prefix_rounding_is_half_away_from_zero() -> None:
    """300 tokens / 64 = 5 blocks; 5 * 0.5 = 2.5 rounds to 3 (Rust f64::round), not 2."""
    w = synthesize(SyntheticSpec(input_tokens=300, output_tokens=1, request_count=1, shared_prefix_ratio=0.5))
    ids = w.sessions[0].turns[0].hash_ids
    assert len(ids) == 5
    assert [h >> 48 == 0xD00D for h in ids] == [True, True, True, False, False]


def test_poisson_mean_gap() -> None:
    w = synthesize(SyntheticSpec(input_tokens=10, output_tokens=1, request_count=20_001, request_rate=25.0))
    starts = np.array([s.start_ms for s in w.sessions])
    gaps = np.diff(starts)
    assert starts[0] == 0.0 and len(gaps) == 20_000
    assert gaps.mean() == pytest.approx(40.0, rel=0.03)  # 1000 / 25; std of the mean is 0.7%
    assert gaps.std() == pytest.approx(40.0, rel=0.05)  # exponential: std == mean
    assert np.all(gaps >= 0)


def test_constant_interval_default_and_burst() -> None:
    default = synthesize(SyntheticSpec(input_tokens=10, output_tokens=1, request_count=4))
    assert [s.start_ms for s in default.sessions] == [0.0, 1.0, 2.0, 3.0]
    spaced = synthesize(SyntheticSpec(input_tokens=10, output_tokens=1, request_count=3, arrival_interval_ms=2.5))
    assert [s.start_ms for s in spaced.sessions] == [0.0, 2.5, 5.0]
    burst = synthesize(SyntheticSpec(input_tokens=10, output_tokens=1, request_count=3, arrival_interval_ms=0))
    assert [s.start_ms for s in burst.sessions] == [0.0, 0.0, 0.0]


def test_turns_per_session_and_delays() -> None:
    spec = SyntheticSpec(input_tokens=100, output_tokens=7, request_count=3, turns_per_session=4, inter_turn_delay_ms=12.5)
    w = synthesize(spec)
    assert w.num_sessions == 3 and w.num_requests == 12
    for session in w.sessions:
        assert [t.delay_ms for t in session.turns] == [0.0, 12.5, 12.5, 12.5]
        assert all(t.input_length == 100 and t.output_length == 7 for t in session.turns)
    all_ids = [h for s in w.sessions for t in s.turns for h in t.hash_ids]
    assert len(all_ids) == len(set(all_ids)) == 12 * 2  # no sharing without a prefix ratio


def test_stddev_lengths_are_normal_with_min_one() -> None:
    spec = SyntheticSpec(input_tokens=500, output_tokens=3, request_count=5000, input_stddev=100, output_stddev=50)
    w = synthesize(spec)
    isl = np.array([t.input_length for s in w.sessions for t in s.turns])
    osl = np.array([t.output_length for s in w.sessions for t in s.turns])
    assert isl.mean() == pytest.approx(500, rel=0.02) and isl.std() == pytest.approx(100, rel=0.05)
    assert osl.min() == 1 and (osl == 1).mean() > 0.4  # most draws of N(3, 50) are clipped to 1
    for s in w.sessions:
        for t in s.turns:
            assert len(t.hash_ids) == -(-t.input_length // 64)


def test_synthesis_is_deterministic_and_seeded() -> None:
    spec = SyntheticSpec(
        input_tokens=700, output_tokens=20, request_count=200, input_stddev=50, request_rate=10.0,
        shared_prefix_ratio=0.3, num_prefix_groups=5, turns_per_session=2,
    )
    base = synthesize(spec)
    assert synthesize(spec) == base
    starts = [s.start_ms for s in base.sessions]
    shapes = [[(t.input_length, t.hash_ids) for t in s.turns] for s in base.sessions]
    # the arrival seed moves arrivals only; the shape seed moves groups and lengths only
    moved = synthesize(spec.model_copy(update={"arrival_seed": 7}))
    assert [s.start_ms for s in moved.sessions] != starts
    assert [[(t.input_length, t.hash_ids) for t in s.turns] for s in moved.sessions] == shapes
    reshaped = synthesize(spec.model_copy(update={"seed": 7}))
    assert [s.start_ms for s in reshaped.sessions] == starts
    assert [[(t.input_length, t.hash_ids) for t in s.turns] for s in reshaped.sessions] != shapes


def test_spec_validation() -> None:
    with pytest.raises(ValidationError, match="not both"):
        SyntheticSpec(input_tokens=1, output_tokens=1, request_count=1, request_rate=1.0, arrival_interval_ms=1.0)
    with pytest.raises(ValidationError, match="extra_forbidden"):
        SyntheticSpec.model_validate({"input_tokens": 1, "output_tokens": 1, "request_count": 1, "isl": 3})
    with pytest.raises(ValidationError, match="shared_prefix_ratio"):
        SyntheticSpec(input_tokens=1, output_tokens=1, request_count=1, shared_prefix_ratio=1.5)
