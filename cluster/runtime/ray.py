"""Runtimes: Local (one process, one loop) and Ray (node shards in Ray actors) (DESIGN §9).

The Ray runtime keeps the control shard (frontend and router) in the driver and spreads
whole nodes over `shards` Ray actors (`actors.hosts.StepHost` around a `cluster.runtime.shard.Shard`), balancing ranks.
A coordinator advances virtual time in conservative windows. With `L_req` the smallest
latency from the control shard to a rank and `L_resp` the smallest latency back, each
window does:

1. `S` = the earliest time the control shard could send anything: its next workload
   arrival or triggering delivery, or the earliest triggering message the node shards
   could still send (their bound, or the arrival of a message they are about to get)
   plus `L_resp`;
2. every node shard with work processes all events before `H = S + L_req` (no message
   from the control shard can reach it earlier), and returns its outbox;
3. the control shard takes those envelopes and processes all events before
   `H + L_resp` (no node message can reach it earlier), and its outbox goes to the
   node shards with the next window.
So each window is at most `L_req + L_resp` long where the control shard may act, and
skips idle stretches entirely; a trace-driven run takes about one window per arrival.
Every same-instant order is fixed by keys derived from the components themselves, so the
report is byte-identical to the Local runtime's for any number of shards.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

from actors.engine.records import RequestRecord
from actors.hosts import STOP, StepHost
from cluster.control.host import ControlHost
from cluster.plane.links import LinkCounters
from cluster.plane.messages import CONTROL_ADDR, Envelope, Topic
from cluster.runtime.local import finish_run
from cluster.runtime.setup import SimulationSetup
from cluster.runtime.shard import NodeShardResult, RunResult, Shard, decode_reply, encode_step

Channel = Literal["zmq", "ray"]
REQUEST_TOPICS = (Topic.REQUESTS, Topic.KV_REPLAY, Topic.CONTROL)  # control -> rank: start, drain, stop, shutdown
RESPONSE_TOPICS = (Topic.RESPONSES, Topic.KV_EVENTS, Topic.METRICS, Topic.KV_REPLAY, Topic.CONTROL)


class RuntimeSetupError(RuntimeError):
    """The run cannot use this runtime as configured (one line for the user)."""


def assign_shards(node_of_rank: Sequence[str], shards: int, other_nodes: Sequence[str] = ()) -> list[list[int]]:
    """Whole nodes to shards, greedily balancing ranks (nodes by name; ties to the lowest shard).

    `other_nodes` host no rank at the start (workers may be added there during the run); they
    count towards the nodes available, and `ShardMap` places them.
    """
    ranks_of: dict[str, list[int]] = {}
    for g, node in enumerate(node_of_rank):
        ranks_of.setdefault(node, []).append(g)
    available = len(set(ranks_of) | set(other_nodes))
    if shards > available:
        raise RuntimeSetupError(f"--shards {shards}: only {available} node(s) host workers; shards hold whole nodes")
    loads = [0] * shards
    out: list[list[int]] = [[] for _ in range(shards)]
    for node in sorted(ranks_of, key=lambda n: (-len(ranks_of[n]), n)):
        k = min(range(shards), key=lambda i: (loads[i], i))
        out[k].extend(ranks_of[node])
        loads[k] += len(ranks_of[node])
    return [sorted(x) for x in out]


class ShardMap:
    """Which shard holds each node, and so each rank address; nodes seen later (workers added on a
    node that hosted none, or on a new abstract GPU) go to the shard with the fewest nodes."""

    def __init__(self, groups: list[list[int]], node_of_rank: Sequence[str], node_of_addr: dict[int, str],
                 other_nodes: Sequence[str]) -> None:
        self._node_of_addr = node_of_addr
        self.shard_of_node: dict[str, int] = {}
        for k, group in enumerate(groups):
            for g in group:
                self.shard_of_node[node_of_rank[g]] = k
        self._count = [0] * len(groups)
        for k in self.shard_of_node.values():
            self._count[k] += 1
        for node in sorted(set(other_nodes) - set(self.shard_of_node)):
            self._place(node)

    def _place(self, node: str) -> int:
        k = min(range(len(self._count)), key=lambda i: (self._count[i], i))
        self.shard_of_node[node] = k
        self._count[k] += 1
        return k

    def shard_of(self, addr: int) -> int:
        if addr == CONTROL_ADDR:
            return -1
        node = self._node_of_addr[addr]
        k = self.shard_of_node.get(node)
        return k if k is not None else self._place(node)


class _Shards:
    """The coordinator's handles on the node-shard actors and the channel to them."""

    def __init__(self, setup: SimulationSetup, groups: list[list[int]], address: str | None,
                 channel: Channel) -> None:
        import ray

        self.ray = ray
        if not ray.is_initialized():
            if address is None and os.environ.get("RAY_ADDRESS"):
                address = "auto"
            try:
                ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
            except Exception as exc:  # connection, authentication: one line for the user
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                where = f"at {address}" if address else "locally"
                raise RuntimeSetupError(f"cannot start or join Ray {where}: {first} (with token authentication, "
                                        "export RAY_AUTH_MODE=token; see the README)") from None
        actor_cls: Any = ray.remote(num_cpus=0)(StepHost)
        self.actors: list[Any] = [
            actor_cls.remote(partial(Shard, setup.shard_plan([setup.ranks[g] for g in group]), hosts_control=False))
            for group in groups]
        ray.get([a.ready.remote() for a in self.actors])
        self.channel = channel
        self._serving: list[Any] = []
        self._sockets: list[Any] = []
        if channel == "zmq":
            import zmq

            host: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
            endpoints = ray.get([a.open_channel.remote(host) for a in self.actors])
            self._serving = [a.serve.remote() for a in self.actors]
            ctx: Any = zmq.Context.instance()
            for ep in endpoints:
                sock = ctx.socket(zmq.PAIR)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(ep)
                self._sockets.append(sock)

    def step(self, work: dict[int, bytes]) -> dict[int, bytes]:
        """Send each shard in `work` its step payload; return the replies."""
        if self.channel == "ray":
            refs = {k: self.actors[k].step.remote(p) for k, p in work.items()}
            return dict(zip(refs, self.ray.get(list(refs.values()))))
        for k, p in work.items():
            self._sockets[k].send(p)
        return {k: self._recv(k) for k in work}

    def _recv(self, k: int) -> bytes:
        import zmq

        sock = self._sockets[k]
        while not sock.poll(5000, zmq.POLLIN):
            ready, _ = self.ray.wait([self._serving[k]], timeout=0)
            if ready:
                self.ray.get(ready[0])  # raises the actor's error
                raise RuntimeSetupError(f"node shard {k} stopped answering")
        data: bytes = sock.recv()
        return data

    def finish(self) -> list[NodeShardResult]:
        if self.channel == "zmq":
            for sock in self._sockets:
                sock.send(STOP)
            for sock in self._sockets:
                sock.recv()
                sock.close()
            self.ray.get(self._serving)
        results: list[NodeShardResult] = self.ray.get([a.result.remote() for a in self.actors])
        for a in self.actors:
            self.ray.kill(a)
        return results

    def abort(self) -> None:
        for sock in self._sockets:
            sock.close(0)
        for a in self.actors:
            self.ray.kill(a)


def run_ray(setup: SimulationSetup, node_of_rank: Sequence[str], shards: int = 1, *,
            on_done: Callable[[RequestRecord], None] | None = None, address: str | None = None,
            channel: Channel = "zmq", nodes: Sequence[str] = ()) -> tuple[RunResult, ControlHost]:
    """Run `setup` with its nodes spread over `shards` Ray actors (see the module docstring).

    `nodes`: every node of the cluster (those without initial workers may get some later).
    """
    l_req = setup.plane.min_latency_ms(REQUEST_TOPICS)
    l_resp = setup.plane.min_latency_ms(RESPONSE_TOPICS)
    if l_req + l_resp <= 0.0:
        raise RuntimeSetupError("the Ray runtime needs event-plane latency > 0 (event_plane.latency_ms): shards "
                            "synchronise in windows as long as the smallest cross-shard latency")
    other = [n for n in nodes if n not in set(node_of_rank)]
    groups = assign_shards(node_of_rank, shards, other)
    control_shard = Shard(setup.shard_plan([]), hosts_control=True)
    control = control_shard.attach_control(lambda loop, plane: setup.build_control(loop, plane, on_done))
    shard_map = ShardMap(groups, node_of_rank, control_shard.plane.node_of, other)
    pool = _Shards(setup, groups, address, channel)
    try:
        control.frontend.start()
        windows = _coordinate(control_shard, pool, len(groups), shard_map, l_req, l_resp)
        results = pool.finish()
    except BaseException:
        pool.abort()
        raise
    counters: list[dict[Topic, LinkCounters]] = [control_shard.plane.counters, *(r.counters for r in results)]
    num_events = control_shard.loop.num_events + sum(r.num_events for r in results)
    end_ms = max([control_shard.loop.now_ms, *(r.end_ms for r in results)])
    result = finish_run(control, results, counters, num_events, end_ms)
    result.extra["windows"] = windows
    result.extra["shards"] = len(groups)
    return result, control


def _coordinate(control_shard: Shard, pool: _Shards, num_shards: int, shard_map: ShardMap,
                l_req: float, l_resp: float) -> int:
    """The window loop of the module docstring; returns the number of windows."""
    control = control_shard.control
    assert control is not None
    # What node messages can make the control shard send: any (KV recovery), responses, or none.
    kv_triggers = control.reacts_to_stream
    resp_triggers = control.reacts_to_responses
    inf = math.inf
    next_event = [inf] * num_shards
    bound = [inf] * num_shards
    inbound: list[list[Envelope]] = [[] for _ in range(num_shards)]
    # A first empty window tells the coordinator what each shard has queued (faults, ...).
    for k, payload in pool.step({k: encode_step(0.0, []) for k in range(num_shards)}).items():
        _, next_event[k], bound[k] = decode_reply(payload)
    control_h = 0.0
    windows = 0
    while True:
        windows += 1
        s = control.next_send_ms(control_h)
        for k in range(num_shards):
            first_in = min((e.t_arrive for e in inbound[k]), default=inf)
            if kv_triggers:
                s = min(s, min(next_event[k], first_in) + l_resp)
            elif resp_triggers:
                s = min(s, min(bound[k], first_in) + l_resp)
        s = max(s, control_h)
        horizon = s + l_req
        work = {k: encode_step(horizon, inbound[k]) for k in range(num_shards)
                if inbound[k] or next_event[k] < horizon}
        inbound = [[] for _ in range(num_shards)]
        replies = pool.step(work)
        arrivals: list[Envelope] = []
        for k, payload in replies.items():
            out, next_event[k], bound[k] = decode_reply(payload)
            arrivals.extend(out)
        if arrivals:
            control_shard.inject(arrivals)
        control_h = horizon + l_resp
        control_shard.advance(control_h)
        for env in control_shard.take_outbox():
            inbound[shard_map.shard_of(env.dst)].append(env)
        idle = (all(x == inf for x in next_event) and not any(inbound)
                and control_shard.next_event_ms() == inf)
        if idle:
            return windows


__all__ = ["assign_shards", "run_ray"]
