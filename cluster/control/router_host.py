"""The router inside the control shard: policy adapter, KV stream subscription, queueing.

`RouterHost` routes each dispatched request to a rank (global index) with one of:
- a `KvRouter` (router/): KV-aware, least-loaded, random or round robin by config,
  with router-side load prediction and optional router queueing; it is fed only by the
  ranks' KV event batches, reassembled per publisher by a `KvSubscriber` (gap detection,
  replay and resync when the plane's recovery is on), and by first-token / completion
  signals from the response stream, which pass through the control shard undelayed;
- any `RoutingPolicy` (e.g. `RoundRobinRouter`), which sees only the request.
Queued requests (KvRouter with `router_queue_threshold`) are released by `drain` after
every first token, completion and worker loss, in the queue policy's order.

Every decision of a KvRouter is appended to the request's `routing_history` with the
reference replay's keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from actors.engine.hashing import PromptHasher
from actors.engine.records import RequestRecord
from cluster.plane.endpoint import PlaneEndpoint
from cluster.plane.messages import (
    CONTROL_ADDR,
    KvBatchMsg,
    KvSnapshot,
    LoadMetricsMsg,
    ReplayReplyMsg,
    ReplayRequestMsg,
    Topic,
    WorkerDownMsg,
    rank_addr,
)
from cluster.plane.recovery import KvSubscriber
from router.decisions import RouteDecision
from router.router import KvRouter


class RouteQuery:
    """What a policy may look at: ids, prompt length, and the prompt's block hashes (lazily)."""

    __slots__ = ("request_id", "prompt_len", "hash_ids", "_hasher", "_hashes", "_locals")

    def __init__(self, request_id: int, prompt_len: int, hash_ids: tuple[int, ...], hasher: PromptHasher) -> None:
        self.request_id = request_id
        self.prompt_len = prompt_len
        self.hash_ids = hash_ids
        self._hasher = hasher
        self._hashes: tuple[int, ...] | None = None
        self._locals: tuple[int, ...] = ()

    @property
    def hashes(self) -> tuple[int, ...]:
        """Sequence hashes of the prompt's full engine blocks."""
        if self._hashes is None:
            seqs, locals_ = self._hasher.hash_prompt(self.hash_ids, self.prompt_len)
            self._hashes, self._locals = tuple(seqs), tuple(locals_)
        return self._hashes

    def computed(self) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
        """(sequence, local) hashes if `hashes` was asked for, else None (nothing computed)."""
        return None if self._hashes is None else (self._hashes, self._locals)


class RoutingPolicy(Protocol):
    """Chooses a rank for each request; told when first tokens and completions come back."""

    def route(self, query: RouteQuery, now_ms: float) -> int:
        """Global rank index for this request."""
        ...

    def on_first_token(self, query: RouteQuery, now_ms: float) -> None: ...

    def on_complete(self, query: RouteQuery, now_ms: float) -> None: ...


class RoundRobinRouter:
    """Cycles over ranks in global index order."""

    def __init__(self, num_ranks: int) -> None:
        self.num_ranks = num_ranks
        self._next = 0

    def route(self, query: RouteQuery, now_ms: float) -> int:
        idx = self._next
        self._next = (idx + 1) % self.num_ranks
        return idx

    def on_first_token(self, query: RouteQuery, now_ms: float) -> None:
        pass

    def on_complete(self, query: RouteQuery, now_ms: float) -> None:
        pass


SendRequest = Callable[[float, RequestRecord, tuple[int, ...], int, RouteQuery], None]
"""Send a request to the rank with this global index at `now` (the query carries computed hashes)."""
Reject = Callable[[float, RequestRecord, str], None]


class RouterHost:
    """See the module docstring.

    Args:
        slots: `(worker_id, dp_rank)` of every rank, indexed by global rank index.
        policy: a simple policy, or None when `kv_router` is given.
        kv_router: the KV-aware router (registered with every worker here).
        plane: the control shard's plane endpoint (replay requests leave through it).
        send_request / reject: the frontend's ways to dispatch or end a request.
        recovery: recover KV stream gaps (replay / resync) or only count them.
    """

    def __init__(
        self,
        slots: Sequence[tuple[int, int]],
        policy: RoutingPolicy | None,
        kv_router: KvRouter | None,
        plane: PlaneEndpoint,
        send_request: SendRequest,
        reject: Reject,
        hasher: PromptHasher,
        recovery: bool = True,
    ) -> None:
        if (policy is None) == (kv_router is None):
            raise ValueError("give exactly one of policy and kv_router")
        self.slots = list(slots)
        self.policy = policy
        self.kv_router = kv_router
        self.plane = plane
        self._send_request = send_request
        self._reject = reject
        self._hasher = hasher
        self._gidx = {slot: g for g, slot in enumerate(self.slots)}
        self._queries: dict[int, RouteQuery] = {}
        self._pending: dict[int, tuple[RequestRecord, RouteQuery]] = {}
        self._down: set[int] = set()
        self.queueing = kv_router is not None and kv_router.config.router_queue_threshold is not None
        self.subscriber = KvSubscriber(recovery, self._apply_batch, self._resync, self._request_replay)
        self._now = 0.0
        if kv_router is not None:
            dp_sizes: dict[int, int] = {}
            for w, _ in self.slots:
                dp_sizes[w] = dp_sizes.get(w, 0) + 1
            for w in sorted(dp_sizes):
                kv_router.add_worker(w, dp_sizes[w])

    @property
    def subscribes_kv(self) -> bool:
        """Whether ranks must publish KV events for this router."""
        return self.kv_router is not None and self.kv_router.config.use_kv_events

    @property
    def uses_load_metrics(self) -> bool:
        return self.kv_router is not None and self.kv_router.config.load_metrics_weight > 0

    # ------------------------------------------------------------------ routing

    def route(self, now: float, record: RequestRecord, hash_ids: tuple[int, ...]) -> None:
        rid = record.request_id
        query = RouteQuery(rid, record.input_length, hash_ids, self._hasher)
        if self.kv_router is None:
            assert self.policy is not None
            self._queries[rid] = query
            self._send_request(now, record, hash_ids, self.policy.route(query, now), query)
            return
        router = self.kv_router
        decision = router.route(rid, query.hashes, record.input_length, now)
        if decision is None:
            if router.take_rejected():
                self._reject(now, record, "router queue is full")
            else:
                self._pending[rid] = (record, query)
            return
        self._dispatch(now, record, query, decision)

    def _dispatch(self, now: float, record: RequestRecord, query: RouteQuery, d: RouteDecision) -> None:
        record.routing_history.append(d.history_entry())
        self._send_request(now, record, query.hash_ids, self._gidx[(d.worker_id, d.dp_rank)], query)

    def drain(self, now: float) -> None:
        """Release queued requests while some worker has room (router queueing only)."""
        if not self.queueing or not self._pending:
            return
        assert self.kv_router is not None
        for d in self.kv_router.drain(now):
            record, query = self._pending.pop(d.request_id)
            self._dispatch(now, record, query, d)

    def on_first_token(self, now: float, rid: int) -> None:
        if self.kv_router is not None:
            self.kv_router.on_first_token(rid, now)
            self.drain(now)
        else:
            assert self.policy is not None
            self.policy.on_first_token(self._queries[rid], now)

    def on_complete(self, now: float, rid: int) -> None:
        if self.kv_router is not None:
            self.kv_router.on_complete(rid, now)
            self.drain(now)
        else:
            assert self.policy is not None
            self.policy.on_complete(self._queries.pop(rid), now)

    # ------------------------------------------------------------------ event plane in

    def _deaf_to(self, worker_id: int, dp_rank: int) -> bool:
        """Stream messages of this slot change nothing: no KV router, or the worker is gone."""
        return self.kv_router is None or self._gidx.get((worker_id, dp_rank)) in self._down

    def on_kv_batch(self, now: float, batch: KvBatchMsg) -> None:
        if self._deaf_to(batch.worker_id, batch.dp_rank):
            return
        self._now = now
        self.subscriber.on_batch(batch)

    def on_metrics(self, now: float, msg: LoadMetricsMsg) -> None:
        m = msg.metrics
        if self._deaf_to(m.worker_id, m.dp_rank):
            return
        assert self.kv_router is not None
        self._now = now
        if self.uses_load_metrics:
            self.kv_router.on_load_metrics(m)
        if self.subscribes_kv:
            self.subscriber.on_heartbeat(m.worker_id, m.dp_rank, msg.kv_seq)

    def on_replay(self, now: float, reply: ReplayReplyMsg) -> None:
        if self._deaf_to(reply.worker_id, reply.dp_rank):
            return
        self._now = now
        self.subscriber.on_replay(reply)

    def on_worker_down(self, now: float, msg: WorkerDownMsg) -> None:
        g = self._gidx[(msg.worker_id, msg.dp_rank)]
        if g in self._down:
            return
        # A worker with one rank down serves nothing: all its ranks leave routing.
        for gg, (w, _) in enumerate(self.slots):
            if w == msg.worker_id:
                self._down.add(gg)
                self.subscriber.forget(*self.slots[gg])
        if self.kv_router is not None:
            self.kv_router.remove_worker(msg.worker_id)
            self.drain(now)

    def _apply_batch(self, batch: KvBatchMsg) -> None:
        assert self.kv_router is not None
        self.kv_router.apply_events(batch.events, self._now)

    def _resync(self, worker_id: int, dp_rank: int, snap: KvSnapshot) -> None:
        assert self.kv_router is not None
        self.kv_router.resync_slot(worker_id, dp_rank, snap.block_hashes, snap.next_event_id, self._now)

    def _request_replay(self, worker_id: int, dp_rank: int, from_seq: int) -> None:
        g = self._gidx[(worker_id, dp_rank)]
        self.plane.send(Topic.KV_REPLAY, CONTROL_ADDR, rank_addr(g),
                        ReplayRequestMsg(worker_id, dp_rank, from_seq, CONTROL_ADDR), self._now)
