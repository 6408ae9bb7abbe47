"""The planner's GPU-budget functions against the reference's own (dynamo 1.6.1 `planner/core/budget.py`).

Draws random proposals (current and proposed counts, GPUs per replica, floor and ceiling, minimum
endpoints), asks both implementations, and prints how many agree. With `--record PATH` it writes the
reference's answers as test data (tests/data/budget_reference_cases.json), so the unit test needs no
reference. Needs the reference wheel importable (a separate venv):

    /work/refvenv/bin/python benchmarks/budget_vs_reference.py [--cases 2000] [--record PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def draw(rng: random.Random) -> dict[str, int]:
    p_gpu, d_gpu = rng.choice([1, 1, 2, 4]), rng.choice([1, 1, 2, 4])
    hi = rng.choice([-1, rng.randint(0, 24)])
    lo = rng.choice([-1, -1, rng.randint(0, 20)])
    return {"cur_p": rng.randint(0, 10), "cur_d": rng.randint(0, 10), "prop_p": rng.randint(0, 14),
            "prop_d": rng.randint(0, 14), "p_gpu": p_gpu, "d_gpu": d_gpu, "min_gpus": lo, "max_gpus": hi,
            "p_min": rng.randint(0, 2), "d_min": rng.randint(0, 2)}


def _reference_budget() -> Any:
    """The reference's budget module. Its package imports `aisimulate_core` (the AIS perf-model SDK,
    a wheel stub fetched from NVIDIA's index) only for an adapter the budget functions never use;
    where it is absent a placeholder module stands in for that import."""
    try:
        import aisimulate_core.sdk  # noqa: F401
    except ModuleNotFoundError:
        import types

        pkg, sdk = types.ModuleType("aisimulate_core"), types.ModuleType("aisimulate_core.sdk")
        sdk.__getattr__ = lambda name: object  # type: ignore[method-assign]  # PEP 562: any name
        sys.modules.update({"aisimulate_core": pkg, "aisimulate_core.sdk": sdk})
    from dynamo.planner.core import budget  # the reference venv only

    return budget


def reference_answers(c: dict[str, int]) -> dict[str, Any]:
    ref = _reference_budget()

    a = (c["p_gpu"], c["d_gpu"], c["min_gpus"], c["max_gpus"], c["p_min"], c["d_min"])
    return {
        "clamp_single": ref.proportional_clamp_single(c["prop_d"], c["d_gpu"], c["min_gpus"], c["max_gpus"], c["d_min"]),
        "clamp_pair": list(ref.proportional_clamp_pair(c["prop_p"], c["prop_d"], *a)),
        "fit_directional_pair": list(ref.fit_directional_budget_pair(c["cur_p"], c["cur_d"], c["prop_p"],
                                                                     c["prop_d"], *a)),
        "guard_single": list(ref.guard_single_scaling_budget(c["cur_d"], c["prop_d"], c["d_gpu"], c["min_gpus"],
                                                             c["max_gpus"], c["d_min"])),
        "guard_pair": list(ref.guard_disagg_scaling_budget(c["cur_p"], c["cur_d"], c["prop_p"], c["prop_d"], *a)),
    }


def ours(c: dict[str, int]) -> dict[str, Any]:
    from planner import budget

    a = (c["p_gpu"], c["d_gpu"], c["min_gpus"], c["max_gpus"], c["p_min"], c["d_min"])
    return {
        "clamp_single": budget.clamp_single(c["prop_d"], c["d_gpu"], c["min_gpus"], c["max_gpus"], c["d_min"]),
        "clamp_pair": list(budget.clamp_pair(c["prop_p"], c["prop_d"], *a)),
        "fit_directional_pair": list(budget.fit_directional_pair(c["cur_p"], c["cur_d"], c["prop_p"], c["prop_d"], *a)),
        "guard_single": list(budget.guard_single(c["cur_d"], c["prop_d"], c["d_gpu"], c["min_gpus"], c["max_gpus"],
                                                 c["d_min"])),
        "guard_pair": list(budget.guard_pair(c["cur_p"], c["cur_d"], c["prop_p"], c["prop_d"], *a)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--record", type=Path, help="write the first 400 cases and the reference's answers as JSON")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    cases = [draw(rng) for _ in range(args.cases)]
    agree: dict[str, int] = {}
    mismatches: list[tuple[str, dict[str, int], Any, Any]] = []
    for c in cases:
        want, got = reference_answers(c), ours(c)
        for fn in want:
            same = want[fn] == got[fn]
            agree[fn] = agree.get(fn, 0) + same
            if not same and len(mismatches) < 10:
                mismatches.append((fn, c, want[fn], got[fn]))
    for fn, n in agree.items():
        print(f"{fn:<22} {n:5d} / {len(cases)} agree with the reference")
    for fn, c, want, got in mismatches:
        print(f"  {fn} {c}: reference {want}, ours {got}")
    if args.record:
        rows = [{"args": c, "reference": reference_answers(c)} for c in cases[:400]]
        args.record.write_text(json.dumps(rows, separators=(",", ":")) + "\n")
        print(f"recorded {len(rows)} cases to {args.record}")


if __name__ == "__main__":
    main()
