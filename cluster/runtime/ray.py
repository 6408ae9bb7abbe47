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

import contextlib
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
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
                address = os.environ["RAY_ADDRESS"]
            _join_ray(ray, address)
        actor_cls: Any = ray.remote(num_cpus=0)(StepHost)
        # Shard k goes to Ray node k mod (alive nodes), so shards spread over a multi-node cluster;
        # they share nothing but their window messages (no filesystem, no process memory).
        placement = _node_strategies(ray, len(groups))
        self.actors: list[Any] = [
            actor_cls.options(scheduling_strategy=placement[k], name=f"clustersim-{os.getpid()}-shard-{k}").remote(
                partial(Shard, setup.shard_plan([setup.ranks[g] for g in group]), hosts_control=False))
            for k, group in enumerate(groups)]
        try:
            ray.get([a.ready.remote() for a in self.actors])
            self.nodes: list[str] = ray.get([a.node_id.remote() for a in self.actors])
            """The Ray node of each shard."""
        except Exception as exc:
            raise RuntimeSetupError(f"a node shard was lost while starting: {_first_line(exc)}") from None
        self.channel = channel
        self._serving: list[Any] = []
        self._sockets: list[Any] = []
        if channel == "zmq":
            import zmq

            endpoints = ray.get([a.open_channel.remote("") for a in self.actors])  # each binds on its node's IP
            self._serving = [a.serve.remote() for a in self.actors]
            ctx: Any = zmq.Context.instance()
            for ep in endpoints:
                sock = ctx.socket(zmq.PAIR)
                sock.setsockopt(zmq.LINGER, 0)
                sock.connect(ep)
                self._sockets.append(sock)

    def step(self, work: dict[int, bytes], t_ms: float) -> dict[int, bytes]:
        """Send each shard in `work` its step payload for the window ending at `t_ms`; return the replies.

        Raises:
            RuntimeSetupError: a shard died or its channel broke (one line: which shard, when).
        """
        if self.channel == "ray":
            refs = {k: self.actors[k].step.remote(p) for k, p in work.items()}
            replies: dict[int, bytes] = {}
            for k, ref in refs.items():
                try:
                    replies[k] = self.ray.get(ref)
                except Exception as exc:  # the actor died (ray.kill, a crash, its node went away)
                    raise RuntimeSetupError(_lost(k, t_ms, exc)) from None
            return replies
        import zmq

        try:
            for k, p in work.items():
                self._sockets[k].send(p)
            return {k: self._recv(k, t_ms) for k in work}
        except zmq.ZMQError as exc:
            raise RuntimeSetupError(f"the coordinator lost its channel to the node shards in the window "
                                    f"ending at simulated {_t(t_ms)}: {exc}") from None

    def _recv(self, k: int, t_ms: float) -> bytes:
        import zmq

        sock = self._sockets[k]
        waited_s = 0.0
        while not sock.poll(_POLL_MS, zmq.POLLIN):
            waited_s += _POLL_MS / 1000.0
            if waited_s >= REPLY_TIMEOUT_S:  # alive but silent: the channel is gone
                raise RuntimeSetupError(_lost(k, t_ms, None) + f" for {waited_s:.0f} s (ZMQ channel lost)")
            ready, _ = self.ray.wait([self._serving[k]], timeout=0)
            if ready:  # its serving loop ended without answering: it died, or its socket broke
                try:
                    self.ray.get(ready[0])
                except Exception as exc:
                    raise RuntimeSetupError(_lost(k, t_ms, exc)) from None
                raise RuntimeSetupError(_lost(k, t_ms, None))
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


_POLL_MS = 1000
"""How often a coordinator waiting for a shard's reply checks that the shard is still there."""
_CONNECT_TIMEOUT_S = 10.0
REPLY_TIMEOUT_S = 300.0
"""A live shard that has not answered a window for this long has lost its channel."""


def _t(t_ms: float) -> str:
    return "the end" if math.isinf(t_ms) else f"t={t_ms:.3f} ms"


def _lost(k: int, t_ms: float, exc: BaseException | None) -> str:
    why = "it stopped answering" if exc is None else _first_line(exc)
    return f"node shard {k} was lost in the window ending at simulated {_t(t_ms)}: {why}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _join_ray(ray: Any, address: str | None) -> None:
    """`ray.init` at the address the user gave, loopback included, or a local Ray (None).

    Ray rewrites a loopback address to this machine's outward interface and then looks for a
    node there; a cluster bound to 127.0.0.1 (`ray start --node-ip-address 127.0.0.1`,
    `ray.cluster_utils.Cluster`) is not there, and Ray retries for minutes. So the address is
    checked first (a plain TCP connect, `_CONNECT_TIMEOUT_S`), and a loopback one is used as given
    (the GCS is reached there; `ray start --head --node-ip-address 127.0.0.1` may still register
    its node under the outward IP, which the driver then finds as usual).
    """
    import socket

    where = f"at {address}" if address else "locally"
    loopback = False
    if address is not None and address not in ("auto", "local") and "://" not in address:
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        if not host or not port.isdigit():
            raise RuntimeSetupError(f"--ray-address {address!r}: expected HOST:PORT")
        try:
            socket.create_connection((host, int(port)), timeout=_CONNECT_TIMEOUT_S).close()
        except OSError as exc:
            raise RuntimeSetupError(f"cannot reach Ray {where}: {exc.strerror or exc} (is the head running, "
                                    "and is that its GCS port?)") from None
        loopback = host in ("127.0.0.1", "localhost", "::1")
    from ray._private import services  # the rewrite of loopback addresses lives here

    keep = services.resolve_ip_for_localhost
    if loopback:  # the driver still finds its node by Ray's own means (a head may register either IP)
        services.resolve_ip_for_localhost = lambda host: host
    try:
        with _quiet_stderr():  # Ray's core logs each retry; the user gets one line if it fails
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # connection, authentication: one line for the user
        raise RuntimeSetupError(f"cannot start or join Ray {where}: {_first_line(exc)} (with token "
                                "authentication, export RAY_AUTH_MODE=token; see the README)") from None
    finally:
        services.resolve_ip_for_localhost = keep


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """File descriptor 2 goes to /dev/null meanwhile (Ray's C++ core writes there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _node_strategies(ray: Any, count: int) -> list[Any]:
    """Scheduling strategies putting shard k on alive Ray node k mod n (node id order)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
    if len(nodes) <= 1:
        return [None] * count
    return [NodeAffinitySchedulingStrategy(nodes[k % len(nodes)], soft=False) for k in range(count)]


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
    result.extra["shard_nodes"] = pool.nodes
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
    for k, payload in pool.step({k: encode_step(0.0, []) for k in range(num_shards)}, 0.0).items():
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
        replies = pool.step(work, horizon)
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
