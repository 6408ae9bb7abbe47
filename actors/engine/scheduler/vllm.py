"""The vLLM scheduling policy (facts §c): what one pass schedules, on a `RankState`.

One pass at `now`:
1. token budget = max_num_batched_tokens;
2. running requests first, in order, each gets min(remaining, budget) tokens;
   a prompt remainder that does not fit with chunked prefill off blocks the
   loop; when blocks run out the LIFO (or FIFO) victim is preempted (blocks
   released, computed reset, pushed to the waiting front) and a victim already
   scheduled this pass is refunded;
3. only if nothing was preempted: admit from the waiting head (strict FCFS with
   head-of-line blocking) while running < max_num_seqs, with a prefix lookup
   (at least one token recomputed) and the vLLM admission check.
The rank core (`actors.engine.scheduler.core`) times the pass and ends it.
"""

from __future__ import annotations

from typing import Literal

from actors.engine.records import FailureReason
from actors.engine.scheduler.state import RankState, Scheduled

Verdict = Literal["admit", "wait", "reject"]


class VllmPolicy:
    """Running first, then FCFS admission with head-of-line blocking; LIFO/FIFO preemption."""

    def refuse(self, st: RankState, prompt_len: int) -> tuple[FailureReason, str] | None:
        """Why a prompt can never run on this rank, or None."""
        cfg = st.config
        blocks = -(-prompt_len // st.block_size)
        if blocks > cfg.num_gpu_blocks:
            return (FailureReason.REJECTED_PROMPT_TOO_LONG,
                    f"prompt of {prompt_len} tokens needs {blocks} KV blocks, rank has {cfg.num_gpu_blocks}")
        if cfg.max_model_len is not None and prompt_len >= cfg.max_model_len:
            return (FailureReason.REJECTED_MAX_MODEL_LEN,
                    f"prompt of {prompt_len} tokens >= max_model_len {cfg.max_model_len}")
        if not st.chunked and prompt_len > st.budget:
            return (FailureReason.REJECTED_TOKEN_BUDGET,
                    f"prompt of {prompt_len} tokens > max_num_batched_tokens {st.budget} with chunked prefill off")
        return None

    def schedule(self, st: RankState, now: float) -> tuple[list[Scheduled], bool]:
        """The pass at `now`: (scheduled entries, whether to schedule again at once).

        Again at once: every running request was preempted (the last victim was itself), so
        admission, skipped in a pass with preemption, gets its turn at the same instant.
        """
        budget = st.budget
        running = st.running
        kv = st.kv
        lifo = st.config.preemption_mode == "lifo"
        scheduled: list[Scheduled] = []
        preempted = False
        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            want = req.prompt_len + req.generated - req.computed  # seq_len - computed, inlined
            n = want if want <= budget else budget
            if n < want and not req.in_decode and not st.chunked:
                break
            victim_was_req = False
            while not kv.allocate(req, req.computed + n):
                victim = running[-1] if lifo else running[0]
                vidx = running.index(victim)
                budget += _refund(victim, scheduled)
                st.preempt(victim)
                preempted = True
                if vidx < i:
                    i -= 1
                if victim is req:
                    victim_was_req = True
                    break
            if victim_was_req:
                continue
            scheduled.append((req, n, req.computed))
            req.computed += n
            budget -= n
            i += 1
        if not preempted:
            self._admit(st, now, budget, scheduled)
        return scheduled, preempted and not scheduled

    def admission_blocked(self, st: RankState, budget: int) -> bool:
        """True when admission would admit nothing now and for a whole decode run (which only
        consumes blocks, so a waiting head that must wait keeps waiting)."""
        if not st.waiting or len(st.running) >= st.config.max_num_seqs or budget <= 0:
            return True
        return self._head(st, budget)[0] == "wait"

    def _head(self, st: RankState, budget: int) -> tuple[Verdict, int, int]:
        """The waiting head's verdict: ("admit", cached tokens, tokens this pass) | ("wait"|"reject", 0, 0)."""
        req = st.waiting[0]
        bs = st.block_size
        seq = req.seq_len
        total_blocks = -(-seq // bs)
        capacity = st.config.num_gpu_blocks
        if total_blocks > capacity:
            return "reject", 0, 0
        # at least one token is recomputed
        cached_blocks, active_prefix = st.kv.prefix_hit(req, (seq - 1) // bs)
        if total_blocks - active_prefix > capacity - st.kv.num_active:
            return "wait", 0, 0
        cached = cached_blocks * bs
        if req.transferred:  # the prompt's KV is here: one decode token, nothing to prefill
            return "admit", cached, 1
        remainder = seq - cached
        n = remainder if remainder <= budget else budget
        if n < remainder and not st.chunked:
            return "wait", 0, 0
        return "admit", cached, n

    def _admit(self, st: RankState, now: float, budget: int, scheduled: list[Scheduled]) -> None:
        bs, kv = st.block_size, st.kv
        while st.waiting and len(st.running) < st.config.max_num_seqs and budget > 0:
            verdict, cached, n = self._head(st, budget)
            if verdict == "reject":
                st.reject_head(FailureReason.REJECTED_KV_CAPACITY, "sequence needs more KV blocks than the rank has")
                continue
            if verdict == "wait":
                break
            req = st.waiting[0]
            kv.touch_prefix(req, cached // bs)
            start = req.seq_len - 1 if req.transferred else cached
            req.computed = start
            if not kv.allocate(req, start + n):
                kv.free(req)
                req.computed = 0
                break
            st.admit(req, cached, now)
            scheduled.append((req, n, start))
            req.computed += n
            req.in_decode = req.in_decode or req.transferred
            budget -= n


def _refund(victim: object, scheduled: list[Scheduled]) -> int:
    """The budget a victim already scheduled this pass gives back (and its entry goes)."""
    for k, (req, tokens, _) in enumerate(scheduled):
        if req is victim:
            del scheduled[k]
            return tokens
    return 0
