"""From a scenario to a runnable simulation: the one world builder, for scenario files and replays.

`build_world(loaded)`:
1. builds every node from its accelerator file (and virtualization override), or none on
   abstract GPUs;
2. places each deployment's workers in deployment order, worker `<deployment>-<i>`, and
   describes their ranks (`cluster.scenario.deploy.WorkerBuilder`: vGPUs, timing, KV blocks,
   co-tenant groups);
3. loads the workload (`cluster.workload.load`) and refuses a prompt no rank could ever hold;
4. turns faults into rank kills, partitions, slowdowns and fleet actions (`FAULT_KINDS`, by kind);
5. creates the router, seeded by the one seed scheme (`cluster.sim.seeds`).
Every failure is a `ScenarioError` naming the scenario file (if any) and the field.

The result is deterministic: same scenario, same world (names, ids, placement, seeds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TYPE_CHECKING

from actors.engine.records import FailureReason
from cluster.control.fleet import FaultPlan, FleetAction
from cluster.control.workers import WorkerInfo
from cluster.control.planner_host import planner_context
from cluster.plane.links import Partition
from cluster.plane.ranks import RankSlowdown, RankSpec, SlowdownPlan
from cluster.runtime.setup import SimulationSetup
from cluster.scenario.deploy import WorkerBuilder
from cluster.scenario.load import LoadedScenario
from cluster.scenario.spec import AddWorkersEvent, Scenario
from cluster.scenario.faults import (
    DegradeLinkFault,
    DrainWorkerFault,
    Fault,
    KillNodeFault,
    KillWorkerFault,
    PartitionFault,
    RestartWorkerFault,
    SlowGpuFault,
    SwitchModeFault,
)
from cluster.sim.seeds import component_seed
from cluster.workload.load import LoadedWorkload, load_workload
from cluster.workload.model import Workload, WorkloadError
from router.router import KvRouter

if TYPE_CHECKING:  # the hardware rooms load only when a cluster needs them
    from cluster.hardware.node import Node

__all__ = ["World", "WorkerInfo", "build_world", "check_prompts_fit"]


@dataclass
class World:
    """A scenario, built. `setup` is what the runtimes run."""

    loaded: LoadedScenario
    nodes: list[Node]
    workers: list[WorkerInfo]
    setup: SimulationSetup
    node_of_rank: list[str]
    """Global rank index -> the node its first vGPU is on (the shard unit)."""
    workload: LoadedWorkload
    faults: list[dict[str, object]] = field(default_factory=list)

    @property
    def workload_description(self) -> str:
        return self.workload.description


def _build_nodes(loaded: LoadedScenario) -> list[Node]:
    nodes: list[Node] = []
    cluster = loaded.scenario.cluster
    if cluster is None:
        return nodes
    from pydantic import TypeAdapter, ValidationError

    from cluster.hardware.accelerator import AcceleratorFile, read_toml
    from cluster.hardware.catalog import summarize_validation_error
    from cluster.hardware.node import Node
    from cluster.hardware.virtualization import VirtualizationConfig, VirtualizationError

    virt: TypeAdapter[VirtualizationConfig] = TypeAdapter(VirtualizationConfig)
    for k, group in enumerate(cluster.nodes):
        where = f"cluster.nodes.{k}"
        path = loaded.resolve(group.accelerator, f"{where}.accelerator")
        try:
            raw = read_toml(path)
            file_virt = raw.pop("virtualization", None)
            raw.pop("node", None)
            acc = AcceleratorFile.model_validate(raw)
            cfg = group.virtualization
            if cfg is None and file_virt is not None:
                cfg = virt.validate_python(file_virt)
        except ValidationError as exc:
            raise loaded.error(f"{where}.accelerator ({path})", summarize_validation_error(exc)) from None
        except ValueError as exc:
            raise loaded.error(f"{where}.accelerator", str(exc)) from None
        for name in group.node_names():
            try:
                nodes.append(Node.build(name, acc, cfg))
            except (ValueError, VirtualizationError) as exc:
                raise loaded.error(f"{where}.virtualization", str(exc)) from None
    return nodes


def _place(loaded: LoadedScenario, builder: WorkerBuilder) -> list[WorkerInfo]:
    workers: list[WorkerInfo] = []
    gidx = 0
    for k, dep in enumerate(loaded.scenario.deployments):
        for i in range(dep.replicas):
            name = f"{dep.name}-{i}"
            worker = builder.build(k, len(workers), name, gidx)
            if worker is None:
                want = dep.vgpu.profile or (f"{dep.vgpu.memory_gib:g} GiB, {dep.vgpu.sm_fraction:g} SM"
                                            if dep.vgpu.memory_gib or dep.vgpu.sm_fraction else "any vGPU")
                raise loaded.error(f"deployments.{k}.vgpu",
                                   f"cannot place worker {name}: no node has {dep.dp_size * dep.tp_size} free vGPU(s) "
                                   f"matching {want} (placed {i} of {dep.replicas} replicas)")
            workers.append(worker)
            gidx += len(worker.ranks)
    return workers


def _actions(loaded: LoadedScenario) -> tuple[FleetAction, ...]:
    out = []
    for k, e in enumerate(loaded.scenario.events):
        t, cause = e.at_s * 1000.0, f"events.{k}"
        if isinstance(e, AddWorkersEvent):
            out.append(FleetAction(t, "add", e.add_workers.deployment, count=e.add_workers.count, cause=cause))
        else:
            r = e.remove_workers
            out.append(FleetAction(t, "remove", r.deployment, tuple(r.workers), r.count, r.drain, cause))
    return tuple(out)


@dataclass
class _FaultBuild:
    """What the scenario's faults become: kill plans (workers added during the run learn of them too),
    partitions, slowdowns, fleet actions, and the report's list."""

    workers: list[WorkerInfo]
    plans: list[FaultPlan] = field(default_factory=list)
    partitions: list[Partition] = field(default_factory=list)
    slowdowns: list[RankSlowdown] = field(default_factory=list)
    slow_plans: list[SlowdownPlan] = field(default_factory=list)
    actions: list[FleetAction] = field(default_factory=list)
    listed: list[dict[str, object]] = field(default_factory=list)

    def worker(self, name: str) -> WorkerInfo:
        return next(w for w in self.workers if w.name == name)


def _kill_worker(b: _FaultBuild, k: int, t: float, f: Fault) -> None:
    assert isinstance(f, KillWorkerFault)
    b.plans.append(FaultPlan(t, k, f.kill_worker, None, FailureReason.WORKER_KILLED, f"worker {f.kill_worker} killed"))
    b.listed.append({"at_ms": t, "kind": "kill_worker", "target": f.kill_worker})


def _kill_node(b: _FaultBuild, k: int, t: float, f: Fault) -> None:
    assert isinstance(f, KillNodeFault)
    b.plans.append(FaultPlan(t, k, None, f.kill_node, FailureReason.WORKER_KILLED, f"node {f.kill_node} killed"))
    b.listed.append({"at_ms": t, "kind": "kill_node", "target": f.kill_node})


def _restart_worker(b: _FaultBuild, k: int, t: float, f: Fault) -> None:
    assert isinstance(f, RestartWorkerFault)
    b.plans.append(FaultPlan(t, k, f.restart_worker, None, FailureReason.WORKER_KILLED,
                             f"worker {f.restart_worker} restarted", restart=True))
    b.listed.append({"at_ms": t, "kind": "restart_worker", "target": f.restart_worker})


def _partition(b: _FaultBuild, k: int, t: float, f: Fault) -> None:
    assert isinstance(f, PartitionFault)
    names = set(f.partition.nodes)
    until = t + f.partition.duration_s * 1000.0
    b.partitions.append(Partition(t, until, nodes=frozenset(names)))
    b.listed.append({"at_ms": t, "kind": "partition", "target": sorted(names), "until_ms": until})


def _drain_worker(b: _FaultBuild, k: int, t: float, f: Fault) -> None:
    assert isinstance(f, DrainWorkerFault)
    d = f.drain_worker
    deadline = None if d.deadline_s is None else d.deadline_s * 1000.0
    b.actions.append(FleetAction(t, "remove", None, (d.worker,), 1, True, f"faults.{k}", deadline_ms=deadline))
    b.listed.append({"at_ms": t, "kind": "drain_worker", "target": d.worker, "deadline_ms": deadline})


def _slow_gpu(b: _FaultBuild, k: int, t: float, f: Fault) -> None:
    assert isinstance(f, SlowGpuFault)
    g = f.slow_gpu
    hit = [w for w in b.workers if w.name == g.worker or (g.node is not None and g.node in w.rank_nodes)]
    gidxs = tuple(x for w in hit for x in w.gidxs)
    until = t + g.duration_s * 1000.0
    b.slowdowns.append(RankSlowdown(t, until, gidxs, g.factor, k))
    b.slow_plans.append(SlowdownPlan(t, until, g.worker, g.node, g.factor, k))  # for workers placed later
    b.listed.append({"at_ms": t, "kind": "slow_gpu", "target": g.node or g.worker, "until_ms": until,
                     "factor": g.factor, "workers": [w.name for w in hit]})


def _degrade_link(b: _FaultBuild, k: int, t: float, f: Fault) -> None:
    assert isinstance(f, DegradeLinkFault)
    d = f.degrade_link
    until = t + d.duration_s * 1000.0
    topics = frozenset({d.topic.value}) if d.topic is not None else frozenset()
    b.partitions.append(Partition(t, until, nodes=frozenset(d.nodes), blocks=False, extra_latency_ms=d.latency_ms,
                                  loss=d.loss, topics=topics))
    b.listed.append({"at_ms": t, "kind": "degrade_link", "target": sorted(d.nodes) or "all",
                     "topic": None if d.topic is None else d.topic.value, "latency_ms": d.latency_ms, "loss": d.loss,
                     "until_ms": until})


def _switch_mode(b: _FaultBuild, k: int, t: float, f: Fault) -> None:
    assert isinstance(f, SwitchModeFault)
    m = f.switch_mode
    deadline = None if m.drain_deadline_s is None else m.drain_deadline_s * 1000.0
    b.actions.append(FleetAction(t, "switch_mode", workers=(m.node,), cause=f"faults.{k}", deadline_ms=deadline,
                                 switch=(m.virtualization, m.switch_s * 1000.0, m.fail)))
    b.listed.append({"at_ms": t, "kind": "switch_mode", "target": m.node, "mode": m.virtualization.mode,
                     "switch_ms": m.switch_s * 1000.0, "fail": m.fail})


def _restart_router(b: _FaultBuild, k: int, t: float, f: Fault) -> None:
    b.actions.append(FleetAction(t, "restart_router", cause=f"faults.{k}"))
    b.listed.append({"at_ms": t, "kind": "restart_router", "target": "router"})


FAULT_KINDS: dict[str, Callable[[_FaultBuild, int, float, Fault], None]] = {
    "kill_worker": _kill_worker, "kill_node": _kill_node, "restart_worker": _restart_worker,
    "partition": _partition, "drain_worker": _drain_worker, "slow_gpu": _slow_gpu,
    "restart_router": _restart_router, "degrade_link": _degrade_link, "switch_mode": _switch_mode,
}
"""Fault kind (the scenario key) -> what it adds to the run."""


def _faults(loaded: LoadedScenario, workers: list[WorkerInfo]) -> _FaultBuild:
    b = _FaultBuild(workers)
    for k, f in enumerate(loaded.scenario.faults):
        FAULT_KINDS[f.kind](b, k, f.at_s * 1000.0, f)
        b.listed[-1]["id"] = f"faults.{k}"
    return b


def build_world(loaded: LoadedScenario, macro_step: bool = True, collect_kv_events: bool = False,
                mirror_kv: bool = False, workload: Workload | None = None, refuse_unfit: bool = True) -> World:
    """Build everything a run needs from a validated scenario (see the module docstring).

    `mirror_kv`: ranks publish every KV batch, with token ids, for an outside observer.
    `workload`: replay this workload instead of the scenario's (scripts and tests build theirs).
    `refuse_unfit`: refuse before the run a prompt no rank could hold; when False the engine
    rejects it during the run (`rejected_prompt_too_long`).
    """
    sc = loaded.scenario
    if sc.model is not None:
        from cluster.hardware.models import get_model

        try:
            get_model(sc.model)
        except (KeyError, ValueError) as exc:
            raise loaded.error("model", str(exc).strip('"')) from None
    nodes = _build_nodes(loaded)
    # With a mirror, wire formats carry the blocks' tokens (vLLM BlockStored.token_ids).
    builder = WorkerBuilder(loaded, nodes, emit_kv_token_ids=mirror_kv)
    workers = _place(loaded, builder)
    ranks = [r for w in workers for r in w.ranks]
    node_of_rank = [n for w in workers for n in w.rank_nodes]
    if workload is not None:
        loaded_wl = LoadedWorkload(workload, f"workload: {workload.num_requests} requests", False)
    else:
        try:
            loaded_wl = load_workload(sc.workload, lambda p: loaded.resolve(p, "workload.trace"))
        except WorkloadError as exc:
            raise loaded.error("workload", str(exc)) from None
    if refuse_unfit:
        check_prompts_fit(loaded, loaded_wl.workload, ranks)
    first = ranks[0].engine
    router_config = sc.router.router_config(first.max_num_batched_tokens)
    kv_router = KvRouter(router_config, block_size=first.block_size_tokens, seed=component_seed(sc.seed, "router"))
    decode_router = None
    if any(d.role == "decode" for d in sc.deployments):
        from cluster.control.disagg import decode_router_config

        decode_router = KvRouter(decode_router_config(router_config), block_size=first.block_size_tokens,
                                 seed=component_seed(sc.seed, "decode_router"))
    faults = _faults(loaded, workers)
    names = [d.name for d in sc.deployments]
    _check_planner(loaded, names)
    planner = _planner_pools(sc)
    kills = tuple(p.kill(tuple(g for w in workers if p.hits(w) for g in w.gidxs)) for p in faults.plans)
    setup = SimulationSetup(loaded_wl.workload, ranks, kv_router, seed=sc.seed, plane=sc.event_plane,
                            concurrency=sc.workload.concurrency, macro_step=macro_step,
                            collect_kv_events=collect_kv_events, kills=kills, partitions=tuple(faults.partitions),
                            mirror_kv=mirror_kv, workers=workers, source=builder, faults=tuple(faults.plans),
                            actions=_actions(loaded) + tuple(faults.actions), slowdowns=tuple(faults.slowdowns),
                            slow_plans=tuple(faults.slow_plans),
                            migration_limits={d.name: d.migration_limit for d in sc.deployments},
                            decode_router=decode_router,
                            topology=None if sc.topology is None or not sc.topology.enabled
                            else (sc.topology.nic_gbps, sc.topology.nic_rails),
                            planner=planner, planner_context=_planner_context(loaded, planner, workers))
    return World(loaded, nodes, workers, setup, node_of_rank, loaded_wl, faults.listed)


def _check_planner(loaded: LoadedScenario, names: list[str]) -> None:
    """The planner's deployments exist (one line before the run)."""
    p = loaded.scenario.planner
    if p is None:
        return
    for key in ("deployment", "decode_deployment", "prefill_deployment"):
        name = getattr(p, key, None)
        if name is not None and name not in names:
            raise loaded.error(f"planner.{key}", f"no deployment {name!r} (have: {', '.join(names)})")
    if p.type == "python":
        from planner.policy import PythonPlanner

        try:
            PythonPlanner(p)
        except ValueError as exc:
            raise loaded.error("planner.class", str(exc)) from None


def _planner_pools(sc: Scenario) -> Any:
    """The planner config with its pools named: unless given, the decode pool is `deployment`, else the
    first decode deployment, else the first; the prefill pool is the first prefill deployment."""
    p = sc.planner
    if p is None:
        return None
    by_role = {d.role: d.name for d in reversed(sc.deployments)}  # the first of each role
    decode = p.decode_deployment or p.deployment or by_role.get("decode") or sc.deployments[0].name
    return p.model_copy(update={"decode_deployment": decode,
                                "prefill_deployment": p.prefill_deployment or by_role.get("prefill")})


def _planner_context(loaded: LoadedScenario, p: Any, workers: list[WorkerInfo]) -> Any:
    """The planner's perf models; a profile folder resolves like any scenario path (one line when unreadable)."""
    if p is not None and p.type == "sla" and p.profile_results_dir is not None:
        folder = loaded.resolve(p.profile_results_dir, "planner.profile_results_dir")
        p = p.model_copy(update={"profile_results_dir": str(folder)})
    try:
        return planner_context(p, workers)
    except (OSError, KeyError, ValueError) as exc:
        raise loaded.error("planner.profile_results_dir", f"cannot read the profile: {exc}") from None


def check_prompts_fit(loaded: LoadedScenario, workload: Workload, ranks: list[RankSpec]) -> None:
    """Refuse, before running, a prompt no rank's KV cache can ever hold (the one fit check)."""
    largest = max((r.engine.num_gpu_blocks for r in ranks), default=0)
    bs = ranks[0].engine.block_size_tokens
    for session in workload.sessions:
        for k, turn in enumerate(session.turns):
            need = -(-turn.input_length // bs)
            if need > largest:
                raise loaded.error("workload", (
                    f"prompt larger than the KV cache: session {session.session_id} turn {k} has "
                    f"{turn.input_length} input tokens = {need} blocks of {bs}, but the largest rank has "
                    f"num_gpu_blocks {largest}"))

