"""The chaos suite in CI: >= 100 random fault schedules, every invariant of `tests.chaos.schedules`
after each; every fifth one run twice (same seed, byte-identical report); Local == Ray on a few (slow)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from tests.chaos.schedules import run, schedules

CI_SCHEDULES = 100


@settings(max_examples=CI_SCHEDULES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(sc=schedules())
def test_random_fault_schedules_keep_every_invariant(sc: dict[str, Any]) -> None:
    out = run(sc)
    assert not out.violations, (sc["faults"], out.violations)
    if sc["seed"] % 5 == 0:
        assert run(sc).report_bytes == out.report_bytes, "same schedule and seed, different report"


@pytest.fixture(scope="module")
def ray_driver(ray_head: dict[str, str]) -> Iterator[None]:
    """This process as a driver of the test head (the runtime joins it through RAY_ADDRESS)."""
    keys = ("RAY_ADDRESS", "RAY_AUTH_MODE", "HOME")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: ray_head[k] for k in keys})
    try:
        yield
    finally:
        import ray

        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.mark.slow
@settings(max_examples=3, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(sc=schedules())
def test_random_fault_schedules_are_byte_identical_on_ray(ray_driver: None, sc: dict[str, Any]) -> None:
    assert run(sc, "ray", 2).report_bytes == run(sc).report_bytes
