"""The one workload loader: a `WorkloadSpec` to a `Workload`, for scenarios and replays alike.

Order of operations: read the trace (or generate the synthetic workload, or read the embedded
500-request Mooncake sample, `cluster/data/`), keep the first `max_sessions` sessions, then
divide session starts and think times by `arrival_speedup_ratio`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cluster.workload.model import Workload
from cluster.workload.mooncake import load_mooncake
from cluster.workload.spec import WorkloadSpec
from cluster.workload.synthetic import synthesize

SAMPLE_TRACE = "mooncake_sample.jsonl"


@dataclass(frozen=True)
class LoadedWorkload:
    workload: Workload
    description: str
    """One line for reports: `trace: <file>, <n> requests` or `synthetic: <n> requests`."""
    embedded: bool
    """The embedded sample was used (neither a trace nor a synthetic workload was given)."""


def sample_trace_path() -> Path:
    return Path(str(resources.files("cluster").joinpath("data", SAMPLE_TRACE)))


def load_workload(spec: WorkloadSpec, resolve: Callable[[str], Path] = Path) -> LoadedWorkload:
    """The workload `spec` describes; `resolve` turns a trace path into a file.

    Raises:
        WorkloadError: one line naming the file and line (see `cluster.workload.mooncake`).
    """
    embedded = spec.trace is None and spec.synthetic is None
    if spec.synthetic is not None:
        wl = synthesize(spec.synthetic)
        kind = "synthetic"
    else:
        path = resolve(spec.trace) if spec.trace is not None else sample_trace_path()
        wl = load_mooncake(path, trace_block_size=spec.trace_block_size)
        kind = f"trace: {path.name}"
    if spec.max_sessions is not None:
        wl = wl.first(spec.max_sessions)
    if spec.arrival_speedup_ratio != 1.0:
        wl = wl.scaled(spec.arrival_speedup_ratio)
    sep = ": " if kind == "synthetic" else ", "
    return LoadedWorkload(wl, f"{kind}{sep}{wl.num_requests} requests", embedded)
