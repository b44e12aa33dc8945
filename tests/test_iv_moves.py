"""Forecasts of implied-volatility moves: no look-ahead at a refit on the origin, targets that are the realised
h-day log change, the historical quantiles shared with serving, the scores and features (session 28's mutation
audit: each test fails on a change the suite let through)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


def _dvol(n=520, seed=1):
    rng = np.random.default_rng(seed)
    index = pd.date_range("2021-01-01", periods=n, freq="D", tz="UTC")
    return pd.Series(60 * np.exp(np.cumsum(rng.normal(0, 0.04, n))), index=index)


@pytest.mark.parametrize("horizon", [1, 5])
def test_qreg_refit_at_an_origin_reads_only_targets_realised_by_then(horizon):
    """A refit exactly at the origin: rows s > origin - horizon have targets that end after the origin."""
    from volmargin.models.ivmoves import learned_quantiles

    close = _dvol(260)
    cut = 200
    corrupted = close.copy()
    corrupted.iloc[cut + 1:] = close.iloc[cut + 1:] * np.exp(np.linspace(0.5, 3, len(close) - cut - 1))
    a = learned_quantiles(close, horizon=horizon, refit_every=1000, start=close.index[cut], end=close.index[cut])
    b = learned_quantiles(corrupted, horizon=horizon, refit_every=1000, start=close.index[cut], end=close.index[cut])
    assert np.isfinite(a.iloc[cut]).all()
    pd.testing.assert_frame_equal(a, b)


@pytest.mark.parametrize("horizon", [1, 5])
def test_iv_forecast_table_targets_are_the_realised_h_day_log_change_after_each_origin(horizon):
    from volmargin.models.ivmoves import historical_quantiles, iv_forecasts

    close = _dvol()
    table = iv_forecasts(close, horizon=horizon, models=("hist",))
    origins = pd.DatetimeIndex(table["origin"])
    expected = np.log(close.shift(-horizon) / close).loc[origins].to_numpy()
    np.testing.assert_allclose(table["target"].to_numpy(), expected, equal_nan=True)
    q = historical_quantiles(close, horizon)
    np.testing.assert_allclose(table[["q_lo", "q_hi"]].to_numpy(), q.loc[origins].to_numpy())


def test_historical_iv_quantiles_use_the_last_365_changes_and_wait_for_60():
    from volmargin.models.ivmoves import historical_quantiles
    from volmargin_serving.options import historical_iv_quantiles

    close = _dvol()
    q = historical_quantiles(close)
    assert q.iloc[:60].isna().all().all() and q.iloc[60].notna().all()
    for t in (60, 300, 480):
        np.testing.assert_allclose(q.iloc[t].to_numpy(), historical_iv_quantiles(close.iloc[: t + 1].to_numpy()))


def test_iv_scores_pinball_each_quantile_at_its_own_level():
    from volmargin.models.ivmoves import pinball, score_quantiles

    y = np.array([0.0, 0.2, -0.3, 0.05])
    table = pd.DataFrame({"model": "hist", "q_lo": -0.1, "q_hi": 0.1, "target": y})
    row = score_quantiles(table).iloc[0]
    assert row["pinball_0.01"] == pytest.approx(pinball(y, -0.1, 0.01).mean())
    assert row["pinball_0.99"] == pytest.approx(pinball(y, 0.1, 0.99).mean())
    assert row["pinball_0.01"] == pytest.approx((0.001 + 0.003 + 0.198 + 0.0015) / 4)


def test_iv_vol_of_vol_is_the_mean_absolute_daily_change():
    from volmargin.models.ivmoves import iv_features

    close = _dvol(100)
    f = iv_features(close)
    change = np.log(close).diff()
    assert f["vol_of_vol_20d"].iloc[-1] == pytest.approx(change.abs().iloc[-20:].mean())


# session 29's audit: the underlying returns' feature, refit cadence, minimum rows, the crossing guard, scores
def _underlying(close, seed=2):
    rng = np.random.default_rng(seed)
    return pd.Series(rng.standard_t(4, len(close)) * 0.03, index=close.index)


@pytest.mark.parametrize("horizon", [1, 5])
def test_qreg_with_underlying_returns_reads_no_later_return_and_iv_forecasts_pass_them(horizon):
    """The rv_20d feature: corrupting the underlying's returns after the origin leaves the forecast there
    unchanged; iv_forecasts' qreg is learned_quantiles with the same underlying returns (not without them)."""
    from volmargin.models.ivmoves import iv_forecasts, learned_quantiles

    close = _dvol(260)
    ret = _underlying(close)
    cut = 200
    dirty = ret.copy()
    dirty.iloc[cut + 1:] = 0.5
    a = learned_quantiles(close, ret, horizon=horizon, refit_every=1000, start=close.index[cut], end=close.index[cut])
    b = learned_quantiles(close, dirty, horizon=horizon, refit_every=1000, start=close.index[cut], end=close.index[cut])
    assert np.isfinite(a.iloc[cut]).all()
    pd.testing.assert_frame_equal(a, b)
    table = iv_forecasts(close, ret, horizon=horizon, start=close.index[cut], end=close.index[cut], models=("qreg",))
    np.testing.assert_allclose(table[["q_lo", "q_hi"]].to_numpy(), a.iloc[[cut]].to_numpy())
    plain = learned_quantiles(close, None, horizon=horizon, refit_every=1000, start=close.index[cut],
                              end=close.index[cut])
    assert not np.allclose(plain.iloc[cut], a.iloc[cut])  # the underlying feature matters: the test has teeth


def test_qreg_refits_exactly_every_refit_every_days():
    """Origin start + k (k < refit_every) uses the model fitted at start; origin start + refit_every a fresh fit."""
    from volmargin.models.ivmoves import learned_quantiles

    close = _dvol(260)
    s, every = 150, 10
    run = learned_quantiles(close, refit_every=every, start=close.index[s])
    stale = learned_quantiles(close, refit_every=10**6, start=close.index[s], end=close.index[s + every])
    fresh = learned_quantiles(close, refit_every=10**6, start=close.index[s + every], end=close.index[s + every])
    np.testing.assert_allclose(run.iloc[s : s + every].to_numpy(), stale.iloc[s : s + every].to_numpy())
    np.testing.assert_allclose(run.iloc[s + every].to_numpy(), fresh.iloc[s + every].to_numpy())
    assert not np.allclose(stale.iloc[s + every], fresh.iloc[s + every])  # a refit changes it: the test has teeth


@pytest.mark.parametrize("horizon", [1, 5])
def test_qreg_waits_for_min_train_realised_rows(horizon):
    """The first forecast is at the first origin with `min_train` usable rows whose targets are realised."""
    from volmargin.models.ivmoves import iv_features, learned_quantiles

    close = _dvol(200)
    q = learned_quantiles(close, horizon=horizon, refit_every=1000, min_train=60)
    usable = np.flatnonzero(iv_features(close).notna().all(axis=1).to_numpy())
    first = usable[59] + horizon  # the 60th usable row's target is realised `horizon` days later
    assert q.iloc[:first].isna().all().all() and q.iloc[first].notna().all()


def test_qreg_quantiles_never_cross_even_where_the_regressions_do(monkeypatch):
    """The no-crossing guard: a regressor whose 1% quantile lies above its 99% one is reordered."""
    import sklearn.linear_model
    from sklearn.base import BaseEstimator, RegressorMixin

    from volmargin.models.ivmoves import learned_quantiles

    class Crossing(RegressorMixin, BaseEstimator):
        def __init__(self, quantile=0.5, alpha=1.0, solver="highs"):
            self.quantile, self.alpha, self.solver = quantile, alpha, solver

        def fit(self, x, y):
            self.fitted_ = True
            return self

        def predict(self, x):
            return np.full(len(x), 0.5 - self.quantile)  # 0.01 -> 0.49, 0.99 -> -0.49

    monkeypatch.setattr(sklearn.linear_model, "QuantileRegressor", Crossing)
    q = learned_quantiles(_dvol(260), refit_every=1000, start=_dvol(260).index[150]).dropna()
    assert len(q) > 0
    np.testing.assert_allclose(q["q0.01"], -0.49)
    np.testing.assert_allclose(q["q0.99"], 0.49)


def test_iv_features_are_the_documented_windows():
    """change_5d is the 5-day log change; vol of vol and rv_20d need 10 of their 20 days."""
    from volmargin.models.ivmoves import iv_features

    close = _dvol(100)
    ret = _underlying(close)
    f = iv_features(close, ret)
    log = np.log(close)
    assert f["change_5d"].iloc[-1] == pytest.approx(log.iloc[-1] - log.iloc[-6])
    assert f["vol_of_vol_20d"].iloc[:10].isna().all() and np.isfinite(f["vol_of_vol_20d"].iloc[10])
    assert f["rv_20d"].iloc[:9].isna().all() and np.isfinite(f["rv_20d"].iloc[9])
    assert f["rv_20d"].iloc[-1] == pytest.approx(np.log(np.sqrt((ret.iloc[-20:] ** 2).mean() * 365) + 1e-6))


def test_iv_scores_count_only_realised_rows_and_strict_exceedances():
    """Unrealised rows (NaN target) are left out of n and the rates; a target equal to a quantile is no exceedance."""
    from volmargin.models.ivmoves import score_quantiles

    y = [np.nan, -0.1, -0.3, 0.1, 0.3, np.nan]
    table = pd.DataFrame({"model": "qreg", "q_lo": -0.1, "q_hi": 0.1, "target": y})
    row = score_quantiles(table).iloc[0]
    assert row["n"] == 4
    assert row["below_lo_rate"] == 0.25 and row["above_hi_rate"] == 0.25
    assert np.isfinite(row["pinball_0.01"]) and np.isfinite(row["pinball_0.99"])
