"""Parameter records: what a venue publishes per asset and side, and the sanity rules a loader checks.

`validate_parameters` is the one gate, used by `parameter_set` and by any loader of a published set; it
raises a ConfigError naming asset/side/field when: a margin rate is outside (0, 1]; maintenance is not
below initial margin; a haircut is outside [0, 1); a requested asset lacks a side; a validity window is
not ordered (valid_from < valid_to, and windows of one asset/side follow each other without overlap).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from volmargin.calibration.autocalibrate import utc
from volmargin.calibration.backtest import path_frame, scale_matrix
from volmargin.calibration.panel import build_panel, initial_margin
from volmargin.calibration.policy import PolicyConfig, haircut, liquidation_threshold
from volmargin.errors import ConfigError
from volmargin.evaluation.scoring import POOLED
from volmargin.models.base import SIDES


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
    floor: float  # log-return APC floor at as_of (serving: margin_rate(..., floor=floor, previous=initial_margin))
    valid_from: str
    valid_to: str | None
    feasible: bool
    reason: str
    calibration_breach_rate: float | None
    calibration_avg_margin: float | None
    validation_breach_rate: float | None  # all out-of-sample rows of the path
    validation_avg_margin: float | None
    policy: dict


def _number(record: Mapping, field: str) -> float:
    value = record.get(field)
    return math.nan if value is None else float(value)


def _fail(record: Mapping, field: str, problem: str) -> None:
    raise ConfigError(f"{record.get('asset')}/{record.get('side')}: {field} {problem}")


def validate_parameters(records: Iterable[ParameterRecord | Mapping], assets: Iterable[str] | None = None) -> None:
    rows = [dataclasses.asdict(r) if dataclasses.is_dataclass(r) else dict(r) for r in records]
    for r in rows:
        initial, maintenance, cut = (_number(r, f) for f in ("initial_margin", "maintenance_margin", "haircut"))
        for field, value in (("initial_margin", initial), ("maintenance_margin", maintenance)):
            if not 0 < value <= 1:
                _fail(r, field, f"= {value!r} is outside (0, 1]")
        if not maintenance < initial:
            _fail(r, "maintenance_margin", f"= {maintenance!r} is not below initial_margin = {initial!r}")
        if not 0 <= cut < 1:
            _fail(r, "haircut", f"= {cut!r} is outside [0, 1)")
        if r.get("valid_to") is not None and not utc(r["valid_from"]) < utc(r["valid_to"]):
            _fail(r, "valid_to", f"= {r['valid_to']} is not after valid_from = {r['valid_from']}")
    ordered = sorted(rows, key=lambda r: (r.get("model", ""), r["asset"], r["side"], utc(r["valid_from"])))
    for a, b in zip(ordered, ordered[1:]):
        same = all(a.get(k) == b.get(k) for k in ("model", "asset", "side"))
        if same and (a.get("valid_to") is None or utc(a["valid_to"]) > utc(b["valid_from"])):
            window = f"{a['valid_from']} to {a.get('valid_to')}"
            _fail(b, "valid_from", f"= {b['valid_from']} overlaps the window from {window}")
    present = {(r["asset"], r["side"]) for r in rows}
    for asset in assets or ():
        for side in SIDES:
            if (asset, side) not in present:
                raise ConfigError(f"{asset}/{side}: missing from the parameter set")


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
            float(haircut(panel.haircut_risk[last[long_k], long_k], scales[last[long_k], long_k], ratio)),
            float(scales[t, k]), float(panel.floor[t, k]), unit["valid_from"].isoformat(),
            None if pd.isna(unit["valid_to"]) else unit["valid_to"].isoformat(), feasible,
            reason, unit["calibration_breach_rate"], unit["calibration_avg_margin"],
            val_rate.get((asset, side)), val_avg.get((asset, side)), dataclasses.asdict(policy)))
    infeasible = [r for r in records if not r.feasible]
    if infeasible and not allow_infeasible:
        raise ConfigError(f"{infeasible[0].asset}/{infeasible[0].side}: calibration infeasible: {infeasible[0].reason}")
    validate_parameters(records, assets)
    return _json({"model": model, "horizon": panel.horizon, "as_of": max(r.as_of for r in records),
                  "policy": dataclasses.asdict(policy), "records": [dataclasses.asdict(r) for r in records]})
