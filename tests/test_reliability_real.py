"""Fail-safe margins on real crash days (reads two hourly spot files of ../shared/data; skips without them).

The synthetic fixture's tiny model hardly moves with the newest day, so a reading that loses that day's
crash still covers it there; a small GBM trained on real bars (as bench/faults.py trains one) does move.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from bench_modules import bench_modules

import volmargin_serving as vs
from volmargin_serving.features import INPUT_COLUMNS

ASSETS = ("binance_btcusdt", "binance_dogeusdt")
COLUMN = {name: j for j, name in enumerate(INPUT_COLUMNS)}


@pytest.fixture(scope="module")
def real(shared_data, tmp_path_factory):
    """bench/faults.py's small GBM bundle, trained on BTC and DOGE to 2021-12-31 and calibrated with `volmargin
    run`'s policy, and the two assets' daily panel."""
    with bench_modules("faults") as (faults,):
        return faults.real_bundle(tmp_path_factory.mktemp("real"), assets=tuple(a.split("_")[1] for a in ASSETS))


def _rows(daily: pd.DataFrame, day, length: int) -> tuple[np.ndarray, np.ndarray]:
    from volmargin.features.learned import daily_inputs

    rows = daily.loc[:day].iloc[-length:]
    columns = daily_inputs(rows)
    return (np.column_stack([columns[c].astype(float) for c in INPUT_COLUMNS]),
            rows.index.tz_convert(None).to_numpy().astype("datetime64[D]"))


def test_one_bad_cell_on_a_real_crash_day_never_lowers_the_margin(real):
    """The ten largest moves since 2024 of BTC and DOGE (DOGE's 2025-10-10 among them, bench/faults.py's draw
    15: 25.6% short before the worst readings kept the bad row's good cells), each with one cell of the
    newest row bad in turn: every margin flagged and at or above the true rows' margin."""
    bundle, calibration, panel = real
    checked = 0
    for asset in ASSETS:
        daily = panel[asset].loc["2024-01-01":]  # the calibration set is in force from 2024
        for day in daily["ret"].abs().nlargest(10).index:
            inputs, dates = _rows(panel[asset], day, vs.load(bundle).history_days)
            true = vs.load(bundle, calibration=calibration).margins([asset], [inputs], [dates], as_of=dates[-1])
            if true.fail_safe.any():
                continue  # the true rows are doubtful themselves: no reference
            for column in ("volume", "traded_value", "bv", "rogers_satchell", "rv", "ret", "parkinson", "complete"):
                bad = inputs.copy()
                bad[-1, COLUMN[column]] = np.nan
                got = vs.load(bundle, calibration=calibration).margins([asset], [bad], [dates], as_of=dates[-1])
                assert got.fail_safe.all(), (asset, day, column)
                assert (got.initial >= true.initial).all(), (asset, day, column, got.initial, true.initial)
                assert got.haircut[0, 0] >= true.haircut[0, 0], (asset, day, column)
                checked += 1
    assert checked >= 100, checked
