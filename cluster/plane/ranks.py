"""What a node host needs to host a rank, and the messages of a rank's lifecycle.

A rank is one (worker, dp_rank) slot at one event-plane address. The control shard allocates
addresses and decides when workers come and go (`cluster.control.fleet`); node hosts run them
(`cluster.nodes.host`). Lifecycle, all on the reliable `control` topic:

    control --StartRankMsg--> node    host the rank now; it is ready `startup_ms` later
    node --RankReadyMsg--> control    it serves from now (the router may route to it)
    control --DrainRankMsg--> node    finish the `expected` requests sent to it, then stop
    control --StopRankMsg--> node     stop now: its requests fail (`worker_removed`)
    node --RankStoppedMsg--> control  it stopped (drained or stopped); its GPUs are free
A fault kills a rank without asking (`RankKill`, scheduled on its node host; `WorkerDownMsg`).
"""

from __future__ import annotations

from dataclasses import dataclass

from actors.engine.config import EngineConfig
from actors.engine.records import FailureReason
from actors.engine.timing.models import TimingModel


def rank_addr(global_rank: int) -> int:
    """Event-plane address of the rank with global index `global_rank`."""
    return global_rank + 1


@dataclass(frozen=True, slots=True)
class RankKill:
    """Kill the ranks with these global indices at `t_ms` (a fault): their requests fail with `reason`.

    `key` orders kills of one instant (the fault's index in the scenario).
    """

    t_ms: float
    gidxs: tuple[int, ...]
    reason: FailureReason
    detail: str
    cause: str | None = None
    """The fault's id (`faults.<k>`), carried by the requests it fails."""
    key: int = 0


@dataclass(frozen=True, slots=True)
class RankSlowdown:
    """From `t_ms` until `until_ms` the ranks with these global indices run `factor` times slower
    (a straggler fault); a pass keeps the speed it started with. `key`: the fault's index."""

    t_ms: float
    until_ms: float
    gidxs: tuple[int, ...]
    factor: float
    key: int = 0


@dataclass(frozen=True, slots=True)
class SlowdownPlan:
    """A straggler window (slow_gpu `faults.<key>`) as workers placed during the run must learn of it:
    a worker named `worker`, or one with a rank on `node`, placed before `until_ms` runs slowed for
    the rest of the window."""

    t_ms: float
    until_ms: float
    worker: str | None
    node: str | None
    factor: float
    key: int

    def hits(self, name: str, rank_nodes: tuple[str, ...]) -> bool:
        return self.worker == name or (self.node is not None and self.node in rank_nodes)

    def slowdown(self, gidxs: tuple[int, ...]) -> RankSlowdown:
        return RankSlowdown(self.t_ms, self.until_ms, gidxs, self.factor, self.key)


@dataclass(frozen=True, slots=True)
class RankSpec:
    """One (worker, dp_rank) slot to host: what it runs and where.

    `cotenant_group`: ranks with the same id share one physical card as time-sliced vGPUs
    and slow each other while busy (their timing models must be `ContendedTiming`);
    `core_limit` is this rank's share of that card. `startup_ms`: from hosting to serving.
    """

    gidx: int
    worker_id: int
    dp_rank: int
    engine: EngineConfig
    timing: TimingModel | None = None
    worker_name: str = ""
    node: str = ""
    cotenant_group: int | None = None
    core_limit: float = 1.0
    startup_ms: float = 0.0

    @property
    def addr(self) -> int:
        return rank_addr(self.gidx)


@dataclass(frozen=True, slots=True)
class StartRankMsg:
    """Control -> a new rank's address: host it; `kills` are the faults scheduled to hit it,
    `slowdowns` the straggler windows not yet over that cover it."""

    spec: RankSpec
    kills: tuple[RankKill, ...] = ()
    slowdowns: tuple[RankSlowdown, ...] = ()


@dataclass(frozen=True, slots=True)
class RankReadyMsg:
    """Node -> control: the rank finished starting at `t_ms` and serves from now."""

    worker_id: int
    dp_rank: int
    t_ms: float


@dataclass(frozen=True, slots=True)
class DrainRankMsg:
    """Control -> rank: no more requests after the `expected` already sent; stop when they are done."""

    worker_id: int
    dp_rank: int
    expected: int


@dataclass(frozen=True, slots=True)
class StopRankMsg:
    """Control -> rank: stop now (a removal without drain); its requests fail with `reason`."""

    worker_id: int
    dp_rank: int
    reason: FailureReason
    detail: str
    cause: str | None = None


@dataclass(frozen=True, slots=True)
class RankStoppedMsg:
    """Node -> control: the rank stopped at `t_ms` (drained or stopped) and holds nothing any more."""

    worker_id: int
    dp_rank: int
    t_ms: float
