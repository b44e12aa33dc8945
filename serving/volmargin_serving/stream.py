"""Incremental serving: per-asset state that folds in each newly closed day instead of recomputing the history.

    state = runtime.stream(history, dates, as_of=today)    # (assets, days, columns): full careful checks
    out, errors = state.update(rows, days, as_of=today)     # (assets, columns): one closed day per asset
    margins = state.margins(names, rows, days, as_of=today)  # or margin figures, as Runtime.margins
    single = runtime.stream(history[0], dates)               # one asset: `AssetState`
    single.update(row, day)                                  # Forecasts, or the careful path's InputError

A forecast from daily inputs recomputes every feature of the model's window from `history_days` rows, but
features are causal: when a day closes, only its own row is new. The state keeps, per asset, the running
sums of the `features.TRAILING_MEANS` (over rings of the last `level_days` days' terms), the last
`month_days + 1` levels, the last `level_days` squared returns, the last `window` standardized feature
rows and the raw rows of the last `history_days` days. `update` checks the new row (the rules of
`validation.value_problems`; exactly the next day, not after `as_of`, fresh), adds it to the sums and
drops the day leaving each window, and computes the day's features with the core's own
`features.feature_columns` from those means: the one feature definition training and the careful path
use. Then one model run and `outputs.postprocess`; no per-asset Python loop.

A refused row leaves the state as it was, and its error is the careful path's own: the forecast is
recomputed by `Runtime._forecast_daily` from the stored rows and the new one, which raises the typed
error. A state that refused a day cannot take the next one (a gap): start it again from the history.

Running sums differ from the core's cumulative-sum differences by rounding, which accumulates: each sum
is recomputed from its ring every `level_days` days (sum k on day numbers k modulo level_days, so that no
update pays for all of them). The standardized features stay within float32 rounding of the core's on
1,000+ real days (tests/test_serving_stream.py), except where rounding alone decides a value: rv_disp of a
window whose log RVs are all equal (e.g. one complete day in it) is the square root of a rounding residue,
~1e-6, in the core as here. Not thread-safe: one owner per state.
"""

from __future__ import annotations

import datetime
import math
from operator import itemgetter

import numpy as np

from volmargin_serving.errors import BundleError, InputDtypeError, InputError, InputShapeError
from volmargin_serving.features import (
    _FLOOR, INPUT_COLUMNS, compute_features, daily_series, feature_columns, horizon_level, level_of, mean_windows,
    standardize,
)
from volmargin_serving.margins import Margins
from volmargin_serving.outputs import Forecasts, postprocess, postprocess_one
from volmargin_serving.runtime import _instant, partial_days
from volmargin_serving.validation import FLAGS, MAX_BARS_PER_DAY, NON_NEGATIVE, served_float, value_problems

_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0), as in runtime._weekday
# A running sum is re-based from its ring at once when the term leaving it is this many times what is left: the
# leaving term's rounding (1e-16 of it) stays in the sum, and after a day in the wrong unit (traded value x1e20)
# the sum stayed 0 or negative for up to 90 days, 113 sd off the core's feature (session 30's red team)
CANCEL_RATIO = 1e6


def _day_numbers(dates, shape: tuple[int, ...], name: str = "dates") -> np.ndarray:
    """int64 days since 1970-01-01 of datetime64 dates, broadcast to `shape`."""
    dates = np.asarray(dates)
    if not np.issubdtype(dates.dtype, np.datetime64):
        raise InputDtypeError(f"{name} must be numpy datetime64 (UTC days), got dtype {dates.dtype}")
    try:
        return np.broadcast_to(dates.astype("datetime64[D]").astype(np.int64), shape)
    except ValueError:
        raise InputShapeError(f"{name} have shape {dates.shape}; expected {shape} or one date") from None


_DAYS = np.dtype("datetime64[D]")
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()


def _day_number(date, name: str = "date") -> int:
    """Days since 1970-01-01 of one datetime64 date (a datetime64[D] scalar by a quick route: its
    `datetime.date`, which numpy gives for years 1 to 9999, at half the cost of a numpy view)."""
    if isinstance(date, np.datetime64) and date.dtype == _DAYS:
        value = date.item()
        if isinstance(value, datetime.date):
            return value.toordinal() - _EPOCH_ORDINAL
    return int(_day_numbers(date, (), name))


def _today(as_of) -> int:
    return _day_number(as_of if isinstance(as_of, np.datetime64) else _instant(as_of), "as_of")


class StreamState:
    """The incremental state of a batch of assets (see the module's docstring); made by `Runtime.stream`."""

    def __init__(self, runtime, inputs: np.ndarray, dates, as_of=None):
        if runtime.iv_features:
            raise BundleError(f"{runtime.path}: a model with implied-volatility features has no incremental path")
        self.runtime, spec = runtime, runtime.spec
        history = runtime.history_days
        batch, days = runtime._checked_history(inputs, dates, _instant(as_of))
        batch, days = batch.astype(np.float64), days.astype(np.int64)
        if days.ndim == 1:
            days = np.broadcast_to(days, batch.shape[:2])
        n = len(batch)
        self._assets = np.arange(n)
        self._windows = np.array(mean_windows(spec) * 2)  # sums of values, then of counts
        self._ring = max(self._windows)
        self._lag = spec.month_days
        columns = _columns(batch)
        series = daily_series(columns)  # (means, assets, days)
        # the last `_ring` days' terms, squared returns; the last month_days + 1 levels; the last window's
        # standardized features; the last `history_days` raw rows: each ring indexed by day number modulo its length
        recent = slice(-self._ring, None)
        self.terms = self._by_day(np.moveaxis(_terms(series[..., recent]), 0, -1), days[:, recent], self._ring)
        level_days = spec.level_days  # the largest squared return: over the level window
        self.squares = self._by_day(columns["ret"][:, -level_days:] ** 2, days[:, -level_days:], level_days)
        kept = max(runtime.window, self._lag + 1)
        features, level = compute_features(columns, (days + _EPOCH_WEEKDAY) % 7, spec, last=kept)
        self.levels = self._by_day(level[:, -self._lag - 1:], days[:, -self._lag - 1:], self._lag + 1)
        standardized = standardize(features[:, -runtime.window:, :runtime.core_width], runtime.mean, runtime.scale)
        self.features = self._by_day(standardized, days[:, -runtime.window:], runtime.window)
        self.rows = self._by_day(batch, days, history)
        self.day = days[:, -1].copy()
        self.sums = np.zeros((n, len(self._windows)))
        self._rebase(self._assets)

    @staticmethod
    def _by_day(values: np.ndarray, days: np.ndarray, length: int) -> np.ndarray:
        """A ring (assets, length, ...) holding values (assets, days, ...) at their day number modulo length."""
        ring = np.zeros((values.shape[0], length, *values.shape[2:]), dtype=values.dtype)
        ring[np.arange(len(values))[:, None], days % length] = values
        return ring

    def __len__(self) -> int:
        return len(self.day)

    def _rebase(self, assets: np.ndarray, sums: np.ndarray | None = None) -> None:
        """Recompute running sums from the rings (the drift of adding and removing ends): of `assets`, all
        of them or the one numbered `sums` per asset."""
        age = (self.day[assets, None] - np.arange(self._ring)) % self._ring  # (assets, ring): days before the newest
        if sums is None:
            self.sums[assets] = np.where(age[:, :, None] < self._windows, self.terms[assets], 0.0).sum(axis=1)
        else:
            inside = age < self._windows[sums, None]
            self.sums[assets, sums] = np.where(inside, self.terms[assets, :, sums], 0.0).sum(axis=1)

    def history(self, asset: int) -> tuple[np.ndarray, np.ndarray]:
        """One asset's last `history_days` raw rows (days, columns) in time order and their dates."""
        days = self.day[asset] - np.arange(self.rows.shape[1])[::-1]
        return self.rows[asset, days % self.rows.shape[1]], days.astype("datetime64[D]")

    def update(self, rows: np.ndarray, dates, as_of=None) -> tuple[Forecasts, list[InputError | None]]:
        """Fold in each asset's newly closed day, rows (assets, len(INPUT_COLUMNS)) dated `dates` (one date
        or one per asset), and forecast from it. Per asset the error of a refused row (None if accepted):
        its forecast is NaN and its state unchanged. A call with the wrong shape or dtype raises."""
        rows = self._checked_rows(rows)
        days = _day_numbers(dates, (len(self),))
        today = _today(as_of)
        accepted = ~value_problems(rows[:, None, :])[:, 0] & (days == self.day + 1) & (days <= today)
        accepted &= days >= today - self.runtime._max_age_days
        errors: list[InputError | None] = [None] * len(self)
        if accepted.all():
            return self._advance(self._assets, rows, days), errors
        for k in np.flatnonzero(~accepted):
            errors[k] = _careful_error(self.runtime, *self.history(k), rows[k], days[k], as_of)
        taken = np.flatnonzero(accepted)
        out = _spread(self._advance(taken, rows[taken], days[taken]) if len(taken) else None, taken, len(self),
                      self.runtime)
        return out, errors

    def margins(self, assets: list[str], rows: np.ndarray, dates, as_of=None,
                previous: np.ndarray | None = None) -> Margins:
        """`Runtime.margins` from one newly closed day per asset: `assets` names the state's assets in its
        order (for the calibration set), rows and dates as for `update`, `previous` as for `Runtime.margins`.
        The figures are those of `Runtime.margins` on each asset's last `history_days` rows: a refused row
        prices its asset fail safe over every reading of the stored rows and the new one (the state
        unchanged), a doubtful value in the window likewise, an asset not in the calibration set gets 1."""
        runtime = self.runtime
        assets, instant, terms, previous = runtime._margin_terms(assets, as_of, previous)
        if len(assets) != len(self):
            raise InputShapeError(f"assets must name the state's {len(self)} assets, got {len(assets)}")
        rows, days = self._checked_rows(rows), _day_numbers(dates, (len(self),))
        out, refused = self.update(rows, dates, instant)
        wanted = terms.known.any(axis=1)
        errors, readings = np.full(len(self), "", dtype=object), runtime._no_readings(len(self))
        served = np.flatnonzero(wanted & np.array([error is None for error in refused]))
        stored = self._stored_rows(served)
        for k, message in zip(served, runtime._doubts(stored) if len(served) else ()):
            if message:
                errors[k] = message
                runtime._read_into(readings, k, *self.history(k), instant)
        for k in np.flatnonzero(wanted & np.array([error is not None for error in refused])):
            errors[k] = f"{type(refused[k]).__name__}: {refused[k]}"
            kept, kept_days = self.history(k)  # not `stored`: that holds the served assets' rows, read below
            runtime._read_into(readings, k, np.vstack([kept, rows[k]]),
                               np.append(kept_days, np.datetime64(int(days[k]), "D")), instant)
        forecasts = _spread(Forecasts(out.variance[wanted], out.var[wanted], out.es[wanted], out.levels, out.horizon),
                            np.flatnonzero(wanted), len(self), runtime)
        for k in served[partial_days(stored)] if len(served) else ():
            runtime._read_days_whole((forecasts.variance, forecasts.var, forecasts.es), k, *self.history(k))
        doubtful = [Forecasts(*reading, runtime.levels, runtime.horizon) for reading in readings]
        return runtime._price(assets, terms, forecasts, errors, doubtful, previous, instant)

    def _stored_rows(self, assets: np.ndarray) -> np.ndarray:
        """The stored rows (assets, history_days, columns) of `assets`, in time order."""
        length = self.rows.shape[1]
        return self.rows[assets[:, None], (self.day[assets, None] - np.arange(length)[::-1]) % length]

    def _checked_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        if not served_float(rows.dtype):
            raise InputDtypeError(f"rows must be float32 or float64, got dtype {rows.dtype}")
        if rows.shape != (len(self), len(INPUT_COLUMNS)):
            raise InputShapeError(f"rows must have shape ({len(self)}, {len(INPUT_COLUMNS)}), got {rows.shape}")
        return rows.astype(np.float64, copy=False)

    def _advance(self, assets: np.ndarray, rows: np.ndarray, days: np.ndarray) -> Forecasts:
        """Fold checked rows into the state of `assets` and forecast."""
        runtime, ring = self.runtime, self._ring
        columns = _columns(rows)
        series = daily_series(columns)  # (means, assets)
        terms = _terms(series).T
        leaving = self.terms[assets[:, None], (days[:, None] - self._windows) % ring, np.arange(len(self._windows))]
        self.sums[assets] += terms - leaving
        slot = days % ring
        self.terms[assets, slot] = terms
        self.squares[assets, days % self.squares.shape[1]] = columns["ret"] ** 2
        self.rows[assets, days % self.rows.shape[1]] = rows
        self.day[assets] = days
        due = slot < len(self._windows)  # re-base sum k on days numbered k modulo the ring: one sum a day at most
        if due.any():
            self._rebase(assets[due], slot[due])
        cancelled, k = np.nonzero(np.abs(leaving) > CANCEL_RATIO * np.abs(self.sums[assets]))
        if len(k):
            self._rebase(assets[cancelled], k)
        means = _means(self.sums[assets])
        level = level_of(means)
        lags = self._lag + 1
        level_change = level - self.levels[assets, (days - self._lag) % lags]
        self.levels[assets, days % lags] = level
        max_square = self.squares[assets].max(axis=1)
        features = feature_columns(series, means, level, level_change, max_square, columns,
                                   (days + _EPOCH_WEEKDAY) % 7, runtime.spec)
        window = runtime.window
        self.features[assets, days % window] = standardize(features[..., :runtime.core_width], runtime.mean,
                                                           runtime.scale)
        # the model runs on every asset's window, refused ones' as they were, and keeps the `assets`' rows: some
        # ONNX Runtime kernels round an element by its place in the batch, so a refused asset leaves the
        # others' figures as the whole batch would have had them, to the last bit
        ordered = self.features[self._assets[:, None], (self.day[:, None] + 1 + np.arange(window)) % window]
        raw = runtime.run_model(ordered)[assets]
        return Forecasts(*postprocess(raw, horizon_level(level, runtime.horizon), len(runtime.levels)),
                         runtime.levels, runtime.horizon)


class AssetState:
    """The incremental state of one asset, in plain Python floats: on one asset's arrays numpy's fixed cost
    per call, about a microsecond, is most of the work, and an update makes some hundred of them.

    Started from a one-asset `StreamState` (the careful checks and the core built it), it keeps the same
    rings as lists and applies the same steps: the checks of `validation.value_problems`, then
    `daily_series` and `feature_columns` written out for one row (tests/test_serving_stream.py holds the
    two to the core and to each other). The model runs bound to the state's own feature and output
    buffers (`Runtime.bind_model`), so a call converts no arrays. `update(row, date)` returns the
    forecast or raises the careful path's `InputError`, the state unchanged."""

    def __init__(self, runtime, inputs: np.ndarray, dates, as_of=None):
        inputs = np.asarray(inputs)
        if inputs.ndim != 2:
            raise InputShapeError(f"inputs must have shape (days, {len(INPUT_COLUMNS)}), got {inputs.shape}")
        start = StreamState(runtime, inputs[None], dates, as_of)
        self.runtime, self._spec = runtime, runtime.spec
        self.day = int(start.day[0])
        self._windows = start._windows.tolist()
        self._ring, self._lag = start._ring, start._lag
        self._terms, self._squares = start.terms[0].tolist(), start.squares[0].tolist()
        self._max_square = max(self._squares)
        self._levels, self._sums = start.levels[0].tolist(), start.sums[0].tolist()
        self._rows = start.rows[0].tolist()  # raw rows as lists: an array is only built on a refusal
        # the standardized features twice over, so that the window is always one contiguous slice
        self._features = np.concatenate([start.features[0], start.features[0]])
        # the model bound to each window's place in that buffer and to one output row (no per-call arrays)
        window = runtime.window
        self._raw = np.zeros((1, 1 + 4 * len(runtime.levels)), dtype=np.float32)
        self._model = runtime.bind_model([self._features[None, slot + 1:slot + 1 + window]
                                          for slot in range(window)], self._raw)
        self._mean, self._scale = runtime.mean.tolist(), runtime.scale.tolist()
        self._log_horizon = float(np.log(runtime.horizon))
        self._sqrt_week = math.sqrt(runtime.spec.week_days)

    def history(self) -> tuple[np.ndarray, np.ndarray]:
        """The last `history_days` raw rows (days, columns) in time order and their dates."""
        days = self.day - np.arange(len(self._rows))[::-1]
        return np.array([self._rows[d] for d in days % len(self._rows)]), days.astype("datetime64[D]")

    def update(self, row: np.ndarray, date, as_of=None) -> Forecasts:
        """Fold in the newly closed day `row` (len(INPUT_COLUMNS),) dated `date` and forecast from it."""
        row = np.asarray(row)
        if not served_float(row.dtype):  # float16 too, as every other path (summed in half precision)
            raise InputDtypeError(f"row must be float32 or float64, got dtype {row.dtype}")
        if row.shape != (len(INPUT_COLUMNS),):
            raise InputShapeError(f"row must have shape ({len(INPUT_COLUMNS)},), got {row.shape}")
        day = _day_number(date)
        today = _today(as_of)
        values = row.tolist()
        if not (self._possible(values) and day == self.day + 1 and today - self.runtime._max_age_days <= day <= today):
            raise _careful_error(self.runtime, *self.history(), row, day, as_of)
        return self._advance(values, day)

    def _possible(self, values: list[float]) -> bool:
        """`validation.value_problems` of one row, negated: finite, non-negative, 0/1 flags, a possible return."""
        if not all(map(math.isfinite, values)):
            return False
        if min(_NON_NEGATIVE(values)) < 0 or any(flag not in (0.0, 1.0) for flag in _FLAGS(values)):
            return False
        ret, rv = values[_RET], values[_RV]
        return not ret * ret > MAX_BARS_PER_DAY * rv * (1 + 1e-9)

    def _series(self, values: list[float]) -> list[float]:
        """`features.daily_series` of one checked row."""
        rv, bv = values[_RV], values[_BV]
        complete = values[_COMPLETE] > 0.5
        log_rv_all = _log(rv)
        rv_c = rv if complete else math.nan
        log_rv_c = log_rv_all if complete else math.nan
        if not complete:
            jump = math.nan
        elif rv > 0:
            jump = min(max((rv - bv) / rv, 0.0), 1.0)
        else:  # numpy's (0 - bv) / 0: -inf, clipped to 0, or NaN where bv is 0 too
            jump = 0.0 if bv > 0 else math.nan
        return [log_rv_c, log_rv_all, rv_c, rv_c, values[_RET], _log(values[_VOLUME]), rv_c, log_rv_c * log_rv_c, jump,
                values[_TRADED_VALUE], rv_c]

    def _advance(self, values: list[float], day: int) -> Forecasts:
        runtime, spec, ring = self.runtime, self._spec, self._ring
        series = self._series(values)
        terms = [x if x == x else 0.0 for x in series] + [1.0 if x == x else 0.0 for x in series]
        sums, windows, rings = self._sums, self._windows, self._terms
        cancelled, n = [], len(series)
        for k, term in enumerate(terms):
            leaving = rings[(day - windows[k]) % ring][k]
            sums[k] += term - leaving
            if k < n and abs(leaving) > CANCEL_RATIO * abs(sums[k]):  # counts (0 / 1 terms) cannot cancel
                cancelled.append(k)
        ret = values[_RET]
        rings[day % ring] = terms
        square, squares = ret * ret, self._squares
        leaving, squares[day % len(squares)] = squares[day % len(squares)], square
        if square >= self._max_square:
            self._max_square = square
        elif leaving == self._max_square:  # the largest square left the window: look again
            self._max_square = max(squares)
        self._rows[day % len(self._rows)] = values
        self.day = day
        slot = day % ring  # the newest day's slot
        for k in (slot, *cancelled) if slot < len(sums) else cancelled:  # re-base sum k, as `StreamState` does,
            first = slot - windows[k] + 1  # exactly (fsum: the same in any order)
            window_days = rings[first:slot + 1] if first >= 0 else rings[first:] + rings[:slot + 1]
            sums[k] = math.fsum(map(itemgetter(k), window_days))
        means = [total / count if count > 0 else math.nan for total, count in zip(sums[:n], sums[n:])]
        level = means[0] if math.isfinite(means[0]) else means[1]
        lags = self._lag + 1
        level_change = level - self._levels[(day - self._lag) % lags]
        self._levels[day % lags] = level
        features = self._feature_row(series, means, level, level_change, self._max_square, values, day, spec)
        # standardize; zip stops at the model's last feature (a model without liquidity reads one column less)
        z = [(f - m) / s if f == f else 0.0 for f, m, s in zip(features, self._mean, self._scale)]
        window = runtime.window
        slot = day % window
        self._features[slot:slot + 2 * window:window] = z  # both copies in one step
        self._model[slot]()  # the window self._features[slot + 1:slot + 1 + window] -> self._raw
        variance, var, es = postprocess_one(self._raw, level + self._log_horizon, len(runtime.levels))
        return Forecasts(variance, var, es, runtime.levels, runtime.horizon)

    def _feature_row(self, series: list[float], m: list[float], level: float, level_change: float,
                     max_square: float, values: list[float], day: int, spec) -> list[float]:
        """`features.feature_columns` of one row, in its column order."""
        rv, log_volume, jump = series[2], series[5], series[8]
        scale = math.exp(0.5 * level)
        log_rv = _log(rv)
        clip = spec.ret_clip
        dow_sin, dow_cos = _WEEKDAY[(day + _EPOCH_WEEKDAY) % 7]
        return [
            log_rv - level,
            _log(m[2]) - level,
            _log(m[3]) - level,
            level_change,
            min(max(values[_RET] / scale, -clip), clip),
            min(max(self._sqrt_week * m[4] / scale, -clip), clip),
            jump,
            _log(values[_PARKINSON]) - log_rv,
            _log(values[_ROGERS_SATCHELL]) - log_rv,
            log_volume - m[5],
            dow_sin,
            dow_cos,
            _log(m[6]) - m[0],
            math.sqrt(max(m[7] - m[0] * m[0], 0.0)) if m[7] == m[7] and m[0] == m[0] else math.nan,
            m[8],
            _log(max_square) - level,
            _log(m[9]),
            _log(m[10]) - level,
        ]


def _getter(columns: list[int]):
    """`operator.itemgetter` of `columns` that returns a tuple, even of one column."""
    get = itemgetter(*columns)
    return get if len(columns) > 1 else lambda values: (get(values),)


# where each input sits in a row
_RET, _RV, _BV, _PARKINSON, _ROGERS_SATCHELL, _VOLUME, _TRADED_VALUE, _COMPLETE = (
    INPUT_COLUMNS.index(name) for name in ("ret", "rv", "bv", "parkinson", "rogers_satchell", "volume", "traded_value",
                                           "complete"))
# the row check's columns (`validation`), each set fetched from a row in one call
_NON_NEGATIVE = _getter([j for j, name in enumerate(INPUT_COLUMNS) if name in NON_NEGATIVE])
_FLAGS = _getter([j for j, name in enumerate(INPUT_COLUMNS) if name in FLAGS])


def _log(x: float) -> float:
    """`features._log` of one float: log(max(x, 1e-12)), NaN kept."""
    return math.log(x if x > _FLOOR else _FLOOR) if x == x else math.nan


# sin and cos of the day-of-week angle as numpy computes them in `feature_columns` (0 = Monday)
_WEEKDAY = [(float(np.sin(a)), float(np.cos(a))) for a in 2 * np.pi * np.arange(7) / 7]


def _careful_error(runtime, rows: np.ndarray, days: np.ndarray, row: np.ndarray, day: int, as_of) -> InputError:
    """The careful path's error on an asset's stored rows followed by its refused one."""
    try:
        runtime._forecast_daily(np.vstack([rows, row]), np.append(days, np.datetime64(int(day), "D")), _instant(as_of))
    except InputError as exc:
        return exc
    return InputError(f"row dated {np.datetime64(int(day), 'D')} refused: not the day after {days[-1]}")


def _columns(rows: np.ndarray) -> dict[str, np.ndarray]:
    """Checked rows (..., columns) as the core's input columns (`complete` boolean)."""
    columns = dict(zip(INPUT_COLUMNS, np.moveaxis(rows, -1, 0)))
    columns["complete"] = columns["complete"] > 0.5
    return columns


def _terms(series: np.ndarray) -> np.ndarray:
    """What each day adds to the trailing sums, as `features.trailing_means` counts it: values (0 where
    not finite), then counts (1 where finite), along the first axis."""
    known = np.isfinite(series)
    return np.concatenate([np.where(known, series, 0.0), known])


def _means(sums: np.ndarray) -> np.ndarray:
    """(means, assets) from running sums (assets, 2 x means): NaN where a window holds no valid day."""
    total, count = np.split(sums.T, 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def _spread(out: Forecasts | None, assets: np.ndarray, n: int, runtime) -> Forecasts:
    """Forecasts of some assets (None: of none) placed in a batch of n, NaN for the others."""
    variance, tails = np.full(n, np.nan), np.full((n, 2, len(runtime.levels)), np.nan)
    var, es = tails, tails.copy()
    if out is not None:
        variance[assets], var[assets], es[assets] = out.variance, out.var, out.es
    return Forecasts(variance, var, es, runtime.levels, runtime.horizon)
