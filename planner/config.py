"""Planner configurations: the reference `PlannerConfig` (names and defaults of dynamo 1.6.1's
`planner/config/defaults.py`), a scripted planner and a user's Python class.

`parse_planner_config(value)` takes a dict (a scenario's `planner:` or `--planner-config` JSON)
and returns one of the three models, chosen by `type` (`sla`, the default; `scripted`; `python`).
Invariant: every model is frozen and forbids unknown keys, so a misspelt knob is an error.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictInt, TypeAdapter, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class SlaPlannerConfig(_Strict):
    """The SLA planner (the reference's `PlannerConfig`; only the knobs a simulation uses)."""

    type: Literal["sla"] = "sla"
    mode: Literal["disagg", "prefill", "decode", "agg"] = "agg"
    """The reference defaults to disagg; clustersim's one-pool deployments are agg, its default here."""
    optimization_target: Literal["throughput", "latency", "load", "sla"] = "sla"
    throughput_adjustment_interval_seconds: StrictInt = Field(180, gt=0)
    load_adjustment_interval_seconds: StrictInt = Field(5, gt=0)
    max_throughput_scaling_replicas: StrictInt = Field(8, ge=1)
    max_gpu_budget: StrictInt = 8
    min_gpu_budget: StrictInt = -1
    min_endpoint: StrictInt = Field(1, ge=0)
    prefill_min_endpoint: StrictInt | None = None
    decode_min_endpoint: StrictInt | None = None
    prefill_engine_num_gpu: StrictInt = Field(1, ge=1)
    decode_engine_num_gpu: StrictInt = Field(1, ge=1)
    profile_results_dir: str | None = None
    """A `clustersim profile` (or reference profiler) folder: the throughput loop uses the classic
    formulas over it; none: the 1.6.1 capacity search over the deployment's own timing model."""
    ttft_ms: float = Field(500.0, gt=0)
    itl_ms: float = Field(50.0, gt=0)
    isl: int = 3000
    osl: int = 150
    load_predictor: Literal["constant", "arima", "kalman", "prophet"] = "arima"
    load_predictor_log1p: bool = False
    prophet_window_size: StrictInt = Field(50, gt=0)
    kalman_q_level: float = 1.0
    kalman_q_trend: float = 0.1
    kalman_r: float = 10.0
    kalman_min_points: StrictInt = 5
    enable_throughput_scaling: bool = True
    enable_load_scaling: bool = False
    load_scaling_down_sensitivity: StrictInt = Field(80, ge=0, le=100)
    load_min_observations: StrictInt = Field(5, ge=0)
    prefill_scale_up_queue_tokens: int | None = None
    prefill_scale_down_queue_tokens: int | None = None
    decode_scale_up_kv_rate: float | None = None
    decode_scale_down_kv_rate: float | None = None
    advisory: bool = False
    """Record decisions without acting on them."""
    deployment: str | None = None
    """Agg: the deployment it scales (default: the first)."""
    prefill_deployment: str | None = None
    decode_deployment: str | None = None

    @model_validator(mode="after")
    def _something_enabled(self) -> "SlaPlannerConfig":
        if not (self.enable_throughput_scaling or self.enable_load_scaling):
            raise ValueError("enable_throughput_scaling or enable_load_scaling must be true")
        return self

    def min_endpoint_of(self, component: str) -> int:
        """`prefill_min_endpoint` / `decode_min_endpoint` when set, else `min_endpoint` (agg: decode's)."""
        value = self.prefill_min_endpoint if component == "prefill" else self.decode_min_endpoint
        return self.min_endpoint if value is None else value

    @property
    def tick_s(self) -> float:
        """The planner's cadence: the shorter loop that is enabled."""
        loops = [self.throughput_adjustment_interval_seconds] if self.enable_throughput_scaling else []
        if self.enable_load_scaling:
            loops.append(self.load_adjustment_interval_seconds)
        return float(min(loops))


class ScriptedStep(_Strict):
    at_s: float = Field(ge=0.0)
    workers: StrictInt | None = Field(None, ge=0)
    prefill: StrictInt | None = Field(None, ge=0)
    decode: StrictInt | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _targets(self) -> "ScriptedStep":
        if self.workers is not None and (self.prefill is not None or self.decode is not None):
            raise ValueError("give workers (agg) or prefill/decode (disagg), not both")
        if self.workers is None and self.prefill is None and self.decode is None:
            raise ValueError("a step needs workers, or prefill and/or decode")
        return self


class ScriptedPlannerConfig(_Strict):
    """Targets applied at ticks: at each tick every step with `at_s` <= now not yet applied is."""

    type: Literal["scripted"]
    tick_s: float = Field(5.0, gt=0.0)
    steps: list[ScriptedStep] = Field(min_length=1)
    deployment: str | None = None
    prefill_deployment: str | None = None
    decode_deployment: str | None = None
    advisory: bool = False


class PythonPlannerConfig(_Strict):
    """A user's planner class (`module:Class`) with the reference scaling hook's shape:
    `initial_tick_ms()` and `on_tick(snapshot) -> {target_prefill, target_decode, next_tick_ms}`."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False, serialize_by_alias=True)

    type: Literal["python"]
    class_: str = Field(alias="class", pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    args: dict[str, Any] = Field(default_factory=dict)
    deployment: str | None = None
    prefill_deployment: str | None = None
    decode_deployment: str | None = None
    advisory: bool = False


AnyPlannerConfig = Annotated[Union[SlaPlannerConfig, ScriptedPlannerConfig, PythonPlannerConfig],
                             Field(discriminator="type")]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(AnyPlannerConfig)


def parse_planner_config(value: dict[str, Any]) -> SlaPlannerConfig | ScriptedPlannerConfig | PythonPlannerConfig:
    """The planner config `value` describes (`type` defaults to `sla`); pydantic's ValidationError when bad."""
    data = dict(value)
    data.setdefault("type", "sla")
    out: SlaPlannerConfig | ScriptedPlannerConfig | PythonPlannerConfig = _ADAPTER.validate_python(data)
    return out
