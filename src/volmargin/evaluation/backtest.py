"""Run walk-forward forecasts for many models and assets.

Per-asset models run as independent tasks on an executor (`volmargin.distributed`: this process by
default, or a Dask cluster). Tasks are few and large: one per asset running all its models when there
are enough assets to keep every worker busy; the models split over a few tasks per asset only when
there are not (few assets, slow GARCH fits). The largest tasks go first, so that no worker is left
with a long one at the end. Global models train on all assets at once and run in this (the driver)
process.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from volmargin_serving.bars import default_min_bars as bars_default_min_bars

from volmargin.data.loader import bar_seconds
from volmargin.distributed import Executor, InProcess
from volmargin.errors import ConfigError, DataError
from volmargin.evaluation.scoring import POOLED
from volmargin.evaluation.walkforward import WalkForwardSplit, historical_forecasts, panel_historical_forecasts
from volmargin.features.realized import daily_measures
from volmargin.models import make_forecaster
from volmargin.models.base import GlobalForecaster
from volmargin.models.blend import BlendForecaster
from volmargin.progress import progress_counter


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


def _bars_per_day(bars: pd.DataFrame) -> float:
    per_day = pd.Timedelta(days=1) / bars.attrs.get("freq", pd.Timedelta(hours=1))
    if per_day < 2:
        raise DataError(f"{bars.attrs.get('source', 'data')}: realized measures need intraday bars, got one bar a day")
    return per_day


def default_min_bars(bars: pd.DataFrame) -> int:
    """20 of 24 hourly bars, scaled to the file's bar interval (`volmargin_serving.bars.default_min_bars`)."""
    _bars_per_day(bars)  # refuses daily bars
    return bars_default_min_bars(bar_seconds(bars))


def _checked_min_bars(bars: pd.DataFrame, min_bars: int | None) -> int:
    """`min_bars`, or the default where None; a DataError where no day of these bars could hold that many."""
    if min_bars is None:
        return default_min_bars(bars)
    per_day = _bars_per_day(bars)
    if not 1 <= min_bars <= per_day:
        aggregated = " (its bars aggregated to the bundle's interval)" if "aggregated_from" in bars.attrs else ""
        raise DataError(f"min bars {min_bars}: must lie in 1 .. {per_day:g}, the bars a UTC day holds in "
                        f"{bars.attrs.get('source', 'data')}{aggregated}")
    return min_bars


def daily_panel(bars_panel: dict[str, pd.DataFrame], min_bars: int | None = None) -> dict[str, pd.DataFrame]:
    """Daily measures per asset (see `volmargin.features.realized.daily_measures`)."""
    return {asset: daily_measures(bars, _checked_min_bars(bars, min_bars)) for asset, bars in bars_panel.items()}


def _label(frame: pd.DataFrame, asset: str, model: str) -> pd.DataFrame:
    if not frame.empty:
        frame.insert(0, "model", model)
        frame.insert(0, "asset", asset)
    return frame


def forecast_task(asset: str, daily: pd.DataFrame, models: tuple[str, ...], config: BacktestConfig
                  ) -> list[tuple[pd.DataFrame, float]]:
    """Historical forecasts of per-asset models on one asset, and the seconds each took."""
    results = []
    for model in models:
        began = time.perf_counter()
        params = config.model_params.get(model, {})
        try:
            frame = historical_forecasts(daily, lambda: make_forecaster(model, **params), config.split_for(model),
                                         config.levels, config.horizon)
        except (ConfigError, DataError) as exc:  # one line that names the asset and the model
            raise type(exc)(f"{asset}, {model}: {exc}") from None
        results.append((_label(frame, asset, model), time.perf_counter() - began))
    return results


TASKS_PER_SLOT = 4  # enough tasks per worker to even out the load, few enough that per-task costs vanish


def model_groups(models: list[str], assets: int, slots: int) -> list[tuple[str, ...]]:
    """The per-asset models split into groups, one task per (asset, group): a single group when the
    assets alone give every worker several tasks, else up to one group per model."""
    count = min(len(models), max(1, math.ceil(TASKS_PER_SLOT * slots / max(assets, 1))))
    return [tuple(models[i::count]) for i in range(count)]


def _work(daily: pd.DataFrame, split: WalkForwardSplit) -> int:
    """A task's relative cost: refit origins times the history fitted on (GARCH fits dominate)."""
    return len(split.origins(daily.index)) * len(daily)


class Background:
    """`work()` in a daemon thread; `result()` waits for it and returns its value or raises its error,
    `wait()` only waits. A daemon, so that an interrupt is never held up by it; a caller that fails while
    it runs stops it first (`run_backtest`): a thread killed at exit inside torch aborts the interpreter."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self._outcome: list = []
        self._thread = threading.Thread(target=self._run, args=(work,), daemon=True, name="global-models")
        self._thread.start()

    def _run(self, work: Callable[[], Any]) -> None:
        try:
            self._outcome.append((True, work()))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller in result()
            self._outcome.append((False, exc))

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> Any:
        self.wait()
        ok, value = self._outcome[0]
        if not ok:
            raise value
        return value


class Stopped(Exception):
    """A global model's refits were stopped because the backtest failed elsewhere."""


def global_task(panel: dict[str, pd.DataFrame], model: str, config: BacktestConfig, progress: bool,
                stop: threading.Event | None = None) -> tuple[list[pd.DataFrame], float]:
    """Historical forecasts of one global model over the whole panel (one refit on all assets per block);
    once `stop` is set, it ends after the refit in flight."""
    began = time.perf_counter()
    params = config.model_params.get(model, {})
    with progress_counter(None, f"{model} refits", "refit", progress) as bar:
        def refitted(_) -> None:
            bar.update()
            if stop is not None and stop.is_set():
                raise Stopped(model)

        per_asset = panel_historical_forecasts(
            panel, lambda: make_forecaster(model, **params), config.split_for(model), config.levels, config.horizon,
            on_refit=refitted, on_start=lambda count: setattr(bar, "total", count),
        )
    return [_label(f, asset, model) for asset, f in per_asset.items()], time.perf_counter() - began


def global_forecasts(panel: dict[str, pd.DataFrame], fitted: list[str], derived: str | None, config: BacktestConfig,
                     progress: bool, stop: threading.Event | None = None) -> list[tuple[list[pd.DataFrame], float]]:
    """`global_task` of each model of `fitted`, then the `derived` blend's. With `stop` (beside a cluster)
    each model refits in a thread of its own: LightGBM and torch release the GIL in their numerics, so the
    driver's core is not left idle once the workers are done; without, one after the other."""
    if stop is None:
        results = [global_task(panel, m, config, progress) for m in fitted]
    else:
        chains = [Background(lambda m=m: global_task(panel, m, config, progress, stop)) for m in fitted]
        for chain in chains:  # every chain has ended before any error is raised
            chain.wait()
        results = [chain.result() for chain in chains]
    return results + ([blend_task(dict(zip(fitted, results)), config, panel)] if derived else [])


def derived_blend(config: BacktestConfig, global_models: list[str]) -> str | None:
    """'blend' where its members are the run's own gbm and nn (the gbm alone with weight 1; same parameters and
    refits): its forecasts are then combined from theirs (`BlendForecaster.combined_table`) instead of refitting
    both again."""
    params = config.model_params.get("blend", {})
    if "blend" not in global_models or not set(BlendForecaster.members(params)) <= set(global_models):
        return None
    same_splits = all(config.split_for(m) == config.split_for("blend") for m in BlendForecaster.members(params))
    made_of = BlendForecaster.made_of(params, {m: config.model_params.get(m, {}) for m in global_models},
                                      config.levels)
    return "blend" if same_splits and made_of else None


def blend_task(results: dict[str, tuple[list[pd.DataFrame], float]], config: BacktestConfig,
               panel: dict[str, pd.DataFrame]) -> tuple[list[pd.DataFrame], float]:
    """The blend's per-asset forecast frames from its members' (`derived_blend`)."""
    began = time.perf_counter()
    params = config.model_params.get("blend", {})
    blend = make_forecaster("blend", **params)
    members = {m: {f["asset"].iloc[0]: f for f in results[m][0] if not f.empty}
               for m in BlendForecaster.members(params)}
    nn = members.get("nn")
    frames = [blend.combined_table(frame, None if nn is None else nn[asset], panel, config.horizon)
              .assign(model="blend") for asset, frame in members["gbm"].items() if nn is None or asset in nn]
    return frames, time.perf_counter() - began


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
    global_models = [m for m in models if m not in local]
    frames, timings = [], []
    tasks = [(asset, group) for asset in panel for group in model_groups(local, len(panel), executor.slots)]
    tasks.sort(key=lambda task: _work(panel[task[0]], config.split), reverse=True)  # largest first; stable
    # Global models (nn, gbm) refit on every asset's history at once: one sequential chain of refits each
    # that needs the whole panel, so they stay in the driver process whatever the executor. With a cluster
    # they run in driver threads while the workers take the per-asset tasks (the driver only waits on those);
    # in-process they run after them, as before. Either way the results are the same.
    derived = derived_blend(config, global_models)
    fitted = [m for m in global_models if m != derived]
    stop = threading.Event()
    beside = Background(lambda: global_forecasts(panel, fitted, derived, config, progress, stop)) \
        if executor.distributed and global_models and tasks else None
    # Each task carries its asset's frame (not scattered in advance): a task that depends on nothing is
    # queued on the Dask scheduler and handed to whichever worker frees up first, in submission order;
    # one that depends on scattered data is pinned to the worker holding it, half the assets each.
    try:
        results = executor.map(forecast_task, [a for a, _ in tasks], [panel[a] for a, _ in tasks],
                               [g for _, g in tasks], [config] * len(tasks), desc="backtest", unit="task",
                               progress=progress)
    except BaseException:
        if beside is not None:  # the refits in flight end first (at most one refit each), then the error
            stop.set()
            beside.wait()
        raise
    global_results = beside.result() if beside else global_forecasts(panel, fitted, derived, config, progress)
    done = {(asset, model): result for (asset, group), per_model in zip(tasks, results)
            for model, result in zip(group, per_model)}
    for asset in panel:  # the table's order is the panel's, whatever the order of the tasks
        for model in local:
            frame, seconds = done[asset, model]
            frames.append(frame)
            timings.append({"asset": asset, "model": model, "days": len(frame), "seconds": seconds})
    for model, (asset_frames, seconds) in zip(fitted + [derived] * bool(derived), global_results):
        frames.extend(asset_frames)
        timings.append({"asset": POOLED, "model": model, "days": sum(len(f) for f in asset_frames), "seconds": seconds})
    frames = [f for f in frames if not f.empty]
    if not frames:
        raise DataError("no forecasts: every asset has too little history before the start date, or the start is after "
                        "the data (--min-train / window.min_train_days, --start / backtest.start)")
    forecasts = pd.concat(frames, ignore_index=True)
    if not forecasts["realized_rv"].gt(0).any():
        raise DataError(f"no forecast has a realized target: the {config.horizon}-day horizon of every origin reaches "
                        f"past the data's last complete day (shorten --horizon or give more data)")
    return forecasts, pd.DataFrame(timings)
