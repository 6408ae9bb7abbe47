"""Stragglers (`slow_gpu` faults): a rank's passes take `factor` times longer for a window.

`Straggler` wraps a rank's timing model; the node host sets its factor when a window opens and
resets it when it closes, cutting a decode run in flight after the pass in progress (as
co-tenant contention does), so a pass keeps the speed it started with.
"""

from __future__ import annotations

from collections.abc import Sequence

from actors.engine.timing.models import FloatArray, TimingModel


class Straggler:
    """A `TimingModel` whose pass times are the wrapped model's times `factor`."""

    __slots__ = ("inner", "factor")

    def __init__(self, inner: TimingModel) -> None:
        self.inner = inner
        self.factor = 1.0

    def prefill_ms(self, isl: Sequence[int], prefix: Sequence[int]) -> float:
        return self.inner.prefill_ms(isl, prefix) * self.factor

    def decode_ms(self, active_kv_tokens: FloatArray, batch_size: int) -> FloatArray:
        out: FloatArray = self.inner.decode_ms(active_kv_tokens, batch_size) * self.factor
        return out
