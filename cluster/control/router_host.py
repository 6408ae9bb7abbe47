"""The router inside the control shard: a `KvRouter`, its KV stream subscription, queueing.

`RouterHost` routes each dispatched request to a rank (global index) with a `KvRouter`
(router/) in any mode (kv, round_robin, random, least_loaded), with router-side load
prediction and optional router queueing. In kv mode it is fed only by the ranks' KV event
batches, reassembled per publisher by a `KvSubscriber` (gap detection, replay and resync
when the plane's recovery is on), and by first-token / completion signals from the response
stream, which pass through the control shard undelayed. Queued requests
(`router_queue_threshold`) are released by `drain` after every first token, completion and
worker loss, in the queue policy's order.

The plane's subscriber is the one gap detector of a KV stream: the router's own event
sequencer only orders and de-duplicates (`KvRouter.stop_gap_reports`). Every kv-mode decision
is appended to the request's `routing_history` with the reference replay's keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from actors.engine.hashing import PromptHasher
from actors.engine.records import FailureReason, RequestRecord
from cluster.plane.endpoint import PlaneEndpoint
from cluster.plane.messages import (
    CONTROL_ADDR,
    KvBatchMsg,
    KvSnapshot,
    LoadMetricsMsg,
    ReplayReplyMsg,
    ReplayRequestMsg,
    Topic,
    rank_addr,
)
from cluster.plane.recovery import KvSubscriber
from router.decisions import RouteDecision
from router.router import KvRouter

PromptHashes = tuple[tuple[int, ...], tuple[int, ...]]
"""A prompt's (sequence, local) full-block hashes."""

SendRequest = Callable[[float, RequestRecord, tuple[int, ...], int, PromptHashes], None]
SendDecode = Callable[[float, RequestRecord, tuple[int, ...], int, PromptHashes, object], None]
"""Send a prefilled request to the decode rank with this global index, with its transfer source."""
"""Send a request to the rank with this global index at `now`, with its prompt hashes."""
Reject = Callable[[float, RequestRecord, FailureReason, str], None]
Fail = Callable[[float, RequestRecord, FailureReason, str, str | None], None]
"""End a request as failed at `now`: reason, detail, cause."""


class RouterHost:
    """See the module docstring.

    Args:
        slots: `(worker_id, dp_rank)` of every rank of the initial fleet, indexed by global rank index
            (workers added later come in through `add_worker`).
        kv_router: the router (every worker is registered with it here).
        plane: the control shard's plane endpoint (replay requests leave through it).
        send_request / reject: the frontend's ways to dispatch or end a request.
        hasher: hashes prompts with the workers' block size.
        recovery: recover KV stream gaps (replay / resync) or only count them.
    """

    def __init__(
        self,
        slots: Sequence[tuple[int, int]],
        kv_router: KvRouter,
        plane: PlaneEndpoint,
        send_request: SendRequest,
        reject: Reject,
        hasher: PromptHasher,
        recovery: bool = True,
        fail: Fail | None = None,
        decode_router: KvRouter | None = None,
        decode_workers: frozenset[int] = frozenset(),
        send_decode: SendDecode | None = None,
    ) -> None:
        self.slots: dict[int, tuple[int, int]] = dict(enumerate(slots))
        """Global rank index -> (worker_id, dp_rank), for every rank ever routable."""
        self.kv_router = kv_router
        self.plane = plane
        self._send_request = send_request
        self._reject = reject
        self._fail: Fail = fail if fail is not None else (lambda now, r, reason, detail, cause: reject(now, r, reason, detail))
        self.serving: Callable[[], bool] = lambda: True
        """Whether some worker serves or is starting (the fleet sets it). When none does, a request
        fails at once (`no_live_worker`) instead of waiting for a worker that will never come."""
        self._hasher = hasher
        self._gidx = {slot: g for g, slot in self.slots.items()}
        self._sent: dict[int, int] = {}
        """Requests sent to each rank (a draining rank stops once it has finished them all)."""
        self._pending: dict[int, tuple[RequestRecord, tuple[int, ...], PromptHashes]] = {}
        self._down: set[int] = set()
        self.decode_router = decode_router
        """Disaggregated serving: the decode stage's router (over the decode pool); `kv_router` is then
        the prefill stage's (over the prefill pool)."""
        self._decode_pool = set(decode_workers)
        self._send_decode = send_decode
        self._decoding: set[int] = set()
        """Requests routed to a decode worker (their first token and completion are the decode router's)."""
        self._pending_decode: dict[int, tuple[RequestRecord, tuple[int, ...], PromptHashes, object]] = {}
        self._hashes: dict[int, PromptHashes] = {}
        """Disaggregated: a prompt's hashes from the prefill stage, until the decode stage routes it."""
        config = kv_router.config
        self.queueing = config.router_queue_threshold is not None
        self.keeps_history = kv_router.reads_kv_state  # nothing reads other modes' history
        self.subscriber = KvSubscriber(recovery, self._apply_batch, self._resync, self._request_replay)
        kv_router.stop_gap_reports()
        self._now = 0.0
        dp_sizes: dict[int, int] = {}
        for w, _ in self.slots.values():
            dp_sizes[w] = dp_sizes.get(w, 0) + 1
        for w in sorted(dp_sizes):
            self._router_of(w).add_worker(w, dp_sizes[w])

    @property
    def decode_pool(self) -> frozenset[int]:
        """Worker ids of the decode pool (empty without disaggregation)."""
        return frozenset(self._decode_pool) if self.decode_router is not None else frozenset()

    def gidx_of(self, worker_id: int, dp_rank: int) -> int:
        return self._gidx[(worker_id, dp_rank)]

    def _router_of(self, worker_id: int) -> KvRouter:
        """The router of the worker's pool (the decode router for decode workers)."""
        if self.decode_router is not None and worker_id in self._decode_pool:
            return self.decode_router
        return self.kv_router

    # ------------------------------------------------------------------ the fleet changes

    def add_worker(self, now: float, worker_id: int, gidxs: Sequence[int], decode: bool = False) -> None:
        """A worker became ready: its ranks (DP rank order) join routing (`decode`: the decode pool)."""
        for r, g in enumerate(gidxs):
            self.slots[g] = (worker_id, r)
            self._gidx[(worker_id, r)] = g
        if decode:
            self._decode_pool.add(worker_id)
        self._router_of(worker_id).add_worker(worker_id, len(gidxs))
        self.drain(now)

    def stop_routing(self, worker_id: int) -> dict[int, int]:
        """A worker starts draining: no request goes to it from now on. Returns, per rank (global
        index), how many requests were sent to it."""
        self._router_of(worker_id).drain_worker(worker_id)
        return {g: self._sent.get(g, 0) for g, (w, _) in self.slots.items() if w == worker_id}

    def remove_worker(self, now: float, worker_id: int) -> None:
        """A worker stopped: its index entries and load go, its streams are forgotten."""
        for g, (w, r) in self.slots.items():
            if w == worker_id and g not in self._down:
                self._down.add(g)
                self.subscriber.forget(w, r)
        self._router_of(worker_id).remove_worker(worker_id)
        self.drain(now)

    def restart(self, now: float) -> None:
        """The router restarts (`restart_router` fault): its prefix index is lost, and rebuilt from
        the serving workers' KV streams (each replays from its first batch, or sends a snapshot)."""
        if not self.subscribes_kv:
            return
        self._now = now
        for w, r in self.kv_router.workers():
            self.kv_router.resync_slot(w, r, (), 0, now)  # empty, expecting the stream from its start
            self.subscriber.restart(w, r)

    @property
    def subscribes_kv(self) -> bool:
        """Whether ranks must publish KV events for this router."""
        return self.kv_router.needs_kv_events

    @property
    def uses_load_metrics(self) -> bool:
        return self.kv_router.config.load_metrics_weight > 0

    # ------------------------------------------------------------------ routing

    def route(self, now: float, record: RequestRecord, hash_ids: tuple[int, ...]) -> None:
        rid = record.request_id
        if not self.serving():
            self._fail(now, record, FailureReason.NO_LIVE_WORKER, "no worker is serving or starting", None)
            return
        seqs, locals_ = self._hasher.hash_prompt(hash_ids, record.input_length)
        hashes: PromptHashes = (tuple(seqs), tuple(locals_))
        if self.decode_router is not None:
            self._hashes[rid] = hashes
        router = self.kv_router
        decision = router.route(rid, hashes[0], record.input_length + record.carried_tokens, now)
        if decision is None:
            if router.take_rejected():
                self._reject(now, record, FailureReason.ROUTER_QUEUE_FULL, "router queue is full")
            else:
                self._pending[rid] = (record, hash_ids, hashes)
            return
        self._dispatch(now, record, hash_ids, hashes, decision)

    def route_decode(self, now: float, record: RequestRecord, hash_ids: tuple[int, ...], source: object) -> None:
        """Disaggregated: the prompt is prefilled; the decode router picks the destination (facts §i:
        load only, no overlap credit, no prefill tokens tracked; see `cluster.control.disagg`)."""
        router = self.decode_router
        assert router is not None
        rid = record.request_id
        hashes = self._hashes.pop(rid)
        decision = router.route(rid, hashes[0], record.input_length, now)
        if decision is None:
            if router.take_rejected():
                self._reject(now, record, FailureReason.ROUTER_QUEUE_FULL, "decode router queue is full")
            else:
                self._pending_decode[rid] = (record, hash_ids, hashes, source)
            return
        self._dispatch_decode(now, record, hash_ids, hashes, source, decision)

    def _dispatch_decode(self, now: float, record: RequestRecord, hash_ids: tuple[int, ...], hashes: PromptHashes,
                         source: object, d: RouteDecision) -> None:
        assert self._send_decode is not None
        if self.keeps_history:
            record.routing_history.append(d.history_entry("decode"))
        record.worker_id, record.dp_rank = d.worker_id, d.dp_rank
        g = self._gidx[(d.worker_id, d.dp_rank)]
        self._sent[g] = self._sent.get(g, 0) + 1
        self._decoding.add(record.request_id)
        self._send_decode(now, record, hash_ids, g, hashes, source)

    def on_prefill_done(self, now: float, rid: int) -> None:
        """The prefill worker computed the prompt (its prefill tokens are released)."""
        self.kv_router.on_first_token(rid, now)
        self.drain(now)

    def on_source_released(self, now: float, rid: int) -> None:
        """The transfer ended: the prefill worker holds the request no more."""
        self.kv_router.on_complete(rid, now)
        self.drain(now)

    def _dispatch(self, now: float, record: RequestRecord, hash_ids: tuple[int, ...], hashes: PromptHashes,
                  d: RouteDecision) -> None:
        if self.keeps_history:
            record.routing_history.append(d.history_entry("aggregated" if self.decode_router is None else "prefill"))
        record.worker_id, record.dp_rank = d.worker_id, d.dp_rank
        g = self._gidx[(d.worker_id, d.dp_rank)]
        self._sent[g] = self._sent.get(g, 0) + 1
        self._send_request(now, record, hash_ids, g, hashes)

    def drain(self, now: float) -> None:
        """Release queued requests while some worker has room (router queueing, or requests that
        arrived while every worker was still starting)."""
        if self._pending:
            for d in self.kv_router.drain(now):
                record, hash_ids, hashes = self._pending.pop(d.request_id)
                self._dispatch(now, record, hash_ids, hashes, d)
        if self._pending_decode and self.decode_router is not None:
            for d in self.decode_router.drain(now):
                record, hash_ids, hashes, source = self._pending_decode.pop(d.request_id)
                self._dispatch_decode(now, record, hash_ids, hashes, source, d)

    def fail_pending(self, now: float, detail: str, cause: str | None) -> None:
        """The last worker is gone and none is starting: every queued request fails (`no_live_worker`),
        in request id order."""
        for rid in sorted(self._pending):
            record = self._pending.pop(rid)[0]
            self.kv_router.cancel(rid)
            self._fail(now, record, FailureReason.NO_LIVE_WORKER, detail, cause)
        for rid in sorted(self._pending_decode):
            record = self._pending_decode.pop(rid)[0]
            if self.decode_router is not None:
                self.decode_router.cancel(rid)
            self._fail(now, record, FailureReason.NO_LIVE_WORKER, detail, cause)

    def _stage_router(self, rid: int) -> KvRouter:
        if self.decode_router is not None and rid in self._decoding:
            return self.decode_router
        return self.kv_router

    def on_first_token(self, now: float, rid: int) -> None:
        self._stage_router(rid).on_first_token(rid, now)
        self.drain(now)

    def on_complete(self, now: float, rid: int) -> None:
        self._stage_router(rid).on_complete(rid, now)
        self._decoding.discard(rid)
        self._hashes.pop(rid, None)
        self.drain(now)

    # ------------------------------------------------------------------ event plane in

    def _deaf_to(self, worker_id: int, dp_rank: int) -> bool:
        """Stream messages of this slot change nothing: the worker is gone."""
        return self._gidx.get((worker_id, dp_rank)) in self._down

    def on_kv_batch(self, now: float, batch: KvBatchMsg) -> None:
        if self._deaf_to(batch.worker_id, batch.dp_rank):
            return
        self._now = now
        self.subscriber.on_batch(batch)

    def on_metrics(self, now: float, msg: LoadMetricsMsg) -> None:
        m = msg.metrics
        if self._deaf_to(m.worker_id, m.dp_rank):
            return
        self._now = now
        if self.uses_load_metrics:
            self._router_of(m.worker_id).on_load_metrics(m)
        if self.subscribes_kv:
            self.subscriber.on_heartbeat(m.worker_id, m.dp_rank, msg.kv_seq)

    def on_replay(self, now: float, reply: ReplayReplyMsg) -> None:
        if self._deaf_to(reply.worker_id, reply.dp_rank):
            return
        self._now = now
        self.subscriber.on_replay(reply)

    def _apply_batch(self, batch: KvBatchMsg) -> None:
        self.kv_router.apply_events(batch.events, self._now)

    def _resync(self, worker_id: int, dp_rank: int, snap: KvSnapshot) -> None:
        self.kv_router.resync_slot(worker_id, dp_rank, snap.block_hashes, snap.next_event_id, self._now)

    def _request_replay(self, worker_id: int, dp_rank: int, from_seq: int) -> None:
        g = self._gidx[(worker_id, dp_rank)]
        self.plane.send(Topic.KV_REPLAY, CONTROL_ADDR, rank_addr(g),
                        ReplayRequestMsg(worker_id, dp_rank, from_seq, CONTROL_ADDR), self._now)
