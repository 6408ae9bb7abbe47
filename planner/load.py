"""Load-based (reactive) scaling of the reference planner (`core/load_scaling.py`): +-1 replica per
load interval from per-engine latency estimates, or from easy-mode thresholds.

- SLA mode (`optimization_target` sla): scale up when EVERY engine's estimate is above the SLA;
  scale down (to at least `min_endpoint`) when the consolidation check allows it: with N engines
  the survivors carry N/(N-1) of the load, and every survivor's estimate at that load must stay
  under SLA x `load_scaling_down_sensitivity`/100 and its KV must fit (`can_scale_down`).
- Easy mode (throughput / latency targets): thresholds on prefill queue per context and on
  decode KV utilisation (scheduled + queued) / max_kv; defaults below, per target.
Invariants: a decision moves the count by exactly one or returns None (no change); no estimates
(an engine that has not reported) is None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def scale_decision(estimates: Sequence[float], sla: float, num_workers: int, min_endpoint: int,
                   can_scale_down: bool) -> int | None:
    """The reference's `_scale_decision`: all above SLA -> N+1; else scale-down allowed -> max(N-1, min)."""
    if not estimates:
        return None
    if all(t > sla for t in estimates):
        return num_workers + 1
    if can_scale_down:
        return max(num_workers - 1, min_endpoint)
    return None


def consolidation(num_workers: int) -> float:
    """How much more load each survivor carries after removing one of `num_workers` (1.0 for one)."""
    return num_workers / (num_workers - 1) if num_workers > 1 else 1.0


@dataclass(frozen=True)
class EasyThresholds:
    """Easy-mode thresholds (reference defaults per optimization target)."""

    prefill_up: float
    prefill_down: float
    decode_up: float
    decode_down: float


EASY_THRESHOLDS: dict[str, EasyThresholds] = {
    "throughput": EasyThresholds(prefill_up=1.0, prefill_down=0.1, decode_up=1.0, decode_down=0.6),
    "latency": EasyThresholds(prefill_up=0.1, prefill_down=0.0, decode_up=0.4, decode_down=0.1),
}
"""`optimization_target` -> thresholds; prefill: queued tokens / context (max_num_batched_tokens);
decode: (scheduled + queued) KV tokens / max_kv_tokens."""


def easy_prefill(queued_per_context: Sequence[float], t: EasyThresholds, num_workers: int,
                 min_endpoint: int, latency: bool) -> int | None:
    """Prefill: every engine's queue >= up -> N+1; every engine's < down (latency: == 0) -> N-1."""
    if not queued_per_context:
        return None
    if all(q >= t.prefill_up for q in queued_per_context):
        return num_workers + 1
    down = all(q == 0 for q in queued_per_context) if latency else all(q < t.prefill_down
                                                                          for q in queued_per_context)
    if down and num_workers > min_endpoint:
        return num_workers - 1
    return None


def easy_decode(kv_util: Sequence[float], t: EasyThresholds, num_workers: int, min_endpoint: int) -> int | None:
    """Decode: every engine's KV utilisation > up -> N+1; every engine's < down -> N-1."""
    if not kv_util:
        return None
    if all(u > t.decode_up for u in kv_util):
        return num_workers + 1
    if all(u < t.decode_down for u in kv_util) and num_workers > min_endpoint:
        return num_workers - 1
    return None
