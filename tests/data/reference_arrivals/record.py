"""Record the reference replay's synthetic streams into `streams.json` (run with the reference's venv).

    /work/refvenv/bin/python tests/data/reference_arrivals/record.py

- `arrivals`: first-turn arrival times (ms) of 200 single-turn sessions, Poisson at `rate`,
  `arrival_seed` = `seed`, in session order;
- `constant`: the same with a constant `interval_ms` (the reference sums 1000/(1000/interval));
- `groups`: `reused_input_tokens` of 100 sessions of one 128-token turn (block 16, shared
  prefix 0.5 = 64 tokens, `groups` prefix groups), one every second on one worker, so a
  request reuses 64 tokens exactly when an earlier session drew the same group.
"""

from __future__ import annotations

import json
from pathlib import Path

from dynamo.replay import run_synthetic_trace_replay

ENGINE = {"engine": {"block_size": 16}}


def arrivals(seed: int, rate: float, n: int = 200) -> list[float]:
    r = run_synthetic_trace_replay(16, 2, n, extra_engine_args=ENGINE, request_rate=rate, arrival_seed=seed,
                                   capture_per_request=True)
    return sorted(p["arrival_time_ms"] for p in r.per_request)


def constant(interval_ms: float, n: int = 200) -> list[float]:
    r = run_synthetic_trace_replay(16, 2, n, extra_engine_args=ENGINE, arrival_interval_ms=interval_ms,
                                   capture_per_request=True)
    return sorted(p["arrival_time_ms"] for p in r.per_request)


def group_reuse(seed: int, groups: int, n: int = 100) -> list[int]:
    r = run_synthetic_trace_replay(128, 2, n, extra_engine_args=ENGINE, arrival_interval_ms=1000.0,
                                   arrival_seed=seed, shared_prefix_ratio=0.5, num_prefix_groups=groups,
                                   capture_per_request=True)
    return [p["reused_input_tokens"] for p in sorted(r.per_request, key=lambda p: p["arrival_time_ms"])]


def main() -> None:
    data = {
        "arrivals": [{"seed": s, "rate": rate, "arrival_ms": arrivals(s, rate)}
                     for s in (42, 7, 123456789) for rate in (20.0, 3.5)],
        "constant": [{"interval_ms": i, "arrival_ms": constant(i)} for i in (7.3, 0.1, 3.0)],
        "groups": [{"arrival_seed": s, "groups": g, "reused_input_tokens": group_reuse(s, g)}
                   for s, g in ((42, 20), (7, 20), (42, 7), (42, 61))],
    }
    out = Path(__file__).with_name("streams.json")
    out.write_text(json.dumps(data, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
