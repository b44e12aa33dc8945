"""Gradient-boosted trees on the scale-free features of `volmargin.features.learned`, one model for all assets.

- Variance: squared-error boosting of y_var = log(h-day RV) - (level_t + log h). A log-scale fit
  predicts E[log RV]; Duan's (1983) smearing factor log mean(exp(residual)) on the training rows turns
  it into log E[RV] without assuming normal residuals.
- Tails: quantile boosting (`loss='quantile'`) of the standardized loss, -z for longs and +z for
  shorts, with z = r_std / exp(m / 2) the h-day return over the model's own in-sample volatility
  forecast; one model per side and level, with fewer trees (`tail_estimators`) because the standardized
  tail varies much less than the variance. Quantiles are made non-crossing by a cumulative maximum
  over ascending levels.
- ES = VaR x ES/VaR ratio of the training standardized losses: once divided by the forecast
  volatility, the losses are close to identically distributed, so their empirical tail's ES/VaR
  (at least 1) carries over to every origin. This avoids a second, noisier tail-mean regression.
VaR/ES in return units are the standardized values times the forecast volatility. Speed: row
subsampling and half the features per split (each tree sorts only its in-bag rows); a refit starts
from scratch, since trees cannot be updated on a moved training window.

scikit-learn's `GradientBoostingRegressor` is used rather than `HistGradientBoostingRegressor`
because the latter does not convert to ONNX here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.preprocessing import StandardScaler

from volmargin.features.learned import (
    FEATURE_NAMES, FeatureSpec, check_levels, feature_frame, horizon_level, require_levels, standardize,
    training_frame,
)
from volmargin.models.base import SIDES, Forecast, GlobalForecaster
from volmargin.models.distributions import empirical_tail


class GBMForecaster(GlobalForecaster):
    """Global boosted-trees forecaster of the h-day variance and per-side VaR/ES (see module docstring)."""

    name = "gbm"

    def __init__(
        self,
        levels: tuple[float, ...] = (0.975, 0.99),
        n_estimators: int = 200,
        tail_estimators: int = 100,
        max_depth: int = 3,
        learning_rate: float = 0.05,
        subsample: float = 0.5,
        max_features: float = 0.5,
        min_samples_leaf: int = 50,
        level_days: int = 66,
        random_state: int = 0,
    ):
        self.levels = levels
        self.n_estimators = n_estimators
        self.tail_estimators = tail_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.level_days = level_days
        self.random_state = random_state

    def _booster(self, n_estimators: int, **loss) -> GradientBoostingRegressor:
        return GradientBoostingRegressor(
            n_estimators=n_estimators, max_depth=self.max_depth, learning_rate=self.learning_rate,
            subsample=self.subsample, max_features=self.max_features, min_samples_leaf=self.min_samples_leaf,
            random_state=self.random_state, **loss,
        )

    def _quantile_fit(self, x: np.ndarray, loss: np.ndarray, level: float) -> GradientBoostingRegressor:
        return self._booster(self.tail_estimators, loss="quantile", alpha=level).fit(x, loss)

    def fit_panel(self, trains: dict[str, pd.DataFrame], horizon: int = 1) -> "GBMForecaster":
        self.levels_ = check_levels(self.levels)
        self.horizon_ = horizon
        self.feature_spec_ = FeatureSpec(level_days=self.level_days)
        rows = pd.concat([training_frame(daily, horizon, self.feature_spec_) for daily in trains.values()])
        self.scaler_ = StandardScaler().fit(rows[list(FEATURE_NAMES)].to_numpy())
        rows = rows.dropna(subset=["y_var", "r_std"])
        x = standardize(self.scaler_, rows[list(FEATURE_NAMES)].to_numpy())
        y = rows["y_var"].to_numpy()
        self.variance_model_ = self._booster(self.n_estimators, loss="squared_error").fit(x, y)
        fitted = self.variance_model_.predict(x)
        self.smearing_ = float(np.log(np.mean(np.exp(y - fitted))))
        z = rows["r_std"].to_numpy() * np.exp(-0.5 * (fitted + self.smearing_))
        losses = {"long": -z, "short": z}
        self.quantile_models_ = {side: [self._quantile_fit(x, losses[side], level) for level in self.levels_]
                                 for side in SIDES}
        var, es = empirical_tail(z, self.levels_)
        self.es_ratio_ = {side: np.maximum(es[side] / var[side], 1.0) for side in SIDES}
        return self

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        """Outputs in the layout of `volmargin.models.neural.output_columns` from standardized features
        (n, n_features): log variance relative to the level (smearing included), then per side the
        standardized VaR (non-crossing over ascending levels) and ES per level. The ONNX export
        reproduces exactly this."""
        columns = [self.variance_model_.predict(x) + self.smearing_]
        for side in SIDES:
            q = np.column_stack([model.predict(x) for model in self.quantile_models_[side]])
            var = np.maximum.accumulate(q, axis=1)
            columns += [var, np.maximum(var * self.es_ratio_[side], var)]
        return np.column_stack(columns)

    def forecast(self, history: pd.DataFrame, origins: pd.DatetimeIndex, levels: tuple[float, ...]) -> Forecast:
        require_levels(self.levels_, levels)
        frame = feature_frame(history, self.feature_spec_).loc[origins]
        raw = self.predict_raw(standardize(self.scaler_, frame[list(FEATURE_NAMES)].to_numpy()))
        return Forecast.from_raw(origins, self.horizon_, raw, horizon_level(frame["level"].to_numpy(), self.horizon_),
                                 self.levels_)
