"""Calibrate the margin policy of an exported bundle on its out-of-sample forecasts (`volmargin calibrate`).

The bundle's model learned from data up to its manifest's `training.train_end`; forecasts at earlier
origins are in-sample and would understate the scale needed, so only later origins are used: the first
part calibrates, the rest validates (walk-forward, the calibrator never sees it).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from volmargin.calibration.autocalibrate import calibrate
from volmargin.calibration.backtest import margin_paths, margin_summary
from volmargin.calibration.intraday import with_intraday_moves
from volmargin.calibration.parameters import parameter_set
from volmargin.calibration.policy import PolicyConfig
from volmargin.errors import ConfigError, DataError
from volmargin.features.realized import horizon_targets

MIN_CALIBRATION_DAYS = 180


def realized_forecasts(scored: pd.DataFrame, panel: dict[str, pd.DataFrame], model: str) -> pd.DataFrame:
    """Batch-scored forecasts with the realized h-day variance and return after each origin, in the
    layout of the backtest's forecast table."""
    horizon = int(scored["horizon"].iloc[0])
    frames = []
    for asset, rows in scored.groupby("asset", sort=True):
        targets = horizon_targets(panel[asset], horizon).reindex(pd.DatetimeIndex(rows["origin"]))
        frames.append(rows.assign(model=model, date=rows["origin"] + pd.Timedelta(days=1),
                                  realized_rv=targets["target_rv"].to_numpy(),
                                  realized_ret=targets["target_ret"].to_numpy()))
    return pd.concat(frames, ignore_index=True).drop(columns=["volatility"], errors="ignore")


def default_validation_start(first: pd.Timestamp, last: pd.Timestamp) -> pd.Timestamp:
    """Half-way through the out-of-sample period, on a month start."""
    middle = (first + (last - first) / 2).tz_convert("UTC").tz_localize(None)  # Period has no time zone
    return middle.to_period("M").to_timestamp().tz_localize("UTC")


def _train_end(bundle: Path) -> str:
    from volmargin_serving.bundle import read_manifest

    train_end = (read_manifest(Path(bundle)).get("training") or {}).get("train_end")
    if not isinstance(train_end, str):
        raise ConfigError(f"{bundle}: the manifest has no training.train_end; cannot tell in-sample from "
                          "out-of-sample forecasts")
    return train_end


def check_calibration_data(bundle: Path, panel: dict[str, pd.DataFrame]) -> None:
    """Before scoring: the data must go on for `MIN_CALIBRATION_DAYS` after the bundle's training end."""
    train_end = _train_end(bundle)
    first = pd.Timestamp(train_end, tz="UTC") + pd.Timedelta(days=1)
    last = max((d.index[-1] for d in panel.values() if len(d)), default=None)
    if last is None:
        raise DataError("the data holds no whole UTC day after its first (a day needs the close before it)")
    if last < first + pd.Timedelta(days=MIN_CALIBRATION_DAYS):
        raise DataError(f"the data ends {last.date()}, before {MIN_CALIBRATION_DAYS} days after the bundle's training "
                        f"end {train_end}: calibration needs out-of-sample data; give data that goes on after it")


def calibrate_bundle(bundle: Path, scored: pd.DataFrame, panel: dict[str, pd.DataFrame], policy: PolicyConfig,
                     validation_start: pd.Timestamp | None = None, bars: dict[str, pd.DataFrame] | None = None,
                     ) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """Parameter set, calibration table and out-of-sample margin summary of a bundle's forecasts
    (`bars` give the realised moves of an intraday MPOR, `policy.mpor_hours`)."""
    manifest = json.loads((Path(bundle) / "manifest.json").read_text())
    train_end = manifest.get("training", {}).get("train_end")
    if train_end is None:
        raise ConfigError(f"{bundle}: the manifest has no training.train_end; cannot tell in-sample from "
                          "out-of-sample forecasts")
    first = pd.Timestamp(train_end, tz="UTC") + pd.Timedelta(days=1)
    later = scored[scored["origin"] >= first]
    forecasts = realized_forecasts(later, panel, manifest["name"]) if not later.empty else later
    if forecasts.empty:
        raise DataError(f"no forecast origin after the bundle's training end {train_end}: give data that goes on after it")
    if policy.mpor_hours is not None:
        forecasts = with_intraday_moves(forecasts, bars or {}, policy.mpor_hours)
    last = forecasts["origin"].max()
    start = validation_start or default_validation_start(first, last)
    if start >= last:
        raise ConfigError(f"validation start {start.date()} is not before the data's last origin {last.date()}; "
                          "give more data or an earlier --validation-start")
    if (start - first).days < MIN_CALIBRATION_DAYS:
        raise ConfigError(f"validation start {start.date()} leaves {max((start - first).days, 0)} days to calibrate on "
                          f"after the bundle's training end {train_end}; it needs {MIN_CALIBRATION_DAYS}: give a later "
                          "--validation-start or more data")
    table = calibrate(forecasts, policy, start, calibration_start=first)
    parameters = parameter_set(forecasts, policy, table, manifest["name"], assets=sorted(forecasts["asset"].unique()),
                               allow_infeasible=True)
    horizon = 1 if policy.mpor_hours is not None else int(forecasts["horizon"].iloc[0])
    summary = margin_summary(margin_paths(forecasts, policy, table), policy.target_breach_rate,
                             horizon=horizon)
    return parameters, table, summary
