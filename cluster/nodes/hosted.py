"""The node host's records: its options, one hosted rank's bookkeeping, and a rank's end-of-run stats."""

from __future__ import annotations

from dataclasses import dataclass, field

from actors.engine.protocol import EngineRank
from cluster.nodes.kv_streams import KvStream
from cluster.plane.ranks import RankSpec


@dataclass(frozen=True, slots=True)
class HostOptions:
    """What the host publishes and keeps; fixed for a run."""

    macro_step: bool = True
    publish_kv: bool = False
    """Someone subscribes to kv_events (a KV-aware router)."""
    collect_kv: bool = False
    """Keep every KV event of every rank (tests and equivalence checks)."""
    publish_metrics: bool = False
    heartbeat_ms: float | None = None
    heartbeat_count: int = 8
    replay_buffer_batches: int = 10_000


@dataclass(slots=True)
class RankStats:
    """Engine counters of one rank at the end of a run."""

    gidx: int
    worker_id: int
    dp_rank: int
    num_passes: int
    preemptions_total: int
    committed_prefill_tokens: int
    num_admissions: int
    alive: bool
    cached_blocks: list[int] = field(default_factory=list)
    """Hashes with a physical copy at the end (what a KV subscriber should know)."""
    stopped_ms: float | None = None
    """When the rank stopped (killed, drained or stopped); None: up at the end."""


READY_KEY = 1 << 40
"""Loop keys of ready events sort after those of kills (fault indices) at one instant."""


class Hosted:
    """One hosted rank and the host's bookkeeping of it."""

    __slots__ = ("spec", "rank", "addr", "stream", "due_token", "due_ms", "end_ms", "begin_pending", "alive",
                 "ready", "stopped_ms", "shut", "hb_left", "received", "expected")

    def __init__(self, spec: RankSpec, rank: EngineRank, stream: KvStream, heartbeats: int) -> None:
        self.spec = spec
        self.rank = rank
        self.addr = spec.addr
        self.stream = stream
        self.due_token = 0
        self.due_ms: float | None = None
        self.end_ms: float | None = None
        self.begin_pending = False
        self.alive = True
        self.ready = False
        self.stopped_ms: float | None = None
        self.shut = False
        self.hb_left = heartbeats
        self.received = 0
        """Requests that reached it."""
        self.expected: int | None = None
        """Draining: the requests the router sent it before the drain; it stops once all are done."""

    def retire(self, now: float) -> None:
        """The rank is gone from `now` (killed, drained or stopped): no due event of it runs any more."""
        self.alive = False
        self.stopped_ms = now
        self.due_token += 1
        self.due_ms = self.end_ms = None
