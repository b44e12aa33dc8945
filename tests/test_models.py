import numpy as np
import pandas as pd
import pytest
from arch import arch_model
from scipy import integrate, stats

from volmargin.errors import ConfigError
from volmargin.evaluation.walkforward import WalkForwardSplit, historical_forecasts
from volmargin.models import BASELINES, Garch, make_forecaster
from volmargin.models.distributions import empirical_tail, make_distribution, parametric_tail

LEVELS = (0.975, 0.99)


def test_normal_var_es_closed_form():
    var, es = parametric_tail(make_distribution("normal"), np.array([]), LEVELS)
    for j, level in enumerate(LEVELS):
        z = stats.norm.ppf(level)
        assert var["long"][j] == pytest.approx(z)
        assert es["long"][j] == pytest.approx(stats.norm.pdf(z) / (1 - level))
        assert var["short"][j] == var["long"][j]


def test_student_t_es_matches_numerical_integral():
    nu = 4.5
    var, es = parametric_tail(make_distribution("t"), np.array([nu]), (0.99,))
    scale = np.sqrt((nu - 2) / nu)  # unit-variance t
    q = stats.t.ppf(0.01, nu) * scale
    tail_mean = integrate.quad(lambda x: x * stats.t.pdf(x / scale, nu) / scale, -np.inf, q)[0] / 0.01
    assert var["long"][0] == pytest.approx(-q, rel=1e-6)
    assert es["long"][0] == pytest.approx(-tail_mean, rel=1e-6)


def test_empirical_tail_is_asymmetric_for_skewed_residuals():
    z = np.concatenate([np.linspace(-1, 1, 990), np.full(10, -8.0)])
    var, es = empirical_tail(z, (0.99,))
    assert es["long"][0] > 5 and es["short"][0] < 1.5
    assert var["long"][0] == pytest.approx(np.quantile(-z, 0.99))


@pytest.mark.parametrize("name", BASELINES)
def test_forecaster_contract(name, garch_daily):
    model = make_forecaster(name)
    assert not [k for k in vars(model) if k.endswith("_")], "constructor must only store parameters"
    assert make_forecaster(name, **model.get_params()).get_params() == model.get_params()
    train, history = garch_daily.iloc[:800], garch_daily.iloc[:900]
    assert model.fit(train) is model
    origins = history.index[800:]
    forecast = model.forecast(history, origins, LEVELS)
    assert len(forecast.origins) == 100 and np.all(forecast.variance > 0)
    for side in ("long", "short"):
        assert np.all(forecast.var[side] > 0)
        assert np.all(forecast.es[side] >= forecast.var[side])  # ES is beyond VaR
        assert np.all(forecast.var[side][:, 1] > forecast.var[side][:, 0])  # 99% beyond 97.5%
    frame = forecast.to_frame()
    assert {"variance", "var99_long", "es975_short"} <= set(frame.columns)


@pytest.mark.parametrize("name", BASELINES)
def test_no_look_ahead(name, garch_daily):
    """Corrupting every row after an origin leaves the forecasts up to that origin unchanged."""
    cut = garch_daily.index[1100]
    corrupted = garch_daily.copy()
    later = corrupted.index > cut
    corrupted.loc[later, "ret"] = corrupted.loc[later, "ret"] * 25 + 0.3
    corrupted.loc[later, "rv"] = corrupted.loc[later, "rv"] * 400
    split = WalkForwardSplit(start=garch_daily.index[1000], refit_every=30, min_train=500)
    clean = historical_forecasts(garch_daily, lambda: make_forecaster(name), split, LEVELS)
    dirty = historical_forecasts(corrupted, lambda: make_forecaster(name), split, LEVELS)
    upto = clean["origin"] <= cut
    forecast_columns = [c for c in clean.columns if c.startswith(("variance", "var", "es"))]
    pd.testing.assert_frame_equal(clean.loc[upto, forecast_columns], dirty.loc[upto, forecast_columns])
    assert not np.allclose(clean.loc[~upto, "variance"], dirty.loc[~upto, "variance"])  # the test has teeth


@pytest.mark.parametrize("o", [0, 1])
def test_garch_matches_direct_arch_fit(o, garch_daily):
    train = garch_daily.iloc[:1200]
    model = Garch(o=o).fit(train)
    direct = arch_model(100 * train["ret"], mean="Zero", vol="GARCH", p=1, o=o, q=1, dist="t").fit(disp="off")
    np.testing.assert_allclose(model.params_.to_numpy(), direct.params.to_numpy(), rtol=1e-6)
    expected = direct.forecast(horizon=1, reindex=False).variance.iloc[-1, 0] / 1e4
    forecast = model.forecast(train, train.index[-1:], (0.99,))
    assert forecast.variance[0] == pytest.approx(expected, rel=1e-8)
    nu = direct.params["nu"]
    q = stats.t.ppf(0.01, nu) * np.sqrt((nu - 2) / nu)
    assert forecast.var["long"][0, 0] == pytest.approx(-q * np.sqrt(expected), rel=1e-6)


def test_garch_multi_day_variance_is_sum_of_arch_path(garch_daily):
    train = garch_daily.iloc[:1000]
    model = Garch(o=1).fit(train, horizon=5)
    direct = model._model(train).fix(model.params_.to_numpy()).forecast(horizon=5, reindex=False)
    forecast = model.forecast(train, train.index[-1:], (0.99,))
    assert forecast.variance[0] == pytest.approx(direct.variance.iloc[-1].sum() / 1e4)


def test_ewma_and_hist_follow_their_recursions(garch_daily):
    data = garch_daily.iloc[:400]
    r2 = data["ret"].to_numpy() ** 2
    ewma = make_forecaster("ewma", lam=0.9).fit(data)
    path = ewma.one_day_variance(data).to_numpy()
    np.testing.assert_allclose(path[1:], 0.9 * path[:-1] + 0.1 * r2[1:])
    hist = make_forecaster("hist", window=10).fit(data)
    assert hist.one_day_variance(data).iloc[-1] == pytest.approx(r2[-10:].mean())
    forecast = make_forecaster("ewma", lam=0.9).fit(data, horizon=3).forecast(data, data.index[-1:], (0.99,))
    assert forecast.variance[0] == pytest.approx(3 * path[-1])


def test_har_recovers_known_coefficients():
    rng = np.random.default_rng(1)
    n, b = 4000, (-0.8, 0.4, 0.3, 0.2)  # intercept, daily, weekly, monthly on log RV
    log_rv = np.full(n, -8.0)
    for t in range(22, n - 1):
        rv = np.exp(log_rv)
        x = [np.log(rv[t]), np.log(rv[t - 4 : t + 1].mean()), np.log(rv[t - 21 : t + 1].mean())]
        log_rv[t + 1] = b[0] + np.dot(b[1:], x) + rng.normal(0, 0.3)
    index = pd.date_range("2010-01-01", periods=n, freq="D", tz="UTC")
    daily = pd.DataFrame({"rv": np.exp(log_rv), "ret": rng.normal(0, np.sqrt(np.exp(log_rv))), "complete": True},
                         index=index).iloc[30:]
    har = make_forecaster("har").fit(daily)
    np.testing.assert_allclose(har.regression_.coef_, b[1:], atol=0.05)
    assert har.resid_var_ == pytest.approx(0.09, rel=0.1)


def test_unknown_model_and_bad_parameters_raise_config_errors(garch_daily):
    with pytest.raises(ConfigError, match="unknown model 'lstm'"):
        make_forecaster("lstm")
    with pytest.raises(ConfigError, match="lam"):
        make_forecaster("ewma", lam=1.5).fit(garch_daily)
    with pytest.raises(ConfigError, match="distribution"):
        make_forecaster("hist", dist="cauchy").fit(garch_daily)
    with pytest.raises(ConfigError, match="filter"):
        make_forecaster("fhs", filter="kalman").fit(garch_daily)
