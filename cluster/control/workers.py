"""A placed engine worker (`WorkerInfo`) and what places workers (`WorkerSource`, the scenario's
worker builder), as the fleet sees them: the fleet allocates ids and addresses, the source picks
vGPUs and builds the ranks' specs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from actors.engine.config import EngineConfig
from cluster.plane.ranks import RankSpec

if TYPE_CHECKING:
    from cluster.hardware.virtualization import VGpu


@dataclass(frozen=True)
class WorkerInfo:
    """One placed engine worker."""

    worker_id: int
    name: str
    deployment: str
    gidxs: tuple[int, ...]
    vgpus: tuple[tuple[VGpu, ...], ...]
    """Per DP rank, its tp_size vGPUs (empty on abstract GPUs)."""
    engine: EngineConfig
    num_gpus: int
    """GPUs it occupies: its vGPUs, or `tp_size` abstract GPUs."""
    rank_nodes: tuple[str, ...]
    """Per DP rank, the node of its first vGPU (the Ray runtime's shard unit)."""
    ranks: tuple[RankSpec, ...]

    @property
    def nodes(self) -> list[str]:
        return sorted(set(self.rank_nodes)) if self.vgpus else []


class WorkerSource(Protocol):
    """Places workers of the scenario's deployments (`cluster.scenario.deploy.WorkerBuilder`)."""

    def deployment_index(self, name: str) -> int | None: ...

    def build(self, k: int, worker_id: int, name: str, first_gidx: int) -> WorkerInfo | None:
        """Place worker `name` of deployment `k`; None when no vGPU fits."""
        ...

    def free(self, name: str, now_ms: float) -> None:
        """Give the worker's vGPUs back."""
        ...

    def switch_node(self, node: str, cfg: Any, now_ms: float, switch_ms: float, fail: bool) -> list[str]:
        """Start a node's virtualization mode switch; the workers it must drain first (ValueError: refused)."""
        ...

    def switch_done_ms(self, node: str) -> float | None:
        """When the node's switch completes (None: still draining)."""
        ...

    def complete_switch(self, node: str, now_ms: float) -> str:
        """Finish the switch; the node's status (`ready`, or `switch-failed`)."""
        ...
