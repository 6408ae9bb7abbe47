"""A rank's pass timing: its timing model, scaled by the speedup ratios and the worker's role.

`speedup_ratio` divides every pass, `decode_speedup_ratio` additionally the decode part; a
ratio of 0 means no modelled delay. A role that does no prefill (decode workers) or no decode
(prefill workers) is charged nothing for it (`actors.engine.config.ROLE_TRAITS`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from actors.engine.config import ROLE_TRAITS, EngineConfig
from actors.engine.timing.models import FloatArray, TimingModel


class PassTiming:
    """Milliseconds of the prefill and decode parts of a pass, after scaling."""

    __slots__ = ("model", "_p_ratio", "_d_ratio", "_prefill", "_decode")

    def __init__(self, model: TimingModel, config: EngineConfig) -> None:
        self.model = model
        self._p_ratio = config.speedup_ratio
        self._d_ratio = config.speedup_ratio * config.decode_speedup_ratio
        traits = ROLE_TRAITS[config.worker_type]
        self._prefill = traits.prefills and self._p_ratio != 0
        self._decode = traits.decodes and self._d_ratio != 0

    def prefill_ms(self, isl: Sequence[int], prefix: Sequence[int]) -> float:
        if not isl or not self._prefill:
            return 0.0
        return self.model.prefill_ms(isl, prefix) / self._p_ratio

    def decode_ms(self, active_kv: FloatArray, batch: int) -> FloatArray:
        if not self._decode:
            return np.zeros(active_kv.shape)
        return self.model.decode_ms(active_kv, batch) / self._d_ratio
