"""Scale-free daily features: the one implementation shared by training (`volmargin`) and serving.

Plain numpy so that margin services need nothing else. Every function works along the last axis, so
one asset is a 1-d array of days and a batch of assets is a (assets, days) array.

Every feature at day t uses rows up to t only, and none depends on the asset's price or volatility
*level*: each variance measure enters relative to `level_t`, the trailing mean of log realized variance
over the last `level_days` rows (complete days only). One model can therefore serve BTC and a small
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
A missing input gives NaN; `standardize` puts NaN at the training mean (0 after scaling).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

INPUT_COLUMNS = ("ret", "rv", "bv", "parkinson", "rogers_satchell", "volume", "complete")
FEATURE_NAMES = (
    "rv_d", "rv_w", "rv_m", "level_chg", "ret_d", "ret_w", "jump", "range_pk", "range_rs", "volume",
    "dow_sin", "dow_cos",
)
_FLOOR = 1e-12  # zero variance or volume (a halted market) must not give log(0)


@dataclass(frozen=True)
class FeatureSpec:
    """Window lengths (rows) of the feature builder; stored with a trained model and in its bundle."""

    level_days: int = 66
    week_days: int = 5
    month_days: int = 22
    volume_days: int = 22
    ret_clip: float = 10.0

    def history_days(self, window: int) -> int:
        """Rows of daily inputs that determine the last `window` feature rows exactly: each feature row
        looks back at most month_days (level_chg) + level_days - 1 rows."""
        return window + self.month_days + max(self.level_days, self.volume_days) - 1


def _window_sum(x: np.ndarray, window: int) -> np.ndarray:
    """Sum of the last `window` values along the last axis (fewer at the start): cumsum minus its lag."""
    sums = np.cumsum(x, axis=-1)
    if window < x.shape[-1]:
        sums[..., window:] -= sums[..., :-window].copy()
    return sums


def trailing_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean of the finite values among the last `window` rows (including the current one); NaN if none.

    Cumulative sums along the last axis make it causal: the value at t is built from x[..., :t+1] only.
    """
    valid = np.isfinite(x)
    n = _window_sum(valid.astype(np.float64), window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, _window_sum(np.where(valid, x, 0.0), window) / n, np.nan)


def _clip(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """np.clip's result (NaN kept) at a fraction of its call overhead, which dominates on serving-sized rows."""
    return np.minimum(np.maximum(x, low), high)


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, _FLOOR))


def log_level(rv: np.ndarray, complete: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """level_t: trailing mean of log RV over complete days; all days where the window has none complete."""
    log_rv = _log(rv)
    level = trailing_mean(np.where(complete, log_rv, np.nan), spec.level_days)
    return np.where(np.isfinite(level), level, trailing_mean(log_rv, spec.level_days))


def _lag(x: np.ndarray, k: int) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    if k < x.shape[-1]:
        out[..., k:] = x[..., : x.shape[-1] - k]
    return out


def compute_features(
    inputs: Mapping[str, np.ndarray], weekday: np.ndarray, spec: FeatureSpec = FeatureSpec(), last: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features (..., days, len(FEATURE_NAMES)) and level_t (..., days) from daily input arrays.

    `inputs` holds the `INPUT_COLUMNS` arrays in time order along the last axis (`complete` boolean);
    `weekday` is 0 = Monday .. 6 = Sunday. `last` keeps only the last rows of the output (serving needs
    one model window, not the whole history it was computed from).
    """
    complete = np.asarray(inputs["complete"], dtype=bool)
    rv = np.where(complete, inputs["rv"], np.nan)
    level = log_level(inputs["rv"], complete, spec)
    scale = np.exp(0.5 * level)
    ret = inputs["ret"]
    log_volume = _log(inputs["volume"])
    angle = 2 * np.pi * np.asarray(weekday) / 7
    log_rv = _log(rv)
    with np.errstate(invalid="ignore", divide="ignore"):
        columns = (
            log_rv - level,
            _log(trailing_mean(rv, spec.week_days)) - level,
            _log(trailing_mean(rv, spec.month_days)) - level,
            level - _lag(level, spec.month_days),
            _clip(ret / scale, -spec.ret_clip, spec.ret_clip),
            _clip(np.sqrt(spec.week_days) * trailing_mean(ret, spec.week_days) / scale,
                  -spec.ret_clip, spec.ret_clip),
            _clip((rv - inputs["bv"]) / rv, 0.0, 1.0),
            _log(inputs["parkinson"]) - log_rv,
            _log(inputs["rogers_satchell"]) - log_rv,
            log_volume - trailing_mean(log_volume, spec.volume_days),
            np.broadcast_to(np.sin(angle), level.shape) if angle.shape != level.shape else np.sin(angle),
            np.broadcast_to(np.cos(angle), level.shape) if angle.shape != level.shape else np.cos(angle),
        )
    keep = slice(-last, None) if last else slice(None)
    return np.stack([column[..., keep] for column in columns], axis=-1), level[..., keep]


def horizon_level(level: np.ndarray, horizon: int) -> np.ndarray:
    """Log of the level-implied variance of the h-day return: level_t + log h."""
    return np.asarray(level) + np.log(horizon)


def standardize(features: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(features - mean) / scale with missing values at the training mean (0), as float32 for the models.

    The same arithmetic as scikit-learn's StandardScaler.transform, so training and serving feed the
    models bit-identical inputs (a tree split cannot flip between them).
    """
    with np.errstate(invalid="ignore"):
        return np.nan_to_num((features - mean) / scale, nan=0.0).astype(np.float32)
