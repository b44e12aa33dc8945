"""Session 30's mutation audit (s30m1) of `volmargin_serving.repairs`: the worst readings of a bad row and the
as-given dating of a day given twice; each test fails on a change the suite let through."""

import numpy as np
from volmargin_serving.features import INPUT_COLUMNS
from volmargin_serving.repairs import READINGS, readings
from volmargin_serving.validation import doubtful_values, problem_cells

COLUMN = {name: j for j, name in enumerate(INPUT_COLUMNS)}
LENGTH, MAX_AGE = 30, np.timedelta64(3, "D")


def calm_inputs(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n plausible daily rows (none bad or doubtful) on consecutive days from 2024-01-01."""
    rng = np.random.default_rng(seed)
    rv = rng.uniform(1e-4, 2e-4, n)
    volume = rng.uniform(900, 1100, n)
    x = np.column_stack([rng.choice([-1, 1], n) * np.sqrt(rv) * 0.5, rv, 0.9 * rv, 1.1 * rv, rv, volume,
                         100 * volume, np.ones(n)])
    wanted = ("ret", "rv", "volume", "traded_value", "complete")
    assert [list(INPUT_COLUMNS).index(c) for c in wanted] == [0, 1, 5, 6, 7]
    return x, np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-01-01") + n)


def test_the_worst_down_readings_take_the_largest_fall_and_of_others_leave_the_bad_rows_cells_out():
    """Row -5 holds a bad volume (NaN) and the window's largest move (a 1.5% fall, rv 3.5e-4). worst_up puts
    +max|ret| on it, worst_down -max|ret| (the same sign in both left long positions without their crash
    reading); the `_of_others` readings take the maxima over the rows without a bad value only (the bad row's
    own rv and return left out), the others over every value that may be true (its rv kept)."""
    x, dates = calm_inputs()
    x[-5, COLUMN["rv"]], x[-5, COLUMN["ret"]], x[-5, COLUMN["volume"]] = 3.5e-4, -0.015, np.nan
    assert problem_cells(x[None])[0].sum() == 1 and not doubtful_values(x[None])[0].any()
    windows, _ = readings(x, dates, dates[-1] + 1, LENGTH, MAX_AGE)
    others = np.delete(x[-LENGTH:], LENGTH - 5, axis=0)
    for (dating, value), window in zip(READINGS, windows):
        row = window[-5]
        if value == "missing":
            assert np.isnan(row[COLUMN["ret"]]) and row[COLUMN["complete"]] == 0
            continue
        of_others = value.endswith("_of_others")
        largest_move = np.abs(others[:, COLUMN["ret"]]).max() if of_others else 0.015
        sign = 1 if value.startswith("worst_up") else -1
        assert row[COLUMN["ret"]] == sign * largest_move, (dating, value)
        assert row[COLUMN["rv"]] == (others[:, COLUMN["rv"]].max() if of_others else 3.5e-4), (dating, value)
        assert row[COLUMN["complete"]] == 1


def test_a_day_given_twice_is_unknown_in_the_as_given_reading():
    """Two rows stamped with one day (different values): the as-given window holds neither (the day is missing,
    read as missing or as the worst day), not whichever row came last."""
    x, dates = calm_inputs()
    dates = dates.copy()
    dates[-4] = dates[-5]  # rows -5 and -4 both stamped with one day; the day of row -4 has none
    windows, grids = readings(x, dates, dates[-1] + 1, LENGTH, MAX_AGE)
    day = np.flatnonzero(grids[0] == dates[-5])
    assert len(day) == 1
    for (dating, value), window in zip(READINGS, windows):
        if dating == "as_given":
            assert not np.isin(window[day[0], COLUMN["rv"]], x[[-5, -4], COLUMN["rv"]]), value
            if value == "missing":
                assert np.isnan(window[day[0], COLUMN["ret"]])


def test_a_window_whose_newest_day_is_exactly_max_age_old_is_still_read():
    """The freshness bound is inclusive: newest row max_age days before as_of gives readings, one day older none."""
    x, dates = calm_inputs()
    assert readings(x, dates, dates[-1] + MAX_AGE, LENGTH, MAX_AGE) is not None
    assert readings(x, dates, dates[-1] + MAX_AGE + 1, LENGTH, MAX_AGE) is None
