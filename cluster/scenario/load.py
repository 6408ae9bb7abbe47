"""Reading a scenario file: YAML, validation with one-line errors, and path resolution.

Relative paths (accelerator files, traces, output dir) are looked up next to the scenario
file, then in the current directory, then in the clustersim source tree; the first that
exists wins (an output dir is created in the current directory). `load_scenario` refuses
bad input before anything runs, with one line naming the file and the field
(`ScenarioError`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from actors.engine.config import TIMING_TYPES, describe_validation_error
from cluster.scenario.faults import FAULT_TAGS
from cluster.scenario.spec import EVENT_TAGS, PROJECT_ROOT, Scenario, ScenarioError


class LoadedScenario:
    """A validated scenario and where its relative paths resolve.

    `path` is the scenario file; None for a scenario built in memory (from replay flags or by a
    script), whose relative paths resolve against `base_dir` (default: the current directory)
    and whose errors carry no file name.
    """

    def __init__(self, scenario: Scenario, path: Path | None = None, base_dir: Path | None = None) -> None:
        self.scenario = scenario
        self.path = path
        self.base_dir = base_dir if base_dir is not None else (path.parent if path is not None else Path.cwd())

    @property
    def file_name(self) -> str | None:
        return None if self.path is None else self.path.name

    def error(self, where: str, message: str) -> ScenarioError:
        """A one-line error naming the file (if any) and the field."""
        prefix = f"{self.path}: " if self.path is not None else ""
        return ScenarioError(f"{prefix}{where}: {message}")

    def resolve(self, relative: str, what: str) -> Path:
        """An existing file for `relative`: next to the scenario, in the cwd, in the source tree."""
        p = Path(relative).expanduser()
        if p.is_absolute():
            candidates = [p]
        else:
            candidates = [self.base_dir / p, Path.cwd() / p, PROJECT_ROOT / p]
        for c in candidates:
            if c.exists():
                return c
        raise self.error(what, f"file not found: {relative}")


_UNION_TAGS: dict[str, str] = {
    **{tag: kind for kind, tag in {**FAULT_TAGS, **EVENT_TAGS}.items()},
    **{name: "" for name in (*TIMING_TYPES, "constant", "uniform", "normal", "lognormal", "exponential", "default",
                             "mig", "hami-core", "fractional", "cambricon-dynamic-smlu", "cambricon-env-share")}}
"""Union member names pydantic puts into error locations, and the kind each stands for when the
field path does not show it (see `describe_validation_error`)."""


def load_scenario(path: str | Path) -> LoadedScenario:
    """Read and validate a scenario file; raise ScenarioError naming the file and field."""
    import yaml

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


def dump_scenario(scenario: Scenario, path: str | Path) -> None:
    """Write `scenario` as a YAML file that `load_scenario` reads back to the same model.

    Fields at their defaults are left out, so the file shows what was chosen.
    """
    import yaml

    data = scenario.model_dump(mode="json", exclude_defaults=True)
    data = {"name": scenario.name, **data}  # always first, even at its default
    text = "# Written by clustersim; run it with: clustersim run <this file>\n" + yaml.safe_dump(
        data, sort_keys=False, default_flow_style=None, width=110)
    Path(path).write_text(text)
