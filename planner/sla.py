"""The SLA planner: the reference's two loops on the virtual clock.

- Throughput loop (every `throughput_adjustment_interval_seconds`): the window's request count,
  mean ISL and OSL feed one predictor each (`load_predictor`); demand_rps = predicted requests /
  interval; replicas from the engine capacity under the SLA (`planner.perf_model`: agg, one search
  with both SLAs; disagg, prefill under TTFT and decode under ITL), capped to
  +-`max_throughput_scaling_replicas` per tick, at least `min_endpoint`, fit into the GPU budget
  as the reference does (`planner.budget`): first under the ceiling, direction-preserving from the
  current counts (with the load loop on, that is its floor), then through the whole band's guards.
  When traffic stops the predictors see zeros and the target falls to `min_endpoint`.
- Load loop (every `load_adjustment_interval_seconds`, when enabled): +-1 from the engines'
  latest load metrics (`planner.load`): estimated ITL = the decode pass at the engine's running
  batch and KV; estimated TTFT = the prefill of its queue plus a lone prompt; scale down only if
  every survivor at N/(N-1) of its load stays under SLA x sensitivity. With both loops the
  throughput result is a floor for the load loop.
Invariants: targets are None (hold) or >= min_endpoint and within the GPU budget (unless even the
minimum does not fit: 0); advisory mode is the host's business (it records and does not act).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner.budget import clamp_pair, fit_directional_pair, guard_pair, guard_single
from planner.config import SlaPlannerConfig
from planner.load import EASY_THRESHOLDS, consolidation, easy_decode, scale_decision
from planner.perf_model import EnginePerf
from planner.profile_tables import ProfileTables
from planner.policy import Decision, EngineLoad, Snapshot
from planner.predictors import PREDICTORS, Predictor
from planner.throughput import (
    cap_replicas,
    classic_decode_replicas,
    classic_itl_target,
    classic_prefill_replicas,
    decode_correction,
    prefill_correction,
    replicas_for,
)


@dataclass(frozen=True)
class PlannerContext:
    """What the host knows about the deployments: their engines' perf models."""

    decode_perf: EnginePerf | None
    prefill_perf: EnginePerf | None = None
    profile: ProfileTables | None = None
    """`profile_results_dir` read: the throughput loop then uses the classic formulas over it."""


class SlaPlanner:
    def __init__(self, config: SlaPlannerConfig, context: PlannerContext | None) -> None:
        self.config = config
        self.context = context or PlannerContext(None)
        self.predictors: dict[str, Predictor] = {k: PREDICTORS[config.load_predictor](config)
                                                  for k in ("num_req", "isl", "osl")}
        self._tick_ms = config.tick_s * 1000.0
        self._next_thr_ms = config.throughput_adjustment_interval_seconds * 1000.0
        self._next_load_ms = config.load_adjustment_interval_seconds * 1000.0
        self._window = [0.0, 0, 0.0, 0.0]  # duration_s, requests, isl sum, osl sum since the last throughput tick
        self._latency = (0.0, 0.0)  # the last window's observed mean TTFT and ITL (ms)
        self.lower_d: int | None = None
        self.lower_p: int | None = None

    @property
    def disagg(self) -> bool:
        return self.config.mode == "disagg"

    def initial_tick_ms(self) -> float:
        return self._tick_ms

    def on_tick(self, snap: Snapshot) -> Decision:
        t = snap.traffic
        w = self._window
        w[0] += t.duration_s
        w[1] = int(w[1]) + t.num_req
        w[2] += t.avg_isl * t.num_req
        w[3] += t.avg_osl * t.num_req  # completions' mean OSL, weighted by the window's arrivals
        if t.avg_ttft_ms > 0:
            self._latency = (t.avg_ttft_ms, t.avg_itl_ms)
        cfg = self.config
        tol = 1e-6
        target_d: int | None = None
        target_p: int | None = None
        observed: dict[str, float] = {}
        predicted: dict[str, float] = {}
        reasons: list[str] = []
        if cfg.enable_throughput_scaling and snap.now_ms + tol >= self._next_thr_ms:
            self._next_thr_ms += cfg.throughput_adjustment_interval_seconds * 1000.0
            target_p, target_d, observed, predicted = self._throughput(snap)
            reasons.append("throughput")
            if cfg.enable_load_scaling:
                self.lower_d, self.lower_p = target_d, target_p
                target_d = target_p = None
        if cfg.enable_load_scaling and snap.now_ms + tol >= self._next_load_ms:
            self._next_load_ms += cfg.load_adjustment_interval_seconds * 1000.0
            d = self._load(snap)
            current = snap.decode.current
            base = d if d is not None else current
            if self.lower_d is not None:
                base = max(base, self.lower_d)
            if base != current:
                target_d, _ = guard_single(current, base, cfg.decode_engine_num_gpu, cfg.min_gpu_budget,
                                           cfg.max_gpu_budget, cfg.min_endpoint_of("decode"))
            reasons.append("load")
            if self.disagg and self.lower_p is not None and snap.prefill is not None \
                    and snap.prefill.current < self.lower_p:
                target_p = self.lower_p
        return Decision(target_d, target_p, snap.now_ms + self._tick_ms, observed, predicted, "+".join(reasons))

    # ------------------------------------------------------------------ throughput loop

    def _throughput(self, snap: Snapshot) -> tuple[int | None, int | None, dict[str, float], dict[str, float]]:
        cfg = self.config
        duration, n, isl_sum, osl_sum = self._window
        self._window = [0.0, 0, 0.0, 0.0]
        isl = isl_sum / n if n else 0.0  # an empty window: the predictors count it as 0 (as NaN)
        osl = osl_sum / n if n else 0.0
        # The window may be longer than the interval (first tick); scale the count to one interval.
        interval = float(cfg.throughput_adjustment_interval_seconds)
        num_req = float(n) * interval / duration if duration > 0 else 0.0
        observed = {"num_req": num_req, "isl": isl, "osl": osl}
        for key, value in observed.items():
            self.predictors[key].add_data_point(value)
        pred = {k: p.predict_next() for k, p in self.predictors.items()}
        demand = pred["num_req"] / interval
        p_isl = pred["isl"] if pred["isl"] > 0 else float(cfg.isl)
        p_osl = pred["osl"] if pred["osl"] > 0 else float(cfg.osl)
        predicted = {"num_req": pred["num_req"], "isl": p_isl, "osl": p_osl, "demand_rps": demand}
        ctx = self.context
        if ctx.profile is not None:
            return (*self._classic(snap, ctx.profile, pred["num_req"], p_isl, p_osl, predicted), observed, predicted)
        d_perf = ctx.decode_perf
        if d_perf is None:
            return None, None, observed, predicted
        if not self.disagg:
            cap = d_perf.agg_capacity(p_isl, p_osl, cfg.ttft_ms, cfg.itl_ms)
            predicted["engine_rps"] = cap.rps
            want = replicas_for(demand, cap.rps, cfg.min_endpoint_of("decode"))
            cur = snap.decode.current
            d = max(cap_replicas(want if want is not None else cur, cur, cfg.max_throughput_scaling_replicas),
                    cfg.min_endpoint_of("decode"))
            return None, self._budget_single(cur, d), observed, predicted
        p_perf = ctx.prefill_perf or d_perf
        pc = p_perf.prefill_capacity(p_isl)
        dc = d_perf.decode_capacity(p_isl, p_osl, cfg.itl_ms)
        predicted["prefill_engine_rps"], predicted["decode_engine_rps"] = pc.rps, dc.rps
        cur_p = snap.prefill.current if snap.prefill is not None else 0
        cur_d = snap.decode.current
        want_p = replicas_for(demand, pc.rps, cfg.min_endpoint_of("prefill"))
        want_d = replicas_for(demand, dc.rps, cfg.min_endpoint_of("decode"))
        lim = cfg.max_throughput_scaling_replicas
        if want_p is None or want_d is None:  # one side cannot be sized: both hold (as the reference)
            want_p, want_d = cur_p, cur_d
        p = max(cap_replicas(want_p, cur_p, lim), cfg.min_endpoint_of("prefill"))
        d = max(cap_replicas(want_d, cur_d, lim), cfg.min_endpoint_of("decode"))
        return (*self._budget_pair(cur_p, cur_d, p, d), observed, predicted)

    def _classic(self, snap: Snapshot, t: ProfileTables, num_req: float, isl: float, osl: float,
                 predicted: dict[str, float]) -> tuple[int | None, int | None]:
        """The classic formulas over a profile: corrections from the observed TTFT / ITL, then
        prefill and decode replicas (agg: the larger of the two, on one pool)."""
        cfg = self.config
        interval = float(cfg.throughput_adjustment_interval_seconds)
        ttft, itl = self._latency
        p_corr = prefill_correction(ttft, t.interp_ttft(isl)) if ttft > 0 else 1.0
        n_d = max(1, snap.decode.current)
        concurrency = num_req / n_d * (ttft + osl * itl) / 1000.0 / interval if itl > 0 else 0.0
        d_corr = decode_correction(itl, t.interp_itl(concurrency, isl + osl / 2)) if itl > 0 else 1.0
        thpt_d = t.best_decode_thpt_per_gpu(classic_itl_target(cfg.itl_ms, d_corr), isl + osl / 2)
        p = classic_prefill_replicas(num_req, isl, interval, p_corr, t.interp_prefill_thpt_per_gpu(isl),
                                     cfg.prefill_engine_num_gpu, cfg.min_endpoint_of("prefill"))
        d = classic_decode_replicas(num_req, osl, interval, thpt_d, cfg.decode_engine_num_gpu,
                                    cfg.min_endpoint_of("decode"))
        predicted.update(p_corr=p_corr, d_corr=d_corr, prefill_replicas=p, decode_replicas=d)
        lim = cfg.max_throughput_scaling_replicas
        cur_d = snap.decode.current
        if not self.disagg:
            want = cap_replicas(max(p, d), cur_d, lim)
            return None, self._budget_single(cur_d, max(want, cfg.min_endpoint_of("decode")))
        cur_p = snap.prefill.current if snap.prefill is not None else 0
        p = max(cap_replicas(p, cur_p, lim), cfg.min_endpoint_of("prefill"))
        d = max(cap_replicas(d, cur_d, lim), cfg.min_endpoint_of("decode"))
        return self._budget_pair(cur_p, cur_d, p, d)

    def _budget_single(self, current: int, desired: int) -> int:
        """The reference's agg budget: fit under the ceiling without reversing the move (with the
        load loop on, this is its floor), then through the whole band's guard."""
        cfg = self.config
        gpu, floor, m = cfg.decode_engine_num_gpu, cfg.min_gpu_budget, cfg.min_endpoint_of("decode")
        desired, _ = guard_single(current, desired, gpu, -1, cfg.max_gpu_budget, m)
        if cfg.enable_load_scaling:
            return desired
        return guard_single(current, desired, gpu, floor, cfg.max_gpu_budget, m)[0]

    def _budget_pair(self, cur_p: int, cur_d: int, p: int, d: int) -> tuple[int, int]:
        """The reference's disagg budget: a pool below its minimum endpoint is recovered
        proportionally (a donor may be chosen); otherwise the ceiling fit keeps each pool between
        its current and proposed count; then (without the load loop) the band's guard."""
        cfg = self.config
        gp, gd, hi = cfg.prefill_engine_num_gpu, cfg.decode_engine_num_gpu, cfg.max_gpu_budget
        mp, md = cfg.min_endpoint_of("prefill"), cfg.min_endpoint_of("decode")
        recovering = cur_p < mp or cur_d < md
        if recovering:
            p, d = clamp_pair(max(p, mp), max(d, md), gp, gd, -1, hi, mp, md)
        else:
            p, d = fit_directional_pair(cur_p, cur_d, p, d, gp, gd, -1, hi, mp, md)
        if cfg.enable_load_scaling:
            return p, d
        if recovering:
            return clamp_pair(max(p, mp), max(d, md), gp, gd, cfg.min_gpu_budget, hi, mp, md)
        new_p, new_d, _ = guard_pair(cur_p, cur_d, p, d, gp, gd, cfg.min_gpu_budget, hi, mp, md)
        return new_p, new_d

    # ------------------------------------------------------------------ load loop

    def _estimate(self, perf: EnginePerf, load: EngineLoad, scale: float) -> tuple[float, float]:
        """(estimated TTFT, estimated ITL) of an engine carrying `scale` times its load."""
        running = max(1, math.ceil(load.running * scale))
        context = load.kv_tokens / load.running if load.running else float(self.config.isl)
        itl = perf.decode_ms(running, context)
        queued = int(load.waiting * scale * self.config.isl)
        ttft = perf.prefill_ms(queued) + perf.prefill_ms(self.config.isl) + itl
        return ttft, itl

    def _load(self, snap: Snapshot) -> int | None:
        cfg = self.config
        perf = self.context.decode_perf
        ready = set(snap.decode.ready_ids)
        loads = [x for x in snap.loads if x.worker_id in ready]
        n = snap.decode.current
        if not loads or n == 0:
            return None
        if cfg.optimization_target in EASY_THRESHOLDS:
            util = [x.kv_tokens / x.max_kv_tokens if x.max_kv_tokens else 1.0 for x in loads]
            return easy_decode(util, EASY_THRESHOLDS[cfg.optimization_target], n, cfg.min_endpoint_of("decode"))
        if perf is None:
            return None
        sens = cfg.load_scaling_down_sensitivity / 100.0
        now = [self._estimate(perf, x, 1.0) for x in loads]
        post = [self._estimate(perf, x, consolidation(n)) for x in loads]
        fits = all(x.kv_tokens * consolidation(n) < x.max_kv_tokens for x in loads)
        can_down = n > 1 and fits and all(tt < cfg.ttft_ms * sens and it < cfg.itl_ms * sens for tt, it in post)
        up = scale_decision([max(tt / cfg.ttft_ms, it / cfg.itl_ms) for tt, it in now], 1.0, n,
                            cfg.min_endpoint_of("decode"), can_down)
        return up
