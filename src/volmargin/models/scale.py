"""Location-scale baselines: a variance process times a standardized distribution.

Composition as in `arch`: each model supplies its variance dynamics; the distribution of the
standardized residuals (Normal, Student-t fitted by MLE, or their empirical law for FHS) turns the
variance into VaR and ES for both sides. Multi-day horizons scale the one-day variance by h unless a
model forecasts the path itself (GARCH); VaR/ES then use the one-day standardized law (an
approximation for h > 1).
"""

from __future__ import annotations

from abc import abstractmethod

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from volmargin.errors import ConfigError
from volmargin.models.base import Forecast, Forecaster
from volmargin.models.distributions import empirical_tail, fit_params, make_distribution, parametric_tail


class ScaleForecaster(Forecaster):
    """Base for models whose forecast is variance x standardized loss quantiles."""

    dist: str = "t"

    @abstractmethod
    def one_day_variance(self, history: pd.DataFrame) -> pd.Series:
        """Causal path: the value at day t is the variance forecast for day t+1 made at the end of t."""

    def _fit_dynamics(self, train: pd.DataFrame) -> None:
        """Estimate the variance process (nothing to estimate by default)."""

    def standardized_residuals(self, train: pd.DataFrame) -> np.ndarray:
        prior = self.one_day_variance(train).shift(1)
        return (train["ret"] / np.sqrt(prior)).to_numpy()[1:]

    def horizon_variance(self, history: pd.DataFrame, origins: pd.DatetimeIndex) -> np.ndarray:
        return self.horizon_ * self.one_day_variance(history).loc[origins].to_numpy()

    def fit(self, train: pd.DataFrame, horizon: int = 1) -> "ScaleForecaster":
        self.horizon_ = horizon
        self._fit_dynamics(train)
        self.dist_ = make_distribution(self.dist)
        self.dist_params_ = fit_params(self.dist_, self.standardized_residuals(train))
        return self

    def standardized_tail(self, levels: tuple[float, ...]):
        return parametric_tail(self.dist_, self.dist_params_, levels)

    def forecast(self, history: pd.DataFrame, origins: pd.DatetimeIndex, levels: tuple[float, ...]) -> Forecast:
        variance = self.horizon_variance(history, origins)
        std_var, std_es = self.standardized_tail(levels)
        return Forecast.from_scale(origins, self.horizon_, variance, levels, std_var, std_es)


class HistoricalVolatility(ScaleForecaster):
    """Zero-mean rolling variance of the last `window` daily returns (including the origin day)."""

    name = "hist"

    def __init__(self, window: int = 30, dist: str = "t"):
        self.window = window
        self.dist = dist

    def one_day_variance(self, history: pd.DataFrame) -> pd.Series:
        return (history["ret"] ** 2).rolling(self.window, min_periods=self.window).mean()


class EWMA(ScaleForecaster):
    """RiskMetrics exponentially weighted variance: s2_{t+1} = lam * s2_t + (1 - lam) * r_t^2."""

    name = "ewma"

    def __init__(self, lam: float = 0.94, dist: str = "t", init_days: int = 30):
        self.lam = lam
        self.dist = dist
        self.init_days = init_days

    def one_day_variance(self, history: pd.DataFrame) -> pd.Series:
        if not 0.0 < self.lam < 1.0:
            raise ConfigError(f"EWMA lam must be in (0, 1), got {self.lam}")
        r2 = history["ret"].to_numpy() ** 2
        seed = r2[: self.init_days].mean()  # the first days only, so the start never sees the future
        path, _ = lfilter([1 - self.lam], [1, -self.lam], r2, zi=[self.lam * seed])
        return pd.Series(path, index=history.index)


class FilteredHistoricalSimulation(ScaleForecaster):
    """FHS (Barone-Adesi et al. 1999): the empirical law of filtered standardized residuals, rescaled by
    the filter's current variance. `filter` is 'ewma' or 'gjr' (GJR-GARCH-t from arch)."""

    name = "fhs"

    def __init__(self, filter: str = "ewma", lam: float = 0.94):
        self.filter = filter
        self.lam = lam

    def _make_filter(self) -> ScaleForecaster:
        from volmargin.models.garch import Garch

        if self.filter == "ewma":
            return EWMA(lam=self.lam)
        if self.filter == "gjr":
            return Garch(o=1)
        raise ConfigError(f"unknown FHS filter {self.filter!r}; expected 'ewma' or 'gjr'")

    def fit(self, train: pd.DataFrame, horizon: int = 1) -> "FilteredHistoricalSimulation":
        self.horizon_ = horizon
        self.filter_ = self._make_filter().fit(train, horizon)
        self.residuals_ = self.filter_.standardized_residuals(train)
        return self

    def one_day_variance(self, history: pd.DataFrame) -> pd.Series:
        return self.filter_.one_day_variance(history)

    def horizon_variance(self, history: pd.DataFrame, origins: pd.DatetimeIndex) -> np.ndarray:
        return self.filter_.horizon_variance(history, origins)

    def standardized_tail(self, levels: tuple[float, ...]):
        return empirical_tail(self.residuals_, levels)
