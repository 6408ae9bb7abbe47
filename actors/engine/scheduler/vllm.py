"""The vLLM-style scheduler of one DP rank (facts §c), on a virtual clock.

One pass at `now`:
1. token budget = max_num_batched_tokens;
2. running requests first, in order, each gets min(remaining, budget) tokens;
   a prompt remainder that does not fit with chunked prefill off blocks the
   loop; when blocks run out the LIFO (or FIFO) victim is preempted (blocks
   released, computed reset, pushed to the waiting front) and a victim already
   scheduled this pass is refunded;
3. only if nothing was preempted: admit from the waiting head (strict FCFS with
   head-of-line blocking) while running < max_num_seqs, with a prefix lookup
   (at least one token recomputed) and the vLLM admission check;
4. duration = prefill_time(chunks) + decode_time(requests already decoding);
5. at pass end every request whose computed reached its length emits a token.

The host drives a rank with `submit`, `start`, `finish`, `interrupt` and
`flush`; see `actors.engine.worker` for the event protocol.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from actors.engine.config import EngineConfig
from actors.engine.events import KvEvent, KvEventData, LoadMetrics
from actors.engine.kv.block_pool import BlockPool
from actors.engine.records import GapLog, TerminalStatus
from actors.engine.request import EngineRequest
from actors.engine.scheduler.macro import DecodeRun, boundary_crossings, new_blocks_per_pass
from actors.engine.timing.models import TimingModel

_UNBOUNDED = 1 << 62


class VllmRank:
    """Scheduler, KV pool and timing of one DP rank of one worker."""

    def __init__(
        self,
        config: EngineConfig,
        timing: TimingModel,
        gaps: GapLog,
        worker_id: int = 0,
        dp_rank: int = 0,
        macro_step: bool = True,
        emit_events: bool = True,
    ) -> None:
        self.config = config
        self.timing = timing
        self.gaps = gaps
        self.worker_id = worker_id
        self.dp_rank = dp_rank
        self.macro_step = macro_step
        self.block_size = config.block_size_tokens
        self.pool = BlockPool(config.num_gpu_blocks)
        self.pool.emit_token_ids = config.emit_kv_token_ids
        self.caching = config.enable_prefix_caching
        # Disaggregated decode workers never publish (facts §f); a host with no subscriber opts out.
        self.publish_events = emit_events and config.enable_prefix_caching and config.worker_type != "decode"
        self.budget = config.max_num_batched_tokens or _UNBOUNDED
        self.waiting: deque[EngineRequest] = deque()
        self.running: list[EngineRequest] = []
        self.events: list[KvEvent] = []
        self.next_event_id = 0
        self.preemptions_total = 0
        self.num_admissions = 0
        """Admissions (first ones and re-admissions after preemption) so far."""
        self.committed_prefill_tokens = 0
        self.num_passes = 0
        # what is in flight: one pass (its scheduled requests) or a decode run
        self.busy_until: float | None = None
        self._pass_reqs: list[EngineRequest] = []
        self._pass_events: list[KvEventData] = []
        self.run: DecodeRun | None = None
        self.rejected: list[EngineRequest] = []
        p_ratio = config.speedup_ratio
        d_ratio = config.speedup_ratio * config.decode_speedup_ratio
        self._p_ratio, self._d_ratio = p_ratio, d_ratio
        self._has_prefill_time = config.worker_type != "decode"
        self._has_decode_time = config.worker_type != "prefill"

    # ---- admission-independent checks -------------------------------------------------------
    def static_reject_reason(self, prompt_len: int) -> str | None:
        """Why a prompt can never run on this rank, or None."""
        cfg = self.config
        blocks = -(-prompt_len // self.block_size)
        if blocks > cfg.num_gpu_blocks:
            return f"prompt of {prompt_len} tokens needs {blocks} KV blocks, rank has {cfg.num_gpu_blocks}"
        if cfg.max_model_len is not None and prompt_len >= cfg.max_model_len:
            return f"prompt of {prompt_len} tokens >= max_model_len {cfg.max_model_len}"
        if not cfg.enable_chunked_prefill and prompt_len > self.budget:
            return f"prompt of {prompt_len} tokens > max_num_batched_tokens {self.budget} with chunked prefill off"
        return None

    def submit(self, req: EngineRequest) -> str | None:
        """Queue a request; returns a rejection reason instead when it can never run."""
        reason = self.static_reject_reason(req.prompt_len)
        if reason is None:
            self.waiting.append(req)
        return reason

    # ---- timing -------------------------------------------------------------------------------
    def _decode_ms(self, active_kv: np.ndarray, batch: int) -> np.ndarray:
        if not self._has_decode_time or self._d_ratio == 0:
            return np.zeros(active_kv.shape)
        return self.timing.decode_ms(active_kv, batch) / self._d_ratio

    def _prefill_ms(self, isl: list[int], prefix: list[int]) -> float:
        if not isl or not self._has_prefill_time or self._p_ratio == 0:
            return 0.0
        return self.timing.prefill_ms(isl, prefix) / self._p_ratio

    # ---- the pass -----------------------------------------------------------------------------
    def start(self, now: float) -> float | None:
        """Form the next pass (or decode run) at `now`; returns when it ends, None if idle."""
        assert self.busy_until is None, "start() while a pass is in flight"
        if not self.running and not self.waiting:
            return None
        if self.macro_step:
            run = self._plan_run(now)
            if run is not None:
                self.run = run
                self.busy_until = run.end_ms
                return self.busy_until
        end = self._start_pass(now)
        if end is None and self._empty_after_preemption:
            # Every running request was preempted (the last victim was itself): admission,
            # skipped in a pass with preemption, gets its turn at the same instant.
            end = self._start_pass(now)
        return end

    _empty_after_preemption = False

    def _start_pass(self, now: float) -> float | None:
        bs, pool, caching = self.block_size, self.pool, self.caching
        budget = self.budget
        running = self.running
        scheduled: list[tuple[EngineRequest, int, int]] = []  # (req, tokens, computed before)
        preempted = False
        i = 0
        while i < len(running) and budget > 0:
            req = running[i]
            want = req.seq_len - req.computed
            n = want if want <= budget else budget
            if n < want and not req.in_decode and not self.config.enable_chunked_prefill:
                break
            victim_was_req = False
            while not req.allocate_to(pool, req.computed + n, bs, caching):
                victim = running[-1] if self.config.preemption_mode == "lifo" else running[0]
                vidx = running.index(victim)
                budget += self._preempt(victim, scheduled)
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
            budget = self._admit(now, budget, scheduled)
        self._empty_after_preemption = preempted and not scheduled
        if not scheduled:
            # Nothing fits this instant: stay idle until a message arrives.
            self._flush_pool_events(now)
            return None
        return self._finish_planning(now, scheduled)

    def _preempt(self, victim: EngineRequest, scheduled: list[tuple[EngineRequest, int, int]]) -> int:
        """Preempt with recompute; returns the budget refunded if it was scheduled this pass."""
        refund = 0
        for k, (req, n, _) in enumerate(scheduled):
            if req is victim:
                refund = n
                del scheduled[k]
                break
        victim.release(self.pool)
        victim.computed = 0
        victim.in_decode = False
        victim.record.num_preemptions += 1
        self.running.remove(victim)
        self.waiting.appendleft(victim)
        self.preemptions_total += 1
        return refund

    def _head_admission(self, budget: int) -> tuple[str, int, int]:
        """Decide for the waiting head: ("admit", cached_tokens, tokens) | ("wait"|"reject", 0, 0)."""
        req = self.waiting[0]
        bs = self.block_size
        seq = req.seq_len
        total_blocks = -(-seq // bs)
        if total_blocks > self.config.num_gpu_blocks:
            return "reject", 0, 0
        cached_blocks = 0
        active_prefix = 0
        if self.caching:
            full = seq // bs
            if len(req.hashes) < full:
                req.ensure_hashes(full, bs)
            cached_blocks = self.pool.lookup_prefix(req.hashes, full)
            cached_blocks = min(cached_blocks, (seq - 1) // bs)
            if cached_blocks:
                active_prefix = self.pool.count_active_prefix(req.hashes, cached_blocks)
        needed = total_blocks - active_prefix
        if needed > self.config.num_gpu_blocks - self.pool.num_active:
            return "wait", 0, 0
        cached = cached_blocks * bs
        remainder = seq - cached
        n = remainder if remainder <= budget else budget
        if n < remainder and not self.config.enable_chunked_prefill:
            return "wait", 0, 0
        return "admit", cached, n

    def _admit(self, now: float, budget: int, scheduled: list[tuple[EngineRequest, int, int]]) -> int:
        bs, pool = self.block_size, self.pool
        while self.waiting and len(self.running) < self.config.max_num_seqs and budget > 0:
            verdict, cached, n = self._head_admission(budget)
            req = self.waiting[0]
            if verdict == "reject":
                self.waiting.popleft()
                self._reject(req, now, "sequence needs more KV blocks than the rank has")
                continue
            if verdict == "wait":
                break
            req.touch_prefix(pool, cached // bs)
            req.computed = cached
            if not req.allocate_to(pool, cached + n, bs, self.caching):
                req.release(pool)
                req.computed = 0
                break
            self.waiting.popleft()
            self.running.append(req)
            rec = req.record
            if rec.admission_count == 0:
                rec.first_admit_ms = now
                rec.reused_input_tokens = min(cached, req.prompt_len)
            rec.admission_count += 1
            self.num_admissions += 1
            rec.admitted_tokens_total += req.seq_len
            rec.reused_tokens_total += cached
            scheduled.append((req, n, cached))
            req.computed += n
            budget -= n
        return budget

    def _reject(self, req: EngineRequest, now: float, reason: str) -> None:
        rec = req.record
        rec.terminal_status = TerminalStatus.REJECTED
        rec.reject_reason = reason
        rec.terminal_ms = now
        self.rejected.append(req)

    def take_rejected(self) -> list[EngineRequest]:
        """Requests refused at admission since the last call (terminal; the host reports them)."""
        out, self.rejected = self.rejected, []
        return out

    def _finish_planning(self, now: float, scheduled: list[tuple[EngineRequest, int, int]]) -> float:
        isl: list[int] = []
        prefix: list[int] = []
        active_kv = 0
        n_decode = 0
        for req, n, before in scheduled:
            if req.in_decode:
                active_kv += req.seq_len
                n_decode += 1
            else:
                isl.append(before + n)
                prefix.append(before)
                self.committed_prefill_tokens += n
        duration = self._prefill_ms(isl, prefix)
        if n_decode:
            duration += float(self._decode_ms(np.array([float(active_kv)]), n_decode)[0])
        end = now + duration
        self._pass_reqs = [req for req, _, _ in scheduled]
        self._pass_events = self.pool.pending
        self.pool.pending = []
        self.busy_until = end
        self.num_passes += 1
        return end

    # ---- pass end -----------------------------------------------------------------------------
    def finish(self, now: float) -> tuple[list[EngineRequest], list[EngineRequest]]:
        """End the pass or run in flight at `now`: (requests with a first token, completed requests)."""
        assert self.busy_until is not None and self.busy_until == now
        self.busy_until = None
        if self.run is not None:
            run = self.run
            self.materialize(run.num_passes)
            self.run = None
            done = [r for r in run.reqs if r.generated >= r.max_output or self._at_max_len(r)]
            for req in done:
                self._complete(req, now)
            return [], done
        self._stamp(self._pass_events, now)
        self._pass_events = []
        first: list[EngineRequest] = []
        done = []
        for req in self._pass_reqs:
            if req.computed != req.seq_len:
                continue
            self._emit_token(req, now)
            if req.generated == 1:
                first.append(req)
            if req.generated >= req.max_output or self._at_max_len(req):
                done.append(req)
        self._pass_reqs = []
        for req in done:
            self._complete(req, now)
        return first, done

    def _at_max_len(self, req: EngineRequest) -> bool:
        return self.config.max_model_len is not None and req.seq_len >= self.config.max_model_len

    def _emit_token(self, req: EngineRequest, now: float) -> None:
        req.generated += 1
        rec = req.record
        rec.output_length = req.generated
        if req.generated == 1:
            rec.first_token_ms = now
        else:
            self.gaps.add(now - req.last_token_ms)
            if req.generated == 2:
                rec.second_token_ms = now
        rec.last_token_ms = now
        req.last_token_ms = now
        req.in_decode = True

    def _complete(self, req: EngineRequest, now: float) -> None:
        req.release(self.pool)
        self.running.remove(req)
        rec = req.record
        rec.terminal_ms = now
        rec.terminal_status = TerminalStatus.COMPLETED

    def _stamp(self, data: list[KvEventData], t_ms: float) -> None:
        if not self.publish_events:
            return
        for item in data:
            self.events.append(KvEvent(t_ms, self.worker_id, self.dp_rank, self.next_event_id, item))
            self.next_event_id += 1

    def _flush_pool_events(self, t_ms: float) -> None:
        self._stamp(self.pool.pending, t_ms)
        self.pool.pending = []

    # ---- macro-stepping -----------------------------------------------------------------------
    def _admission_blocked(self, budget: int) -> bool:
        """True when the admission phase would admit nothing now and for the whole run."""
        if not self.waiting or len(self.running) >= self.config.max_num_seqs or budget <= 0:
            return True
        verdict, _, _ = self._head_admission(budget)
        return verdict == "wait"

    def _plan_run(self, now: float) -> DecodeRun | None:
        running = self.running
        n = len(running)
        if n == 0 or n > self.budget:
            return None
        for req in running:
            if not req.in_decode or req.computed != req.seq_len - 1:
                return None
        if not self._admission_blocked(self.budget - n):
            return None
        max_len = self.config.max_model_len
        k = min(r.max_output - r.generated for r in running)
        if max_len is not None:
            k = min(k, min(max_len - r.seq_len for r in running))
        if k < 2:
            return None
        computed0 = [r.computed for r in running]
        cum = np.cumsum(new_blocks_per_pass(computed0, self.block_size, k))
        k = min(k, int(np.searchsorted(cum, self.pool.num_allocatable, side="right")))
        if k < 2:
            return None
        s0 = float(sum(r.seq_len for r in running))
        active = s0 + np.arange(k, dtype=np.float64) * n
        steps = np.empty(k + 1)
        steps[0] = now
        steps[1:] = self._decode_ms(active, n)
        return DecodeRun(list(running), computed0, np.cumsum(steps), k)

    def materialize(self, upto: int) -> None:
        """Apply passes (run.done, upto] of the decode run: blocks, events, tokens, gaps."""
        run = self.run
        assert run is not None
        lo, hi = run.done, upto
        if hi <= lo:
            return
        bs, pool, caching = self.block_size, self.pool, self.caching
        ends = run.ends_ms
        last_j = -1
        for j, idx in boundary_crossings(run.computed0, bs, lo + 1, hi):
            if j != last_j and last_j >= 0:
                self._flush_pool_events(float(ends[last_j]))
            last_j = j
            req = run.reqs[idx]
            ok = req.allocate_to(pool, run.computed0[idx] + j, bs, caching)
            assert ok, "decode run over-allocated the KV pool"
        if last_j >= 0:
            self._flush_pool_events(float(ends[last_j]))
        t_first = float(ends[lo + 1])
        t_last = float(ends[hi])
        m = hi - lo
        if m > 1:
            self.gaps.add_run(np.diff(ends[lo + 1:hi + 1]), len(run.reqs))
        for req, c0 in zip(run.reqs, run.computed0):
            self.gaps.add(t_first - req.last_token_ms)
            if req.generated == 1:
                req.record.second_token_ms = t_first
            req.generated += m
            req.computed = c0 + hi
            rec = req.record
            rec.output_length = req.generated
            rec.last_token_ms = t_last
            req.last_token_ms = t_last
        self.num_passes += m
        run.done = hi

    def interrupt(self, now: float) -> float | None:
        """A message reaches the rank at `now`: cut a decode run after the pass in progress.

        Returns the new end of the work in flight when it moved (the host must
        re-arm its finish event), else None.
        """
        run = self.run
        if run is None:
            return None
        self.flush(now)
        keep = run.passes_started_before(now)
        if keep >= run.num_passes:
            return None
        keep = max(keep, run.done)
        run.num_passes = keep
        self.busy_until = run.end_ms
        return self.busy_until

    def flush(self, now: float, inclusive: bool = True) -> None:
        """Materialise decode-run passes that ended by `now`, making their KV events visible.

        `inclusive=False` leaves a pass ending exactly at `now` alone: what a handler that
        runs before same-instant pass ends (CONTROL priority) may see.
        """
        if self.run is not None:
            self.materialize(self.run.passes_ended_by(now, inclusive))

    # ---- observation --------------------------------------------------------------------------
    def take_events(self) -> list[KvEvent]:
        out, self.events = self.events, []
        return out

    def load_metrics(self, now: float) -> LoadMetrics:
        pool = self.pool
        return LoadMetrics(
            t_ms=now, worker_id=self.worker_id, dp_rank=self.dp_rank,
            active_blocks=pool.num_active, inactive_blocks=pool.num_inactive,
            total_blocks=pool.num_blocks, running_requests=len(self.running),
            waiting_requests=len(self.waiting), preemptions_total=self.preemptions_total,
        )
