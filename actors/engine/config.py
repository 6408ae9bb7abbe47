"""Engine configuration: the reference mocker's engine keys (facts §0), validated.

`EngineConfig` is what `--extra-engine-args` parses into. It also takes the reference's flat
`MockEngineArgs` spellings and the 1.6.1 nested `{"engine": {...}}` form (`actors.engine.spellings`);
keys whose feature is not built are refused as such, other unknown keys as unknown. Every error
names its field. Defaults are the reference's (1.6.1).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator, model_validator

from actors.engine.spellings import lower_engine_keys

DEFAULT_BLOCK_SIZE = {"vllm": 64, "sglang": 1, "trtllm": 32}
SPEEDUP_RANGE = (1e-6, 1e6)
"""Accepted non-zero `speedup_ratio` and `decode_speedup_ratio` values (0 means no modelled delay):
pass times are divided by them, and beyond this range they overflow or vanish in float arithmetic."""


@dataclass(frozen=True, slots=True)
class RoleTraits:
    """What a worker role does: prefill work, decode work, and whether it publishes KV events."""

    prefills: bool
    decodes: bool
    publishes_kv: bool


ROLE_TRAITS: dict[str, RoleTraits] = {
    "aggregated": RoleTraits(prefills=True, decodes=True, publishes_kv=True),
    "prefill": RoleTraits(prefills=True, decodes=False, publishes_kv=True),
    "decode": RoleTraits(prefills=False, decodes=True, publishes_kv=False),
    # Disaggregated decode workers never publish KV events (facts §f).
}


class PolynomialTimingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["polynomial"] = "polynomial"


class FixedTimingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["fixed"]
    prefill_ms: float = Field(ge=0)
    decode_ms: float = Field(ge=0)


class InterpolatedTimingConfig(BaseModel):
    """A profiled .npz table in the mocker format (facts §b)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["interpolated"]
    path: str

    @property
    def table_path(self) -> str:
        return self.path


class ExternalTimingConfig(BaseModel):
    """The reference's spelling of a profiled table: provider dynamo_profile, config.path."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["external"]
    provider: Literal["dynamo_profile"]
    config: dict[str, str]

    @model_validator(mode="after")
    def _has_path(self) -> "ExternalTimingConfig":
        if "path" not in self.config:
            raise ValueError("timing_model.config.path is required for provider dynamo_profile")
        return self

    @property
    def table_path(self) -> str:
        return self.config["path"]


class RooflineTimingConfig(BaseModel):
    """Timing from the model architecture and the GPU (`cluster.hardware.roofline`).

    `model`: a `configs/models/` name (default: the scenario's `model`); `gpu`: a catalog GPU
    (default: the vGPU the worker is placed on; required when workers run on abstract GPUs).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["roofline"]
    model: str | None = None
    gpu: str | None = None


TimingConfig = Union[PolynomialTimingConfig, FixedTimingConfig, InterpolatedTimingConfig, ExternalTimingConfig,
                     RooflineTimingConfig]
TIMING_TYPES = ("polynomial", "fixed", "interpolated", "external", "roofline")


class EngineConfig(BaseModel):
    """One engine worker's settings. Sizes are per DP rank."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    backend: Literal["vllm", "sglang", "trtllm"] = "vllm"
    worker_type: Literal["aggregated", "prefill", "decode"] = "aggregated"
    # Counts are strict integers (as in the reference's serde): `true` or `1e12` is not a block count.
    num_gpu_blocks: StrictInt = Field(16384, gt=0)
    block_size: StrictInt | None = Field(None, gt=0, description="tokens per KV block; backend default if omitted")
    max_model_len: StrictInt | None = Field(None, gt=0)
    max_num_seqs: StrictInt = Field(256, gt=0)
    max_num_batched_tokens: StrictInt | None = Field(8192, gt=0)
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    preemption_mode: Literal["lifo", "fifo"] = "lifo"
    speedup_ratio: float = Field(1.0, ge=0)
    decode_speedup_ratio: float = Field(1.0, ge=0)
    prefill_schedule_interval: StrictInt = Field(1, ge=1)
    prefill_decode_interval: StrictInt = Field(0, ge=0)
    dp_size: StrictInt = Field(1, ge=1)
    tensor_parallel_size: StrictInt = Field(1, ge=1)
    startup_time: float | None = Field(None, ge=0, description="seconds before a new worker serves")
    emit_kv_events: bool = False
    emit_kv_token_ids: bool = False
    kv_bytes_per_token: StrictInt | None = Field(None, gt=0)
    kv_transfer_bandwidth: float | None = Field(None, ge=0, description="GB/s (decimal)")
    kv_transfer_timing_mode: Literal["full_prompt", "destination_missing"] = "full_prompt"
    planner_profile_data: str | None = Field(None, description="profiled .npz timing table")
    timing_model: TimingConfig = Field(default_factory=PolynomialTimingConfig, discriminator="type")

    @model_validator(mode="before")
    @classmethod
    def _spellings(cls, data: Any) -> Any:
        """The reference's flat and nested spellings; not-built keys refused (`actors.engine.spellings`)."""
        return lower_engine_keys(data)
    @field_validator("speedup_ratio", "decode_speedup_ratio")
    @classmethod
    def _speedup_in_range(cls, v: float) -> float:
        if v != 0 and not SPEEDUP_RANGE[0] <= v <= SPEEDUP_RANGE[1]:
            raise ValueError(f"must be 0 (no modelled delay) or between {SPEEDUP_RANGE[0]:g} and {SPEEDUP_RANGE[1]:g}")
        return v

    @model_validator(mode="after")
    def _check(self) -> "EngineConfig":
        if self.backend != "vllm":
            raise ValueError(f"backend {self.backend!r} is not implemented yet (only 'vllm')")
        return self

    @property
    def block_size_tokens(self) -> int:
        return self.block_size if self.block_size is not None else DEFAULT_BLOCK_SIZE[self.backend]

    @property
    def capacity_tokens(self) -> int:
        return self.num_gpu_blocks * self.block_size_tokens



class ConfigError(ValueError):
    """Bad user configuration; the message is one line naming the field."""


_TIMING_TAGS = frozenset(TIMING_TYPES)


def error_message(err: Mapping[str, Any]) -> str:
    """The message of one pydantic error as a user should read it: no `Value error, ` prefix."""
    if err["type"] == "extra_forbidden":
        return "unknown key"
    ctx = err.get("ctx") or {}
    if err["type"] in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    return str(err["msg"])


def error_location(loc: Sequence[int | str], union_tags: Collection[str] | Mapping[str, str]) -> str:
    """`a.0.b` for a pydantic location, without the union member names users never wrote.

    When `union_tags` maps a tag to the kind the user wrote (a discriminated union keyed by
    which field is present, e.g. `kill_node`) and that kind is not already in the path, it is
    named after the path: `faults.0.at_s (kill_node)`.
    """
    parts = [str(x) for x in loc if not (isinstance(x, str) and x in union_tags)]
    kinds = [union_tags[x] for x in loc if isinstance(union_tags, Mapping) and isinstance(x, str)
             and union_tags.get(x) and union_tags[x] not in parts]
    return ".".join(parts) + "".join(f" ({k})" for k in kinds)


def describe_validation_error(exc: ValidationError, source: str,
                              union_tags: Collection[str] | Mapping[str, str] = _TIMING_TAGS,
                              limit: int | None = None) -> str:
    """One line: `source: field.path: message; ...` (the first problem is the headline).

    `union_tags` are location parts pydantic adds for union members (a discriminator value or
    a member class name): users never wrote them, so they are left out of field paths (see
    `error_location`). `limit` keeps the first problems and counts the rest. An empty `source`
    gives the line without a prefix.
    """
    errors = exc.errors(include_url=False)
    shown = errors if limit is None else errors[:limit]
    parts = []
    for err in shown:
        loc = error_location(err["loc"], union_tags)
        msg = error_message(err)
        parts.append(f"{loc}: {msg}" if loc else msg)
    more = len(errors) - len(shown)
    head = f"{source}: " if source else ""
    return head + "; ".join(parts) + (f" (and {more} more)" if more else "")


def parse_engine_args(raw: str | None, source: str = "--extra-engine-args") -> EngineConfig:
    """Parse JSON text or a path to a JSON file into an EngineConfig; raise ConfigError."""
    if raw is None:
        return EngineConfig()
    text = raw
    if not raw.lstrip().startswith("{"):
        path = Path(raw)
        if not path.is_file():
            raise ConfigError(f"{source}: not a JSON object and no such file: {raw}")
        text = path.read_text()
        source = f"{source} ({raw})"
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{source}: invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a JSON object")
    try:
        return EngineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source)) from None
