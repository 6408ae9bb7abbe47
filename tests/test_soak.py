"""Soak tests: long versions of the property and scale checks (`make soak`; CI runs every other test).

- the macro-stepping equivalence properties with 10x the examples;
- the 1,000-worker scenario end to end, its router index exact at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from actors.engine.records import TerminalStatus
from cluster.runner import run_world
from cluster.scenario.load import load_scenario
from cluster.scenario.world import build_world
from tests.test_macro_equivalence import check_integer_case, check_macro_equivalence, integer_case, scenario

pytestmark = pytest.mark.soak
ROOT = Path(__file__).resolve().parent.parent


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_macro_stepping_equals_pass_by_pass_long(case: dict[str, Any]) -> None:
    check_macro_equivalence(case)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(integer_case())
def test_arrivals_on_exact_pass_ends_long(case: dict[str, Any]) -> None:
    check_integer_case(case)


def test_the_1000_worker_scenario_runs_and_keeps_the_index_exact() -> None:
    from cluster.report.build import build_report

    world = build_world(load_scenario(ROOT / "configs" / "scenarios" / "scale-1000.yaml"))
    result, control = run_world(world)
    report = build_report(world, result, control)
    assert all(r.terminal_status is TerminalStatus.COMPLETED for r in result.records)
    assert len(report["workers"]) == 1000 and report["event_plane"]["index"]["ranks_diverged"] == 0
