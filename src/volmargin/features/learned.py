"""Scale-free daily features and targets for the learned (global) forecasters: pandas wrappers.

The features themselves are computed by `volmargin_serving.features` (plain numpy), the one
implementation that training and the serving runtime share, so the two cannot drift; see that module
for the list. This module adds the training side: feature and target frames on a daily index, and
the level checks of the tail models.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler
from volmargin_serving import features as core
from volmargin_serving.features import (
    CORE_COLUMNS, FEATURE_NAMES, INPUT_COLUMNS, IV_FEATURE_NAMES, FeatureSpec, compute_features, compute_iv_features,
    horizon_level, model_feature_names,
)

from volmargin.errors import ConfigError
from volmargin.features.realized import horizon_targets

__all__ = ["CORE_COLUMNS", "FEATURE_NAMES", "INPUT_COLUMNS", "IV_FEATURE_NAMES", "IV_COLUMN", "FeatureSpec", "attach_iv", "feature_names", "feature_frame", "target_frame", "training_frame",
           "standardize", "fitted_scaler", "check_levels", "require_levels", "horizon_level", "daily_inputs"]
_FLOOR = 1e-12  # zero realized variance must not give log(0)
IV_COLUMN = "iv"  # optional column of a daily frame: the implied-volatility index (annualised %) at the day's close


def feature_names(iv_features: bool, liquidity: bool = False) -> tuple[str, ...]:
    """The feature columns of a model trained with or without the liquidity and implied-volatility features."""
    return model_feature_names(liquidity, iv_features)


def attach_iv(daily: pd.DataFrame, iv: pd.DataFrame) -> pd.DataFrame:
    """`daily` with an `IV_COLUMN` from a DVOL frame (`volmargin.data.options.load_dvol`), NaN on days it
    lacks. Daily DVOL bars are labelled with their UTC day and close at its end; hourly bars with their open
    time, so a day's value is the close of its last hourly bar (23:00): both are known at the close of the
    day the realized measures of row t end at, and nothing later enters row t."""
    closes = iv["close"].copy()
    closes.index = pd.DatetimeIndex(closes.index).floor("D")
    closes = closes.groupby(level=0).last()
    if closes.index.tz is None:
        closes.index = closes.index.tz_localize("UTC")
    return daily.assign(**{IV_COLUMN: closes.reindex(daily.index).to_numpy(dtype=float)})


def index_of(daily: pd.DataFrame) -> np.ndarray | None:
    """A daily frame's implied-volatility index (`IV_COLUMN`), None where it has none."""
    return daily[IV_COLUMN].to_numpy(dtype=float) if IV_COLUMN in daily else None


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, _FLOOR))


def daily_inputs(daily: pd.DataFrame) -> dict[str, np.ndarray]:
    """The `INPUT_COLUMNS` arrays of a `daily_measures` frame, as the feature core takes them."""
    return {c: daily[c].to_numpy(dtype=bool if c == "complete" else float) for c in INPUT_COLUMNS}


def feature_frame(daily: pd.DataFrame, spec: FeatureSpec = FeatureSpec(), iv_features: bool = False) -> pd.DataFrame:
    """`CORE_COLUMNS` (plus `IV_FEATURE_NAMES` with `iv_features`, from the frame's optional `IV_COLUMN`:
    absent = no index) and `level` on the daily index of `daily_measures`; a model reads its own names."""
    features, level = compute_features(daily_inputs(daily), daily.index.day_of_week.to_numpy(), spec)
    if iv_features:
        iv = index_of(daily)
        features = np.concatenate([features, compute_iv_features(iv, level, spec)], axis=-1)
    frame = pd.DataFrame(features, index=daily.index, columns=list(CORE_COLUMNS + IV_FEATURE_NAMES * iv_features))
    frame["level"] = level
    return frame


def target_frame(daily: pd.DataFrame, level: pd.Series, horizon: int) -> pd.DataFrame:
    """Scale-free training targets at each origin t (NaN where the h-day target is missing).

    y_var = log(target_rv) - (level_t + log h): the relative log variance the models predict;
    r_std = target_ret / sqrt(h exp(level_t)): the h-day return in units of the level scale. A model
    restandardises it by its own variance forecast, z = r_std / exp(prediction / 2), for the tails.
    """
    targets = horizon_targets(daily, horizon)
    base = horizon_level(level.to_numpy(), horizon)
    return pd.DataFrame(
        {
            "y_var": _log(targets["target_rv"].to_numpy()) - base,
            "r_std": targets["target_ret"].to_numpy() * np.exp(-0.5 * base),
        },
        index=daily.index,
    )


def training_frame(daily: pd.DataFrame, horizon: int, spec: FeatureSpec = FeatureSpec(),
                   iv_features: bool = False) -> pd.DataFrame:
    """Features, level and targets of one asset's training rows (targets NaN near the window's end)."""
    features = feature_frame(daily, spec, iv_features)
    return features.join(target_frame(daily, features["level"], horizon))


def standardize(scaler: StandardScaler, features: np.ndarray) -> np.ndarray:
    """Scaled features with missing values at the training mean (0), as float32 for the models
    (the serving core's arithmetic, with the fitted scaler's statistics)."""
    return core.standardize(features, scaler.mean_, scaler.scale_)


def fitted_scaler(mean: np.ndarray, scale: np.ndarray) -> StandardScaler:
    """A StandardScaler with stored statistics, as if fitted."""
    scaler = StandardScaler()
    scaler.mean_, scaler.scale_, scaler.var_ = mean, scale, scale**2
    scaler.n_features_in_ = len(mean)
    return scaler


def check_levels(levels: tuple[float, ...]) -> tuple[float, ...]:
    """Confidence levels the tail targets are trained on: strictly ascending, in (0.5, 1)."""
    levels = tuple(float(level) for level in levels)
    if not levels or any(not 0.5 < level < 1 for level in levels) or list(levels) != sorted(set(levels)):
        raise ConfigError(f"levels must be strictly ascending confidence levels in (0.5, 1), got {levels}")
    return levels


def require_levels(trained: tuple[float, ...], requested: tuple[float, ...]) -> None:
    """A learned tail model forecasts only the levels it was trained on."""
    if tuple(float(level) for level in requested) != tuple(trained):
        raise ConfigError(f"levels {tuple(requested)} differ from the trained levels {tuple(trained)}; "
                          "set the model's `levels` parameter")
