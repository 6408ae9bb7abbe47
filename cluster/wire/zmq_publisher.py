"""Real ZMQ sockets for KV events in the vLLM wire format (a host module: it owns sockets and threads).

`ZmqKvPublisher`: a PUB socket sending `[topic, seq (8-byte BE), msgpack batch]`,
seq 0, 1, 2, ... per batch, plus a bounded ring buffer of the last `buffer_steps`
batches served on an optional ROUTER replay socket, either from the host's loop
(`serve_replay`) or from a background thread (`start`). The receiving end, which
repairs gaps through that replay socket, is `cluster.wire.zmq_subscriber.ZmqKvSubscriber`.
(`cluster.wire.mirror.KvZmqMirror` puts one publisher per simulated rank, so a run's KV
events reach real indexers over real sockets.)

Replay protocol (vLLM): the client sends `[b"", start_seq 8B BE]`; the ROUTER sees
`[identity, b"", start_seq]` and answers `[identity, b"", seq, payload]` for each
buffered seq >= start_seq, in order, then `[identity, b"", seq_bytes(-1), b""]`.

Threading: a zmq socket must be used by one thread at a time. The PUB socket is
used only by the thread that calls `publish`; the ROUTER socket only by whoever
serves replay (the host via `serve_replay`, or the background thread after
`start()`); the ring buffer and the sequence counter are shared under a lock.
`close()` stops and joins the background thread before it closes the sockets.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Sequence
from types import TracebackType

import zmq

from actors.engine.events import KvEventData
from cluster.wire.vllm import REPLAY_END_SEQ, EventStyle, encode_vllm_batch, seq_bytes, should_bind

logger = logging.getLogger(__name__)

Slot = tuple[int, int]
"""(worker_id, dp_rank): one KV event stream."""

ZmqContext = zmq.Context[zmq.Socket[bytes]]
ZmqSocket = zmq.Socket[bytes]

_REPLAY_POLL_MS = 10
"""How often the background replay thread wakes up to notice `close()`; bounds close latency."""
_JOIN_TIMEOUT_S = 5.0


def _last_endpoint(sock: ZmqSocket) -> str:
    """The endpoint a socket actually bound (resolves port 0 / '*' ports)."""
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


class ZmqKvPublisher:
    """Publishes KV event batches on a PUB socket, with an optional ROUTER replay socket.

    Invariants: sequence numbers start at 0 and grow by 1 per published batch;
    the ring buffer holds the last `buffer_steps` (seq, payload) pairs, in seq
    order with no holes; a replay answer is a contiguous suffix of it.

    Args:
        endpoint: PUB endpoint; bound when `should_bind(endpoint)` (wildcard tcp
            host, ipc, inproc), else connected, unless `bind` says otherwise.
        replay_endpoint: ROUTER endpoint (always bound, as in vLLM); None disables replay.
        topic: First frame of every message (subscribers filter on its prefix).
        buffer_steps: Ring buffer size, in batches.
        hwm: Send high-water mark of the PUB socket (ZMQ drops beyond it).
        bind: Override of the bind/connect rule (e.g. bind to 127.0.0.1:0 in tests).
        context: ZMQ context to share (required for inproc); None creates and owns one.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        replay_endpoint: str | None = None,
        topic: bytes = b"",
        buffer_steps: int = 10_000,
        hwm: int = 100_000,
        bind: bool | None = None,
        context: ZmqContext | None = None,
    ) -> None:
        if buffer_steps <= 0:
            raise ValueError(f"buffer_steps must be positive, got {buffer_steps}")
        self._owns_context = context is None
        self._ctx: ZmqContext = zmq.Context() if context is None else context
        self._topic = topic
        self._lock = threading.Lock()  # guards _buffer, _next_seq and the PUB send order
        self._buffer: deque[tuple[int, bytes]] = deque(maxlen=buffer_steps)
        self._next_seq = 0
        self._closed = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._router: ZmqSocket | None = None
        self.num_replays_served = 0
        self._endpoint = endpoint
        self._replay_endpoint: str | None = None
        self._pub: ZmqSocket = self._ctx.socket(zmq.PUB)
        try:
            self._pub.setsockopt(zmq.LINGER, 0)
            self._pub.setsockopt(zmq.SNDHWM, hwm)
            do_bind = should_bind(endpoint) if bind is None else bind
            if do_bind:
                self._pub.bind(endpoint)
                self._endpoint = _last_endpoint(self._pub)
            else:
                self._pub.connect(endpoint)
            if replay_endpoint is not None:
                self._router = self._ctx.socket(zmq.ROUTER)
                self._router.setsockopt(zmq.LINGER, 0)
                # A full replay is buffer_steps + 1 messages; never let ROUTER drop part of one.
                self._router.setsockopt(zmq.SNDHWM, max(hwm, buffer_steps + 1))
                self._router.bind(replay_endpoint)
                self._replay_endpoint = _last_endpoint(self._router)
        except BaseException:
            self.close()
            raise

    @property
    def endpoint(self) -> str:
        """The PUB endpoint (as bound, so port 0 shows the real port)."""
        return self._endpoint

    @property
    def replay_endpoint(self) -> str | None:
        """The bound ROUTER endpoint, or None without replay."""
        return self._replay_endpoint

    @property
    def next_seq(self) -> int:
        """Sequence number the next published batch will get."""
        with self._lock:
            return self._next_seq

    def publish(self, payload: bytes) -> int:
        """Send one batch `[topic, seq, payload]`, buffer it for replay, and return its seq.

        Call from one thread (the one that owns the PUB socket).
        """
        self._check_open()
        with self._lock:
            seq = self._next_seq
            self._pub.send_multipart([self._topic, seq_bytes(seq), payload])
            self._buffer.append((seq, payload))
            self._next_seq = seq + 1
        return seq

    def publish_events(
        self,
        ts_s: float,
        events: Sequence[KvEventData],
        dp_rank: int | None,
        block_size: int,
        *,
        event_style: EventStyle = "array",
        medium: str | None = "GPU",
    ) -> int:
        """Encode `events` with `encode_vllm_batch` and publish them as one batch; returns its seq."""
        payload = encode_vllm_batch(ts_s, events, dp_rank, block_size, event_style=event_style, medium=medium)
        return self.publish(payload)

    def serve_replay(self, timeout_ms: int = 0) -> int:
        """Answer the replay requests waiting on the ROUTER socket; returns how many were answered.

        Waits up to `timeout_ms` for the first request, then drains the rest
        without waiting. Malformed requests are logged and not counted.

        Raises:
            RuntimeError: without a replay endpoint, after `start()`, or after `close()`.
        """
        self._check_open()
        if self._router is None:
            raise RuntimeError("publisher has no replay endpoint")
        if self._thread is not None:
            raise RuntimeError("replay is served by the background thread (start() was called)")
        return self._serve_pending(self._router, timeout_ms)

    def start(self) -> None:
        """Serve replay from a background thread (which then owns the ROUTER socket) until `close()`.

        Idempotent while running.

        Raises:
            RuntimeError: without a replay endpoint, or after `close()`.
        """
        self._check_open()
        if self._router is None:
            raise RuntimeError("publisher has no replay endpoint")
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._replay_loop, args=(self._router,), name=f"kv-replay {self._replay_endpoint}", daemon=True
        )
        self._thread.start()

    def close(self, linger_ms: int = 0) -> None:
        """Stop the replay thread, close the sockets and the owned context. Idempotent.

        Args:
            linger_ms: How long the PUB socket may keep flushing queued batches.
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(_JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                # Closing a socket another thread is using can abort libzmq; leak it instead.
                logger.error("replay thread for %s did not stop; leaking its socket", self._replay_endpoint)
                self._pub.close(linger=linger_ms)
                return
        self._pub.close(linger=linger_ms)
        if self._router is not None:
            self._router.close(linger=0)
        if self._owns_context:
            self._ctx.term()

    def __enter__(self) -> ZmqKvPublisher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"publisher on {self._endpoint} is closed")

    def _replay_loop(self, router: ZmqSocket) -> None:
        while not self._stop.is_set():
            try:
                self._serve_pending(router, _REPLAY_POLL_MS)
            except zmq.ZMQError as exc:
                logger.error("replay thread for %s stopped: %s", self._replay_endpoint, exc)
                return

    def _serve_pending(self, router: ZmqSocket, timeout_ms: int) -> int:
        if not router.poll(timeout_ms, zmq.POLLIN):
            return 0
        served = 0
        while True:
            try:
                frames = router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            if self._answer(router, frames):
                served += 1
        self.num_replays_served += served
        return served

    def _answer(self, router: ZmqSocket, frames: list[bytes]) -> bool:
        if len(frames) != 3 or frames[1] != b"" or len(frames[2]) != 8:
            logger.warning("ignoring malformed replay request (%d frames)", len(frames))
            return False
        identity = frames[0]
        start_seq = int.from_bytes(frames[2], "big")  # unsigned, as vLLM reads it
        with self._lock:
            # Buffered seqs are contiguous, so the suffix starts at a computed offset.
            skip = max(0, start_seq - self._buffer[0][0]) if self._buffer else 0
            suffix = list(itertools.islice(self._buffer, skip, None))
        for seq, payload in suffix:
            router.send_multipart([identity, b"", seq_bytes(seq), payload])
        router.send_multipart([identity, b"", seq_bytes(REPLAY_END_SEQ), b""])
        return True
