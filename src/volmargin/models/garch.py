"""GARCH(1,1) and GJR-GARCH(1,1,1) with Student-t innovations, estimated by the `arch` package."""

from __future__ import annotations

import numpy as np
import pandas as pd
from arch import arch_model

from volmargin.config import ARCH_BACKCAST_DAYS
from volmargin.errors import ConfigError
from volmargin.models.scale import ScaleForecaster

_SCALE = 100.0  # arch's optimiser expects returns in percent


class Garch(ScaleForecaster):
    """Zero-mean GARCH(1, o, 1)-t: o=0 is GARCH(1,1), o=1 is GJR-GARCH(1,1,1).

    Parameters are estimated at each refit; forecasts between refits run the variance recursion with
    those parameters fixed over the history up to each origin (arch's `fix` + `forecast(start=...)`).
    """

    def __init__(self, o: int = 0, dist: str = "t"):
        self.o = o
        self.dist = dist

    @property
    def name(self) -> str:  # type: ignore[override]
        return "gjr" if self.o else "garch"

    def _model(self, frame: pd.DataFrame):
        arch_dist = {"t": "t", "normal": "normal"}[self.dist]
        return arch_model(_SCALE * frame["ret"], mean="Zero", vol="GARCH", p=1, o=self.o, q=1, dist=arch_dist)

    def fit(self, train: pd.DataFrame, horizon: int = 1) -> "Garch":
        self.horizon_ = horizon
        result = self._model(train).fit(disp="off")
        self.params_ = result.params
        self.result_ = result
        self.dist_ = result.model.distribution
        self.dist_params_ = result.params[self.dist_.parameter_names()].to_numpy()
        return self

    def standardized_residuals(self, train: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.result_.std_resid)

    def _fixed_forecast(self, history: pd.DataFrame, start: pd.Timestamp, horizon: int) -> pd.DataFrame:
        fixed = self._model(history).fix(self.params_.to_numpy())
        return fixed.forecast(horizon=horizon, start=start, reindex=False).variance / _SCALE**2

    def one_day_variance(self, history: pd.DataFrame) -> pd.Series:
        return self._fixed_forecast(history, history.index[0], 1)["h.1"]

    def horizon_variance(self, history: pd.DataFrame, origins: pd.DatetimeIndex) -> np.ndarray:
        # the backcast must precede the first origin: a 30-day rolling window's read the days after it (a VaR of
        # 2020-03-10 1.5-1.8x the one of the history cut there, from the crash of 03-12; session 31's red team)
        known = history.index.get_loc(origins[0]) + 1
        if known < min(ARCH_BACKCAST_DAYS, len(history)):
            raise ConfigError(f"{self.name}: {known} days of history up to the first origin {origins[0].date()}, fewer "
                              f"than the {ARCH_BACKCAST_DAYS} arch's backcast reads, so it would read days after it; "
                              f"train on at least {ARCH_BACKCAST_DAYS} days")
        path = self._fixed_forecast(history, origins[0], self.horizon_)
        return path.loc[origins].sum(axis=1).to_numpy()
