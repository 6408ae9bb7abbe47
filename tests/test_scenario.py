"""Scenario files: bad input fails before anything runs, in one line naming the file and the field;
good input builds a deterministic world (placement, KV sizing, co-tenant groups, faults)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cluster.runtime.ray import RuntimeSetupError, assign_shards, run_ray
from cluster.scenario.load import load_scenario
from cluster.scenario.spec import ScenarioError
from cluster.scenario.world import build_world
from tests.scenario_helpers import BASE, scenario, world_of, write


def _dep(**fields: Any) -> list[dict[str, Any]]:
    return [{**BASE["deployments"][0], **fields}]


BAD: list[tuple[dict[str, Any], str]] = [
    (scenario(colour="blue"), "colour: unknown key"),
    (scenario(deployments=_dep(replicas=0)), "deployments.0.replicas"),
    (scenario(deployments=_dep(role="prefill")), "disaggregated"),
    (scenario(deployments=_dep(engine={"block_size": 16, "num_gpu_blockz": 5})), "deployments.0.engine.num_gpu_blockz"),
    (scenario(deployments=_dep(timing={"model": "roofline"}), model=None), "roofline timing needs"),
    (scenario(deployments=_dep(timing={"model": "magic"})), "timing.model: 'magic' is not a timing model"),
    (scenario(router={"mode": "kv", "overlap_weight": 1}), "overlap_weight"),
    (scenario(router={"mode": "fastest"}), "unknown router mode"),
    (scenario(planner={"enabled": True}), "planner: give its settings"),
    (scenario(planner={"type": "scripted", "steps": []}), "planner.scripted.steps"),
    (scenario(planner={"ttft_ms": -1}), "planner.sla.ttft_ms"),
    (scenario(event_plane={"loss": 1.5}), "event_plane.loss"),
    (scenario(event_plane={"latency": {"dist": "zipf"}}), "event_plane.latency"),
    (scenario(faults=[{"at_s": 1, "kill_node": "nope"}]), "faults.0.kill_node: no node named 'nope'"),
    (scenario(faults=[{"at_s": 1, "partition": {"nodes": ["n-0", "x"], "duration_s": 1}}]), "faults.0.partition.nodes"),
    (scenario(workload={"trace": "a.jsonl", "synthetic": BASE["workload"]["synthetic"]}), "trace or synthetic"),
    (scenario(cluster={"nodes": [{"name": "n", "count": 2, "accelerator": "x.toml"}, {"name": "n-1",
                                                                                      "accelerator": "x.toml"}]}),
     "node name 'n-1' is used twice"),
]


@pytest.mark.parametrize("sc, fragment", BAD)
def test_bad_scenarios_fail_at_load_naming_file_and_field(tmp_path: Path, sc: dict[str, Any], fragment: str) -> None:
    path = write(tmp_path, sc)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(str(path)) and fragment in message and "\n" not in message


BUILD_BAD: list[tuple[dict[str, Any], str]] = [
    (scenario(cluster={"nodes": [{"name": "n", "accelerator": "configs/accelerator/nope.toml"}]}),
     "cluster.nodes.0.accelerator: file not found"),
    (scenario(cluster={"nodes": [{"name": "n", "accelerator": "configs/accelerator/h100x8.toml",
                                  "virtualization": {"mode": "mig", "profiles": ["9g.99gb"]}}]}),
     "cluster.nodes.0.virtualization"),
    (scenario(cluster={"nodes": [{"name": "n", "accelerator": "configs/accelerator/mlu370x8.toml",
                                  "virtualization": {"mode": "mig"}}]}), "mode 'mig' does not exist"),
    (scenario(deployments=_dep(replicas=100)), "cannot place worker agg-64"),
    (scenario(model="gpt-17"), "unknown model 'gpt-17'"),
    (scenario(deployments=_dep(vgpu={"memory_gib": 2, "sm_fraction": 0.1}), model="llama-3.1-8b",
              cluster={"nodes": [{"name": "n", "accelerator": "configs/accelerator/h100x8.toml",
                                  "virtualization": {"mode": "hami-core"}}]}),
     "deployments.0: llama-3.1-8b on n/0/hami1 (2.0 GiB): primary device cannot hold non-layer weights"),
    (scenario(workload={"trace": "missing.jsonl"}), "workload.trace: file not found"),
    (scenario(workload={"synthetic": {**BASE["workload"]["synthetic"], "input_tokens": 20000}}),
     "prompt larger than the KV cache"),
]


@pytest.mark.parametrize("sc, fragment", BUILD_BAD)
def test_impossible_clusters_fail_before_the_run(tmp_path: Path, sc: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ScenarioError) as info:
        world_of(tmp_path, sc)
    message = str(info.value)
    assert fragment in message and "sc.yaml" in message and "\n" not in message


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ncluster:\n  nodes: [\n")
    with pytest.raises(ScenarioError, match=r"broken.yaml:\d+: not valid YAML"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match="scenario file not found"):
        load_scenario(tmp_path / "nothing.yaml")


def test_world_places_workers_sizes_kv_and_groups_cotenants(tmp_path: Path) -> None:
    world = world_of(tmp_path, scenario())
    assert [w.name for w in world.workers] == [f"agg-{i}" for i in range(8)]
    # spread: two workers per node, round robin over the four nodes
    assert sorted(world.node_of_rank) == sorted(["n-0", "n-1", "n-2", "n-3"] * 2)
    assert all(v[0].profile == "3g.40gb" for w in world.workers for v in w.vgpus)
    assert {s.engine.num_gpu_blocks for s in world.setup.ranks} == {600}  # given explicitly: kept
    derived = world_of(tmp_path, scenario(deployments=_dep(engine={"block_size": 16})))
    blocks = {s.engine.num_gpu_blocks for s in derived.setup.ranks}
    assert len(blocks) == 1 and blocks.pop() > 20_000  # qwen3-0.6b: ~350k tokens of KV in 40 GB
    assert all(s.cotenant_group is None for s in world.setup.ranks)  # MIG slices are isolated
    hami = scenario(cluster={"nodes": [{"name": "h", "accelerator": "configs/accelerator/h100x8.toml",
                                        "virtualization": {"mode": "hami-core", "device_split_count": 4,
                                                           "gpu_scheduler_policy": "binpack"}}]},
                    deployments=_dep(replicas=3, vgpu={"memory_gib": 12, "sm_fraction": 0.3}, placement="binpack"))
    shared = world_of(tmp_path, hami)
    groups = {s.cotenant_group for s in shared.setup.ranks}
    assert groups == {0} and {s.core_limit for s in shared.setup.ranks} == {0.3}
    again = world_of(tmp_path, scenario())
    assert [w.vgpus for w in again.workers] == [w.vgpus for w in world.workers]


def test_faults_become_kills_and_partitions(tmp_path: Path) -> None:
    sc = scenario(faults=[{"at_s": 2, "kill_node": "n-1"}, {"at_s": 1, "kill_worker": "agg-0"},
                          {"at_s": 3, "partition": {"nodes": ["n-2"], "duration_s": 0.5}}])
    world = world_of(tmp_path, sc)
    kills = world.setup.kills
    node1 = [g for g, n in enumerate(world.node_of_rank) if n == "n-1"]
    assert kills[0].t_ms == 2000.0 and sorted(kills[0].gidxs) == node1
    assert kills[1].t_ms == 1000.0 and kills[1].gidxs == (0,)
    part = world.setup.partitions[0]
    assert (part.start_ms, part.end_ms) == (3000.0, 3500.0)
    assert part.nodes == frozenset({"n-2"}) and part.isolates(1, "n-2") and not part.isolates(1, "n-1")


def test_relative_paths_resolve_next_to_the_scenario_then_cwd_then_source_tree(tmp_path: Path) -> None:
    trace = tmp_path / "mine.jsonl"
    trace.write_text('{"timestamp": 0, "input_length": 100, "output_length": 5, "hash_ids": [1]}\n')
    world = world_of(tmp_path, scenario(workload={"trace": "mine.jsonl"}))
    assert world.setup.workload.num_requests == 1
    sample = world_of(tmp_path, scenario(workload={}, deployments=_dep(engine={"block_size": 16})))
    assert sample.setup.workload.num_requests == 500  # the embedded sample


def test_shards_hold_whole_nodes_balanced_by_ranks() -> None:
    nodes = ["a", "a", "b", "c", "c", "c", "d"]
    # c (3 ranks) -> shard 0, a (2) -> 1, b (1) -> 1, d (1) -> the lighter, ties to the lower: 0
    assert assign_shards(nodes, 2) == [[3, 4, 5, 6], [0, 1, 2]]
    assert sorted(g for s in assign_shards(nodes, 4) for g in s) == list(range(7))
    with pytest.raises(RuntimeSetupError, match="only 4 node"):
        assign_shards(nodes, 5)


def test_ray_runtime_refuses_a_zero_latency_plane(tmp_path: Path) -> None:
    world = world_of(tmp_path, scenario(event_plane={"latency_ms": 0.0}))
    with pytest.raises(RuntimeSetupError, match="latency > 0"):
        run_ray(world.setup, world.node_of_rank, 2)


def test_shipped_scenarios_load_and_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # from any directory: paths resolve next to the scenario, then the source tree
    paths = sorted((Path(__file__).resolve().parent.parent / "configs" / "scenarios").glob("*.yaml"))
    assert len(paths) >= 3
    for path in paths:
        loaded = load_scenario(path)
        if loaded.scenario.name.startswith("scale"):
            continue  # 1,000 workers: built by the benchmark
        world = build_world(loaded)
        assert world.setup.ranks and world.workers
