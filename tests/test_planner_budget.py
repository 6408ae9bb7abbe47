"""The GPU budget band (planner/budget.py) against the reference's own functions.

tests/data/budget_reference_cases.json holds 400 random proposals and what dynamo 1.6.1's
`planner/core/budget.py` answered for each (`proportional_clamp_single`, `proportional_clamp_pair`,
`fit_directional_budget_pair`, `guard_single_scaling_budget`, `guard_disagg_scaling_budget`),
recorded by `benchmarks/budget_vs_reference.py --record` in the reference venv; that script also
compares 20,000 fresh cases when the reference is importable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, strategies as st

from planner import budget

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "data" / "budget_reference_cases.json").read_text())


def _ours(c: dict[str, int]) -> dict[str, Any]:
    a = (c["p_gpu"], c["d_gpu"], c["min_gpus"], c["max_gpus"], c["p_min"], c["d_min"])
    return {
        "clamp_single": budget.clamp_single(c["prop_d"], c["d_gpu"], c["min_gpus"], c["max_gpus"], c["d_min"]),
        "clamp_pair": list(budget.clamp_pair(c["prop_p"], c["prop_d"], *a)),
        "fit_directional_pair": list(budget.fit_directional_pair(c["cur_p"], c["cur_d"], c["prop_p"], c["prop_d"], *a)),
        "guard_single": list(budget.guard_single(c["cur_d"], c["prop_d"], c["d_gpu"], c["min_gpus"], c["max_gpus"],
                                                 c["d_min"])),
        "guard_pair": list(budget.guard_pair(c["cur_p"], c["cur_d"], c["prop_p"], c["prop_d"], *a)),
    }


@pytest.mark.parametrize("fn", ["clamp_single", "clamp_pair", "fit_directional_pair", "guard_single", "guard_pair"])
def test_recorded_reference_answers(fn: str) -> None:
    wrong = [(c["args"], c["reference"][fn], got) for c in CASES
             if (got := _ours(c["args"])[fn]) != c["reference"][fn]]
    assert not wrong, f"{len(wrong)} of {len(CASES)} differ, first: {wrong[0]}"


def test_floor_path_fits_prefill_growth_directionally() -> None:
    # Floor 16 above the ceiling 15: growing prefill 5 -> 6 (2 GPUs each) would shrink decode;
    # the reference holds decode and fits prefill's growth under the ceiling: (7, 1).
    assert budget.clamp_pair(5, 1, 2, 1, 16, 15, 1, 0) == (7, 1)


def test_guards_hold_instead_of_reversing() -> None:
    # At the floor a scale-down holds; at the ceiling a scale-up holds.
    assert budget.guard_single(4, 3, 1, 4, 8, 1) == (4, budget.HOLD)
    assert budget.guard_single(8, 9, 1, -1, 8, 1) == (8, budget.HOLD)
    # At the ceiling, an opposing rebalance (prefill up, decode down) moves both legs.
    assert budget.guard_pair(4, 4, 5, 3, 1, 1, -1, 8, 1, 1) == (5, 3, None)
    # Out of band already: reconciled from the current counts.
    assert budget.guard_pair(6, 6, 6, 7, 1, 1, -1, 8, 1, 1) == (4, 4, budget.RECONCILE)


counts = st.integers(0, 12)


@given(counts, counts, counts, counts, st.sampled_from([1, 2, 4]), st.sampled_from([1, 2, 4]),
       st.integers(-1, 20), st.integers(-1, 24), st.integers(0, 2), st.integers(0, 2))
def test_guard_pair_never_reverses_and_respects_ceiling(cp: int, cd: int, pp: int, pd: int, gp: int, gd: int,
                                                        lo: int, hi: int, mp: int, md: int) -> None:
    p, d, reason = budget.guard_pair(cp, cd, pp, pd, gp, gd, lo, hi, mp, md)
    if reason is None:
        assert min(cp, pp) <= p <= max(cp, pp) and min(cd, pd) <= d <= max(cd, pd)
    if reason != budget.RECONCILE and hi >= 0 and (cp * gp + cd * gd) <= hi:
        assert p * gp + d * gd <= hi or (p, d) == (cp, cd)
