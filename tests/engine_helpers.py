"""Small builders shared by the engine tests."""

from __future__ import annotations

from typing import Any, Sequence

from cluster.replay import replay_workload
from cluster.runtime.shard import RunResult
from cluster.workload.model import Session, Turn, Workload

# (arrival_ms, input_tokens, output_tokens, hash_ids)
Spec = tuple[float, int, int, Sequence[int]]


def workload(specs: Sequence[Spec], trace_block_size: int = 64) -> Workload:
    ordered = sorted(enumerate(specs), key=lambda x: (x[1][0], x[0]))
    sessions = tuple(
        Session(f"s{i}", t, (Turn(isl, osl, tuple(ids), 0.0),)) for i, (t, isl, osl, ids) in ordered
    )
    return Workload(sessions, trace_block_size)


def replay(specs: Sequence[Spec], trace_block_size: int = 64, num_workers: int = 1,
           engine: dict[str, Any] | None = None, **kwargs: Any) -> RunResult:
    """Replay these requests (round robin unless `router=` says otherwise) through `cluster.replay`."""
    return replay_workload(workload(specs, trace_block_size), engine, num_workers, **kwargs)


def unique_ids(start: int, n: int) -> list[int]:
    return list(range(start, start + n))
