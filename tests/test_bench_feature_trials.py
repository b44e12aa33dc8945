"""Trial columns of bench/unseen_feature_trials.py (`late:HOURS`, `ewm:HOURS`, `semi:DAYS`, `rq:DAYS`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from bench_modules import bench_modules


def test_late_rv_reads_only_the_last_hours_of_each_day_scaled_to_a_day():
    index = pd.date_range("2024-01-01", periods=48, freq="h", tz="UTC")
    log_close = np.zeros(48)
    log_close[20] = 0.02  # a move up in hour 20 of the first day, back in hour 21 ...
    log_close[30] = 0.05  # ... and one in hour 6 of the second day, back in hour 7: too early to count
    bars = pd.DataFrame({"close": np.exp(log_close)}, index=index)
    with bench_modules("unseen_feature_trials") as (trials,):
        late = trials.late_rv(bars, 6)
    assert list(late.index) == list(pd.DatetimeIndex(["2024-01-01", "2024-01-02"], tz="UTC"))
    assert np.isclose(late.iloc[0], 2 * 0.02 ** 2 * 24 / 6)
    assert late.iloc[1] == 0.0


def test_ewm_rv_is_a_day_of_the_smoothed_hourly_variance_at_its_last_bar():
    index = pd.date_range("2024-01-01", periods=48, freq="h", tz="UTC")
    bars = pd.DataFrame({"close": np.exp(0.01 * (np.arange(48) % 2))}, index=index)  # |hourly return| 0.01
    with bench_modules("unseen_feature_trials") as (trials,):
        smooth = trials.ewm_rv(bars, 6)
    assert np.allclose(smooth, 24 * 0.01 ** 2)


def test_downside_rv_sums_only_the_falls_of_each_day():
    index = pd.date_range("2024-01-01", periods=48, freq="h", tz="UTC")
    log_close = np.zeros(48)
    log_close[10] = -0.03  # a fall of 0.03 in hour 10, back up in hour 11: only the fall counts
    log_close[30] = 0.02  # the second day: a rise, then a fall of 0.02
    bars = pd.DataFrame({"close": np.exp(log_close)}, index=index)
    with bench_modules("unseen_feature_trials") as (trials,):
        down = trials.downside_rv(bars)
        daily = pd.DataFrame({"rv": [2 * 0.03 ** 2, 2 * 0.02 ** 2], "rs_neg": down.to_numpy()}, index=down.index)
        columns = trials.semi_columns(daily, np.zeros(2), 5)
    assert np.allclose(down, [0.03 ** 2, 0.02 ** 2])
    assert np.allclose(columns["x_sj"], 0.0)  # one fall and one rise of the same size each day


def test_quarticity_ratio_is_one_for_a_single_move_and_one_over_n_for_equal_moves():
    index = pd.date_range("2024-01-01", periods=49, freq="h", tz="UTC")
    log_close = np.zeros(49)
    log_close[5:] = 0.03  # day 1: one move of 0.03 (the first return, from no previous bar, is dropped)
    log_close[24:] += 0.01 * ((np.arange(25) + 1) % 2)  # day 2 and the first hour of day 3: every return +-0.01
    bars = pd.DataFrame({"close": np.exp(log_close)}, index=index)
    with bench_modules("unseen_feature_trials") as (trials,):
        ratio = trials.quarticity_ratio(bars)
    assert np.allclose(ratio.iloc[:2], [1.0, 1 / 24])
