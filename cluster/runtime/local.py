"""The Local runtime: one process, one event loop, ONE shard holding the control components
(frontend + router) and every rank.
"""

from __future__ import annotations

from typing import Callable, Sequence

from actors.engine.records import GapLog, RequestRecord
from cluster.control.host import ControlHost
from cluster.plane.links import LinkCounters
from cluster.plane.messages import KvBatchMsg, Topic
from cluster.runtime.gc_policy import fewer_collections
from cluster.runtime.setup import SimulationSetup
from cluster.runtime.shard import NodeShardResult, RunResult, Shard
from cluster.sim.clock import EventLoop


def finish_run(control: ControlHost, nodes: Sequence[NodeShardResult],
               counter_sets: Sequence[dict[Topic, LinkCounters]], num_events: int, end_ms: float) -> RunResult:
    """Merge the node shards' results and the plane counters of every shard into one `RunResult`."""
    ranks = sorted((r for n in nodes for r in n.ranks), key=lambda r: r.gidx)
    gaps = GapLog()
    for n in nodes:
        gaps.extend(n.gaps)
    where = {r.gidx: (n, k) for n in nodes for k, r in enumerate(n.ranks)}
    kv_events = [e for g in range(len(ranks)) for e in where[g][0].kv_events[where[g][1]]]
    counters: dict[Topic, LinkCounters] = {t: LinkCounters() for t in Topic}
    for source in counter_sets:
        for topic, c in source.items():
            total = counters[topic]
            for name in ("sent", "delivered", "lost", "duplicated", "reordered", "partitioned"):
                setattr(total, name, getattr(total, name) + getattr(c, name))
    control.router.kv_router.advance(float("inf"))  # events still held by kv_event_lag_ms reach the index
    return RunResult(records=control.frontend.records, gaps=gaps, ranks=ranks, kv_events=kv_events,
                     counters=counters, num_events=num_events, end_ms=end_ms)


def run_local(setup: SimulationSetup, on_done: Callable[[RequestRecord], None] | None = None,
              kv_tap: Callable[[KvBatchMsg], None] | None = None,
              until_ms: float = float("inf"),
              on_loop: Callable[[EventLoop], None] | None = None) -> tuple[RunResult, ControlHost]:
    """Run `setup` in this process on one event loop (the Local runtime).

    `kv_tap` sees every KV batch the ranks publish, as they publish it (e.g. a ZMQ mirror).
    `until_ms` stops the clock there (the reference's `max_sim_time_ms`): events after it never
    run, so requests that have not arrived have no record and those in flight stay incomplete.
    `on_loop` is given the event loop before it runs, so a host can stop the run early
    (`EventLoop.request_stop`); the result then holds what was simulated until then.
    """
    with fewer_collections():  # the collector traverses less; reports do not change
        shard = Shard(setup.shard_plan(setup.ranks), hosts_control=True, hosts_everything=True)
        if on_loop is not None:
            on_loop(shard.loop)
        shard.nodes.kv_tap = kv_tap
        control = shard.attach_control(lambda loop, plane: setup.build_control(loop, plane, on_done))
        control.frontend.start()
        if until_ms == float("inf"):
            shard.advance(until_ms)
        else:
            shard.loop.run(until_ms)  # inclusive: the reference stops once the clock would pass the cap
        result = finish_run(control, [shard.result()], [shard.plane.counters], shard.loop.num_events,
                            min(shard.loop.now_ms, until_ms))
    return result, control
