"""The scenario's `faults:` entries: one pydantic model per fault kind (`kind`, the key in the file and
in the world builder's registry `cluster.scenario.world.FAULT_KINDS`), each naming its targets."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

from cluster.hardware.virtualization import VirtualizationConfig
from cluster.plane.messages import Topic


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def keyed_union(members: dict[str, str], what: str) -> Discriminator:
    """A discriminator for a union keyed by which field is present (`kill_node`, `partition`, ...):
    `members` maps that field to the member's tag. An error then names the member the user wrote
    (`faults.0.partition.duration_s: ...`) instead of every member's missing fields."""
    def member(value: Any) -> str | None:
        present = [k for k in members if isinstance(value, dict) and k in value]
        return members[present[0]] if len(present) == 1 else None
    return Discriminator(member, custom_error_type=f"{what}_kind",
                         custom_error_message=f"a{'n' if what[0] in 'aeiou' else ''} {what} needs exactly one of "
                                              f"{', '.join(members)} (and at_s)")


class _FaultBase(_Strict):
    """A fault: `kind` is its key in the file and in the world builder's registry (`FAULT_KINDS`)."""

    kind: ClassVar[str]
    at_s: float = Field(ge=0.0)

    def targets(self) -> tuple[str, list[str], list[str]]:
        """The field that names targets, and the nodes and workers it names (checked at load)."""
        return self.kind, [], []


class KillNodeFault(_FaultBase):
    kind = "kill_node"
    kill_node: str

    def targets(self) -> tuple[str, list[str], list[str]]:
        return self.kind, [self.kill_node], []


class KillWorkerFault(_FaultBase):
    kind = "kill_worker"
    kill_worker: str

    def targets(self) -> tuple[str, list[str], list[str]]:
        return self.kind, [], [self.kill_worker]


class PartitionTarget(_Strict):
    nodes: list[str] = Field(min_length=1)
    duration_s: float = Field(gt=0.0)


class PartitionFault(_FaultBase):
    """The nodes cannot exchange messages with the rest: KV events and metrics sent meanwhile are
    lost; requests and responses wait for the partition to heal (TCP retransmits)."""

    kind = "partition"
    partition: PartitionTarget

    def targets(self) -> tuple[str, list[str], list[str]]:
        return "partition.nodes", list(self.partition.nodes), []


class DrainTarget(_Strict):
    worker: str
    deadline_s: float | None = Field(None, gt=0.0, description="then what is still running stops (drain_deadline)")


class DrainWorkerFault(_FaultBase):
    """Graceful shutdown: the worker gets no new requests and finishes its own; at the deadline the
    rest fail with `drain_deadline` (they migrate, with a migration limit)."""

    kind = "drain_worker"
    drain_worker: DrainTarget

    def targets(self) -> tuple[str, list[str], list[str]]:
        return "drain_worker.worker", [], [self.drain_worker.worker]


class RestartWorkerFault(_FaultBase):
    """The worker is killed; a fresh worker of its deployment is placed when its loss is known and
    serves after the engine's `startup_time`."""

    kind = "restart_worker"
    restart_worker: str

    def targets(self) -> tuple[str, list[str], list[str]]:
        return self.kind, [], [self.restart_worker]


class SlowTarget(_Strict):
    node: str | None = None
    worker: str | None = None
    factor: float = Field(gt=0.0, description="pass times are multiplied by it (2: half speed)")
    duration_s: float = Field(gt=0.0)

    @model_validator(mode="after")
    def _one_target(self) -> "SlowTarget":
        if (self.node is None) == (self.worker is None):
            raise ValueError("give node or worker, not both")
        return self


class SlowGpuFault(_FaultBase):
    """A straggler: the ranks of a node (or of one worker) run `factor` times slower for a window."""

    kind = "slow_gpu"
    slow_gpu: SlowTarget

    def targets(self) -> tuple[str, list[str], list[str]]:
        t = self.slow_gpu
        return ("slow_gpu.node", [t.node], []) if t.node is not None else ("slow_gpu.worker", [], [t.worker or ""])


class DegradeTarget(_Strict):
    nodes: list[str] = Field(default_factory=list, description="links to and from these nodes; none: every link")
    topic: Topic | None = Field(None, description="only this topic's links")
    latency_ms: float = Field(0.0, ge=0.0, description="added to the links' latency")
    loss: float = Field(0.0, ge=0.0, le=1.0, description="pub/sub messages lost (kv_events, metrics)")
    duration_s: float = Field(gt=0.0)

    @model_validator(mode="after")
    def _meaningful(self) -> "DegradeTarget":
        if self.topic is not None and self.loss > 0.0 and not self.topic.pubsub:
            raise ValueError(f"loss: topic {self.topic.value!r} is reliable (only kv_events and metrics lose messages)")
        if self.latency_ms == 0.0 and self.loss == 0.0:
            raise ValueError("give latency_ms or loss")
        return self


class DegradeLinkFault(_FaultBase):
    """For a window, links (of a topic, to and from some nodes) are slower and pub/sub ones lossy."""

    kind = "degrade_link"
    degrade_link: DegradeTarget

    def targets(self) -> tuple[str, list[str], list[str]]:
        return "degrade_link.nodes", list(self.degrade_link.nodes), []


class SwitchTarget(_Strict):
    node: str
    virtualization: VirtualizationConfig
    switch_s: float = Field(30.0, ge=0.0, description="how long the node is `switching` once drained")
    fail: bool = Field(False, description="the switch fails: the node ends `switch-failed` and stays out")
    drain_deadline_s: float | None = Field(None, gt=0.0, description="then what still runs on it stops")


class SwitchModeFault(_FaultBase):
    """A node changes virtualization mode mid-run: its workers drain, it is `switching` for
    `switch_s`, then its new vGPUs appear and the drained workers are placed again."""

    kind = "switch_mode"
    switch_mode: SwitchTarget

    def targets(self) -> tuple[str, list[str], list[str]]:
        return "switch_mode.node", [self.switch_mode.node], []


class RestartRouterFault(_FaultBase):
    """The router restarts: its prefix index is lost and rebuilt by resync from the workers' KV
    streams (`restart_router: true`)."""

    kind = "restart_router"
    restart_router: Literal[True]


FAULT_MODELS: tuple[type[_FaultBase], ...] = (
    KillNodeFault, KillWorkerFault, PartitionFault, DrainWorkerFault, RestartWorkerFault, SlowGpuFault,
    RestartRouterFault, DegradeLinkFault, SwitchModeFault)
FAULT_TAGS = {m.kind: m.__name__ for m in FAULT_MODELS}
"""The key a fault is written with -> its model's tag (the union member's name)."""
Fault = Annotated[
    Union[Annotated[KillNodeFault, Tag("KillNodeFault")], Annotated[KillWorkerFault, Tag("KillWorkerFault")],
          Annotated[PartitionFault, Tag("PartitionFault")], Annotated[DrainWorkerFault, Tag("DrainWorkerFault")],
          Annotated[RestartWorkerFault, Tag("RestartWorkerFault")], Annotated[SlowGpuFault, Tag("SlowGpuFault")],
          Annotated[RestartRouterFault, Tag("RestartRouterFault")],
          Annotated[DegradeLinkFault, Tag("DegradeLinkFault")], Annotated[SwitchModeFault, Tag("SwitchModeFault")]],
    keyed_union(FAULT_TAGS, "fault")]
