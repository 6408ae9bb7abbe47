"""The receiving end of the vLLM KV event wire format over real ZMQ sockets (a host module).

`ZmqKvSubscriber`: a SUB socket that delivers one publisher's batches in sequence order,
drops duplicates, and on a gap asks the publisher's ROUTER replay socket (through a
DEALER) for the missing batches; what the replay cannot supply is counted in
`num_missing` and raises `needs_resync` (ZMQ has no full resync; the simulated event
plane does). The sending end and the replay protocol are in `cluster.wire.zmq_publisher`.

Threading: one thread owns a subscriber (zmq sockets are not thread-safe).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from types import TracebackType

import zmq

from cluster.wire.vllm import REPLAY_END_SEQ, VllmBatch, WireFormatError, decode_vllm_batch, parse_seq, seq_bytes
from cluster.wire.zmq_publisher import ZmqContext, ZmqSocket

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReceivedBatch:
    """A decoded batch with its publisher sequence number; `replayed` if it came from the replay socket."""

    seq: int
    batch: VllmBatch
    replayed: bool


class ZmqKvSubscriber:
    """Receives one publisher's batches in sequence order, repairing gaps through replay.

    Invariants: delivered seqs strictly increase; after each `poll`, every seq in
    [first seq, next_seq) was delivered, counted in `num_missing`, or counted in
    `num_malformed` (undecodable payloads). Whenever something is missing or
    undecodable, `needs_resync` is True until the caller (after a full resync)
    resets it.

    `drop_seqs` is a test / chaos hook: live batches whose seq is in it are
    discarded on receipt, as if the network lost them (replayed copies are not).

    Args:
        endpoint: PUB endpoint to connect to.
        replay_endpoint: The publisher's ROUTER endpoint; None means gaps cannot be repaired.
        topic: Subscription prefix.
        start_seq: First seq expected; None takes the first seq received (a late
            joiner with start_seq=0 replays everything the publisher still buffers).
        replay_timeout_ms: Silence after which a replay answer is given up.
        hwm: Receive high-water mark of the SUB socket.
        context: ZMQ context to share (required for inproc); None creates and owns one.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        replay_endpoint: str | None = None,
        topic: bytes = b"",
        start_seq: int | None = None,
        replay_timeout_ms: int = 1000,
        hwm: int = 100_000,
        context: ZmqContext | None = None,
    ) -> None:
        if start_seq is not None and start_seq < 0:
            raise ValueError(f"start_seq must be >= 0, got {start_seq}")
        self._owns_context = context is None
        self._ctx: ZmqContext = zmq.Context() if context is None else context
        self._replay_endpoint = replay_endpoint
        self._replay_timeout_ms = replay_timeout_ms
        self._expected = start_seq
        self._closed = False
        self._dealer: ZmqSocket | None = None
        self.drop_seqs: set[int] = set()
        self.needs_resync = False
        self.num_received = 0
        self.num_gaps = 0
        self.num_replayed = 0
        self.num_duplicates = 0
        self.num_missing = 0
        self.num_dropped = 0
        self.num_malformed = 0
        self._sub: ZmqSocket = self._ctx.socket(zmq.SUB)
        try:
            self._sub.setsockopt(zmq.LINGER, 0)
            self._sub.setsockopt(zmq.RCVHWM, hwm)
            self._sub.setsockopt(zmq.SUBSCRIBE, topic)
            self._sub.connect(endpoint)
            if replay_endpoint is not None:
                self._dealer = self._new_dealer(replay_endpoint)
        except BaseException:
            self.close()
            raise

    @property
    def next_seq(self) -> int | None:
        """The next seq expected, or None before the first batch (without `start_seq`)."""
        return self._expected

    def poll(self, timeout_ms: int = 0, *, max_messages: int = 10_000) -> list[ReceivedBatch]:
        """Batches received since the last call, in sequence order, gaps repaired where possible.

        Waits up to `timeout_ms` for the first message, then takes at most
        `max_messages` without waiting. A gap adds up to `replay_timeout_ms` of
        silence waiting for the replay answer.
        """
        if self._closed:
            raise RuntimeError("subscriber is closed")
        out: list[ReceivedBatch] = []
        if not self._sub.poll(timeout_ms, zmq.POLLIN):
            return out
        for _ in range(max_messages):
            try:
                frames = self._sub.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self._on_message(frames, out)
        return out

    def close(self) -> None:
        """Close the sockets and the owned context. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._sub.close(linger=0)
        if self._dealer is not None:
            self._dealer.close(linger=0)
        if self._owns_context:
            self._ctx.term()

    def __enter__(self) -> ZmqKvSubscriber:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _on_message(self, frames: list[bytes], out: list[ReceivedBatch]) -> None:
        seq = parse_seq(frames[1]) if len(frames) == 3 and len(frames[1]) == 8 else -1
        if seq < 0:
            self.num_malformed += 1
            logger.warning("ignoring malformed KV event message (%d frames)", len(frames))
            return
        payload = frames[2]
        if seq in self.drop_seqs:
            self.num_dropped += 1
            return
        self.num_received += 1
        if self._expected is None:
            self._expected = seq
        if seq < self._expected:
            self.num_duplicates += 1
            return
        if seq > self._expected:
            self.num_gaps += 1
            if self._dealer is not None:
                self._fill_from_replay(seq, out)
            if seq > self._expected:
                self._note_missing(seq - self._expected)
        self._deliver(seq, payload, False, out)

    def _fill_from_replay(self, live_seq: int, out: list[ReceivedBatch]) -> None:
        """Deliver replayed batches in [expected, live_seq); later ones will arrive live (PUB keeps order)."""
        assert self._expected is not None
        for seq, payload in self._request_replay(self._expected):
            if seq < self._expected:
                continue
            if seq >= live_seq:
                break
            if seq > self._expected:  # the publisher's buffer no longer holds [expected, seq)
                self._note_missing(seq - self._expected)
            self.num_replayed += 1
            self._deliver(seq, payload, True, out)

    def _deliver(self, seq: int, payload: bytes, replayed: bool, out: list[ReceivedBatch]) -> None:
        self._expected = seq + 1
        try:
            batch = decode_vllm_batch(payload)
        except WireFormatError as exc:
            # The seq was received, so it is not missing; its content is lost all the same.
            self.num_malformed += 1
            self.needs_resync = True
            logger.warning("undecodable KV event batch seq %d: %s", seq, exc)
            return
        out.append(ReceivedBatch(seq=seq, batch=batch, replayed=replayed))

    def _note_missing(self, count: int) -> None:
        self.num_missing += count
        self.needs_resync = True

    def _new_dealer(self, replay_endpoint: str) -> ZmqSocket:
        dealer = self._ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(replay_endpoint)
        return dealer

    def _request_replay(self, start_seq: int) -> list[tuple[int, bytes]]:
        """(seq, payload) pairs the publisher replays from `start_seq`, up to its end marker or a timeout."""
        assert self._dealer is not None and self._replay_endpoint is not None
        self._dealer.send_multipart([b"", seq_bytes(start_seq)])
        replies: list[tuple[int, bytes]] = []
        while True:
            if not self._dealer.poll(self._replay_timeout_ms, zmq.POLLIN):
                logger.warning("replay from seq %d timed out after %d batch(es)", start_seq, len(replies))
                # A late answer would be mistaken for the next request's: start a fresh DEALER.
                self._dealer.close(linger=0)
                self._dealer = self._new_dealer(self._replay_endpoint)
                return replies
            frames = self._dealer.recv_multipart()
            # vLLM answers [b"", seq, payload]; the Dynamo mocker and TRT-LLM add a topic frame.
            if len(frames) in (3, 4) and frames[0] == b"" and len(frames[-2]) == 8:
                seq = parse_seq(frames[-2])
                if seq == REPLAY_END_SEQ:
                    return replies
                replies.append((seq, frames[-1]))
            else:
                self.num_malformed += 1
                logger.warning("ignoring malformed replay answer (%d frames)", len(frames))
