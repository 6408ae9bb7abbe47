"""The chaos suite in CI: >= 100 random fault schedules, every invariant of `tests.chaos.schedules`
after each; every fifth one run twice (same seed, byte-identical report); Local == Ray on a few (slow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.chaos.schedules import run, schedules
from tests.scenario_helpers import run_cli, write

CI_SCHEDULES = 100


@settings(max_examples=CI_SCHEDULES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(sc=schedules())
def test_random_fault_schedules_keep_every_invariant(sc: dict[str, Any]) -> None:
    out = run(sc)
    assert not out.violations, (sc["faults"], out.violations)
    if sc["seed"] % 5 == 0:
        assert run(sc).report_bytes == out.report_bytes, "same schedule and seed, different report"


@pytest.mark.slow
@settings(max_examples=3, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(sc=schedules())
def test_random_fault_schedules_are_byte_identical_on_ray(ray_head: dict[str, str], tmp_path: Path,
                                                           sc: dict[str, Any]) -> None:
    out = tmp_path / str(sc["seed"])
    out.mkdir(parents=True, exist_ok=True)
    path = write(out, sc)
    local = run_cli(path, out / "local", None)
    assert run_cli(path, out / "ray", ray_head, "--runtime", "ray", "--shards", "2") == local
