"""`clustersim profile` writes the reference profiler's raw-data layout from runs of the simulated engine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from actors.engine.timing.models import PREFILL_A0, PREFILL_A1, PREFILL_A2
from cluster.cli import main
from planner.perf_model import ProfileTables


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
