"""From a scenario to a runnable simulation: nodes, placement, per-rank timing, faults.

`build_world(loaded)`:
1. builds every node from its accelerator file (and virtualization override);
2. places each deployment's workers (`cluster.hardware.placement.Placer`), every DP rank on
   `tp_size` vGPUs of one node, in deployment order, worker `<deployment>-<i>`;
3. gives each rank its timing model and KV block count: roofline timing from the model
   architecture and the vGPU (`cluster.hardware.roofline`), or the engine's own timing model; the
   KV blocks come from the device map of the model on the vGPU unless the engine sets
   `num_gpu_blocks`. Time-sliced vGPUs on one physical card become a co-tenant group;
4. turns faults into rank kills and event-plane partitions;
5. loads the workload and creates the router.
Every failure is a `ScenarioError` naming the scenario file and the field.

The result is deterministic: same scenario, same world (names, ids, placement, seeds).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from actors.engine.config import EngineConfig
from actors.engine.records import FailureReason
from cluster.hardware.accelerator import AcceleratorFile, read_toml
from cluster.hardware.catalog import default_catalog, summarize_validation_error
from cluster.hardware.devicemap import DeviceMapError, auto_device_map, num_gpu_blocks
from cluster.hardware.models import ModelArch, get_model
from cluster.hardware.node import Node, VGpuRequest
from cluster.hardware.placement import Placer
from cluster.hardware.roofline import RooflineTiming, timing_and_blocks_for
from cluster.hardware.virtualization import VGpu, VirtualizationConfig, VirtualizationError
from cluster.nodes.host import RankKill, RankSpec
from cluster.plane.links import Partition
from cluster.plane.messages import rank_addr
from cluster.runtime.setup import SimulationSetup
from cluster.scenario.load import LoadedScenario
from cluster.scenario.spec import (
    DeploymentSpec,
    FixedTimingSpec,
    InterpolatedTimingSpec,
    KillNodeFault,
    KillWorkerFault,
    PartitionFault,
    PolynomialTimingSpec,
    RooflineTimingSpec,
    ScenarioError,
)
from cluster.workload.model import Workload, WorkloadError
from cluster.workload.mooncake import load_mooncake
from cluster.workload.synthetic import synthesize
from router.router import KvRouter

GIB = 1024**3
_VIRT: TypeAdapter[VirtualizationConfig] = TypeAdapter(VirtualizationConfig)
SAMPLE_TRACE = "mooncake_sample.jsonl"


def derive_seed(seed: int, name: str) -> int:
    """A component's seed: stable under adding or removing other components."""
    digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@dataclass(frozen=True)
class WorkerInfo:
    """One placed engine worker."""

    worker_id: int
    name: str
    deployment: str
    gidxs: tuple[int, ...]
    vgpus: tuple[tuple[VGpu, ...], ...]
    """Per DP rank, its tp_size vGPUs."""
    engine: EngineConfig


@dataclass
class World:
    """A scenario, built. `setup` is what the runtimes run."""

    loaded: LoadedScenario
    nodes: list[Node]
    workers: list[WorkerInfo]
    setup: SimulationSetup
    node_of_rank: list[str]
    """Global rank index -> the node its first vGPU is on (the shard unit)."""
    workload_description: str
    faults: list[dict[str, object]] = field(default_factory=list)


def _fail(loaded: LoadedScenario, where: str, message: str) -> ScenarioError:
    return ScenarioError(f"{loaded.path}: {where}: {message}")


def _build_nodes(loaded: LoadedScenario) -> list[Node]:
    nodes: list[Node] = []
    for k, group in enumerate(loaded.scenario.cluster.nodes):
        where = f"cluster.nodes.{k}"
        path = loaded.resolve(group.accelerator, f"{where}.accelerator")
        try:
            raw = read_toml(path)
            file_virt = raw.pop("virtualization", None)
            raw.pop("node", None)
            acc = AcceleratorFile.model_validate(raw)
            cfg = group.virtualization
            if cfg is None and file_virt is not None:
                cfg = _VIRT.validate_python(file_virt)
        except ValidationError as exc:
            raise _fail(loaded, f"{where}.accelerator ({path})", summarize_validation_error(exc)) from None
        except ValueError as exc:
            raise _fail(loaded, f"{where}.accelerator", str(exc)) from None
        for name in group.node_names():
            try:
                nodes.append(Node.build(name, acc, cfg))
            except (ValueError, VirtualizationError) as exc:
                raise _fail(loaded, f"{where}.virtualization", str(exc)) from None
    return nodes


def _kv_blocks(model: ModelArch, vgpu: VGpu, engine: EngineConfig, tp: int) -> int:
    cpu = default_catalog().cpu
    dmap = auto_device_map(model, [vgpu.memory_bytes], cpu.memory_bytes, engine.max_model_len or 4096, 1, tp)
    return num_gpu_blocks(dmap, model, engine.block_size_tokens, cpu.memory_bytes)


def _engine_with_timing(loaded: LoadedScenario, dep: DeploymentSpec, where: str) -> EngineConfig:
    t = dep.timing
    if t is None or isinstance(t, RooflineTimingSpec):
        return dep.engine
    timing: dict[str, object]
    if isinstance(t, PolynomialTimingSpec):
        timing = {"type": "polynomial"}
    elif isinstance(t, FixedTimingSpec):
        timing = {"type": "fixed", "prefill_ms": t.prefill_ms, "decode_ms": t.decode_ms}
    else:
        assert isinstance(t, InterpolatedTimingSpec)
        timing = {"type": "interpolated", "path": str(loaded.resolve(t.path, f"{where}.timing.path"))}
    return EngineConfig.model_validate({**dep.engine.model_dump(exclude_unset=True), "timing_model": timing})


def _place(loaded: LoadedScenario, nodes: list[Node]) -> tuple[list[WorkerInfo], list[RankSpec], list[str]]:
    sc = loaded.scenario
    model = get_model(sc.model) if sc.model is not None else None
    placer = Placer(nodes)
    workers: list[WorkerInfo] = []
    ranks: list[RankSpec] = []
    node_of_rank: list[str] = []
    groups: dict[tuple[str, int], int] = {}
    for k, dep in enumerate(sc.deployments):
        where = f"deployments.{k}"
        base_engine = _engine_with_timing(loaded, dep, where)
        req = VGpuRequest(profile=dep.vgpu.profile, memory_bytes=int(dep.vgpu.memory_gib * GIB),
                          sm_fraction=dep.vgpu.sm_fraction)
        for i in range(dep.replicas):
            name = f"{dep.name}-{i}"
            placed = placer.place(name, req, tp_size=dep.tp_size, dp_size=dep.dp_size, policy=dep.placement)
            if placed is None:
                want = dep.vgpu.profile or (f"{dep.vgpu.memory_gib:g} GiB, {dep.vgpu.sm_fraction:g} SM"
                                            if dep.vgpu.memory_gib or dep.vgpu.sm_fraction else "any vGPU")
                raise _fail(loaded, f"{where}.vgpu",
                            f"cannot place worker {name}: no node has {dep.dp_size * dep.tp_size} free vGPU(s) "
                            f"matching {want} (placed {i} of {dep.replicas} replicas)")
            timings: list[RooflineTiming | None] = []
            blocks: list[int] = []
            for vgpus in placed.ranks:
                vg = vgpus[0]
                try:
                    if isinstance(dep.timing, RooflineTimingSpec):
                        assert model is not None
                        tm, nb = timing_and_blocks_for(model, vg, base_engine.block_size_tokens,
                                                       max_seq_len=base_engine.max_model_len or 4096,
                                                       tp_size=dep.tp_size)
                        timings.append(tm)
                        blocks.append(nb)
                    else:
                        timings.append(None)
                        if model is not None:
                            blocks.append(_kv_blocks(model, vg, base_engine, dep.tp_size))
                except DeviceMapError as exc:
                    raise _fail(loaded, where, f"{sc.model} on {vg.vgpu_id} ({vg.memory_bytes / GIB:.1f} GiB): "
                                f"{exc}") from None
            nb_min = min(blocks) if blocks else None
            if nb_min is not None and nb_min < 1 and "num_gpu_blocks" not in base_engine.model_fields_set:
                raise _fail(loaded, where, f"{sc.model} leaves no room for KV cache on {placed.ranks[0][0].vgpu_id}")
            engine = dep.engine_config(nb_min).model_copy(
                update={"timing_model": base_engine.timing_model, "planner_profile_data": base_engine.planner_profile_data})
            worker_id = len(workers)
            gidxs = []
            for d, vgpus in enumerate(placed.ranks):
                vg = vgpus[0]
                gid, limit = None, 1.0
                timing = timings[d]
                if timing is not None and vg.isolation == "time-sliced":
                    gid = groups.setdefault((vg.node, vg.card_index), len(groups))
                    limit = vg.core_limit
                g = len(ranks)
                ranks.append(RankSpec(g, worker_id, d, engine, timing, name, vg.node, gid, limit))
                node_of_rank.append(vg.node)
                gidxs.append(g)
            workers.append(WorkerInfo(worker_id, name, dep.name, tuple(gidxs), placed.ranks, engine))
    return workers, ranks, node_of_rank


def _workload(loaded: LoadedScenario) -> tuple[Workload, str]:
    sc = loaded.scenario
    spec = sc.workload
    try:
        if spec.synthetic is not None:
            wl = synthesize(spec.synthetic)
            desc = f"synthetic: {wl.num_requests} requests"
        else:
            if spec.trace is not None:
                path = loaded.resolve(spec.trace, "workload.trace")
            else:
                path = Path(str(resources.files("cluster").joinpath("data", SAMPLE_TRACE)))
            wl = load_mooncake(path, trace_block_size=spec.trace_block_size)
            desc = f"trace: {path.name}"
    except WorkloadError as exc:
        raise ScenarioError(f"{loaded.path}: workload: {exc}") from None
    if spec.max_sessions is not None:
        wl = Workload(wl.sessions[:spec.max_sessions], wl.trace_block_size)
    if spec.arrival_speedup_ratio != 1.0:
        wl = wl.scaled(spec.arrival_speedup_ratio)
    return wl, f"{desc}, {wl.num_requests} requests"


def _faults(loaded: LoadedScenario, workers: list[WorkerInfo], node_of_rank: list[str],
            ) -> tuple[tuple[RankKill, ...], tuple[Partition, ...], list[dict[str, object]]]:
    kills: list[RankKill] = []
    partitions: list[Partition] = []
    listed: list[dict[str, object]] = []
    for k, f in enumerate(loaded.scenario.faults):
        t = f.at_s * 1000.0
        cause = f"faults.{k}"
        if isinstance(f, KillWorkerFault):
            ws = [w for w in workers if w.name == f.kill_worker]
            kills.append(RankKill(t, tuple(g for w in ws for g in w.gidxs), FailureReason.WORKER_KILLED,
                                  f"worker {f.kill_worker} killed", cause))
            listed.append({"at_ms": t, "kind": "kill_worker", "target": f.kill_worker,
                           "workers": [w.name for w in ws], "id": cause})
        elif isinstance(f, KillNodeFault):
            # A worker with any rank on the node dies whole: its other ranks cannot serve alone.
            ws = [w for w in workers if any(node_of_rank[g] == f.kill_node for g in w.gidxs)]
            kills.append(RankKill(t, tuple(g for w in ws for g in w.gidxs), FailureReason.WORKER_KILLED,
                                  f"node {f.kill_node} killed", cause))
            listed.append({"at_ms": t, "kind": "kill_node", "target": f.kill_node, "workers": [w.name for w in ws],
                           "id": cause})
        else:
            assert isinstance(f, PartitionFault)
            names = set(f.partition.nodes)
            isolated = frozenset(rank_addr(g) for g, n in enumerate(node_of_rank) if n in names)
            partitions.append(Partition(t, t + f.partition.duration_s * 1000.0, isolated))
            listed.append({"at_ms": t, "kind": "partition", "target": sorted(names),
                           "until_ms": t + f.partition.duration_s * 1000.0, "id": cause})
    return tuple(kills), tuple(partitions), listed


def build_world(loaded: LoadedScenario, macro_step: bool = True, collect_kv_events: bool = False,
                mirror_kv: bool = False) -> World:
    """Build everything a run needs from a validated scenario (see the module docstring).

    `mirror_kv`: ranks publish every KV batch, with token ids, for an outside observer.
    """
    sc = loaded.scenario
    if sc.model is not None:
        try:
            get_model(sc.model)
        except (KeyError, ValueError) as exc:
            raise _fail(loaded, "model", str(exc).strip('"')) from None
    nodes = _build_nodes(loaded)
    workers, ranks, node_of_rank = _place(loaded, nodes)
    if mirror_kv:  # wire formats carry the blocks' tokens (vLLM BlockStored.token_ids)
        ranks = [replace(r, engine=r.engine.model_copy(update={"emit_kv_token_ids": True})) for r in ranks]
    workload, description = _workload(loaded)
    block_size = ranks[0].engine.block_size_tokens
    budget = ranks[0].engine.max_num_batched_tokens
    router_config = sc.router.router_config(budget)
    kv_router = KvRouter(router_config, block_size=block_size, seed=derive_seed(sc.seed, "router"))
    kills, partitions, listed = _faults(loaded, workers, node_of_rank)
    setup = SimulationSetup(workload, ranks, seed=sc.seed, plane=sc.event_plane,
                            concurrency=sc.workload.concurrency, kv_router=kv_router, macro_step=macro_step,
                            collect_kv_events=collect_kv_events, kills=kills, partitions=partitions,
                            mirror_kv=mirror_kv)
    _check_prompts_fit(loaded, workload, ranks)
    return World(loaded, nodes, workers, setup, node_of_rank, description, listed)


def _check_prompts_fit(loaded: LoadedScenario, workload: Workload, ranks: list[RankSpec]) -> None:
    """Refuse, before running, a prompt no rank's KV cache can ever hold."""
    largest = max((r.engine.num_gpu_blocks for r in ranks), default=0)
    bs = ranks[0].engine.block_size_tokens
    for session in workload.sessions:
        for k, turn in enumerate(session.turns):
            need = -(-turn.input_length // bs)
            if need > largest:
                raise ScenarioError(
                    f"{loaded.path}: workload: prompt larger than every KV cache: session {session.session_id} "
                    f"turn {k} has {turn.input_length} input tokens = {need} blocks of {bs}, the largest rank "
                    f"has {largest} blocks")
