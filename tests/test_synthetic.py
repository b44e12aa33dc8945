"""The synthetic market: deterministic, valid for the loader, and with the stylised facts of crypto returns."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from volmargin.data import asset_name, load_bars, load_panel, synthetic_market, write_synthetic_csv
from volmargin.data.synthetic import SUBSTEPS, _jumps, _ohlc
from volmargin.errors import ConfigError


@pytest.fixture(scope="module")
def market() -> dict[str, pd.DataFrame]:
    return synthetic_market(n_assets=4, days=1095, seed=0)


@pytest.fixture(scope="module")
def hourly_returns(market) -> pd.DataFrame:
    return pd.DataFrame({asset: np.log(frame["close"]).diff() for asset, frame in market.items()}).dropna()


@pytest.fixture(scope="module")
def daily_returns(hourly_returns) -> pd.DataFrame:
    return hourly_returns.groupby(hourly_returns.index.floor("D")).sum()


def test_shape_and_format(market):
    assert list(market) == ["syn_a", "syn_b", "syn_c", "syn_d"]
    for frame in market.values():
        assert len(frame) == 1095 * 24
        assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
        assert (frame.dtypes == np.float64).all()
        assert frame.index.name == "timestamp" and str(frame.index.tz) == "UTC"
        assert frame.index[0] == pd.Timestamp("2021-01-01T00:00:00Z")
        assert frame.attrs["source"] == "synthetic"
        assert frame.attrs["freq"] == pd.Timedelta("1h")
        assert frame.attrs["gaps"].count == 0


def test_ohlc_consistent_and_open_is_previous_close(market):
    for frame in market.values():
        assert (frame["open"].iloc[1:].to_numpy() == frame["close"].iloc[:-1].to_numpy()).all()
        assert (frame["high"] >= frame[["open", "close"]].max(axis=1)).all()
        assert (frame["low"] <= frame[["open", "close"]].min(axis=1)).all()
        assert (frame["low"] > 0).all() and (frame["volume"] > 0).all()


def test_deterministic_for_a_seed():
    first, second = synthetic_market(n_assets=2, days=30, seed=5), synthetic_market(n_assets=2, days=30, seed=5)
    for asset in first:
        pd.testing.assert_frame_equal(first[asset], second[asset])


def test_different_seeds_differ():
    a, b = synthetic_market(n_assets=1, days=30, seed=1), synthetic_market(n_assets=1, days=30, seed=2)
    assert not np.allclose(a["syn_a"]["close"], b["syn_a"]["close"])


def test_round_trip_through_the_loader(tmp_path):
    paths = write_synthetic_csv(tmp_path, n_assets=3, days=20, freq="4h", seed=3)
    assert [p.name for p in paths] == ["syn_a_4h.csv.gz", "syn_b_4h.csv.gz", "syn_c_4h.csv.gz"]
    original = synthetic_market(n_assets=3, days=20, freq="4h", seed=3)
    for path in paths:
        frame = load_bars(path)
        assert frame.attrs["freq"] == pd.Timedelta("4h")
        pd.testing.assert_frame_equal(frame, original[asset_name(path)], check_exact=True)
    assert list(load_panel(tmp_path)) == ["syn_a", "syn_b", "syn_c"]


def test_annualised_vol_in_crypto_range(hourly_returns):
    vol = hourly_returns.std() * np.sqrt(24 * 365.25)
    assert ((vol > 0.4) & (vol < 1.2)).all(), vol


def test_fat_tails(hourly_returns):
    assert (hourly_returns.kurt() > 1).all()


def test_volatility_clustering(daily_returns):
    acf = [daily_returns[a].abs().autocorr(1) for a in daily_returns]
    assert min(acf) > 0.1, acf


def test_cross_asset_correlation(hourly_returns):
    corr = hourly_returns.corr().to_numpy()
    assert corr[np.triu_indices_from(corr, k=1)].min() > 0.2


def test_jumps_are_rare_and_mostly_down():
    years, n_assets = 40, 4
    jumps, step = _jumps(np.random.default_rng(0), years * 8766, n_assets, pd.Timedelta("1h"), np.full(4, 0.6))
    hit = jumps != 0
    assert 4 < hit.sum() / (years * n_assets) < 6  # 5 per asset-year: 2 market-wide + 3 own
    assert 0.65 < (jumps[hit] < 0).mean() < 0.85
    assert step.min() >= 1 and step.max() <= 12


def test_bad_arguments():
    with pytest.raises(ConfigError, match="n_assets"):
        synthetic_market(n_assets=0)
    for freq in ("7h", "2d", "0h", "often"):
        with pytest.raises(ConfigError, match="freq"):
            synthetic_market(freq=freq)


def test_written_files_carry_no_timestamp_so_a_seed_gives_identical_bytes(tmp_path):
    paths = write_synthetic_csv(tmp_path, n_assets=1, days=2, seed=0)
    assert paths[0].read_bytes()[4:8] == b"\x00\x00\x00\x00"  # the gzip header's MTIME field


def test_days_below_one_are_refused():
    with pytest.raises(ConfigError, match="days"):
        synthetic_market(n_assets=1, days=0)


def test_leverage_effect_a_down_day_raises_the_next_days_variance(daily_returns, hourly_returns):
    """The generated data's leverage effect: the day's return and the next day's log RV correlate negatively
    (-0.11 on seed 0; +0.09 with the sign flipped)."""
    rv = (hourly_returns ** 2).groupby(hourly_returns.index.floor("D")).sum()
    corr = [np.corrcoef(daily_returns[a].iloc[:-1], np.log(rv[a]).iloc[1:])[0, 1] for a in daily_returns]
    assert np.mean(corr) < -0.03, corr


def test_jumps_move_the_close_not_only_the_intrabar_range():
    bars = _ohlc(np.random.default_rng(0), np.full(3, 1e-6), np.zeros(3), np.array([0.0, -0.2, 0.0]),
                 np.array([1, SUBSTEPS // 2, 1]), 100.0)
    assert bars["close"][1] / bars["open"][1] == pytest.approx(np.exp(-0.2), rel=1e-4)
    assert bars["low"][1] == pytest.approx(bars["close"][1], rel=1e-4)


def test_intraday_volatility_peaks_around_the_us_open(hourly_returns):
    by_hour = (hourly_returns ** 2).groupby(hourly_returns.index.hour).mean().mean(axis=1)
    assert 12 <= by_hour.idxmax() <= 17 and by_hour.idxmin() not in range(10, 20)


def test_volume_is_higher_on_volatile_days(market, hourly_returns):
    day = hourly_returns.index.floor("D")
    rv = (hourly_returns ** 2).groupby(day).sum()
    for asset, frame in market.items():
        volume = frame["volume"].loc[hourly_returns.index].groupby(day).sum()
        assert np.corrcoef(np.log(rv[asset]), np.log(volume))[0, 1] > 0.5
