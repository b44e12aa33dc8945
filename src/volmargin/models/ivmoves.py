"""Forecasts of implied-volatility moves: lower and upper quantiles of the log change of DVOL over the MPOR.

Target at origin t (a UTC day): y_t = ln(DVOL_{t+h} / DVOL_t), DVOL the daily close (known at the end of
day t). Two forecasters, walk-forward without look-ahead (a row's target must be realised, s + h <= t,
before it trains a forecast at origin t):

- `hist`: the empirical quantiles of the last `window` realised changes (expanding until `window`),
  the numpy rule of `volmargin_serving.options.historical_iv_quantiles`, vectorised over origins.
- `qreg`: linear quantile regression (scikit-learn `QuantileRegressor`, HiGHS) per level on the DVOL
  level, its 1- and 5-day changes, its 20-day mean absolute change (vol of vol) and, where given, the
  20-day realised volatility of the underlying; refit every `refit_every` days on an expanding window.

Scored with the pinball loss and the exceedance rates (share of targets below the lower / above the upper
quantile), `score_quantiles`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LEVELS = (0.01, 0.99)


def _utc(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
IV_MODELS = ("hist", "qreg")


def iv_targets(close: pd.Series, horizon: int = 1) -> pd.DataFrame:
    """Per origin day: the realised log change of the daily close over the next `horizon` days (NaN
    where not yet realised) and the change that ended at the origin (known then)."""
    log = np.log(close.astype(float))
    return pd.DataFrame({"target": log.shift(-horizon) - log, "past": log - log.shift(horizon)})


def iv_features(close: pd.Series, underlying_ret: pd.Series | None = None) -> pd.DataFrame:
    """Features known at the end of each origin day (only past and present rows)."""
    log = np.log(close.astype(float))
    change = log.diff()
    features = pd.DataFrame({
        "log_level": log, "change_1d": change, "change_5d": log - log.shift(5),
        "vol_of_vol_20d": change.abs().rolling(20, min_periods=10).mean(),
    })
    if underlying_ret is not None:
        ret = underlying_ret.reindex(close.index)
        features["rv_20d"] = np.log(np.sqrt((ret**2).rolling(20, min_periods=10).mean() * 365) + 1e-6)
    return features


def historical_quantiles(close: pd.Series, horizon: int = 1, window: int = 365, min_obs: int = 60,
                         levels=LEVELS) -> pd.DataFrame:
    """Per origin, the empirical `levels` quantiles of the last `window` realised `horizon`-day changes
    (those ending at or before the origin); NaN until `min_obs` are known."""
    past = iv_targets(close, horizon)["past"]
    rolled = past.rolling(window, min_periods=min_obs)
    return pd.DataFrame({f"q{level:g}": rolled.quantile(level) for level in levels})


def learned_quantiles(close: pd.Series, underlying_ret: pd.Series | None = None, horizon: int = 1,
                      refit_every: int = 30, min_train: int = 60, levels=LEVELS, start=None,
                      end=None) -> pd.DataFrame:
    """Walk-forward linear quantile regression (see module doc); NaN before `min_train` realised rows."""
    from sklearn.linear_model import QuantileRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    features = iv_features(close, underlying_ret)
    target = iv_targets(close, horizon)["target"]
    out = pd.DataFrame(np.nan, index=close.index, columns=[f"q{level:g}" for level in levels])
    usable = features.notna().all(axis=1).to_numpy()
    origins = np.flatnonzero(usable)
    if start is not None:
        origins = origins[close.index[origins] >= _utc(start)]
    if end is not None:
        origins = origins[close.index[origins] <= _utc(end)]
    refit_at = None
    models = {}
    for i in origins:
        train = np.flatnonzero(usable[: max(i - horizon + 1, 0)])  # s + horizon <= i: realised at i
        train = train[np.isfinite(target.to_numpy()[train])]
        if len(train) < min_train:
            continue
        if refit_at is None or i >= refit_at:
            x, y = features.to_numpy()[train], target.to_numpy()[train]
            models = {level: make_pipeline(StandardScaler(), QuantileRegressor(
                quantile=level, alpha=1e-3, solver="highs")).fit(x, y) for level in levels}
            refit_at = i + refit_every
        row = features.to_numpy()[i : i + 1]
        for level, model in models.items():
            out.iloc[i, list(levels).index(level)] = float(model.predict(row)[0])
    lo, hi = out.columns
    out[lo], out[hi] = np.minimum(out[lo], out[hi]), np.maximum(out[lo], out[hi])  # no crossing
    return out


def iv_forecasts(close: pd.Series, underlying_ret: pd.Series | None = None, horizon: int = 1,
                 start=None, end=None, models=IV_MODELS) -> pd.DataFrame:
    """Long table: origin, model (hist, qreg), q_lo, q_hi, target (the realised change), for origins in
    [start, end]."""
    target = iv_targets(close, horizon)["target"]
    tables = []
    make = {"hist": lambda: historical_quantiles(close, horizon),
            "qreg": lambda: learned_quantiles(close, underlying_ret, horizon, start=start, end=end)}
    for model, frame in ((m, make[m]()) for m in models):
        table = frame.set_axis(["q_lo", "q_hi"], axis=1).assign(model=model, target=target)
        tables.append(table.rename_axis("origin").reset_index())
    out = pd.concat(tables, ignore_index=True)
    if start is not None:
        out = out[out["origin"] >= _utc(start)]
    if end is not None:
        out = out[out["origin"] <= _utc(end)]
    return out.dropna(subset=["q_lo", "q_hi"]).reset_index(drop=True)


def pinball(y, q, level: float) -> np.ndarray:
    diff = np.asarray(y, dtype=float) - np.asarray(q, dtype=float)
    return np.maximum(level * diff, (level - 1) * diff)


def score_quantiles(forecasts: pd.DataFrame, levels=LEVELS) -> pd.DataFrame:
    """Per model, on realised rows: mean pinball loss at each level and the exceedance rates."""
    rows = []
    for model, frame in forecasts.dropna(subset=["target"]).groupby("model", sort=False):
        y = frame["target"].to_numpy()
        rows.append({
            "model": model, "n": len(frame),
            f"pinball_{levels[0]:g}": pinball(y, frame["q_lo"], levels[0]).mean(),
            f"pinball_{levels[1]:g}": pinball(y, frame["q_hi"], levels[1]).mean(),
            "below_lo_rate": float((y < frame["q_lo"]).mean()), "above_hi_rate": float((y > frame["q_hi"]).mean()),
        })
    return pd.DataFrame(rows)
