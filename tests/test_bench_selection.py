"""The verdict of bench/selection.py: a change is kept only if it gains enough on every selection run."""

from __future__ import annotations

import pandas as pd
import pytest
from bench_modules import bench_modules


@pytest.fixture(scope="module")
def selection():
    with bench_modules("selection") as (module,):
        yield module


def test_a_change_is_kept_only_if_it_gains_on_every_run(selection):
    # session 19's GRU trained by log least squares: better on both 2021 runs, far worse on 2020
    ratios = pd.DataFrame({"2021q4": [1.0324, 1.0114], "2021": [0.9386, 0.9145], "2020": [0.9975, 1.0805]},
                          index=["nn3", "nn3_logls"])
    assert not selection.verdict(ratios, "nn3", "nn3_logls", 0.01)
    assert selection.verdict(ratios.drop(columns="2020"), "nn3", "nn3_logls", 0.01)
    assert not selection.verdict(ratios.drop(columns="2020"), "nn3", "nn3_logls", 0.03)  # a gain too small
    assert not selection.verdict(ratios, "nn3_logls", "nn3", 0.0)
