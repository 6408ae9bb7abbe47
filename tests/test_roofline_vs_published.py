"""The roofline timing model against the published measurements (facts §6): every row of
benchmarks/roofline_vs_published.py within 20 % with the shipped efficiency factors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from cluster.hardware.roofline import RooflineParams

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "roofline_vs_published.py"


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("roofline_vs_published", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


BENCHMARK = _bench()


@pytest.mark.parametrize("row", BENCHMARK.ROWS, ids=[r.label for r in BENCHMARK.ROWS])
def test_each_published_row_is_within_20_percent(row: object) -> None:
    predicted = row.predict(RooflineParams())  # type: ignore[attr-defined]
    published = row.published  # type: ignore[attr-defined]
    assert predicted == pytest.approx(published, rel=0.20), f"{row.label}: {predicted:.1f} vs {published:.1f}"  # type: ignore[attr-defined]


def test_the_benchmark_exits_zero_when_every_row_fits(capsys: pytest.CaptureFixture[str]) -> None:
    assert BENCHMARK.main([]) == 0
    assert f"{len(BENCHMARK.ROWS)}/{len(BENCHMARK.ROWS)} rows within 20 %" in capsys.readouterr().out
