"""A tiny calibrated bundle and clean serving inputs, shared by the reliability and property tests.

A small boosting model trained on a synthetic panel, exported, calibrated with the buffer and speed
limits on; `spiked_batch` adds a volatility spike on the last three days, the case where a fallback to
the published margin would lower the margin most.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TINY = {"n_estimators": 20, "tail_estimators": 10}
ASSETS = ["syn_a", "syn_b", "syn_c"]


@dataclass(frozen=True)
class Served:
    bundle: Path
    calibration: Path
    panel: dict
    inputs: np.ndarray  # (assets, 150, columns), spiked
    dates: np.ndarray  # (assets, 150)
    as_of: np.datetime64


def arrays(daily: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    from volmargin.features.learned import INPUT_COLUMNS, daily_inputs

    columns = daily_inputs(daily)
    inputs = np.column_stack([columns[c].astype(float) for c in INPUT_COLUMNS])
    return inputs, daily.index.tz_convert(None).to_numpy().astype("datetime64[D]")


def spike(inputs: np.ndarray, days: int = 3, factor: float = 25.0) -> np.ndarray:
    """Variance measures x factor and returns x sqrt(factor) on the last `days` rows (by column name), the
    traded value moved with the price (the day's average price follows the added returns, as a real move's
    does: `validation` doubts an average price that jumps beyond the returns and ranges)."""
    from volmargin.features.learned import INPUT_COLUMNS

    out = inputs.copy()
    ret, traded = INPUT_COLUMNS.index("ret"), INPUT_COLUMNS.index("traded_value")
    added = np.cumsum(inputs[..., -days:, ret] * (np.sqrt(factor) - 1), axis=-1)
    for j, name in enumerate(INPUT_COLUMNS):
        if name in ("rv", "bv", "parkinson", "rogers_satchell"):
            out[..., -days:, j] *= factor
        elif name == "ret":
            out[..., -days:, j] *= np.sqrt(factor)
    out[..., -days:, traded] *= np.exp(added)
    return out


def build(folder: Path) -> Served:
    from volmargin.calibration import PolicyConfig, parameter_set, walk_forward_calibration, write_parameter_set
    from volmargin.data import synthetic_market
    from volmargin.evaluation.backtest import daily_panel
    from volmargin.evaluation.walkforward import WalkForwardSplit, panel_historical_forecasts
    from volmargin.export import write_bundle
    from volmargin.models import make_forecaster

    policy = PolicyConfig(buffer=0.25, max_up=0.5, max_down=0.2)
    panel = daily_panel(synthetic_market(n_assets=3, days=500, seed=4))
    model = make_forecaster("gbm", **TINY).fit_panel(panel)
    bundle = write_bundle(model, panel, folder / "models")
    split = WalkForwardSplit(min_train=250, refit_every=None)
    frames = panel_historical_forecasts(panel, lambda: make_forecaster("gbm", **TINY), split, (0.975, 0.99))
    forecasts = pd.concat([f.assign(asset=a, model="gbm") for a, f in frames.items()], ignore_index=True)
    blocks = walk_forward_calibration(forecasts, policy, forecasts["origin"].min() + pd.Timedelta(days=150), "QS")
    parameters = parameter_set(forecasts, policy, blocks, "gbm", assets=ASSETS)
    calibration = write_parameter_set(parameters, bundle, bundle.with_name(f"{bundle.name}.calibration.json"))
    pairs = [arrays(panel[a].iloc[-150:]) for a in ASSETS]
    dates = np.stack([d for _, d in pairs])
    return Served(bundle, calibration, panel, spike(np.stack([i for i, _ in pairs])), dates, dates[0, -1])


def copy_bundle(bundle: Path, target: Path) -> Path:
    """A copy of the bundle's files in a new folder `target`."""
    target.mkdir(parents=True)
    for path in bundle.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


def edit_manifest(bundle: Path, target: Path, edit) -> Path:
    """A copy of the bundle whose manifest `edit(manifest)` changed (not re-signed)."""
    from volmargin_serving.bundle import MANIFEST

    folder = copy_bundle(bundle, target)
    manifest = json.loads((folder / MANIFEST).read_text())
    edit(manifest)
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def resealed_set(served: Served, folder: Path, change) -> Path:
    """The served calibration set with `change(parameters)` applied and resealed: its checksum alone cannot
    stop such an edit."""
    from volmargin_serving.calibration import seal

    document = copy.deepcopy(json.loads(served.calibration.read_text()))
    change(document["parameters"])
    path = folder / "variant.calibration.json"
    path.write_text(json.dumps(seal(document)))
    return path
