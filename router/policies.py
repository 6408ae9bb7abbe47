"""Worker-selection policies and router queue policies.

Selection works on candidate arrays aligned with the router's live slots (sorted by
(worker_id, dp_rank)), so ties are broken by the seeded generator over a fixed
order, never by set or dict iteration order.

KV cost (reference default selector, facts §i), per candidate, lower wins:

    decay          = 1 / (1 + credit_decay * ((prefill_w - min prefill) / bs) / request_blocks)   (1 if decay 0)
    overlap_credit = overlap_score_credit * decay * overlap_blocks_w
    raw_prefill    = (prefill_tokens_w + isl) / bs          (0 if prefill tokens are not tracked)
    cost           = prefill_load_scale * max(0, raw_prefill - overlap_credit)
                     + decode_blocks_w + additional_blocks_w
                     + decode_active_request_weight * active_requests_w

where `decode_blocks_w` is the slot's active blocks and `additional_blocks_w` the
request's blocks not already active there (0 for both when active blocks are not
tracked).

Picking: temperature 0 -> argmin, ties uniformly at random with the seeded
generator; temperature T > 0 -> p_i proportional to exp(-(c_i - c_min) / ((c_max - c_min) * T)),
uniform when all costs are equal.

Queue policies (reference `policy_queue`): a max-heap on a score, earlier enqueue
first on equal scores. fcfs: `priority_jump - arrival_s`; lcfs: `priority_jump +
arrival_s`; wspt (Smith's rule): `(1 + priority_jump) / max(1, isl - cached_tokens)`.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from router.config import QueuePolicy

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class CostWeights:
    """The cost-function knobs, taken from `KvRouterConfig`."""

    overlap_score_credit: float
    overlap_score_credit_decay: float
    prefill_load_scale: float
    decode_active_request_weight: float
    track_prefill_tokens: bool
    track_active_blocks: bool


def kv_costs(
    w: CostWeights,
    block_size: int,
    isl_tokens: int,
    overlap_blocks: IntArray,
    prefill_tokens: IntArray,
    decode_blocks: FloatArray,
    shared_blocks: IntArray,
    active_requests: IntArray,
) -> FloatArray:
    """The reference cost of every candidate (arrays aligned with the candidates)."""
    request_blocks = max(1, -(-isl_tokens // block_size))
    credit = w.overlap_score_credit * overlap_blocks.astype(np.float64)
    if w.track_prefill_tokens:
        if w.overlap_score_credit_decay > 0.0 and len(prefill_tokens):
            excess = (prefill_tokens - prefill_tokens.min()).astype(np.float64) / block_size
            credit = credit / (1.0 + w.overlap_score_credit_decay * excess / request_blocks)
        raw = (prefill_tokens.astype(np.float64) + isl_tokens) / block_size
    else:
        raw = np.zeros(len(overlap_blocks), dtype=np.float64)
    cost = w.prefill_load_scale * np.maximum(0.0, raw - credit)
    if w.track_active_blocks:
        cost = cost + decode_blocks + (request_blocks - shared_blocks)
    if w.decode_active_request_weight:
        cost = cost + w.decode_active_request_weight * active_requests
    return cost


def pick_min(costs: FloatArray, rng: np.random.Generator) -> int:
    """Index of the lowest cost; ties broken uniformly with `rng` (no draw without a tie)."""
    best = np.flatnonzero(costs == costs.min())
    if len(best) == 1:
        return int(best[0])
    return int(best[rng.integers(len(best))])


def pick_softmax(costs: FloatArray, temperature: float, rng: np.random.Generator) -> int:
    """Sample an index from the softmax over min-max normalized negated costs."""
    lo = float(costs.min())
    hi = float(costs.max())
    if hi == lo:
        return int(rng.integers(len(costs)))
    logits = -(costs - lo) / ((hi - lo) * temperature)
    p = np.exp(logits - logits.max())
    p /= p.sum()
    return int(rng.choice(len(costs), p=p))


def pick(costs: FloatArray, temperature: float, rng: np.random.Generator) -> int:
    """`pick_min` at temperature 0, else `pick_softmax`."""
    if temperature <= 0.0:
        return pick_min(costs, rng)
    return pick_softmax(costs, temperature, rng)


def queue_score(policy: QueuePolicy, arrival_ms: float, isl_tokens: int, cached_tokens: int, priority_jump: float) -> float:
    """The max-heap score of a queued request under `policy`."""
    if policy == "fcfs":
        return priority_jump - arrival_ms / 1000.0
    if policy == "lcfs":
        return priority_jump + arrival_ms / 1000.0
    return (1.0 + priority_jump) / max(1, isl_tokens - cached_tokens)


class RouterQueue:
    """Requests waiting for capacity, released highest score first, then earliest enqueued."""

    __slots__ = ("policy", "_heap", "_seq")

    def __init__(self, policy: QueuePolicy) -> None:
        self.policy: QueuePolicy = policy
        self._heap: list[tuple[float, int, int]] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, request_id: int, arrival_ms: float, isl_tokens: int, cached_tokens: int, priority_jump: float = 0.0) -> None:
        """Enqueue a request; its score is fixed at enqueue time."""
        score = queue_score(self.policy, arrival_ms, isl_tokens, cached_tokens, priority_jump)
        heapq.heappush(self._heap, (-score, self._seq, request_id))
        self._seq += 1

    def peek(self) -> int | None:
        """The request that `pop` would return, or None."""
        return self._heap[0][2] if self._heap else None

    def pop(self) -> int:
        """Remove and return the next request id to release."""
        return heapq.heappop(self._heap)[2]

    def remove(self, request_id: int) -> bool:
        """Drop a queued request (cancelled). O(n)."""
        for i, entry in enumerate(self._heap):
            if entry[2] == request_id:
                self._heap.pop(i)
                heapq.heapify(self._heap)
                return True
        return False
