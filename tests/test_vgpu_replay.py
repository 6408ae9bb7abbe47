"""Replays on modelled vGPUs: MIG slices are slower than a whole-GPU instance, and time-sliced
HAMi shares slow each other down only while both are busy."""

from __future__ import annotations

from statistics import mean
from typing import Any

from cluster.runtime.local import run_local
from cluster.runtime.shard import RunResult
from cluster.scenario.load import LoadedScenario
from cluster.scenario.spec import Scenario
from cluster.scenario.world import build_world
from cluster.workload.model import Session, Turn, Workload
from tests.test_macro_equivalence import assert_equivalent

H100 = "configs/accelerator/h100x8.toml"


def _workload(n: int, gap_ms: float, copies: int = 1) -> Workload:
    sessions = []
    for i in range(n):
        for c in range(copies):
            ids = tuple(range(10_000 * (i * copies + c + 1), 10_000 * (i * copies + c + 1) + 4))
            sessions.append(Session(f"s{i}-{c}", i * gap_ms, (Turn(900, 60, ids, 0.0),)))
    return Workload(tuple(sessions), 256)


def _scenario(model: str, virtualization: dict[str, Any], deployment: dict[str, Any]) -> Scenario:
    return Scenario.model_validate({
        "name": "vgpu", "model": model,
        "cluster": {"nodes": [{"name": "n", "accelerator": H100, "virtualization": virtualization}]},
        "deployments": [{"name": "agg", "engine": {"block_size": 16, "timing_model": {"type": "roofline"}},
                         **deployment}],
        "router": {"mode": "round_robin"},
    })


def _run(model: str, virtualization: dict[str, Any], deployment: dict[str, Any], wl: Workload,
         macro_step: bool = True) -> RunResult:
    world = build_world(LoadedScenario(_scenario(model, virtualization, deployment)), macro_step=macro_step,
                        collect_kv_events=True, workload=wl)
    return run_local(world.setup)[0]


def _mean_e2e(res: RunResult, worker: int | None = None) -> float:
    return mean(r.e2e_latency_ms for r in res.records  # type: ignore[misc]
                if worker is None or r.worker_id == worker)


def test_mig_1g_slice_replays_slower_than_7g() -> None:
    mig = {"mode": "mig", "per_card": {0: ["1g.10gb"] * 7, 1: ["7g.80gb"]}}
    wl = _workload(30, 150.0)
    slow = _run("qwen3-0.6b", mig, {"replicas": 1, "vgpu": {"profile": "1g.10gb"}}, wl)
    fast = _run("qwen3-0.6b", mig, {"replicas": 1, "vgpu": {"profile": "7g.80gb"}}, wl)
    assert all(r.output_length == 60 for r in slow.records + fast.records)
    assert _mean_e2e(slow) > 2 * _mean_e2e(fast)
    assert mean(r.ttft_ms for r in slow.records) > 2 * mean(r.ttft_ms for r in fast.records)  # type: ignore[misc]


HAMI = {"mode": "hami-core", "device_core_scaling": 1.0, "gpu_scheduler_policy": "binpack"}
HAMI_SHARE = {"vgpu": {"memory_gib": 30, "sm_fraction": 0.5}}


def _hami_run(copies: int, workers: int = 2, macro_step: bool = True) -> RunResult:
    """Requests on HAMi shares of one card; with one worker its card has no busy co-tenant (the
    'alone' baseline)."""
    return _run("llama-3.1-8b", HAMI, {"replicas": workers, **HAMI_SHARE}, _workload(25, 120.0, copies), macro_step)


def test_two_busy_hami_shares_run_slower_than_one_alone() -> None:
    alone = _hami_run(copies=1, workers=1)
    both = _hami_run(copies=2)  # round robin: each worker gets the same 25 requests
    assert {r.worker_id for r in alone.records} == {0}
    assert sum(1 for r in both.records if r.worker_id == 0) == 25
    assert _mean_e2e(both, worker=0) > 1.5 * _mean_e2e(alone, worker=0)


def test_both_hami_shares_land_on_one_card_and_form_a_cotenant_group() -> None:
    sc = _scenario("llama-3.1-8b", HAMI, {"replicas": 2, **HAMI_SHARE})
    world = build_world(LoadedScenario(sc), workload=_workload(1, 1.0))
    a, b = (w.vgpus[0][0] for w in world.workers)
    assert a.card_index == b.card_index
    groups = {r.cotenant_group for r in world.setup.ranks}
    assert len(groups) == 1 and None not in groups


def test_contention_replay_is_the_same_macro_stepped_or_pass_by_pass() -> None:
    assert_equivalent(_hami_run(2, macro_step=True), _hami_run(2, macro_step=False))
