"""Synthetic option chains from DVOL, bars and a smile shape fitted on the real chains."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from volmargin.data.synthetic_options import (MIN_RATIO, X_MAX, SmileShape, fit_smile_shape, market_states,
                                              smile_points, synthetic_chain)
from volmargin.risk import options as vo

SHAPE = SmileShape(days=np.array([1.0, 7.0, 30.0, 250.0]), term=np.array([0.9, 0.87, 0.9, 0.97]),
                   skew=np.array([-0.15, -0.15, -0.14, -0.06]), curvature=np.array([0.13, 0.13, 0.12, 0.09]))


def _market(days: int = 12, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    hours = pd.date_range("2022-05-01", periods=24 * days, freq="h", tz="UTC", name="timestamp")
    close = 30_000 * np.exp(np.cumsum(rng.normal(0, 0.01, len(hours))))
    bars = pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "volume": 1.0}, index=hours)
    daily = pd.date_range("2022-05-01", periods=days, freq="D", tz="UTC", name="timestamp")
    level = 60 + rng.normal(0, 5, days)
    dvol = pd.DataFrame({"open": level, "high": level, "low": level, "close": level}, index=daily)
    return bars, dvol


def test_a_days_chain_ignores_all_later_data():
    bars, dvol = _market()
    chain = synthetic_chain(market_states(bars, dvol), SHAPE)
    snapshot = pd.Timestamp("2022-05-06", tz="UTC")  # the end of 2022-05-05
    later_bars, later_dvol = bars.copy(), dvol.copy()
    later_bars.loc[later_bars.index >= snapshot, "close"] *= 3.0  # every bar that opens at or after the snapshot
    later_dvol.loc[later_dvol.index >= snapshot, "close"] *= 0.3  # every daily close after 2022-05-05
    corrupted = synthetic_chain(market_states(later_bars, later_dvol), SHAPE)
    known = chain["timestamp"] <= snapshot
    pd.testing.assert_frame_equal(corrupted[known], chain[known])
    assert not np.allclose(corrupted.loc[~known, "underlying_price"], chain.loc[~known, "underlying_price"])
    first = chain[chain["timestamp"] == snapshot]
    assert first["underlying_price"].iloc[0] == bars["close"].loc["2022-05-05 23:00"]
    assert first["dvol"].iloc[0] == dvol["close"].loc["2022-05-05"]


def test_surface_is_dvol_scaled_and_revalues_at_marks_and_intrinsic():
    bars, dvol = _market()
    states = market_states(bars, dvol)
    chain = synthetic_chain(states, SHAPE)
    snap = chain[chain["timestamp"] == chain["timestamp"].iloc[0]]
    atm = snap[np.isclose(snap["strike"], snap["underlying_price"]) & (snap["days"] == 30.0)]
    assert atm["mark_iv"].iloc[0] == pytest.approx(snap["dvol"].iloc[0] / 100 * 0.9)  # ATM = DVOL x term(30 d)
    # revalued on its own snapshot, every option is at its mark; after expiry, at intrinsic on the next spot
    marks = vo.black76(snap["underlying_price"], snap["strike"], snap["days"] / 365, snap["mark_iv"], snap["is_call"])
    np.testing.assert_allclose(SHAPE.revalue(snap, snap), marks, rtol=1e-12)
    nxt = chain[chain["timestamp"] == chain["timestamp"].unique()[2]]  # two days on: 1- and 2-day options expired
    expired = snap["days"].to_numpy() <= 2
    intrinsic = vo.intrinsic(nxt["underlying_price"].iloc[0], snap["strike"], snap["is_call"])[expired]
    np.testing.assert_allclose(SHAPE.revalue(snap, nxt)[expired], intrinsic)


def test_synthetic_books_cover_every_class():
    from volmargin.risk.option_books import CLASSES, build_books

    bars, dvol = _market(days=5)
    states = market_states(bars, dvol)
    books = build_books(synthetic_chain(states, SHAPE), revalue=SHAPE.revalue)
    assert set(books.info["portfolio_class"]) == set(CLASSES)
    assert books.info["day"].nunique() == len(states) - 1 and np.all(np.isfinite(books.loss))
    assert np.all(books.books.forward == books.books.future_price[books.books.book])  # forward = spot


def test_fitted_smile_reproduces_the_real_marks(shared_data):
    """Fit on one real month; at each expiry's own ATM IV, the relative shape reproduces the two-sided marks
    within a median of 2 vol points (p90 6); the whole surface from DVOL (term ratio too) within 4 (p90 10)."""
    from volmargin.data.options import load_chain, load_dvol

    chain = load_chain(shared_data / "options" / "deribit_btc_options_eod_202201.csv.gz")
    hourly = load_dvol(shared_data / "iv" / "deribit_btc_dvol_1h.csv.gz")["close"]
    points = smile_points(chain, hourly, pd.Timedelta(hours=1))
    shape = fit_smile_shape(points)
    quoted = points[points["quoted"] & (points["x"].abs() <= X_MAX)]
    error = np.abs(quoted["atm_iv"] * np.sqrt(shape.ratio(quoted["days"], quoted["x"])) - quoted["mark_iv"])
    assert error.median() < 0.02 and error.quantile(0.9) < 0.06
    k = quoted["x"] * quoted["atm_iv"] * np.sqrt(quoted["days"] / 365)
    dvol = 100 * quoted["atm_iv"] / quoted["atm_over_dvol"]  # the DVOL known at the snapshot
    whole = np.abs(shape.iv(quoted["days"], k, dvol) - quoted["mark_iv"])
    assert whole.median() < 0.04 and whole.quantile(0.9) < 0.10
    assert np.all(shape.skew < 0) and np.all(shape.curvature > 0)  # puts over calls, a smile


def test_a_missing_iv_forecast_falls_back_only_for_the_vol_shocks():
    from volmargin.calibration.options import method_grid

    inputs = pd.DataFrame({"var_long": [0.05, 0.05], "var_short": [0.04, np.nan],
                           "iv_down": [np.nan, -0.1], "iv_up": [np.nan, 0.2]})
    grid = method_grid(inputs, 2.0, np.array([0, 1]))
    np.testing.assert_allclose(grid.range_down, [2 * -np.expm1(-0.05), vo.DERIBIT_BTC.range_down])
    np.testing.assert_allclose(grid.range_up, [2 * np.expm1(0.04), vo.DERIBIT_BTC.range_up])
    np.testing.assert_allclose(grid.vol_up, [vo.DERIBIT_BTC.vol_up, 2 * np.expm1(0.2)])
    np.testing.assert_allclose(grid.vol_down, [vo.DERIBIT_BTC.vol_down, 2 * -np.expm1(-0.1)])


def test_selected_books_keep_their_margins_and_losses():
    from volmargin.risk.option_books import build_books, select_books

    bars, dvol = _market(days=5)
    books = build_books(synthetic_chain(market_states(bars, dvol), SHAPE), revalue=SHAPE.revalue)
    keep = np.zeros(books.books.count, dtype=bool)
    keep[::3] = True
    chosen = select_books(books, keep)
    full = vo.initial_margin(books.books, vo.DERIBIT_BTC, books.mpor_days)
    margin = vo.initial_margin(chosen.books, vo.DERIBIT_BTC, chosen.mpor_days)
    np.testing.assert_allclose(margin, full[keep], rtol=1e-12)
    np.testing.assert_array_equal(chosen.loss, books.loss[keep])
    assert list(chosen.info["portfolio_class"]) == list(books.info["portfolio_class"][keep])


def test_apc_floor_holds_each_parameter_above_its_share_of_the_static_grid():
    from volmargin.calibration.options import ApcConfig, method_grid

    inputs = pd.DataFrame({"var_long": [0.01, 0.2], "var_short": [0.01, 0.2], "iv_down": [-0.01, -0.5],
                           "iv_up": [0.01, 0.9]})
    grid = method_grid(inputs, 1.0, np.array([0, 1]), ApcConfig(floor=0.5))
    static = vo.DERIBIT_BTC
    for name in ("range_down", "range_up", "vol_up", "vol_down"):
        values = np.asarray(getattr(grid, name))
        assert values[0] == pytest.approx(0.5 * getattr(static, name))  # a calm day: held at the floor
        assert values[1] > 0.5 * getattr(static, name)  # a stressed day: its own forecast
    assert not ApcConfig(floor=0.5).has_path and ApcConfig(max_down=0.1).has_path


def test_term_is_interpolated_linearly_in_log_tenor():
    mid = np.sqrt(7.0 * 30.0)  # halfway between the 7- and 30-day buckets in ln T
    assert SHAPE.iv(mid, 0.0, 100.0) == pytest.approx((0.87 + 0.9) / 2, rel=1e-12)


def test_the_smile_is_flat_beyond_x_max_and_never_below_the_floor():
    assert SHAPE.ratio(30.0, 3 * X_MAX) == pytest.approx(SHAPE.ratio(30.0, X_MAX))
    assert SHAPE.ratio(30.0, -3 * X_MAX) == pytest.approx(SHAPE.ratio(30.0, -X_MAX))
    steep = SmileShape(days=np.array([1.0, 30.0]), term=np.ones(2), skew=np.full(2, -0.5), curvature=np.zeros(2))
    assert steep.ratio(30.0, X_MAX) == MIN_RATIO  # 1 - 0.5 x 4 = -1: floored
    assert np.isfinite(steep.iv(30.0, 1.0, 60.0))


def _flat_hours(periods: int) -> tuple[pd.DatetimeIndex, pd.DataFrame]:
    hours = pd.date_range("2022-05-01", periods=periods, freq="h", tz="UTC", name="timestamp")
    close = pd.Series(30_000.0, index=hours)
    return hours, pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "volume": 1.0})


def test_smile_points_read_the_dvol_bar_that_ended_at_the_snapshot_not_the_one_opening_there():
    hours, bars = _flat_hours(72)
    daily = pd.date_range("2022-05-01", periods=3, freq="D", tz="UTC", name="timestamp")
    states = market_states(bars, pd.DataFrame({"close": 50.0}, index=daily))
    chain = synthetic_chain(states.iloc[:1], SHAPE).assign(bid_price=1.0, ask_price=1.0)
    stamp = chain["timestamp"].iloc[0]
    dvol = pd.Series(50.0, index=hours)
    dvol[dvol.index >= stamp] = 80.0  # bars opening at or after the snapshot are not known then
    points = smile_points(chain, dvol, pd.Timedelta(hours=1))
    np.testing.assert_allclose(points["atm_over_dvol"], points["atm_iv"] / 0.5)


def test_the_fit_leaves_out_marks_without_a_two_sided_quote():
    x = np.linspace(-3, 3, 25)
    good = pd.DataFrame({"timestamp": 0, "expiry": 0, "days": 30.0, "x": x, "ratio": 1 - 0.1 * x + 0.1 * x**2,
                         "atm_over_dvol": 0.9, "quoted": True})
    stale = good.assign(ratio=5.0, quoted=False)  # stale wing marks: no bid or no ask
    shape = fit_smile_shape(pd.concat([good, stale], ignore_index=True))
    np.testing.assert_allclose([shape.skew[0], shape.curvature[0]], [-0.1, 0.1], atol=1e-9)


def test_a_day_without_a_dvol_close_gets_no_snapshot():
    _, bars = _flat_hours(96)
    daily = pd.date_range("2022-05-01", periods=4, freq="D", tz="UTC", name="timestamp")
    states = market_states(bars, pd.DataFrame({"close": [50.0, np.nan, 55.0, 60.0]}, index=daily))
    assert pd.Timestamp("2022-05-03", tz="UTC") not in states.index and len(states) == 3
