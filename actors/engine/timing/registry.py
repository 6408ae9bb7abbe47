"""Which timing model an engine config asks for."""

from __future__ import annotations

from actors.engine.config import EngineConfig
from actors.engine.timing.models import FixedTiming, InterpolatedTiming, PolynomialTiming, TimingModel


def timing_from_config(config: EngineConfig) -> TimingModel:
    """The timing model an engine config asks for (the hardware issue adds roofline models)."""
    table = config.timing_table_path()
    if table is not None:
        return InterpolatedTiming.from_npz(table)
    tm = config.timing_model
    if tm.type == "fixed":
        return FixedTiming(tm.prefill_ms, tm.decode_ms)
    return PolynomialTiming(config.capacity_tokens)
