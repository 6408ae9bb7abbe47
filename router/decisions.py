"""Values the router hands back to its host: routing decisions and counters."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Where one request went, and what the per-request routing history needs."""

    request_id: int
    worker_id: int
    dp_rank: int
    overlap_blocks: int
    """Leading prompt blocks the chosen slot holds, per the router's index."""
    best_overlap_blocks: int
    """The largest overlap any candidate slot had."""
    block_size: int
    cost: float
    """The chosen slot's kv cost (NaN for non-kv modes)."""
    arrival_ms: float
    """When `route` was called."""
    routed_at_ms: float
    """When the slot was chosen (= arrival unless queued)."""
    queued: bool

    @property
    def overlap_tokens(self) -> int:
        return self.overlap_blocks * self.block_size

    @property
    def overlap_regret_blocks(self) -> int:
        return self.best_overlap_blocks - self.overlap_blocks

    @property
    def queue_wait_ms(self) -> float:
        return self.routed_at_ms - self.arrival_ms

    def history_entry(self, pool: str = "aggregated") -> dict[str, object]:
        """A `routing_history` item with the reference replay's keys (facts §h)."""
        return {
            "pool": pool,
            "outcome": "queued" if self.queued else "immediate",
            "queue_entered_at_ms": self.arrival_ms if self.queued else None,
            "released_at_ms": self.routed_at_ms,
            "queue_wait_ms": self.queue_wait_ms,
            "logical_worker_id": self.worker_id,
            "dp_rank": self.dp_rank,
            "reported_overlap_tokens": self.overlap_tokens,
            "selected_overlap_blocks": self.overlap_blocks,
            "best_available_overlap_blocks": self.best_overlap_blocks,
            "overlap_regret_blocks": self.overlap_regret_blocks,
        }


@dataclass(frozen=True, slots=True)
class RouterStats:
    """Counters for reports and chaos checks."""

    routed: int
    queued: int
    rejected: int
    events_applied: int
    events_held: int
    event_gaps: int
    events_missing: int
    events_late: int
    events_duplicate: int
    events_unknown_worker: int
    events_ignored: int
    stored_skipped_unknown_parent: int
    removed_ignored_unknown_block: int
