"""Simulated links: latency, loss, duplication, reordering, FIFO and partitions, all seeded."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from cluster.plane.endpoint import EventPlaneConfig
from cluster.plane.links import (
    ConstantLatency,
    ExponentialLatency,
    Link,
    LinkCounters,
    LinkSpec,
    LognormalLatency,
    NormalLatency,
    Partition,
    UniformLatency,
)
from cluster.plane.messages import Topic


def _link(spec: LinkSpec, topic: Topic = Topic.KV_EVENTS, partitions: tuple[Partition, ...] = (),
          src: int = 1, dst: int = 0, seed: int = 3) -> tuple[Link, LinkCounters]:
    counters = LinkCounters()
    return Link(spec, topic, src, dst, seed, partitions, counters), counters


def test_constant_latency_needs_no_generator_and_is_exact() -> None:
    link, c = _link(LinkSpec(latency=ConstantLatency(ms=0.5)))
    assert link._rng is None
    assert [link.transmit(t) for t in (0.0, 1.25, 1.25)] == [[0.5], [1.75], [1.75]]
    assert (c.sent, c.delivered, c.lost) == (3, 3, 0)


@pytest.mark.parametrize("latency, floor", [
    (UniformLatency(dist="uniform", low_ms=0.2, high_ms=0.9), 0.2),
    (NormalLatency(dist="normal", mean_ms=0.5, std_ms=0.5, min_ms=0.1), 0.1),
    (LognormalLatency(dist="lognormal", median_ms=0.3, sigma=1.0, min_ms=0.25), 0.25),
    (ExponentialLatency(dist="exponential", mean_ms=0.4, min_ms=0.05), 0.05),
])
def test_sampled_latency_never_goes_below_its_floor(latency: object, floor: float) -> None:
    spec = LinkSpec(latency=latency)  # type: ignore[arg-type]
    assert spec.min_latency_ms == floor
    link, _ = _link(spec)
    samples = [link.transmit(10.0)[0] - 10.0 for _ in range(2000)]
    assert min(samples) >= floor - 1e-12
    assert len(set(samples)) > 100


def test_same_seed_same_fate_and_links_are_independent() -> None:
    spec = LinkSpec(latency=UniformLatency(dist="uniform", low_ms=0.1, high_ms=1.0), loss=0.3, duplicate=0.1)
    a, _ = _link(spec, seed=9)
    b, _ = _link(spec, seed=9)
    other, _ = _link(spec, seed=9, src=2)
    runs = [[link.transmit(float(t)) for t in range(200)] for link in (a, b, other)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_loss_duplication_and_reordering_rates() -> None:
    spec = LinkSpec(latency=ConstantLatency(ms=1.0), loss=0.2, duplicate=0.1, reorder=0.3, reorder_window_ms=4.0)
    link, c = _link(spec)
    n = 20_000
    arrivals = [link.transmit(float(t)) for t in range(n)]
    assert c.sent == n and c.lost == sum(1 for a in arrivals if not a)
    assert c.lost / n == pytest.approx(0.2, abs=0.01)
    assert c.duplicated / (n - c.lost) == pytest.approx(0.1, abs=0.01)
    assert c.reordered / (n - c.lost) == pytest.approx(0.3, abs=0.015)
    assert c.delivered == sum(len(a) for a in arrivals)
    # A reordered message is overtaken: some later send arrives earlier.
    firsts = [(a[0], t) for t, a in enumerate(arrivals) if a]
    assert any(x[0] > y[0] for x, y in zip(firsts, firsts[1:]))


def test_reliable_topics_are_fifo_and_never_lose() -> None:
    spec = LinkSpec(latency=LognormalLatency(dist="lognormal", median_ms=1.0, sigma=1.5), loss=0.5, duplicate=0.5)
    link, c = _link(spec, topic=Topic.RESPONSES)
    arrivals = [link.transmit(t * 0.01) for t in range(3000)]
    assert all(len(a) == 1 for a in arrivals)
    flat = [a[0] for a in arrivals]
    assert flat == sorted(flat)
    assert c.lost == c.duplicated == 0


def test_partition_drops_pubsub_and_delays_reliable_messages() -> None:
    part = Partition(10.0, 20.0, frozenset({1}))
    kv, kvc = _link(LinkSpec(latency=ConstantLatency(ms=0.5)), Topic.KV_EVENTS, (part,))
    assert kv.transmit(9.0) == [9.5]
    assert kv.transmit(10.0) == [] and kv.transmit(19.9) == []
    assert kv.transmit(20.0) == [20.5]
    assert kvc.partitioned == 2 and kvc.delivered == 2
    resp, rc = _link(LinkSpec(latency=ConstantLatency(ms=0.5)), Topic.RESPONSES, (part,))
    assert resp.transmit(12.0) == [20.5]  # held until the partition heals, then the latency
    assert resp.transmit(20.1) == [20.6]
    assert rc.partitioned == 1
    # Both ends on the same side of the partition: unaffected.
    inside, _ = _link(LinkSpec(latency=ConstantLatency(ms=0.5)), Topic.KV_EVENTS, (Partition(0, 99, frozenset({1, 0})),))
    assert inside.transmit(5.0) == [5.5]


def test_plane_config_defaults_overrides_and_lookahead() -> None:
    cfg = EventPlaneConfig(latency_ms=0.5, loss=0.2,
                           links={Topic.RESPONSES: LinkSpec(latency=UniformLatency(dist="uniform", low_ms=0.3,
                                                                                   high_ms=2.0))})
    assert cfg.spec(Topic.KV_EVENTS).loss == 0.2
    assert cfg.spec(Topic.REQUESTS).loss == 0.0  # reliable topics never lose
    assert cfg.min_latency_ms((Topic.REQUESTS, Topic.RESPONSES)) == 0.3
    assert cfg.kv_lossy and cfg.effective_heartbeat_ms() == 1000.0
    assert EventPlaneConfig(latency_ms=0.5).effective_heartbeat_ms() is None
    assert EventPlaneConfig(latency_ms=0.5).effective_heartbeat_ms(partitions=True) == 1000.0
    assert EventPlaneConfig(loss=0.1, recovery=False).effective_heartbeat_ms() is None
    with pytest.raises(ValidationError, match="latency_ms or latency"):
        EventPlaneConfig(latency_ms=1.0, latency=ConstantLatency(ms=1.0))
    with pytest.raises(ValidationError, match="high_ms"):
        UniformLatency(dist="uniform", low_ms=2.0, high_ms=1.0)
    assert math.isfinite(cfg.spec(Topic.METRICS).min_latency_ms)
