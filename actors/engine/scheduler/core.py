"""The rank core: one DP rank's lifecycle on a virtual clock, behind the `EngineRank` protocol.

The core owns what every engine policy shares: the pass or decode run in flight, token
emission, completions, KV event stamping and the rank's lifecycle (submit, kill).
What one pass schedules is the policy's (`actors.engine.scheduler.policy`), over the KV
cache interface (`actors.engine.kv.cache`).

In flight is at most one of:
- a pass: its scheduled requests and the KV events its allocations caused; it ends at
  `busy_until`, when every request whose computed tokens reached its length emits a token;
- a macro-stepped decode run (`actors.engine.scheduler.macro.DecodeRun`): materialised
  lazily, at publish points (`publish_ticks`: the passes where a request starts or fills a
  block, the only ones whose KV events a subscriber could see) and at its end. A message
  that reaches the rank cuts the run after the pass in progress.
KV events are stamped with the end of the pass that made them visible and numbered per rank
from 0 with no gaps; outputs hand them out in order.
"""

from __future__ import annotations

import numpy as np

from actors.engine.config import ROLE_TRAITS, EngineConfig
from actors.engine.events import ForwardPass, KvEvent, KvEventData, LoadMetrics
from actors.engine.hashing import PromptHashers
from actors.engine.kv.cache import KvCache, PagedKvCache
from actors.engine.protocol import Finished, FirstToken, RankCounters, RankOutput
from actors.engine.records import EngineRecord, FailureReason, GapLog, TerminalStatus
from actors.engine.request import EngineRequest, RankRequest
from actors.engine.scheduler.handoff import HeldSources
from actors.engine.scheduler.macro import DecodeRun, boundary_crossings, crossing_passes, plan_decode_run
from actors.engine.scheduler.policy import policy_for
from actors.engine.scheduler.state import RankState, Scheduled
from actors.engine.timing.models import TimingModel
from actors.engine.timing.scaled import PassTiming


class RankCore:
    """An `EngineRank` (see `actors.engine.protocol`)."""

    def __init__(
        self,
        config: EngineConfig,
        timing: TimingModel,
        gaps: GapLog,
        hashers: PromptHashers,
        worker_id: int = 0,
        dp_rank: int = 0,
        *,
        macro_step: bool = True,
        emit_events: bool = True,
        publish_ticks: bool = False,
    ) -> None:
        """`emit_events`: stamp KV events at all (someone publishes or collects them);
        `publish_ticks`: make `next_due_ms` stop at a decode run's cache-changing passes."""
        self.config = config
        self.timing = PassTiming(timing, config)
        self.gaps = gaps
        self._worker_id = worker_id
        self._dp_rank = dp_rank
        self.macro_step = macro_step
        self.block_size = config.block_size_tokens
        self.policy = policy_for(config.backend)
        self._hasher_pool = hashers
        self.state = RankState(config, self._fresh_kv())
        self.emits = emit_events and config.enable_prefix_caching and ROLE_TRAITS[config.worker_type].publishes_kv
        self.publish_ticks = publish_ticks and self.emits
        self.hands_off = not ROLE_TRAITS[config.worker_type].decodes
        """A prefill rank: a computed prompt is held as a transfer source, not decoded."""
        self.held = HeldSources()
        self._events: list[KvEvent] = []
        self.next_event_id = 0
        self.busy_until: float | None = None
        self._pass: list[EngineRequest] = []
        self._pass_events: list[KvEventData] = []
        self._run: DecodeRun | None = None
        self._ticks: list[int] = []
        self._tick_i = 0
        self._counters_at_begin = (0, 0)
        self._planned_pass: ForwardPass | None = None
        self.last_pass: ForwardPass | None = None
        """The latest pass that ended (a decode run: its last pass), as load metrics report it."""

    def _fresh_kv(self) -> KvCache:
        cfg = self.config
        return PagedKvCache(cfg.num_gpu_blocks, self.block_size, cfg.enable_prefix_caching, cfg.emit_kv_token_ids)

    # ---- identity and state ---------------------------------------------------------------------
    @property
    def worker_id(self) -> int:
        return self._worker_id

    @property
    def dp_rank(self) -> int:
        return self._dp_rank

    @property
    def busy(self) -> bool:
        return self.busy_until is not None

    @property
    def busy_until_ms(self) -> float | None:
        return self.busy_until

    @property
    def is_idle(self) -> bool:
        st = self.state
        return self.busy_until is None and not st.running and not st.waiting and not self.held

    # ---- arrivals -----------------------------------------------------------------------------
    def submit(self, request: RankRequest, now_ms: float) -> Finished | None:
        self.interrupt(now_ms)
        refusal = self.policy.refuse(self.state, request.input_length)
        if refusal is not None:  # refused before its prompt is hashed
            return Finished(request.request_id, TerminalStatus.REJECTED, EngineRecord(end_ms=now_ms), *refusal)
        hasher = self._hasher_pool.get(self.block_size, request.trace_block_size)
        self.state.waiting.append(EngineRequest(request, hasher))
        return None

    # ---- forming a pass -------------------------------------------------------------------------
    def begin(self, now_ms: float) -> RankOutput:
        """Form the next pass (or decode run) at `now_ms`, if there is work."""
        assert self.busy_until is None, "begin() while a pass is in flight"
        st = self.state
        self._counters_at_begin = (st.num_admissions, st.preemptions_total)
        if st.running or st.waiting:
            self._form(now_ms)
        out = RankOutput(finished=self._take_rejected(now_ms))
        out.kv_events = self.take_kv_events()
        return out

    def _form(self, now: float) -> None:
        st = self.state
        if self.macro_step:
            run = plan_decode_run(st, self.policy, self.timing, now)
            if run is not None:
                self._run = run
                self.busy_until = run.end_ms
                self._ticks = (crossing_passes(run.computed0, self.block_size, 1, run.num_passes - 1).tolist()
                               if self.publish_ticks else [])
                self._tick_i = 0
                return
        for _ in range(2):
            scheduled, again = self.policy.schedule(st, now)
            if scheduled:
                self._plan_pass(now, scheduled)
                return
            self._stamp(self.state.kv.take_pending(), now)  # nothing fits this instant: idle until a message
            if not again:
                return

    def _plan_pass(self, now: float, scheduled: list[Scheduled]) -> None:
        isl: list[int] = []
        prefix: list[int] = []
        active_kv = 0
        n_decode = 0
        new_tokens = 0
        st = self.state
        for req, n, before in scheduled:
            if req.in_decode:
                active_kv += req.prompt_len + req.generated
                n_decode += 1
            else:
                isl.append(before + n)
                prefix.append(before)
                new_tokens += n
                st.committed_prefill_tokens += n
        duration = self.timing.prefill_ms(isl, prefix)
        if n_decode:
            duration += float(self.timing.decode_ms(np.array([float(active_kv)]), n_decode)[0])
        self._planned_pass = ForwardPass(duration, len(isl), new_tokens, n_decode, active_kv)
        self._pass = [entry[0] for entry in scheduled]
        self._pass_events = st.kv.take_pending()
        self.busy_until = now + duration
        st.num_passes += 1

    def _take_rejected(self, now: float) -> list[Finished]:
        st = self.state
        if not st.rejected:
            return []
        out = [_end(req, TerminalStatus.REJECTED, now, reason, detail) for req, reason, detail in st.rejected]
        st.rejected = []
        return out

    # ---- what is due ------------------------------------------------------------------------------
    def next_due_ms(self) -> float | None:
        run = self._run
        if run is not None and self._tick_i < len(self._ticks):
            t = float(run.ends_ms[self._ticks[self._tick_i]])
            if t < run.end_ms:
                return t
        return self.busy_until

    def advance(self, now_ms: float) -> RankOutput:
        """At `next_due_ms()`: a publish point inside a decode run, or the end of what is in flight."""
        run = self._run
        if run is not None and now_ms < run.end_ms:
            j = self._ticks[self._tick_i]
            self._tick_i += 1
            self._materialize(j)
            return RankOutput(kv_events=self.take_kv_events())
        return self._finish(now_ms)

    def _finish(self, now: float) -> RankOutput:
        assert self.busy_until is not None and self.busy_until == now
        self.busy_until = None
        out = RankOutput()
        run = self._run
        if run is not None:
            self._materialize(run.num_passes)
            self._run = None
            m, n = run.num_passes, len(run.reqs)
            # the run's last pass decoded every request at its context before that pass's token
            self.last_pass = ForwardPass(float(run.ends_ms[m] - run.ends_ms[m - 1]), 0, 0, n,
                                         sum(r.prompt_len + r.generated for r in run.reqs) - n)
            done = [r for r in run.reqs if r.generated >= r.max_output or self._at_max_len(r)]
        else:
            self._stamp(self._pass_events, now)
            self._pass_events = []
            self.last_pass = self._planned_pass
            done = []
            for req in self._pass:
                if req.computed != req.prompt_len + req.generated:
                    continue
                if self.hands_off:
                    out.handoffs.append(self.held.hold(self.state, req, now))
                    continue
                self._emit_token(req, now)
                if req.generated == 1:
                    out.first_tokens.append(FirstToken(req.request_id, now))
                if req.generated >= req.max_output or self._at_max_len(req):
                    done.append(req)
            self._pass = []
        for req in done:
            out.finished.append(self._complete(req, now))
        st = self.state
        out.load_changed = bool(out.first_tokens or done or out.handoffs) or (
            self._counters_at_begin != (st.num_admissions, st.preemptions_total))
        out.kv_events = self.take_kv_events()
        return out

    def _at_max_len(self, req: EngineRequest) -> bool:
        max_len = self.config.max_model_len
        return max_len is not None and req.prompt_len + req.generated >= max_len

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

    def _complete(self, req: EngineRequest, now: float) -> Finished:
        st = self.state
        st.kv.free(req)
        st.running.remove(req)
        return _end(req, TerminalStatus.COMPLETED, now)

    # ---- KV events --------------------------------------------------------------------------------
    def _stamp(self, data: list[KvEventData], t_ms: float) -> None:
        if not self.emits or not data:
            return
        events, w, r = self._events, self._worker_id, self._dp_rank
        eid = self.next_event_id
        for item in data:
            events.append(KvEvent(t_ms, w, r, eid, item))
            eid += 1
        self.next_event_id = eid

    def take_kv_events(self) -> list[KvEvent]:
        out, self._events = self._events, []
        return out

    # ---- decode runs ------------------------------------------------------------------------------
    def _materialize(self, upto: int) -> None:
        """Apply passes (run.done, upto] of the decode run: blocks, events, tokens, gaps."""
        run = self._run
        assert run is not None
        lo, hi = run.done, upto
        if hi <= lo:
            return
        kv = self.state.kv
        ends = run.ends_ms
        last_j = -1
        for j, idx in boundary_crossings(run.computed0, self.block_size, lo + 1, hi):
            if j != last_j and last_j >= 0:
                self._stamp(kv.take_pending(), float(ends[last_j]))
            last_j = j
            ok = kv.allocate(run.reqs[idx], run.computed0[idx] + j)
            assert ok, "decode run over-allocated the KV cache"
        if last_j >= 0:
            self._stamp(kv.take_pending(), float(ends[last_j]))
        t_first = float(ends[lo + 1])
        t_last = float(ends[hi])
        m = hi - lo
        if m > 1:
            self.gaps.add_run(np.diff(ends[lo + 1:hi + 1]), len(run.reqs))
        for req, c0 in zip(run.reqs, run.computed0):
            self.gaps.add(t_first - req.last_token_ms)
            rec = req.record
            if req.generated == 1:
                rec.second_token_ms = t_first
            req.generated += m
            req.computed = c0 + hi
            rec.output_length = req.generated
            rec.last_token_ms = t_last
            req.last_token_ms = t_last
        self.state.num_passes += m
        run.done = hi

    def interrupt(self, now_ms: float) -> None:
        """Cut a decode run in flight after the pass in progress at `now_ms` (see `next_due_ms`)."""
        run = self._run
        if run is None:
            return
        self._flush(now_ms)
        keep = run.passes_started_before(now_ms)
        if keep >= run.num_passes:
            return
        run.num_passes = max(keep, run.done)
        self.busy_until = run.end_ms

    def _flush(self, now: float, inclusive: bool = True) -> None:
        """Materialise decode-run passes that ended by `now` (a pass ending exactly at `now` only
        when `inclusive`: a handler that runs before same-instant pass ends must not see it)."""
        if self._run is not None:
            self._materialize(self._run.passes_ended_by(now, inclusive))

    # ---- faults -----------------------------------------------------------------------------------
    def kill(self, now_ms: float, reason: FailureReason, detail: str) -> RankOutput:
        """Die at `now_ms` (before any pass ending then): every request fails; the cache is lost."""
        self._flush(now_ms, inclusive=False)
        st = self.state
        run = self._run
        if run is not None:
            # Pass by pass, the pass in progress was counted when it started; count it here too.
            st.num_passes += run.passes_started_before(now_ms) - run.done
        out = RankOutput(kv_events=self.take_kv_events())
        for req in sorted([*st.running, *st.waiting], key=lambda r: r.request_id):  # never in both
            out.finished.append(_end(req, TerminalStatus.FAILED, now_ms, reason, detail))
        st.running.clear()
        st.waiting.clear()
        self._run = None
        self._pass = []
        self._pass_events = []
        self.busy_until = None
        self.held.drop_all()
        st.kv = self._fresh_kv()
        return out

    # ---- observation ------------------------------------------------------------------------------
    def load_metrics(self, now_ms: float) -> LoadMetrics:
        st = self.state
        kv = st.kv
        return LoadMetrics(
            t_ms=now_ms, worker_id=self._worker_id, dp_rank=self._dp_rank,
            active_blocks=kv.num_active, inactive_blocks=kv.num_inactive,
            total_blocks=kv.num_blocks, running_requests=len(st.running),
            waiting_requests=len(st.waiting), preemptions_total=st.preemptions_total,
            last_pass=self.last_pass,
        )

    def kv_snapshot(self) -> tuple[tuple[int, ...], int]:
        return tuple(self.state.kv.cached_hashes()), self.next_event_id

    def counters(self) -> RankCounters:
        st = self.state
        return RankCounters(st.num_passes, st.preemptions_total, st.committed_prefill_tokens, st.num_admissions)

    def release_source(self, request_id: int, now_ms: float) -> None:
        if self.held.release(self.state.kv, request_id):
            self._stamp(self.state.kv.take_pending(), now_ms)

    def cached_prompt_tokens(self, request: RankRequest) -> int:
        req = EngineRequest(request, self._hasher_pool.get(self.block_size, request.trace_block_size))
        return self.state.kv.prefix_hit(req, (req.seq_len - 1) // self.block_size)[0] * self.block_size

    def check_invariants(self) -> None:
        """The KV cache's invariants; no request is both running and waiting; a decode run is in
        flight only while the rank is busy."""
        st = self.state
        st.kv.check_invariants()
        assert not (set(map(id, st.running)) & set(map(id, st.waiting))), "a request is both running and waiting"
        assert self._run is None or self.busy_until is not None


def _end(req: EngineRequest, status: TerminalStatus, now: float, reason: FailureReason | None = None,
         detail: str | None = None) -> Finished:
    """The request ends at `now`: the one place the engine writes a record's `end_ms`."""
    req.record.end_ms = now
    return Finished(req.request_id, status, req.record, reason, detail)
