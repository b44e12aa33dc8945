"""Run walk-forward forecasts for many models and assets; one task per (asset, model).

Per-asset models run as independent tasks on an executor (`volmargin.distributed`: this process by
default, or a Dask cluster): each asset's daily frame is shipped to the cluster once and each
(asset, model) pair is one task, so slow models (GARCH fits) spread over workers even with few
assets. Global models train on all assets at once and run in this (the driver) process.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import pandas as pd
from tqdm.auto import tqdm

from volmargin.distributed import Executor, InProcess
from volmargin.errors import DataError
from volmargin.evaluation.walkforward import WalkForwardSplit, historical_forecasts, panel_historical_forecasts
from volmargin.features.realized import daily_measures
from volmargin.models import make_forecaster
from volmargin.models.base import GlobalForecaster


@dataclass(frozen=True)
class BacktestConfig:
    models: tuple[str, ...]
    split: WalkForwardSplit
    levels: tuple[float, ...] = (0.975, 0.99)
    horizon: int = 1
    model_params: dict[str, dict] = field(default_factory=dict)
    model_refit_every: dict[str, int] = field(default_factory=dict)  # per-model refit cadence (days)

    def split_for(self, model: str) -> WalkForwardSplit:
        if model not in self.model_refit_every:
            return self.split
        return dataclasses.replace(self.split, refit_every=self.model_refit_every[model])


def default_min_bars(bars: pd.DataFrame) -> int:
    """20 of 24 hourly bars, scaled to the file's bar interval."""
    per_day = pd.Timedelta(days=1) / bars.attrs.get("freq", pd.Timedelta(hours=1))
    if per_day < 2:
        raise DataError(f"{bars.attrs.get('source', 'data')}: realized measures need intraday bars, got one bar a day")
    return math.ceil(per_day * 20 / 24)


def daily_panel(bars_panel: dict[str, pd.DataFrame], min_bars: int | None = None) -> dict[str, pd.DataFrame]:
    """Daily measures per asset (see `volmargin.features.realized.daily_measures`)."""
    return {
        asset: daily_measures(bars, min_bars or default_min_bars(bars)) for asset, bars in bars_panel.items()
    }


def _label(frame: pd.DataFrame, asset: str, model: str) -> pd.DataFrame:
    if not frame.empty:
        frame.insert(0, "model", model)
        frame.insert(0, "asset", asset)
    return frame


def forecast_task(asset: str, daily: pd.DataFrame, model: str, config: BacktestConfig) -> tuple[pd.DataFrame, float]:
    """Historical forecasts of one per-asset model on one asset, and the seconds it took."""
    began = time.perf_counter()
    params = config.model_params.get(model, {})
    frame = historical_forecasts(daily, lambda: make_forecaster(model, **params), config.split_for(model),
                                 config.levels, config.horizon)
    return _label(frame, asset, model), time.perf_counter() - began


def global_task(panel: dict[str, pd.DataFrame], model: str, config: BacktestConfig, progress: bool) -> tuple[list[pd.DataFrame], float]:
    """Historical forecasts of one global model over the whole panel (one refit on all assets per block)."""
    began = time.perf_counter()
    params = config.model_params.get(model, {})
    with tqdm(desc=f"{model} refits", unit="refit", disable=not progress) as bar:
        per_asset = panel_historical_forecasts(
            panel, lambda: make_forecaster(model, **params), config.split_for(model), config.levels, config.horizon,
            on_refit=lambda _: bar.update(),
        )
    return [_label(f, asset, model) for asset, f in per_asset.items()], time.perf_counter() - began


def run_backtest(
    panel: dict[str, pd.DataFrame], config: BacktestConfig, progress: bool = True, executor: Executor | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Forecast table for every (asset, model) and a timing table (asset, model, days, seconds);
    a global model's time is reported once, on asset 'ALL'.

    `executor` runs the per-asset models (default: in this process); the result does not depend on it:
    tasks come back in input order, so the table is the same row for row."""
    executor = executor or InProcess()
    models = {m: make_forecaster(m, **config.model_params.get(m, {})) for m in config.models}  # fail fast
    local = [m for m, f in models.items() if not isinstance(f, GlobalForecaster)]
    frames, timings = [], []
    tasks = [(asset, model) for asset in panel for model in local]
    shipped = executor.scatter(dict(panel) if local else {})  # each asset's daily frame, once
    results = executor.map(forecast_task, [a for a, _ in tasks], [shipped[a] for a, _ in tasks],
                           [m for _, m in tasks], [config] * len(tasks), desc="backtest", unit="task",
                           progress=progress)
    for (asset, model), (frame, seconds) in zip(tasks, results):
        frames.append(frame)
        timings.append({"asset": asset, "model": model, "days": len(frame), "seconds": seconds})
    # Global models (nn, gbm) refit on every asset's history at once: one sequential chain of refits that
    # needs the whole panel, so they stay in the driver process whatever the executor.
    for model in (m for m in models if m not in local):
        asset_frames, seconds = global_task(panel, model, config, progress)
        frames.extend(asset_frames)
        timings.append({"asset": "ALL", "model": model, "days": sum(len(f) for f in asset_frames), "seconds": seconds})
    frames = [f for f in frames if not f.empty]
    if not frames:
        raise DataError("no forecasts: every asset has too little history before the start date (see --min-train)")
    return pd.concat(frames, ignore_index=True), pd.DataFrame(timings)
