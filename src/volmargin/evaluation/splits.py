"""Validation that measures what a venue sees: a learned model scored on assets it never trained on.

`AssetGroupedSplit` is a split object of its own (as `WalkForwardSplit` is): the assets are dealt into
`n_folds` groups by a seeded permutation, and fold k trains on every asset outside group k on rows up to
`train_end` and scores group k's assets on origins after it, with no refit: the exported-bundle way (a
model trained once to a date, applied to a listing it has never seen). Every asset is scored by exactly
one fold's model, and never by a model that saw it.

`unseen_asset_forecasts` produces those forecasts; `in_asset_forecasts` the figure beside it (one model
trained on every asset to the same date, scoring the same origins).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from volmargin.data.loader import with_instruments_together
from volmargin.errors import ConfigError, DataError
from volmargin.evaluation.walkforward import WalkForwardSplit, with_targets
from volmargin.models.base import GlobalForecaster


@dataclass(frozen=True)
class AssetFold:
    index: int
    train_assets: tuple[str, ...]
    test_assets: tuple[str, ...]


@dataclass(frozen=True)
class AssetGroupedSplit:
    """Folds grouped by asset and ordered in time (see the module docstring).

    `train_end`: last day a fold's model learns from; scored origins run from it to `score_end` (default:
    the end of each asset's data), for assets with `min_train` days of history (the HAR reference needs
    it too). `seed` fixes the asset-to-group deal, so folds are reproducible for the same asset list."""

    train_end: pd.Timestamp
    n_folds: int = 5
    score_end: pd.Timestamp | None = None
    min_train: int = 365
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_folds < 2:
            raise ConfigError(f"n_folds must be >= 2, got {self.n_folds}")

    def groups(self, assets: Iterable[str]) -> dict[str, int]:
        """Asset -> fold index: a seeded permutation of the sorted names dealt round-robin (balanced), then every
        pair of one coin (`data.instrument`: binance_btcusdt, bitstamp_btcusd) in the group of its first name."""
        names = sorted(set(assets))
        if len(names) < self.n_folds:
            raise ConfigError(f"{len(names)} assets cannot fill {self.n_folds} asset-grouped folds")
        order = np.random.default_rng(self.seed).permutation(len(names))
        return with_instruments_together({names[i]: k % self.n_folds for k, i in enumerate(order)})

    def folds(self, assets: Iterable[str]) -> list[AssetFold]:
        groups = self.groups(assets)
        return [AssetFold(k, tuple(a for a, g in sorted(groups.items()) if g != k),
                          tuple(a for a, g in sorted(groups.items()) if g == k)) for k in range(self.n_folds)]

    def scoring_split(self) -> WalkForwardSplit:
        """Origins scored after training: from `train_end` on (first target the day after), no refit."""
        return WalkForwardSplit(start=self.train_end + pd.Timedelta(days=1), end=self.score_end, refit_every=None,
                                min_train=self.min_train)


def _trained(make_model: Callable[[], GlobalForecaster], panel: dict[str, pd.DataFrame], assets: Iterable[str],
             train_end: pd.Timestamp, horizon: int) -> GlobalForecaster:
    trains = {a: panel[a].loc[:train_end] for a in assets}
    trains = {a: t for a, t in trains.items() if len(t)}
    if not trains:
        raise DataError(f"no training rows up to {train_end.date()}")
    return make_model().fit_panel(trains, horizon)


def _score(model: GlobalForecaster, panel: dict[str, pd.DataFrame], assets: Iterable[str], split: WalkForwardSplit,
           levels: tuple[float, ...], horizon: int) -> dict[str, pd.DataFrame]:
    out = {}
    for asset in assets:
        daily = panel[asset]
        origins = split.origins(daily.index)
        if len(origins):
            frame = model.forecast(daily.loc[: origins[-1]], origins, levels).to_frame()
            out[asset] = with_targets([frame], daily, horizon)
    return out


def unseen_asset_forecasts(panel: dict[str, pd.DataFrame], make_model: Callable[[], GlobalForecaster],
                           split: AssetGroupedSplit, levels: tuple[float, ...], horizon: int = 1,
                           on_fold: Callable[[AssetFold], None] | None = None) -> dict[str, pd.DataFrame]:
    """Per asset, the forecasts of the one fold model that never saw it (frames as `historical_forecasts`)."""
    out: dict[str, pd.DataFrame] = {}
    for fold in split.folds(panel):
        model = _trained(make_model, panel, fold.train_assets, split.train_end, horizon)
        scored = _score(model, panel, fold.test_assets, split.scoring_split(), levels, horizon)
        if set(scored) & set(fold.train_assets):  # cannot happen by construction; guards later edits
            raise AssertionError("an asset was scored by a model trained on it")
        out.update(scored)
        if on_fold is not None:
            on_fold(fold)
    return out


def in_asset_forecasts(panel: dict[str, pd.DataFrame], make_model: Callable[[], GlobalForecaster],
                       split: AssetGroupedSplit, levels: tuple[float, ...], horizon: int = 1) -> dict[str, pd.DataFrame]:
    """The same origins scored by one model trained on every asset up to `train_end` (the in-asset figure)."""
    model = _trained(make_model, panel, panel, split.train_end, horizon)
    return _score(model, panel, panel, split.scoring_split(), levels, horizon)
