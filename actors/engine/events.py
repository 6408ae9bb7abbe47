"""KV cache events and per-pass load metrics emitted by engine workers.

These are the values that cross from an engine to the event plane, the router
index and the planner. They are frozen, slotted dataclasses because engines
create them on hot paths; `cluster.plane.messages` wraps them into pydantic wire
models when they cross a process or a file.

Invariants:
- `event_id` is monotonic per (worker_id, dp_rank), starting at 0, with no gaps.
- A `KvStored` is emitted when a full block first becomes cache-visible on a rank
  (its first physical copy); consecutive new blocks of one request in one pass
  are grouped and `parent_hash` is the sequence hash of the block before them.
- A `KvRemoved` is emitted when the last physical copy of a hash is evicted.
- `t_ms` is the end of the forward pass that made the change visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType, Union

WorkerId = NewType("WorkerId", int)
BlockHash = NewType("BlockHash", int)
"""A block's sequence hash: u64, chained over all tokens from the start of the sequence."""


@dataclass(frozen=True, slots=True)
class KvStored:
    """Blocks that became cache-visible, in sequence order."""

    parent_hash: int | None
    block_hashes: tuple[int, ...]
    token_hashes: tuple[int, ...]
    """Local (content-only) hash of each block, aligned with `block_hashes`."""
    token_ids: tuple[int, ...] | None = None
    """Every token of the blocks, concatenated (`emit_kv_token_ids`); None when not emitted."""


@dataclass(frozen=True, slots=True)
class KvRemoved:
    """Blocks whose last physical copy was evicted."""

    block_hashes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class KvCleared:
    """Every block of the rank was dropped (worker reset or restart)."""


KvEventData = Union[KvStored, KvRemoved, KvCleared]


@dataclass(frozen=True, slots=True)
class KvEvent:
    """One KV event of one DP rank of one worker."""

    t_ms: float
    worker_id: int
    dp_rank: int
    event_id: int
    data: KvEventData


@dataclass(frozen=True, slots=True)
class ForwardPass:
    """What one forward pass scheduled and how long it took (the reference's forward-pass metrics:
    `wall_time`, `scheduled_requests.{num,sum}_{prefill,decode}_...`). `prefill_tokens` counts the
    tokens computed in the pass (cached prefix excluded); `decode_kv_tokens` the decode requests'
    context lengths."""

    wall_ms: float
    prefill_requests: int
    prefill_tokens: int
    decode_requests: int
    decode_kv_tokens: int


@dataclass(frozen=True, slots=True)
class LoadMetrics:
    """Scheduler state of one DP rank, sampled at the end of a scheduling step.

    A step is one forward pass, or one macro-stepped run of decode passes (then
    the values are those at the end of the run, and `last_pass` is the run's last pass).
    """

    t_ms: float
    worker_id: int
    dp_rank: int
    active_blocks: int
    inactive_blocks: int
    total_blocks: int
    running_requests: int
    waiting_requests: int
    preemptions_total: int
    last_pass: ForwardPass | None = None
    """The latest forward pass that ended (None before the first)."""

    @property
    def cache_usage(self) -> float:
        """Fraction of the KV capacity held by active (referenced or private) blocks."""
        return self.active_blocks / self.total_blocks if self.total_blocks else 1.0
