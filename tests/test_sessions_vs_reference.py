"""Closed-loop session slots and multi-turn sessions against the reference replay, request by request
(recorded by `tests/data/reference_sessions/record.py`): every request's arrival, first token and end
equal the reference's to 1e-4 ms (the reference rounds its times to the microsecond; the drift that
leaves over a run stays below 2e-5 ms, a wrong slot or turn order moves times by milliseconds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cluster.replay import replay_workload
from cluster.workload.model import Workload
from cluster.workload.mooncake import load_mooncake
from cluster.workload.synthetic import SyntheticSpec, synthesize

DATA = Path(__file__).parent / "data" / "reference_sessions"
CASES: dict[str, Any] = json.loads((DATA / "cases.json").read_text())
ENGINE = {"block_size": 16, "num_gpu_blocks": 4096}


def _workload(name: str) -> tuple[Workload, int | None]:
    if name == "synthetic-c4":
        spec = SyntheticSpec(input_tokens=300, output_tokens=24, request_count=30, turns_per_session=3,
                             inter_turn_delay_ms=80.0, block_size=16)
        return synthesize(spec), 4
    if name == "file-order-c1":
        return load_mooncake(DATA / "file_order_trace.jsonl", trace_block_size=64), 1
    trace = load_mooncake(DATA / "sessions_trace.jsonl", trace_block_size=64)
    return trace, (3 if name == "trace-c3" else None)


@pytest.mark.parametrize("name", sorted(CASES))
def test_sessions_equal_the_reference(name: str) -> None:
    workload, concurrency = _workload(name)
    result = replay_workload(workload, ENGINE, num_workers=2, concurrency=concurrency)
    assert all(r.first_token_ms is not None and r.terminal_ms is not None for r in result.records)
    ours = sorted(((r.session_id, r.turn_index, r.arrival_ms, float(r.first_token_ms or 0.0),
                    float(r.terminal_ms or 0.0)) for r in result.records), key=lambda r: (r[2], r[0], r[1]))
    ref = [tuple(r) for r in CASES[name]["requests"]]
    assert len(ours) == len(ref) == CASES[name]["summary"]["num_requests"]
    worst = 0.0
    for mine, theirs in zip(ours, ref):
        assert mine[:2] == theirs[:2]
        worst = max(worst, *(abs(a - b) for a, b in zip(mine[2:], theirs[2:])))
    assert worst < 1e-4, f"{name}: a request time differs from the reference's by {worst} ms"
    if concurrency is not None:
        # at most `concurrency` sessions open at any time: a session is open from its first arrival to its end
        spans: dict[str, list[float]] = {}
        for sid, _, arrival, _, end in ours:
            span = spans.setdefault(sid, [arrival, end])
            span[0], span[1] = min(span[0], arrival), max(span[1], end)
        edges = sorted([(a, 1) for a, _ in spans.values()] + [(e, -1) for _, e in spans.values()],
                       key=lambda x: (x[0], x[1]))
        open_now = peak = 0
        for _, step in edges:
            open_now += step
            peak = max(peak, open_now)
        assert peak == concurrency
