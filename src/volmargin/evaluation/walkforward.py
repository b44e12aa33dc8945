"""Walk-forward historical forecasts: producing forecasts, kept apart from scoring them.

The split is an object of its own (as in darts/sktime): it turns a daily index into blocks, each a
refit origin, its training rows and the origins forecast with those parameters. Every forecast at
origin t is made from rows up to t only: the forecaster is fitted on rows up to the block's refit
origin and then given history up to the block's last origin, and a test corrupts later rows.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pandas as pd

from volmargin.errors import ConfigError
from volmargin.features.realized import horizon_targets
from volmargin.models.base import Forecaster, GlobalForecaster

ForecasterFactory = Callable[[], Forecaster]


@dataclass(frozen=True)
class Block:
    refit_origin: pd.Timestamp
    train: slice  # label slice of the daily index used to fit
    origins: pd.DatetimeIndex


@dataclass(frozen=True)
class WalkForwardSplit:
    """Optional first target date `start`, last origin `end`, refit cadence and training window.

    `window=None` is an expanding window; otherwise the last `window` days up to the refit origin.
    `refit_every=None` fits once, at the first origin, and forecasts every later origin out of sample.
    Origins with fewer than `min_train` days of history are skipped (young listings).
    """

    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    refit_every: int | None = 20
    window: int | None = None
    min_train: int = 365

    def __post_init__(self) -> None:
        if self.refit_every is not None and self.refit_every < 1:
            raise ConfigError(f"refit_every must be >= 1 day, got {self.refit_every}")
        if self.window is not None and self.window < 30:
            raise ConfigError(f"window must be at least 30 days, got {self.window}")
        if self.min_train < 30:
            raise ConfigError(f"min_train must be at least 30 days, got {self.min_train}")

    def origins(self, index: pd.DatetimeIndex) -> pd.DatetimeIndex:
        keep = index >= index[0] + pd.Timedelta(days=self.min_train)
        if self.start is not None:
            keep &= index >= self.start - pd.Timedelta(days=1)
        if self.end is not None:
            keep &= index <= self.end
        return index[keep]

    def blocks(self, index: pd.DatetimeIndex) -> Iterator[Block]:
        origins = self.origins(index)
        position = 0
        while position < len(origins):
            refit = origins[position]
            block_origins = origins[position:]
            if self.refit_every is not None:
                block_origins = block_origins[block_origins < refit + pd.Timedelta(days=self.refit_every)]
            train_start = None if self.window is None else refit - pd.Timedelta(days=self.window - 1)
            yield Block(refit, slice(train_start, refit), block_origins)
            position += len(block_origins)


def historical_forecasts(
    daily: pd.DataFrame,
    make_model: ForecasterFactory,
    split: WalkForwardSplit,
    levels: tuple[float, ...],
    horizon: int = 1,
) -> pd.DataFrame:
    """All walk-forward forecasts of one model on one asset, with the realized targets beside them.

    Columns: origin, date (first target day), horizon, variance, var*/es* per level and side,
    realized_rv, realized_ret. Empty when the asset has too little history.
    """
    model = make_model()
    frames = []
    for block in split.blocks(daily.index):
        model.fit(daily.loc[block.train], horizon)
        frames.append(_forecast_block(model, daily, block, block.origins, levels))
    return with_targets(frames, daily, horizon)


def panel_historical_forecasts(
    panel: dict[str, pd.DataFrame],
    make_model: Callable[[], GlobalForecaster],
    split: WalkForwardSplit,
    levels: tuple[float, ...],
    horizon: int = 1,
    on_refit: Callable[[pd.Timestamp], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> dict[str, pd.DataFrame]:
    """Walk-forward forecasts of a global model: one refit on all assets per block, then each asset's
    origins in that block (an asset joins once it has `min_train` days of history). Per-asset frames
    as in `historical_forecasts`. `on_start` gets the number of refits ahead, `on_refit` each refit's origin."""
    calendar = pd.DatetimeIndex(sorted(set().union(*(d.index for d in panel.values()))))
    asset_origins = {asset: split.origins(daily.index) for asset, daily in panel.items()}
    model = make_model()
    frames: dict[str, list[pd.DataFrame]] = {asset: [] for asset in panel}
    blocks = []
    for block in split.blocks(calendar):
        in_block = {a: o[(o >= block.origins[0]) & (o <= block.origins[-1])] for a, o in asset_origins.items()}
        if any(len(o) for o in in_block.values()):
            blocks.append((block, in_block))
    if on_start is not None:
        on_start(len(blocks))
    for block, in_block in blocks:
        trains = {a: d.loc[block.train] for a, d in panel.items()}
        model.fit_panel({a: t for a, t in trains.items() if len(t)}, horizon)
        for asset, origins in in_block.items():
            if len(origins):
                frames[asset].append(_forecast_block(model, panel[asset], block, origins, levels))
        if on_refit is not None:
            on_refit(block.refit_origin)
    return {asset: with_targets(f, panel[asset], horizon) for asset, f in frames.items()}


def _forecast_block(
    model: Forecaster, daily: pd.DataFrame, block: Block, origins: pd.DatetimeIndex, levels: tuple[float, ...]
) -> pd.DataFrame:
    history = daily.loc[block.train.start : origins[-1]]
    return model.forecast(history, origins, levels).to_frame()


def with_targets(frames: list[pd.DataFrame], daily: pd.DataFrame, horizon: int) -> pd.DataFrame:
    if not frames:
        return pd.DataFrame()
    forecasts = pd.concat(frames)
    targets = horizon_targets(daily, horizon).loc[forecasts.index]
    forecasts.insert(0, "horizon", horizon)
    forecasts.insert(0, "date", forecasts.index + pd.Timedelta(days=1))
    forecasts["realized_rv"] = targets["target_rv"].to_numpy()
    forecasts["realized_ret"] = targets["target_ret"].to_numpy()
    return forecasts.reset_index()
