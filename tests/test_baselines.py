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


def test_fhs_on_gjr_uses_the_gjr_filter_and_its_h_day_variance_path(garch_daily):
    """fhs(filter='gjr') filters with GJR-GARCH (o=1), and at h = 5 its variance is the GJR's 5-day path,
    not 5 x the 1-day variance nor the 1-day variance."""
    train = garch_daily.iloc[:1000]
    origins = train.index[-20:]
    fhs = make_forecaster("fhs", filter="gjr").fit(train, horizon=5)
    gjr = make_forecaster("gjr").fit(train, horizon=5)
    assert "gamma[1]" in fhs.filter_.params_.index
    np.testing.assert_allclose(fhs.one_day_variance(train), gjr.one_day_variance(train), rtol=1e-10)
    np.testing.assert_allclose(fhs.forecast(train, origins, (0.99,)).variance,
                               gjr.forecast(train, origins, (0.99,)).variance, rtol=1e-10)
    one_day = gjr.one_day_variance(train).loc[origins].to_numpy()
    assert not np.allclose(gjr.forecast(train, origins, (0.99,)).variance, 5 * one_day, rtol=1e-3)  # teeth


def test_ewma_starts_from_the_first_days_only_and_reads_no_later_return(garch_daily):
    """s2_0 = lam * mean(r^2 of the first init_days) + (1 - lam) r_0^2; on a short history the seed matters, and
    corrupting later returns must not move an earlier forecast."""
    data = garch_daily.iloc[:40]
    r2 = data["ret"].to_numpy() ** 2
    model = make_forecaster("ewma", lam=0.9, init_days=30)
    path = model.one_day_variance(data).to_numpy()
    assert path[0] == pytest.approx(0.9 * r2[:30].mean() + 0.1 * r2[0], rel=1e-12)
    dirty = data.copy()
    dirty.iloc[35:, dirty.columns.get_loc("ret")] = 0.5
    np.testing.assert_allclose(model.one_day_variance(dirty).to_numpy()[:35], path[:35], rtol=1e-12)


def test_hist_volatility_waits_for_a_full_window(garch_daily):
    data = garch_daily.iloc[:100]
    path = make_forecaster("hist", window=30).one_day_variance(data)
    assert path.iloc[:29].isna().all() and np.isfinite(path.iloc[29])


def test_fitted_student_t_shape_maximises_the_likelihood_of_every_finite_residual():
    """The MLE reads every finite residual, the extremes included (they set the tail): the likelihood of the
    whole sample is at its maximum at the fitted shape."""
    from volmargin.models.distributions import fit_params, make_distribution

    rng = np.random.default_rng(0)
    z = np.r_[rng.standard_normal(2000), [8, -8, 7, -7, 9, -9, 6.5, -6.5]]
    z = z / z.std()
    dist = make_distribution("t")
    nu = fit_params(dist, np.r_[z, np.nan])[0]
    loglik = lambda v: float(dist.loglikelihood(np.array([v]), z, np.ones_like(z)))  # noqa: E731
    assert loglik(nu) >= max(loglik(nu - 0.05), loglik(nu + 0.05))
    assert 4 < nu < 9


def test_coverage_factor_ignores_rows_without_a_finite_loss():
    from volmargin.models.distributions import coverage_factor

    rng = np.random.default_rng(3)
    var = rng.uniform(0.5, 2.0, 1000)
    losses = rng.standard_t(4, 1000) * var
    expected = coverage_factor(losses, var, 0.99)
    assert expected > 1.0
    assert coverage_factor(np.r_[losses, np.nan, np.inf], np.r_[var, 1.0, 1.0], 0.99) == pytest.approx(expected)


def test_a_forecast_refuses_variance_or_tails_of_the_wrong_shape():
    from volmargin.models import Forecast

    origins = pd.date_range("2024-01-01", periods=2, tz="UTC")
    good = {"long": np.ones((2, 1)), "short": np.ones((2, 1))}
    Forecast(origins, 1, np.ones(2), (0.99,), good, good)
    with pytest.raises(ValueError, match="variance"):
        Forecast(origins, 1, np.ones(3), (0.99,), good, good)
    bad = {"long": np.ones((2, 1)), "short": np.ones((2, 2))}  # a level too many on one side
    with pytest.raises(ValueError, match="short"):
        Forecast(origins, 1, np.ones(2), (0.99,), good, bad)


# --- session 31's red team on the baselines

def test_a_garch_forecast_never_reads_a_backcast_of_days_after_its_first_origin(garch_daily):
    """arch starts the variance recursion from a backcast of the first 75 returns it is given: on a 30-day rolling
    window those lay after the block's first origins (a VaR of 2020-03-10 1.5-1.8x the one of the history cut
    there). A forecast whose first origin has fewer days before it is refused; 75 or more forecast as before, and
    the run's config and the CLI refuse such windows up front."""
    from volmargin.config import RunConfig, from_dict
    from volmargin.errors import ConfigError

    model = make_forecaster("gjr").fit(garch_daily.iloc[:300])
    origins = garch_daily.index[[40, 41, 42]]
    with pytest.raises(ConfigError, match=r"gjr: 41 days of history up to the first origin .*fewer than the 75"):
        model.forecast(garch_daily.iloc[:120], origins, (0.99,))
    fine = model.forecast(garch_daily.iloc[:120], garch_daily.index[[74, 80]], (0.99,))
    cut = model.forecast(garch_daily.iloc[:81], garch_daily.index[[74, 80]], (0.99,))
    np.testing.assert_allclose(fine.variance, cut.variance, rtol=1e-12)  # no later day read
    with pytest.raises(ConfigError, match="window.min_train_days 60: the garch and gjr baselines need at least 75"):
        from_dict(RunConfig, {"window": {"min_train_days": 60}})
    from_dict(RunConfig, {"window": {"min_train_days": 60}, "backtest": {"baselines": ["ewma", "har"]}})


@pytest.mark.parametrize("nu", [300.0, 343.0, 371.0, 500.0])
def test_student_t_es_is_finite_at_every_shape_arch_can_fit(nu):
    """arch fits up to 500 degrees of freedom; its partial moment overflows gamma() past ~342, so the ES came out
    NaN and a BTC backtest stopped. The ES is then the mean of the tail's quantiles: between the normal's and a
    fatter t's, continuous across the overflow."""
    from arch.univariate import Normal, StudentsT

    from volmargin.models.distributions import parametric_tail

    _, es = parametric_tail(StudentsT(), np.array([nu]), (0.99, 0.975))
    _, normal = parametric_tail(Normal(), np.array([]), (0.99, 0.975))
    _, fatter = parametric_tail(StudentsT(), np.array([100.0]), (0.99, 0.975))
    assert np.all(np.isfinite(es["long"])) and np.all(normal["long"] < es["long"]) and np.all(es["long"] < fatter["long"])
    _, below = parametric_tail(StudentsT(), np.array([341.0]), (0.99,))
    _, above = parametric_tail(StudentsT(), np.array([343.0]), (0.99,))
    assert above["long"][0] == pytest.approx(below["long"][0], rel=1e-4)


def test_fhs_on_a_price_that_never_moved_is_a_one_line_error_naming_the_asset(garch_daily):
    """A pegged or halted price gives residuals 0 / 0 only: FHS stopped a multi-asset backtest with an internal
    IndexError. Now a DataError that names the asset and the model."""
    from volmargin.errors import DataError
    from volmargin.evaluation.backtest import BacktestConfig, forecast_task
    from volmargin.evaluation.walkforward import WalkForwardSplit

    frozen = garch_daily.assign(ret=0.0, rv=0.0)
    config = BacktestConfig(models=("fhs",), split=WalkForwardSplit(refit_every=100, min_train=365), levels=(0.99,))
    with pytest.raises(DataError, match=r"^pegged, fhs: no finite standardized residual .* never moved"):
        forecast_task("pegged", frozen, ("fhs",), config)
