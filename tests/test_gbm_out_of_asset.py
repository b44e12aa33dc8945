"""The GBM's tail calibration and its out-of-fold variance forecasts never score a row with a booster that
saw that row's asset (the tests so far pin only the out-of-time cut)."""
import numpy as np
import pandas as pd

import volmargin.models.gbm as gbm


class Seen:
    """A stand-in booster that remembers the assets (column 0) it was fitted on and refuses to predict them."""

    def __init__(self, x_fit):
        self.assets = set(np.unique(x_fit[:, 0]))

    def predict(self, x):
        overlap = self.assets & set(np.unique(x[:, 0]))
        assert not overlap, f"a booster fitted on assets {sorted(self.assets)} scored its own asset(s) {sorted(overlap)}"
        return np.full(len(x), 0.5)


def _toy(assets=6, days=50):
    groups = np.repeat([f"a{i}" for i in range(assets)], days)
    x = np.column_stack([np.repeat(np.arange(assets, dtype=float), days), np.zeros(assets * days)])
    dates = pd.DatetimeIndex(np.tile(pd.date_range("2021-01-01", periods=days, tz="UTC"), assets))
    return groups, x, dates


def test_tail_calibration_scores_each_asset_with_boosters_that_never_saw_it(monkeypatch):
    groups, x, dates = _toy()
    fits = []

    def quantile_fit(self, x_fit, loss, level, weight=None):
        fits.append(Seen(x_fit))
        return fits[-1]

    monkeypatch.setattr(gbm.GBMForecaster, "_quantile_fit", quantile_fit)
    monkeypatch.setattr(gbm, "scaled_leaves", lambda regressor, factor: regressor)
    model = gbm.GBMForecaster(tail_folds=3)
    model.levels_, model.horizon_ = (0.99,), 1
    model.quantile_models_ = {"long": [None], "short": [None]}
    losses = {"long": np.ones(len(x)), "short": np.ones(len(x))}
    model._calibrate_tails(x, np.zeros(len(x)), np.zeros(len(x)), losses, groups, dates, None)
    assert len(fits) == 2 * 3  # side x fold, each fitted without its fold's assets
    assert all(len(f.assets) == 4 for f in fits)  # 6 assets in 3 folds: 4 seen, 2 held out


def test_out_of_fold_variance_never_comes_from_a_booster_that_saw_the_asset(monkeypatch):
    groups, x, _ = _toy()
    fits = []

    def variance_booster(self, x_fit, y, weight=None):
        fits.append(Seen(x_fit))
        return fits[-1]

    monkeypatch.setattr(gbm.GBMForecaster, "_variance_booster", variance_booster)
    model = gbm.GBMForecaster(tail_folds=3)
    fitted = model._out_of_fold(x, np.zeros(len(x)), groups, None, np.ones(len(x), dtype=bool))
    assert len(fits) == 3 and np.isfinite(fitted).all()
