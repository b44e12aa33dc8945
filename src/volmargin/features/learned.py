"""Scale-free daily features and targets for the learned (global) forecasters.

Every feature at day t uses rows up to t only, and none depends on the asset's price or volatility
*level*: each variance measure enters relative to `level_t`, the trailing mean of log realized variance
over the last `level_days` rows (complete days only). One network can therefore serve BTC and a small
altcoin alike, and the variance forecast is `exp(level_t + log h + prediction)`.

Features (columns of `FEATURE_NAMES`, in order):
- rv_d, rv_w, rv_m: log RV of the day and log mean RV over the last 5 / 22 rows, minus level_t (HAR
  components in relative form); incomplete days count as missing;
- level_chg: level_t - level_{t-22}, the drift of the asset's own level;
- ret_d, ret_w: the day's return and the 5-day return over sqrt(level variance), clipped;
- jump: (rv - bv) / rv clipped to [0, 1], the jump share of the day's variance;
- range_pk, range_rs: log(Parkinson / rv) and log(Rogers-Satchell / rv);
- volume: log volume minus its trailing 22-row mean of logs;
- dow_sin, dow_cos: day of week.
A missing input gives NaN; the models fill NaN with 0 after standardising (the training mean).

The core `compute_features` is plain numpy on arrays so that it can move to a numpy-only serving
package; `feature_frame` and `target_frame` are the pandas wrappers used in training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.preprocessing import StandardScaler

from volmargin.errors import ConfigError
from volmargin.features.realized import horizon_targets

INPUT_COLUMNS = ("ret", "rv", "bv", "parkinson", "rogers_satchell", "volume", "complete")
FEATURE_NAMES = (
    "rv_d", "rv_w", "rv_m", "level_chg", "ret_d", "ret_w", "jump", "range_pk", "range_rs", "volume",
    "dow_sin", "dow_cos",
)
TARGET_NAMES = ("y_var", "r_std")
_FLOOR = 1e-12  # zero variance or volume (a halted market) must not give log(0)


@dataclass(frozen=True)
class FeatureSpec:
    """Window lengths (rows) of the feature builder; stored with a trained model."""

    level_days: int = 66
    week_days: int = 5
    month_days: int = 22
    volume_days: int = 22
    ret_clip: float = 10.0


def trailing_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of the finite values among the last `window` rows (including the current one); NaN if none.

    Cumulative sums make it causal: the value at t is built from x[..t] only.
    """
    valid = np.isfinite(x)
    sums = np.concatenate([[0.0], np.cumsum(np.where(valid, x, 0.0))])
    counts = np.concatenate([[0], np.cumsum(valid)])
    end = np.arange(1, len(x) + 1)
    start = np.maximum(end - window, 0)
    n = counts[end] - counts[start]
    return np.where(n > 0, (sums[end] - sums[start]) / np.maximum(n, 1), np.nan)


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, _FLOOR))


def log_level(rv: np.ndarray, complete: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """level_t: trailing mean of log RV over complete days; all days where the window has none complete."""
    log_rv = _log(rv)
    level = trailing_mean(np.where(complete, log_rv, np.nan), spec.level_days)
    return np.where(np.isfinite(level), level, trailing_mean(log_rv, spec.level_days))


def _lag(x: np.ndarray, k: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    out[k:] = x[: max(len(x) - k, 0)]
    return out


def compute_features(
    inputs: Mapping[str, np.ndarray], weekday: np.ndarray, spec: FeatureSpec = FeatureSpec()
) -> tuple[np.ndarray, np.ndarray]:
    """Feature matrix (n, len(FEATURE_NAMES)) and level_t (n,) from one asset's daily arrays.

    `inputs` holds the `INPUT_COLUMNS` arrays of one asset in time order (`complete` boolean);
    `weekday` is 0 = Monday .. 6 = Sunday.
    """
    complete = np.asarray(inputs["complete"], dtype=bool)
    rv = np.where(complete, inputs["rv"], np.nan)
    level = log_level(inputs["rv"], complete, spec)
    scale = np.exp(0.5 * level)
    ret = inputs["ret"]
    log_volume = _log(inputs["volume"])
    angle = 2 * np.pi * np.asarray(weekday) / 7
    with np.errstate(invalid="ignore", divide="ignore"):
        columns = (
            _log(rv) - level,
            _log(trailing_mean(rv, spec.week_days)) - level,
            _log(trailing_mean(rv, spec.month_days)) - level,
            level - _lag(level, spec.month_days),
            np.clip(ret / scale, -spec.ret_clip, spec.ret_clip),
            np.clip(np.sqrt(spec.week_days) * trailing_mean(ret, spec.week_days) / scale,
                    -spec.ret_clip, spec.ret_clip),
            np.clip((rv - inputs["bv"]) / rv, 0.0, 1.0),
            _log(inputs["parkinson"]) - _log(rv),
            _log(inputs["rogers_satchell"]) - _log(rv),
            log_volume - trailing_mean(log_volume, spec.volume_days),
            np.sin(angle),
            np.cos(angle),
        )
    return np.column_stack(columns), level


def feature_frame(daily: pd.DataFrame, spec: FeatureSpec = FeatureSpec()) -> pd.DataFrame:
    """`FEATURE_NAMES` columns plus `level` on the daily index of `daily_measures`."""
    inputs = {c: daily[c].to_numpy(dtype=bool if c == "complete" else float) for c in INPUT_COLUMNS}
    features, level = compute_features(inputs, daily.index.day_of_week.to_numpy(), spec)
    frame = pd.DataFrame(features, index=daily.index, columns=list(FEATURE_NAMES))
    frame["level"] = level
    return frame


def horizon_level(level: np.ndarray, horizon: int) -> np.ndarray:
    """Log of the level-implied variance of the h-day return: level_t + log h."""
    return np.asarray(level) + np.log(horizon)


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


def training_frame(daily: pd.DataFrame, horizon: int, spec: FeatureSpec = FeatureSpec()) -> pd.DataFrame:
    """Features, level and targets of one asset's training rows (targets NaN near the window's end)."""
    features = feature_frame(daily, spec)
    return features.join(target_frame(daily, features["level"], horizon))


def standardize(scaler: StandardScaler, features: np.ndarray) -> np.ndarray:
    """Scaled features with missing values at the training mean (0), as float32 for the models."""
    return np.nan_to_num(scaler.transform(features), nan=0.0).astype(np.float32)


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
