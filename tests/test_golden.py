"""Golden reports (tests/golden/): every case's report is byte-identical to the recorded one and its
per-request records hash to the recorded digest. See `tests/golden/cases.py` to re-record."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from tests.golden.cases import CASES, GOLDEN_DIR, digest, run_case


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_report(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report, requests = run_case(name, tmp_path)
    capsys.readouterr()
    expected = (GOLDEN_DIR / f"{name}.report.json").read_bytes()
    if report != expected:
        diff = difflib.unified_diff(expected.decode().splitlines(), report.decode().splitlines(), "golden", "now",
                                    lineterm="", n=1)
        pytest.fail(f"{name}: report differs from the golden\n" + "\n".join(list(diff)[:80]))
    assert digest(requests) == (GOLDEN_DIR / f"{name}.requests.sha256").read_text(), \
        f"{name}: per-request records differ from the golden"
