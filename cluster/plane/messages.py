"""Event-plane messages, topics and addresses (DESIGN §8).

Everything components say to each other crosses the event plane as one of the message
types below, wrapped in an `Envelope` that the simulated transport (`cluster.plane.links`)
stamps with an arrival time. Messages are frozen, slotted dataclasses: they are built on
hot paths (one per KV batch, token signal or request), so they are not pydantic models;
`cluster.plane.codec.decode(..., validate=True)` checks untrusted payloads with pydantic's
`TypeAdapter` over the same classes, so there is one definition of each message.

Topics (`Topic`) name the link a message travels on; each has its own latency, loss and
ordering settings (`cluster.plane.links.LinkSpec`):
- `requests`   frontend/router -> rank: a routed request; a source release to a prefill rank. Reliable, FIFO.
- `responses`  rank -> frontend: first token, completion, rejection, failure; disaggregated serving's
               handoff (prefill rank) and transfer-done (decode rank) notices. Reliable, FIFO.
- `kv_events`  rank -> subscribers (the router): KV event batches, one sequence number per
               publisher. Pub/sub: may lose, duplicate and reorder.
- `metrics`    rank -> subscribers: load metrics and heartbeats (carry the last KV seq).
               Pub/sub, like kv_events.
- `kv_replay`  both ways between a subscriber and a publisher's replay buffer. Reliable.
- `control`    node -> control: worker lifecycle notices; control -> ranks: start, drain, stop,
               end of run (`cluster.plane.ranks`). Reliable.

Addresses: the control shard's frontend and router share address `CONTROL_ADDR` (0); the
rank with global index g has address `g + 1`. A rank is one (worker, dp_rank) slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Union

from actors.engine.events import KvEvent, LoadMetrics
from actors.engine.records import EngineRecord, FailureReason, TerminalStatus
from cluster.plane.ranks import DrainRankMsg, RankReadyMsg, RankStoppedMsg, StartRankMsg, StopRankMsg
from cluster.plane.ranks import rank_addr as rank_addr  # addresses are a messages concern for most callers

CONTROL_ADDR = 0
"""The control shard: frontend and router."""


class Topic(str, Enum):
    """The links of the event plane; see the module docstring."""

    REQUESTS = "requests"
    RESPONSES = "responses"
    KV_EVENTS = "kv_events"
    METRICS = "metrics"
    KV_REPLAY = "kv_replay"
    CONTROL = "control"

    @property
    def pubsub(self) -> bool:
        """Publish/subscribe topics may lose, duplicate and reorder; the others are reliable FIFO."""
        return self in (Topic.KV_EVENTS, Topic.METRICS)


# ------------------------------------------------------------------------------------ messages


@dataclass(frozen=True, slots=True)
class RequestMsg:
    """A routed request, frontend -> rank. The rank rebuilds tokens and hashes from `hash_ids`."""

    request_id: int
    worker_id: int
    dp_rank: int
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]
    trace_block_size: int
    dispatched_ms: float
    block_hashes: tuple[int, ...] | None = None
    """The prompt's full-block sequence hashes, when the router computed them (saves the rank the work)."""
    local_hashes: tuple[int, ...] | None = None
    """Their local (content) hashes, aligned with `block_hashes`."""
    generated_tokens: int = 0
    """Tokens generated on the workers it migrated from (the rank prefills them with the prompt)."""
    last_token_ms: float = 0.0
    """When the last of those was generated."""
    source: TransferSource | None = None
    """Disaggregated decode: the prompt's KV comes from this prefill rank (None: the rank prefills it)."""


@dataclass(frozen=True, slots=True)
class TransferSource:
    """Where a decode rank's prompt KV comes from, and how fast (the prefill engine's keys)."""

    gidx: int
    """The prefill rank's global index."""
    bytes_per_token: int | None
    bandwidth_gbps: float | None
    destination_missing: bool


@dataclass(frozen=True, slots=True)
class HandoffMsg:
    """Prefill rank -> control: the prompt is computed at `t_ms`, its KV held as the transfer source."""

    request_id: int
    worker_id: int
    dp_rank: int
    t_ms: float
    record: EngineRecord
    bytes_per_token: int | None
    bandwidth_gbps: float | None
    destination_missing: bool


@dataclass(frozen=True, slots=True)
class TransferDoneMsg:
    """Decode rank -> control: the prompt's KV arrived at `t_ms` (the destination is activated)."""

    request_id: int
    worker_id: int
    dp_rank: int
    t_ms: float
    source_gidx: int
    tokens: int
    nbytes: int
    ms: float
    reserved_ms: float
    """When the destination was reserved (the decode rank's first scheduling point after the handoff)."""


@dataclass(frozen=True, slots=True)
class ReleaseSourceMsg:
    """Control -> prefill rank: the transfer of this request's KV ended; free the source blocks."""

    request_id: int


@dataclass(frozen=True, slots=True)
class FirstTokenMsg:
    """The request's first token left the engine at `t_ms` (engine time)."""

    request_id: int
    worker_id: int
    dp_rank: int
    t_ms: float


@dataclass(frozen=True, slots=True)
class CompletionMsg:
    """A request ended on the engine: completed, rejected or failed, with the engine's record.

    The record's times are engine times; the frontend turns them into client-observed times
    by adding the latency the response stream actually had (see `cluster.control.frontend`).
    `cause` names the fault or control action that failed it, when one did.
    """

    request_id: int
    worker_id: int
    dp_rank: int
    status: TerminalStatus
    record: EngineRecord
    reason: FailureReason | None = None
    detail: str | None = None
    cause: str | None = None


@dataclass(frozen=True, slots=True)
class KvBatchMsg:
    """KV events of one rank published together; `seq` counts batches per publisher from 0."""

    worker_id: int
    dp_rank: int
    seq: int
    t_ms: float
    events: tuple[KvEvent, ...]


@dataclass(frozen=True, slots=True)
class LoadMetricsMsg:
    """A rank's scheduler state; `kv_seq` is its last published KV batch seq (-1: none yet).

    Also sent as a heartbeat, so a subscriber notices KV batches lost at the tail of a stream.
    """

    metrics: LoadMetrics
    kv_seq: int


@dataclass(frozen=True, slots=True)
class ReplayRequestMsg:
    """Subscriber at address `reply_to` -> publisher: send me batches `from_seq` onwards."""

    worker_id: int
    dp_rank: int
    from_seq: int
    reply_to: int


@dataclass(frozen=True, slots=True)
class KvSnapshot:
    """Everything a rank has cached now: what a full resync installs.

    `last_seq` is the publisher's last batch seq and `next_event_id` its next KV event id;
    every batch up to `last_seq` is reflected in `block_hashes`.
    """

    block_hashes: tuple[int, ...]
    next_event_id: int
    last_seq: int


@dataclass(frozen=True, slots=True)
class ReplayReplyMsg:
    """Publisher -> subscriber: the buffered batches from `from_seq` on, or a snapshot.

    The snapshot is sent (and `batches` is empty) when the replay buffer no longer holds
    `from_seq`.
    """

    worker_id: int
    dp_rank: int
    from_seq: int
    batches: tuple[KvBatchMsg, ...]
    snapshot: KvSnapshot | None


@dataclass(frozen=True, slots=True)
class WorkerDownMsg:
    """A node told the control plane that a worker's rank stopped (fault)."""

    worker_id: int
    dp_rank: int
    t_ms: float
    reason: FailureReason
    detail: str
    cause: str | None = None
    """The fault's id (`faults.<k>`) when a scheduled fault killed it."""


@dataclass(frozen=True, slots=True)
class ShutdownMsg:
    """Control -> rank: the workload is over; stop heart-beating after a last few periods."""

    t_ms: float


Message = Union[RequestMsg, FirstTokenMsg, CompletionMsg, KvBatchMsg, LoadMetricsMsg, ReplayRequestMsg,
                ReplayReplyMsg, WorkerDownMsg, ShutdownMsg, HandoffMsg, TransferDoneMsg, ReleaseSourceMsg,
                StartRankMsg, RankReadyMsg, DrainRankMsg, StopRankMsg, RankStoppedMsg]


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message in flight: due at `t_arrive` at address `dst`.

    `key` orders same-instant deliveries independently of when the envelope was created:
    it is derived from the sender's address and message counter (`delivery_key`), so a
    shard processes deliveries in the same order whichever runtime carried them.
    """

    t_arrive: float
    key: int
    dst: int
    topic: Topic
    msg: Message


_SEQ_BITS = 40


def delivery_key(src: int, src_seq: int, copy: int) -> int:
    """Unique, sender-derived order key of one delivered copy of a message."""
    return (((src << _SEQ_BITS) | src_seq) << 1) | copy
