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
"""

from __future__ import annotations

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


def daily_from_bars(
    timestamps: np.ndarray, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray,
    volume: np.ndarray, min_bars: int,
) -> dict[str, np.ndarray]:
    """Per-UTC-day arrays: date (datetime64[D]), ret, the `MEASURES`, volume, traded_value (the sum of each
    bar's volume x close: quote currency), close, n_bars, complete.

    Bars must be sorted by time with positive prices (callers validate); timestamps are UTC
    datetime64 or int64 nanoseconds.
    """
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
