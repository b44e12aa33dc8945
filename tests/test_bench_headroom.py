"""bench/margin_headroom.py: the oracle mix its figures rest on."""

import numpy as np
import pandas as pd
import pytest

from bench_modules import bench_modules


def test_the_oracle_mix_moves_the_variance_to_the_realized_and_the_tails_with_the_volatility():
    rows = pd.DataFrame({"model": "m", "variance": [1e-4, 4e-4], "realized_rv": [4e-4, 1e-4],
                         "var99_long": [0.03, 0.05], "es975_short": [0.04, 0.06]})
    with bench_modules("margin_headroom") as (headroom,):
        same, oracle, half = (headroom.with_oracle(rows, w, f"m{w}") for w in (0.0, 1.0, 0.5))
    pd.testing.assert_frame_equal(same.drop(columns="model"), rows.drop(columns="model"))
    np.testing.assert_allclose(oracle["variance"], rows["realized_rv"])
    np.testing.assert_allclose(half["variance"], [2e-4, 2e-4])  # the geometric mean
    ratio = np.sqrt(oracle["variance"] / rows["variance"])
    for column in ("var99_long", "es975_short"):
        np.testing.assert_allclose(oracle[column], rows[column] * ratio)
    assert set(oracle["model"]) == {"m1.0"}
    assert headroom.tail_columns(rows) == ["var99_long", "es975_short"]
    assert pytest.approx(half["var99_long"].iloc[0]) == 0.03 * np.sqrt(2)
