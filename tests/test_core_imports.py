"""The one rule (DESIGN §3): simulation cores never import hosts, transports or the wall clock."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"ray", "asyncio", "threading", "socket", "zmq", "time", "multiprocessing", "concurrent"}
# Modules that host or transport the cores; everything else under these packages is core logic.
HOST_MODULES = {
    "cluster/__main__.py",
    "cluster/cli.py",
    "cluster/replay.py",
    "cluster/commands/replay.py",
    "cluster/commands/run.py",
    "cluster/commands/show.py",
    "cluster/runtime/ray.py",
    "cluster/wire/zmq_publisher.py",
    "cluster/wire/zmq_subscriber.py",
    "cluster/wire/mirror.py",
    "actors/hosts.py",
}
CORE_PACKAGES = ("actors", "router", "planner", "cluster")


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def core_modules() -> list[Path]:
    files = []
    for package in CORE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel not in HOST_MODULES and "/experiments/" not in rel:
                files.append(path)
    return files


def test_core_modules_exist() -> None:
    assert any(p.as_posix().endswith("actors/engine/timing/models.py") for p in core_modules())


def test_cores_do_not_import_hosts_or_clocks() -> None:
    offenders = {}
    for path in core_modules():
        bad = _imported_roots(path) & FORBIDDEN
        if bad:
            offenders[path.relative_to(ROOT).as_posix()] = sorted(bad)
    assert offenders == {}


def test_guard_detects_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import time\nfrom ray import remote\n")
    assert _imported_roots(sample) & FORBIDDEN == {"time", "ray"}
