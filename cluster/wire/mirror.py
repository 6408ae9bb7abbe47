"""Mirror a simulated run's KV events onto real ZMQ sockets (a host module).

`KvZmqMirror` owns one `ZmqKvPublisher` per (worker_id, dp_rank) slot, so real indexers
(vLLM / Dynamo KV subscribers) can follow a simulated cluster in the vLLM wire format:
PUB frames `[topic, seq, batch]`, and a ROUTER replay socket per slot for subscribers that
missed batches. `clustersim run --zmq-kv-events ENDPOINT` attaches one to the Local runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType

import zmq

from actors.engine.events import KvEvent, KvEventData
from cluster.wire.vllm import EventStyle, offset_endpoint
from cluster.wire.zmq_publisher import Slot, ZmqContext, ZmqKvPublisher


def group_kv_events(events: Sequence[KvEvent]) -> list[tuple[Slot, float, list[KvEventData]]]:
    """Runs of consecutive events with the same (worker_id, dp_rank) slot and the same t_ms.

    Order is kept: each run becomes one batch, so a slot's stream is its events in input order.
    """
    runs: list[tuple[Slot, float, list[KvEventData]]] = []
    for event in events:
        slot = (event.worker_id, event.dp_rank)
        if runs and runs[-1][0] == slot and runs[-1][1] == event.t_ms:
            runs[-1][2].append(event.data)
        else:
            runs.append((slot, event.t_ms, [event.data]))
    return runs


class KvZmqMirror:
    """Publishes a simulated run's KV events over real sockets, one `ZmqKvPublisher` per slot.

    Slot k (in the given order) publishes on `endpoint` offset by k: tcp port
    base + k, ipc/inproc name + `_<k>`; likewise its replay socket, whose
    background thread starts at once. Each batch carries ts = t_ms / 1000
    (simulated seconds) and the slot's dp_rank.

    Args:
        endpoint: Base PUB endpoint (e.g. "tcp://127.0.0.1:5557", "ipc:///tmp/kv").
        slots: (worker_id, dp_rank) slots, fixed order, no duplicates.
        block_size: Tokens per block, sent in every BlockStored.
        replay_endpoint: Base ROUTER endpoint; None disables replay.
        topic, buffer_steps, hwm, bind: Passed to each `ZmqKvPublisher`.
        event_style, medium: Passed to `encode_vllm_batch`.
        context: ZMQ context to share; None creates and owns one for all slots.
    """

    def __init__(
        self,
        endpoint: str,
        slots: Sequence[Slot],
        block_size: int,
        *,
        replay_endpoint: str | None = None,
        topic: bytes = b"",
        event_style: EventStyle = "array",
        medium: str | None = "GPU",
        buffer_steps: int = 10_000,
        hwm: int = 100_000,
        bind: bool | None = None,
        context: ZmqContext | None = None,
    ) -> None:
        if not slots:
            raise ValueError("a mirror needs at least one slot")
        if len(set(slots)) != len(slots):
            raise ValueError(f"duplicate slots in {list(slots)}")
        self.block_size = block_size
        self._event_style: EventStyle = event_style
        self._medium = medium
        self._owns_context = context is None
        self._ctx: ZmqContext = zmq.Context() if context is None else context
        self._closed = False
        self._publishers: dict[Slot, ZmqKvPublisher] = {}
        try:
            for k, slot in enumerate(slots):
                pub = ZmqKvPublisher(
                    offset_endpoint(endpoint, k, f"_{k}"),
                    replay_endpoint=None if replay_endpoint is None else offset_endpoint(replay_endpoint, k, f"_{k}"),
                    topic=topic, buffer_steps=buffer_steps, hwm=hwm, bind=bind, context=self._ctx,
                )
                self._publishers[slot] = pub
                if pub.replay_endpoint is not None:
                    pub.start()
        except BaseException:
            self.close()
            raise

    def endpoints(self) -> dict[Slot, str]:
        """PUB endpoint of each slot (as bound), in slot order."""
        return {slot: pub.endpoint for slot, pub in self._publishers.items()}

    def replay_endpoints(self) -> dict[Slot, str | None]:
        """ROUTER endpoint of each slot, in slot order (None without replay)."""
        return {slot: pub.replay_endpoint for slot, pub in self._publishers.items()}

    def publisher(self, slot: Slot) -> ZmqKvPublisher:
        """The publisher of one slot."""
        return self._publishers[slot]

    def publish(self, events: Sequence[KvEvent]) -> int:
        """Publish `events`, one batch per run of same-slot, same-t_ms events; returns the number of batches.

        Raises:
            ValueError: if an event belongs to a slot the mirror does not have (nothing is sent then).
        """
        if self._closed:
            raise RuntimeError("mirror is closed")
        runs = group_kv_events(events)
        unknown = sorted({slot for slot, _, _ in runs if slot not in self._publishers})
        if unknown:
            raise ValueError(f"events for slots {unknown} that the mirror does not publish")
        for slot, t_ms, data in runs:
            self._publishers[slot].publish_events(
                t_ms / 1000.0, data, slot[1], self.block_size, event_style=self._event_style, medium=self._medium
            )
        return len(runs)

    def close(self, linger_ms: int = 0) -> None:
        """Close every publisher (joining replay threads), then the owned context. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for pub in self._publishers.values():
            pub.close(linger_ms)
        if self._owns_context:
            self._ctx.term()

    def __enter__(self) -> KvZmqMirror:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
