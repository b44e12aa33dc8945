"""An intraday margin period of risk: realised moves from the bars, the square-root-of-time risk in
library and serving alike, and calibration to the target at an 8-hour MPOR."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from volmargin.calibration import PolicyConfig, calibrate, margin_paths
from volmargin.calibration.intraday import intraday_moves, with_intraday_moves
from volmargin.data import synthetic_market
from volmargin.errors import ConfigError
from volmargin.evaluation.backtest import BacktestConfig, daily_panel, run_backtest
from volmargin.evaluation.walkforward import WalkForwardSplit
from volmargin_serving.margins import mpor_factor


@pytest.fixture(scope="module")
def bars() -> dict[str, pd.DataFrame]:
    return synthetic_market(n_assets=2, days=700, seed=6)


def test_moves_are_the_first_hours_after_the_close(bars):
    frame = bars["syn_a"]
    moves = intraday_moves(frame, 8)
    log_close = np.log(frame["close"])
    origin = moves.index[100]
    start, end = origin + pd.Timedelta(hours=23), origin + pd.Timedelta(days=1, hours=7)  # bar open times
    assert moves.loc[origin, "realized_ret"] == pytest.approx(log_close[end] - log_close[start], rel=1e-12)
    hourly = log_close.diff()[start + pd.Timedelta(hours=1): end]
    assert len(hourly) == 8 and moves.loc[origin, "realized_rv"] == pytest.approx((hourly**2).sum(), rel=1e-12)
    gappy = frame.drop(origin + pd.Timedelta(days=1, hours=3))
    assert np.isnan(intraday_moves(gappy, 8).loc[origin, "realized_ret"])  # a missing bar is never filled
    with pytest.raises(ConfigError, match="mpor_hours"):
        PolicyConfig(mpor_hours=24)


def test_an_eight_hour_mpor_is_calibrated_to_its_target(bars):
    panel = daily_panel(bars)
    split = WalkForwardSplit(min_train=200, refit_every=60)
    forecasts, _ = run_backtest(panel, BacktestConfig(models=("ewma",), split=split), progress=False)
    daily, hourly = PolicyConfig(), PolicyConfig(mpor_hours=8)
    moves = with_intraday_moves(forecasts, bars, 8)
    start = forecasts["origin"].min() + pd.Timedelta(days=250)
    for policy, table in ((daily, forecasts), (hourly, moves)):
        calibration = calibrate(table, policy, start)
        paths = margin_paths(table, policy, calibration)
        seen = paths[~paths["calibrated"] & paths["loss"].notna()]
        assert seen.groupby("side")["breach"].mean().max() <= 0.01
        policy_margin = paths.groupby("side")["initial_margin"].mean()
        if policy is daily:
            daily_margin = policy_margin
    # an 8-hour MPOR needs much less margin than a day's, roughly the square root of a third
    ratio = (policy_margin / daily_margin).to_numpy()
    assert ((ratio > 0.35) & (ratio < 0.8)).all(), ratio


def test_serving_scales_the_risk_to_the_mpor_as_the_library_does():
    assert mpor_factor(None, 1) == 1.0 and mpor_factor(6, 1) == pytest.approx(0.5)
    assert mpor_factor(12, 2) == pytest.approx(0.5)


# --- session 27's mutation audit: a window with a missing bar, the origin day's last bar, the bar interval,
# multi-day forecasts


def _hourly_bars(days=5, seed=0):
    idx = pd.date_range("2024-01-01", periods=24 * days, freq="1h", tz="UTC")
    close = 100 * np.exp(np.cumsum(np.random.default_rng(seed).normal(0, 0.01, len(idx))))
    return pd.DataFrame({"close": close}, index=idx)


def test_intraday_rv_of_a_window_with_a_missing_bar_is_nan():
    bars = _hourly_bars()
    origin = pd.Timestamp("2024-01-02", tz="UTC")
    gappy = bars.drop(origin + pd.Timedelta(days=1, hours=3))
    moves = intraday_moves(gappy, 8)
    assert np.isnan(moves.loc[origin, "realized_ret"]) and np.isnan(moves.loc[origin, "realized_rv"])


def test_intraday_move_needs_the_origin_days_last_bar():
    bars = _hourly_bars()
    origin = pd.Timestamp("2024-01-02", tz="UTC")
    gappy = bars.drop(origin + pd.Timedelta(hours=23))  # the close the move is measured from
    assert np.isnan(intraday_moves(gappy, 8).loc[origin, "realized_ret"])


def test_intraday_hours_must_be_a_multiple_of_the_bar_interval():
    bars = _hourly_bars().resample("4h").last()
    bars.attrs["freq"] = pd.Timedelta(hours=4)
    with pytest.raises(ConfigError, match="mpor_hours"):
        intraday_moves(bars, 6)
    assert not intraday_moves(bars, 8)["realized_ret"].dropna().empty


def test_intraday_moves_refuse_multi_day_forecasts():
    bars = {"a": _hourly_bars()}
    forecasts = pd.DataFrame({"asset": "a", "origin": pd.Timestamp("2024-01-02", tz="UTC"), "horizon": [5],
                              "realized_ret": [0.0], "realized_rv": [0.0]})
    with pytest.raises(ConfigError, match="horizon 1"):
        with_intraday_moves(forecasts, bars, 8)
    ok = with_intraday_moves(forecasts.assign(horizon=1), bars, 8)
    assert np.isfinite(ok["realized_ret"]).all()
