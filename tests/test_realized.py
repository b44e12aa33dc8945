import numpy as np
import pandas as pd
import pytest

from volmargin.features.realized import daily_measures, horizon_targets


def _bars(closes: np.ndarray, start: str = "2024-01-01", spread: float = 0.002) -> pd.DataFrame:
    index = pd.date_range(start, periods=len(closes), freq="h", tz="UTC", name="timestamp")
    opens = np.concatenate([[closes[0]], closes[:-1]])
    frame = pd.DataFrame(
        {"open": opens, "high": np.maximum(opens, closes) * (1 + spread),
         "low": np.minimum(opens, closes) * (1 - spread), "close": closes, "volume": 1.0},
        index=index,
    )
    frame.attrs["freq"] = pd.Timedelta(hours=1)
    return frame


@pytest.fixture
def three_days() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return _bars(100 * np.exp(np.cumsum(rng.normal(0, 0.01, 72))))


def test_daily_return_and_rv_take_first_return_from_previous_close(three_days):
    daily = daily_measures(three_days)
    log_c = np.log(three_days["close"].to_numpy())
    r = np.diff(log_c)  # r[k] is the return into bar k+1
    day2 = r[23:47]  # 24 returns: the first from day 1's last close to day 2's first close
    assert daily.index[0] == pd.Timestamp("2024-01-02", tz="UTC")  # day 1 has no previous close
    assert daily["ret"].iloc[0] == pytest.approx(log_c[47] - log_c[23])
    assert daily["rv"].iloc[0] == pytest.approx((day2**2).sum())
    n = len(day2)
    bv = np.pi / 2 * n / (n - 1) * np.sum(np.abs(day2[1:]) * np.abs(day2[:-1]))
    assert daily["bv"].iloc[0] == pytest.approx(bv)
    assert daily["n_bars"].iloc[0] == 24 and bool(daily["complete"].iloc[0])


def test_range_estimators_match_their_formulas_on_one_day(three_days):
    daily = daily_measures(three_days)
    day = three_days.loc["2024-01-02"]
    o, h, l, c = (np.log(day[k].to_numpy()) for k in ("open", "high", "low", "close"))
    prev_close = np.log(three_days["close"].to_numpy()[23:47])
    parkinson = np.sum((h - l) ** 2) / (4 * np.log(2))
    gk = np.sum(0.5 * (h - l) ** 2 - (2 * np.log(2) - 1) * (c - o) ** 2)
    rs = np.sum((h - c) * (h - o) + (l - c) * (l - o))
    k = 0.34 / (1.34 + 25 / 23)
    yz = np.sum((o - prev_close) ** 2) + k * np.sum((c - o) ** 2) + (1 - k) * rs
    row = daily.iloc[0]
    assert row["parkinson"] == pytest.approx(parkinson)
    assert row["garman_klass"] == pytest.approx(gk)
    assert row["rogers_satchell"] == pytest.approx(rs)
    assert row["yang_zhang"] == pytest.approx(yz)


def test_day_with_too_few_bars_is_incomplete_and_has_no_target(three_days):
    thinned = three_days.drop(three_days.index[30:35])  # day 2 keeps 19 of 24 bars
    daily = daily_measures(thinned)
    assert not daily.loc["2024-01-02", "complete"]
    assert daily.attrs["incomplete_days"] == 1
    assert daily_measures(thinned, min_bars=19).loc["2024-01-02", "complete"]
    targets = horizon_targets(daily.assign(complete=[False, True]), horizon=1)
    assert np.isnan(targets["target_rv"].iloc[1])  # last day has no future


def test_horizon_targets_sum_the_next_h_days_only():
    index = pd.date_range("2024-01-01", periods=6, freq="D", tz="UTC")
    daily = pd.DataFrame({"rv": [1.0, 2, 3, 4, 5, 6], "ret": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                          "complete": [True, True, False, True, True, True]}, index=index)
    targets = horizon_targets(daily, horizon=2)
    # row 0: days 1,2 -> day 2 incomplete -> NaN; row 2: days 3,4 -> 4+5; row 4: needs day 6 -> NaN
    assert np.isnan(targets["target_rv"].iloc[0]) and np.isnan(targets["target_rv"].iloc[1])
    assert targets["target_rv"].iloc[2] == 9.0
    assert targets["target_ret"].iloc[3] == pytest.approx(1.1)
    assert targets["target_rv"].iloc[4:].isna().all()


def test_horizon_targets_treat_missing_calendar_days_as_missing():
    index = pd.DatetimeIndex(["2024-01-01", "2024-01-02", "2024-01-04", "2024-01-05"], tz="UTC")
    daily = pd.DataFrame({"rv": [1.0, 2, 4, 5], "ret": 0.0, "complete": True}, index=index)
    targets = horizon_targets(daily, horizon=1)
    assert np.isnan(targets.loc["2024-01-02", "target_rv"])  # 01-03 is missing, not 01-04
    assert targets.loc["2024-01-04", "target_rv"] == 5.0


def test_real_btc_daily_measures(shared_data):
    raw = pd.read_csv(shared_data / "binance_btcusdt_1h.csv.gz", parse_dates=["timestamp"], index_col="timestamp")
    raw.attrs["freq"] = pd.Timedelta(hours=1)
    daily = daily_measures(raw)
    closes = raw["close"].groupby(raw.index.floor("D")).last()
    np.testing.assert_allclose(daily["ret"], np.log(closes).diff().loc[daily.index], atol=1e-12)
    # range estimators track realized variance on real data
    ok = daily["rv"] > 0
    assert np.corrcoef(np.log(daily.loc[ok, "rv"]), np.log(daily.loc[ok, "parkinson"]))[0, 1] > 0.85


def test_yang_zhang_counts_the_jump_from_the_previous_close_to_the_open():
    """Bars whose open is not the previous close (a gap in trading, a venue restart): Yang-Zhang's overnight
    term is the squared jump from the previous bar's close to this bar's open (every other test has none)."""
    rng = np.random.default_rng(1)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 72)))
    gaps = np.where(np.arange(72) % 2 == 0, 1.004, 0.996)
    opens = np.concatenate([[closes[0]], closes[:-1]]) * gaps
    index = pd.date_range("2024-01-01", periods=72, freq="h", tz="UTC", name="timestamp")
    bars = pd.DataFrame({"open": opens, "high": np.maximum(opens, closes) * 1.002,
                         "low": np.minimum(opens, closes) * 0.998, "close": closes, "volume": 1.0}, index=index)
    bars.attrs["freq"] = pd.Timedelta(hours=1)
    day = bars.loc["2024-01-02"]
    o, h, low, c = (np.log(day[k].to_numpy()) for k in ("open", "high", "low", "close"))
    overnight = np.sum((o - np.log(bars["close"].to_numpy()[23:47])) ** 2)
    assert overnight > 1e-4  # 24 jumps of 0.4%
    rs = np.sum((h - c) * (h - o) + (low - c) * (low - o))
    k = 0.34 / (1.34 + 25 / 23)
    row = daily_measures(bars).loc["2024-01-02"]
    assert row["yang_zhang"] == pytest.approx(overnight + k * np.sum((c - o) ** 2) + (1 - k) * rs, rel=1e-10)


def test_horizon_targets_refuse_a_horizon_below_one():
    index = pd.date_range("2024-01-01", periods=4, freq="D", tz="UTC")
    daily = pd.DataFrame({"rv": 1.0, "ret": 0.0, "complete": True}, index=index)
    with pytest.raises(ValueError, match="horizon"):
        horizon_targets(daily, horizon=0)
