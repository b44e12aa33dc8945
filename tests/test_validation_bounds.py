"""Serving's input rules held at their bounds, not far from them (session 26's mutation audit: a rule moved
twofold passed every test that probed it from far away)."""
from __future__ import annotations

import numpy as np
import pytest

import volmargin_serving as vs
from volmargin_serving.features import INPUT_COLUMNS
from volmargin_serving.validation import check_bars, check_values, doubtful_values, value_problems

# the documented bounds written out: a test that imports the constant moves with it
MAX_BARS_PER_DAY = 1440  # ret^2 <= 1440 x rv (one bar a minute)
DOUBT_RATIO = 1e4  # a variance 10^4 times its window median is doubtful

C = {name: j for j, name in enumerate(INPUT_COLUMNS)}


def _calm_window(days: int = 150, seed: int = 0) -> np.ndarray:
    """A plausible window (days, columns): every doubt rule quiet; rows differ (no resent row)."""
    rng = np.random.default_rng(seed)
    w = np.zeros((days, len(INPUT_COLUMNS)))
    jitter = rng.uniform(0.9, 1.1, days)
    w[:, C["ret"]] = 0.005 * rng.choice([-1.0, 1.0], days)
    for name in ("rv", "bv", "parkinson", "rogers_satchell"):
        w[:, C[name]] = 1e-4 * jitter
    w[:, C["volume"]] = 1e6 * jitter
    w[:, C["traded_value"]] = 1e8 * jitter  # the average price stays at 100
    w[:, C["complete"]] = 1.0
    return w


def test_the_calm_window_is_not_doubtful():
    assert not doubtful_values(_calm_window()[None]).any()


def test_a_return_is_impossible_just_past_max_bars_per_day_and_possible_at_it():
    rv = 1e-4
    row = _calm_window(2)[None]
    row[0, :, C["rv"]] = rv
    row[0, 0, C["ret"]] = np.sqrt(MAX_BARS_PER_DAY * rv) * (1 - 1e-12)  # at the bound: possible
    row[0, 1, C["ret"]] = -np.sqrt(1.01 * MAX_BARS_PER_DAY * rv)  # 1% past it: impossible
    assert value_problems(row)[0].tolist() == [False, True]
    with pytest.raises(vs.ImpossibleInputError, match="row 1, column ret"):
        check_values("inputs", row)


@pytest.mark.parametrize("ratio, doubtful", [(1.02 * DOUBT_RATIO, True), (0.98 * DOUBT_RATIO, False)])
def test_a_variance_is_doubtful_just_past_doubt_ratio_times_its_median(ratio, doubtful):
    w = _calm_window()
    for name in ("rv", "parkinson"):  # the range moves with it: rv stays within what the range allows
        w[-10, C[name]] = ratio * np.median(w[:, C[name]])
    assert bool(doubtful_values(w[None])[0, -10, C["rv"]]) is doubtful


@pytest.mark.parametrize("ratio, doubtful", [(1.02 * DOUBT_RATIO, True), (0.98 * DOUBT_RATIO, False)])
def test_a_squared_return_is_doubtful_just_past_doubt_ratio_times_the_median_rv(ratio, doubtful):
    """(left untested by session 26's audit) The day's own rv is large enough for the return (no other rule
    fires on the return), so only the window's median rv can doubt it."""
    w = _calm_window()
    for name in ("rv", "parkinson"):
        w[-10, C[name]] = 0.5 * DOUBT_RATIO * np.median(w[:, C[name]])
    w[-10, C["ret"]] = -np.sqrt(ratio * np.median(w[:, C["rv"]]))
    assert not value_problems(w[None]).any()
    assert bool(doubtful_values(w[None])[0, -10, C["ret"]]) is doubtful


def test_a_day_without_any_move_is_doubtful_through_its_rv():
    """A frozen price with volume: ret, rv, bv and rogers_satchell 0, the range (parkinson) as usual; only
    the rv's place in DOUBT_LOW flags it (a zero rv lowers the forecast and the margin)."""
    w = _calm_window()
    for name in ("ret", "rv", "bv", "rogers_satchell"):
        w[-1, C[name]] = 0.0
    doubt = doubtful_values(w[None])[0]
    assert doubt[-1, C["rv"]] and doubt.any()


@pytest.mark.parametrize("factor, doubtful", [(1.05, True), (0.95, False)])
def test_an_average_price_jump_is_doubtful_just_past_the_return_and_ranges(factor, doubtful):
    w = _calm_window()
    w[-1, C["ret"]] = 0.0
    ranges = np.sqrt(4 * np.log(2) * w[-2:, C["parkinson"]]).sum()
    w[-1, C["traded_value"]] *= np.exp(factor * ranges)  # the average price moved factor x the two ranges
    assert bool(doubtful_values(w[None])[0, -1, C["traded_value"]]) is doubtful


@pytest.mark.parametrize("column, value", [(0, 103.0), (3, 103.0), (0, 98.0), (3, 98.0), (2, 0.0)])
def test_a_bar_whose_open_or_close_lies_outside_its_range_is_impossible(column, value):
    bars = np.array([[100.0, 102.0, 99.0, 101.0, 5.0]] * 3)
    check_bars(bars)
    bars[1, column] = value
    with pytest.raises(vs.ImpossibleInputError, match="bar 1"):
        check_bars(bars)
