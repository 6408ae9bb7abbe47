"""A shard: one event loop, its event-plane endpoint, and the components it hosts.

The cluster is split into shards only along event-plane links: the control shard (frontend
and router, address 0) and node shards (the ranks of whole nodes). Components in
different shards interact only through messages with a positive latency, so a shard can
run ahead of the others up to a horizon (`advance`) and exchange envelopes afterwards
(`take_outbox` / `inject`). The Local runtime builds ONE shard holding everything; the
Ray runtime builds a control shard in the driver and node shards in Ray actors. Both give
the same report because every event's same-instant order key is derived from its own
component (see `cluster.plane.endpoint` and `cluster.nodes.host`).

`ShardPlan` is the picklable description a node shard is built from. The window protocol
between the coordinator and a remote node shard is here too: msgpack payloads, step =
`[horizon_ms, encoded inbound envelopes]`, reply = `[encoded outbox, next event ms,
response bound ms]`, infinity as None (`encode_step` / `Shard.step` / `decode_reply`).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Callable

from actors.engine.events import KvEvent
from actors.engine.records import GapLog, RequestRecord
from cluster.control.host import ControlHost
from cluster.nodes.host import NodeHost
from cluster.nodes.hosted import HostOptions, RankStats
from cluster.plane.codec import decode, encode
from cluster.plane.endpoint import EventPlaneConfig, PlaneEndpoint
from cluster.plane.links import LinkCounters, Partition
from cluster.plane.messages import CONTROL_ADDR, Envelope, Message, Topic
from cluster.plane.ranks import RankKill, RankSlowdown, RankSpec
from cluster.sim.clock import EventLoop


@dataclass(frozen=True)
class ShardPlan:
    """Everything a shard needs to build its node side (picklable, sent to Ray actors)."""

    plane: EventPlaneConfig
    seed: int
    ranks: tuple[RankSpec, ...]
    options: HostOptions
    kills: tuple[RankKill, ...] = ()
    partitions: tuple[Partition, ...] = ()
    subscribers: tuple[tuple[Topic, tuple[int, ...]], ...] = ()
    slowdowns: tuple[RankSlowdown, ...] = ()


@dataclass
class NodeShardResult:
    """What a node shard hands back at the end of a run."""

    ranks: list[RankStats]
    gaps: GapLog
    kv_events: list[list[KvEvent]]
    counters: dict[Topic, LinkCounters]
    num_events: int
    end_ms: float


@dataclass
class RunResult:
    """The outcome of a run, whatever runtime produced it."""

    records: list[RequestRecord]
    gaps: GapLog
    ranks: list[RankStats]
    """Ordered by global rank index."""
    kv_events: list[KvEvent]
    """Every KV event of the run, per rank (global order) in event-id order (when collected)."""
    counters: dict[Topic, LinkCounters]
    num_events: int
    end_ms: float
    extra: dict[str, object] = field(default_factory=dict)


class Shard:
    """One loop with its endpoint and hosts. Build the control side with `attach_control`."""

    def __init__(self, plan: ShardPlan, hosts_control: bool, hosts_everything: bool = False) -> None:
        """`hosts_everything`: the Local runtime's one shard, where every address is local (ranks
        started during the run included); otherwise a message to another shard's address goes
        to the outbox."""
        self.plan = plan
        self.loop = EventLoop()
        self.gaps = GapLog()
        mine = {CONTROL_ADDR} if hosts_control else set()
        mine.update(spec.gidx + 1 for spec in plan.ranks)
        self._mine = mine
        local: Callable[[int], bool] = (lambda addr: True) if hosts_everything else mine.__contains__
        self.plane = PlaneEndpoint(plan.plane, plan.seed, self.loop, local, self._deliver, plan.partitions)
        for topic, addrs in plan.subscribers:
            self.plane.subscribe(topic, addrs)
        self.nodes = NodeHost(plan.ranks, self.loop, self.plane, self.gaps, plan.options, plan.kills,
                              plan.slowdowns)
        self.control: ControlHost | None = None

    def attach_control(self, control_factory: Callable[[EventLoop, PlaneEndpoint], ControlHost]) -> ControlHost:
        self.control = control_factory(self.loop, self.plane)
        return self.control

    def _deliver(self, now: float, item: tuple[int, Message]) -> None:
        if item[0] == CONTROL_ADDR:
            assert self.control is not None
            self.control.on_message(now, item)
        else:
            self.nodes.on_message(now, item)

    # ------------------------------------------------------------------ windows

    def advance(self, horizon_ms: float) -> None:
        """Process every event before `horizon_ms` (all of them for `math.inf`)."""
        if horizon_ms == math.inf:
            self.loop.run()
        else:
            self.loop.run_before(horizon_ms)

    def inject(self, envelopes: list[Envelope]) -> None:
        if self.control is not None:
            times = self.control.send_times
            for env in envelopes:
                if env.dst == CONTROL_ADDR and self.control.is_triggering(env.msg):
                    heapq.heappush(times, env.t_arrive)
        self.plane.inject(envelopes)

    def take_outbox(self) -> list[Envelope]:
        return self.plane.take_outbox()

    def step(self, payload: bytes) -> bytes:
        """One window of a remote node shard: inject the inbound envelopes, process every event
        before the horizon, reply with the outbox, the next event time and the response bound."""
        import msgpack  # windows cross processes only on the Ray runtime

        horizon_ms, inbound = msgpack.unpackb(payload)
        horizon_ms = math.inf if horizon_ms is None else horizon_ms
        if inbound:
            self.inject(decode(inbound))
        self.advance(horizon_ms)
        out = self.take_outbox()
        reply = [encode(out) if out else b"", _finite(self.next_event_ms()),
                 _finite(self.nodes.response_bound_ms(horizon_ms))]
        data: bytes = msgpack.packb(reply, use_bin_type=True)
        return data

    def next_event_ms(self) -> float:
        t = self.loop.peek_ms()
        return math.inf if t is None else t

    def result(self) -> NodeShardResult:
        """The node side's end-of-run result (what the Ray actor shell hands back)."""
        self.nodes.finalize()
        return NodeShardResult(self.nodes.rank_stats(), self.gaps, self.nodes.collected_kv_events(),
                               self.plane.counters, self.loop.num_events, self.loop.now_ms)


# ---------------------------------------------------------------------- window protocol

def _finite(x: float) -> float | None:
    return None if math.isinf(x) else x


def encode_step(horizon_ms: float, inbound: list[Envelope]) -> bytes:
    """The coordinator's step payload for `Shard.step`."""
    import msgpack

    data: bytes = msgpack.packb([_finite(horizon_ms), encode(inbound) if inbound else b""], use_bin_type=True)
    return data


def decode_reply(payload: bytes) -> tuple[list[Envelope], float, float]:
    """`(outbox, next event ms, response bound ms)` of a `Shard.step` reply (inf: none)."""
    import msgpack

    out, nxt, bound = msgpack.unpackb(payload)
    return (decode(out) if out else []), (math.inf if nxt is None else nxt), (math.inf if bound is None else bound)
