"""Asset-grouped, time-ordered validation: no scored asset is ever in its model's training fold."""

import numpy as np
import pandas as pd
import pytest

from volmargin.data import synthetic_market
from volmargin.errors import ConfigError
from volmargin.evaluation.splits import AssetGroupedSplit, in_asset_forecasts, unseen_asset_forecasts
from volmargin.features.realized import daily_measures
from volmargin.models.base import GlobalForecaster
from volmargin.models.scale import EWMA

TRAIN_END = pd.Timestamp("2021-12-31", tz="UTC")


class Recorder(GlobalForecaster):
    """A global model that remembers the assets and last dates it was fitted on (EWMA per asset inside)."""

    name = "recorder"
    fits: list[dict[str, pd.Timestamp]] = []

    def fit_panel(self, trains, horizon=1):
        Recorder.fits.append({a: t.index[-1] for a, t in trains.items()})
        self.model_ = EWMA().fit(next(iter(trains.values())), horizon)
        return self

    def forecast(self, history, origins, levels):
        return self.model_.forecast(history, origins, levels)


@pytest.fixture(scope="module")
def panel():
    bars = synthetic_market(n_assets=7, days=1095, seed=2)
    return {a: daily_measures(b) for a, b in bars.items()}


def test_folds_partition_the_assets_and_are_reproducible():
    assets = [f"a{i}" for i in range(23)]
    split = AssetGroupedSplit(train_end=TRAIN_END, n_folds=5, seed=3)
    folds = split.folds(assets)
    tested = [a for f in folds for a in f.test_assets]
    assert sorted(tested) == sorted(assets)  # every asset scored exactly once
    assert all(not set(f.test_assets) & set(f.train_assets) for f in folds)
    assert max(len(f.test_assets) for f in folds) - min(len(f.test_assets) for f in folds) <= 1
    assert split.groups(reversed(assets)) == split.groups(assets)  # order of the input does not matter
    assert AssetGroupedSplit(train_end=TRAIN_END, n_folds=5, seed=4).groups(assets) != split.groups(assets)
    with pytest.raises(ConfigError):
        AssetGroupedSplit(train_end=TRAIN_END, n_folds=1)
    with pytest.raises(ConfigError):
        split.folds(assets[:3])


def test_a_scored_asset_never_enters_its_training_fold_nor_later_rows(panel):
    Recorder.fits = []
    split = AssetGroupedSplit(train_end=TRAIN_END, n_folds=3, min_train=200)
    out = unseen_asset_forecasts(panel, Recorder, split, (0.99,))
    assert sorted(out) == sorted(panel)
    groups = split.groups(panel)
    for fit, fold in zip(Recorder.fits, range(3)):
        scored = {a for a, g in groups.items() if g == fold}
        assert not scored & set(fit)  # the fold's model never saw the assets it scores
        assert max(fit.values()) <= TRAIN_END  # nor a row after the training end
    for frame in out.values():
        assert frame["origin"].min() == TRAIN_END  # scored from the training end on (its target is the day after)
        assert np.isfinite(frame["variance"]).all()
    Recorder.fits = []
    in_asset = in_asset_forecasts(panel, Recorder, split, (0.99,))
    assert set(Recorder.fits[0]) == set(panel) and sorted(in_asset) == sorted(panel)
    assert max(Recorder.fits[0].values()) <= TRAIN_END  # the in-asset comparison learns no scored day either


class HistorySpy(Recorder):
    """Records the last row of every history it is asked to forecast from, beside the last origin asked for."""

    name = "history_spy"
    seen: list[tuple[pd.Timestamp, pd.Timestamp]] = []

    def forecast(self, history, origins, levels):
        HistorySpy.seen.append((history.index[-1], origins[-1]))
        return super().forecast(history, origins, levels)


def test_the_unseen_asset_scorer_hands_a_model_no_row_after_its_last_origin(panel):
    """No look-ahead through the history: a model that does not trim it itself must not be given later rows."""
    HistorySpy.seen = []
    split = AssetGroupedSplit(train_end=TRAIN_END, n_folds=2, min_train=200,
                              score_end=pd.Timestamp("2022-06-30", tz="UTC"))
    unseen_asset_forecasts(panel, HistorySpy, split, (0.99,))
    assert HistorySpy.seen and all(last_row == last_origin for last_row, last_origin in HistorySpy.seen)


def test_one_coins_pairs_share_a_fold_so_none_is_scored_by_a_model_that_saw_its_twin():
    """binance_btcusdt and bitstamp_btcusd (daily returns correlated 0.9975) were dealt into different groups, so
    each BTC was scored by a model trained on the other (session 31's red team); the GBM's out-of-fold tails too."""
    from volmargin.data.loader import instrument
    from volmargin.models.gbm import GBMForecaster

    names = ["binance_btcusdt", "bitstamp_btcusd", "binance_btcusdt_perp", "binance_ethusdt", "binance_solusdt",
             "binance_adausdt", "binance_xrpusdt", "binance_dogeusdt", "binance_ltcusdt", "binance_linkusdt", "syn_a"]
    assert {instrument(n) for n in names[:3]} == {"btc"} and instrument("syn_a") == "syn_a"
    for seed in range(20):
        groups = AssetGroupedSplit(pd.Timestamp("2021-12-31", tz="UTC"), n_folds=4, seed=seed).groups(names)
        assert len({groups[n] for n in names[:3]}) == 1
        for fold in AssetGroupedSplit(pd.Timestamp("2021-12-31", tz="UTC"), n_folds=4, seed=seed).folds(names):
            assert not {instrument(a) for a in fold.train_assets} & {instrument(a) for a in fold.test_assets}
        inner = GBMForecaster(random_state=seed)._folds(np.array(names))
        assert len(set(inner[:3])) == 1
