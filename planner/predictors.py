"""Load predictors (the reference's `core/load/predictors.py` behaviour): one value per interval in,
the next interval's value out. `PREDICTORS` maps `load_predictor` names to constructors.

Shared rules (every predictor): NaN counts as 0; leading zeros (an idle start) are skipped until the
first non-zero value; below a predictor's minimum number of points it returns the last value
(0 when it has none). Forecasts are clipped at 0.
- constant: the last value.
- arima: `pmdarima.auto_arima` once 5 points are in (all equal: that value); when the chosen
  order is (0, d, 0) it refits on log1p(y); later points update the model.
- kalman: `filterpy` local linear trend, F=[[1,1],[0,1]], H=[1,0], P0=1000 I, R=r,
  Q=diag(q_level, q_trend); the first point initialises the state.
- prophet: a window of `prophet_window_size` points at `interval` steps (the optional `prophet` extra).
Deterministic: the libraries are deterministic for a given series.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

from planner.config import SlaPlannerConfig


class Predictor:
    """Base: buffer with the shared NaN and leading-zero rules; `predict_next` is the last value."""

    minimum_points = 1

    def __init__(self) -> None:
        self.data: list[float] = []
        self._seen_nonzero = False

    def _accept(self, value: float) -> float | None:
        if math.isnan(value):
            value = 0.0
        if value == 0 and not self._seen_nonzero:
            return None
        if value != 0:
            self._seen_nonzero = True
        return float(value)

    def add_data_point(self, value: float) -> None:
        v = self._accept(value)
        if v is not None:
            self.data.append(v)

    def last_value(self) -> float:
        return self.data[-1] if self.data else 0.0

    def predict_next(self) -> float:
        return self.last_value()


class ConstantPredictor(Predictor):
    def __init__(self, _config: SlaPlannerConfig) -> None:
        super().__init__()


class ArimaPredictor(Predictor):
    minimum_points = 5

    def __init__(self, config: SlaPlannerConfig) -> None:
        super().__init__()
        self._log1p_requested = config.load_predictor_log1p
        self._log1p = self._log1p_requested
        self._model: Any = None
        self._pending: list[float] = []

    def add_data_point(self, value: float) -> None:
        v = self._accept(value)
        if v is not None:
            raw = max(0.0, v)
            self.data.append(raw)
            self._pending.append(raw)

    def _fit(self, series: list[float]) -> Any:
        import pmdarima  # imported here: a heavy import only runs that use ARIMA pay for

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pmdarima.auto_arima(series, suppress_warnings=True, error_action="ignore")

    def predict_next(self) -> float:
        if len(self.data) < self.minimum_points:
            return self.last_value()
        if len(set(self.data)) == 1:
            return self.data[0]
        try:
            if self._model is None:
                self._log1p = self._log1p_requested
                self._model = self._fit([math.log1p(v) for v in self.data] if self._log1p else self.data)
                order = getattr(self._model, "order", None)
                if order is not None and len(order) == 3 and order[0] == 0 and order[2] == 0 and not self._log1p:
                    self._model = self._fit([math.log1p(v) for v in self.data])
                    self._log1p = True
            elif self._pending:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    self._model.update([math.log1p(v) for v in self._pending] if self._log1p else self._pending)
            self._pending = []
            forecast = float(self._model.predict(n_periods=1)[0])
            return max(0.0, math.expm1(forecast) if self._log1p else forecast)
        except Exception:  # noqa: BLE001 - the reference falls back to the last value on any failure
            self._pending = []
            return self.last_value()


class KalmanPredictor(Predictor):
    def __init__(self, config: SlaPlannerConfig) -> None:
        super().__init__()
        import numpy as np
        from filterpy.kalman import KalmanFilter

        self.minimum_points = config.kalman_min_points
        self._log1p = config.load_predictor_log1p
        kf = KalmanFilter(dim_x=2, dim_z=1)
        kf.x = np.array([[0.0], [0.0]])
        kf.F = np.array([[1.0, 1.0], [0.0, 1.0]])
        kf.H = np.array([[1.0, 0.0]])
        kf.P *= 1000.0
        kf.R = np.array([[max(1e-9, float(config.kalman_r))]])
        kf.Q = np.array([[max(1e-12, float(config.kalman_q_level)), 0.0], [0.0, max(1e-12, float(config.kalman_q_trend))]])
        self._np = np
        self._kf = kf
        self._initialized = False
        self._cached: float | None = None

    def add_data_point(self, value: float) -> None:
        v = self._accept(value)
        if v is None:
            return
        self.data.append(v)
        z = math.log1p(max(0.0, v)) if self._log1p else v
        if not self._initialized:
            self._kf.x = self._np.array([[z], [0.0]])
            self._initialized = True
        else:
            if self._cached is None:
                self._kf.predict()
            self._kf.update(self._np.array([[z]]))
        self._cached = None

    def predict_next(self) -> float:
        if not self._initialized or len(self.data) < self.minimum_points:
            return self.last_value()
        if self._cached is None:
            self._kf.predict()
            self._cached = float(self._kf.x[0][0])
        return max(0.0, math.expm1(self._cached) if self._log1p else self._cached)


class ProphetPredictor(Predictor):
    minimum_points = 5

    def __init__(self, config: SlaPlannerConfig, interval_s: float | None = None) -> None:
        super().__init__()
        try:
            import prophet  # noqa: F401
        except ImportError:
            raise ValueError("load_predictor prophet needs the optional extra: pip install 'clustersim[prophet]'") from None
        self._log1p = config.load_predictor_log1p
        self._window = config.prophet_window_size
        self._step_s = interval_s if interval_s is not None else float(config.throughput_adjustment_interval_seconds)
        self._rows: list[dict[str, Any]] = []
        self._step = 0

    def add_data_point(self, value: float) -> None:
        v = self._accept(value)
        if v is None:
            return
        self.data.append(v)
        y = math.log1p(max(0.0, v)) if self._log1p else v
        self._rows.append({"ds": self._step * self._step_s, "y": y})  # seconds after 2024-01-01 (the reference's base)
        self._step += 1
        self._rows = self._rows[-self._window:]

    def last_value(self) -> float:
        """The last point as the window holds it (in log1p mode the round trip's rounding, as the reference)."""
        if not self._rows:
            return 0.0
        y = float(self._rows[-1]["y"])
        return max(0.0, math.expm1(y)) if self._log1p else y

    def predict_next(self) -> float:
        if len(self._rows) < self.minimum_points:
            return self.last_value()
        import pandas as pd
        from prophet import Prophet

        start = pd.Timestamp(2024, 1, 1)
        df = pd.DataFrame({"ds": [start + pd.Timedelta(seconds=r["ds"]) for r in self._rows],
                           "y": [r["y"] for r in self._rows]})
        model = Prophet()
        model.fit(df)
        future = pd.DataFrame({"ds": [start + pd.Timedelta(seconds=self._step * self._step_s)]})
        yhat = float(model.predict(future)["yhat"].iloc[0])
        return max(0.0, math.expm1(yhat) if self._log1p else yhat)


PREDICTORS: dict[str, Callable[[SlaPlannerConfig], Predictor]] = {
    "constant": ConstantPredictor, "arima": ArimaPredictor, "kalman": KalmanPredictor, "prophet": ProphetPredictor,
}
"""`load_predictor` name -> constructor."""
