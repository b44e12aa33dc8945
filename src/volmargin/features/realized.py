"""Daily returns, realized measures and horizon targets from intraday bars.

Each UTC day gets its close-to-close log return and variance measures built from that day's bars:
- realized variance: sum of squared intraday log returns, the first taken from the previous bar's close;
- bipower variation (Barndorff-Nielsen & Shephard 2004): pi/2 * n/(n-1) * sum |r_i||r_{i-1}|;
- range estimators summed over the day's bars (each bar's estimator assumes zero drift):
  Parkinson (1980), Garman-Klass (1980), Rogers-Satchell (1991) and Yang-Zhang (2000), whose
  'overnight' term is the jump from the previous bar's close to this bar's open.
A day with fewer than `min_bars` bars is marked incomplete: it keeps its row (models still see its
return) but carries no target.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

MEASURES = ("rv", "bv", "parkinson", "garman_klass", "rogers_satchell", "yang_zhang")
_YZ_ALPHA = 0.34  # Yang-Zhang's k = alpha / (1 + alpha + (n+1)/(n-1)), minimising estimator variance


def daily_measures(bars: pd.DataFrame, min_bars: int = 20) -> pd.DataFrame:
    """Per-UTC-day table: ret, the realized measures, n_bars, complete, volume, close.

    `bars` is a validated intraday frame from `volmargin.data.load_bars`. The first day is dropped
    because its first return has no previous close.
    """
    log_o, log_h, log_l, log_c = (np.log(bars[c].to_numpy()) for c in ("open", "high", "low", "close"))
    prev_close = np.concatenate([[np.nan], log_c[:-1]])
    r = log_c - prev_close
    hl, co = log_h - log_l, log_c - log_o
    rs = (log_h - log_c) * (log_h - log_o) + (log_l - log_c) * (log_l - log_o)
    per_bar = pd.DataFrame(
        {
            "ret": r,
            "rv": r**2,
            "abs_r": np.abs(r),
            "parkinson": hl**2 / (4 * np.log(2)),
            "garman_klass": 0.5 * hl**2 - (2 * np.log(2) - 1) * co**2,
            "rogers_satchell": rs,
            "gap2": (log_o - prev_close) ** 2,
            "co2": co**2,
            "volume": bars["volume"].to_numpy(),
            "close": bars["close"].to_numpy(),
        },
        index=bars.index,
    ).iloc[1:]
    day = per_bar.index.floor("D")
    per_bar["bp"] = per_bar["abs_r"] * per_bar["abs_r"].shift(1).where(day == np.roll(day, 1))
    grouped = per_bar.groupby(day)
    sums = grouped[["ret", "rv", "parkinson", "garman_klass", "rogers_satchell", "gap2", "co2", "bp", "volume"]].sum()
    n = grouped.size().astype(float)
    out = pd.DataFrame(index=sums.index)
    out["ret"] = sums["ret"]
    out["rv"] = sums["rv"]
    out["bv"] = np.pi / 2 * n / (n - 1).clip(lower=1) * sums["bp"]
    out["parkinson"] = sums["parkinson"]
    out["garman_klass"] = sums["garman_klass"]
    out["rogers_satchell"] = sums["rogers_satchell"]
    k = _YZ_ALPHA / (1 + _YZ_ALPHA + (n + 1) / (n - 1).clip(lower=1))
    out["yang_zhang"] = sums["gap2"] + k * sums["co2"] + (1 - k) * sums["rogers_satchell"]
    out["volume"] = sums["volume"]
    out["close"] = grouped["close"].last()
    out["n_bars"] = n.astype(int)
    out["complete"] = out["n_bars"] >= min_bars
    out.index.name = "date"
    out = out.iloc[1:]  # the first day is partial: its opening bars have no previous close
    incomplete = int((~out["complete"]).sum())
    out.attrs["incomplete_days"] = incomplete
    if incomplete:
        log.info("%d of %d days have fewer than %d bars and carry no target", incomplete, len(out), min_bars)
    return out


def horizon_targets(daily: pd.DataFrame, horizon: int = 1) -> pd.DataFrame:
    """Targets for the h days after each row: `target_rv` (sum of rv) and `target_ret` (sum of ret).

    Row t holds the sum over calendar days t+1..t+h; it is NaN when any of those days is missing
    or incomplete, so nothing is filled.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    calendar = pd.date_range(daily.index[0], daily.index[-1], freq="D", name=daily.index.name)
    full = daily.reindex(calendar)
    usable = full["complete"].fillna(False).astype(bool)
    targets = {}
    for column in ("rv", "ret"):
        values = full[column].where(usable)
        # forward-looking window: rolling sum over t-h+1..t, shifted back by h
        targets[f"target_{column}"] = values.rolling(horizon, min_periods=horizon).sum().shift(-horizon)
    return pd.DataFrame(targets).reindex(daily.index)
