"""What a scheduling policy works on: a rank's queues, KV cache, token budget and counters.

`RankState` owns the request records' admission fields: policies admit, preempt and reject
through its methods, never by writing records themselves, so each field has one writer.
A pass the policy forms is a list of `Scheduled` entries: (request, tokens this pass,
computed tokens before the pass).
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

from actors.engine.config import EngineConfig
from actors.engine.kv.cache import KvCache
from actors.engine.records import FailureReason
from actors.engine.request import EngineRequest

UNBOUNDED = 1 << 62


Scheduled = tuple[EngineRequest, int, int]
"""(request, tokens this pass, computed tokens before the pass): a plain tuple, built per request
per pass on the hot path."""


class Rejection(NamedTuple):
    req: EngineRequest
    reason: FailureReason
    detail: str


class RankState:
    """Queues (`waiting` FCFS, `running` in admission order), the KV cache and the counters."""

    __slots__ = ("config", "kv", "block_size", "budget", "chunked", "waiting", "running",
                 "rejected", "preemptions_total", "num_admissions", "committed_prefill_tokens", "num_passes")

    def __init__(self, config: EngineConfig, kv: KvCache) -> None:
        self.config = config
        self.kv = kv
        self.block_size = config.block_size_tokens
        self.budget = config.max_num_batched_tokens or UNBOUNDED
        self.chunked = config.enable_chunked_prefill
        self.waiting: deque[EngineRequest] = deque()
        self.running: list[EngineRequest] = []
        self.rejected: list[Rejection] = []
        self.preemptions_total = 0
        self.num_admissions = 0
        """Admissions (first ones and re-admissions after preemption) so far."""
        self.committed_prefill_tokens = 0
        self.num_passes = 0

    def admit(self, req: EngineRequest, cached_tokens: int, now: float) -> None:
        """Move the waiting head into `running` with `cached_tokens` served from the prefix cache."""
        popped = self.waiting.popleft()
        assert popped is req
        self.running.append(req)
        rec = req.record
        if rec.admission_count == 0:
            rec.first_admit_ms = now
            rec.reused_input_tokens = min(cached_tokens, req.prompt_len)
        rec.admission_count += 1
        self.num_admissions += 1
        rec.admitted_tokens_total += req.seq_len
        rec.reused_tokens_total += cached_tokens

    def preempt(self, victim: EngineRequest) -> None:
        """Preempt with recompute: blocks released, progress reset, back to the waiting front."""
        self.kv.free(victim)
        victim.computed = 0
        victim.in_decode = False
        victim.record.num_preemptions += 1
        self.running.remove(victim)
        self.waiting.appendleft(victim)
        self.preemptions_total += 1

    def reject_head(self, reason: FailureReason, detail: str) -> None:
        """Refuse the waiting head (it can never be admitted); the rank reports it."""
        self.rejected.append(Rejection(self.waiting.popleft(), reason, detail))
