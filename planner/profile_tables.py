"""The profiler's raw data as the classic planner reads it (facts b/j; the reference's
`perf_interpolation.py` `PrefillInterpolator` / `DecodeInterpolator`).

A profile folder holds `selected_prefill_interpolation/raw_data.npz` (`prefill_isl`,
`prefill_ttft` ms, `prefill_thpt_per_gpu` tokens/s) and `selected_decode_interpolation/raw_data.npz`
(`x_kv_usage`, `y_context_length`, `z_itl` ms, `z_thpt_per_gpu`, `max_kv_tokens`), as
`clustersim profile` and the reference profiler write them.
- Prefill: 1-D cubic interpolation over ISL (`scipy.interpolate.interp1d(kind="cubic")`), the
  query clamped to the profiled range. Under 4 points a cubic is undefined: quadratic (3) or
  linear (2) instead, the highest order the points allow.
- Decode: both surfaces are interpolated once onto a `resolution` x `resolution` grid (kv usage
  0..1 by context 0..max profiled context) with `griddata(method="cubic")`, cells outside the
  points' hull filled from `method="nearest"`; a query rounds to the nearest cell (kv usage =
  concurrency x context / max_kv_tokens, clipped to the grid).
- `best_decode_thpt_per_gpu`: on the context's row, scanning kv usage from high to low, the
  first cell whose ITL meets the target; none: the lowest-usage cell.
Invariant: pure functions of the arrays (scipy's Qhull triangulation is deterministic).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

GRID_RESOLUTION = 100


def _grid(points: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]], z: npt.NDArray[np.float64],
          mesh: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]) -> npt.NDArray[np.float64]:
    from scipy.interpolate import griddata  # scipy costs a replay ~0.1 s of import; only profiles need it

    out: npt.NDArray[np.float64] = np.asarray(griddata(points, z, mesh, method="cubic"), dtype=np.float64)
    holes = np.isnan(out)
    if holes.any():
        out[holes] = np.asarray(griddata(points, z, mesh, method="nearest"), dtype=np.float64)[holes]
    return out


class ProfileTables:
    def __init__(self, prefill_isl: npt.ArrayLike, prefill_ttft: npt.ArrayLike, prefill_thpt_per_gpu: npt.ArrayLike,
                 x_kv_usage: npt.ArrayLike, y_context_length: npt.ArrayLike, z_itl: npt.ArrayLike,
                 z_thpt_per_gpu: npt.ArrayLike, max_kv_tokens: int, resolution: int = GRID_RESOLUTION) -> None:
        from scipy.interpolate import interp1d

        isl = np.asarray(prefill_isl, dtype=np.float64)
        self.min_isl, self.max_isl = float(isl.min()), float(isl.max())
        kind = {2: "linear", 3: "quadratic"}.get(len(np.unique(isl)), "cubic")
        self._ttft = interp1d(isl, np.asarray(prefill_ttft, dtype=np.float64), kind=kind)
        self._prefill_thpt = interp1d(isl, np.asarray(prefill_thpt_per_gpu, dtype=np.float64), kind=kind)
        x = np.asarray(x_kv_usage, dtype=np.float64)
        y = np.asarray(y_context_length, dtype=np.float64)
        self.max_kv_tokens = int(max_kv_tokens)
        self.resolution = resolution
        self.xi = np.linspace(0.0, 1.0, resolution)
        self.yi = np.linspace(0.0, float(y.max()), resolution)
        mesh = np.meshgrid(self.xi, self.yi)
        self.itl_grid = _grid((x, y), np.asarray(z_itl, dtype=np.float64), (mesh[0], mesh[1]))
        self.thpt_grid = _grid((x, y), np.asarray(z_thpt_per_gpu, dtype=np.float64), (mesh[0], mesh[1]))

    @classmethod
    def load(cls, folder: str | Path) -> "ProfileTables":
        root = Path(folder)
        with np.load(root / "selected_prefill_interpolation" / "raw_data.npz") as p, \
                np.load(root / "selected_decode_interpolation" / "raw_data.npz") as d:
            return cls(p["prefill_isl"], p["prefill_ttft"], p["prefill_thpt_per_gpu"], d["x_kv_usage"],
                       d["y_context_length"], d["z_itl"], d["z_thpt_per_gpu"], int(np.asarray(d["max_kv_tokens"])[0]))

    def _isl(self, isl: float) -> float:
        return max(self.min_isl, min(float(isl), self.max_isl))

    def interp_ttft(self, isl: float) -> float:
        return float(self._ttft(self._isl(isl)))

    def interp_prefill_thpt_per_gpu(self, isl: float) -> float:
        return float(self._prefill_thpt(self._isl(isl)))

    def _cell(self, value: float, axis: npt.NDArray[np.float64]) -> int:
        step = axis[1] - axis[0] if len(axis) > 1 else 0.0
        if step <= 0:
            return 0
        return int(np.clip(np.round((value - axis[0]) / step), 0, self.resolution - 1))

    def interp_itl(self, concurrency: float, context: float) -> float:
        """ITL at `concurrency` requests of `context` tokens: the grid cell nearest it."""
        ix = self._cell(concurrency * context / self.max_kv_tokens, self.xi)
        return float(self.itl_grid[self._cell(context, self.yi), ix])

    def best_decode_thpt_per_gpu(self, itl_target_ms: float, context: float) -> float:
        iy = self._cell(context, self.yi)
        row_itl = self.itl_grid[iy]
        for ix in range(self.resolution - 1, -1, -1):
            if row_itl[ix] <= itl_target_ms:
                return float(self.thpt_grid[iy, ix])
        return float(self.thpt_grid[iy, 0])
