"""Timing models by name: the `timing_model.type` of an engine config picks a factory here.

A factory builds the model from the engine config alone. Models that need the hardware
(roofline: model architecture and vGPU) are built where the hardware is known
(`cluster.hardware.roofline`), and are named in the same schema.
"""

from __future__ import annotations

from collections.abc import Callable

from actors.engine.config import (
    EngineConfig,
    ExternalTimingConfig,
    FixedTimingConfig,
    InterpolatedTimingConfig,
    TimingConfig,
)
from actors.engine.timing.models import FixedTiming, InterpolatedTiming, PolynomialTiming, TimingModel

TimingFactory = Callable[[TimingConfig, EngineConfig], TimingModel]


def _polynomial(cfg: TimingConfig, engine: EngineConfig) -> TimingModel:
    return PolynomialTiming(engine.capacity_tokens)


def _fixed(cfg: TimingConfig, engine: EngineConfig) -> TimingModel:
    assert isinstance(cfg, FixedTimingConfig)
    return FixedTiming(cfg.prefill_ms, cfg.decode_ms)


def _table(cfg: TimingConfig, engine: EngineConfig) -> TimingModel:
    assert isinstance(cfg, (InterpolatedTimingConfig, ExternalTimingConfig))
    return InterpolatedTiming.from_npz(cfg.table_path)


TIMING_MODELS: dict[str, TimingFactory] = {
    "polynomial": _polynomial,
    "fixed": _fixed,
    "interpolated": _table,
    "external": _table,
}
"""`timing_model.type` -> factory, for the models the engine builds alone."""


def timing_from_config(engine: EngineConfig) -> TimingModel:
    """The timing model an engine config asks for (`planner_profile_data` wins: a profiled table)."""
    if engine.planner_profile_data is not None:
        return InterpolatedTiming.from_npz(engine.planner_profile_data)
    cfg = engine.timing_model
    factory = TIMING_MODELS.get(cfg.type)
    if factory is None:
        raise ValueError(f"timing_model.type {cfg.type!r} needs the hardware; build it with the world's timing")
    return factory(cfg, engine)
