"""The scenario file (DESIGN §10): one pydantic model for a whole experiment.

```yaml
name: smoke
seed: 7
model: qwen3-0.6b                      # configs/models/<name>.toml, for roofline timing and KV sizing
cluster:
  nodes:
    - {name: h100, count: 2, accelerator: configs/accelerator/h100x8.toml,
       virtualization: {mode: mig, profiles: [3g.40gb, 3g.40gb]}}
deployments:
  - {name: agg, role: aggregated, replicas: 4, vgpu: {profile: 3g.40gb},
     engine: {block_size: 64, timing_model: {type: roofline}}}
router: {mode: kv, router_temperature: 0.0}
planner: {type: scripted, tick_s: 5, steps: [{at_s: 10, workers: 6}]}   # or type sla (planner.config)
event_plane: {latency_ms: 0.5}
workload: {synthetic: {input_tokens: 1024, output_tokens: 64, request_count: 200, request_rate: 20}}
faults: [{at_s: 5, kill_node: h100-1}]
outputs: {dir: out/smoke}
```

Without `cluster`, workers run on abstract GPUs (what `clustersim replay` runs: a replay is a
scenario with one deployment on abstract GPUs). `deployments[].timing: {model: ...}` is accepted
as the older spelling of `engine.timing_model: {type: ...}` (one timing schema everywhere).

Reading a file and resolving its relative paths is `cluster.scenario.load`; impossible
placements and unknown MIG profiles are caught when the cluster is built
(`cluster.scenario.world`), with the same kind of one-line message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, Tag, field_validator, model_validator

from actors.engine.config import TIMING_TYPES, EngineConfig, RooflineTimingConfig, TimingConfig
from cluster.hardware.virtualization import VirtualizationConfig
from cluster.plane.endpoint import EventPlaneConfig
from cluster.scenario.faults import (  # noqa: F401 - the scenario's fault models, re-exported
    DegradeLinkFault,
    DrainWorkerFault,
    Fault,
    keyed_union as _keyed_union,
    KillNodeFault,
    KillWorkerFault,
    PartitionFault,
    RestartRouterFault,
    RestartWorkerFault,
    SlowGpuFault,
    SwitchModeFault,
)
from cluster.workload.spec import WorkloadSpec
from planner.config import PythonPlannerConfig, ScriptedPlannerConfig, SlaPlannerConfig, parse_planner_config
from router.config import KvRouterConfig, parse_router_mode

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the file and the field."""


class _Strict(BaseModel):
    """Frozen, unknown keys refused, no NaN or infinity (a float field holds a real number)."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class NodeGroup(_Strict):
    """`count` nodes built from one accelerator file; named `name` (count 1) or `name-0..`."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    count: StrictInt = Field(1, ge=1)
    accelerator: str
    virtualization: VirtualizationConfig | None = None

    def node_names(self) -> list[str]:
        return [self.name] if self.count == 1 else [f"{self.name}-{k}" for k in range(self.count)]


class ClusterSpec(_Strict):
    nodes: list[NodeGroup] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> "ClusterSpec":
        seen: set[str] = set()
        for group in self.nodes:
            for name in group.node_names():
                if name in seen:
                    raise ValueError(f"node name {name!r} is used twice")
                seen.add(name)
        return self


class VGpuSpec(_Strict):
    """What each rank needs: a MIG profile, or memory and SM share (empty: any free vGPU)."""

    profile: str | None = None
    memory_gib: float = Field(0.0, ge=0.0)
    sm_fraction: float = Field(0.0, ge=0.0, le=1.0)


class DeploymentSpec(_Strict):
    """`replicas` engine workers of one kind. Workers are named `<name>-<i>`."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    role: Literal["aggregated", "prefill", "decode"] = "aggregated"
    replicas: StrictInt = Field(ge=1)
    dp_size: StrictInt = Field(1, ge=1)
    tp_size: StrictInt = Field(1, ge=1)
    vgpu: VGpuSpec = Field(default_factory=VGpuSpec)
    placement: Literal["binpack", "spread"] = "binpack"
    engine: EngineConfig = Field(default_factory=EngineConfig)
    migration_limit: int = Field(0, ge=0, description=(
        "times a request may move to another worker when its worker dies or drains past a deadline, "
        "carrying the tokens generated so far (Dynamo's --migration-limit; 0: never)"))

    @model_validator(mode="before")
    @classmethod
    def _timing_alias(cls, data: Any) -> Any:
        """`timing: {model: roofline, ...}` is the older spelling of `engine.timing_model: {type: roofline, ...}`."""
        if not isinstance(data, dict) or "timing" not in data:
            return data
        data = dict(data)
        timing = data.pop("timing")
        if isinstance(timing, dict) and "model" in timing and "type" not in timing:
            kind = timing["model"]
            if kind not in TIMING_TYPES:
                raise ValueError(f"timing.model: {kind!r} is not a timing model ({', '.join(TIMING_TYPES)})")
            timing = {("type" if k == "model" else k): v for k, v in timing.items()}
        engine = data.get("engine")
        engine = dict(engine) if isinstance(engine, dict) else (
            engine.model_dump(exclude_unset=True) if isinstance(engine, EngineConfig) else {})
        if "timing_model" in engine:
            raise ValueError("give timing or engine.timing_model, not both")
        engine["timing_model"] = timing
        data["engine"] = engine
        return data

    @model_validator(mode="before")
    @classmethod
    def _role_to_engine(cls, data: Any) -> Any:
        """`role:` is the engine's `worker_type` (given once, or twice alike)."""
        if not isinstance(data, dict) or data.get("role", "aggregated") == "aggregated":
            return data
        data = dict(data)
        engine = data.get("engine")
        engine = dict(engine) if isinstance(engine, dict) else (
            engine.model_dump(exclude_unset=True) if isinstance(engine, EngineConfig) else {})
        engine.setdefault("worker_type", data["role"])
        data["engine"] = engine
        return data

    @property
    def timing(self) -> TimingConfig:
        return self.engine.timing_model

    @model_validator(mode="after")
    def _supported(self) -> "DeploymentSpec":
        if self.role != self.engine.worker_type:
            raise ValueError(f"role {self.role!r} and engine.worker_type {self.engine.worker_type!r} disagree")
        if self.engine.dp_size != 1 and self.engine.dp_size != self.dp_size:
            raise ValueError("give dp_size on the deployment, not in engine")
        if self.engine.tensor_parallel_size != 1 and self.engine.tensor_parallel_size != self.tp_size:
            raise ValueError("give tp_size on the deployment, not in engine.tensor_parallel_size")
        return self


class RouterSpec(_Strict):
    """`mode` (kv | round_robin | random | least_loaded) plus any `KvRouterConfig` field."""

    model_config = ConfigDict(frozen=True, extra="allow")
    mode: str = "kv"

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, v: str) -> str:
        return parse_router_mode(v)

    @model_validator(mode="after")
    def _fields_valid(self) -> "RouterSpec":
        self.router_config(None)  # unknown or bad KvRouterConfig fields fail at load time
        return self

    def router_config(self, max_num_batched_tokens: int | None) -> KvRouterConfig:
        data = dict(self.model_extra or {})
        data["router_mode"] = self.mode
        if max_num_batched_tokens is not None:
            data.setdefault("max_num_batched_tokens", max_num_batched_tokens)
        return KvRouterConfig.from_mapping(data)


def _planner(value: Any) -> Any:
    """`planner:` -> a planner config (`planner.config`); absent, null or `{enabled: false}`: none."""
    if value is None or (isinstance(value, dict) and value == {"enabled": False}):
        return None
    if isinstance(value, dict):
        if "enabled" in value:
            raise ValueError("planner: give its settings (type: sla | scripted | python, planner.config) "
                             "instead of enabled")
        return parse_planner_config(value)
    return value


PlannerField = Annotated[Union[SlaPlannerConfig, ScriptedPlannerConfig, PythonPlannerConfig, None],
                         BeforeValidator(_planner)]


class AddWorkers(_Strict):
    deployment: str
    count: StrictInt = Field(1, ge=1)


class RemoveWorkers(_Strict):
    """Named `workers`, or the `count` newest serving (or starting) workers of `deployment`."""

    deployment: str | None = None
    workers: list[str] = Field(default_factory=list)
    count: StrictInt = Field(1, ge=1)
    drain: bool = Field(True, description="finish the requests already sent; false: they fail (worker_removed)")

    @model_validator(mode="after")
    def _one_target(self) -> "RemoveWorkers":
        if (self.deployment is None) == (not self.workers):
            raise ValueError("give deployment (with count) or workers, not both")
        return self


class AddWorkersEvent(_Strict):
    """At `at_s`, add workers: placed on free vGPUs, serving after the engine's startup_time."""

    at_s: float = Field(ge=0.0)
    add_workers: AddWorkers


class RemoveWorkersEvent(_Strict):
    """At `at_s`, remove workers: the router stops sending them requests; they drain, then stop."""

    at_s: float = Field(ge=0.0)
    remove_workers: RemoveWorkers


EVENT_TAGS = {"add_workers": "AddWorkersEvent", "remove_workers": "RemoveWorkersEvent"}
WorldEvent = Annotated[
    Union[Annotated[AddWorkersEvent, Tag("AddWorkersEvent")], Annotated[RemoveWorkersEvent, Tag("RemoveWorkersEvent")]],
    _keyed_union(EVENT_TAGS, "event")]


class OutputsSpec(_Strict):
    dir: str = "out"
    report_json: str = "report.json"
    per_request_jsonl: str | None = "requests.jsonl"


class TopologySpec(_Strict):
    """KV transfers over modelled links (`cluster.control.kv_links`); `topology: true` takes the defaults."""

    enabled: bool = True
    nic_gbps: float = Field(50.0, gt=0, description="GB/s per NIC port each way (400 Gb/s NDR InfiniBand: 50)")
    nic_rails: Literal["per_gpu", "per_node"] = "per_gpu"


class RuntimeSpec(_Strict):
    """Defaults for `clustersim run` (its flags override them)."""

    kind: Literal["local", "ray"] = "local"
    shards: StrictInt = Field(1, ge=1)


class Scenario(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    seed: StrictInt = Field(0, ge=0)
    model: str | None = Field(None, description="model architecture for roofline timing and KV sizing")
    cluster: ClusterSpec | None = Field(
        None, description="GPU nodes; none: abstract GPUs (one per worker; timing and KV size from the engine keys)")
    deployments: list[DeploymentSpec] = Field(min_length=1)
    router: RouterSpec = Field(default_factory=RouterSpec)
    planner: PlannerField = Field(None, description="the planner (type sla | scripted | python); none: a fixed fleet")
    event_plane: EventPlaneConfig = Field(default_factory=EventPlaneConfig)
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    faults: list[Fault] = Field(default_factory=list)
    events: list[WorldEvent] = Field(default_factory=list, description="scheduled changes of the fleet")
    outputs: OutputsSpec = Field(default_factory=OutputsSpec)
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec)
    topology: TopologySpec | None = Field(None, description=(
        "disaggregated serving: time KV transfers over NVLink/NIC links shared fairly (true: defaults)"))

    @field_validator("topology", mode="before")
    @classmethod
    def _topology_flag(cls, v: Any) -> Any:
        if v is True:
            return {}
        return None if v is False else v

    @model_validator(mode="after")
    def _cross_checks(self) -> "Scenario":
        names = [d.name for d in self.deployments]
        if len(set(names)) != len(names):
            raise ValueError("deployment names must be unique")
        for k, d in enumerate(self.deployments):
            t = d.timing
            if isinstance(t, RooflineTimingConfig):
                if t.model is None and self.model is None:
                    raise ValueError(f"deployments.{k}: roofline timing needs the scenario's 'model' "
                                     "(or engine.timing_model.model)")
                if t.gpu is None and self.cluster is None:
                    raise ValueError(f"deployments.{k}: roofline timing on abstract GPUs needs "
                                     "engine.timing_model.gpu (a configs/gpus.toml key), or a cluster")
        roles = {d.role for d in self.deployments}
        if roles & {"prefill", "decode"} and roles != {"prefill", "decode"}:
            raise ValueError(f"disaggregated serving needs prefill and decode deployments and no aggregated one, "
                             f"got roles {sorted(roles)}")
        sizes = {d.engine.block_size_tokens for d in self.deployments}
        if len(sizes) > 1:
            raise ValueError(f"deployments behind one router need one engine block_size, got {sorted(sizes)}")
        for k, e in enumerate(self.events):
            dep = e.add_workers.deployment if isinstance(e, AddWorkersEvent) else e.remove_workers.deployment
            if dep is not None and dep not in names:
                raise ValueError(f"events.{k}: no deployment named {dep!r}")
        nodes = {n for g in self.cluster.nodes for n in g.node_names()} if self.cluster is not None else set()
        replicas = {d.name: d.replicas for d in self.deployments}

        def is_worker(name: str) -> bool:  # `<deployment>-<i>`, i < replicas (no set: replicas may be huge)
            dep, _, index = name.rpartition("-")
            return dep in replicas and index.isdigit() and str(int(index)) == index and int(index) < replicas[dep]
        for k, f in enumerate(self.faults):
            field_name, named_nodes, named_workers = f.targets()
            for n in named_nodes:
                if n not in nodes:
                    raise ValueError(f"faults.{k}.{field_name}: no node named {n!r}")
            for w in named_workers:
                if not is_worker(w):
                    raise ValueError(f"faults.{k}.{field_name}: no worker named {w!r}")
        return self


def _deployment(name: str, engine: EngineConfig, replicas: int, migration_limit: int) -> dict[str, Any]:
    return {"name": name, "role": engine.worker_type, "replicas": replicas, "dp_size": engine.dp_size,
            "tp_size": engine.tensor_parallel_size, "engine": engine.model_dump(mode="json", exclude_unset=True),
            **({"migration_limit": migration_limit} if migration_limit else {})}


def replay_scenario(engine: EngineConfig, num_workers: int, *, router: dict[str, Any] | None = None,
                    workload: dict[str, Any] | None = None, seed: int = 42,
                    outputs: dict[str, Any] | None = None, migration_limit: int = 0,
                    disagg: tuple[EngineConfig, int, EngineConfig, int] | None = None,
                    planner: dict[str, Any] | None = None) -> Scenario:
    """A replay as a scenario: `num_workers` workers of `engine` on abstract GPUs behind one router
    (round robin when `router` is None), on a zero-latency event plane. `disagg` (prefill engine,
    prefill workers, decode engine, decode workers): a prefill and a decode deployment instead.

    Raises:
        pydantic.ValidationError: a section does not validate.
    """
    deployments = [{"name": "agg", "replicas": num_workers, "dp_size": engine.dp_size,
                    "tp_size": engine.tensor_parallel_size,
                    "engine": engine.model_dump(mode="json", exclude_unset=True),
                    **({"migration_limit": migration_limit} if migration_limit else {})}]
    if disagg is not None:  # (prefill engine, count, decode engine, count)
        deployments = [_deployment("prefill", disagg[0], disagg[1], migration_limit),
                       _deployment("decode", disagg[2], disagg[3], migration_limit)]
    raw: dict[str, Any] = {
        "name": "replay", "seed": seed,
        "deployments": deployments,
        "router": router if router is not None else {"mode": "round_robin"},
        "workload": workload or {},
    }
    if outputs is not None:
        raw["outputs"] = outputs
    if planner is not None:
        raw["planner"] = planner
    return Scenario.model_validate(raw)
