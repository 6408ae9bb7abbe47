"""Forward-pass timing models.

A timing model turns one forward pass into milliseconds *before* speedup
scaling (the engine divides by `speedup_ratio`, and decode additionally by
`decode_speedup_ratio`; a ratio of 0 means no modelled delay).

Contract shared by every model:
- `prefill_ms(isl, prefix)` takes, per prefill chunk scheduled in the pass,
  `isl_i = prefix_i + chunk_tokens_i` and `prefix_i` (tokens computed or cached
  before the chunk). Cached prefix tokens are never charged as new work.
- `decode_ms(active_kv_tokens, batch_size)` is vectorised over consecutive
  passes of one decode run: `active_kv_tokens[j]` is the sum of the logical
  sequence lengths of the `batch_size` decoding requests in pass j. It returns
  one duration per pass. The engine evaluates single passes through the same
  function (length-1 arrays), which is what makes macro-stepped runs
  bit-identical to pass-by-pass execution.
- Decode results already include the model's floor (1.0 ms for the reference
  models); the floor is applied before speedup scaling.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

# Reference polynomial coefficients (facts §a).
PREFILL_A2 = 4.209989e-07
PREFILL_A1 = 1.518344e-02
PREFILL_A0 = 16.50142
DECODE_B2 = -25.74
DECODE_B1 = 54.01
DECODE_B0 = 5.74
DECODE_FLOOR_MS = 1.0


class TimingModel(Protocol):
    """Milliseconds per forward pass, before speedup scaling."""

    def prefill_ms(self, isl: Sequence[int], prefix: Sequence[int]) -> float:
        """Duration of the prefill part of a pass; 0.0 when nothing is prefilled."""
        ...

    def decode_ms(self, active_kv_tokens: FloatArray, batch_size: int) -> FloatArray:
        """Duration of the decode part of consecutive passes (vectorised)."""
        ...


def batched_new_tokens(isl: Sequence[int], prefix: Sequence[int]) -> int:
    """New tokens of a prefill batch, aggregated with integer means as the reference does.

    `B * (floor(sum(isl)/B) - floor(sum(prefix)/B))`: a batch of {1000, 301} new
    tokens counts as 1300, not 1301.
    """
    batch = len(isl)
    if batch == 0:
        return 0
    return batch * (sum(isl) // batch - sum(prefix) // batch)


class PolynomialTiming:
    """The reference mocker's default model (facts §a).

    Prefill is quadratic in the batch's new tokens; decode is quadratic in the
    KV fill fraction `p = min(1, active_kv_tokens / capacity_tokens)`.
    """

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity_tokens = capacity_tokens

    def prefill_ms(self, isl: Sequence[int], prefix: Sequence[int]) -> float:
        tokens = batched_new_tokens(isl, prefix)
        if tokens <= 0:
            return 0.0
        t = float(tokens)
        return max(0.0, PREFILL_A2 * t * t + PREFILL_A1 * t + PREFILL_A0)

    def decode_ms(self, active_kv_tokens: FloatArray, batch_size: int) -> FloatArray:
        if self.capacity_tokens <= 0:
            p = np.ones_like(active_kv_tokens)
        else:
            p = np.minimum(1.0, active_kv_tokens / float(self.capacity_tokens))
        raw = DECODE_B2 * p * p + DECODE_B1 * p + DECODE_B0
        return np.maximum(DECODE_FLOOR_MS, raw)


class FixedTiming:
    """Constant prefill and decode durations (the reference `fixed` model)."""

    def __init__(self, prefill_ms: float, decode_ms: float) -> None:
        self._prefill_ms = prefill_ms
        self._decode_ms = decode_ms

    def prefill_ms(self, isl: Sequence[int], prefix: Sequence[int]) -> float:
        return self._prefill_ms if batched_new_tokens(isl, prefix) > 0 else 0.0

    def decode_ms(self, active_kv_tokens: FloatArray, batch_size: int) -> FloatArray:
        return np.full(active_kv_tokens.shape, self._decode_ms, dtype=np.float64)


def _interp1(x: FloatArray, xp: FloatArray, fp: FloatArray) -> FloatArray:
    """Piecewise-linear interpolation that extrapolates linearly past both ends."""
    if len(xp) == 1:
        return np.full(x.shape, fp[0], dtype=np.float64)
    i = np.clip(np.searchsorted(xp, x, side="right") - 1, 0, len(xp) - 2)
    x0, x1 = xp[i], xp[i + 1]
    w = (x - x0) / (x1 - x0)
    return fp[i] + w * (fp[i + 1] - fp[i])


class InterpolatedTiming:
    """Profiled tables in the mocker's .npz format (facts §b).

    Arrays: `prefill_isl` (N), `prefill_ttft_ms` (N); `decode_active_kv_tokens`
    (X), `decode_context_length` (Y), `decode_itl` (X, Y), all in ms. Prefill is
    1-D linear over the batch's new tokens; decode is bilinear at
    (active_kv_tokens, active_kv_tokens / batch_size); both extrapolate, decode
    is floored at 1.0 ms, and a non-finite result counts as 0.0.
    """

    REQUIRED = ("prefill_isl", "prefill_ttft_ms", "decode_active_kv_tokens", "decode_context_length", "decode_itl")

    def __init__(
        self,
        prefill_isl: FloatArray,
        prefill_ttft_ms: FloatArray,
        decode_active_kv_tokens: FloatArray,
        decode_context_length: FloatArray,
        decode_itl: FloatArray,
    ) -> None:
        if prefill_isl.ndim != 1 or prefill_isl.shape != prefill_ttft_ms.shape or len(prefill_isl) == 0:
            raise ValueError("prefill_isl and prefill_ttft_ms must be non-empty 1-D arrays of the same length")
        shape = (len(decode_active_kv_tokens), len(decode_context_length))
        if decode_itl.shape != shape or 0 in shape:
            raise ValueError(f"decode_itl must have shape {shape} (active kv x context), got {decode_itl.shape}")
        for name, axis in (("prefill_isl", prefill_isl), ("decode_active_kv_tokens", decode_active_kv_tokens),
                           ("decode_context_length", decode_context_length)):
            if len(axis) > 1 and not np.all(np.diff(axis) > 0):
                raise ValueError(f"{name} must be strictly increasing")
        self.prefill_isl = prefill_isl
        self.prefill_ttft_ms = prefill_ttft_ms
        self.kv_axis = decode_active_kv_tokens
        self.ctx_axis = decode_context_length
        self.itl = decode_itl

    @classmethod
    def from_npz(cls, path: str | Path) -> "InterpolatedTiming":
        import zipfile

        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("not an .npz archive of named arrays")
            missing = [k for k in cls.REQUIRED if k not in data.files]
            if missing:
                raise ValueError(f"lacks arrays: {', '.join(missing)}")
            arrays = {k: np.asarray(data[k], dtype=np.float64) for k in cls.REQUIRED}
            return cls(**arrays)
        except (OSError, ValueError, TypeError, EOFError, zipfile.BadZipFile) as exc:
            # numpy's messages run to several sentences; the first says what is wrong
            why = (getattr(exc, "strerror", None) or str(exc)).split(". ")[0]
            raise ValueError(f"cannot read timing table {path}: {why}") from None

    def prefill_ms(self, isl: Sequence[int], prefix: Sequence[int]) -> float:
        tokens = batched_new_tokens(isl, prefix)
        if tokens <= 0:
            return 0.0
        value = float(_interp1(np.array([float(tokens)]), self.prefill_isl, self.prefill_ttft_ms)[0])
        return max(0.0, value) if np.isfinite(value) else 0.0

    def decode_ms(self, active_kv_tokens: FloatArray, batch_size: int) -> FloatArray:
        ctx = active_kv_tokens / float(max(1, batch_size))
        # Bilinear = linear along the kv axis for both bracketing context columns, then along context.
        nx, ny = len(self.kv_axis), len(self.ctx_axis)
        if nx == 1:
            ix, wx = np.zeros(ctx.shape, dtype=np.intp), np.zeros(ctx.shape)
        else:
            ix = np.clip(np.searchsorted(self.kv_axis, active_kv_tokens, side="right") - 1, 0, nx - 2)
            wx = (active_kv_tokens - self.kv_axis[ix]) / (self.kv_axis[ix + 1] - self.kv_axis[ix])
        if ny == 1:
            iy, wy = np.zeros(ctx.shape, dtype=np.intp), np.zeros(ctx.shape)
        else:
            iy = np.clip(np.searchsorted(self.ctx_axis, ctx, side="right") - 1, 0, ny - 2)
            wy = (ctx - self.ctx_axis[iy]) / (self.ctx_axis[iy + 1] - self.ctx_axis[iy])
        ix1 = np.minimum(ix + 1, nx - 1)
        iy1 = np.minimum(iy + 1, ny - 1)
        z00, z10 = self.itl[ix, iy], self.itl[ix1, iy]
        z01, z11 = self.itl[ix, iy1], self.itl[ix1, iy1]
        low = z00 + wx * (z10 - z00)
        high = z01 + wx * (z11 - z01)
        value = low + wy * (high - low)
        value = np.where(np.isfinite(value), value, 0.0)
        return np.maximum(DECODE_FLOOR_MS, value)
