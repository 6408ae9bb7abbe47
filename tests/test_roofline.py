"""Roofline timing: protocol shape, monotonicity, MIG slices vs full card, HAMi contention, CPU spill."""

from __future__ import annotations

import numpy as np
import pytest

from actors.engine.timing.models import TimingModel
from cluster.hardware.accelerator import load_accelerator
from cluster.hardware.catalog import CONFIG_DIR
from cluster.hardware.node import Node, VGpuRequest
from cluster.hardware.roofline import RooflineTiming, timing_and_blocks_for, whole_card_vgpu
from cluster.hardware.virtualization import HamiCoreMode, MigMode

ACC = CONFIG_DIR / "accelerator"
GiB = 1024**3


def test_implements_protocol_and_vectorises() -> None:
    t, blocks = timing_and_blocks_for("llama-3.1-8b", whole_card_vgpu("h100-sxm"), 16)
    model: TimingModel = t
    kv = np.array([1000.0, 2000.0, 4000.0])
    out = model.decode_ms(kv, 4)
    assert out.shape == (3,) and np.all(np.diff(out) > 0)
    assert np.array_equal(out[1:2], model.decode_ms(kv[1:2], 4))  # single pass == vectorised element
    assert model.prefill_ms([], []) == 0.0 and model.prefill_ms([100], [100]) == 0.0
    assert model.prefill_ms([4096], [0]) > model.prefill_ms([1024], [0]) > 0
    assert model.prefill_ms([2048], [1024]) < model.prefill_ms([2048], [0])  # cached prefix is not recomputed
    assert blocks > 0


def test_mig_1g_slower_than_7g() -> None:
    node = Node.build("a", load_accelerator(ACC / "mixed.toml").model_copy(
        update={"devices": load_accelerator(ACC / "mixed.toml").devices[:2]}),
        MigMode(per_card={0: ("1g.10gb",) * 7, 1: ("7g.80gb",)}))
    small = node.allocate(VGpuRequest(profile="1g.10gb"), "w1")
    big = node.allocate(VGpuRequest(profile="7g.80gb"), "w2")
    assert small is not None and big is not None
    ts, bs = timing_and_blocks_for("qwen3-0.6b", small, 16, max_seq_len=2048)
    tb, bb = timing_and_blocks_for("qwen3-0.6b", big, 16, max_seq_len=2048)
    kv = np.array([512.0, 4096.0, 16384.0])
    assert np.all(ts.decode_ms(kv, 8) > tb.decode_ms(kv, 8) * 1.5)
    assert ts.prefill_ms([2048], [0]) > 3 * tb.prefill_ms([2048], [0])
    assert bs < bb
    ts.set_busy_cotenant_count(6)  # MIG is isolated: co-tenants change nothing
    assert ts.slowdown == 1.0


def test_two_busy_hami_shares_slower_than_one() -> None:
    node = Node.build("h", load_accelerator(ACC / "h100x8.toml"),
                      HamiCoreMode(device_core_scaling=1.0, gpu_scheduler_policy="binpack"))
    a = node.allocate(VGpuRequest(memory_bytes=30 * GiB, sm_fraction=0.5), "w1")
    b = node.allocate(VGpuRequest(memory_bytes=30 * GiB, sm_fraction=0.5), "w2")
    assert a is not None and b is not None and a.card_index == b.card_index
    ta, _ = timing_and_blocks_for("llama-3.1-8b", a, 16)
    kv = np.array([8 * 1024.0])
    alone_d, alone_p = ta.decode_ms(kv, 8)[0], ta.prefill_ms([2048], [0])
    ta.set_busy_cotenants([v.core_limit for v in node.cotenants(a.vgpu_id)])
    busy_d, busy_p = ta.decode_ms(kv, 8)[0], ta.prefill_ms([2048], [0])
    assert busy_d > 1.5 * (alone_d - ta.params.decode_overhead_ms)
    assert busy_p > alone_p * 1.5 and ta.slowdown == pytest.approx(2 / 0.97)
    ta.set_busy_cotenants([])
    assert ta.decode_ms(kv, 8)[0] == alone_d


def test_cpu_spill_is_much_slower() -> None:
    vg = whole_card_vgpu("h100-sxm")
    t70, blocks = timing_and_blocks_for("llama-3.1-70b", vg, 16)
    assert t70.device_map.host_layers > 0 and blocks > 0
    full, _ = timing_and_blocks_for("llama-3.1-70b", vg, 16, device_map="0:40")
    assert full.device_map.host_layers == 40
    assert t70.decode_ms(np.array([1024.0]), 1)[0] > 50.0  # CPU-resident layers dominate


def test_tp2_faster_decode_than_tp1_for_70b_fp8() -> None:
    vg = whole_card_vgpu("h100-sxm")
    from cluster.hardware.models import get_model
    m = get_model("llama-3.1-70b").with_dtype("fp8")
    t1, _ = timing_and_blocks_for(m, vg, 16, tp_size=1)
    t2, _ = timing_and_blocks_for(m, vg, 16, tp_size=2)
    kv = np.array([4096.0])
    assert t2.decode_ms(kv, 1)[0] < t1.decode_ms(kv, 1)[0]


def test_decode_floor() -> None:
    t, _ = timing_and_blocks_for("qwen3-0.6b", whole_card_vgpu("b200"), 16)
    t2 = RooflineTiming(t.model, t.vgpu, t.device_map, t.params.__class__(decode_overhead_ms=0.0,
                                                                           decode_floor_ms=1.0))
    assert t2.decode_ms(np.array([1.0]), 1)[0] == 1.0
