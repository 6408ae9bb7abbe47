"""`topology: true`: KV transfers over NVLink inside a node and the NIC between nodes, shared fairly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.scenario_helpers import run_report

BYTES_PER_TOKEN = 131072
NVLINK_EACH_WAY = 900.0 / 2  # H100 SXM NVLink4 aggregate 900 GB/s (configs/gpus.toml), one direction
NIC = 50.0  # the default NIC: 400 Gb/s NDR InfiniBand


def _scenario(decode_first: bool, decode_placement: str, decodes: int = 1, requests: int = 1,
              rails: str = "per_gpu") -> dict[str, Any]:
    pre = {"name": "pre", "role": "prefill", "replicas": 1, "placement": "spread",
           "engine": {"kv_transfer_bandwidth": 64.0, "kv_bytes_per_token": BYTES_PER_TOKEN}}
    dec = {"name": "dec", "role": "decode", "replicas": decodes, "placement": decode_placement, "engine": {}}
    return {"name": "topo", "seed": 1,
            "cluster": {"nodes": [{"name": "h", "count": 2, "accelerator": "configs/accelerator/h100x8.toml"}]},
            "deployments": [dec, pre] if decode_first else [pre, dec],
            "router": {"mode": "round_robin"}, "event_plane": {"latency_ms": 0.0},
            "topology": {"nic_rails": rails},
            "workload": {"synthetic": {"input_tokens": 1024, "output_tokens": 4, "request_count": requests,
                                       "arrival_interval_ms": 0.0 if requests > 1 else 1000.0, "block_size": 64}}}


def _nodes(report: dict[str, Any]) -> dict[str, list[str]]:
    return {w["name"]: w["nodes"] for w in report["workers"]}


def test_1p1d_one_node_vs_two_nodes_differ_by_the_link_times(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = run_report(tmp_path / "a", _scenario(False, "binpack"))
    two = run_report(tmp_path / "b", _scenario(False, "spread"))
    assert _nodes(one)["pre-0"] == _nodes(one)["dec-0"] == ["h-0"]
    assert _nodes(two)["pre-0"] != _nodes(two)["dec-0"]
    nbytes = 1024 * BYTES_PER_TOKEN
    t_nvlink = nbytes / (NVLINK_EACH_WAY * 1e9) * 1000
    t_nic = nbytes / (NIC * 1e9) * 1000
    assert one["_records"][0].handoff.transfer_ms == pytest.approx(t_nvlink, rel=1e-9)
    assert two["_records"][0].handoff.transfer_ms == pytest.approx(t_nic, rel=1e-9)
    ttft_gap = two["summary"]["mean_ttft_ms"] - one["summary"]["mean_ttft_ms"]
    assert ttft_gap == pytest.approx(t_nic - t_nvlink, abs=1e-9)
    assert one["kv_transfer"]["busiest_link"].startswith("nvlink-out:h-0")
    assert two["kv_transfer"]["busiest_link"].startswith("nic-")


@pytest.mark.parametrize("rails", ["per_gpu", "per_node"])
def test_a_burst_of_prompts_shares_the_nic(tmp_path: Path, rails: str) -> None:
    """Four prompts prefilled in one pass hand off at once to four decode GPUs on the other node: the
    source's NIC is shared four ways, so each transfer takes four times as long as a lone one."""
    report = run_report(tmp_path, _scenario(True, "binpack", decodes=4, requests=4, rails=rails))
    nodes = _nodes(report)
    assert all(nodes[f"dec-{i}"] == ["h-0"] for i in range(4)) and nodes["pre-0"] == ["h-1"]
    alone = 1024 * BYTES_PER_TOKEN / (NIC * 1e9) * 1000
    records = report["_records"]
    held = {r.handoff.source_held_ms for r in records}
    assert len(held) == 1  # one prefill pass, four handoffs at one instant
    for r in records:
        assert r.handoff.transfer_ms == pytest.approx(4 * alone, rel=1e-9)
    kv = report["kv_transfer"]
    assert kv["mean_transfer_ms"] == pytest.approx(4 * alone) and kv["p99_transfer_ms"] == pytest.approx(4 * alone)
    assert kv["busiest_link"].startswith("nic-out:h-1")
    duration = report["summary"]["duration_ms"]
    assert kv["busiest_link_utilization"] == pytest.approx(4 * alone / duration, rel=1e-6)


def test_without_topology_the_flat_bandwidth_of_the_reference_applies(tmp_path: Path) -> None:
    sc = _scenario(False, "spread")
    sc.pop("topology")
    report = run_report(tmp_path, sc)
    assert report["_records"][0].handoff.transfer_ms == pytest.approx(1024 * BYTES_PER_TOKEN / 64e9 * 1000)
    assert "topology" not in report["kv_transfer"]


def test_a_transfer_speeds_up_when_the_one_sharing_its_link_ends() -> None:
    """Two transfers share one NIC: 1 GB and 3 GB at 50 GB/s. Together each gets 25 GB/s until the
    small one ends at 40 ms; the large one then has the link alone: 2 GB left at 50 GB/s = +40 ms."""
    from cluster.control.kv_links import KvLinks, Place
    from cluster.sim.clock import EventLoop

    loop = EventLoop()
    links = KvLinks(loop, 50.0, "per_node")
    done: dict[int, float] = {}
    a, b = Place("a", 0, 900.0), Place("b", 0, 900.0)
    links.start(0.0, 1, a, b, 10**9, lambda t, ms: done.__setitem__(1, ms))
    links.start(0.0, 2, a, b, 3 * 10**9, lambda t, ms: done.__setitem__(2, ms))
    loop.run()
    assert done[1] == pytest.approx(40.0) and done[2] == pytest.approx(80.0)
    s = links.summary(80.0)
    assert s["busiest_link_utilization"] == pytest.approx(1.0)  # the NIC was busy all the time
    assert links.path(Place("a", 0, 900.0), Place("a", 0, 900.0)) == ((), ())  # same GPU: not modelled
