"""`clustersim profile` writes the reference profiler's raw-data layout from runs of the simulated engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actors.engine.timing.models import PREFILL_A0, PREFILL_A1, PREFILL_A2
from cluster.cli import main
from planner.profile_tables import ProfileTables


def test_profile_writes_the_reference_layout(tmp_path: Path) -> None:
    out = tmp_path / "prof"
    assert main(["profile", "--output-dir", str(out), "--isl", "512,1024,10000", "--context", "512,2048",
                 "--concurrency", "1,8,64", "--no-progress"]) == 0
    p = np.load(out / "selected_prefill_interpolation" / "raw_data.npz")
    d = np.load(out / "selected_decode_interpolation" / "raw_data.npz")
    assert set(p.files) == {"prefill_isl", "prefill_ttft", "prefill_thpt_per_gpu"}
    assert set(d.files) == {"x_kv_usage", "y_context_length", "z_itl", "z_thpt_per_gpu", "max_kv_tokens"}

    def poly(t: float) -> float:
        return PREFILL_A2 * t * t + PREFILL_A1 * t + PREFILL_A0
    # a lone prompt's TTFT is its prefill passes: P(1024) = 32.490712 ms (facts, EXP 1); 10000 is chunked 8192 + 1808
    assert p["prefill_ttft"] == pytest.approx([poly(512), poly(1024), poly(8192) + poly(1808)], rel=1e-9)
    assert len(d["z_itl"]) == 6 and d["max_kv_tokens"][0] == 16384 * 64
    assert np.all(np.diff(d["z_itl"][:3]) >= 0)  # a bigger batch never decodes faster
    tables = ProfileTables.load(out)
    assert tables.interp_ttft(1024) == pytest.approx(poly(1024))


def test_profile_refuses_bad_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "--output-dir", str(tmp_path), "--isl", "0,x", "--no-progress"]) == 2
    assert "--isl" in capsys.readouterr().err


def _tables(isl: list[float], ttft: list[float]) -> ProfileTables:
    kv, ctx = np.meshgrid(np.linspace(0.1, 0.9, 5), np.linspace(1000.0, 8000.0, 4))
    itl = 5.0 + 20.0 * kv + 0.001 * ctx  # a plane: Clough-Tocher reproduces it (to its gradient solver's 1e-6 tolerance)
    return ProfileTables(isl, ttft, [1e4 / t for t in ttft], kv.ravel(), ctx.ravel(), itl.ravel(),
                         (1000.0 * kv).ravel(), max_kv_tokens=100_000)


def test_profile_tables_interpolate_as_the_classic_planner() -> None:
    isl = [256.0, 1024.0, 2048.0, 4096.0, 8192.0]
    ttft = [1e-6 * x * x + 0.01 * x + 5.0 for x in isl]
    t = _tables(isl, ttft)
    # cubic (not linear) between points: a quadratic profile is reproduced exactly
    assert t.interp_ttft(3000.0) == pytest.approx(1e-6 * 9e6 + 30.0 + 5.0, rel=1e-9)
    assert t.interp_ttft(1e6) == pytest.approx(ttft[-1]) and t.interp_ttft(1.0) == pytest.approx(ttft[0])
    # decode: the query snaps to the 100 x 100 grid cell; inside the hull the plane is exact
    # (kv usage 10 x 3000 / 1e5 = 0.3 -> cell 30 of 0..99 by 1/99; context 3000 -> cell 37 by 8000/99)
    assert t.interp_itl(10.0, 3000.0) == pytest.approx(5.0 + 20.0 * 30 / 99 + 0.001 * 37 * 8000 / 99, rel=1e-6)
    # outside the profiled hull (kv usage 1.0) the nearest profiled point fills the cell
    assert t.interp_itl(25.0, 4000.0) == pytest.approx(t.itl_grid[t._cell(4000.0, t.yi), 99])
    # best throughput: from high kv usage down, the first cell meeting the ITL target
    best = t.best_decode_thpt_per_gpu(14.0, 4000.0)
    row = t.itl_grid[t._cell(4000.0, t.yi)]
    ix = max(i for i in range(100) if row[i] <= 14.0)
    assert best == pytest.approx(t.thpt_grid[t._cell(4000.0, t.yi), ix])
    assert t.best_decode_thpt_per_gpu(0.0, 4000.0) == pytest.approx(t.thpt_grid[t._cell(4000.0, t.yi), 0])


def test_profile_tables_with_few_points_lower_the_order() -> None:
    t = _tables([512.0, 4096.0], [10.0, 50.0])
    assert t.interp_ttft(2304.0) == pytest.approx(30.0)  # two points: linear
