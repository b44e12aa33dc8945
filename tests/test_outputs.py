"""Session 30's mutation audit (s30m1) of `volmargin_serving.outputs`: the published volatility column and the
column names of tail measures; each test fails on a change the suite let through."""

import numpy as np
import pytest
from volmargin_serving.outputs import Forecasts, measure_name


@pytest.mark.parametrize("measure, level, name", [("var", 0.99, "var99"), ("es", 0.975, "es975"),
                                                   ("var", 0.9995, "var9995"), ("es", 0.95, "es95")])
def test_measure_names_carry_every_digit_of_the_level(measure, level, name):
    """The serving runtime's columns must match volmargin's forecast tables and calibration policies
    (risk=es975): rounding the level (':.0f') named 97.5% 'var98' and 99.95% 'var100' in silence."""
    assert measure_name(measure, level) == name


def test_the_volatility_column_is_the_square_root_of_the_variance():
    """`volmargin score` publishes `volatility` beside `variance` (batch.score_asset); returning the variance
    itself passed every test."""
    variance = np.array([0.04, 0.0009])
    tails = np.arange(8, dtype=float).reshape(2, 2, 2)
    out = Forecasts(variance, tails, tails + 1, (0.975, 0.99), 1)
    np.testing.assert_allclose(out.volatility, [0.2, 0.03], rtol=1e-15)
    columns = out.columns()
    np.testing.assert_allclose(columns["volatility"], [0.2, 0.03], rtol=1e-15)
    assert columns["var975_short"].tolist() == tails[:, 1, 0].tolist() and columns["es99_long"].tolist() == (
        tails[:, 0, 1] + 1).tolist()
