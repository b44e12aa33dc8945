"""Readings of one asset's refused or doubtful daily inputs, for a fail-safe margin never below the truth.

Where an asset's inputs are refused (a bad value, a misdated row) or doubtful (a value far outside its
own window, see `validation.doubtful_values`), the true rows are unknown. `readings` gives the windows
that could be true, and `Runtime.margins` prices the asset at the largest margin over them (plus the
doubt add-on of `margins.price`), never a margin of its own:
- dating: as given (rows after as_of dropped, rows sorted, a day given twice or missing counted as
  missing), or the rows in the order given on consecutive days ending at the newest day not after
  as_of (a feed that misdated its rows: the newest row stamped tomorrow, one day stamped twice; where
  the last rows do not advance the date, the newest days stamped with an earlier one, the window ends
  as many days after the newest date, at most at as_of);
- each row holding a bad or doubtful value, replaced as missing (as training treats missing data), or as
  the worst day of the window: every variance measure and volume at its window maximum, the return at
  plus or minus the largest absolute return, the maxima taken either over every value that may be true,
  the bad rows' good cells included (one bad cell on the day of a crash leaves the crash in its other
  cells: bench/faults.py's draw 15 sent DOGE's 2025-10-10 with its volume as text, and the maxima of the
  other days alone priced it 25.6% short), or over the rows without a bad or doubtful value (a bad row's
  other cells may be wrong too; the model is not monotone in its inputs, so neither reading bounds the
  other).
Inputs of the wrong type are read as far as they can be (`float_cells`, `calendar_days`): a cell that is
not a number is a bad value, dates given as ISO text are dates.
"""

from __future__ import annotations

from itertools import product

import numpy as np

from volmargin_serving.features import INPUT_COLUMNS
from volmargin_serving.validation import FLAGS, NON_NEGATIVE, doubtful_values, problem_cells

DATINGS = ("as_given", "consecutive")
# `_of_others`: the maxima over the rows without a bad or doubtful value only
VALUES = ("missing", "worst_up", "worst_down", "worst_up_of_others", "worst_down_of_others")
READINGS = tuple(product(DATINGS, VALUES))


def _dated_as_given(x: np.ndarray, days: np.ndarray, today: np.datetime64,
                    length: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The last `length` calendar days up to the newest row not after `today`, rows placed on their dates."""
    kept = days <= today
    order = np.argsort(days[kept], kind="stable")
    x, days = x[kept][order], days[kept][order]
    if not len(days):
        return None
    grid = np.arange(days[-1] - np.timedelta64(length - 1, "D"), days[-1] + np.timedelta64(1, "D"))
    window = np.full((length, x.shape[1]), np.nan)
    position = (days - grid[0]).astype(np.int64)
    inside = position >= 0
    window[position[inside]] = x[inside]
    window[np.bincount(position[inside], minlength=length) > 1] = np.nan  # a day given twice: unknown
    return window, grid


def _dated_consecutive(x: np.ndarray, days: np.ndarray, today: np.datetime64,
                       length: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The last `length` rows in the order given, on consecutive days ending at the newest date plus the rows
    after the last one that advanced the date (the newest days stamped with an earlier one), at most today."""
    if not len(days):
        return None
    window = np.full((length, x.shape[1]), np.nan)
    rows = x[-length:]
    window[length - len(rows):] = rows
    advanced = np.r_[True, days[1:] > np.maximum.accumulate(days)[:-1]]
    behind = len(days) - 1 - np.flatnonzero(advanced)[-1]
    end = min(days.max() + np.timedelta64(int(behind), "D"), today)
    return window, np.arange(end - np.timedelta64(length - 1, "D"), end + np.timedelta64(1, "D"))


_DATED = {"as_given": _dated_as_given, "consecutive": _dated_consecutive}


def float_cells(inputs) -> np.ndarray | None:
    """One asset's inputs as float64, a cell that is not a number (text, None, an object) as NaN, so that
    one bad cell makes a bad row, not an asset without any reading; None if not a 2-d table."""
    try:
        return np.asarray(inputs, dtype=np.float64)
    except (TypeError, ValueError):
        pass
    try:
        cells = np.asarray(inputs, dtype=object)
    except ValueError:  # ragged rows
        return None
    if cells.ndim != 2:
        return None
    out = np.full(cells.shape, np.nan)
    for index, cell in np.ndenumerate(cells):
        try:
            out[index] = float(cell)
        except (TypeError, ValueError):
            pass
    return out


def calendar_days(dates) -> np.ndarray | None:
    """Dates as datetime64[D]: datetime64 values, or ISO text ('2024-03-01'); None otherwise (numbers are
    no dates: their unit is unknown)."""
    values = np.asarray(dates)
    if values.dtype.kind not in "MUSO":
        return None
    try:
        return values.astype("datetime64[D]")
    except (TypeError, ValueError):
        return None


def _worst(window: np.ndarray, suspect: np.ndarray, value: str) -> np.ndarray:
    """`window` with the rows holding a `suspect` cell (a bad or doubtful value) replaced as `value` says (see the
    module's docstring)."""
    out, bad = window.copy(), suspect.any(axis=-1)
    out[bad] = np.nan
    if value == "missing":
        for j, name in enumerate(INPUT_COLUMNS):
            if name in FLAGS:
                out[bad, j] = 0.0
        return out
    pool = np.where(bad[:, None] if value.endswith("_of_others") else suspect, np.nan, window)
    with np.errstate(all="ignore"):
        for j, name in enumerate(INPUT_COLUMNS):
            column = pool[:, j]
            largest = np.nanmax(np.abs(column)) if np.isfinite(column).any() else np.nan
            if name in FLAGS:
                out[bad, j] = 1.0
            elif name in NON_NEGATIVE:
                out[bad, j] = largest
            elif name == "ret":
                out[bad, j] = largest if value.startswith("worst_up") else -largest
    return out


def _datings(x: np.ndarray, dates: np.ndarray, as_of: np.datetime64, length: int,
             max_age: np.timedelta64) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """Per dating that makes a fresh window of `x` (rows, columns), the window and its days; None if none."""
    today = np.datetime64(as_of, "D")
    if np.asarray(dates).dtype.kind == "M" and np.isnat(dates).any():  # a row of no date has no day: no reading
        return None
    dated = {}
    for dating in DATINGS:
        made = _DATED[dating](x, dates, today, length)
        if made is not None and made[1][-1] >= today - max_age:
            dated[dating] = made
    return dated or None


def carried(values: np.ndarray, dates: np.ndarray, as_of: np.datetime64, length: int,
            max_age: np.timedelta64) -> np.ndarray | None:
    """(len(READINGS), length): a value per row that is no input of the checks (the implied-volatility index)
    placed as each of `readings` places the rows; None where no reading can be made."""
    dated = _datings(np.asarray(values, dtype=float)[:, None], dates, as_of, length, max_age)
    if dated is None:
        return None
    return np.stack([(dated.get(dating) or next(iter(dated.values())))[0][:, 0] for dating, _ in READINGS])


def readings(inputs: np.ndarray, dates: np.ndarray, as_of: np.datetime64, length: int,
             max_age: np.timedelta64) -> tuple[np.ndarray, np.ndarray] | None:
    """(len(READINGS), length, columns) windows of one asset's (rows, columns) float inputs and their
    (len(READINGS), length) dates; a dating that cannot make a window (no row, or its newest too old)
    repeats another's, and None where neither can."""
    dated = _datings(inputs, dates, as_of, length, max_age)
    if dated is None:
        return None
    suspects = {}  # per dating: the bad or doubtful cells of its window
    windows, grids = [], []
    for dating, value in READINGS:
        window, grid = dated.get(dating) or next(iter(dated.values()))
        if dating not in suspects:
            with np.errstate(invalid="ignore"):
                suspects[dating] = problem_cells(window) | doubtful_values(window)
        windows.append(_worst(window, suspects[dating], value))
        grids.append(grid)
    return np.stack(windows), np.stack(grids)
