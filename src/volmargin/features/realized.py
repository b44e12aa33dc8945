"""Daily returns, realized measures and horizon targets from intraday bars.

The per-day measures (return, RV, bipower variation, Parkinson, Garman-Klass, Rogers-Satchell,
Yang-Zhang) are computed by `volmargin_serving.bars.daily_from_bars`, the one implementation that
training and the serving runtime share; this module wraps it in pandas and adds the horizon targets.
A day with fewer than `min_bars` bars is marked incomplete: it keeps its row (models still see its
return) but carries no target.
"""

from __future__ import annotations

import logging

import pandas as pd
from volmargin_serving.bars import MEASURES, daily_from_bars

from volmargin.data.loader import bar_seconds

log = logging.getLogger(__name__)

__all__ = ["MEASURES", "daily_measures", "horizon_targets"]


def daily_measures(bars: pd.DataFrame, min_bars: int = 20) -> pd.DataFrame:
    """Per-UTC-day table: ret, the realized measures, volume, close, n_bars, complete.

    `bars` is a validated intraday frame from `volmargin.data.load_bars`. The first day is dropped
    because its first return has no previous close.
    """
    columns = daily_from_bars(bars.index.as_unit("ns").asi8, *(bars[c].to_numpy() for c in ("open", "high", "low", "close", "volume")),
                              min_bars=min_bars)
    dates = pd.DatetimeIndex(columns.pop("date").astype("datetime64[ns]"), name="date").tz_localize("UTC")
    out = pd.DataFrame(columns, index=dates)
    incomplete = int((~out["complete"]).sum())
    out.attrs["incomplete_days"] = incomplete
    out.attrs["bar_seconds"] = bar_seconds(bars)  # scoring checks a bundle's bars were alike
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
