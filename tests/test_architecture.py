"""The house rules of docs/ARCHITECTURE.md, checked: imports run downward only (the import-linter
layers contract in pyproject.toml), and the map names every room of the tree."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("cluster", "actors", "router", "planner")


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT), "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(cwd), "PATH": str(LINT.parent)})


def _copy(tmp_path: Path) -> Path:
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_layers_contract_holds() -> None:
    done = _lint(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    tree = _copy(tmp_path)
    core = tree / "actors" / "engine" / "config.py"
    core.write_text(core.read_text() + "\nfrom cluster.report.summary import build_summary  # noqa: E402\n")
    done = _lint(tree)
    assert done.returncode != 0
    assert "BROKEN" in done.stdout
    assert "actors.engine.config -> cluster.report.summary" in done.stdout


def _rooms() -> set[str]:
    """Every package of the tree, as a dotted name."""
    out = set()
    for pkg in PACKAGES:
        for init in (ROOT / pkg).rglob("__init__.py"):
            out.add(".".join(init.parent.relative_to(ROOT).parts))
    return out


def test_the_map_names_every_room_and_only_rooms_that_exist() -> None:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    named = set(re.findall(r"`((?:cluster|actors|router|planner)(?:/[a-z_]+)*)/`", text))
    rooms = {r.replace(".", "/") for r in _rooms()}
    assert rooms - named == set(), "rooms missing from docs/ARCHITECTURE.md"
    assert named - rooms == set(), "docs/ARCHITECTURE.md names rooms that do not exist"


_DOTTED = re.compile(r"`((?:cluster|actors|router|planner)(?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def _resolves(dotted: str) -> bool:
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def test_dotted_names_in_docs_and_docstrings_exist() -> None:
    """Every quoted dotted name (cluster..., actors..., router...) in the map, the READMEs and the code exists."""
    files = [p for pkg in (*PACKAGES, "tests", "benchmarks") for p in (ROOT / pkg).rglob("*.py")]
    files += [ROOT / "README.md", ROOT / "docs" / "ARCHITECTURE.md", *ROOT.glob("**/README.md")]
    stale = []
    for path in files:
        if ".venv" in path.parts:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for m in _DOTTED.finditer(line):
                if not _resolves(m.group(1)):
                    stale.append(f"{path.relative_to(ROOT)}:{n}: {m.group(1)}")
    assert stale == []


MAX_MODULE_LINES = 420
"""'About 400 lines': the house rule, with a little slack for a docstring that grows by a line."""


def test_no_module_is_past_about_400_lines() -> None:
    long = {p.relative_to(ROOT).as_posix(): n for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}
