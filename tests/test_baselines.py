"""The baselines every learned model is judged against, on processes with known answers: HAR's unbiased level
(the log-normal correction), its h-day scale and monthly lag, the scaled models' residuals standardised by the
day before's variance, the Student-t shape they fit, their parameters and documented defaults (session 28's
mutation audit: each test fails on a change the suite let through)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from volmargin.models import make_forecaster


def _har_process(n=3000, sigma=0.8, seed=5):
    """Log-HAR RV with large log noise (so the log-normal bias correction exp(sigma^2 / 2) = 1.38 matters);
    returns drawn with that day's RV as variance."""
    rng = np.random.default_rng(seed)
    b = (-0.8, 0.4, 0.3, 0.2)
    log_rv = np.full(n, -8.0)
    for t in range(22, n - 1):
        rv = np.exp(log_rv)
        x = [np.log(rv[t]), np.log(rv[t - 4: t + 1].mean()), np.log(rv[t - 21: t + 1].mean())]
        log_rv[t + 1] = b[0] + np.dot(b[1:], x) + rng.normal(0, sigma)
    index = pd.date_range("2010-01-01", periods=n, freq="D", tz="UTC")
    rv = np.exp(log_rv)
    return pd.DataFrame({"rv": rv, "ret": rng.normal(0, np.sqrt(rv)), "complete": True}, index=index).iloc[30:]


def test_har_level_is_unbiased_and_carries_the_lognormal_correction():
    """HAR regresses log RV; exp of the fitted log is the median, not the mean: the forecast must add half
    the residual variance, so its mean matches the realized variance out of sample."""
    daily = _har_process()
    train = daily.iloc[:2000]
    har = make_forecaster("har").fit(train)
    x = har._regressors(daily)
    ready = x.notna().all(axis=1)
    expected = np.exp(har.regression_.predict(x[ready].to_numpy()) + 0.5 * har.resid_var_)
    np.testing.assert_allclose(har.one_day_variance(daily)[ready].to_numpy(), expected, rtol=1e-12)
    origins = daily.index[2000:-1]
    forecast = har.forecast(daily, origins, (0.99,)).variance
    realized = daily["rv"].shift(-1).loc[origins].to_numpy()
    assert 0.85 < forecast.mean() / realized.mean() < 1.15


def test_har_multi_day_variance_is_on_the_h_day_scale_and_its_residuals_have_unit_variance():
    """At h = 5 the regression target is the mean daily RV over the next 5 days and the forecast is 5 x it;
    the standardized h-day returns have unit variance (else the Student-t is fitted to the wrong scale)."""
    daily = _har_process()
    train = daily.iloc[:2000]
    h5 = make_forecaster("har").fit(train, horizon=5)
    h1 = make_forecaster("har").fit(train, horizon=1)
    origins = daily.index[2000:-6]
    v5 = h5.forecast(daily, origins, (0.99,)).variance
    v1 = h1.forecast(daily, origins, (0.99,)).variance
    assert 3.5 < np.median(v5 / v1) < 6.5
    realized = daily["rv"].rolling(5).sum().shift(-5).loc[origins].to_numpy()
    assert 0.8 < v5.mean() / realized.mean() < 1.25
    z = h5.standardized_residuals(train)
    assert np.nanstd(z) == pytest.approx(1.0, abs=0.15)


def test_har_monthly_term_averages_22_days():
    daily = _har_process(n=200)
    har = make_forecaster("har")
    x = har._regressors(daily)
    assert list(x.columns) == ["log_rv_1", "log_rv_5", "log_rv_22"]
    assert x["log_rv_22"].iloc[-1] == pytest.approx(np.log(daily["rv"].iloc[-22:].mean()))
    assert x["log_rv_22"].isna().sum() == 21


def test_scale_residuals_divide_each_return_by_the_variance_forecast_made_the_day_before(garch_daily):
    """z_t = r_t / sigma_{t|t-1}: dividing by a variance that already holds r_t^2 (EWMA) or rv_t (HAR) caps
    |z| (EWMA 0.94: below 1 / sqrt(0.06) = 4.1) and the Student-t fitted to it is far too thin."""
    data = garch_daily.iloc[:1200]
    for name in ("ewma", "hist", "har"):
        model = make_forecaster(name).fit(data)
        path = model.one_day_variance(data).to_numpy()
        z = model.standardized_residuals(data)
        ret = data["ret"].to_numpy()
        if name == "har":  # indexed by origin: row t holds r_{t+1} / sigma_{t+1|t}
            z = z[:-1]
        np.testing.assert_allclose(z[-500:], ret[-500:] / np.sqrt(path[-501:-1]), rtol=1e-12, err_msg=name)
    ewma = make_forecaster("ewma").fit(data)
    assert ewma.dist_params_[0] < 15  # the process's innovations are t(6)


def test_fitted_student_t_shape_is_not_clipped_and_reads_unit_variance_residuals(garch_daily):
    """nu is fitted over (2.1, 100): a crypto-heavy t(3) must come out near 3 (not a bound of 4) and a near-normal
    sample far above 8; the baselines fit it to residuals of unit variance (not percent)."""
    from scipy import stats

    from volmargin.models.distributions import fit_params, make_distribution

    rng = np.random.default_rng(0)
    for nu, low, high in ((3.0, 2.6, 3.5), (40.0, 15.0, 100.0)):
        z = stats.t.rvs(nu, size=40000, random_state=rng) * np.sqrt((nu - 2) / nu)
        assert low < fit_params(make_distribution("t"), z)[0] < high, nu
    ewma = make_forecaster("ewma").fit(garch_daily.iloc[:1200])
    assert 3.5 < ewma.dist_params_[0] < 15  # the process's innovations are t(6)


def test_har_survives_a_day_of_zero_realized_variance(garch_daily):
    """A halted market prints rv = 0: log(0) must not reach the regression or the forecast (RV_FLOOR)."""
    daily = garch_daily.iloc[:900].copy()
    daily.iloc[[400, 899], daily.columns.get_loc("rv")] = 0.0
    har = make_forecaster("har").fit(daily.iloc[:850])
    forecast = har.forecast(daily, daily.index[850:], (0.99,))
    assert np.all(np.isfinite(forecast.variance)) and np.all(forecast.variance > 0)
    assert np.all(forecast.var["long"] > 0)


def test_baseline_parameters_reach_the_model_and_the_documented_defaults_hold(garch_daily):
    """RiskMetrics lambda 0.94 and a 30-day window by default; fhs(lam=0.97) (the PAIRS filter) filters with 0.97;
    lam = 1 (a variance that never moves) is refused; garch dist='normal' fits normal innovations."""
    from volmargin.errors import ConfigError

    assert make_forecaster("ewma").lam == 0.94 and make_forecaster("hist").window == 30
    data = garch_daily.iloc[:600]
    fhs = make_forecaster("fhs", lam=0.97).fit(data)
    ewma = make_forecaster("ewma", lam=0.97).fit(data)
    np.testing.assert_allclose(fhs.one_day_variance(data), ewma.one_day_variance(data))
    with pytest.raises(ConfigError, match="lam"):
        make_forecaster("ewma", lam=1.0).fit(data)
    assert "nu" not in make_forecaster("garch", dist="normal").fit(data).params_.index
