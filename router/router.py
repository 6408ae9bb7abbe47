"""`KvRouter`: the router facade a host drives on a virtual clock.

One object serves every router mode (kv, round_robin, random, least_loaded), so a
replay can swap policies by config alone. It is deterministic: same config, seed and
call sequence give the same decisions. The host calls, with its simulated `now_ms`:

    router = KvRouter(KvRouterConfig.from_json(text), block_size=64, seed=7)
    router.add_worker(worker_id, dp_size)           # before routing to it
    d = router.route(rid, block_hashes, isl_tokens, now_ms)   # RouteDecision, or None
    router.apply_events(kv_events, now_ms)          # every KV event batch the engines publish
    router.apply_event(kv_event, now_ms)            # (or one event at a time: the same)
    router.resync_slot(w, r, block_hashes, next_event_id, now_ms)  # snapshot after a lost batch
    router.on_first_token(rid, now_ms); router.on_complete(rid, now_ms)
    for d in router.drain(now_ms): ...              # after load drops, when queueing is on
    t = router.next_due_ms()                        # wake-up for held (lagged) events / TTLs

`route` returns None when the request was queued (`router_queue_threshold` set and
every worker busy, or no worker registered) or rejected (queue full, see
`take_rejected`). Queued requests are released by `drain`, which the host calls
after `on_first_token`, `on_complete` and `add_worker`.

Event lag: with `kv_event_lag_ms = L`, an event with time `t_ms` reaches the index at
`t_ms + L`; `apply_event` holds it until then. `apply_event`, `route`, `drain` and
`advance` first release every held event due at `now_ms` (in due order, ties in
arrival order). Completion and first-token signals are never delayed. Events are
sequenced per (worker, dp_rank) on release (`router.sequencing.EventFeed`); events of
unregistered workers are counted and dropped. `apply_events(batch, now_ms)` is exactly
`apply_event(e, now_ms)` for each event of the batch, in order, in one pass.
`resync_slot` installs a publisher's snapshot of one slot (see its docstring).

Approximate mode (`use_kv_events=False`): KV events are ignored; instead the blocks of
each routed request are indexed on the chosen slot and expire `router_ttl_secs` after
their last routing there.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from actors.engine.events import KvEvent, LoadMetrics
from router.config import KvRouterConfig
from router.decisions import RouteDecision, RouterStats
from router.index import PrefixIndex
from router.load import LoadTracker
from router.policies import RouterQueue
from router.selection import SELECTORS, Candidates, SelectorContext
from router.sequencing import EventFeed, GapReport


@dataclass(slots=True)
class _Pending:
    block_hashes: Sequence[int]
    isl_tokens: int
    arrival_ms: float


class KvRouter:
    """Routes requests to (worker, dp_rank) slots; see the module docstring for the protocol."""

    def __init__(self, config: KvRouterConfig, block_size: int, seed: int | np.random.SeedSequence) -> None:
        self.config = config
        self.block_size = block_size
        self._rng = np.random.default_rng(seed)
        self._index = PrefixIndex()
        selector = SELECTORS[config.router_mode]
        self.reads_kv_state = selector.reads_kv_state
        """Whether the mode reads the prefix index and active blocks (see `router.selection`)."""
        # Modes that read no active blocks need request counts and prefill tokens only, so they
        # skip the per-block deduplication.
        self._load = LoadTracker(block_size, config.router_assume_kv_reuse and self.reads_kv_state)
        self._feed = EventFeed(self._index, config.event_lag_ms, config.use_kv_events)
        self._selector = selector(SelectorContext(config, block_size, self._load, self._rng))
        self._dp_size: dict[int, int] = {}
        self._draining: set[int] = set()
        self._live = np.zeros(0, dtype=np.int64)
        self._live_keys: list[tuple[int, int]] = []
        self._live_stale = False
        """Workers were added, drained or removed since `_live` was built: rebuilt on next use, so
        registering N workers costs O(N log N), not N sorts (a 100,000-worker fleet)."""
        self._queue = RouterQueue(config.router_queue_policy)
        self._pending: dict[int, _Pending] = {}
        self._rejected: list[int] = []
        self._ttl_heap: list[tuple[float, int, int, int, tuple[int, ...]]] = []
        self._ttl_seq = 0
        self._touched: dict[tuple[int, int, int], float] = {}
        self._n = {"routed": 0, "queued": 0}

    # --------------------------------------------------------------------------- workers

    @property
    def index(self) -> PrefixIndex:
        """The prefix index (read-only use)."""
        return self._index

    @property
    def load(self) -> LoadTracker:
        """The load tracker (read-only use)."""
        return self._load

    @property
    def needs_kv_events(self) -> bool:
        """Whether routing reads the prefix index fed by KV events (a mode that reads it, events on)."""
        return self.config.use_kv_events and self.reads_kv_state

    def workers(self) -> list[tuple[int, int]]:
        """Registered (worker_id, dp_rank) slots, sorted."""
        self._ensure_live()
        return list(self._live_keys)

    def add_worker(self, worker_id: int, dp_size: int = 1) -> None:
        """Register a worker's ranks 0..dp_size-1 as routing candidates (ids restart at 0)."""
        if worker_id in self._dp_size:
            raise ValueError(f"worker {worker_id} is already registered")
        if dp_size < 1:
            raise ValueError(f"dp_size must be >= 1, got {dp_size}")
        self._dp_size[worker_id] = dp_size
        self._feed.sequencer.register(worker_id, dp_size)
        for r in range(dp_size):
            self._index.slot(worker_id, r)
        self._load.ensure_capacity(self._index.slot_capacity)
        self._refresh_live()

    def drain_worker(self, worker_id: int) -> None:
        """Stop routing to a worker (it drains): it leaves the candidates, but its index entries,
        load and events are still tracked until `remove_worker`."""
        if worker_id in self._dp_size:
            self._draining.add(worker_id)
            self._refresh_live()

    def remove_worker(self, worker_id: int) -> list[int]:
        """Forget a worker: its index entries, its load, its sequence state.

        Returns the ids of the requests the router had charged to it, ascending (the host
        decides what happens to them; the router no longer tracks them).
        """
        self._draining.discard(worker_id)
        if self._dp_size.pop(worker_id, None) is None:
            return []
        dropped: list[int] = []
        for r in sorted(k[1] for k in self._index.slots() if k[0] == worker_id):
            s = self._index.peek_slot(worker_id, r)
            assert s is not None
            dropped.extend(self._load.drop_slot(s))
        self._index.remove_worker(worker_id)
        self._feed.sequencer.reset(worker_id)
        if self._touched:
            for key in [k for k in self._touched if k[0] == worker_id]:
                del self._touched[key]
        self._refresh_live()
        return sorted(dropped)

    def _refresh_live(self) -> None:
        self._live_stale = True

    def _ensure_live(self) -> None:
        if not self._live_stale:
            return
        self._live_stale = False
        keys = sorted((w, r) for w, n in self._dp_size.items() if w not in self._draining for r in range(n))
        self._live_keys = keys
        slots = [self._index.peek_slot(w, r) for w, r in keys]
        self._live = np.asarray(slots, dtype=np.int64)

    # --------------------------------------------------------------------------- routing

    def route(
        self,
        request_id: int,
        block_hashes: Sequence[int],
        isl_tokens: int,
        now_ms: float,
        priority_jump: float = 0.0,
    ) -> RouteDecision | None:
        """Choose a slot for a request, or queue/reject it (None).

        Args:
            request_id: unique per run.
            block_hashes: the prompt's full-block sequence hashes (engine block size).
            isl_tokens: prompt length in tokens.
            now_ms: the arrival time.
            priority_jump: queue priority boost (reference `priority_jump`).
        """
        self.advance(now_ms)
        self._ensure_live()
        if request_id in self._pending or self._load.slot_of(request_id) is not None:
            raise ValueError(f"request {request_id} is already routed or queued")
        if self._queue or not len(self._live) or self._all_busy():
            cap = self.config.router_queue_max_size
            if cap is not None and len(self._queue) >= cap:
                self._rejected.append(request_id)
                return None
            cached = self._best_overlap(block_hashes) * self.block_size
            self._queue.push(request_id, now_ms, isl_tokens, min(cached, isl_tokens), priority_jump)
            self._pending[request_id] = _Pending(block_hashes, isl_tokens, now_ms)
            self._n["queued"] += 1
            return None
        return self._dispatch(request_id, block_hashes, isl_tokens, now_ms, now_ms, False)

    def drain(self, now_ms: float) -> list[RouteDecision]:
        """Release queued requests, in queue-policy order, while some worker is not busy."""
        self.advance(now_ms)
        self._ensure_live()
        out: list[RouteDecision] = []
        while self._queue and len(self._live) and not self._all_busy():
            rid = self._queue.pop()
            p = self._pending.pop(rid)
            out.append(self._dispatch(rid, p.block_hashes, p.isl_tokens, p.arrival_ms, now_ms, True))
        return out

    def cancel(self, request_id: int) -> bool:
        """Drop a queued request, or release a routed one. False if unknown."""
        if self._pending.pop(request_id, None) is not None:
            return self._queue.remove(request_id)
        return self._load.complete(request_id)

    def take_rejected(self) -> list[int]:
        """Drain the ids rejected because the router queue was full."""
        out, self._rejected = self._rejected, []
        return out

    @property
    def num_queued(self) -> int:
        return len(self._queue)

    def _all_busy(self) -> bool:
        thr = self.config.router_queue_threshold
        if thr is None:
            return False
        limit = thr * self.config.max_num_batched_tokens
        return bool((self._load.prefill_tokens[self._live] > limit).all())

    def _best_overlap(self, block_hashes: Sequence[int]) -> int:
        _, depths = self._index.match_depths(block_hashes)
        return int(depths.max()) if len(depths) else 0

    def _dispatch(
        self,
        request_id: int,
        block_hashes: Sequence[int],
        isl_tokens: int,
        arrival_ms: float,
        now_ms: float,
        queued: bool,
    ) -> RouteDecision:
        live = self._live
        load = self._load
        ov_all = np.zeros(self._index.slot_capacity, dtype=np.int64)
        s, d = self._index.match_depths(block_hashes)
        ov_all[s] = d
        overlap = ov_all[live]
        i, cost = self._selector.choose(Candidates(live, overlap, block_hashes, isl_tokens))
        slot = int(live[i])
        worker_id, dp_rank = self._live_keys[i]
        ov = int(overlap[i])
        load.add(request_id, slot, block_hashes, isl_tokens, min(ov * self.block_size, isl_tokens))
        if not self.config.use_kv_events:
            self._touch(worker_id, dp_rank, block_hashes, now_ms)
        self._n["routed"] += 1
        best = int(overlap.max()) if len(overlap) else 0
        return RouteDecision(
            request_id, worker_id, dp_rank, ov, best, self.block_size, cost, arrival_ms, now_ms, queued
        )

    # ------------------------------------------------------------------------ load signals

    def on_first_token(self, request_id: int, now_ms: float) -> None:
        """The request's first token came back: release its predicted prefill load."""
        self._load.release_prefill(request_id)

    def on_complete(self, request_id: int, now_ms: float) -> None:
        """The request finished (or failed): release its predicted blocks."""
        self._load.complete(request_id)

    def on_load_metrics(self, metrics: LoadMetrics) -> None:
        """Record a rank's reported active blocks (used when load_metrics_weight > 0)."""
        if metrics.worker_id not in self._dp_size:
            return
        s = self._index.peek_slot(metrics.worker_id, metrics.dp_rank)
        if s is not None:
            self._load.on_reported_blocks(s, metrics.active_blocks)

    # ---------------------------------------------------------------------------- events

    def apply_event(self, event: KvEvent, now_ms: float) -> None:
        """Deliver a KV event; held until `event.t_ms + kv_event_lag_ms` when a lag is set."""
        self._feed.push(event, now_ms)
        if self._ttl_heap:  # (approximate mode only, where events do not reach the index)
            self._expire_due(now_ms)

    def apply_events(self, events: Sequence[KvEvent], now_ms: float) -> None:
        """Deliver a batch of KV events: exactly `apply_event(e, now_ms)` for each, in order.

        Same sequencing, lag holding, duplicate dropping and counting, in one pass; an
        empty batch does nothing.
        """
        if events:
            self._feed.push_many(events, now_ms)
            if self._ttl_heap:
                self._expire_due(now_ms)

    def resync_slot(
        self, worker_id: int, dp_rank: int, block_hashes: Sequence[int], next_event_id: int, now_ms: float
    ) -> None:
        """Replace what the router knows of one slot by a publisher snapshot (full resync).

        The event plane calls this when a lost batch can no longer be replayed: the
        publisher sent the rank's complete set of cached block hashes, as of just before
        its event `next_event_id`. After `advance(now_ms)`, the slot holds exactly
        `block_hashes`, stored as roots (parent None, token hash 0: matching is by sequence
        hash, so parents are not needed); the slot's missing ids are forgotten and
        `next_event_id` is expected next. Events of the slot with a lower id, whether still
        held by the lag or arriving later, are then duplicates (the snapshot covers them)
        and are dropped. The snapshot itself is not delayed by `kv_event_lag_ms`.

        A resync of an unregistered slot is counted in `events_unknown_worker` and ignored;
        in approximate mode (`use_kv_events=False`) it is counted in `events_ignored`.

        Raises:
            ValueError: if `next_event_id` is negative.
        """
        if next_event_id < 0:
            raise ValueError(f"next_event_id must be >= 0, got {next_event_id} (worker {worker_id} rank {dp_rank})")
        self.advance(now_ms)
        self._feed.resync(worker_id, dp_rank, block_hashes, next_event_id)

    def advance(self, now_ms: float) -> None:
        """Release every held event due at `now_ms`, and expire approximate-mode blocks."""
        self._feed.release(now_ms)
        self._expire_due(now_ms)

    def next_due_ms(self) -> float | None:
        """When the next held event (or approximate-mode expiry) becomes due; None if none."""
        due = [self._ttl_heap[0][0]] if self._ttl_heap else []
        held = self._feed.next_due_ms()
        return min(due + [held]) if held is not None else min(due, default=None)

    def take_gap_reports(self) -> list[GapReport]:
        """Drain the sequence gaps detected since the last call."""
        return self._feed.sequencer.take_gap_reports()

    def stop_gap_reports(self) -> None:
        """A stream layer upstream detects and repairs gaps (the cluster's event plane recovers
        batches by sequence number): event-id gaps are still counted, but no reports are kept."""
        self._feed.sequencer.keep_reports = False

    def _expire_due(self, now_ms: float) -> None:
        ttl = self._ttl_heap
        while ttl and ttl[0][0] <= now_ms:
            self._expire(heapq.heappop(ttl), now_ms)

    def _touch(self, worker_id: int, dp_rank: int, block_hashes: Sequence[int], now_ms: float) -> None:
        hashes = tuple(block_hashes)
        if not hashes:
            return
        self._index.apply_stored(worker_id, dp_rank, None, hashes)
        for h in hashes:
            self._touched[(worker_id, dp_rank, h)] = now_ms
        expire = now_ms + self.config.router_ttl_secs * 1000.0
        heapq.heappush(self._ttl_heap, (expire, self._ttl_seq, worker_id, dp_rank, hashes))
        self._ttl_seq += 1

    def _expire(self, entry: tuple[float, int, int, int, tuple[int, ...]], now_ms: float) -> None:
        _, _, w, r, hashes = entry
        ttl_ms = self.config.router_ttl_secs * 1000.0
        gone = []
        for h in hashes:
            t = self._touched.get((w, r, h))
            if t is not None and t + ttl_ms <= now_ms:
                del self._touched[(w, r, h)]
                gone.append(h)
        if gone and w in self._dp_size:
            self._index.apply_removed(w, r, gone)

    # ----------------------------------------------------------------------------- stats

    def stats(self) -> RouterStats:
        """A snapshot of the router's counters."""
        feed, seq = self._feed, self._feed.sequencer
        return RouterStats(
            routed=self._n["routed"],
            queued=self._n["queued"],
            rejected=len(self._rejected),
            events_applied=feed.num_applied,
            events_held=feed.num_held,
            event_gaps=seq.num_gaps,
            events_missing=seq.num_missing,
            events_late=seq.num_late,
            events_duplicate=seq.num_duplicates,
            events_unknown_worker=feed.num_unknown,
            events_ignored=feed.num_ignored,
            stored_skipped_unknown_parent=self._index.num_skipped_stored,
            removed_ignored_unknown_block=self._index.num_ignored_removed,
        )

    def check_invariants(self) -> None:
        """Index, load and queue consistency (for tests and debug runs)."""
        self._index.check_invariants()
        self._load.check_invariants()
        self._feed.check_invariants()
        assert len(self._queue) == len(self._pending)
