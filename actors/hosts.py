"""Ray actor shells: a node shard behind an actor (DESIGN §3, §9). No simulation logic here.

`NodeShardHost` wraps a `cluster.shard.Shard` built from a `ShardPlan`. The coordinator
(`cluster.runtime`) drives it window by window with one operation, `step(horizon,
inbound) -> reply`, over one of two channels:
- "ray": each window is a Ray actor call (`step`);
- "zmq": `open_channel()` binds a ZMQ PAIR socket on this node's IP and returns its
  endpoint; `serve()` then answers steps on that socket until told to stop. A window
  costs one socket round trip (~0.1-0.3 ms) instead of a Ray call (~1-3 ms), which is
  what keeps a run with tens of thousands of windows close to the Local runtime.
Payloads are the window protocol of `cluster.shard` (`Shard.step`).
"""

from __future__ import annotations

from typing import Any

from cluster.shard import STOP, NodeShardResult, Shard, ShardPlan


class NodeShardHost:
    """A node shard in a Ray actor (apply `ray.remote` in `cluster.runtime`, not here)."""

    def __init__(self, plan: ShardPlan) -> None:
        self.shard = Shard(plan, hosts_control=False)
        self._socket: Any = None
        self._context: Any = None

    def ready(self) -> int:
        """Number of ranks hosted (a cheap call that proves the actor started)."""
        return len(self.shard.plan.ranks)

    def step(self, payload: bytes) -> bytes:
        """One window (`Shard.step`)."""
        return self.shard.step(payload)

    def open_channel(self, host: str) -> str:
        """Bind the ZMQ channel on `host` (this node's IP); returns the endpoint to connect to."""
        import zmq

        self._context = zmq.Context.instance()
        self._socket = self._context.socket(zmq.PAIR)
        self._socket.setsockopt(zmq.LINGER, 0)
        port = self._socket.bind_to_random_port(f"tcp://{host}")
        return f"tcp://{host}:{port}"

    def serve(self) -> int:
        """Answer steps on the ZMQ channel until the coordinator says stop; returns steps served."""
        sock = self._socket
        assert sock is not None, "open_channel first"
        served = 0
        while True:
            msg = sock.recv()
            if msg == STOP:
                sock.send(STOP)
                break
            sock.send(self.step(msg))
            served += 1
        sock.close()
        self._socket = None
        return served

    def result(self) -> NodeShardResult:
        """The shard's ranks, gaps, KV events and counters (end of run)."""
        return self.shard.node_result()
