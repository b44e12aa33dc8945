"""The forecast table as a wide daily panel, and the margin path of a policy over it.

One column per (model, asset, side), one row per calendar day of origins, so the path recursion (buffer,
speed limits) is one loop over days, vectorised across every column, and the calibrator can bisect the
scales of all columns at once.

Causality: row t's target is realised at the end of day origin + horizon (the MPOR's last day), so the
floors at origin t use realised rows whose origin is at most t - horizon: each rolling statistic (and its
running maximum) is shifted by `horizon` days on the daily grid. Nothing later is read; tests corrupt it.

The floors read the realised moves of the forecast rows given, and nothing before their first origin: the
backtest's start in `volmargin run`, the day after the bundle's training end in `volmargin calibrate`. Read
from every day of the data (session 30), the crashes of earlier years held the floors above every forecast in
calm years; since the floor is multiplied by the calibrated scale too, the calibration shrank the scale to
0.23 and every model's margin became one constant share of the floor (the README's quick start: every model
breached its long side 2.47% out of sample, against 1.19% for the blend): reverted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from volmargin_serving.margins import floor_rate, mpor_factor

from volmargin.calibration.policy import PolicyConfig, apc_step, rate_from_log, speed_bounds
from volmargin.errors import ConfigError, DataError
from volmargin.models.base import SIDES

KEYS = ["model", "asset", "side"]
ARRAYS = ("risk", "loss", "floor", "gap", "haircut_risk")


@dataclass(frozen=True)
class Panel:
    origins: pd.DatetimeIndex  # daily grid
    columns: pd.MultiIndex  # (model, asset, side)
    horizon: int
    date_offset: pd.Timedelta  # date - origin in the source table
    risk: np.ndarray  # (T, K) log-return risk measure, NaN where the column has no row
    loss: np.ndarray  # (T, K) simple-return loss of the side, NaN where absent or not realised
    floor: np.ndarray  # (T, K) log-return APC floor, 0 where none applies
    gap: np.ndarray  # (T, K) days since the column's previous row, NaN before its first
    haircut_risk: np.ndarray  # (T, K) long-side haircut measure of the column's asset

    @property
    def long(self) -> np.ndarray:
        return np.asarray(self.columns.get_level_values("side") == "long")

    @property
    def known(self) -> pd.DatetimeIndex:
        """End of the day on which each row's target is realised (origin + horizon days)."""
        return self.origins + pd.Timedelta(days=self.horizon)


def _single(column: str, values: pd.Series):
    unique = values.unique()
    if len(unique) != 1:
        raise ConfigError(f"forecasts.{column}: one value per table expected (one MPOR), "
                          f"got {sorted(map(str, unique))}")
    return unique[0]


def missing_risk(policy: PolicyConfig, columns) -> tuple[str, list[str]] | None:
    """The first of the policy's keys risk, haircut_risk whose forecast columns are not all among `columns`, and
    the missing columns; None where both are there (the run config checks its levels' columns at load)."""
    for key, stem in (("risk", policy.risk), ("haircut_risk", policy.haircut_risk or policy.risk)):
        missing = [f"{stem}_{side}" for side in SIDES if f"{stem}_{side}" not in columns]
        if missing:
            return key, missing
    return None


def _check(forecasts: pd.DataFrame, policy: PolicyConfig) -> list[str]:
    stems = [policy.risk, policy.haircut_risk or policy.risk]
    needed = list(dict.fromkeys(f"{stem}_{side}" for stem in stems for side in SIDES))
    if found := missing_risk(policy, forecasts.columns):
        raise ConfigError(f"policy.{found[0]}: forecast columns {found[1]} missing; the table has "
                          f"{list(forecasts.columns)}")
    if forecasts.empty:
        raise DataError("forecasts: no rows")
    dup = forecasts.duplicated(["model", "asset", "origin"])
    if dup.any():
        row = forecasts[dup].iloc[0]
        raise DataError(f"forecasts: duplicate row for {row['model']}/{row['asset']} at origin {row['origin']}")
    return needed


def build_panel(forecasts: pd.DataFrame, policy: PolicyConfig) -> Panel:
    """Wide daily panel of the policy's risk measure, realised losses and causal APC floors."""
    needed = _check(forecasts, policy)
    horizon = int(_single("horizon", forecasts["horizon"]))
    offset = _single("date - origin", forecasts["date"] - forecasts["origin"])
    grid = pd.date_range(forecasts["origin"].min(), forecasts["origin"].max(), freq="D")
    wide = forecasts.pivot(index="origin", columns=["model", "asset"], values=[*needed, "realized_ret", "realized_rv"])
    wide = wide.reindex(grid).sort_index(axis=1)
    pairs = wide[needed[0]].columns
    ret, rv = wide["realized_ret"].to_numpy(), wide["realized_rv"].to_numpy()
    loss_log = np.hstack([-ret, ret])  # long loses on a fall, short on a rise
    columns = pd.MultiIndex.from_tuples([(*p, s) for s in SIDES for p in pairs], names=KEYS)
    long = columns.get_level_values("side") == "long"
    hc = wide[f"{policy.haircut_risk or policy.risk}_long"][pairs].to_numpy()
    risk = np.hstack([wide[f"{policy.risk}_{s}"][pairs].to_numpy() for s in SIDES]) * mpor_factor(
        policy.mpor_hours, horizon)
    panel = Panel(grid, columns, horizon, offset, risk, rate_from_log(loss_log, long),
                  _floors(loss_log, np.hstack([rv, rv]), policy, horizon), _gaps(~np.isnan(risk)), np.hstack([hc, hc]))
    return _reorder(panel, columns.argsort())


def _reorder(panel: Panel, order: np.ndarray) -> Panel:
    """Columns sorted by (model, asset, side)."""
    take = {k: getattr(panel, k)[:, order] for k in ARRAYS}
    return Panel(panel.origins, panel.columns[order], panel.horizon, panel.date_offset, **take)


def _gaps(present: np.ndarray) -> np.ndarray:
    rows = np.arange(len(present))[:, None]
    last = pd.DataFrame(np.where(present, rows, np.nan)).ffill().shift(1).to_numpy()
    return rows - last


def _floors(loss_log: np.ndarray, rv: np.ndarray, policy: PolicyConfig, horizon: int) -> np.ndarray:
    floors = [np.zeros_like(loss_log)]
    if policy.stressed_floor:
        rolling = pd.DataFrame(loss_log).rolling(policy.stress_window, min_periods=policy.floor_min_obs)
        floors.append(rolling.quantile(policy.stress_quantile).cummax().shift(horizon).to_numpy())
    if policy.lookback_floor:
        mean_rv = pd.DataFrame(rv).rolling(policy.lookback_days, min_periods=policy.floor_min_obs).mean()
        floors.append(policy.lookback_z * np.sqrt(mean_rv.shift(horizon).to_numpy()))
    return np.nan_to_num(np.nanmax(np.stack(floors), axis=0), nan=0.0)


def initial_margin(panel: Panel, policy: PolicyConfig, scale, bounds: tuple | None = None) -> np.ndarray:
    """(T, K) initial margin rates for `scale` of shape (K,) or (T, K); NaN where a column has no row.
    `bounds`: `speed_bounds(panel.gap, ...)` when the caller evaluates many scales on one panel."""
    target = np.minimum(np.maximum(rate_from_log(scale * np.maximum(panel.risk, panel.floor), panel.long),
                                   policy.min_rate), 1.0)
    if not policy.path_dependent:
        return target
    low, high = bounds or speed_bounds(panel.gap, policy.max_up, policy.max_down)
    # a speed limit can hold the margin below a floor that jumped; it is lifted to it, as serving's rule is
    lowest = np.broadcast_to(np.maximum(floor_rate(np.where(panel.long, "long", "short"), scale, panel.floor),
                                        policy.min_rate), target.shape)
    present = ~np.isnan(target)
    margin, previous = np.full_like(target, np.nan), np.full(target.shape[1], np.nan)
    for t in range(len(target)):
        margin[t] = np.maximum(apc_step(target[t], previous, policy.buffer, low[t], high[t]), lowest[t])
        np.copyto(previous, margin[t], where=present[t])
    return margin
