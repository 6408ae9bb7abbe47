"""The GPU budget band of the reference planner (1.6.1 `core/budget.py`), as pure functions.

A band is [min_gpus - tolerance, max_gpus]; a negative bound is disabled; `max_gpus` is hard
(never relaxed) and the tolerance (the widest replica's GPU count, when both bounds are set) only
relaxes the floor, because integer replica steps cannot always land on it exactly.
- `clamp_single` / `clamp_pair`: proportional clamps of a proposal into the band (the pair's floor
  path never shrinks decode, and fits prefill's growth directionally when the ceiling is hit).
- `fit_directional_pair`: the in-band pair nearest the proposal with each pool between its current
  and proposed count; an opposing rebalance (one pool up, one down) moves both or neither.
- `guard_single` / `guard_pair`: what builtin scaling applies: a proposal may be suppressed by the
  band but never reversed or amplified; at the floor a scale-down holds, at the ceiling a scale-up
  holds unless it is an opposing rebalance; an allocation already out of band is reconciled from
  the current counts. They return a reason when they hold or reconcile.
Invariants: results are ints >= 0; `max_gpus` is never exceeded unless even the minimum footprint
exceeds it (then 0: infeasible, as the reference).
"""

from __future__ import annotations

import math

HOLD = "gpu_budget_guard_hold"
RECONCILE = "gpu_budget_reconcile"


def _tolerance(min_gpus: int, max_gpus: int, *gpus: int) -> int:
    return max((g for g in gpus if g > 0), default=0) if (min_gpus >= 0 and max_gpus >= 0) else 0


def in_band(total: int, min_gpus: int, max_gpus: int, tolerance: int) -> bool:
    if max_gpus >= 0 and total > max_gpus:
        return False
    return not (min_gpus >= 0 and total < min_gpus - tolerance)


def _between(current: int, proposed: int, final: int) -> bool:
    return min(current, proposed) <= final <= max(current, proposed)


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def clamp_single(desired: int, engine_gpu: int, min_gpus: int, max_gpus: int, min_endpoint: int) -> int:
    """One pool: fit `desired` replicas of `engine_gpu` GPUs into the band."""
    if (min_gpus < 0 and max_gpus < 0) or engine_gpu <= 0:
        return desired
    total = desired * engine_gpu
    if in_band(total, min_gpus, max_gpus, _tolerance(min_gpus, max_gpus, engine_gpu)):
        return desired
    if max_gpus >= 0 and total > max_gpus:
        if max_gpus < min_endpoint * engine_gpu:
            return 0
        return max(min_endpoint, max_gpus // engine_gpu)
    return max(min_endpoint, math.ceil(min_gpus / engine_gpu))


def clamp_pair(num_p: int, num_d: int, p_gpu: int, d_gpu: int, min_gpus: int, max_gpus: int,
               p_min: int, d_min: int) -> tuple[int, int]:
    """Two pools: shrink proportionally under the ceiling (decode gets what prefill leaves), or
    grow proportionally toward the floor without shrinking decode."""
    if (min_gpus < 0 and max_gpus < 0) or p_gpu <= 0 or d_gpu <= 0:
        return num_p, num_d
    total = num_p * p_gpu + num_d * d_gpu
    if in_band(total, min_gpus, max_gpus, _tolerance(min_gpus, max_gpus, p_gpu, d_gpu)):
        return num_p, num_d
    if max_gpus >= 0 and total > max_gpus:
        if max_gpus < p_min * p_gpu + d_min * d_gpu:
            return 0, 0
        max_p = math.floor((max_gpus - d_min * d_gpu) / p_gpu)
        new_p = max(p_min, min(max_p, math.floor(num_p * max_gpus / total)))
        return new_p, max(d_min, math.floor((max_gpus - new_p * p_gpu) / d_gpu))
    if total <= 0:
        new_p = max(p_min, math.ceil(min_gpus / 2 / p_gpu))
    else:
        new_p = max(p_min, math.ceil(num_p * (min_gpus / total)))
    new_d = max(d_min, math.ceil(max(0, min_gpus - new_p * p_gpu) / d_gpu))
    decode_would_shrink = new_d < num_d
    new_d = max(num_d, new_d)
    if max_gpus >= 0 and new_p * p_gpu + new_d * d_gpu > max_gpus:
        if not decode_would_shrink:
            return num_p, num_d
        return fit_directional_pair(num_p, num_d, new_p, num_d, p_gpu, d_gpu, min_gpus, max_gpus, p_min, d_min)
    return new_p, new_d


def fit_directional_pair(cur_p: int, cur_d: int, prop_p: int, prop_d: int, p_gpu: int, d_gpu: int,
                         min_gpus: int, max_gpus: int, p_min: int, d_min: int) -> tuple[int, int]:
    """The in-band pair closest to the proposal (then least skewed from its proportions, then
    most progress, then smallest), each pool between its current and proposed count; none: the
    current pair."""
    if p_gpu <= 0 or d_gpu <= 0:
        return prop_p, prop_d
    tol = _tolerance(min_gpus, max_gpus, p_gpu, d_gpu)
    opposing = (prop_p < cur_p and prop_d > cur_d) or (prop_p > cur_p and prop_d < cur_d)
    want_p, want_d = abs(prop_p - cur_p), abs(prop_d - cur_d)
    p_lo, p_hi = max(min(cur_p, prop_p), p_min), max(cur_p, prop_p)
    d_lo, d_hi = max(min(cur_d, prop_d), d_min), max(cur_d, prop_d)
    if max_gpus >= 0:
        p_hi = min(p_hi, (max_gpus - d_lo * d_gpu) // p_gpu)
        d_hi = min(d_hi, (max_gpus - p_lo * p_gpu) // d_gpu)
    if min_gpus >= 0:
        p_lo = max(p_lo, _ceil_div(min_gpus - tol - d_hi * d_gpu, p_gpu))
        d_lo = max(d_lo, _ceil_div(min_gpus - tol - p_hi * p_gpu, d_gpu))
    if p_lo > p_hi or d_lo > d_hi:
        return cur_p, cur_d
    if prop_p >= p_min and prop_d >= d_min and in_band(prop_p * p_gpu + prop_d * d_gpu, min_gpus, max_gpus, tol):
        return prop_p, prop_d
    floor = min_gpus - tol if min_gpus >= 0 else None
    best: tuple[tuple[int, int, int, int, int], tuple[int, int]] | None = None
    # Walk the shorter pool's range; for each value the band leaves one interval for the other
    # pool, whose point nearest the proposal is the only candidate that can be closest.
    walk_p = p_hi - p_lo <= d_hi - d_lo
    a_lo, a_hi, a_gpu, a_cur, b_cur, b_prop = ((p_lo, p_hi, p_gpu, cur_p, cur_d, prop_d) if walk_p
                                               else (d_lo, d_hi, d_gpu, cur_d, cur_p, prop_p))
    b_lo0, b_hi0, b_gpu = (d_lo, d_hi, d_gpu) if walk_p else (p_lo, p_hi, p_gpu)
    for a in range(a_lo, a_hi + 1):
        b_lo, b_hi = b_lo0, b_hi0
        if floor is not None:
            b_lo = max(b_lo, _ceil_div(floor - a * a_gpu, b_gpu))
        if max_gpus >= 0:
            b_hi = min(b_hi, (max_gpus - a * a_gpu) // b_gpu)
        if opposing:
            if a == a_cur:
                if not b_lo <= b_cur <= b_hi:
                    continue
                b_lo = b_hi = b_cur
            elif b_prop > b_cur:
                b_lo = max(b_lo, b_cur + 1)
            else:
                b_hi = min(b_hi, b_cur - 1)
        if b_lo > b_hi:
            continue
        b = min(max(b_prop, b_lo), b_hi)
        p, d = (a, b) if walk_p else (b, a)
        if not in_band(p * p_gpu + d * d_gpu, min_gpus, max_gpus, tol):
            continue
        prog_p, prog_d = abs(p - cur_p), abs(d - cur_d)
        score = (abs(prop_p - p) + abs(prop_d - d), abs(prog_p * want_d - prog_d * want_p),
                 -(prog_p + prog_d), p, d)
        if best is None or score < best[0]:
            best = (score, (p, d))
    return (cur_p, cur_d) if best is None else best[1]


def guard_single(current: int, proposed: int, gpu: int, min_gpus: int, max_gpus: int,
                 min_endpoint: int) -> tuple[int, str | None]:
    """One pool's proposal through the band without reversing its direction."""
    if gpu <= 0:
        return proposed, None
    total = current * gpu
    if not in_band(total, min_gpus, max_gpus, gpu if (min_gpus >= 0 and max_gpus >= 0) else 0):
        return clamp_single(current, gpu, min_gpus, max_gpus, min_endpoint), RECONCILE
    if min_gpus >= 0 and total <= min_gpus and proposed < current:
        return current, HOLD
    if max_gpus >= 0 and total >= max_gpus and proposed > current:
        return current, HOLD
    final = clamp_single(proposed, gpu, min_gpus, max_gpus, min_endpoint)
    return (final, None) if _between(current, proposed, final) else (current, HOLD)


def guard_pair(cur_p: int, cur_d: int, prop_p: int, prop_d: int, p_gpu: int, d_gpu: int, min_gpus: int,
               max_gpus: int, p_min: int, d_min: int) -> tuple[int, int, str | None]:
    """Two pools' proposal through the band: suppressed, never reversed; opposing moves atomic."""
    if p_gpu <= 0 or d_gpu <= 0:
        return (*clamp_pair(prop_p, prop_d, p_gpu, d_gpu, min_gpus, max_gpus, p_min, d_min), None)
    # The reference takes this tolerance whenever the ceiling is set (not only with both bounds).
    tol = max(p_gpu, d_gpu) if max_gpus >= 0 else 0
    total = cur_p * p_gpu + cur_d * d_gpu
    if not in_band(total, min_gpus, max_gpus, tol):
        return (*clamp_pair(cur_p, cur_d, p_gpu, d_gpu, min_gpus, max_gpus, p_min, d_min), RECONCILE)
    any_down, any_up = prop_p < cur_p or prop_d < cur_d, prop_p > cur_p or prop_d > cur_d
    opposing = (prop_p < cur_p and prop_d > cur_d) or (prop_p > cur_p and prop_d < cur_d)
    if total <= min_gpus and any_down and not any_up:
        return cur_p, cur_d, HOLD
    at_floor = total <= min_gpus and opposing
    at_ceiling = max_gpus >= 0 and total >= max_gpus and any_up
    if at_floor or at_ceiling:
        if not opposing:
            return cur_p, cur_d, HOLD
        fit = fit_directional_pair(cur_p, cur_d, prop_p, prop_d, p_gpu, d_gpu, min_gpus, max_gpus, p_min, d_min)
        return (cur_p, cur_d, HOLD) if fit == (cur_p, cur_d) else (*fit, None)
    new_p, new_d = clamp_pair(prop_p, prop_d, p_gpu, d_gpu, min_gpus, max_gpus, p_min, d_min)
    if not (_between(cur_p, prop_p, new_p) and _between(cur_d, prop_d, new_d)):
        return cur_p, cur_d, HOLD
    if not in_band(new_p * p_gpu + new_d * d_gpu, min_gpus, max_gpus, tol):
        return cur_p, cur_d, HOLD
    return new_p, new_d, None
