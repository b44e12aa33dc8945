"""Incremental serving: per-asset state that folds in each newly closed day instead of recomputing the history.

    state = runtime.stream(history, dates, as_of=today)    # (assets, days, columns): full careful checks
    out, errors = state.update(rows, days, as_of=today)     # (assets, columns): one closed day per asset
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

Running sums differ from the core's cumulative-sum differences by rounding, which accumulates: every
`level_days` days (day number a multiple of it) the sums are recomputed from the rings. The difference
from the core stays within float32 rounding (tests/test_serving_stream.py, 1,000+ real days). Not
thread-safe: one owner per state.
"""

from __future__ import annotations

import numpy as np

from volmargin_serving.errors import InputDtypeError, InputError, InputShapeError
from volmargin_serving.features import (
    INPUT_COLUMNS, compute_features, daily_series, feature_columns, horizon_level, level_of, mean_windows, standardize,
)
from volmargin_serving.outputs import Forecasts, postprocess
from volmargin_serving.validation import value_problems

_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0), as in runtime._weekday


def _day_numbers(dates, shape: tuple[int, ...], name: str = "dates") -> np.ndarray:
    """int64 days since 1970-01-01 of datetime64 dates, broadcast to `shape`."""
    dates = np.asarray(dates)
    if not np.issubdtype(dates.dtype, np.datetime64):
        raise InputDtypeError(f"{name} must be numpy datetime64 (UTC days), got dtype {dates.dtype}")
    try:
        return np.broadcast_to(dates.astype("datetime64[D]").astype(np.int64), shape)
    except ValueError:
        raise InputShapeError(f"{name} have shape {dates.shape}; expected {shape} or one date") from None


def _today(as_of) -> int:
    instant = np.datetime64("now") if as_of is None else np.datetime64(as_of)
    return int(instant.astype("datetime64[D]").astype(np.int64))


class StreamState:
    """The incremental state of a batch of assets (see the module's docstring); made by `Runtime.stream`."""

    def __init__(self, runtime, inputs: np.ndarray, dates, as_of=None):
        if runtime.iv_features:
            raise InputError(f"{runtime.path}: a model with implied-volatility features has no incremental path")
        self.runtime, spec = runtime, runtime.spec
        history = runtime.history_days
        batch, days = runtime._checked_history(inputs, dates, np.datetime64("now") if as_of is None else as_of)
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
        self.squares = self._by_day(columns["ret"][:, recent] ** 2, days[:, recent], self._ring)
        kept = max(runtime.window, self._lag + 1)
        features, level = compute_features(columns, (days + _EPOCH_WEEKDAY) % 7, spec, last=kept)
        self.levels = self._by_day(level[:, -self._lag - 1:], days[:, -self._lag - 1:], self._lag + 1)
        standardized = standardize(features[:, -runtime.window:], runtime.mean, runtime.scale)
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

    def _rebase(self, assets: np.ndarray) -> None:
        """Recompute the running sums of `assets` from the rings (the drift of adding and removing ends)."""
        age = (self.day[assets, None] - np.arange(self._ring)) % self._ring  # (assets, ring): days before the newest
        inside = age[:, :, None] < self._windows
        self.sums[assets] = np.where(inside, self.terms[assets], 0.0).sum(axis=1)

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
            errors[k] = self._refusal(k, rows[k], days[k], as_of)
        taken = np.flatnonzero(accepted)
        out = self._advance(taken, rows[taken], days[taken])
        return _spread(out, taken, len(self)), errors

    def _checked_rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        if not np.issubdtype(rows.dtype, np.floating):
            raise InputDtypeError(f"rows must be float32 or float64, got dtype {rows.dtype}")
        if rows.shape != (len(self), len(INPUT_COLUMNS)):
            raise InputShapeError(f"rows must have shape ({len(self)}, {len(INPUT_COLUMNS)}), got {rows.shape}")
        return rows.astype(np.float64, copy=False)

    def _refusal(self, asset: int, row: np.ndarray, day: int, as_of) -> InputError:
        """The careful path's error on the stored rows followed by the refused one."""
        rows, days = self.history(asset)
        try:
            self.runtime._forecast_daily(np.vstack([rows, row]), np.append(days, np.datetime64(int(day), "D")),
                                         np.datetime64("now") if as_of is None else np.datetime64(as_of))
        except InputError as exc:
            return exc
        return InputError(f"row dated {np.datetime64(int(day), 'D')} refused: not the day after {days[-1]}")

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
        self.squares[assets, slot] = columns["ret"] ** 2
        self.rows[assets, days % self.rows.shape[1]] = rows
        self.day[assets] = days
        rebase = slot == 0
        if rebase.any():
            self._rebase(assets[rebase])
        means = _means(self.sums[assets])
        level = level_of(means)
        lags = self._lag + 1
        level_change = level - self.levels[assets, (days - self._lag) % lags]
        self.levels[assets, days % lags] = level
        max_square = self.squares[assets].max(axis=1)
        features = feature_columns(series, means, level, level_change, max_square, columns,
                                   (days + _EPOCH_WEEKDAY) % 7, runtime.spec)
        window = runtime.window
        self.features[assets, days % window] = standardize(features, runtime.mean, runtime.scale)
        ordered = self.features[assets[:, None], (days[:, None] + 1 + np.arange(window)) % window]
        raw = runtime.run_model(ordered)
        return Forecasts(*postprocess(raw, horizon_level(level, runtime.horizon), len(runtime.levels)),
                         runtime.levels, runtime.horizon)


class AssetState:
    """The incremental state of one asset: `update(row, date)` returns its forecast or raises the careful
    path's `InputError` (the state unchanged)."""

    def __init__(self, runtime, inputs: np.ndarray, dates, as_of=None):
        inputs, dates = np.asarray(inputs), np.asarray(dates)
        if inputs.ndim != 2:
            raise InputShapeError(f"inputs must have shape (days, {len(INPUT_COLUMNS)}), got {inputs.shape}")
        self.batch = StreamState(runtime, inputs[None], dates, as_of)

    @property
    def day(self) -> np.datetime64:
        return np.datetime64(int(self.batch.day[0]), "D")

    def update(self, row: np.ndarray, date, as_of=None) -> Forecasts:
        out, (error,) = self.batch.update(np.asarray(row)[None], date, as_of)
        if error is not None:
            raise error
        return out


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


def _spread(out: Forecasts, assets: np.ndarray, n: int) -> Forecasts:
    """Forecasts of some assets placed in a batch of n, NaN for the others."""
    fields = []
    for values in (out.variance, out.var, out.es):
        full = np.full((n, *values.shape[1:]), np.nan)
        full[assets] = values
        fields.append(full)
    return Forecasts(*fields, out.levels, out.horizon)
