"""The simulated transport of the event plane: links on the virtual clock (DESIGN §8).

A `Link` carries one topic from one sender address to one receiver address. The SENDER
owns it, with its own seeded generator, and decides at send time when (and whether, and
how many times) a message arrives, so the draws happen in the sender's own event order
and a run is reproducible however its components are spread over shards.

Per message (`Link.transmit(t_send)` -> arrival times, possibly none or two):
- latency: a sample of `LinkSpec.latency` (never below its `min_ms`);
- pub/sub topics (kv_events, metrics) only: lost with probability `loss`; an extra
  copy with probability `duplicate` (its own latency sample); with probability
  `reorder` an extra delay uniform in [0, reorder_window_ms) so later messages overtake it;
- reliable topics (requests, responses, kv_replay, control) are TCP-like: FIFO
  (arrival >= the previous arrival on the link), never lost or duplicated;
- partitions (`Partition`): while a partition separates the two ends, pub/sub messages
  are dropped and reliable ones wait until it heals (then take a fresh latency).

`LinkSpec.min_latency_ms` is the lower bound the Ray runtime's conservative windows use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from cluster.plane.messages import Topic
from cluster.sim.seeds import component_rng


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ConstantLatency(_Frozen):
    dist: Literal["constant"] = "constant"
    ms: float = Field(0.0, ge=0.0)

    @property
    def min_ms(self) -> float:
        return self.ms


class UniformLatency(_Frozen):
    dist: Literal["uniform"]
    low_ms: float = Field(ge=0.0)
    high_ms: float = Field(ge=0.0)

    @model_validator(mode="after")
    def _ordered(self) -> "UniformLatency":
        if self.high_ms < self.low_ms:
            raise ValueError("high_ms must be >= low_ms")
        return self

    @property
    def min_ms(self) -> float:
        return self.low_ms


class NormalLatency(_Frozen):
    """Normal, truncated below at `min_ms` (samples under it are clamped to it)."""

    dist: Literal["normal"]
    mean_ms: float = Field(ge=0.0)
    std_ms: float = Field(ge=0.0)
    min_ms: float = Field(0.0, ge=0.0)


class LognormalLatency(_Frozen):
    """`min_ms + median_ms * exp(sigma * N(0, 1))`: a long tail above a floor."""

    dist: Literal["lognormal"]
    median_ms: float = Field(gt=0.0)
    sigma: float = Field(ge=0.0)
    min_ms: float = Field(0.0, ge=0.0)


class ExponentialLatency(_Frozen):
    """`min_ms + Exp(mean_ms)`."""

    dist: Literal["exponential"]
    mean_ms: float = Field(gt=0.0)
    min_ms: float = Field(0.0, ge=0.0)


LatencySpec = Annotated[
    Union[ConstantLatency, UniformLatency, NormalLatency, LognormalLatency, ExponentialLatency],
    Field(discriminator="dist"),
]


class LinkSpec(_Frozen):
    """How one topic's links behave. Loss, duplication and reordering apply to pub/sub topics."""

    latency: LatencySpec = Field(default_factory=ConstantLatency)
    loss: float = Field(0.0, ge=0.0, le=1.0)
    duplicate: float = Field(0.0, ge=0.0, le=1.0)
    reorder: float = Field(0.0, ge=0.0, le=1.0)
    reorder_window_ms: float = Field(5.0, ge=0.0)

    @property
    def min_latency_ms(self) -> float:
        return self.latency.min_ms

    @property
    def deterministic(self) -> bool:
        """True when no message needs a random draw (constant latency, nothing lost or reordered)."""
        return (isinstance(self.latency, ConstantLatency) and self.loss == 0.0 and self.duplicate == 0.0
                and self.reorder == 0.0)

    @property
    def lossy(self) -> bool:
        """Whether a subscriber can see gaps, duplicates or reordering on this link."""
        return self.loss > 0.0 or self.duplicate > 0.0 or self.reorder > 0.0 or not isinstance(
            self.latency, ConstantLatency)


@dataclass(frozen=True, slots=True)
class Partition:
    """From `start_ms` until `end_ms`, the addresses in `isolated` and every rank on the `nodes` cannot
    reach the rest, nor be reached (ranks started during the run on those nodes included).

    With `blocks=False` it is a degradation instead (`degrade_link`): the links crossing that
    boundary (or, with no addresses and nodes, every link) of `topics` (empty: all) get
    `extra_latency_ms` more latency, and pub/sub messages are lost with probability `loss`.
    """

    start_ms: float
    end_ms: float
    isolated: frozenset[int] = frozenset()
    nodes: frozenset[str] = frozenset()
    blocks: bool = True
    extra_latency_ms: float = 0.0
    loss: float = 0.0
    topics: frozenset[str] = frozenset()
    """Topic values (`Topic.value`) it applies to; empty: every topic."""

    def isolates(self, addr: int, node: str | None) -> bool:
        return addr in self.isolated or (node is not None and node in self.nodes)

    def affects(self, topic: Topic, src: int, src_node: str | None, dst: int, dst_node: str | None) -> bool:
        if self.topics and topic.value not in self.topics:
            return False
        if not self.blocks and not self.isolated and not self.nodes:
            return True
        return self.isolates(src, src_node) != self.isolates(dst, dst_node)


@dataclass(slots=True)
class LinkCounters:
    """What happened to the messages sent on the links of one topic (summed over links)."""

    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    partitioned: int = 0
    """Pub/sub messages dropped, or reliable messages held, by a partition."""


class Link:
    """One sender's link to one receiver on one topic. See the module docstring."""

    __slots__ = ("spec", "topic", "src", "dst", "_rng", "_last_arrival", "_partitions", "_counters", "_pubsub",
                 "_const")

    def __init__(self, spec: LinkSpec, topic: Topic, src: int, dst: int, seed: int,
                 partitions: tuple[Partition, ...], counters: LinkCounters, src_node: str | None = None,
                 dst_node: str | None = None) -> None:
        self.spec = spec
        self.topic = topic
        self.src = src
        self.dst = dst
        self._pubsub = topic.pubsub
        self._partitions = tuple(p for p in partitions if p.affects(topic, src, src_node, dst, dst_node))
        # Deterministic links draw nothing: no generator (cheap at thousands of links).
        lossy_window = self._pubsub and any(p.loss > 0.0 for p in self._partitions)
        self._rng: np.random.Generator | None = (
            None if spec.deterministic and not lossy_window else component_rng(seed, f"link/{topic.value}/{src}/{dst}"))
        self._const = spec.latency.ms if isinstance(spec.latency, ConstantLatency) else None
        self._last_arrival = -math.inf
        self._counters = counters

    def _latency(self) -> float:
        if self._const is not None:
            return self._const
        rng = self._rng
        assert rng is not None
        lat = self.spec.latency
        if isinstance(lat, UniformLatency):
            return float(rng.uniform(lat.low_ms, lat.high_ms))
        if isinstance(lat, NormalLatency):
            return max(lat.min_ms, float(rng.normal(lat.mean_ms, lat.std_ms)))
        if isinstance(lat, LognormalLatency):
            return lat.min_ms + lat.median_ms * math.exp(lat.sigma * float(rng.standard_normal()))
        assert isinstance(lat, ExponentialLatency)
        return lat.min_ms + float(rng.exponential(lat.mean_ms))

    def transmit(self, t_send: float) -> list[float]:
        """Arrival times of the copies of a message sent at `t_send` (empty: lost)."""
        c = self._counters
        c.sent += 1
        if self._rng is None and not self._partitions:
            # Constant latency, nothing lost: FIFO holds by construction.
            c.delivered += 1
            return [t_send + self._const]  # type: ignore[operator]
        start = t_send
        extra = 0.0
        window_loss = 0.0
        for p in self._partitions:
            if p.start_ms <= t_send < p.end_ms:
                if not p.blocks:  # a degraded link: slower, and lossy for pub/sub
                    extra += p.extra_latency_ms
                    window_loss = max(window_loss, p.loss)
                    continue
                c.partitioned += 1
                if self._pubsub:
                    return []
                start = max(start, p.end_ms)
        start += extra
        if not self._pubsub:
            arrival = max(start + self._latency(), self._last_arrival)
            self._last_arrival = arrival
            c.delivered += 1
            return [arrival]
        spec = self.spec
        rng = self._rng
        if rng is None:
            c.delivered += 1
            return [start + self._latency()]
        if window_loss and rng.random() < window_loss:
            c.lost += 1
            return []
        if spec.loss and rng.random() < spec.loss:
            c.lost += 1
            return []
        arrival = start + self._latency()
        if spec.reorder and rng.random() < spec.reorder:
            arrival += float(rng.uniform(0.0, spec.reorder_window_ms))
            c.reordered += 1
        out = [arrival]
        if spec.duplicate and rng.random() < spec.duplicate:
            out.append(start + self._latency())
            c.duplicated += 1
        c.delivered += len(out)
        return out
