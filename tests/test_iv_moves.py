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
