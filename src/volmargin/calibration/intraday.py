"""An intraday margin period of risk: realised moves over the first `hours` after each origin day's close.

Daily-horizon forecasts (horizon 1) still supply the risk measure, scaled to the MPOR by the square
root of time (`volmargin_serving.margins.mpor_factor`); what changes is what the margin is tested and
calibrated against: the log return and realized variance of the intraday bars from the close of day t
(midnight UTC) to `hours` later. The calibrated scale then corrects the square-root rule wherever
intraday moves are not Brownian (e.g. the opening hours of Asian trading). Needs bars whose interval
divides `hours`; a window with a missing bar has no realised move (never filled).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from volmargin.errors import ConfigError


def intraday_moves(bars: pd.DataFrame, hours: int) -> pd.DataFrame:
    """Per origin day t: `realized_ret` and `realized_rv` over the bars of day t+1 that close within
    `hours` of midnight; NaN where any of those bars (or day t's last bar) is missing."""
    step = bars.attrs.get("freq", pd.Timedelta(hours=1))
    span = pd.Timedelta(hours=hours)
    if span % step or span < step:
        raise ConfigError(f"policy.mpor_hours = {hours}: not a multiple of the bars' interval {step}")
    log_close = np.log(bars["close"])
    grid = pd.date_range(bars.index[0].floor("D"), bars.index[-1].ceil("D"), freq=step)
    returns = log_close.reindex(grid).diff()  # NaN next to any missing bar
    count = int(span / step)
    window_ret = returns.rolling(count, min_periods=count).sum()
    window_rv = (returns**2).rolling(count, min_periods=count).sum()
    last_bar = span - step  # the bar that closes `hours` after midnight opens here
    ends = pd.DatetimeIndex(sorted(set(bars.index.floor("D")))) + pd.Timedelta(days=1) + last_bar
    moves = pd.DataFrame({"realized_ret": window_ret.reindex(ends).to_numpy(),
                          "realized_rv": window_rv.reindex(ends).to_numpy()},
                         index=ends - pd.Timedelta(days=1) - last_bar)
    moves.index.name = "origin"
    return moves


def with_intraday_moves(forecasts: pd.DataFrame, bars: dict[str, pd.DataFrame], hours: int) -> pd.DataFrame:
    """The forecast table with its realised columns replaced by the intraday MPOR's moves."""
    if set(forecasts["horizon"].unique()) != {1}:
        raise ConfigError("policy.mpor_hours needs daily-horizon forecasts (horizon 1)")
    frames = []
    for asset, rows in forecasts.groupby("asset", sort=False):
        moves = intraday_moves(bars[asset], hours).reindex(pd.DatetimeIndex(rows["origin"]))
        frames.append(rows.assign(realized_ret=moves["realized_ret"].to_numpy(),
                                  realized_rv=moves["realized_rv"].to_numpy()))
    return pd.concat(frames).loc[forecasts.index]
