"""How the learned models are trained, on marked or synthetic data with known answers: the GRU's held-out
validation assets and its embargo before the cut, early stopping on the validation loss with the best epoch kept,
a refit at another horizon, the GBM's h-day target, leaf sizes per booster, level window and seed, and
`volmargin train` fitting on no row after window.train_end (session 28's mutation audit: each test fails on a
change the suite let through)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from volmargin.data import synthetic_market
from volmargin.features.realized import daily_measures
from volmargin.models import make_forecaster
from volmargin.models.gbm import GBMForecaster

TINY_GBM = {"n_estimators": 30, "tail_estimators": 20}


@pytest.fixture(scope="module")
def panel():
    return {a: daily_measures(b) for a, b in synthetic_market(n_assets=4, days=1000, seed=1).items()}


def test_each_booster_kind_gets_its_own_leaf_size(panel):
    """tail_min_samples_leaf / smearing_min_samples_leaf reach the tail and smearing boosters (and
    min_samples_leaf the variance booster only): leaves larger than the panel leave those boosters constant."""
    trains = {a: d.iloc[:450] for a, d in panel.items()}
    model = make_forecaster("gbm", **TINY_GBM, min_samples_leaf=50, tail_min_samples_leaf=10**6,
                            smearing_min_samples_leaf=10**6, tail_calibration=False).fit_panel(trains)
    x = np.random.default_rng(0).normal(size=(256, len(model.feature_names_))).astype(np.float32)
    for side in ("long", "short"):
        for booster in model.quantile_models_[side]:
            assert np.ptp(booster.predict(x)) == 0.0  # one leaf per tree: no split could hold 10**6 rows
    assert np.ptp(model.smearing_model_.predict(x)) == 0.0
    assert np.ptp(model.variance_model_.predict(x)) > 0.0  # the variance booster keeps its own 50-row leaves


def test_the_gbm_seed_reaches_the_boosters_and_the_asset_folds(panel):
    """random_state drives row/feature sampling and the asset-to-fold deal: another seed, another model
    (a seed-spread study must not report zero spread because the seed is ignored)."""
    groups = np.repeat([f"a{i}" for i in range(12)], 3)
    deals = {seed: GBMForecaster(tail_folds=4, random_state=seed)._folds(groups) for seed in (0, 1, 2)}
    assert not (np.array_equal(deals[0], deals[1]) and np.array_equal(deals[0], deals[2]))
    trains = {a: d.iloc[:450] for a, d in panel.items()}
    fitted = [make_forecaster("gbm", **TINY_GBM, tail_calibration=False, random_state=s).fit_panel(trains)
              for s in (0, 1)]
    x = np.random.default_rng(0).normal(size=(64, len(fitted[0].feature_names_))).astype(np.float32)
    assert not np.allclose(fitted[0].variance_model_.predict(x), fitted[1].variance_model_.predict(x))


def _marked_frames(assets=5, days=200):
    """Frames whose first feature is the asset's number and second the row's day, so a window's last row
    says where it came from."""
    from volmargin.features.learned import FEATURE_NAMES

    dates = pd.date_range("2020-01-01", periods=days, tz="UTC")
    frames = {}
    for i in range(assets):
        frame = pd.DataFrame(0.0, index=dates, columns=list(FEATURE_NAMES))
        frame[FEATURE_NAMES[0]] = float(i)
        frame[FEATURE_NAMES[1]] = np.arange(days, dtype=float)
        frames[f"a{i}"] = frame.assign(y_var=0.0, r_std=0.0)
    return dates, frames


def _origins(rows):
    last = rows[list(range(len(rows)))][0][:, -1].numpy()
    return last[:, 0], last[:, 1]


def test_gru_validation_is_held_out_assets_after_the_cut_and_training_ends_h_days_before_it():
    from volmargin.models.neural import VolDataModule

    dates, frames = _marked_frames()
    data = VolDataModule(frames, window=4, horizon=5, val_fraction=0.25, seed=0, val_assets=0.3)
    data.setup()
    held = {float(a[1:]) for a in data.validation_assets()}
    assert len(held) == 2  # ceil(0.3 x 5), not its floor
    assert data.validation_cut() == dates[150]  # the last quarter of the dates validates
    val_assets, val_days = _origins(data.val_set)
    train_assets, train_days = _origins(data.train_set)
    assert set(val_assets) == held and not set(train_assets) & held  # a validation asset never trains
    assert val_days.min() == 150 and len(val_days) == 2 * 50
    assert train_days.max() == 145 and len(train_days) == 3 * 146  # no training target reaches past the cut
    nearly_all = VolDataModule(frames, window=4, val_fraction=0.25, val_assets=0.9)
    assert len(nearly_all.validation_assets()) == 4  # ceil(4.5) = 5, but one asset must be left to train on


def test_the_gbm_learns_the_h_day_target_at_horizon_h(panel):
    """At horizon 5 the variance booster is fitted to the 5-day relative log RV: its global smearing factor is
    log mean exp(y5 - fit) over the 5-day training rows (a model fitted on 1-day targets, rescaled by log h,
    passed the scale checks)."""
    from volmargin.features.learned import training_frame

    trains = {a: d.iloc[:700] for a, d in panel.items()}
    model = make_forecaster("gbm", **TINY_GBM, smearing="global", tail_calibration=False).fit_panel(trains, horizon=5)
    rows = pd.concat([training_frame(d, 5, model.feature_spec_) for d in trains.values()])
    rows = rows.dropna(subset=["y_var", "r_std"])
    x = model._inputs(rows)
    residual = rows["y_var"].to_numpy() - model._log_variance(x)
    assert abs(residual.mean()) < 0.02  # least squares on these very rows
    assert model.smearing_ == pytest.approx(np.log(np.mean(np.exp(residual))), rel=1e-9)


def test_level_days_reaches_the_gbm_features(panel):
    """`level_days` sets the level window the trees read (feature trials vary it): the fitted spec carries it
    and the standardisation statistics move with it."""
    from volmargin.features.learned import FeatureSpec, feature_frame

    trains = {a: d.iloc[:450] for a, d in panel.items()}
    short = make_forecaster("gbm", **TINY_GBM, level_days=30, tail_calibration=False).fit_panel(trains)
    assert short.feature_spec_ == FeatureSpec(level_days=30)
    names = list(short.feature_names_)
    rows = np.concatenate([feature_frame(d, FeatureSpec(level_days=30))[names].to_numpy() for d in trains.values()])
    np.testing.assert_allclose(short.scaler_.mean_, np.nanmean(rows, axis=0))


def test_gru_early_stopping_watches_the_validation_loss_and_keeps_the_best_epoch(panel):
    """Training stops `patience` epochs after the lowest validation loss, and the network kept is that epoch's:
    its loss on the validation rows is the best one logged (a last-epoch network, a train-loss monitor or
    another patience pass the other tests)."""
    import torch

    from volmargin.models.neural import NeuralForecaster, VolLightningModule

    trains = {a: d.iloc[:450] for a, d in panel.items()}
    model = NeuralForecaster(window=8, hidden=8, max_epochs=10, patience=1, batch_size=128, lr=3e-2).fit_panel(trains)
    losses = [row["val_loss"] for row in model.history_]
    best = int(np.argmin(losses))
    assert model.epochs_ < 10 and best < len(losses) - 1  # it did stop early, after a worse epoch: the test has teeth
    assert model.epochs_ == best + 1 + model.patience
    assert model.best_val_loss_ == pytest.approx(min(losses), rel=1e-6)
    data = model._data(trains)
    data.setup()
    module = VolLightningModule(model.network_, model.levels_, tail_weight=model.tail_weight)
    with torch.no_grad():
        qlike, fz0 = module._losses(data.val_set[list(range(len(data.val_set)))])
    assert float(qlike + model.tail_weight * fz0) == pytest.approx(model.best_val_loss_, rel=1e-4)


def test_a_gru_refit_at_another_horizon_trains_for_that_horizon(panel):
    """A warm start is for the same horizon only: refitting a 1-day model at 5 days forecasts 5 days."""
    from volmargin.models.neural import NeuralForecaster

    trains = {a: d.iloc[:450] for a, d in panel.items()}
    model = NeuralForecaster(window=8, hidden=8, max_epochs=2, refit_epochs=1, batch_size=128).fit_panel(trains)
    model.fit_panel(trains, horizon=5)
    assert model.horizon_ == 5 and model.epochs_ == model.max_epochs  # trained afresh, not warm-refitted
    history = panel["syn_a"].iloc[:480]
    assert model.forecast(history, history.index[450:], (0.975, 0.99)).horizon == 5


def test_train_fits_on_rows_up_to_train_end_and_scores_only_after_it(tmp_path, monkeypatch):
    """`volmargin train` honours window.train_end: the model learns from no row after it (the bundle claims that
    date) and every scored origin is at or after it."""
    from volmargin import training
    from volmargin.config import load_config
    from volmargin.models.base import GlobalForecaster
    from volmargin.models.scale import EWMA

    fitted = []

    class Recorder(GlobalForecaster):
        name = "recorder"

        def fit_panel(self, trains, horizon=1):
            fitted.append(max(t.index[-1] for t in trains.values()))
            self.model_ = EWMA().fit(next(iter(trains.values())), horizon)
            return self

        def forecast(self, history, origins, levels):
            return self.model_.forecast(history, origins, levels)

    path = tmp_path / "cfg.yaml"
    path.write_text("data: {synthetic_assets: 2, synthetic_days: 700, seed: 3}\n"
                    "window: {train_end: 2022-06-30, min_train_days: 200}\n"
                    f"model: {{name: gbm}}\noutput: {tmp_path / 'out'}\n")
    cfg = load_config(path)
    monkeypatch.setattr(training, "make_forecaster", lambda name, **params: Recorder())
    _, panel = training.daily_data(cfg)
    _, forecasts = training.fit_and_evaluate(cfg, panel, progress=False)
    end = cfg.timestamp("train_end")
    assert fitted == [end]  # one fit, on the rows up to the training end and none after
    assert forecasts["origin"].min() == end
