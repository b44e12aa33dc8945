"""Autocalibration: the smallest scale whose initial margin meets the coverage target.

Why bisection: the average margin rises with the scale and the breach rate cannot rise with it (every APC
tool, path-dependent or not, is monotone in the scale), so the minimum-margin scale that keeps breaches
at or below `target_breach_rate x days` is the smallest feasible one. All units (model, asset, side) or,
pooled, (model, side) are bisected at once on the wide panel, the same way with or without APC tools.

No look-ahead: the calibrator is handed only the rows realised before the validation start (origin +
horizon days < start, i.e. the MPOR's last day is before it); the parameters apply to origins from the
start on. `walk_forward_calibration` repeats this on an expanding window for every block.

Infeasible targets are reported, not raised: `feasible` is False with a `reason` (target missed at the
upper scale bound, e.g. margin capped at 1 or held back by a speed limit; or no realised row to
calibrate on, where the model's pooled scale stands in). `parameter_set` refuses to publish such units.
The buffer and the maintenance fraction stay policy settings: the maintenance fraction does not move
initial-margin coverage, and a larger buffer only adds margin, so the minimum-margin choice would
always be the regulatory minimum.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from volmargin.calibration.panel import ARRAYS, Panel, build_panel, initial_margin
from volmargin.calibration.policy import PolicyConfig, speed_bounds
from volmargin.errors import ConfigError
from volmargin.evaluation.scoring import POOLED

TOLERANCE = 1e-3  # relative width at which the bisection stops
CALIBRATION_COLUMNS = [
    "model", "asset", "side", "scale", "feasible", "reason", "valid_from", "valid_to",
    "calibration_days", "calibration_breaches", "calibration_breach_rate", "calibration_avg_margin",
]


def utc(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def realised_before(forecasts: pd.DataFrame, start: pd.Timestamp) -> pd.DataFrame:
    """Rows whose whole target window has been realised before `start` (origin + horizon days < start)."""
    return forecasts[forecasts["origin"] + pd.to_timedelta(forecasts["horizon"], unit="D") < start]


@dataclass(frozen=True)
class _Fit:
    scale: np.ndarray
    feasible: np.ndarray
    days: np.ndarray
    breaches: np.ndarray
    avg_margin: np.ndarray


def _solve(panel: Panel, policy: PolicyConfig, counted: np.ndarray, codes: np.ndarray, n: int) -> _Fit:
    """Geometric bisection of the scales of `n` units (column k belongs to unit codes[k]) on the rows
    `counted`; the upper end is always feasible, so the result never misses the target."""
    days = np.bincount(codes, counted.sum(0), minlength=n).astype(int)
    allowed = np.floor(policy.target_breach_rate * days + 1e-9)
    bounds = speed_bounds(panel.gap, policy.max_up, policy.max_down)

    def evaluate(scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        margin = initial_margin(panel, policy, scale[codes], bounds)
        hits = (counted & (panel.loss > margin)).sum(0)
        return np.bincount(codes, hits, minlength=n).astype(int), margin

    lo, hi = (np.full(n, bound, dtype=float) for bound in policy.scale_bounds)
    feasible = (evaluate(hi)[0] <= allowed) & (days > 0)
    while np.any(hi[feasible] > lo[feasible] * (1 + TOLERANCE)):
        mid = np.sqrt(lo * hi)
        ok = evaluate(mid)[0] <= allowed
        lo, hi = np.where(ok, lo, mid), np.where(ok, mid, hi)
    breaches, margin = evaluate(hi)
    total = np.bincount(codes, np.where(counted, margin, 0.0).sum(0), minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _Fit(hi, feasible, days, breaches, total / days)


def _units(columns: pd.MultiIndex, pooled: bool) -> tuple[np.ndarray, pd.MultiIndex]:
    keys = columns.droplevel("asset") if pooled else columns
    codes, uniques = keys.factorize()
    return codes, pd.MultiIndex.from_tuples(uniques, names=keys.names)


def _twice(panel: Panel) -> Panel:
    arrays = {f: np.hstack([getattr(panel, f)] * 2) for f in ARRAYS}
    return dataclasses.replace(panel, columns=panel.columns.append(panel.columns), **arrays)


def calibrate(forecasts: pd.DataFrame, policy: PolicyConfig, validation_start, calibration_start=None) -> pd.DataFrame:
    """Scales per unit from the rows realised before `validation_start` (breaches counted on rows realised
    on or after `calibration_start`, if given; earlier rows still warm up the path and floors).
    One row per unit, columns CALIBRATION_COLUMNS, valid_to open (NaT). Rows with asset 'ALL' hold each
    (model, side)'s pooled scale: the calibration itself when `policy.pooled`, else the stand-in for assets
    without calibration rows (absent before `validation_start` or without a realised row)."""
    start = utc(validation_start)
    seen = realised_before(forecasts, start)
    if seen.empty:
        raise ConfigError(f"validation_start: no forecast row is realised before {start.date()}")
    panel = build_panel(seen, policy)
    counted = ~np.isnan(panel.loss)
    if calibration_start is not None:
        counted &= np.asarray(panel.known >= utc(calibration_start))[:, None]
    pooled_codes, pooled_units = _units(panel.columns, True)
    if policy.pooled:
        table = _table(pooled_units, _solve(panel, policy, counted, pooled_codes, len(pooled_units)), policy)
    else:  # own scales and the pooled stand-ins, bisected together on a panel holding every column twice
        k = len(panel.columns)
        both = _solve(_twice(panel), policy, np.hstack([counted, counted]),
                      np.concatenate([np.arange(k), k + pooled_codes]), k + len(pooled_units))
        own, pooled = (_Fit(*(a[part] for a in dataclasses.astuple(both))) for part in (slice(k), slice(k, None)))
        table = _table(panel.columns, own, policy)
        empty = own.days == 0
        table.loc[empty, "scale"] = pooled.scale[pooled_codes][empty]
        table.loc[empty, "reason"] += "; the model's pooled scale stands in"
        table = pd.concat([table, _table(pooled_units, pooled, policy)], ignore_index=True)
    return table.assign(valid_from=start, valid_to=pd.NaT)[CALIBRATION_COLUMNS]


def _table(units: pd.MultiIndex, fit: _Fit, policy: PolicyConfig) -> pd.DataFrame:
    table = units.to_frame(index=False)
    if "asset" not in table:
        table.insert(1, "asset", POOLED)
    rate = np.divide(fit.breaches, fit.days, out=np.full(len(units), np.nan), where=fit.days > 0)
    reason = np.where(
        fit.days == 0, "no realised row to calibrate on",
        [f"breach rate {r:.2%} > target {policy.target_breach_rate:.2%} at the upper scale bound "
         f"{policy.scale_bounds[1]:g} (margin capped at 1 or held back by a speed limit)" for r in rate])
    return table.assign(
        scale=fit.scale, feasible=fit.feasible, reason=np.where(fit.feasible, "", reason).astype(object),
        calibration_days=fit.days, calibration_breaches=fit.breaches, calibration_breach_rate=rate,
        calibration_avg_margin=fit.avg_margin)


def walk_forward_calibration(forecasts: pd.DataFrame, policy: PolicyConfig, first_validation_start,
                             every: str = "QS", calibration_start=None) -> pd.DataFrame:
    """Re-calibrate at `first_validation_start` and then at every `every` (pandas offset alias: 'YS', 'QS',
    'MS', ...) on all rows realised before each block start (expanding window); each block's parameters
    are valid from its start to the next block's (valid_from, valid_to)."""
    first = utc(first_validation_start)
    starts = pd.DatetimeIndex([first]).union(pd.date_range(first, forecasts["origin"].max(), freq=every))
    ends = [*starts[1:], pd.NaT]
    tables = [calibrate(forecasts, policy, s, calibration_start).assign(valid_to=e) for s, e in zip(starts, ends)]
    table = pd.concat(tables, ignore_index=True)
    return table.assign(valid_to=pd.to_datetime(table["valid_to"], utc=True))
