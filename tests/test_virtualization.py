"""Virtualization modes, MIG legality, HAMi arithmetic and scores, node mode switching."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.hardware.accelerator import load_accelerator
from cluster.hardware.catalog import default_catalog
from cluster.hardware.mig import MigError, MigPlacement, place_or_raise, try_place
from cluster.hardware.node import Node, VGpuRequest, load_node
from cluster.hardware.virtualization import (
    MIB,
    CambriconDynamicSmluMode,
    CambriconEnvShareMode,
    ContentionModel,
    HamiCard,
    HamiCoreMode,
    MigMode,
    VirtualizationError,
    hami_node_score,
    hami_pick_card,
    hami_resolve_request,
)

ACC = Path(__file__).resolve().parent.parent / "configs" / "accelerator"
GiB = 1024**3


def test_legal_mig_sets_fit() -> None:
    t = default_catalog().mig["a100-40gb"]
    for names in (["1g.5gb"] * 7, ["2g.10gb"] * 3 + ["1g.5gb"], ["3g.20gb"] * 2, ["4g.20gb", "3g.20gb"],
                  ["1g.10gb"] * 4, ["7g.40gb"], ["1g.5gb", "1g.5gb", "2g.10gb", "3g.20gb"]):
        placed = place_or_raise(t, names, "A100")
        spans = sorted((p.start, p.end) for p in placed)
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    one_g_at_6 = place_or_raise(t, ["2g.10gb"] * 3 + ["1g.5gb"], "A100")
    assert one_g_at_6[-1].start == 6


def test_illegal_mig_sets_refused() -> None:
    t = default_catalog().mig["a100-40gb"]
    for names in (["1g.5gb"] * 8, ["4g.20gb", "4g.20gb"], ["7g.40gb", "1g.5gb"], ["3g.20gb"] * 3,
                  ["1g.5gb+me", "1g.5gb+me"], ["4g.20gb", "2g.10gb", "2g.10gb"], ["2g.10gb"] * 4):
        with pytest.raises(MigError, match="does not fit"):
            place_or_raise(t, names, "A100")
    with pytest.raises(MigError, match="no MIG profile '3g.40gb'"):
        place_or_raise(t, ["3g.40gb"], "A100")  # an 80GB profile name on a 40GB card


def test_hami_placement_cases_from_facts() -> None:
    t = default_catalog().mig["a100-40gb"]
    g3 = t.profile("3g.20gb")
    assert g3 is not None
    assert try_place(t, [t.profile(n) for n in ("2g.10gb", "1g.5gb", "1g.5gb")],  # type: ignore[misc]
                     [MigPlacement(g3, 4)]) is not None
    assert try_place(t, [t.profile("1g.5gb")], [MigPlacement(g3, 0), MigPlacement(g3, 4)]) is None  # type: ignore[list-item]
    g2 = t.profile("2g.10gb")
    assert g2 is not None
    assert try_place(t, [g2], [MigPlacement(g2, s) for s in (0, 2, 4)]) is None


def test_mig_mode_vgpu_shares() -> None:
    acc = load_accelerator(ACC / "h100x8.toml")
    node = Node.build("n", acc, MigMode(profiles=("3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb")))
    vg = [v for v, _ in node.vgpus() if v.card_index == 0]
    one = next(v for v in vg if v.profile == "1g.10gb")
    assert one.isolation == "mig" and one.sm_fraction == pytest.approx(16 / 132)
    assert one.bandwidth_fraction == pytest.approx(1 / 8) and one.memory_bytes == 9984 * MIB
    with pytest.raises(MigError):
        Node.build("n", acc, MigMode(profiles=("4g.40gb", "4g.40gb")))
    with pytest.raises(MigError, match="9/8 memory slices"):  # DESIGN §10's example set does not fit
        Node.build("n", acc, MigMode(profiles=("3g.40gb", "3g.40gb", "1g.10gb")))


def test_vendor_mode_pairs_refused() -> None:
    mlu = load_accelerator(ACC / "mlu370x8.toml")
    with pytest.raises(VirtualizationError, match="hami-core.*does not exist for cambricon"):
        Node.build("m", mlu, HamiCoreMode())
    with pytest.raises(VirtualizationError, match="does not exist for cambricon"):
        Node.build("m", mlu, MigMode(profiles=("1g.5gb",)))
    h100 = load_accelerator(ACC / "h100x8.toml")
    with pytest.raises(VirtualizationError, match="does not exist for nvidia"):
        Node.build("h", h100, CambriconEnvShareMode(virtualization_num=4))
    with pytest.raises(VirtualizationError, match="not MIG-capable"):
        Node.build("x", load_accelerator(ACC / "mixed.toml"), MigMode(profiles=("1g.10gb",)))


def test_hami_split_count_and_overcommit_arithmetic() -> None:
    cfg = HamiCoreMode(device_split_count=4, device_memory_scaling=1.5, device_core_scaling=2.0)
    card = HamiCard.register(0, 0, 80 * GiB, cfg)
    assert (card.count, card.devmem_mib, card.devcore) == (4, 122880, 200)
    for _ in range(4):  # 4 x 30000 MiB = 120000 MiB > 80 GiB physical: memory overcommit
        assert card.fits(30000, 50)
        card.add(30000, 50)
    assert card.usedmem_mib > 80 * 1024 and card.usedcores == 200
    assert not card.fits(1, 0)  # split slots exhausted
    plain = HamiCard.register(0, 0, 80 * GiB, HamiCoreMode())
    assert (plain.count, plain.devmem_mib, plain.devcore) == (10, 81920, 100)
    plain.add(1000, 100)
    assert not plain.fits(1000, 100)  # exclusive conflict
    assert hami_resolve_request(plain, None, 50, None) == (40960, 0)
    assert hami_resolve_request(plain, None, None, None) == (81920, 100)  # whole memory -> exclusive cores
    assert hami_resolve_request(plain, 1000, None, 250) == (1000, 100)


def test_hami_scores_worked_example() -> None:
    cfg = HamiCoreMode(device_split_count=10)
    gpu1 = HamiCard(0, 0, 10, 8000, 100, used=2, usedmem_mib=2000, usedcores=10)
    gpu2 = HamiCard(1, 0, 10, 8000, 100, used=6, usedmem_mib=6000, usedcores=70)
    assert gpu1.score(1000, 20) == pytest.approx(9.75)
    assert gpu2.score(1000, 20) == pytest.approx(24.75)
    assert hami_pick_card([gpu1, gpu2], 1000, 20, "binpack") is gpu2
    assert hami_pick_card([gpu1, gpu2], 1000, 20, "spread") is gpu1
    assert hami_node_score([gpu1, gpu2]) == pytest.approx(10 * (8 / 20 + 80 / 200 + 8000 / 16000))
    assert cfg.device_split_count == 10


def test_hami_node_allocation_and_free() -> None:
    node = Node.build("h", load_accelerator(ACC / "h100x8.toml"), HamiCoreMode(gpu_scheduler_policy="binpack"))
    a = node.allocate(VGpuRequest(memory_bytes=20 * GiB, sm_fraction=0.5), "w1")
    b = node.allocate(VGpuRequest(memory_bytes=20 * GiB, sm_fraction=0.5), "w2")
    assert a is not None and b is not None and a.card_index == b.card_index  # binpack
    assert a.isolation == "time-sliced" and a.core_limit == 0.5
    assert node.cotenants(a.vgpu_id) == [b]
    assert node.free("w1") == 1 and node.free_capacity(a.card_index)[0] == 60 * GiB


def test_contention_model() -> None:
    share = ContentionModel("time-sliced", core_limit=0.5, work_conserving=True, switch_overhead=0.0)
    assert share.throughput_fraction() == 1.0
    assert share.throughput_fraction([0.5]) == 0.5
    assert share.throughput_fraction([1.0, 1.0]) == pytest.approx(0.5 / 2.5)  # overcommitted
    assert ContentionModel("time-sliced", 0.3, work_conserving=False).throughput_fraction() == 0.3
    assert ContentionModel("mig").slowdown(5) == 1.0


def test_cambricon_modes() -> None:
    mlu = load_accelerator(ACC / "mlu370x8.toml")
    env = Node.build("m", mlu, CambriconEnvShareMode(virtualization_num=3))
    assert len(env.vgpus()) == 12 and env.max_split(0) == 3
    smlu = Node.build("m", mlu, CambriconDynamicSmluMode(min_dsmlu_unit_mib=256))
    v = smlu.allocate(VGpuRequest(memory_bytes=1000 * MIB, sm_fraction=0.25), "w")
    assert v is not None and v.memory_bytes == 4 * 256 * MIB and v.core_limit == 0.25
    assert smlu.max_split(0) == min(48 * 1024 // 256, 100)


def test_fractional_node_allocation() -> None:
    node = load_node(ACC / "a100-fractional.toml")
    v = node.allocate(VGpuRequest(memory_bytes=5 * GiB), "w")
    assert v is not None and v.memory_bytes == 5 * GiB and v.core_limit == pytest.approx(50 / 108)


def test_mode_switch_state_machine() -> None:
    node = load_node(ACC / "h100x8.toml")
    assert node.allocate(VGpuRequest(), "w1") is not None
    with pytest.raises(VirtualizationError):
        node.request_switch(CambriconEnvShareMode(), now_ms=0.0)
    assert node.status == "ready"  # refused switch leaves state alone
    drain = node.request_switch(MigMode(profiles=("7g.80gb",)), now_ms=100.0, switch_ms=5000.0)
    assert drain == ["w1"] and node.status == "draining"
    assert node.allocate(VGpuRequest(), "w2") is None
    node.free("w1", now_ms=200.0)
    assert node.status == "switching" and node.next_timer_ms() == 5200.0 and node.card_mode(0) == "switching"
    node.on_timer(5000.0)
    assert node.status == "switching"
    node.on_timer(5200.0)
    assert node.status == "ready" and node.mode.mode == "mig" and node.card_mode(3) == "mig"
    assert node.request_switch(HamiCoreMode(), now_ms=6000.0, switch_ms=10.0, fail=True) == []
    node.on_timer(6010.0)
    assert node.status == "switch-failed" and node.allocate(VGpuRequest(), "w3") is None
