"""Engine performance models for the planner: what one engine sustains under the SLA.

`EnginePerf` wraps one engine's pass times (any `actors.engine.timing` model, so the planner
knows a deployment's own timing, as the reference bootstraps from forward-pass metrics) and
answers the 1.6.1 throughput path's questions (facts j):
- prefill: TTFT of a lone prompt of `isl` tokens = its passes' time (chunked by
  `max_num_batched_tokens`); engine_rps = 1000 / that time.
- decode: the largest batch b <= min(max_kv_tokens / context, max_num_seqs) whose pass time at
  b requests of context `isl + osl/2` is <= the ITL target (binary search); engine_rps =
  b / (osl * itl).
- agg: one search with both SLAs: at steady concurrency b the mean pass (the ITL) is the decode
  pass of b requests plus the prefills spread over the decode steps, D(b) + b * P(isl) / osl;
  the estimated TTFT is a lone prompt's prefill plus one pass.
The classic formulas' profile tables are `planner.profile_tables`.
Invariants: pure functions of their inputs; speedup ratios divide pass times as in the engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from actors.engine.timing.models import TimingModel


@dataclass(frozen=True)
class Capacity:
    rps: float
    ttft_ms: float
    itl_ms: float
    batch: int


@dataclass(frozen=True)
class EnginePerf:
    timing: TimingModel
    max_num_batched_tokens: int
    max_num_seqs: int
    max_kv_tokens: int
    speedup: float = 1.0
    decode_speedup: float = 1.0

    def prefill_pass_ms(self, tokens: int) -> float:
        """One pass prefilling `tokens` new tokens of one request."""
        if tokens <= 0 or self.speedup == 0:
            return 0.0
        return self.timing.prefill_ms([tokens], [0]) / self.speedup

    def prefill_ms(self, isl: int) -> float:
        """A lone prompt's prefill: its chunks' passes back to back."""
        chunk = max(1, self.max_num_batched_tokens)
        full, rest = divmod(max(0, isl), chunk)
        return full * self.prefill_pass_ms(chunk) + self.prefill_pass_ms(rest)

    def decode_ms(self, batch: int, context: float) -> float:
        """One decode pass of `batch` requests of mean context `context`."""
        if batch <= 0 or self.speedup == 0 or self.decode_speedup == 0:
            return 0.0
        kv = np.array([batch * context], dtype=np.float64)
        return float(self.timing.decode_ms(kv, batch)[0]) / self.speedup / self.decode_speedup

    def prefill_capacity(self, isl: float) -> Capacity:
        t = self.prefill_ms(int(round(isl)))
        return Capacity(1000.0 / t if t > 0 else 0.0, t, 0.0, 1)

    def _max_batch(self, context: float) -> int:
        return max(1, min(self.max_num_seqs, int(self.max_kv_tokens // max(1.0, context))))

    def decode_capacity(self, isl: float, osl: float, itl_target_ms: float) -> Capacity:
        context = isl + osl / 2.0
        lo, hi = 1, self._max_batch(context)
        if self.decode_ms(1, context) > itl_target_ms:
            hi = 1
        while lo < hi:  # pass time grows with the batch: the largest b meeting the target
            mid = (lo + hi + 1) // 2
            if self.decode_ms(mid, context) <= itl_target_ms:
                lo = mid
            else:
                hi = mid - 1
        itl = self.decode_ms(lo, context)
        rps = lo / (max(1.0, osl) * itl / 1000.0) if itl > 0 else 0.0
        return Capacity(rps, 0.0, itl, lo)

    def _agg_pass_ms(self, batch: int, isl: float, osl: float) -> tuple[float, float]:
        """(mean pass ms, rps) at steady concurrency `batch`. Each second the engine spends
        rps * P(isl) on prefills and the rest on decode passes, and rps = batch / (osl * t), so
        the mean pass t = D(batch) + batch * P(isl) / osl."""
        t = self.decode_ms(batch, isl + osl / 2.0) + batch * self.prefill_ms(int(round(isl))) / max(1.0, osl)
        rps = batch / (max(1.0, osl) * t / 1000.0) if t > 0 else 0.0
        return t, rps

    def agg_capacity(self, isl: float, osl: float, ttft_sla_ms: float, itl_sla_ms: float) -> Capacity:
        """The largest steady concurrency meeting both SLAs (at least 1)."""
        best = Capacity(0.0, 0.0, 0.0, 0)
        lone = self.prefill_ms(int(round(isl)))
        for b in range(1, self._max_batch(isl + osl / 2.0) + 1):
            t, rps = self._agg_pass_ms(b, isl, osl)
            ok = t <= itl_sla_ms and lone + t <= ttft_sla_ms
            if ok or b == 1:
                best = Capacity(rps, lone + t, t, b)
            if not ok:
                break
        return best


def perf_from_engine(timing: TimingModel, engine: Any) -> EnginePerf:
    """The perf model of an engine (`actors.engine.config.EngineConfig`) running `timing`."""
    return EnginePerf(timing, engine.max_num_batched_tokens or 8192, engine.max_num_seqs,
                      engine.num_gpu_blocks * engine.block_size_tokens, engine.speedup_ratio,
                      engine.decode_speedup_ratio)
