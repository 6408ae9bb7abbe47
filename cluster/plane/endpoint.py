"""One shard's endpoint on the simulated event plane, and the plane's settings.

`PlaneEndpoint.send(topic, src, dst, msg, now)` draws the message's fate on the sender's
link (`cluster.plane.links.Link`) and, for each arriving copy, either schedules the delivery on
this shard's loop (the receiver lives here) or puts an `Envelope` in the outbox for the
runtime to carry to the receiver's shard. `publish` sends to every subscriber of a topic.
Delivery events are `(t_arrive, DELIVER, delivery_key(src, src_seq, copy))`: the key comes
from the sender's own message counter, so same-instant deliveries run in the same order
whatever shard layout carried them.

`EventPlaneConfig` is the `event_plane:` section of a scenario: a default link behaviour
plus per-topic overrides, and the KV stream recovery settings.
"""

from __future__ import annotations

from typing import Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cluster.plane.links import ConstantLatency, LatencySpec, Link, LinkCounters, LinkSpec, Partition
from cluster.plane.messages import Envelope, Message, Topic, delivery_key
from cluster.sim.clock import EventLoop, Priority


class EventPlaneConfig(BaseModel):
    """Latency, loss and recovery settings of the event plane (scenario `event_plane:`).

    `latency_ms` (or a `latency` distribution), `loss`, `duplicate`, `reorder` are the
    defaults of every topic; loss, duplication and reordering only affect the pub/sub
    topics (kv_events, metrics). `links` overrides a topic's whole `LinkSpec`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    latency_ms: float = Field(0.0, ge=0.0, description="constant latency of every link, ms")
    latency: LatencySpec | None = Field(None, description="a latency distribution instead of latency_ms")
    loss: float = Field(0.0, ge=0.0, le=1.0)
    duplicate: float = Field(0.0, ge=0.0, le=1.0)
    reorder: float = Field(0.0, ge=0.0, le=1.0)
    reorder_window_ms: float = Field(5.0, ge=0.0)
    links: dict[Topic, LinkSpec] = Field(default_factory=dict, description="per-topic overrides")
    recovery: bool = Field(True, description="detect KV stream gaps and recover by replay or resync")
    replay_buffer_batches: int = Field(10_000, ge=1, description="KV batches a publisher keeps for replays")
    heartbeat_ms: float | None = Field(
        None, gt=0.0, description="publisher heartbeat period (carries the last KV seq); default 1000 ms "
        "when KV or metrics links can lose messages, else off")
    heartbeat_count: int = Field(8, ge=1, description="heartbeats an idle rank sends after its last activity")

    @model_validator(mode="after")
    def _one_latency(self) -> "EventPlaneConfig":
        if self.latency is not None and self.latency_ms != 0.0:
            raise ValueError("give latency_ms or latency, not both")
        for topic, spec in self.links.items():
            if not topic.pubsub:
                for name in ("loss", "duplicate", "reorder"):
                    if getattr(spec, name):
                        raise ValueError(f"links.{topic.value}.{name}: {topic.value} is a reliable (TCP-like) "
                                         "topic; loss, duplicate and reorder apply to kv_events and metrics only")
        return self

    def spec(self, topic: Topic) -> LinkSpec:
        """The link behaviour of `topic`."""
        override = self.links.get(topic)
        if override is not None:
            return override
        latency = self.latency if self.latency is not None else ConstantLatency(ms=self.latency_ms)
        if topic.pubsub:
            return LinkSpec(latency=latency, loss=self.loss, duplicate=self.duplicate, reorder=self.reorder,
                            reorder_window_ms=self.reorder_window_ms)
        return LinkSpec(latency=latency)

    @property
    def kv_lossy(self) -> bool:
        """Whether KV batches or heartbeats can go missing, arrive twice or out of order."""
        return self.spec(Topic.KV_EVENTS).lossy or self.spec(Topic.METRICS).lossy

    def effective_heartbeat_ms(self, partitions: bool = False) -> float | None:
        """The heartbeat period in use: explicit, or 1000 ms when the KV stream can have holes."""
        if self.heartbeat_ms is not None:
            return self.heartbeat_ms
        return 1000.0 if (self.kv_lossy or partitions) and self.recovery else None

    def min_latency_ms(self, topics: tuple[Topic, ...]) -> float:
        """Smallest possible latency over `topics` (the lookahead of conservative windows)."""
        return min(self.spec(t).min_latency_ms for t in topics)


ZERO_LATENCY = EventPlaneConfig()
"""The offline replay's plane: every message arrives the instant it is sent."""


DeliveryHandler = Callable[[float, tuple[int, Message]], None]


class PlaneEndpoint:
    """Links, message counters and the outbox of one shard. See the module docstring."""

    def __init__(
        self,
        config: EventPlaneConfig,
        seed: int,
        loop: EventLoop,
        local: Callable[[int], bool],
        deliver: DeliveryHandler,
        partitions: tuple[Partition, ...] = (),
    ) -> None:
        self.config = config
        self._seed = seed
        self._loop = loop
        self._local = local
        self._deliver = deliver
        self._partitions = partitions
        self.node_of: dict[int, str] = {}
        """The node of each rank address this endpoint sends to or from (partitions are by node);
        hosts register their ranks (`cluster.nodes.host`, `cluster.control.fleet`)."""
        self._links: dict[tuple[Topic, int, int], Link] = {}
        self._src_seq: dict[int, int] = {}
        self._subscribers: dict[Topic, tuple[int, ...]] = {}
        self.counters: dict[Topic, LinkCounters] = {t: LinkCounters() for t in Topic}
        self.outbox: list[Envelope] = []

    def subscribe(self, topic: Topic, addresses: tuple[int, ...]) -> None:
        """Set who receives `publish(topic, ...)` (addresses anywhere in the cluster)."""
        self._subscribers[topic] = addresses

    def _link(self, topic: Topic, src: int, dst: int) -> Link:
        key = (topic, src, dst)
        link = self._links.get(key)
        if link is None:
            link = Link(self.config.spec(topic), topic, src, dst, self._seed, self._partitions,
                        self.counters[topic], self.node_of.get(src), self.node_of.get(dst))
            self._links[key] = link
        return link

    def send(self, topic: Topic, src: int, dst: int, msg: Message, now_ms: float) -> None:
        """Send `msg` from address `src` to `dst` at `now_ms`."""
        seq = self._src_seq.get(src, 0)
        self._src_seq[src] = seq + 1
        arrivals = self._link(topic, src, dst).transmit(now_ms)
        for copy, t in enumerate(arrivals):
            key = delivery_key(src, seq, copy)
            if self._local(dst):
                self._loop.schedule(t, Priority.DELIVER, key, self._deliver, (dst, msg))
            else:
                self.outbox.append(Envelope(t, key, dst, topic, msg))

    def publish(self, topic: Topic, src: int, msg: Message, now_ms: float) -> None:
        """Send `msg` to every subscriber of `topic`."""
        for dst in self._subscribers.get(topic, ()):
            self.send(topic, src, dst, msg, now_ms)

    def inject(self, envelopes: list[Envelope]) -> None:
        """Schedule deliveries carried here from other shards (all due at or after now)."""
        schedule = self._loop.schedule
        deliver = self._deliver
        for env in envelopes:
            schedule(env.t_arrive, Priority.DELIVER, env.key, deliver, (env.dst, env.msg))

    def take_outbox(self) -> list[Envelope]:
        out, self.outbox = self.outbox, []
        return out
