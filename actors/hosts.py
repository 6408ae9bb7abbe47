"""Ray actor shells (DESIGN §3, §9): a thin host around a stepping object. No simulation logic here.

`StepHost` builds its target from a picklable factory (a node shard: `cluster.runtime.shard.Shard`)
and answers the coordinator's windows with one operation, `step(payload) -> reply`, over one of
two channels:
- "ray": each window is a Ray actor call (`step`);
- "zmq": `open_channel()` binds a ZMQ PAIR socket on this node's IP and returns its endpoint;
  `serve()` then answers steps on that socket until told to `STOP`. A window costs one socket
  round trip (~0.1-0.3 ms) instead of a Ray call (~1-3 ms), which is what keeps a run with tens
  of thousands of windows close to the Local runtime.
The payloads are the target's business (`cluster.runtime.shard` defines the window protocol).
Apply `ray.remote` where the actor is created (`cluster.runtime.ray`), not here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

STOP = b"stop"
"""Ends the serving loop on the ZMQ channel; echoed back as the acknowledgement."""


class Steppable(Protocol):
    """What a `StepHost` hosts."""

    def step(self, payload: bytes) -> bytes:
        """Answer one window."""
        ...

    def result(self) -> Any:
        """What the target hands back at the end of the run (picklable)."""
        ...


class StepHost:
    """A `Steppable` in a Ray actor; see the module docstring."""

    def __init__(self, factory: Callable[[], Steppable]) -> None:
        self.target = factory()
        self._socket: Any = None
        self._context: Any = None

    def ready(self) -> bool:
        """A cheap call that proves the actor started."""
        return True

    def step(self, payload: bytes) -> bytes:
        return self.target.step(payload)

    def node_id(self) -> str:
        """The Ray node this actor runs on."""
        import ray

        node: str = ray.get_runtime_context().get_node_id()
        return node

    def open_channel(self, host: str = "") -> str:
        """Bind the ZMQ channel on `host` (empty: this node's IP as Ray knows it); returns the endpoint."""
        import zmq

        if not host:
            import ray

            host = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]

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

    def result(self) -> Any:
        """The target's end-of-run result."""
        return self.target.result()
