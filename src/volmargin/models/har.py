"""Log-HAR-RV (Corsi 2009): log of future realized variance on log daily, weekly and monthly RV."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LinearRegression

from volmargin.features.realized import horizon_targets
from volmargin.models.scale import ScaleForecaster

RV_FLOOR = 1e-10  # a day with zero realized variance (a halted market) must not give log(0)


class HAR(ScaleForecaster):
    """OLS of log(mean RV over t+1..t+h) on log RV_t, log mean RV_{t-4..t}, log mean RV_{t-21..t}.

    The variance forecast corrects the log-normal bias with half the residual variance; VaR/ES come
    from a Student-t (default) fitted to the returns standardized by the in-sample fit.
    """

    name = "har"

    def __init__(self, lags: tuple[int, ...] = (1, 5, 22), dist: str = "t"):
        self.lags = lags
        self.dist = dist

    def _regressors(self, history: pd.DataFrame) -> pd.DataFrame:
        rv = history["rv"].clip(lower=RV_FLOOR)
        return pd.DataFrame(
            {f"log_rv_{lag}": np.log(rv.rolling(lag, min_periods=lag).mean()) for lag in self.lags}
        )

    def _fit_dynamics(self, train: pd.DataFrame) -> None:
        x = self._regressors(train)
        target = horizon_targets(train, self.horizon_)
        y = np.log(target["target_rv"].clip(lower=RV_FLOOR) / self.horizon_)
        rows = x.notna().all(axis=1) & y.notna()
        self.regression_ = LinearRegression().fit(x[rows].to_numpy(), y[rows].to_numpy())
        residuals = y[rows] - self.regression_.predict(x[rows].to_numpy())
        self.resid_var_ = float(residuals.var())

    def one_day_variance(self, history: pd.DataFrame) -> pd.Series:
        x = self._regressors(history)
        ready = x.notna().all(axis=1)
        path = pd.Series(np.nan, index=history.index)
        path[ready] = np.exp(self.regression_.predict(x[ready].to_numpy()) + 0.5 * self.resid_var_)
        return path

    def standardized_residuals(self, train: pd.DataFrame) -> np.ndarray:
        target = horizon_targets(train, self.horizon_)["target_ret"]
        return (target / np.sqrt(self.horizon_ * self.one_day_variance(train))).to_numpy()
