"""The one rule (DESIGN §3): simulation cores never import hosts, transports, the CLI, the wall clock or
unseeded randomness.

Every module under cluster/, actors/, router/ and planner/ is a core except the hosts listed below
(the CLI and front doors, the Ray runtime, the ZMQ transports, the Ray actor shell). A core may
import neither the forbidden modules (at any depth of the file: function-level imports count) nor
a host module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"ray", "asyncio", "threading", "socket", "zmq", "time", "multiprocessing", "concurrent", "random",
             "uuid", "datetime", "secrets"}
HOSTS = {
    "cluster.__main__",
    "cluster.cli",
    "cluster.replay",
    "cluster.runner",
    "cluster.commands",
    "cluster.runtime.ray",
    "cluster.wire.zmq_publisher",
    "cluster.wire.zmq_subscriber",
    "cluster.wire.mirror",
    "actors.hosts",
}
"""Host modules (a package name covers every module in it)."""
CORE_PACKAGES = ("actors", "router", "planner", "cluster")
EXPERIMENTS = ROOT / "planner" / "experiments"
"""Experiment scripts, not modules of the planner package (see `core_modules`)."""


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _is_host(module: str) -> bool:
    return any(module == h or module.startswith(h + ".") for h in HOSTS)


def _imports(path: Path) -> set[str]:
    """Every absolute module name the file imports (`from a.b import c` gives a.b and a.b.c)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def core_modules() -> list[Path]:
    files = []
    for package in CORE_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            # planner/experiments/ holds scripts (no __init__.py: not part of the planner package);
            # they drive whole runs through cluster.replay and use the wall clock for progress bars.
            if not _is_host(_module_name(path)) and not path.is_relative_to(EXPERIMENTS):
                files.append(path)
    return files


def _offences(path: Path) -> list[str]:
    bad = []
    for name in sorted(_imports(path)):
        if name.split(".")[0] in FORBIDDEN:
            bad.append(name)
        elif _is_host(name):
            bad.append(name)
    return bad


def test_every_module_but_the_hosts_is_checked() -> None:
    checked = {_module_name(p) for p in core_modules()}
    assert "cluster.commands.replay" not in checked and "actors.hosts" not in checked
    # the cores that replays run through (formerly exempt with the replay command) are checked
    assert {"cluster.scenario.world", "cluster.report.build", "cluster.workload.load", "cluster.runtime.local",
            "actors.engine.timing.models", "cluster.control.fleet"} <= checked


def test_cores_do_not_import_hosts_clocks_or_unseeded_randomness() -> None:
    offenders = {p.relative_to(ROOT).as_posix(): bad for p in core_modules() if (bad := _offences(p))}
    assert offenders == {}


def test_experiments_are_scripts_not_part_of_the_planner_package() -> None:
    """Skipping planner/experiments/ is only sound while it is no package (nothing can import it)."""
    assert not (EXPERIMENTS / "__init__.py").exists()
    assert all(not p.is_relative_to(EXPERIMENTS) for p in core_modules())


def test_the_guard_sees_forbidden_imports_anywhere_in_a_file(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import time\nfrom ray import remote\n\ndef f():\n    import random\n"
                      "    from cluster.commands import replay\n    from datetime import datetime\n")
    assert _offences(sample) == ["cluster.commands", "cluster.commands.replay", "datetime", "datetime.datetime",
                                 "random", "ray", "ray.remote", "time"]
