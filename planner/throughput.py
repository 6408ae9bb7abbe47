"""Throughput-based (predictive) replica formulas of the reference planner.

Two generations, both as pure functions:
- 1.6.1 (`core/throughput_scaling.py`, `core/budget.py`): replicas = max(ceil(demand_rps /
  engine_rps), min_endpoint), bounded to +-`max_throughput_scaling_replicas` around the current
  count (`cap_replicas`), then fit into the GPU budget (`planner.budget`).
- classic (planner_core.py, 0.x-1.x; facts j): correction factors from observed vs interpolated
  TTFT/ITL, tokens/s demand over the per-GPU throughput (`classic_prefill_replicas`,
  `classic_decode_replicas`) and the classic proportional budget scale (`classic_budget`).
Invariants: results are ints >= 0; a negative budget disables the classic clamp.
"""

from __future__ import annotations

import math


def cap_replicas(desired: int, current: int, limit: int) -> int:
    """Bound one tick's change to +-`limit` around `current` (never below 0)."""
    return min(max(desired, max(0, current - limit)), current + limit)


def replicas_for(demand_rps: float, engine_rps: float, min_endpoint: int) -> int | None:
    """ceil(demand / per-engine capacity), at least `min_endpoint`; None when the model has no capacity."""
    if engine_rps <= 0:
        return None
    return max(math.ceil(demand_rps / engine_rps), min_endpoint)


# ---------------------------------------------------------------------------- classic formulas


def prefill_correction(observed_ttft_ms: float, interpolated_ttft_ms: float) -> float:
    """p_corr = observed TTFT / interpolated TTFT at the observed ISL (1.0 without a model value)."""
    return observed_ttft_ms / interpolated_ttft_ms if interpolated_ttft_ms > 0 else 1.0


def decode_correction(observed_itl_ms: float, interpolated_itl_ms: float) -> float:
    """d_corr = observed ITL / interpolated ITL at the observed concurrency and context."""
    return observed_itl_ms / interpolated_itl_ms if interpolated_itl_ms > 0 else 1.0


def classic_prefill_replicas(next_num_req: float, next_isl: float, interval_s: float, p_corr: float,
                             prefill_thpt_per_gpu: float, engine_num_gpu: int, min_endpoint: int) -> int:
    """ceil(num_req * isl / interval * min(1, p_corr) / thpt_per_gpu(isl) / gpus), at least `min_endpoint`."""
    tok_s = next_num_req * next_isl / interval_s * min(1.0, p_corr)
    return max(math.ceil(tok_s / prefill_thpt_per_gpu / engine_num_gpu), min_endpoint)


def classic_itl_target(itl_sla_ms: float, d_corr: float) -> float:
    """The ITL the decode throughput lookup aims at: itl_sla / d_corr (d_corr <= 0: itl_sla)."""
    return itl_sla_ms / d_corr if d_corr > 0 else itl_sla_ms


def classic_decode_replicas(next_num_req: float, next_osl: float, interval_s: float,
                            decode_thpt_per_gpu: float, engine_num_gpu: int, min_endpoint: int) -> int:
    """ceil(num_req * osl / interval / thpt_per_gpu / gpus), at least `min_endpoint`."""
    tok_s = next_num_req * next_osl / interval_s
    return max(math.ceil(tok_s / decode_thpt_per_gpu / engine_num_gpu), min_endpoint)


def classic_budget(num_p: int, num_d: int, p_gpu: int, d_gpu: int, max_gpu_budget: int,
                   min_endpoint: int) -> tuple[int, int]:
    """Classic clamp: over budget, scale = budget / total; p = max(min, round(p * scale)),
    d = max(min, round((budget - p * gp) / gd))."""
    total = num_p * p_gpu + num_d * d_gpu
    if max_gpu_budget < 0 or total <= max_gpu_budget:
        return num_p, num_d
    scale = max_gpu_budget / total
    new_p = max(min_endpoint, round(num_p * scale))
    new_d = max(min_endpoint, round((max_gpu_budget - new_p * p_gpu) / d_gpu))
    return new_p, new_d
