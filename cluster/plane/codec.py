"""The msgpack codec of event-plane envelopes.

`encode(envelopes) -> bytes` / `decode(bytes) -> list[Envelope]`: msgpack arrays with an
integer kind tag per message. Floats stay float64, so times survive a round trip bit for
bit (the Ray runtime's reports are byte-identical to the Local runtime's).
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, fields
from enum import IntEnum
from typing import Any

from pydantic import TypeAdapter, ValidationError

from actors.engine.events import ForwardPass, KvCleared, KvEvent, KvEventData, KvRemoved, KvStored, LoadMetrics
from actors.engine.records import EngineRecord, FailureReason, TerminalStatus
from cluster.plane.messages import (
    CompletionMsg,
    Envelope,
    FirstTokenMsg,
    HandoffMsg,
    KvBatchMsg,
    KvSnapshot,
    LoadMetricsMsg,
    Message,
    ReplayReplyMsg,
    ReplayRequestMsg,
    ReleaseSourceMsg,
    RequestMsg,
    ShutdownMsg,
    Topic,
    TransferDoneMsg,
    TransferSource,
    WorkerDownMsg,
)
from cluster.plane.ranks import DrainRankMsg, RankReadyMsg, RankStoppedMsg, StartRankMsg, StopRankMsg


class Kind(IntEnum):
    """Wire tags of the message types."""

    REQUEST = 1
    FIRST_TOKEN = 2
    COMPLETION = 3
    KV_BATCH = 4
    LOAD_METRICS = 5
    REPLAY_REQUEST = 6
    REPLAY_REPLY = 7
    WORKER_DOWN = 8
    SHUTDOWN = 9
    START_RANK = 10
    RANK_READY = 11
    DRAIN_RANK = 12
    STOP_RANK = 13
    RANK_STOPPED = 14
    HANDOFF = 15
    TRANSFER_DONE = 16
    RELEASE_SOURCE = 17


class DecodeError(ValueError):
    """A payload is not a valid event-plane message; the message says what is wrong."""


_TOPICS = list(Topic)
_TOPIC_INDEX = {t: i for i, t in enumerate(_TOPICS)}
_STATUSES = list(TerminalStatus)
_STATUS_INDEX = {s: i for i, s in enumerate(_STATUSES)}
_RECORD_FIELDS = tuple(f.name for f in fields(EngineRecord))
"""An engine record travels as its field values in declaration order: a new field needs no edit here."""


def _kv_event_out(e: KvEvent) -> list[Any]:
    d = e.data
    if isinstance(d, KvStored):
        body: list[Any] = [0, d.parent_hash, list(d.block_hashes), list(d.token_hashes),
                           None if d.token_ids is None else list(d.token_ids)]
    elif isinstance(d, KvRemoved):
        body = [1, list(d.block_hashes)]
    else:
        body = [2]
    return [e.t_ms, e.worker_id, e.dp_rank, e.event_id, body]


def _kv_event_in(raw: list[Any]) -> KvEvent:
    t_ms, worker_id, dp_rank, event_id, body = raw
    tag = body[0]
    data: KvEventData
    if tag == 0:
        data = KvStored(body[1], tuple(body[2]), tuple(body[3]), None if body[4] is None else tuple(body[4]))
    elif tag == 1:
        data = KvRemoved(tuple(body[1]))
    elif tag == 2:
        data = KvCleared()
    else:
        raise DecodeError(f"unknown KV event tag {tag!r}")
    return KvEvent(t_ms, worker_id, dp_rank, event_id, data)


def _batch_out(b: KvBatchMsg) -> list[Any]:
    return [b.worker_id, b.dp_rank, b.seq, b.t_ms, [_kv_event_out(e) for e in b.events]]


def _batch_in(raw: list[Any]) -> KvBatchMsg:
    worker_id, dp_rank, seq, t_ms, events = raw
    return KvBatchMsg(worker_id, dp_rank, seq, t_ms, tuple(_kv_event_in(e) for e in events))


def _metrics_out(m: LoadMetricsMsg) -> list[Any]:
    x = m.metrics
    p = x.last_pass
    last = None if p is None else [p.wall_ms, p.prefill_requests, p.prefill_tokens, p.decode_requests,
                                   p.decode_kv_tokens]
    return [x.t_ms, x.worker_id, x.dp_rank, x.active_blocks, x.inactive_blocks, x.total_blocks,
            x.running_requests, x.waiting_requests, x.preemptions_total, last, m.kv_seq]


def _metrics_in(raw: list[Any]) -> LoadMetricsMsg:
    t_ms, worker_id, dp_rank, active, inactive, total, running, waiting, preemptions, last, kv_seq = raw
    last_pass = None if last is None else ForwardPass(*last)
    return LoadMetricsMsg(LoadMetrics(t_ms, worker_id, dp_rank, active, inactive, total, running, waiting, preemptions,
                                      last_pass), kv_seq)


def _source_out(src: TransferSource) -> list[Any]:
    return [src.gidx, src.bytes_per_token, src.bandwidth_gbps, src.destination_missing]


def _msg_out(msg: Message) -> list[Any]:
    if isinstance(msg, KvBatchMsg):
        return [Kind.KV_BATCH, *_batch_out(msg)]
    if isinstance(msg, RequestMsg):
        return [Kind.REQUEST, msg.request_id, msg.worker_id, msg.dp_rank, msg.input_length, msg.output_length,
                list(msg.hash_ids), msg.trace_block_size, msg.dispatched_ms,
                None if msg.block_hashes is None else list(msg.block_hashes),
                None if msg.local_hashes is None else list(msg.local_hashes), msg.generated_tokens,
                msg.last_token_ms, *([] if msg.source is None else [_source_out(msg.source)])]
    if isinstance(msg, HandoffMsg):
        return [Kind.HANDOFF, msg.request_id, msg.worker_id, msg.dp_rank, msg.t_ms,
                [getattr(msg.record, name) for name in _RECORD_FIELDS], msg.bytes_per_token, msg.bandwidth_gbps,
                msg.destination_missing]
    if isinstance(msg, TransferDoneMsg):
        return [Kind.TRANSFER_DONE, msg.request_id, msg.worker_id, msg.dp_rank, msg.t_ms, msg.source_gidx,
                msg.tokens, msg.nbytes, msg.ms, msg.reserved_ms]
    if isinstance(msg, ReleaseSourceMsg):
        return [Kind.RELEASE_SOURCE, msg.request_id]
    if isinstance(msg, FirstTokenMsg):
        return [Kind.FIRST_TOKEN, msg.request_id, msg.worker_id, msg.dp_rank, msg.t_ms]
    if isinstance(msg, CompletionMsg):
        rec = msg.record
        return [Kind.COMPLETION, msg.request_id, msg.worker_id, msg.dp_rank, _STATUS_INDEX[msg.status],
                [getattr(rec, name) for name in _RECORD_FIELDS], None if msg.reason is None else msg.reason.value,
                msg.detail, msg.cause]
    if isinstance(msg, LoadMetricsMsg):
        return [Kind.LOAD_METRICS, *_metrics_out(msg)]
    if isinstance(msg, ReplayRequestMsg):
        return [Kind.REPLAY_REQUEST, msg.worker_id, msg.dp_rank, msg.from_seq, msg.reply_to]
    if isinstance(msg, ReplayReplyMsg):
        snap = msg.snapshot
        snap_raw = None if snap is None else [list(snap.block_hashes), snap.next_event_id, snap.last_seq]
        return [Kind.REPLAY_REPLY, msg.worker_id, msg.dp_rank, msg.from_seq,
                [_batch_out(b) for b in msg.batches], snap_raw]
    if isinstance(msg, WorkerDownMsg):
        return [Kind.WORKER_DOWN, msg.worker_id, msg.dp_rank, msg.t_ms, msg.reason.value, msg.detail,
                msg.cause]
    if isinstance(msg, ShutdownMsg):
        return [Kind.SHUTDOWN, msg.t_ms]
    if isinstance(msg, StartRankMsg):
        # A rank spec holds a timing model object: it travels pickled, between the simulator's own
        # shards only (`decode(validate=True)`, for payloads from outside, refuses it).
        return [Kind.START_RANK, pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)]
    if isinstance(msg, RankReadyMsg):
        return [Kind.RANK_READY, msg.worker_id, msg.dp_rank, msg.t_ms]
    if isinstance(msg, DrainRankMsg):
        return [Kind.DRAIN_RANK, msg.worker_id, msg.dp_rank, msg.expected]
    if isinstance(msg, StopRankMsg):
        return [Kind.STOP_RANK, msg.worker_id, msg.dp_rank, msg.reason.value, msg.detail, msg.cause]
    if isinstance(msg, RankStoppedMsg):
        return [Kind.RANK_STOPPED, msg.worker_id, msg.dp_rank, msg.t_ms]
    raise TypeError(f"not an event-plane message: {msg!r}")


def _msg_in(raw: list[Any], trusted: bool = True) -> Message:
    kind, *rest = raw
    if kind == Kind.KV_BATCH:
        return _batch_in(rest)
    if kind == Kind.REQUEST:
        rid, w, r, isl, osl, ids, tbs, disp, bh, lh, *carried = rest
        gen, last = carried[:2] if carried else (0, 0.0)  # a request that never migrated may leave them out
        source = TransferSource(*carried[2]) if len(carried) > 2 else None
        return RequestMsg(rid, w, r, isl, osl, tuple(ids), tbs, disp, None if bh is None else tuple(bh),
                          None if lh is None else tuple(lh), gen, last, source)
    if kind == Kind.HANDOFF:
        rid, w, r, t, record, bpt, bw, missing = rest
        return HandoffMsg(rid, w, r, t, EngineRecord(*record), bpt, bw, missing)
    if kind == Kind.TRANSFER_DONE:
        return TransferDoneMsg(*rest)
    if kind == Kind.RELEASE_SOURCE:
        return ReleaseSourceMsg(*rest)
    if kind == Kind.FIRST_TOKEN:
        return FirstTokenMsg(*rest)
    if kind == Kind.COMPLETION:
        rid, w, r, status, record, reason, detail, cause = rest
        return CompletionMsg(rid, w, r, _STATUSES[status], EngineRecord(*record),
                             None if reason is None else FailureReason(reason), detail, cause)
    if kind == Kind.LOAD_METRICS:
        return _metrics_in(rest)
    if kind == Kind.REPLAY_REQUEST:
        return ReplayRequestMsg(*rest)
    if kind == Kind.REPLAY_REPLY:
        w, r, from_seq, batches, snap_raw = rest
        snap = None if snap_raw is None else KvSnapshot(tuple(snap_raw[0]), snap_raw[1], snap_raw[2])
        return ReplayReplyMsg(w, r, from_seq, tuple(_batch_in(b) for b in batches), snap)
    if kind == Kind.WORKER_DOWN:
        w, r, t_ms, reason, detail, cause = rest
        return WorkerDownMsg(w, r, t_ms, FailureReason(reason), detail, cause)
    if kind == Kind.SHUTDOWN:
        return ShutdownMsg(*rest)
    if kind == Kind.START_RANK:
        if not trusted:
            raise DecodeError("start-rank messages are internal to the simulator")
        start: StartRankMsg = pickle.loads(rest[0])
        return start
    if kind == Kind.RANK_READY:
        return RankReadyMsg(*rest)
    if kind == Kind.DRAIN_RANK:
        return DrainRankMsg(*rest)
    if kind == Kind.STOP_RANK:
        w, r, reason, detail, cause = rest
        return StopRankMsg(w, r, FailureReason(reason), detail, cause)
    if kind == Kind.RANK_STOPPED:
        return RankStoppedMsg(*rest)
    raise DecodeError(f"unknown message kind {kind!r}")


def encode(envelopes: list[Envelope]) -> bytes:
    """Envelopes as one msgpack payload (order preserved)."""
    import msgpack  # only runtimes that carry envelopes between processes need it

    data: bytes = msgpack.packb(
        [[e.t_arrive, e.key, e.dst, _TOPIC_INDEX[e.topic], _msg_out(e.msg)] for e in envelopes],
        use_bin_type=True,
    )
    return data


_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def _validate(msg: Message) -> None:
    """Check every field of a decoded message (nested ones too) against its declared type."""
    kind = type(msg)
    adapter = _ADAPTERS.get(kind)
    if adapter is None:
        adapter = _ADAPTERS[kind] = TypeAdapter(kind)
    adapter.validate_python(asdict(msg))


def decode(payload: bytes, validate: bool = False) -> list[Envelope]:
    """Envelopes from `encode`'s payload.

    Args:
        payload: msgpack bytes.
        validate: check every message with pydantic (for payloads from outside the
            simulator); trusted shard-to-shard traffic skips it.

    Raises:
        DecodeError: malformed payload (one line naming the problem).
    """
    import msgpack

    try:
        rows = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        out = [Envelope(t, key, dst, _TOPICS[topic], _msg_in(m, not validate)) for t, key, dst, topic, m in rows]
    except DecodeError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, msgpack.ExtraData) as exc:
        raise DecodeError(f"malformed event-plane payload: {type(exc).__name__}: {exc}") from None
    if validate:
        for env in out:
            try:
                _validate(env.msg)
            except ValidationError as exc:
                first = exc.errors()[0]
                loc = ".".join(str(p) for p in first["loc"])
                raise DecodeError(f"invalid {type(env.msg).__name__}: {loc}: {first['msg']}") from None
    return out
