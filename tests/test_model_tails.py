"""Forecast tails by side, level and horizon, in numbers (session 27's mutation audit of `volmargin.models`: a GBM
whose long margin read the short tail, an ES equal to VaR, an h-day forecast on the 1-day scale, FHS on residuals in
percent, a blend of weight 0 that used the GBM and Student-t shapes fitted by maximising the loss passed every
test)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from volmargin.models import Forecast, make_forecaster
from volmargin.models.distributions import empirical_tail, fit_params, make_distribution

LEVELS = (0.975, 0.99)


def test_from_scale_keeps_each_side_and_takes_es_from_the_es_table():
    origins = pd.date_range("2024-01-01", periods=3, tz="UTC")
    variance = np.array([1e-4, 4e-4, 9e-4])
    std_var = {"long": np.array([2.0, 3.0]), "short": np.array([1.5, 2.5])}
    std_es = {"long": np.array([2.6, 3.6]), "short": np.array([2.1, 3.1])}
    forecast = Forecast.from_scale(origins, 1, variance, LEVELS, std_var, std_es)
    vol = np.sqrt(variance)[:, None]
    for side in ("long", "short"):
        np.testing.assert_allclose(forecast.var[side], vol * std_var[side])
        np.testing.assert_allclose(forecast.es[side], vol * std_es[side])
    frame = forecast.to_frame()
    np.testing.assert_allclose(frame["es975_long"], vol[:, 0] * 2.6)
    np.testing.assert_allclose(frame["var99_short"], vol[:, 0] * 2.5)


def test_fit_params_recovers_the_student_t_shape_and_ignores_missing_values():
    nu = 3.5
    z = stats.t.rvs(nu, size=20000, random_state=np.random.default_rng(0)) * np.sqrt((nu - 2) / nu)
    fitted = fit_params(make_distribution("t"), np.r_[z, np.nan, np.inf])
    assert fitted[0] == pytest.approx(nu, rel=0.15)


def test_empirical_tail_ignores_missing_values_and_keeps_a_tied_quantile():
    z = np.r_[np.zeros(990), np.full(10, -8.0)]
    var, es = empirical_tail(np.r_[z, np.nan], (0.995,))
    assert var["long"][0] == 8.0 and es["long"][0] == 8.0  # VaR at the tied extreme: ES is that extreme
    assert var["short"][0] == 0.0 and es["short"][0] == 0.0


def test_fhs_on_a_gjr_filter_rescales_unit_variance_residuals(garch_daily):
    train = garch_daily.iloc[:1200]
    z = make_forecaster("gjr").fit(train).standardized_residuals(train)
    assert np.std(z) == pytest.approx(1.0, abs=0.1)
    fhs = make_forecaster("fhs", filter="gjr").fit(train)
    gjr = make_forecaster("gjr").fit(train)
    origins = train.index[-50:]
    a, b = fhs.forecast(train, origins, LEVELS), gjr.forecast(train, origins, LEVELS)
    ratio = a.var["long"] / b.var["long"]
    assert np.all((ratio > 0.75) & (ratio < 1.33))


def test_forecast_levels_are_ascending_and_a_forecast_needs_both_sides():
    from volmargin.models.base import forecast_levels

    assert forecast_levels(["variance", "var99_long", "es99_long", "var975_long", "var99_short"]) == (0.975, 0.99)
    origins = pd.date_range("2024-01-01", periods=2, tz="UTC")
    table = np.ones((2, 1))
    with pytest.raises(ValueError, match="both sides"):
        Forecast(origins, 1, np.ones(2), (0.99,), {"long": table}, {"long": table})


def test_from_raw_maps_each_output_column_to_its_side_kind_and_level():
    from volmargin.models.neural import output_columns

    origins = pd.date_range("2024-01-01", periods=2, tz="UTC")
    columns = output_columns(LEVELS)
    raw = np.tile(np.arange(len(columns), dtype=float), (2, 1))
    raw[:, 0] = np.log(4.0)  # variance 4 x the level's
    log_level = np.log([1e-4, 4e-4])
    frame = Forecast.from_raw(origins, 1, raw, log_level, LEVELS).to_frame()
    variance = 4.0 * np.exp(log_level)
    np.testing.assert_allclose(frame["variance"], variance)
    for j, name in enumerate(columns[1:], start=1):
        np.testing.assert_allclose(frame[name], j * np.sqrt(variance), err_msg=name)


@pytest.fixture(scope="module")
def learned_panel():
    from volmargin.data import synthetic_market
    from volmargin.features.realized import daily_measures

    return {a: daily_measures(b) for a, b in synthetic_market(n_assets=4, days=1000, seed=1).items()}


def test_gbm_multi_day_variance_is_on_the_scale_of_the_h_day_realized_variance(learned_panel):
    trains = {a: d.iloc[:700] for a, d in learned_panel.items()}
    tiny = {"n_estimators": 30, "tail_estimators": 20}
    h5 = make_forecaster("gbm", **tiny).fit_panel(trains, horizon=5)
    h1 = make_forecaster("gbm", **tiny).fit_panel(trains, horizon=1)
    daily = learned_panel["syn_a"] if "syn_a" in learned_panel else next(iter(learned_panel.values()))
    origins = daily.index[700:900]
    v5, v1 = h5.forecast(daily, origins, LEVELS), h1.forecast(daily, origins, LEVELS)
    realized = daily["rv"].rolling(5).sum().shift(-5).loc[origins].to_numpy()
    assert 0.5 < np.nanmean(v5.variance) / np.nanmean(realized) < 2.0
    assert 3.0 < np.median(v5.variance / v1.variance) < 7.0
    assert np.all(v5.var["long"] > v1.var["long"])


def test_blended_weights_sum_to_one_at_every_weight_and_the_tail_factor_is_the_volatility_ratio():
    from volmargin.models.blend import blended

    gbm, nn, long = np.array([1e-4, 4e-4]), np.array([3e-4, 1e-4]), np.array([2e-4, 2e-4])
    for w in (0.0, 0.3, 1.0):
        variance, scale = blended(gbm, nn if w < 1 else None, w)
        np.testing.assert_allclose(variance, w * gbm + (1 - w) * nn, rtol=1e-12)
        np.testing.assert_allclose(scale, np.sqrt(variance / gbm), rtol=1e-12)
    variance, _ = blended(gbm, nn, 0.0, long, 0.2)
    np.testing.assert_allclose(variance, 0.8 * nn + 0.2 * long, rtol=1e-12)


@pytest.mark.parametrize("params, message", [({"weight": -0.1}, "weight"), ({"weight": True}, "weight"),
                                             ({"long_share": -0.1}, "long_share"),
                                             ({"long_share": 0.1, "long_days": 1}, "long_days")])
def test_blend_refuses_weights_and_level_windows_out_of_range(params, message):
    from volmargin.errors import ConfigError
    from volmargin.models.blend import BlendForecaster

    with pytest.raises(ConfigError, match=message):
        BlendForecaster(**params)._check_params()


def test_gbm_tails_follow_the_side_that_loses_on_crash_skewed_returns(learned_panel):
    """Down-moves 1.6 x up-moves: longs (who lose when the price falls) need the wider VaR, and ES lies
    strictly beyond VaR on both sides, by the training losses' own ES/VaR ratio per side."""
    skewed = {a: d.assign(ret=np.where(d["ret"] < 0, 1.6 * d["ret"], 0.6 * d["ret"])) for a, d in learned_panel.items()}
    trains = {a: d.iloc[:700] for a, d in skewed.items()}
    model = make_forecaster("gbm", n_estimators=30, tail_estimators=20).fit_panel(trains)
    daily = next(iter(skewed.values()))
    forecast = model.forecast(daily, daily.index[700:900], LEVELS)
    assert np.median(forecast.var["long"][:, 1] / forecast.var["short"][:, 1]) > 1.3
    for side in ("long", "short"):
        assert np.all(model.es_ratio_[side] > 1.0)
        assert np.all(forecast.es[side] > forecast.var[side])
    assert model.es_ratio_["long"][1] > model.es_ratio_["short"][1]  # the crash side has the fatter tail beyond VaR


def test_global_smearing_is_the_log_mean_exp_of_the_training_residuals(learned_panel):
    """Duan's smearing: the global factor added to every log variance forecast is log mean exp(residual) over
    the training rows (not the mean log residual, ~0 for a least-squares fit: variance biased low)."""
    from volmargin.features.learned import training_frame

    trains = {a: d.iloc[:700] for a, d in learned_panel.items()}
    model = make_forecaster("gbm", n_estimators=30, tail_estimators=20, smearing="global").fit_panel(trains)
    rows = pd.concat([training_frame(d, 1, model.feature_spec_) for d in trains.values()]).dropna(subset=["y_var", "r_std"])
    x = model._inputs(rows)
    residual = rows["y_var"].to_numpy() - model._log_variance(x)
    factor = np.log(np.mean(np.exp(residual)))
    assert factor > 0.05  # the log RV residuals are dispersed: the factor matters
    np.testing.assert_allclose(model.predict_raw(x)[:, 0] - model._log_variance(x), factor, rtol=1e-9)


def test_gbm_var_never_crosses_even_where_its_quantile_boosters_do(learned_panel):
    """Where the 97.5% booster predicts more than the 99% one, the 99% VaR is lifted to it (cumulative max)."""
    class Fixed:
        def __init__(self, value):
            self.value = value

        def predict(self, x):
            return np.full(len(x), self.value)

    trains = {a: d.iloc[:700] for a, d in learned_panel.items()}
    model = make_forecaster("gbm", n_estimators=30, tail_estimators=20).fit_panel(trains)
    model.quantile_models_ = {"long": [Fixed(3.0), Fixed(2.0)], "short": [Fixed(2.0), Fixed(2.5)]}
    raw = model.predict_raw(np.zeros((4, len(model.feature_names_)), dtype=np.float32))
    np.testing.assert_allclose(raw[:, 1:3], 3.0)  # long VaR 97.5, 99
    np.testing.assert_allclose(raw[:, 5:7], [[2.0, 2.5]] * 4)  # short VaR 97.5, 99
