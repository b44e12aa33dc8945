"""Input validation of the serving runtime: what counts as bad input, by column name.

Written against `features.INPUT_COLUMNS` by name, never by position, so it keeps working when columns
are added: a column named here gets its rule, any other column must only be finite.

Bad input (each its own `InputError` subclass, see `volmargin_serving.errors`):
- non-finite values (`NonFiniteInputError`);
- impossible values (`ImpossibleInputError`): a negative variance measure or volume, a `complete` flag
  that is not 0/1, a return larger than its day's realized variance allows (see `MAX_BARS_PER_DAY`); in bars a non-positive price, high < low, open/close outside [low, high], negative volume;
- rows dated after `as_of` (`FutureInputError`), unsorted or duplicate dates (`UnsortedInputError`),
  missing days inside the window (`GapInputError`), a newest row older than the freshness limit
  (`StaleInputError`).

Doubtful input (`doubtful_values`, never an error): a possible value far outside the asset's own window,
e.g. a variance 10,000 times its window median, a frozen feed's zero volume or zero variance, a row
that repeats the one before it in every column, or an incomplete day (an outage) among the last five. `Runtime.margins` prices the asset fail-safe over every
reading of such rows and of bad ones (`volmargin_serving.repairs`): the margin can only rise.
"""

from __future__ import annotations

import numpy as np

from volmargin_serving.errors import (
    FutureInputError, GapInputError, ImpossibleInputError, InputDtypeError, NonFiniteInputError, StaleInputError,
    UnsortedInputError,
)
from volmargin_serving.features import INPUT_COLUMNS

# daily measures that cannot be negative: variances, range estimators, volume, traded value (by name; others: finite only)
NON_NEGATIVE = frozenset({"rv", "bv", "parkinson", "garman_klass", "rogers_satchell", "yang_zhang", "volume",
                          "traded_value"})
FLAGS = frozenset({"complete"})  # 0/1 columns
# The day's return is the sum of its n intraday returns and rv the sum of their squares, so by Cauchy-Schwarz
# ret^2 <= n x rv. With n at most one bar a minute, a larger return is not a number any market printed
# (e.g. -1e300, which the features would clip into a plausible-looking crash).
MAX_BARS_PER_DAY = 1440
# A return that 24 hourly bars could not make (ret^2 > 24 x rv) is possible from minute bars but doubtful: on the
# 150,935 asset-days of the 129 hourly spot files ret^2 / rv reaches 11.05 (99.99%: 8.7). Unflagged, a -100%
# return 37 days back lowered a served margin by 1.4% (bench/faults.py on the exported bundles): the features
# clip it into a plausible crash and the model is not monotone in them.
DOUBT_RETURN_BARS = 24
# An incomplete day (bars missing: an outage, and outages come on crash days) among the last this many rows
# is doubtful: the daily and weekly measures (5 days) read its partial moves as missing. On 2025's largest
# moves of five large caps a 6-hour outage lowered the served margin in 18 of 75 cases on the day and 5, 4,
# 3 of 75 one, two, three days later; five days later 1 (by under 0.05%), ten days later none.
RECENT_INCOMPLETE_DAYS = 5


def _rv_beyond_range(batch: np.ndarray, columns: tuple[str, ...], bars: int = DOUBT_RETURN_BARS) -> np.ndarray:
    """(..., days) True where rv exceeds what the day's range allows `bars` bars: every close-to-close return
    lies within the high-low range, so rv <= bars x ln(H / L)^2 = bars x 4 ln 2 x parkinson (session 20: an rv
    of 0.5, 470 times its window's median, 69 days back lowered a served margin by 1.6% through the level 23
    days back; of the 150,932 real asset-days of the 129 hourly spot files only eight NBT days of 2023-01,
    whose highs and lows the data froze, exceed it). False where a column is absent."""
    if "rv" not in columns or "parkinson" not in columns:
        return np.zeros(batch.shape[:-1], dtype=bool)
    rv, parkinson = batch[..., columns.index("rv")], batch[..., columns.index("parkinson")]
    with np.errstate(invalid="ignore", over="ignore"):
        return rv > bars * 4 * np.log(2) * parkinson


def _price_jump(batch: np.ndarray, columns: tuple[str, ...]) -> np.ndarray:
    """(..., days - 1) True where the day's average price, traded_value / volume, moved from the day before's
    by more than the return and the two days' ranges allow: each average lies within its day's high-low range
    and the closes too, so |d log(traded_value / volume) - ret| <= ln(H / L) + the day before's ln(H / L). The
    rows hold no daily range, so sqrt(4 ln 2 x parkinson) stands in for ln(H / L): the root of the sum of the
    bars' squared ranges, not a bound on the day's (on BTC's days the true range is 0.88 of it in the median,
    up to 1.82 on trending days: session 25's review), a heuristic that holds on real data because a day's
    average price lies well inside its range. A flag only makes the margin fail safe (higher), and a volume
    or traded value in the wrong unit moves the average by log 10 or more, far beyond it (session 20: a
    volume 100 times the true one 5 days back lowered a margin of the test bundle by 0.9%); of the 150,807 pairs
    of real days of the 129 hourly spot files only five NBT pairs of 2023-01 (frozen highs and lows) do.
    False where a column is absent."""
    needed = ("ret", "parkinson", "volume", "traded_value")
    if not set(needed) <= set(columns):
        return np.zeros(batch.shape[:-2] + (batch.shape[-2] - 1,), dtype=bool)
    ret, parkinson, volume, traded = (batch[..., columns.index(name)] for name in needed)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        move = np.diff(np.log(traded / volume), axis=-1) - ret[..., 1:]
        ranges = np.sqrt(4 * np.log(2) * parkinson)
        return np.abs(move) > (ranges[..., 1:] + ranges[..., :-1]) * (1 + 1e-6) + 1e-9


def _return_too_large(batch: np.ndarray, columns: tuple[str, ...], bars: int = MAX_BARS_PER_DAY) -> np.ndarray:
    """(..., days) True where |ret| exceeds what `bars` bars with the row's rv allow (ret^2 > bars x rv); False
    where a column is absent."""
    if "ret" not in columns or "rv" not in columns:
        return np.zeros(batch.shape[:-1], dtype=bool)
    ret, rv = batch[..., columns.index("ret")], batch[..., columns.index("rv")]
    with np.errstate(invalid="ignore", over="ignore"):
        return np.square(ret) > bars * rv * (1 + 1e-9)


# A value this many times above (or below) the window median of its column is doubtful: a variance
# 10^4 times the usual is a 100-sigma day. Real spikes stay below it on the 129 assets of the shared data
# except on a few listing days (bench/faults.py counts them); a flag there costs nothing, as the
# fail-safe margin is never below the margin of the rows as given.
DOUBT_RATIO = 1e4
# Columns doubtful when far *below* their median too: a frozen feed's zero volume, or its zero realized
# variance and range while it still reports volume (a stale price: the forecast, and the margin, would
# fall). A whole day without one hourly move is one asset-day in the 129 assets of the shared data. Bipower
# variation and Rogers-Satchell of zero are real in tick-bound markets (a token priced at 0.001 cents).
DOUBT_LOW = frozenset({"volume", "traded_value", "rv", "parkinson"})
# The traded quantity is doubtful already this many times above its window median: a volume in the wrong unit
# (thousands) with a traded value in the same unit keeps the day's average price (`_price_jump` sees nothing)
# and, unflagged, lowered a test-bundle margin (the liquidity and volume features read a richer market). Real
# volumes stay under 300 times their 150-day median on the 129 hourly spot files (traded values reach 2,850
# times: DOGE's price and volume rose together in 2021, so they keep `DOUBT_RATIO`).
DOUBT_VOLUME_RATIO = 1e3


def _where(index: tuple, columns: tuple[str, ...]) -> str:
    """'asset 2, row 87, column rv' from an index into (assets, days, columns)."""
    *lead, row, column = (int(i) for i in index)
    asset = f"asset {lead[0]}, " if lead else ""
    return f"{asset}row {row}, column {columns[column]}"


def value_problems(batch: np.ndarray, columns: tuple[str, ...] = INPUT_COLUMNS) -> np.ndarray:
    """(assets, days) True where a row has a non-finite or impossible value."""
    return problem_cells(batch, columns).any(axis=-1)


def problem_cells(batch: np.ndarray, columns: tuple[str, ...] = INPUT_COLUMNS) -> np.ndarray:
    """(assets, days, columns) True where a value is non-finite or impossible: outside its column's range, or a
    return larger than its day's rv allows (the rv may be the wrong one; the row is refused either way)."""
    bad = ~np.isfinite(batch)
    for j, name in enumerate(columns):
        with np.errstate(invalid="ignore"):
            if name in NON_NEGATIVE:
                bad[..., j] |= batch[..., j] < 0
            elif name in FLAGS:
                bad[..., j] |= (batch[..., j] != 0) & (batch[..., j] != 1)
    if "ret" in columns:
        bad[..., columns.index("ret")] |= _return_too_large(batch, columns)
    return bad


def doubtful_values(batch: np.ndarray, columns: tuple[str, ...] = INPUT_COLUMNS) -> np.ndarray:
    """(assets, days, columns) True where a possible value lies far outside its asset's window (along
    the days axis): a variance measure or traded value above `DOUBT_RATIO` x the median of its column, a
    volume above `DOUBT_VOLUME_RATIO` x it, a volume, traded value, rv or Parkinson variance below
    1 / `DOUBT_RATIO` x it, a squared return above `DOUBT_RATIO` x the median rv or above `DOUBT_RETURN_BARS`
    x its own day's rv, an rv above what `DOUBT_RETURN_BARS` bars within the day's range allow, an average
    price (traded_value / volume) that jumped from the day before's beyond its return and ranges, a row equal
    to the one before it in every column, a newest day that is incomplete, or a volume or traded value of 0 on
    every day (the newest row flagged)."""
    batch = np.asarray(batch, dtype=float)
    doubt = np.zeros(batch.shape, dtype=bool)
    with np.errstate(invalid="ignore", over="ignore"):
        good = np.where(value_problems(batch, columns)[..., None], np.nan, batch)
        none = np.isnan(good).all(axis=-2, keepdims=True)  # no good row: median 0, unusable (and no warning)
        median = np.nanmedian(np.where(none, 0.0, good), axis=-2, keepdims=True)
        usable = np.isfinite(median) & (median > 0)
        for j, name in enumerate(columns):
            if name in NON_NEGATIVE:
                value, typical = batch[..., j], median[..., j]
                low = (value < typical / DOUBT_RATIO) if name in DOUBT_LOW else False
                high = DOUBT_VOLUME_RATIO if name == "volume" else DOUBT_RATIO
                doubt[..., j] = usable[..., j] & ((value > high * typical) | low)
        if "ret" in columns and "rv" in columns:
            j, rv = columns.index("ret"), columns.index("rv")
            doubt[..., j] = (usable[..., rv] & (np.square(batch[..., j]) > DOUBT_RATIO * median[..., rv])) | (
                _return_too_large(batch, columns, DOUBT_RETURN_BARS))
        if "rv" in columns:
            doubt[..., columns.index("rv")] |= _rv_beyond_range(batch, columns)
        if "traded_value" in columns:
            doubt[..., 1:, columns.index("traded_value")] |= _price_jump(batch, columns)
    for j in _silent_columns(columns):
        doubt[..., -1, j] |= (np.nan_to_num(good[..., j], nan=0.0) == 0).all(axis=-1)
    doubt[..., 1:, :] |= _resent(batch)[..., None]
    if "complete" in columns:
        doubt[..., -RECENT_INCOMPLETE_DAYS:, columns.index("complete")] |= _cut_short(batch, columns)
    return doubt


def _silent_columns(columns: tuple[str, ...]) -> list[int]:
    """The traded quantities, doubtful on the newest row when they are zero on every day of the window: a feed
    without volume (an index price), not a market; read as the thinnest of markets, it lowered margins by up to
    10.6% in session 24's recheck (the fail-safe add-on covers that; the volume itself stays unknown)."""
    return [columns.index(name) for name in ("volume", "traded_value") if name in columns]


def _cut_short(batch: np.ndarray, columns: tuple[str, ...]) -> np.ndarray:
    """(assets, up to RECENT_INCOMPLETE_DAYS) True where one of the newest rows is an incomplete day: bars are
    missing (an outage, which comes on crash days), so its measures cover part of its moves and the model
    reads them as missing."""
    return batch[..., -RECENT_INCOMPLETE_DAYS:, columns.index("complete")] < 0.5


def _resent(batch: np.ndarray) -> np.ndarray:
    """(assets, days - 1) True where a row equals the row before it in every column: a feed sending the
    day before's row again under a new date (no two consecutive days of the 129 assets of the shared data
    are equal; the day's true moves are unknown, and a calm repeat of a crash day lowers the margin)."""
    return (batch[..., 1:, :] == batch[..., :-1, :]).all(axis=-1)


def doubt_message(doubt: np.ndarray, batch: np.ndarray, offset: int = 0,
                  columns: tuple[str, ...] = INPUT_COLUMNS, dates: np.ndarray | None = None) -> str:
    """One line naming the first doubtful value of one asset's (days, columns) window, its row counted
    from `offset`, or its date where the window's `dates` are given ('' if none)."""
    if not doubt.any():
        return ""
    row, column = (int(i) for i in np.argwhere(doubt)[0])

    def name(r: int) -> str:
        return f"row {r + offset}" if dates is None else f"the row of {dates[r]}"

    if column in _silent_columns(columns) and not batch[:, column].any():
        return (f"doubtful input: column {columns[column]} is 0 on every day of the window (a feed without volume?); "
                "priced fail-safe over every reading of it")
    if columns[column] == "complete":
        when = "the newest" if row == len(batch) - 1 else f"{len(batch) - 1 - row} day(s) before the newest"
        return (f"doubtful input: {name(row)}, {when}, is an incomplete day (bars missing); priced "
                "fail-safe over every reading of it")
    if row > 0 and _resent(batch[row - 1:row + 1])[0]:
        return (f"doubtful input: {name(row)} repeats {name(row - 1)} in every column (a feed "
                "re-sending the day before?); priced fail-safe over every reading of it")
    if columns[column] == "ret" and _return_too_large(batch[row], columns, DOUBT_RETURN_BARS):
        return (f"doubtful input: {name(row)}, column ret = {batch[row, column]:g} is larger than "
                f"{DOUBT_RETURN_BARS} hourly bars with that day's rv allow (ret^2 <= {DOUBT_RETURN_BARS} x rv); "
                "priced fail-safe over every reading of it")
    if columns[column] == "traded_value" and row > 0 and _price_jump(batch[row - 1:row + 1], columns)[0]:
        return (f"doubtful input: {name(row)}, the day's average price (traded_value / volume) moved from "
                f"{name(row - 1)}'s by more than its return and the two days' ranges allow (a volume or traded "
                "value in the wrong unit?); priced fail-safe over every reading of it")
    if columns[column] == "rv" and _rv_beyond_range(batch[row], columns):
        return (f"doubtful input: {name(row)}, column rv = {batch[row, column]:g} is larger than "
                f"{DOUBT_RETURN_BARS} hourly bars within that day's range allow (rv <= {DOUBT_RETURN_BARS} x 4 ln 2 x "
                "parkinson); priced fail-safe over every reading of it")
    ratio = DOUBT_VOLUME_RATIO if columns[column] == "volume" and batch[row, column] > 0 else DOUBT_RATIO
    return (f"doubtful input: {name(row)}, column {columns[column]} = {batch[row, column]:g} is over "
            f"{ratio:g} times from its window's median; priced fail-safe over every reading of it")


def served_float(dtype) -> bool:
    """A float dtype the runtime reads: float32, float64 or wider (float16's sums overflow at 65,504)."""
    return np.issubdtype(dtype, np.floating) and np.dtype(dtype).itemsize >= 4


def check_values(name: str, batch: np.ndarray, columns: tuple[str, ...] = INPUT_COLUMNS) -> np.ndarray:
    """Floating-point daily inputs (assets, days, columns) with no bad value; raises naming the first."""
    batch = np.asarray(batch)
    if not served_float(batch.dtype):
        raise InputDtypeError(f"{name} must be float32 or float64, got dtype {batch.dtype}")
    finite = np.isfinite(batch)
    if not finite.all():
        index = tuple(np.argwhere(~finite)[0])
        raise NonFiniteInputError(f"{name} has NaN or infinite values (first at {_where(index, columns)})")
    for j, column in enumerate(columns):
        values = batch[..., j]
        if column in NON_NEGATIVE and (values < 0).any():
            index = (*np.argwhere(values < 0)[0], j)
            raise ImpossibleInputError(f"{name}: {_where(index, columns)} = {batch[index]:g} is negative "
                                       f"({column} cannot be)")
        if column in FLAGS and ((values != 0) & (values != 1)).any():
            index = (*np.argwhere((values != 0) & (values != 1))[0], j)
            raise ImpossibleInputError(f"{name}: {_where(index, columns)} = {batch[index]:g} is not 0 or 1")
    too_large = _return_too_large(batch, columns)
    if too_large.any():
        index = (*np.argwhere(too_large)[0], columns.index("ret"))
        raise ImpossibleInputError(f"{name}: {_where(index, columns)} = {batch[index]:g} is larger than the day's "
                                   f"realized variance allows (ret^2 <= {MAX_BARS_PER_DAY} x rv)")
    return batch


def check_dates(days: np.ndarray, as_of: np.datetime64, max_age: np.timedelta64, gaps: bool = True) -> None:
    """Daily dates (..., days) strictly increasing, none after as_of's day, the newest within `max_age`
    of as_of and (with `gaps`) one row per calendar day."""
    step = np.diff(days.astype(np.int64), axis=-1)
    if days.shape[-1] > 1 and not (step > 0).all():
        raise UnsortedInputError("dates must be strictly increasing along the time axis (unsorted or duplicate rows)")
    today = np.datetime64(as_of, "D")
    if (days > today).any():
        raise FutureInputError(f"a row is dated {days.max()}, after as_of {as_of}: data from a day not yet over")
    if gaps and (step > 1).any():
        index = tuple(int(i) for i in np.argwhere(step > 1)[0])
        raise GapInputError(f"dates skip {int(step[index]) - 1} day(s) after {days[index]} inside the model's window "
                            "(a missing daily row)")
    oldest = np.min(days[..., -1])
    if oldest < today - max_age:
        raise StaleInputError(f"newest daily row is {oldest}, older than {max_age} before {as_of}")


def check_bars(ohlcv: np.ndarray) -> np.ndarray:
    """Intraday bars (bars, 5: open, high, low, close, volume) a market could have printed."""
    ohlcv = np.asarray(ohlcv)
    if not served_float(ohlcv.dtype):
        raise InputDtypeError(f"ohlcv must be float32 or float64, got dtype {ohlcv.dtype}")
    if not np.isfinite(ohlcv).all():
        raise NonFiniteInputError(f"ohlcv has NaN or infinite values (first at bar {np.argwhere(~np.isfinite(ohlcv))[0][0]})")
    if ohlcv.ndim != 2 or ohlcv.shape[1] != 5:
        return ohlcv  # the caller reports the shape
    o, h, lo, c, v = ohlcv.T
    for problem, bad in (("a non-positive price", (ohlcv[:, :4] <= 0).any(axis=1)), ("high < low", h < lo),
                         ("open or close outside [low, high]", (o < lo) | (o > h) | (c < lo) | (c > h)),
                         ("negative volume", v < 0)):
        if bad.any():
            raise ImpossibleInputError(f"ohlcv: bar {int(np.argmax(bad))} has {problem}")
    return ohlcv
