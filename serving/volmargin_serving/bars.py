"""Daily returns and realized measures from intraday bars: the one implementation shared by training
(`volmargin.features.realized.daily_measures` wraps it) and serving.

Each UTC day gets its close-to-close log return and variance measures built from that day's bars:
- realized variance: sum of squared intraday log returns, the first taken from the previous bar's close;
- bipower variation (Barndorff-Nielsen & Shephard 2004): pi/2 * n/(n-1) * sum |r_i||r_{i-1}|;
- range estimators summed over the day's bars (each bar's estimator assumes zero drift):
  Parkinson (1980), Garman-Klass (1980), Rogers-Satchell (1991) and Yang-Zhang (2000), whose
  'overnight' term is the jump from the previous bar's close to this bar's open.
A day with fewer than `min_bars` bars is marked incomplete. The first day is dropped: its first
return has no previous close.

A model learns the measures of one bar interval (a day's RV sums its bars' squared returns, so 5-minute
bars give other measures than hourly ones). Finer bars that divide the learned interval are aggregated to
it first (`aggregate_bars`: exact for OHLCV); coarser or other bars are refused (`learned_interval`).
"""

from __future__ import annotations

import math

import numpy as np

MEASURES = ("rv", "bv", "parkinson", "garman_klass", "rogers_satchell", "yang_zhang")
_YZ_ALPHA = 0.34  # Yang-Zhang's k = alpha / (1 + alpha + (n+1)/(n-1)), minimising estimator variance
_DAY_NS = 86_400_000_000_000


def to_nanoseconds(timestamps: np.ndarray) -> np.ndarray:
    """int64 nanoseconds since the epoch from naive-UTC datetime64 or int64 nanosecond arrays."""
    timestamps = np.asarray(timestamps)
    if np.issubdtype(timestamps.dtype, np.datetime64):
        return timestamps.astype("datetime64[ns]").view(np.int64)
    return timestamps.astype(np.int64, copy=False)


def bar_interval(timestamps: np.ndarray) -> int:
    """The bars' interval in seconds: their most common spacing (a gap or a missing bar does not change it)."""
    steps = np.diff(to_nanoseconds(timestamps))
    values, counts = np.unique(steps[steps > 0], return_counts=True)
    return int(values[np.argmax(counts)] // 1_000_000_000) if len(values) else 0


def default_min_bars(seconds: int) -> int:
    """Bars a complete UTC day holds at least by default: 20 of 24 hourly bars, scaled to the interval."""
    return math.ceil(86_400 / seconds * 20 / 24)


def interval_text(seconds: int) -> str:
    return (f"{seconds // 3600} h" if seconds % 3600 == 0 else f"{seconds // 60} min" if seconds % 60 == 0
            else f"{seconds} s")


def learned_interval(learned: tuple[int, ...], interval: int) -> int | None:
    """The interval bars of `interval` seconds are to be read at by a model that learned from bars of
    `learned` seconds: their own if learned (or nothing is recorded), else the shortest learned interval they
    divide (finer bars, aggregated to it); None if none (coarser bars, or intervals that do not nest)."""
    if not learned or interval in learned or interval == 0:  # 0: fewer than two bars, nothing to read
        return interval
    multiples = [s for s in learned if interval > 0 and s > interval and s % interval == 0]
    return min(multiples) if multiples else None


def aggregate_bars(timestamps: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray,
                   close: np.ndarray, volume: np.ndarray, seconds: int,
                   bar_seconds: int | None = None) -> tuple[np.ndarray, ...]:
    """Bars of `seconds` from finer sorted bars: the bars whose open time falls in one interval (counted from
    1970-01-01 UTC, so hours start on the hour) give its open (the first open), high (the highest), low (the
    lowest), close (the last close) and volume (the sum), labelled by the interval's open time. Exact for
    OHLCV: an interval's bar from its trades has these values. An interval holding fewer than 20 / 24 of its
    bars is left out, a missing bar (as an hour is of a day: `default_min_bars`): its range and moves are
    partly unknown, and a day of such hours must count as incomplete, not as measured on part of its moves
    (a feed that lost half of every hour gave margins 29-37% lower). `bar_seconds`: the given bars' interval
    where known (a file's name declares it), else their most common spacing (a feed that lost every other bar
    then reads as whole). Returns (timestamps as datetime64[ns], open, high, low, close, volume)."""
    ns = to_nanoseconds(timestamps)
    if not len(ns):
        return (ns.astype("datetime64[ns]"), *(np.empty(0) for _ in range(5)))
    step = int(seconds) * 1_000_000_000
    bucket = ns // step
    starts = np.flatnonzero(np.diff(bucket, prepend=bucket[:1] - 1))
    last = np.append(starts[1:], len(bucket)) - 1
    parts = np.diff(np.append(starts, len(bucket)))
    interval = bar_seconds or bar_interval(ns)
    whole = parts >= math.ceil(seconds / max(interval, 1) * 20 / 24)
    bars = ((bucket[starts] * step).astype("datetime64[ns]"), np.asarray(open_, dtype=float)[starts],
            np.maximum.reduceat(np.asarray(high, dtype=float), starts),
            np.minimum.reduceat(np.asarray(low, dtype=float), starts), np.asarray(close, dtype=float)[last],
            np.add.reduceat(np.asarray(volume, dtype=float), starts))
    return tuple(column[whole] for column in bars)


def daily_from_bars(
    timestamps: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
    volume: np.ndarray, min_bars: int,
) -> dict[str, np.ndarray]:
    """Per-UTC-day arrays: date (datetime64[D]), ret, the `MEASURES`, volume, traded_value (the sum of each
    bar's volume x close: quote currency), close, n_bars, complete.

    Bars must be sorted by time with positive prices (callers validate); timestamps are UTC
    datetime64 or int64 nanoseconds.
    """
    if len(np.atleast_1d(close)) < 2:  # no bar after the first: no day with a return
        empty = {name: np.empty(0) for name in ("ret", *MEASURES, "volume", "traded_value", "close")}
        return {"date": np.empty(0, dtype="datetime64[D]"), **empty, "n_bars": np.empty(0, dtype=np.int64),
                "complete": np.empty(0, dtype=bool)}
    log_o, log_h, log_l, log_c = (np.log(np.asarray(a, dtype=float)) for a in (open_, high, low, close))
    r = np.diff(log_c)  # bar i's return from bar i-1's close; bar 0 is dropped
    log_o, log_h, log_l, log_c, prev_c = log_o[1:], log_h[1:], log_l[1:], log_c[1:], log_c[:-1]
    day = to_nanoseconds(timestamps)[1:] // _DAY_NS
    starts = np.flatnonzero(np.diff(day, prepend=day[:1] - 1))
    same_day = np.concatenate([[False], day[1:] == day[:-1]])
    abs_r = np.abs(r)
    bp = np.where(same_day, abs_r * np.roll(abs_r, 1), 0.0)
    hl, co = log_h - log_l, log_c - log_o
    rs = (log_h - log_c) * (log_h - log_o) + (log_l - log_c) * (log_l - log_o)

    def total(x: np.ndarray) -> np.ndarray:
        return np.add.reduceat(x, starts)[1:]  # [1:]: drop the first, partial day

    n = np.diff(np.append(starts, len(day)))[1:].astype(float)
    rogers_satchell = total(rs)
    k = _YZ_ALPHA / (1 + _YZ_ALPHA + (n + 1) / np.maximum(n - 1, 1))
    return {
        "date": day[starts][1:].astype("datetime64[D]"),
        "ret": total(r),
        "rv": total(r**2),
        "bv": np.pi / 2 * n / np.maximum(n - 1, 1) * total(bp),
        "parkinson": total(hl**2 / (4 * np.log(2))),
        "garman_klass": total(0.5 * hl**2 - (2 * np.log(2) - 1) * co**2),
        "rogers_satchell": rogers_satchell,
        "yang_zhang": total((log_o - prev_c) ** 2) + k * total(co**2) + (1 - k) * rogers_satchell,
        "volume": total(np.asarray(volume, dtype=float)[1:]),
        "traded_value": total(np.asarray(volume, dtype=float)[1:] * np.exp(log_c)),
        "close": np.exp(log_c[np.append(starts[1:], len(day)) - 1][1:]),
        "n_bars": n.astype(np.int64),
        "complete": n >= min_bars,
    }
