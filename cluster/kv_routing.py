"""KV-aware routing inside a replay: `KvRouter` fed by the ranks' KV events on the virtual clock.

Before each routing decision at `now`, every rank publishes the KV events of the
passes that ended by `now` (decode runs are materialised up to `now`, not cut),
and the router applies them; `kv_event_lag_ms` is honoured by the router, which
holds events until `t_ms + lag`. First-token and completion signals go straight
to the router's load tracking.
"""

from __future__ import annotations

from actors.engine.sequence import EngineRequest
from actors.engine.vllm import VllmRank
from router.router import KvRouter


class KvRouting:
    """Adapts `KvRouter` to the replay's `Router` protocol."""

    def __init__(self, router: KvRouter, ranks: list[VllmRank]) -> None:
        self.router = router
        self.ranks = ranks
        self._slot: dict[tuple[int, int], int] = {}
        dp_sizes: dict[int, int] = {}
        for i, rank in enumerate(ranks):
            self._slot[(rank.worker_id, rank.dp_rank)] = i
            dp_sizes[rank.worker_id] = dp_sizes.get(rank.worker_id, 0) + 1
        for worker_id, dp_size in dp_sizes.items():
            router.add_worker(worker_id, dp_size)
        self.overlap_blocks: dict[int, int] = {}

    def publish(self, now_ms: float) -> None:
        """Deliver every KV event the ranks made visible by `now_ms`."""
        router = self.router
        for rank in self.ranks:
            rank.flush(now_ms)
            if rank.events:
                for event in rank.take_events():
                    router.apply_event(event, now_ms)

    def route(self, req: EngineRequest, now_ms: float) -> int:
        self.publish(now_ms)
        rid = req.record.request_id
        decision = self.router.route(rid, req.hashes[:req.prompt_full_blocks], req.prompt_len, now_ms)
        if decision is None:
            raise RuntimeError("router queued a request; router queueing is not wired into replay")
        self.overlap_blocks[rid] = decision.overlap_blocks
        return self._slot[(decision.worker_id, decision.dp_rank)]

    def on_first_token(self, req: EngineRequest, now_ms: float) -> None:
        self.router.on_first_token(req.record.request_id, now_ms)

    def on_complete(self, req: EngineRequest, now_ms: float) -> None:
        self.router.on_complete(req.record.request_id, now_ms)
