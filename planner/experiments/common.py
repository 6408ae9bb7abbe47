"""Shared helpers of the planner experiment scripts (run as scripts: `python planner/experiments/X.py`).

Not a package (no `__init__.py`): the scripts drive whole runs through `cluster` (above the
planner in the layers) and use the wall clock for progress bars; tests/test_core_imports.py
and the import-linter contract leave this folder out on purpose.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def sine_rate(t_s: np.ndarray, lo: float, hi: float, period_s: float) -> np.ndarray:
    """The reference's sinusoidal load: (min+max)/2 + (max-min)/2 * sin(2 pi t / P - pi / 2)."""
    return (lo + hi) / 2 + (hi - lo) / 2 * np.sin(2 * np.pi * t_s / period_s - np.pi / 2)


def poisson_arrivals(rate: Callable[[np.ndarray], np.ndarray], peak: float, duration_s: float,
                     seed: int) -> np.ndarray:
    """Arrival times (s) of a Poisson process of time-varying `rate` (thinning; seeded)."""
    rng = np.random.default_rng(seed)
    n = rng.poisson(peak * duration_s * 1.2) + 16
    t = np.cumsum(rng.exponential(1.0 / peak, size=n))
    t = t[t < duration_s]
    keep = rng.random(len(t)) < rate(t) / peak
    return np.asarray(t[keep])


def write_trace(path: Path, arrivals_s: np.ndarray, isl: int, osl: int, block: int = 512) -> Path:
    """A Mooncake-format trace: one line per arrival, distinct prompts (no shared prefix)."""
    blocks = math.ceil(isl / block)
    with path.open("w") as f:
        for k, t in enumerate(arrivals_s):
            f.write(json.dumps({"timestamp": int(round(t * 1000)), "input_length": isl, "output_length": osl,
                                "hash_ids": list(range(k * blocks, (k + 1) * blocks))}) + "\n")
    return path


def run(scenario: dict[str, Any], progress: Any = None) -> dict[str, Any]:
    """Run a scenario dict on the Local runtime; its report (scenario layout) with `_records`."""
    from cluster.report.build import build_report
    from cluster.runner import run_world
    from cluster.scenario.load import LoadedScenario
    from cluster.scenario.spec import Scenario
    from cluster.scenario.world import build_world

    world = build_world(LoadedScenario(Scenario.model_validate(scenario), base_dir=ROOT))
    on_done = (lambda _r: progress.update(1)) if progress is not None else None
    result, control = run_world(world, "local", 1, on_done=on_done)
    report = build_report(world, result, control)
    report["_records"] = result.records
    return report


def attainment(records: list[Any], ttft_ms: float, itl_ms: float) -> float:
    """Share of requests that completed meeting both TTFT and (mean) ITL targets."""
    good = 0
    for r in records:
        if r.first_token_ms is None or r.terminal_status.value != "completed":
            continue
        osl = r.engine.output_length
        itl = ((r.last_token_ms or r.first_token_ms) - r.first_token_ms) / (osl - 1) if osl > 1 else 0.0
        good += (r.first_token_ms - r.arrival_ms <= ttft_ms) and itl <= itl_ms
    return good / len(records) if records else 0.0


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def write_markdown(path: Path, title: str, rows: list[dict[str, Any]], note: str = "") -> str:
    keys = list(rows[0])

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = [f"# {title}", "", note, "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def engine_keys(startup_s: float) -> dict[str, Any]:
    return {"startup_time": startup_s}


def abstract_scenario(name: str, trace: Path, replicas: int, engine: dict[str, Any],
                      planner: dict[str, Any] | None, seed: int = 0) -> dict[str, Any]:
    """One aggregated deployment on abstract GPUs replaying `trace` round robin."""
    sc: dict[str, Any] = {"name": name, "seed": seed,
                          "deployments": [{"name": "agg", "replicas": replicas, "engine": engine}],
                          "router": {"mode": "round_robin"},
                          "workload": {"trace": str(trace), "trace_block_size": 512}}
    if planner is not None:
        sc["planner"] = planner
    return sc
