"""Parameter records: what a venue publishes per asset and side, the sanity rules, and the calibration
set file a serving runtime loads with its bundle.

The sanity rules live once, in `volmargin_serving.calibration.check_records`, so that a set is held to
the same rules when it is calibrated here and when a service loads it; `validate_parameters` applies them
and raises a ConfigError naming asset/side/field when: a margin rate is outside (0, 1]; maintenance is
not below initial margin; a haircut is outside [0, 1); a side is not long/short; a requested asset lacks
a side; a validity window is not ordered (valid_from < valid_to, and windows of one asset/side follow
each other without overlap).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from volmargin_serving.bundle import resolve_key
from volmargin_serving.calibration import calibration_document, check_records
from volmargin_serving.errors import BundleError

from volmargin.calibration.backtest import path_frame, scale_matrix
from volmargin.calibration.panel import build_panel, initial_margin
from volmargin.calibration.policy import PolicyConfig, haircut, haircut_of_margin, liquidation_threshold
from volmargin.errors import ConfigError
from volmargin.evaluation.scoring import POOLED
from volmargin.io import write_atomic


@dataclass(frozen=True)
class ParameterRecord:
    model: str
    asset: str
    side: str
    as_of: str  # the latest origin: the rates below are the margins set then
    initial_margin: float
    maintenance_margin: float
    liquidation_threshold: float
    haircut: float  # of the asset as collateral (the same on both sides)
    scale: float  # calibrated, in force at as_of
    floor: float  # log-return APC floor at as_of; serving never goes below its rate (`margins.floor_rate`)
    peak_margin: float  # the largest initial margin of the calibrated path (for the reader: the stress it saw)
    peak_haircut: float  # the largest haircut of the path, likewise
    valid_from: str
    valid_to: str | None
    feasible: bool
    reason: str
    calibration_breach_rate: float | None
    calibration_avg_margin: float | None
    validation_breach_rate: float | None  # all out-of-sample rows of the path
    validation_avg_margin: float | None
    policy: dict


def validate_parameters(records: Iterable[ParameterRecord | Mapping], assets: Iterable[str] | None = None) -> None:
    """The sanity rules (see the module docstring) on records, against `assets` if given."""
    rows = [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else dict(r) for r in records]
    try:
        check_records(rows, assets)
    except BundleError as exc:
        raise ConfigError(str(exc)) from None


def _json(value):
    """JSON-ready scalar: NaN -> None, numpy -> Python, timestamps -> ISO strings, tuples -> lists."""
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and not math.isfinite(value) else value


def parameter_set(forecasts: pd.DataFrame, policy: PolicyConfig, calibration: pd.DataFrame, model: str,
                  assets: Iterable[str] | None = None, allow_infeasible: bool = False) -> dict:
    """JSON-ready parameter set of `model`: one record per asset and side at the latest origin, checked by
    `validate_parameters` (against `assets` if given). Raises ConfigError for an infeasible calibration
    unless `allow_infeasible`."""
    frame, cal = forecasts[forecasts["model"] == model], calibration[calibration["model"] == model]
    if frame.empty or cal.empty:
        raise ConfigError(f"model: no forecasts or calibration for {model!r}")
    panel = build_panel(frame, policy)
    scales = scale_matrix(panel, cal)
    margin = initial_margin(panel, policy, scales)
    paths = path_frame(panel, policy, margin, cal["valid_from"].min())
    oos = paths[paths["calibrated"]]
    val_rate = oos[oos["loss"].notna()].groupby(["asset", "side"])["breach"].mean()
    val_avg = oos.groupby(["asset", "side"])["initial_margin"].mean()
    last = len(panel.origins) - 1 - np.argmax(~np.isnan(panel.risk[::-1]), axis=0)
    ratio = (policy.liquidation_days or panel.horizon) / panel.horizon
    blocks = pd.DatetimeIndex(sorted(cal["valid_from"].unique()))
    column_of = {key: k for k, key in enumerate(panel.columns)}
    records = []
    for k, (_, asset, side) in enumerate(panel.columns):
        t, long_k = last[k], column_of[(model, asset, "long")]
        as_of = panel.origins[t]
        block = cal[cal["valid_from"] == blocks[max(blocks.searchsorted(as_of, side="right") - 1, 0)]]
        unit = block[block["asset"].isin([asset, POOLED]) & (block["side"] == side)].iloc[0]
        stand_in = unit["asset"] == POOLED and not policy.pooled
        feasible, reason = (False, "not calibrated on its own rows (the pooled scale stood in)") if stand_in \
            else (bool(unit["feasible"]), unit["reason"])
        initial = float(margin[t, k])
        maintenance = policy.maintenance_fraction * initial
        records.append(ParameterRecord(
            model, asset, side, as_of.isoformat(), initial, maintenance,
            float(liquidation_threshold(initial, maintenance, side)),
            _collateral_haircut(panel.haircut_risk[last[long_k], long_k], scales[last[long_k], long_k],
                                margin[last[long_k], long_k], ratio),
            float(scales[t, k]), float(panel.floor[t, k]), float(np.nanmax(margin[:, k])),
            _collateral_haircut(panel.haircut_risk[:, long_k], scales[:, long_k], margin[:, long_k], ratio),
            unit["valid_from"].isoformat(),
            None if pd.isna(unit["valid_to"]) else unit["valid_to"].isoformat(), feasible,
            reason, unit["calibration_breach_rate"], unit["calibration_avg_margin"],
            val_rate.get((asset, side)), val_avg.get((asset, side)), dataclasses.asdict(policy)))
    infeasible = [r for r in records if not r.feasible]
    if infeasible and not allow_infeasible:
        raise ConfigError(f"{infeasible[0].asset}/{infeasible[0].side}: calibration infeasible: {infeasible[0].reason}")
    validate_parameters(records, assets)
    return _json({"model": model, "horizon": panel.horizon, "as_of": max(r.as_of for r in records),
                  "policy": dataclasses.asdict(policy), "records": [dataclasses.asdict(r) for r in records]})


def _collateral_haircut(risk_long, scale, initial_long, ratio: float) -> float:
    """The largest haircut over the rows given: the rule's on the haircut measure, at least the long initial
    margin's (`haircut_of_margin`, as serving prices it), below 1."""
    cut = np.fmax(haircut(risk_long, scale, ratio), haircut_of_margin(initial_long, ratio))
    return float(min(np.nanmax(cut), np.nextafter(1.0, 0)))


def write_parameter_set(parameters: dict, bundle: str | Path, target: str | Path) -> Path:
    """Write `parameters` (as `parameter_set` returns them) as the calibration set of the bundle folder
    `bundle`, atomically, to `target`; returns `target`.

    The file (layout in `volmargin_serving.calibration`) records the bundle's name, version and manifest
    SHA-256, so a runtime refuses to price one model's forecasts with another's scales, and a SHA-256 of
    its own content. The bundle is verified and the parameters checked by the rules serving applies at
    load (ConfigError) before anything is written."""
    try:
        document = calibration_document(parameters, bundle, key=resolve_key())
    except BundleError as exc:
        raise ConfigError(f"calibration set for {bundle}: {exc}") from None
    return write_atomic(target, lambda path: path.write_text(json.dumps(document, indent=2) + "\n"))
