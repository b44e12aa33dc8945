"""Price paths for the simulator, one asset at a time, all relative to the start (log price 0).

- Replays: the real hourly path of the day after each origin (the forecast origin t is the close of
  day t; its path is the `steps` hourly closes after it), from bars loaded by `volmargin.data.load_panel`.
  A path with a missing bar is dropped (never filled).
- Bootstrapped, volatility-scaled paths around them: hourly returns standardised by a causal EWMA of
  hourly variance (half-life `halflife_hours`), resampled in blocks of `block_hours` consecutive hours
  from the `lookback_days` before the origin only, then scaled by the model's forecast daily volatility
  (sqrt(variance / 24) per hour). Blocks keep intraday clustering and fat tails; the forecast sets the
  level. A missing hour in a drawn block counts as no move.
- Stress events (`volmargin.data.events.STRESS_EVENTS`): the hourly path from the close of the eve (the
  day before the event's first day) to the end of its last day, replayed with the margins set on the eve.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from volmargin.data.events import STRESS_EVENTS
from volmargin.errors import DataError

HOURS = 24


@dataclass(frozen=True)
class PathSet:
    """Paths of one asset: row i starts at the close of origin day origins[day[i]]."""

    asset: str
    kind: np.ndarray  # (P,) 'replay', 'bootstrap' or an event name
    day: np.ndarray  # (P,) index into `origins`
    origins: pd.DatetimeIndex
    log_price: np.ndarray  # (P, steps + 1), column 0 = 0
    funding: np.ndarray | None = None  # (P, steps) rate longs pay at the end of each step, or None

    @property
    def starts(self) -> pd.DatetimeIndex:
        """Start time of each path: the close of its origin day."""
        return self.origins[self.day] + pd.Timedelta(days=1)

    def with_funding(self, rates: pd.Series | None) -> PathSet:
        from volmargin.simulation.funding import funding_matrix

        if rates is None or not len(self):
            return self
        return PathSet(self.asset, self.kind, self.day, self.origins, self.log_price,
                       funding_matrix(rates, self.starts, self.log_price.shape[1] - 1))

    def __len__(self) -> int:
        return len(self.kind)

    def select(self, mask: np.ndarray) -> PathSet:
        return PathSet(self.asset, self.kind[mask], self.day[mask], self.origins, self.log_price[mask],
                       None if self.funding is None else self.funding[mask])


def hourly_log_close(bars: pd.DataFrame) -> pd.Series:
    """Log close on the full hourly grid of the bars (NaN where a bar is missing)."""
    step = bars.attrs.get("freq", pd.Timedelta(hours=1))
    if step != pd.Timedelta(hours=1):
        raise DataError(f"simulation paths need hourly bars, got bars of {step}")
    grid = pd.date_range(bars.index[0], bars.index[-1], freq="h")
    return np.log(bars["close"]).reindex(grid)


def _start_positions(log_close: pd.Series, origins: pd.DatetimeIndex) -> np.ndarray:
    """Grid position of the last bar of each origin day (its close is the path's start); -1 if absent."""
    last_bar = origins.normalize() + pd.Timedelta(hours=HOURS - 1)
    return log_close.index.get_indexer(last_bar)


def replay_paths(asset: str, bars: pd.DataFrame, origins, steps: int = HOURS) -> PathSet:
    """The real path after each origin; origins without a complete path are left out."""
    origins = pd.DatetimeIndex(origins)
    values = hourly_log_close(bars).to_numpy()
    start = _start_positions(hourly_log_close(bars), origins)
    ok = (start >= 0) & (start + steps < len(values))
    window = np.full((len(origins), steps + 1), np.nan)
    window[ok] = values[start[ok, None] + np.arange(steps + 1)]
    ok &= np.isfinite(window).all(1)
    day = np.flatnonzero(ok)
    return PathSet(asset, np.full(len(day), "replay", dtype=object), day, origins,
                   window[ok] - window[ok, :1])


def standardised_returns(log_close: pd.Series, halflife_hours: float = 72.0) -> np.ndarray:
    """Hourly log returns over a causal EWMA volatility (the variance up to the previous hour)."""
    ret = log_close.diff()
    var = (ret**2).ewm(halflife=halflife_hours, min_periods=24, ignore_na=True).mean().shift(1)
    return (ret / np.sqrt(var)).to_numpy()


def bootstrap_paths(asset: str, bars: pd.DataFrame, origins, daily_variance, paths_per_day: int,
                    steps: int = HOURS, block_hours: int = 6, lookback_days: int = 730, seed: int = 0) -> PathSet:
    """`paths_per_day` block-bootstrapped paths per origin, scaled to its forecast daily variance; only
    the bars before the origin's close are drawn from. Origins with under 30 days of history are left out."""
    origins = pd.DatetimeIndex(origins)
    daily_variance = np.asarray(daily_variance, dtype=float)
    log_close = hourly_log_close(bars)
    z = standardised_returns(log_close)
    start = _start_positions(log_close, origins)
    first = int(np.argmax(np.isfinite(z)))
    history = np.minimum(start + 1 - first, lookback_days * HOURS) - block_hours  # block starts allowed
    ok = (start >= 0) & (history >= 30 * HOURS) & np.isfinite(daily_variance) & (daily_variance > 0)
    day = np.repeat(np.flatnonzero(ok), paths_per_day)
    rng = np.random.default_rng(seed)
    blocks = -(-steps // block_hours)
    # block k of a path starts `back` hours before the origin's close (the block ends at or before it)
    back = block_hours + np.floor(rng.random((len(day), blocks)) * history[day, None]).astype(int)
    hours = (start[day, None, None] + 1 - back[:, :, None] + np.arange(block_hours)).reshape(len(day), blocks * block_hours)[:, :steps]
    draws = np.nan_to_num(z[hours], nan=0.0)
    sigma = np.sqrt(daily_variance[day] / HOURS)[:, None]
    log_price = np.hstack([np.zeros((len(day), 1)), np.cumsum(draws * sigma, axis=1)])
    return PathSet(asset, np.full(len(day), "bootstrap", dtype=object), day, origins, log_price)


def event_paths(asset: str, bars: pd.DataFrame, events: dict[str, tuple[str, str]] | None = None) -> PathSet:
    """One path per stress event the bars cover: from the eve's close to the end of the last day."""
    events = STRESS_EVENTS if events is None else events
    log_close = hourly_log_close(bars)
    values = log_close.to_numpy()
    names, eves, windows = [], [], []
    longest = max((pd.Timestamp(last) - pd.Timestamp(first)).days + 1 for first, last in events.values()) * HOURS
    for name, (first, last) in events.items():
        eve = pd.Timestamp(first, tz="UTC") - pd.Timedelta(days=1)
        steps = ((pd.Timestamp(last) - pd.Timestamp(first)).days + 1) * HOURS
        start = _start_positions(log_close, pd.DatetimeIndex([eve]))[0]
        if start < 0 or start + steps >= len(values):
            continue
        path = values[start:start + steps + 1] - values[start]
        if not np.isfinite(path).all():
            continue
        # shorter events hold their last price to the common length (nothing moves after they end)
        windows.append(np.r_[path, np.full(longest - steps, path[-1])])
        names.append(name)
        eves.append(eve)
    origins = pd.DatetimeIndex(eves) if eves else pd.DatetimeIndex([], tz="UTC")
    log_price = np.array(windows) if windows else np.zeros((0, longest + 1))
    return PathSet(asset, np.array(names, dtype=object), np.arange(len(names)), origins, log_price)
