"""Gradient-boosted trees (LightGBM) on the scale-free features of `volmargin.features.learned`, one
model for all assets.

- Variance: by default (`variance_loss='gamma'`) boosting of the variance ratio RV / exp(level_t + log h)
  under the gamma deviance with a log link, which is QLIKE (Patton 2011) up to a factor: the trees learn
  log E[RV | x] directly, conditionally unbiased, with no normality assumption on log RV. That matters
  most on thin, jumpy markets, where E[log RV] sits far below log E[RV]. `variance_loss='l2'` fits
  log RV by least squares instead and adds Duan's (1983) smearing factor (one number for all rows).
- Tails: quantile boosting of the standardized loss, -z for longs and +z for shorts, with z = r_std /
  exp(m / 2) the h-day return over the model's own in-sample volatility forecast; one model per side and
  level, with fewer trees (`tail_estimators`). Quantiles are made non-crossing by a cumulative maximum
  over ascending levels.
- ES = VaR x ES/VaR ratio of the training standardized losses: once divided by the forecast
  volatility, the losses are close to identically distributed, so their empirical tail's ES/VaR
  (at least 1) carries over to every origin.
VaR/ES in return units are the standardized values times the forecast volatility. LightGBM's histogram
trees fit the 129-asset panel in seconds on one thread (`deterministic=True`, so refits repeat exactly)
and export to ONNX through onnxmltools' converter registered with skl2onnx (`volmargin.export`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from volmargin.errors import ConfigError
from volmargin.features.learned import (
    FEATURE_NAMES, FeatureSpec, check_levels, feature_frame, horizon_level, require_levels, standardize,
    training_frame,
)
from volmargin.models.base import SIDES, Forecast, GlobalForecaster
from volmargin.models.distributions import empirical_tail

VARIANCE_LOSSES = ("gamma", "l2")


class GBMForecaster(GlobalForecaster):
    """Global boosted-trees forecaster of the h-day variance and per-side VaR/ES (see module docstring)."""

    name = "gbm"

    def __init__(
        self,
        levels: tuple[float, ...] = (0.975, 0.99),
        n_estimators: int = 300,
        tail_estimators: int = 100,
        num_leaves: int = 15,
        learning_rate: float = 0.05,
        subsample: float = 0.5,
        max_features: float = 0.5,
        min_samples_leaf: int = 100,
        variance_loss: str = "gamma",
        level_days: int = 66,
        random_state: int = 0,
    ):
        self.levels = levels
        self.n_estimators = n_estimators
        self.tail_estimators = tail_estimators
        self.num_leaves = num_leaves
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.variance_loss = variance_loss
        self.level_days = level_days
        self.random_state = random_state

    def _booster(self, n_estimators: int, objective: str, **loss):
        from lightgbm import LGBMRegressor

        return LGBMRegressor(
            objective=objective, n_estimators=n_estimators, num_leaves=self.num_leaves,
            learning_rate=self.learning_rate, subsample=self.subsample, subsample_freq=1,
            colsample_bytree=self.max_features, min_child_samples=self.min_samples_leaf,
            random_state=self.random_state, deterministic=True, n_jobs=1, verbose=-1, **loss,
        )

    def _quantile_fit(self, x: np.ndarray, loss: np.ndarray, level: float):
        return self._booster(self.tail_estimators, "quantile", alpha=level).fit(x, loss)

    def _variance_fit(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Fit the variance booster on y = log relative RV; returns the in-sample log forecasts."""
        if self.variance_loss not in VARIANCE_LOSSES:
            raise ConfigError(f"gbm.variance_loss: {self.variance_loss!r}; choose from {', '.join(VARIANCE_LOSSES)}")
        if self.variance_loss == "gamma":
            self.variance_model_ = self._booster(self.n_estimators, "gamma").fit(x, np.exp(y))
        else:
            self.variance_model_ = self._booster(self.n_estimators, "regression").fit(x, y)
        return self._log_variance(x)

    def _log_variance(self, x: np.ndarray) -> np.ndarray:
        predicted = self.variance_model_.predict(x)
        return np.log(predicted) if self.variance_loss == "gamma" else predicted

    def fit_panel(self, trains: dict[str, pd.DataFrame], horizon: int = 1) -> "GBMForecaster":
        self.levels_ = check_levels(self.levels)
        self.horizon_ = horizon
        self.feature_spec_ = FeatureSpec(level_days=self.level_days)
        rows = pd.concat([training_frame(daily, horizon, self.feature_spec_) for daily in trains.values()])
        self.scaler_ = StandardScaler().fit(rows[list(FEATURE_NAMES)].to_numpy())
        rows = rows.dropna(subset=["y_var", "r_std"])
        x = standardize(self.scaler_, rows[list(FEATURE_NAMES)].to_numpy())
        y = rows["y_var"].to_numpy()
        fitted = self._variance_fit(x, y)
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
        columns = [self._log_variance(x) + self.smearing_]
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
