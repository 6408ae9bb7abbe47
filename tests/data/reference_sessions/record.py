"""Record the reference replay's multi-turn sessions into `cases.json` (run with the reference's venv).

    /work/refvenv/bin/python tests/data/reference_sessions/record.py

Each case keeps, per request, (session_id, turn_index, arrival, first token, end) in ms and a few
summary metrics. Engine: 2 workers, block size 16, 4096 blocks, round robin.
- `synthetic-c4`: 30 sessions x 3 turns of 300/24 tokens, 80 ms think time, 4 session slots;
- `trace-c3`, `trace-open`: `sessions_trace.jsonl` (14 sessions with `session_id`, `delay` and
  later-turn timestamps; 64 tokens per hash id) with 3 session slots, and open loop;
- `file-order-c1`: `file_order_trace.jsonl` (sessions not listed by start) with one slot: slots
  take sessions in file order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dynamo.replay import run_synthetic_trace_replay, run_trace_replay

HERE = Path(__file__).parent
ENGINE = {"engine": {"block_size": 16, "num_gpu_blocks": 4096}}
SUMMARY = ("num_requests", "duration_ms", "mean_ttft_ms", "mean_e2e_latency_ms", "mean_itl_ms")


def keep(result: Any) -> dict[str, Any]:
    requests = sorted(((p["session_id"], p["turn_index"], p["arrival_time_ms"], p["first_token_ms"],
                        p["terminal_time_ms"]) for p in result.per_request), key=lambda r: (r[2], r[0], r[1]))
    return {"summary": {k: result.summary[k] for k in SUMMARY}, "requests": requests}


def main() -> None:
    trace = str(HERE / "sessions_trace.jsonl")
    cases = {
        "synthetic-c4": keep(run_synthetic_trace_replay(
            300, 24, 30, extra_engine_args=ENGINE, num_workers=2, turns_per_session=3, inter_turn_delay_ms=80.0,
            replay_concurrency=4, capture_per_request=True)),
        "trace-c3": keep(run_trace_replay(trace, extra_engine_args=ENGINE, num_workers=2, replay_concurrency=3,
                                          trace_block_size=64, capture_per_request=True)),
        "trace-open": keep(run_trace_replay(trace, extra_engine_args=ENGINE, num_workers=2, trace_block_size=64,
                                            capture_per_request=True)),
        "file-order-c1": keep(run_trace_replay(str(HERE / "file_order_trace.jsonl"), extra_engine_args=ENGINE,
                                               num_workers=2, replay_concurrency=1, trace_block_size=64,
                                               capture_per_request=True)),
    }
    (HERE / "cases.json").write_text(json.dumps(cases, separators=(",", ":")) + "\n")
    print("wrote", HERE / "cases.json")


if __name__ == "__main__":
    main()
