"""Replays on modelled vGPUs: MIG slices are slower than a whole-GPU instance, and time-sliced
HAMi shares slow each other down only while both are busy."""

from __future__ import annotations

from statistics import mean

from actors.engine.config import EngineConfig
from cluster.hardware.accelerator import load_accelerator
from cluster.hardware.catalog import CONFIG_DIR
from cluster.hardware.node import Node, VGpuRequest
from cluster.hardware.roofline import timing_and_blocks_for
from cluster.hardware.virtualization import HamiCoreMode, MigMode
from cluster.runtime.replay_sim import ReplaySimulation, SimulationResult
from cluster.workload.model import Session, Turn, Workload
from tests.test_macro_equivalence import assert_equivalent

ACC = CONFIG_DIR / "accelerator"
GiB = 1024**3


def _workload(n: int, gap_ms: float, copies: int = 1) -> Workload:
    sessions = []
    for i in range(n):
        for c in range(copies):
            ids = tuple(range(10_000 * (i * copies + c + 1), 10_000 * (i * copies + c + 1) + 4))
            sessions.append(Session(f"s{i}-{c}", i * gap_ms, (Turn(900, 60, ids, 0.0),)))
    return Workload(tuple(sessions), 256)


def _mean_e2e(res: SimulationResult, worker: int | None = None) -> float:
    return mean(r.e2e_latency_ms for r in res.records  # type: ignore[misc]
                if worker is None or r.worker_id == worker)


def test_mig_1g_slice_replays_slower_than_7g() -> None:
    acc = load_accelerator(ACC / "mixed.toml")
    node = Node.build("a", acc.model_copy(update={"devices": acc.devices[:2]}),
                      MigMode(per_card={0: ("1g.10gb",) * 7, 1: ("7g.80gb",)}))
    small = node.allocate(VGpuRequest(profile="1g.10gb"), "w-small")
    big = node.allocate(VGpuRequest(profile="7g.80gb"), "w-big")
    assert small is not None and big is not None
    wl = _workload(30, 150.0)
    results = {}
    for name, vgpu in (("1g", small), ("7g", big)):
        timing, blocks = timing_and_blocks_for("qwen3-0.6b", vgpu, 16, max_seq_len=2048, max_batch_size=8)
        engine = EngineConfig(block_size=16, num_gpu_blocks=blocks)
        results[name] = ReplaySimulation(wl, engine, 1, timing=timing).run()
    slow, fast = results["1g"], results["7g"]
    assert all(r.output_length == 60 for r in slow.records + fast.records)
    assert _mean_e2e(slow) > 2 * _mean_e2e(fast)
    assert mean(r.ttft_ms for r in slow.records) > 2 * mean(r.ttft_ms for r in fast.records)  # type: ignore[misc]


def _hami_run(copies: int, workers: int = 2, macro_step: bool = True) -> SimulationResult:
    """Requests on HAMi shares of one card; with one worker, its co-tenant share stays idle (the
    'alone' baseline)."""
    node = Node.build("h", load_accelerator(ACC / "h100x8.toml"),
                      HamiCoreMode(device_core_scaling=1.0, gpu_scheduler_policy="binpack"))
    a = node.allocate(VGpuRequest(memory_bytes=30 * GiB, sm_fraction=0.5), "w0")
    b = node.allocate(VGpuRequest(memory_bytes=30 * GiB, sm_fraction=0.5), "w1")
    assert a is not None and b is not None and a.card_index == b.card_index
    ta, blocks = timing_and_blocks_for("llama-3.1-8b", a, 16, max_seq_len=4096, max_batch_size=16)
    tb, _ = timing_and_blocks_for("llama-3.1-8b", b, 16, max_seq_len=4096, max_batch_size=16)
    engine = EngineConfig(block_size=16, num_gpu_blocks=blocks)
    sim = ReplaySimulation(_workload(25, 120.0, copies), engine, workers, timings=[ta, tb][:workers],
                           contention=[[(0, a.core_limit), (1, b.core_limit)][:workers]],
                           macro_step=macro_step, collect_kv_events=True)
    return sim.run()


def test_two_busy_hami_shares_run_slower_than_one_alone() -> None:
    alone = _hami_run(copies=1, workers=1)
    both = _hami_run(copies=2)  # round robin: each worker gets the same 25 requests
    assert {r.worker_id for r in alone.records} == {0}
    assert sum(1 for r in both.records if r.worker_id == 0) == 25
    assert _mean_e2e(both, worker=0) > 1.5 * _mean_e2e(alone, worker=0)


def test_contention_replay_is_the_same_macro_stepped_or_pass_by_pass() -> None:
    assert_equivalent(_hami_run(2, macro_step=True), _hami_run(2, macro_step=False))
