"""Gradient-boosted trees (LightGBM) on the scale-free features of `volmargin.features.learned`, one
model for all assets.

- Variance: by default (`variance_loss='l2'`) least-squares boosting of y_var = log(h-day RV) - (level_t
  + log h), plus Duan's (1983) smearing factor log mean(exp(residual)) on the training rows, which turns
  E[log RV] into log E[RV] without assuming normal residuals. With `smearing='conditional'` (the default,
  chosen on unseen-asset folds: 129 assets trained to 2021-09-30, QLIKE / HAR 1.060 -> 1.049 and median
  variance / HAR's 0.957 -> 0.989 over 2021-Q4; neutral on the 29 large caps over 2021) the factor
  depends on the row: log E[exp(e) | x], boosted (gamma deviance, log link, few trees, large leaves) on the
  *out-of-fold* residuals e of boosters that never saw the row's asset. A thin, jumpy market's log RV is
  more dispersed around its mean, so its mean RV sits further above exp(mean log RV) than a large cap's,
  and the residuals of a model applied to an asset it never saw are wider still: one global factor, set
  mostly by the large caps' many rows, under-forecasts the variance of a new alt.
  `variance_loss='gamma'` boosts the variance ratio under the gamma deviance with a log link (QLIKE up
  to a factor, conditionally unbiased by construction); on unseen-asset folds of the 2021 validation
  year it lost to the log fit (QLIKE 0.957 vs 0.918 of HAR's): the deviance is dominated by a few jump
  days, the log fit is robust to them.
- The variance booster's size (`n_estimators=150`, from 300), chosen in session 10 on the same two
  unseen-asset selection runs as the tails below, from a grid of leaf sizes (300, 1,000 rows), leaves per
  tree (7, 31; `variance_num_leaves`), trees (150, 600) and sampling (0.8): QLIKE / HAR 1.031 -> 1.023
  (129 assets, 2021-Q4) and 0.919 -> 0.915 (29 large caps, 2021); presumably fewer trees learn less of
  the training assets' own idiosyncrasies.
- Tails: quantile boosting of the standardized loss, -z for longs and +z for shorts, with z = r_std /
  exp(m / 2) the h-day return over the model's own *out-of-fold* volatility forecast (by boosters that
  never saw the row's asset: in-sample forecasts sit too close to the realised days, which made the tails
  too thin on new assets); one model per side and level, with fewer trees (`tail_estimators`) and large
  leaves (`tail_min_samples_leaf`: a leaf's 99% quantile needs rows enough for ten exceedances; on unseen
  assets of the validation year 100-row leaves gave 1.9% long exceptions at 99%, 1,000-row leaves 1.4%;
  3,000-row leaves, chosen in session 9 on the same two unseen-asset selection runs as the calibration below,
  gave 1.52% / 0.88% -> 1.19% / 0.86% long / short (129 assets, 2021-Q4) and 1.22% / 1.10% -> 1.05% / 0.98%
  (29 large caps, 2021): smaller leaves let the 99% quantile follow the training window's momentum, e.g. a
  thin long tail after up-days, which a crash out of sample breaches on many assets at once).
  Quantiles are made non-crossing by a cumulative maximum over ascending levels.
- Tail calibration (`tail_calibration=True`, the default): each tail booster is scaled by the factor (at
  least 1) that makes a booster fitted without an asset group exceeded on that group's rows as often as its
  level says (split-conformal by asset), chosen on unseen-asset folds: 99% exceptions long / short 1.72% /
  1.08% -> 1.52% / 0.88% (129 assets, 2021-Q4) and 1.35% / 1.24% -> 1.22% / 1.10% (29 large caps, 2021).
  `tail_calibration_days=N` calibrates out of time as well: boosters fitted on the rows known N days before
  the training end, scored on the days after; it measures the regime of those last N days (2021: long
  1.22% -> 1.35% / 1.30% with 90 / 180 days), so it stays off (0).
- ES = VaR x ES/VaR ratio of the training standardized losses: once divided by the forecast
  volatility, the losses are close to identically distributed, so their empirical tail's ES/VaR
  (at least 1) carries over to every origin.
- Liquidity (`liquidity=True`, the default): the trees also read the log of the asset's mean daily traded
  value over 90 days (`volmargin_serving.features`), chosen on unseen-asset folds: QLIKE / HAR 1.049 ->
  1.031 (129 assets, 2021-Q4) and 0.920 -> 0.919 (29 large caps, 2021). A thin market jumps more than its
  own recent variance says.
VaR/ES in return units are the standardized values times the forecast volatility. LightGBM's histogram
trees fit the 129-asset panel in seconds on one thread (`deterministic=True`, so refits repeat exactly)
and export to ONNX through onnxmltools' converter registered with skl2onnx (`volmargin.export`).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from volmargin.data.loader import with_instruments_together
from volmargin.errors import ConfigError
from volmargin.features.learned import (
    FEATURE_NAMES, FeatureSpec, check_levels, feature_frame, feature_names, horizon_level, require_levels,
    standardize, training_frame,
)
from volmargin.models.base import SIDES, Forecast, GlobalForecaster
from volmargin.models.distributions import coverage_factor, empirical_tail

VARIANCE_LOSSES = ("gamma", "l2")
SMEARINGS = ("global", "conditional")
_THRESHOLDS = re.compile(r"^threshold=(.*)$", re.MULTILINE)
_LEAF_VALUES = re.compile(r"^leaf_value=(.*)$", re.MULTILINE)
_TREE_SIZES = re.compile(r"^tree_sizes=.*\n", re.MULTILINE)


def float32_splits(regressor):
    """The fitted LightGBM regressor with every split threshold t replaced by the largest float32 <= t.
    Features reach the trees as float32 (`standardize`, in training and in serving), and for a
    float32 x, x <= t exactly when x <= that float32, so the trees decide as before while ONNX's float32
    thresholds are now exact: without it a feature between t and float32(t) took the other branch in the
    exported graph (an export failed its parity check by 0.8% on one window of SOL)."""
    from lightgbm import Booster

    def rounded_down(match: re.Match) -> str:
        values = np.array(match.group(1).split(), dtype=np.float64)
        down = values.astype(np.float32)
        down = np.where(down.astype(np.float64) > values, np.nextafter(down, np.float32(-np.inf)), down)
        return "threshold=" + " ".join(repr(float(v)) for v in down)

    text = _THRESHOLDS.sub(rounded_down, regressor.booster_.model_to_string())
    text = _TREE_SIZES.sub("", text)  # the byte sizes of the trees changed: LightGBM then reads tree by tree
    regressor._Booster = Booster(model_str=text)
    return regressor


def scaled_leaves(regressor, factor: float):
    """The fitted LightGBM regressor predicting `factor` x what it predicted: every leaf value times the factor
    (a booster's prediction is the sum of its leaves, the initial score folded into the first tree), so the
    exported graph needs no extra node."""
    from lightgbm import Booster

    def scaled(match: re.Match) -> str:
        values = np.array(match.group(1).split(), dtype=np.float64) * factor
        return "leaf_value=" + " ".join(repr(float(v)) for v in values)

    text = _TREE_SIZES.sub("", _LEAF_VALUES.sub(scaled, regressor.booster_.model_to_string()))
    regressor._Booster = Booster(model_str=text)
    return regressor


class GBMForecaster(GlobalForecaster):
    """Global boosted-trees forecaster of the h-day variance and per-side VaR/ES (see module docstring)."""

    name = "gbm"

    def __init__(
        self,
        levels: tuple[float, ...] = (0.975, 0.99),
        n_estimators: int = 150,
        tail_estimators: int = 100,
        num_leaves: int = 15,
        learning_rate: float = 0.05,
        subsample: float = 0.5,
        max_features: float = 0.5,
        min_samples_leaf: int = 100,
        variance_num_leaves: int | None = None,
        variance_loss: str = "l2",
        tail_folds: int = 4,
        weight_assets: bool = False,
        tail_min_samples_leaf: int = 3000,
        drop_features: tuple[str, ...] = (),
        tail_drop_features: tuple[str, ...] = (),
        monotone: tuple[str, ...] = (),
        level_days: int = 66,
        iv_features: bool = False,
        liquidity: bool = True,
        tail_calibration: bool = True,
        tail_calibration_days: int = 0,
        smearing: str = "conditional",
        smearing_estimators: int = 50,
        smearing_min_samples_leaf: int = 5000,
        random_state: int = 0,
    ):
        self.levels = levels
        self.n_estimators = n_estimators
        self.tail_estimators = tail_estimators
        self.num_leaves = num_leaves
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf  # the variance booster's leaves (tail/smearing: their own)
        self.variance_num_leaves = variance_num_leaves  # None: num_leaves; the tail/smearing boosters keep num_leaves
        self.variance_loss = variance_loss
        self.tail_folds = tail_folds
        self.weight_assets = weight_assets
        self.tail_min_samples_leaf = tail_min_samples_leaf
        self.drop_features = drop_features
        self.tail_drop_features = tail_drop_features  # features the tail boosters do not read (trials)
        self.monotone = monotone  # features the variance forecast may only rise with (LightGBM constraints)
        self.level_days = level_days
        self.iv_features = iv_features  # DVOL features (volmargin_serving.features); NaN-tolerant where absent
        self.liquidity = liquidity  # read the liquidity feature (log mean traded value)
        self.tail_calibration = tail_calibration  # scale each tail booster to its out-of-fold coverage
        self.tail_calibration_days = tail_calibration_days  # > 0: calibrate out of time too, on the last N days
        self.smearing = smearing
        self.smearing_estimators = smearing_estimators
        self.smearing_min_samples_leaf = smearing_min_samples_leaf
        self.random_state = random_state

    def _booster(self, n_estimators: int, objective: str, min_leaf: int | None = None,
                 num_leaves: int | None = None, **loss):
        from lightgbm import LGBMRegressor

        return LGBMRegressor(
            objective=objective, n_estimators=n_estimators, num_leaves=num_leaves or self.num_leaves,
            learning_rate=self.learning_rate, subsample=self.subsample, subsample_freq=1,
            colsample_bytree=self.max_features, min_child_samples=min_leaf or self.min_samples_leaf,
            random_state=self.random_state, deterministic=True, n_jobs=1, verbose=-1, **loss,
        )

    def _quantile_fit(self, x: np.ndarray, loss: np.ndarray, level: float, weight: np.ndarray | None = None):
        """A tail booster; the `tail_drop_features` are held at 0 while it learns, so no tree splits on them
        and it predicts the same from the full features (in serving too)."""
        dropped = [self.feature_names_.index(name) for name in self.tail_drop_features]
        if dropped:
            x = x.copy()
            x[:, dropped] = 0.0
        return float32_splits(self._booster(self.tail_estimators, "quantile", self.tail_min_samples_leaf,
                                            alpha=level).fit(x, loss, sample_weight=weight))

    def _inputs(self, frame: pd.DataFrame) -> np.ndarray:
        """Standardized features; `drop_features` held at the training mean (0), so no tree splits on them
        and the exported graph, which receives every feature, predicts the same (ablations only)."""
        names = getattr(self, "feature_names_", FEATURE_NAMES)  # models fitted before the IV features
        x = standardize(self.scaler_, frame[list(names)].to_numpy())
        x[:, [names.index(name) for name in self.drop_features]] = 0.0
        return x

    def _variance_booster(self, x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None):
        """The variance booster fitted on y = log relative RV (see the module docstring)."""
        objective, target = ("gamma", np.exp(y)) if self.variance_loss == "gamma" else ("regression", y)
        rising = {"monotone_constraints": [int(name in self.monotone) for name in self.feature_names_],
                  "monotone_constraints_method": "intermediate"} if self.monotone else {}
        booster = self._booster(self.n_estimators, objective, num_leaves=self.variance_num_leaves, **rising)
        return float32_splits(booster.fit(x, target, sample_weight=weight))

    def _row_weights(self, groups: np.ndarray) -> np.ndarray | None:
        """With `weight_assets`, every asset weighs the same in total (a two-month-old listing as much as
        BTC's eight years), normalised to a mean of 1; else None (every row counts once)."""
        if not self.weight_assets:
            return None
        _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
        weight = 1.0 / counts[inverse]
        return weight / weight.mean()

    def _smearing_fit(self, x: np.ndarray, residual: np.ndarray, weight: np.ndarray | None):
        """The conditional smearing booster: E[exp(residual) | x] under the gamma deviance (log link)."""
        return float32_splits(self._booster(self.smearing_estimators, "gamma", self.smearing_min_samples_leaf).fit(
            x, np.exp(residual), sample_weight=weight))

    def _log_smearing(self, x: np.ndarray) -> np.ndarray:
        """log E[exp(e) | x] per row: the global factor, or the conditional booster's."""
        if getattr(self, "smearing_model_", None) is None:  # global, and models fitted before the option
            return np.full(len(x), self.smearing_)
        return np.log(self.smearing_model_.predict(x))

    def _log_variance(self, x: np.ndarray, booster=None) -> np.ndarray:
        predicted = (booster or self.variance_model_).predict(x)
        return np.log(predicted) if self.variance_loss == "gamma" else predicted

    def _folds(self, groups: np.ndarray) -> np.ndarray:
        """Each row's fold: `tail_folds` groups of assets, dealt by a seeded permutation, one coin's pairs in the
        fold of its first name (`data.instrument`): out of fold is out of that coin."""
        names = np.unique(groups)
        dealt = dict(zip(map(str, names), np.random.default_rng(self.random_state).permutation(len(names))
                         % self.tail_folds))
        deal = with_instruments_together(dealt)
        return np.array([deal[str(g)] for g in groups])

    def _calibration_rows(self, dates: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray]:
        """Rows the calibration boosters are fitted on, and rows they are scored on. Out of asset only
        (`tail_calibration_days=0`): every row for both. Out of time too: fitted on rows whose target is
        known by the cut (the last origin minus `tail_calibration_days`), scored on the origins after it,
        the gap between a model's training end and the days it is applied to."""
        if not self.tail_calibration_days:
            every = np.ones(len(dates), dtype=bool)
            return every, every
        cut = dates.max() - pd.Timedelta(days=self.tail_calibration_days)
        fit, scored = np.asarray(dates + pd.Timedelta(days=self.horizon_) <= cut), np.asarray(dates > cut)
        if self.tail_calibration_days < 0 or not fit.any() or not scored.any():
            raise ConfigError(f"gbm.tail_calibration_days: {self.tail_calibration_days} leaves no training rows "
                              f"before or after the calibration cut {cut.date()}; use 0 or fewer days than the window")
        return fit, scored

    def _standardized_losses(self, x: np.ndarray, y: np.ndarray, r_std: np.ndarray, groups: np.ndarray,
                             weight: np.ndarray | None, fit: np.ndarray | None = None) -> tuple[dict, object]:
        """Per side, the standardized losses of every row (-z for longs, +z for shorts) with z the h-day
        return over the out-of-fold volatility forecast (smearing included) of boosters fitted on the rows
        in `fit` only (all rows by default); and the conditional smearing booster (None for global)."""
        fit = np.ones(len(y), dtype=bool) if fit is None else fit
        fitted = self._out_of_fold(x, y, groups, weight, fit)
        smearing = None
        if self.smearing == "conditional":
            smearing = self._smearing_fit(x[fit], (y - fitted)[fit], None if weight is None else weight[fit])
            log_smearing = np.log(smearing.predict(x))
        else:
            log_smearing = np.full(len(x), self.smearing_)
        z = r_std * np.exp(-0.5 * (fitted + log_smearing))
        return {"long": -z, "short": z}, smearing

    def _calibrate_tails(self, x: np.ndarray, y: np.ndarray, r_std: np.ndarray, losses: dict, groups: np.ndarray,
                         dates: pd.DatetimeIndex, weight: np.ndarray | None) -> dict:
        """Scale each tail booster so that, fitted without an asset group (and, with `tail_calibration_days`,
        before the calibration cut), it is exceeded on that group's (later) rows as often as its level
        says (split-conformal, by asset and time): in-sample quantile boosters fit the training days'
        extremes, and a new asset breaches them more often. Returns the factors."""
        if self.tail_folds < 2 or len(np.unique(groups)) < 2:
            return {side: [1.0] * len(self.levels_) for side in SIDES}
        fit, scored = self._calibration_rows(dates)
        if self.tail_calibration_days:  # the volatility forecasts that standardize the losses: as of the cut too
            losses, _ = self._standardized_losses(x, y, r_std, groups, weight, fit)
        fold = self._folds(groups)
        factors = {side: [] for side in SIDES}
        for side in SIDES:
            for j, level in enumerate(self.levels_):
                held_out_var = np.full(len(x), np.nan)  # each row's VaR by a booster that never saw its asset
                for k in np.unique(fold):
                    train, held = fit & (fold != k), scored & (fold == k)
                    if not train.any() or not held.any():
                        continue
                    part = None if weight is None else weight[train]
                    held_out_var[held] = self._quantile_fit(x[train], losses[side][train], level, part).predict(x[held])
                factors[side].append(coverage_factor(losses[side], held_out_var, level))
                self.quantile_models_[side][j] = scaled_leaves(self.quantile_models_[side][j], factors[side][-1])
        return factors

    def _out_of_fold(self, x: np.ndarray, y: np.ndarray, groups: np.ndarray, weight: np.ndarray | None,
                     fit: np.ndarray) -> np.ndarray:
        """Log variance forecasts of each training row by a booster that never saw its asset (`tail_folds`
        asset groups), fitted on the rows in `fit`. The tail models learn the standardized loss from these:
        in-sample forecasts fit the training days too well, so their standardized losses are thinner-tailed
        than any new day's."""
        if self.tail_folds < 2 or len(np.unique(groups)) < 2:
            if fit.all():
                return self._log_variance(x)
            part = None if weight is None else weight[fit]
            return self._log_variance(x, self._variance_booster(x[fit], y[fit], part))
        fold = self._folds(groups)
        fitted = np.empty(len(y))
        for k in np.unique(fold):
            held, train = fold == k, fit & (fold != k)
            part = None if weight is None else weight[train]
            fitted[held] = self._log_variance(x[held], self._variance_booster(x[train], y[train], part))
        return fitted

    def fit_panel(self, trains: dict[str, pd.DataFrame], horizon: int = 1) -> "GBMForecaster":
        self.levels_ = check_levels(self.levels)
        self.horizon_ = horizon
        self.feature_spec_ = FeatureSpec(level_days=self.level_days)
        self.feature_names_ = feature_names(self.iv_features, self.liquidity)
        rows = pd.concat([training_frame(daily, horizon, self.feature_spec_, self.iv_features).assign(asset=asset)
                          for asset, daily in trains.items()])
        self.scaler_ = StandardScaler().fit(rows[list(self.feature_names_)].to_numpy())
        rows = rows.dropna(subset=["y_var", "r_std"])
        named = set(self.drop_features) | set(self.tail_drop_features) | set(self.monotone)
        unknown = named - set(self.feature_names_)
        if unknown:
            raise ConfigError(f"gbm.drop_features / tail_drop_features / monotone: unknown {sorted(unknown)}; "
                              f"features are {', '.join(self.feature_names_)}")
        x = self._inputs(rows)
        y = rows["y_var"].to_numpy()
        if self.variance_loss not in VARIANCE_LOSSES:
            raise ConfigError(f"gbm.variance_loss: {self.variance_loss!r}; choose from {', '.join(VARIANCE_LOSSES)}")
        groups = rows["asset"].to_numpy()
        weight = self._row_weights(groups)
        if self.smearing not in SMEARINGS:
            raise ConfigError(f"gbm.smearing: {self.smearing!r}; choose from {', '.join(SMEARINGS)}")
        self.variance_model_ = self._variance_booster(x, y, weight)
        self.smearing_ = float(np.log(np.average(np.exp(y - self._log_variance(x)), weights=weight)))
        r_std = rows["r_std"].to_numpy()
        losses, self.smearing_model_ = self._standardized_losses(x, y, r_std, groups, weight)
        z = losses["short"]
        self.quantile_models_ = {side: [self._quantile_fit(x, losses[side], level, weight) for level in self.levels_]
                                 for side in SIDES}
        if self.tail_calibration:
            self.tail_factors_ = self._calibrate_tails(x, y, r_std, losses, groups, rows.index, weight)
        var, es = empirical_tail(z, self.levels_)
        self.es_ratio_ = {side: np.maximum(es[side] / var[side], 1.0) for side in SIDES}
        return self

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        """Outputs in the layout of `volmargin.models.neural.output_columns` from standardized features
        (n, n_features): log variance relative to the level (smearing included), then per side the
        standardized VaR (non-crossing over ascending levels) and ES per level. The ONNX export
        reproduces exactly this."""
        columns = [self._log_variance(x) + self._log_smearing(x)]
        for side in SIDES:
            q = np.column_stack([model.predict(x) for model in self.quantile_models_[side]])
            var = np.maximum.accumulate(q, axis=1)
            columns += [var, np.maximum(var * self.es_ratio_[side], var)]
        return np.column_stack(columns)

    def forecast(self, history: pd.DataFrame, origins: pd.DatetimeIndex, levels: tuple[float, ...]) -> Forecast:
        require_levels(self.levels_, levels)
        frame = feature_frame(history, self.feature_spec_, self.iv_features).loc[origins]
        raw = self.predict_raw(self._inputs(frame))
        return Forecast.from_raw(origins, self.horizon_, raw, horizon_level(frame["level"].to_numpy(), self.horizon_),
                                 self.levels_)
