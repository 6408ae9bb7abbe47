"""Placing workers on nodes: TP on distinct cards, DP over nodes, binpack vs spread, all-or-nothing, free."""

from __future__ import annotations

from cluster.hardware.accelerator import load_accelerator
from cluster.hardware.catalog import CONFIG_DIR
from cluster.hardware.node import Node, VGpuRequest, load_node
from cluster.hardware.placement import Placer
from cluster.hardware.virtualization import MigMode

ACC = CONFIG_DIR / "accelerator"
GiB = 1024**3


def _nodes() -> list[Node]:
    acc = load_accelerator(ACC / "h100x8.toml")
    return [Node.build("a", acc), Node.build("b", acc)]


def test_tp_on_distinct_cards_and_free() -> None:
    nodes = _nodes()
    p = Placer(nodes)
    wp = p.place("w", VGpuRequest(memory_bytes=40 * GiB), tp_size=4, dp_size=1)
    assert wp is not None and len({v.card_index for v in wp.ranks[0]}) == 4
    assert len({v.node for v in wp.ranks[0]}) == 1
    assert p.free("w") == 4 and all(not n.workers() for n in nodes)


def test_binpack_vs_spread() -> None:
    p = Placer(_nodes())
    first = p.place("w1", VGpuRequest(), policy="binpack")
    second = p.place("w2", VGpuRequest(), policy="binpack")
    assert first is not None and second is not None
    assert first.ranks[0][0].node == second.ranks[0][0].node
    third = p.place("w3", VGpuRequest(), policy="spread")
    assert third is not None and third.ranks[0][0].node != first.ranks[0][0].node


def test_all_or_nothing() -> None:
    nodes = _nodes()
    p = Placer(nodes)
    assert p.place("big", VGpuRequest(), tp_size=8, dp_size=3) is None
    assert all(not n.workers() for n in nodes)
    assert p.place("ok", VGpuRequest(), tp_size=8, dp_size=2) is not None
    assert p.place("more", VGpuRequest()) is None


def test_by_profile_and_memory_minimum() -> None:
    acc = load_accelerator(ACC / "h100x8.toml")
    node = Node.build("m", acc, MigMode(profiles=("3g.40gb", "2g.20gb", "1g.10gb", "1g.10gb")))
    p = Placer([node])
    by_profile = p.place("w1", VGpuRequest(profile="2g.20gb"))
    assert by_profile is not None and by_profile.ranks[0][0].profile == "2g.20gb"
    by_mem = p.place("w2", VGpuRequest(memory_bytes=15 * GiB))  # smallest slice that holds 15 GiB
    assert by_mem is not None and by_mem.ranks[0][0].profile == "2g.20gb"
    assert p.place("w3", VGpuRequest(memory_bytes=50 * GiB)) is None


def test_mig_file_node_places_slices() -> None:
    p = Placer([load_node(ACC / "a100-mig.toml")])
    got = [p.place(f"w{i}", VGpuRequest(profile="1g.5gb")) for i in range(10)]
    assert sum(g is not None for g in got) == 9
