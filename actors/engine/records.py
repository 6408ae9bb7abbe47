"""Per-request records, failure reasons, and the inter-token gap log that reports are built from.

Two records per request, each field with one writer:
- `EngineRecord`: what the rank that ran the request observed (engine times, admissions,
  prefix reuse). Only the engine rank writes it (`actors.engine.scheduler`); it travels back
  in the completion message and is attached to the client record unchanged;
- `RequestRecord`: the client's view. The frontend writes identity, arrival, dispatch, the
  client-observed token times and the terminal status and reason; the router host writes the
  routing fields (`worker_id`, `dp_rank`, `routing_history`).
No per-token objects exist: a request keeps its first, second and last token times, and every
inter-token gap of the whole run goes into one `GapLog` as (values, weight) chunks, so a
macro-stepped decode run of k passes over n requests costs one numpy array, not k*n floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import numpy.typing as npt


class TerminalStatus(str, Enum):
    """How a request ended. Only `COMPLETED` requests enter latency statistics."""

    INCOMPLETE = "incomplete"
    """Still queued or running when the simulation stopped."""
    COMPLETED = "completed"
    REJECTED = "rejected"
    """Refused by the engine: prompt larger than the KV cache or max_model_len, or unschedulable."""
    FAILED = "failed"
    """Lost to a fault (worker or node killed) or refused by the router."""


class FailureReason(str, Enum):
    """Why a request did not complete (machine-readable; `RequestRecord.reason_detail` says more)."""

    WORKER_KILLED = "worker_killed"
    """Its worker died (a fault) while it was queued or running there, or it reached a dead worker."""
    WORKER_REMOVED = "worker_removed"
    """Its worker was removed without draining (`remove_worker(..., drain=False)`)."""
    NO_LIVE_WORKER = "no_live_worker"
    """No worker could take it."""
    ROUTER_QUEUE_FULL = "router_queue_full"
    """The router queue was at `router_queue_max_size`."""
    REJECTED_PROMPT_TOO_LONG = "rejected_prompt_too_long"
    """The prompt needs more KV blocks than the rank has."""
    REJECTED_MAX_MODEL_LEN = "rejected_max_model_len"
    """The prompt is at least `max_model_len` tokens."""
    REJECTED_TOKEN_BUDGET = "rejected_token_budget"
    """With chunked prefill off, the prompt exceeds `max_num_batched_tokens`."""
    REJECTED_KV_CAPACITY = "rejected_kv_capacity"
    """After a preemption, the grown sequence no longer fits the rank's KV cache."""
    DRAIN_DEADLINE = "drain_deadline"
    """Its worker was draining and the drain's deadline passed before it finished."""
    MIGRATION_LIMIT = "migration_limit"
    """Its worker died (or drained past its deadline) after it had migrated `migration_limit` times."""
    SESSION_ENDED = "session_ended"
    """An earlier turn of its session failed, which ends the session as in the reference's driver:
    this turn was never sent (its record is written when the failed turn ends)."""


@dataclass(slots=True)
class EngineRecord:
    """What the engine rank that ran a request observed; engine-time milliseconds.

    Written only by that rank. Every field travels in the completion message by name
    (`cluster.plane.codec`), so a new field needs no edit outside the engine.
    """

    output_length: int = 0
    first_admit_ms: float | None = None
    first_token_ms: float | None = None
    second_token_ms: float | None = None
    last_token_ms: float | None = None
    end_ms: float | None = None
    """When the request ended on the engine (completed, rejected or failed)."""
    reused_input_tokens: int = 0
    """Prefix-cache hit at the first admission."""
    admission_count: int = 0
    admitted_tokens_total: int = 0
    """Sum over admissions of the sequence length admitted (prompt + tokens generated so far)."""
    reused_tokens_total: int = 0
    """Sum over admissions of the tokens served from the prefix cache."""
    num_preemptions: int = 0


@dataclass(slots=True)
class HandoffRecord:
    """A disaggregated request's prefill side and KV transfer (the reference's per-request keys).

    Written by the control shard's handoff component (`cluster.control.disagg`) from the prefill
    rank's handoff and the decode rank's transfer notice; times are engine milliseconds.
    """

    prefill_worker_id: int
    prefill_dp_rank: int
    prefill: EngineRecord
    """The prefill rank's record (its admission and prefix reuse)."""
    source_held_ms: float
    destination_reserved_ms: float | None = None
    """The decode rank's first scheduling point after the handoff (a pass boundary, or the handoff when idle)."""
    transfer_done_ms: float | None = None
    """The KV has crossed; the request joins the decode rank's next pass, admitted then (the reference's
    `destination_activated_ms`, which is the decode admission)."""
    source_released_ms: float | None = None
    transfer_tokens: int = 0
    transfer_bytes: int = 0
    transfer_ms: float = 0.0
    over_links: bool = False
    """The transfer was timed over modelled links (scenario `topology`), before the request reached the
    decode rank; `destination_reserved_ms` is then the handoff."""


@dataclass(slots=True)
class RequestRecord:
    """The client's record of one request (one turn of a session); see the module docstring.

    Times are simulated milliseconds as the client sees them. `dispatched_ms` is when the
    frontend sent the request to the router: equal to `arrival_ms` in trace mode, later in
    closed-loop concurrency mode. Latencies (TTFT, e2e) are measured from dispatch.
    """

    request_id: int
    session_id: str
    turn_index: int
    input_length: int
    requested_output_length: int
    arrival_ms: float
    dispatched_ms: float = float("nan")
    worker_id: int = -1
    dp_rank: int = 0
    routing_history: list[dict[str, object]] = field(default_factory=list)
    """One entry per routing decision of a KV-aware router (reference `routing_history` keys)."""
    engine: EngineRecord = field(default_factory=EngineRecord)
    """The engine's record, attached when the request ended on a rank."""
    first_token_ms: float | None = None
    second_token_ms: float | None = None
    last_token_ms: float | None = None
    terminal_ms: float | None = None
    terminal_status: TerminalStatus = TerminalStatus.INCOMPLETE
    reason: FailureReason | None = None
    """Why it did not complete (None for completed and incomplete requests)."""
    reason_detail: str | None = None
    cause: str | None = None
    """What caused the failure, when a scheduled event did: a fault id (`faults.1`) or a control action."""
    handoff: HandoffRecord | None = None
    """Disaggregated serving: the prefill side and transfer (None: served by one aggregated worker).
    `worker_id`/`dp_rank` and `engine` are then the decode worker's."""
    migrated_from: list[int] = field(default_factory=list)
    """Workers the request left, in order, when theirs died or drained past a deadline (request
    migration). The engine record is then the last rank's; it counts every token generated."""

    # The engine's counters, read through (the engine record is their only writer).
    @property
    def output_length(self) -> int:
        return self.engine.output_length

    @property
    def first_admit_ms(self) -> float | None:
        return (self.handoff.prefill if self.handoff is not None else self.engine).first_admit_ms

    @property
    def reused_input_tokens(self) -> int:
        """Prefix-cache hit at the first admission (the prefill worker's when disaggregated)."""
        return (self.handoff.prefill if self.handoff is not None else self.engine).reused_input_tokens

    @property
    def admission_count(self) -> int:
        """Admissions on every rank it ran on (prefill and decode when disaggregated)."""
        prefill = self.handoff.prefill.admission_count if self.handoff is not None else 0
        return self.engine.admission_count + prefill

    @property
    def num_preemptions(self) -> int:
        return self.engine.num_preemptions

    @property
    def carried_tokens(self) -> int:
        """Tokens generated before the request migrated (0 until it does: the engine record is attached
        at completion, or at a migration)."""
        return self.engine.output_length

    @property
    def readmission_count(self) -> int:
        return max(0, self.engine.admission_count - 1)

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_token_ms is None else self.first_token_ms - self.dispatched_ms

    @property
    def ttst_ms(self) -> float | None:
        if self.second_token_ms is None or self.first_token_ms is None:
            return None
        return self.second_token_ms - self.first_token_ms

    @property
    def tpot_ms(self) -> float | None:
        """Mean time per output token after the first: (last - first) / (output_length - 1)."""
        n = self.engine.output_length
        if n < 2 or self.first_token_ms is None or self.last_token_ms is None:
            return None
        return (self.last_token_ms - self.first_token_ms) / (n - 1)

    @property
    def e2e_latency_ms(self) -> float | None:
        return None if self.terminal_ms is None else self.terminal_ms - self.dispatched_ms


@dataclass(slots=True)
class GapLog:
    """All inter-token gaps of a run, as weighted chunks.

    Invariant: `total_weight()` equals the number of gaps, i.e. the sum over
    completed and in-flight requests of (tokens emitted - 1).
    """

    _chunks: list[npt.NDArray[np.float64]] = field(default_factory=list)
    _weights: list[int] = field(default_factory=list)
    _singles: list[float] = field(default_factory=list)

    def add(self, gap_ms: float) -> None:
        self._singles.append(gap_ms)

    def add_run(self, gaps_ms: npt.NDArray[np.float64], weight: int) -> None:
        """Record `weight` copies of each gap (a decode run over `weight` requests)."""
        if len(gaps_ms) and weight > 0:
            self._chunks.append(gaps_ms)
            self._weights.append(weight)

    def extend(self, other: "GapLog") -> None:
        """Add every gap of `other` (merging the logs of several shards)."""
        self._singles.extend(other._singles)
        self._chunks.extend(other._chunks)
        self._weights.extend(other._weights)

    def arrays(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """(values, weights) in canonical form: distinct values ascending, each with its total weight.

        The same multiset of gaps gives the same arrays however it was recorded: as singles
        or as weighted runs (macro-stepped or pass by pass), in one log or merged from
        several shards. So statistics computed from them are bit-identical too.
        """
        values = np.concatenate([np.asarray(self._singles, dtype=np.float64)] + self._chunks)
        weights = np.concatenate([np.ones(len(self._singles), dtype=np.int64)] + [
            np.full(len(c), w, dtype=np.int64) for c, w in zip(self._chunks, self._weights)
        ])
        if not len(values):
            return values, weights
        order = np.argsort(values, kind="stable")
        values, weights = values[order], weights[order]
        distinct, starts = np.unique(values, return_index=True)
        return distinct, np.add.reduceat(weights, starts)

    def total_weight(self) -> int:
        return len(self._singles) + sum(len(c) * w for c, w in zip(self._chunks, self._weights))
