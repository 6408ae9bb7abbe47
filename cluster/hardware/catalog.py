"""GPU catalog (`configs/gpus.toml`): specs per GPU model and MIG profile tables.

Invariants (checked at load):
- every `gpu.*.mig` names a `[mig.*]` table or is empty;
- in a MIG table every profile's placements lie on the memory line (`start + size <= memory_slices`),
  compute slices never exceed the table's, and names (and aliases) are unique.
Values are as the facts sheet gives them; approximate datasheet numbers are flagged there.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, TypeVar

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cluster.hardware.sizes import parse_binary_size

ModelT = TypeVar("ModelT", bound=BaseModel)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_CATALOG = CONFIG_DIR / "gpus.toml"

Vendor = Literal["nvidia", "cambricon"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Interconnect(_Frozen):
    """Card-to-card link: `gbps` is GB/s per GPU (NVLink aggregate, or PCIe bidirectional)."""

    kind: str
    gbps: float = Field(gt=0)
    pcie_gen: int = Field(ge=3, le=6)


class GpuSpec(_Frozen):
    """One GPU model. `memory_bytes` is parsed from a Backend.AI binary size string."""

    key: str = ""
    name: str
    vendor: Vendor
    sms: int = Field(gt=0)
    memory_bytes: int = Field(gt=0, validation_alias="memory")
    bandwidth_tbps: float = Field(gt=0)
    bf16_tflops: float = Field(gt=0)
    fp8_tflops: float = Field(ge=0)
    mig: str = ""
    interconnect: Interconnect
    tdp_w: int = Field(gt=0)
    aliases: tuple[str, ...] = ()

    @field_validator("memory_bytes", mode="before")
    @classmethod
    def _size(cls, v: object) -> int:
        if isinstance(v, (str, int)):
            return parse_binary_size(v)
        raise ValueError("memory must be a size string like '80GiB'")

    @property
    def mig_capable(self) -> bool:
        return self.mig != ""

    @property
    def bandwidth_bytes_per_ms(self) -> float:
        return self.bandwidth_tbps * 1e9

    def flops_per_ms(self, dtype: str) -> float:
        """Dense tensor FLOP per millisecond for `dtype` ("bf16"/"fp16" or "fp8"; FP8 falls back to BF16)."""
        tflops = self.fp8_tflops if dtype == "fp8" and self.fp8_tflops > 0 else self.bf16_tflops
        return tflops * 1e9


class CpuSpec(_Frozen):
    """Host CPU for CPU-resident layers (computed in f32, facts §4.3)."""

    f32_tflops: float = Field(gt=0)
    bandwidth_tbps: float = Field(gt=0)
    memory_bytes: int = Field(gt=0, validation_alias="memory")

    @field_validator("memory_bytes", mode="before")
    @classmethod
    def _size(cls, v: object) -> int:
        if isinstance(v, (str, int)):
            return parse_binary_size(v)
        raise ValueError("memory must be a size string")


class MigProfile(_Frozen):
    """One GPU-instance profile. `size`/`starts` are memory-slice units; `compute` compute slices."""

    name: str
    id: int | None = None
    sms: int = Field(gt=0)
    memory_mib: int = Field(gt=0)
    max_instances: int = Field(ge=1)
    dec: int = Field(ge=0)
    jpeg: int = Field(ge=0)
    ofa: int = Field(ge=0)
    ce: int = Field(ge=0)
    compute: int = Field(ge=1)
    size: int = Field(ge=1)
    starts: tuple[int, ...]
    media_ext: bool = False
    inferred: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def memory_bytes(self) -> int:
        return self.memory_mib * 1024 * 1024


class MigTable(_Frozen):
    """The MIG geometry of one GPU family (facts §1.3/§1.4)."""

    memory_slices: int = Field(ge=1)
    compute_slices: int = Field(ge=1)
    full_sms: int = Field(gt=0)
    profiles: tuple[MigProfile, ...]

    @model_validator(mode="after")
    def _check(self) -> "MigTable":
        seen: set[str] = set()
        for p in self.profiles:
            for n in (p.name, *p.aliases):
                if n in seen:
                    raise ValueError(f"duplicate MIG profile name {n}")
                seen.add(n)
            if p.compute > self.compute_slices:
                raise ValueError(f"profile {p.name}: {p.compute} compute slices > {self.compute_slices}")
            for s in p.starts:
                if s < 0 or s + p.size > self.memory_slices:
                    raise ValueError(f"profile {p.name}: placement {s}+{p.size} outside {self.memory_slices} slices")
        return self

    def profile(self, name: str) -> MigProfile | None:
        for p in self.profiles:
            if name == p.name or name in p.aliases:
                return p
        return None

    def names(self) -> list[str]:
        return [p.name for p in self.profiles]


class Catalog(_Frozen):
    """The whole catalog file."""

    cpu: CpuSpec
    gpu: dict[str, GpuSpec]
    mig: dict[str, MigTable]

    @model_validator(mode="after")
    def _check(self) -> "Catalog":
        for key, spec in self.gpu.items():
            if spec.mig and spec.mig not in self.mig:
                raise ValueError(f"gpu.{key}.mig: unknown MIG table {spec.mig!r}")
        return self

    def get(self, key: str) -> GpuSpec:
        """Look a GPU up by catalog key or alias (case-insensitive)."""
        found = self.find(key)
        if found is None:
            raise KeyError(f"unknown GPU model {key!r}; known: {', '.join(sorted(self.gpu))}")
        return found

    def find(self, key: str) -> GpuSpec | None:
        low = key.strip().lower()
        for k, spec in self.gpu.items():
            if low == k or low in (a.lower() for a in spec.aliases) or low == spec.name.lower():
                return spec.model_copy(update={"key": k})
        return None

    def mig_table(self, spec: GpuSpec) -> MigTable | None:
        return self.mig.get(spec.mig) if spec.mig else None


def load_toml_model(path: str | Path, model: type[ModelT]) -> ModelT:
    """Read a TOML file and validate it as `model`.

    Raises:
        ValueError: unreadable TOML or a field that fails validation (message names the file).
    """
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ValueError(f"{path}: {summarize_validation_error(exc)}") from exc


def load_catalog(path: str | Path = DEFAULT_CATALOG) -> Catalog:
    """Read and validate a catalog file (ValueError naming the file and field)."""
    return load_toml_model(path, Catalog)


@lru_cache(maxsize=4)
def default_catalog() -> Catalog:
    """The shipped catalog, parsed once."""
    return load_catalog(DEFAULT_CATALOG)


def summarize_validation_error(exc: ValidationError) -> str:
    """One line: `field.path: message` for the first error, plus a count of the others
    (the scenario loader's formatter, `actors.engine.config.describe_validation_error`)."""
    from typing import get_args

    from actors.engine.config import describe_validation_error
    from cluster.hardware.virtualization import ModeName

    return describe_validation_error(exc, "", frozenset(get_args(ModeName)), limit=1)
