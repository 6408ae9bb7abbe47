"""Reading a scenario file: YAML, validation with one-line errors, and path resolution.

Relative paths (accelerator files, traces, output dir) are looked up next to the scenario
file, then in the current directory, then in the clustersim source tree; the first that
exists wins (an output dir is created in the current directory). `load_scenario` refuses
bad input before anything runs, with one line naming the file and the field
(`ScenarioError`).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from actors.engine.config import describe_validation_error
from cluster.scenario.spec import PROJECT_ROOT, Scenario, ScenarioError


class LoadedScenario:
    """A validated scenario and where its relative paths resolve."""

    def __init__(self, scenario: Scenario, path: Path) -> None:
        self.scenario = scenario
        self.path = path

    def resolve(self, relative: str, what: str) -> Path:
        """An existing file for `relative`: next to the scenario, in the cwd, in the source tree."""
        p = Path(relative).expanduser()
        if p.is_absolute():
            candidates = [p]
        else:
            candidates = [self.path.parent / p, Path.cwd() / p, PROJECT_ROOT / p]
        for c in candidates:
            if c.exists():
                return c
        raise ScenarioError(f"{self.path}: {what}: file not found: {relative}")


_UNION_TAGS = frozenset({
    "KillNodeFault", "KillWorkerFault", "PartitionFault", "roofline", "polynomial", "fixed", "interpolated",
    "external", "constant", "uniform", "normal", "lognormal", "exponential", "default", "mig", "hami-core",
    "fractional", "cambricon-dynamic-smlu", "cambricon-env-share"})
"""Union member names pydantic puts into error locations (see `describe_validation_error`)."""


def load_scenario(path: str | Path) -> LoadedScenario:
    """Read and validate a scenario file; raise ScenarioError naming the file and field."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ScenarioError(f"{p}: scenario file not found") from None
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ScenarioError(f"{p}{where}: not valid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{p}: a scenario must be a YAML mapping")
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(describe_validation_error(exc, str(p), _UNION_TAGS, limit=3)) from None
    except ValueError as exc:  # router config errors raised outside pydantic's wrapper
        raise ScenarioError(f"{p}: {exc}") from None
    return LoadedScenario(scenario, p)
