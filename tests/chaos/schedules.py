"""Random fault schedules (hypothesis strategies), the small scenario they run on, and the invariants
every run must keep (`check`). Shared by the CI test (`tests/chaos/test_chaos.py`, >= 100 schedules)
and the soak (`python -m tests.chaos.soak`, `make chaos`, >= 1,000 schedules).

The scenario: 4 KV-routed workers on 3 MIG nodes (2 free vGPUs for restarts), 30 two-turn sessions
over ~1 s, a 0.5 ms event plane, optionally lossy KV events (recovery on). A schedule adds 0-4
faults of any kind at random times and targets, and a random migration limit.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from actors.engine.records import TerminalStatus
from cluster.report.build import build_report
from cluster.runner import run_world
from tests.scenario_helpers import world_of

NODES = ["n-0", "n-1", "n-2"]
WORKERS = [f"agg-{i}" for i in range(4)]

BASE: dict[str, Any] = {
    "name": "chaos", "seed": 1, "model": "qwen3-0.6b",
    "cluster": {"nodes": [{"name": "n", "count": 3, "accelerator": "configs/accelerator/h100x8.toml",
                           "virtualization": {"mode": "mig", "profiles": ["3g.40gb", "3g.40gb"]}}]},
    "deployments": [{"name": "agg", "replicas": 4, "vgpu": {"profile": "3g.40gb"}, "placement": "spread",
                     "engine": {"block_size": 16, "num_gpu_blocks": 400, "max_num_seqs": 8, "startup_time": 0.1},
                     "timing": {"model": "roofline"}}],
    "router": {"mode": "kv"},
    "event_plane": {"latency_ms": 0.5},
    "workload": {"synthetic": {"input_tokens": 300, "output_tokens": 24, "input_stddev": 80, "output_stddev": 6,
                               "request_count": 30, "request_rate": 30, "turns_per_session": 2,
                               "inter_turn_delay_ms": 40, "shared_prefix_ratio": 0.6, "num_prefix_groups": 3,
                               "block_size": 16}},
}

_at = st.floats(0.0, 1.4).map(lambda x: round(x, 3))
_duration = st.floats(0.02, 0.6).map(lambda x: round(x, 3))
FAULTS = st.one_of(
    st.builds(lambda t, n: {"at_s": t, "kill_node": n}, _at, st.sampled_from(NODES)),
    st.builds(lambda t, w: {"at_s": t, "kill_worker": w}, _at, st.sampled_from(WORKERS)),
    st.builds(lambda t, n, d: {"at_s": t, "partition": {"nodes": n, "duration_s": d}}, _at,
              st.lists(st.sampled_from(NODES), min_size=1, max_size=2, unique=True), _duration),
    st.builds(lambda t, w, d: {"at_s": t, "drain_worker": {"worker": w, "deadline_s": d}}, _at,
              st.sampled_from(WORKERS), st.one_of(st.none(), _duration)),
    st.builds(lambda t, w: {"at_s": t, "restart_worker": w}, _at, st.sampled_from(WORKERS)),
    st.builds(lambda t, n, f, d: {"at_s": t, "slow_gpu": {"node": n, "factor": f, "duration_s": d}}, _at,
              st.sampled_from(NODES), st.sampled_from([0.5, 2.0, 5.0]), _duration),
    st.builds(lambda t: {"at_s": t, "restart_router": True}, _at),
    st.builds(lambda t, n, topic, lat, loss, d: {"at_s": t, "degrade_link": {
        "nodes": n, "topic": topic, "latency_ms": lat, "loss": loss if topic in ("kv_events", "metrics") else 0.0,
        "duration_s": d}}, _at, st.lists(st.sampled_from(NODES), max_size=2, unique=True),
        st.sampled_from(["kv_events", "metrics", "requests", "responses"]), st.sampled_from([1.0, 5.0, 30.0]),
        st.sampled_from([0.0, 0.2, 0.5]), _duration),
    st.builds(lambda t, n, d, fail, dl: {"at_s": t, "switch_mode": {
        "node": n, "virtualization": {"mode": "mig", "profiles": ["3g.40gb", "3g.40gb"]}, "switch_s": d,
        "fail": fail, "drain_deadline_s": dl}}, _at, st.sampled_from(NODES), _duration, st.booleans(),
        st.one_of(st.none(), _duration)),
)
"""One fault of any kind, at a random time and target."""


@st.composite
def schedules(draw: st.DrawFn) -> dict[str, Any]:
    """A scenario dict: the base scenario with random faults, migration limit, KV loss and seed."""
    sc = copy.deepcopy(BASE)
    sc["seed"] = draw(st.integers(0, 10_000))
    sc["faults"] = draw(st.lists(FAULTS, max_size=4))
    sc["deployments"][0]["migration_limit"] = draw(st.integers(0, 3))
    loss = draw(st.sampled_from([0.0, 0.0, 0.05]))
    if loss:
        sc["event_plane"]["links"] = {"kv_events": {"loss": loss}}
    return sc


@dataclass
class Outcome:
    """What one schedule did, and what went wrong."""

    report: dict[str, Any]
    report_bytes: bytes
    faults: dict[str, int] = field(default_factory=dict)
    """Applied faults by kind."""
    lost: int = 0
    """Requests that did not end, or ended without a reason."""
    violations: list[str] = field(default_factory=list)


def run(sc: dict[str, Any], runtime: str = "local", shards: int = 1) -> Outcome:
    """Run a schedule and check every invariant of the module docstring."""
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        world = world_of(Path(tmp), sc)
        result, control = run_world(world, runtime, shards)  # type: ignore[arg-type]
    report = build_report(world, result, control)
    data = json.dumps(report, sort_keys=True).encode()
    out = Outcome(report, data)
    for f in report["faults"]:
        if f["applied"]:
            out.faults[f["kind"]] = out.faults.get(f["kind"], 0) + 1
    records = result.records
    v = out.violations
    # 1. every request of the workload ended, and a request that did not complete says why
    expected = sum(len(s.turns) for s in world.setup.workload.sessions)
    out.lost = sum(1 for r in records if r.terminal_status is TerminalStatus.INCOMPLETE or
                   (r.terminal_status is not TerminalStatus.COMPLETED and r.reason is None))
    out.lost += expected - len(records)
    if out.lost:
        v.append(f"requests lost: {out.lost}")
    if report["run"]["end_ms"] != max((r.terminal_ms or 0.0 for r in records), default=0.0):
        v.append("run.end_ms is not the last request's end")
    # 2. no token from a worker after it died
    died = {w["worker_id"]: w["stopped_ms"] for w in report["workers"] if w["state"] == "failed"}
    for r in records:
        t = died.get(r.worker_id)
        if t is not None and r.engine.last_token_ms is not None and r.engine.last_token_ms > t:
            v.append(f"request {r.request_id}: token at {r.engine.last_token_ms} from worker {r.worker_id} "
                     f"dead since {t}")
        if t is not None and r.terminal_status is TerminalStatus.COMPLETED and (r.engine.end_ms or 0.0) > t:
            v.append(f"request {r.request_id} completed on worker {r.worker_id} after it died")
        if len(r.migrated_from) > sc["deployments"][0].get("migration_limit", 0):
            v.append(f"request {r.request_id} migrated {len(r.migrated_from)} times")
    # 3. with recovery on, the router's index equals the live workers' caches (no partition open at the end)
    index = report["event_plane"]["index"]
    open_at_end = any(f["kind"] in ("partition", "degrade_link") and f["until_ms"] >= report["run"]["end_ms"] - 50.0
                      for f in report["faults"])
    if index is not None and not open_at_end and index["ranks_diverged"]:
        v.append(f"router index differs from the caches: {index}")
    # 4. GPU-hours are the sum of worker lifetimes (clipped to the run's duration)
    dur = report["summary"]["duration_ms"]
    spans = [w["num_gpus"] * max(0.0, min(w["stopped_ms"] if w["stopped_ms"] is not None else dur, dur)
                                 - min(w["started_ms"], dur)) for w in report["workers"]]
    if not math.isclose(math.fsum(spans) / 3_600_000.0, report["summary"]["gpu_hours"], rel_tol=1e-9, abs_tol=1e-15):
        v.append("gpu_hours is not the sum of worker lifetimes")
    if not math.isclose(sum(w["gpu_hours"] for w in report["workers"]), report["summary"]["gpu_hours"],
                        rel_tol=1e-9, abs_tol=1e-15):
        v.append("workers' gpu_hours do not add up to the summary's")
    # faults are counted once: each failed request is charged to at most one fault
    # (requests it hit as requests_failed, later turns of their sessions as turns_dropped)
    charged = sum(f["requests_failed"] + f["turns_dropped"] for f in report["faults"])
    failed = sum(1 for r in records if r.terminal_status is TerminalStatus.FAILED and r.cause is not None
                 and r.cause.startswith("faults."))
    if charged != failed:
        v.append(f"faults charge {charged} failed requests, {failed} failed by a fault")
    return out
