"""The calibration-only choice of bench/options_configs.py among its fixed option-grid candidates."""

from __future__ import annotations

import pandas as pd
import pytest
from bench_modules import bench_modules


@pytest.fixture(scope="module")
def configs():
    with bench_modules("options_configs") as (module,):
        yield module


def _table(configs, calibration: dict[str, float], failing: dict[str, str]) -> pd.DataFrame:
    """Every HAR method under every candidate covered on 2021 except the column named in `failing`; the
    validation columns the worst possible (the rule must not read them)."""
    rows = {"deribit_static": {"syn_big_day_breaches": 1}}
    for name in configs.CANDIDATES:
        for method in configs.RULE_METHODS:
            row = {"syn_early_windows_worse": 0, "syn_big_day_breaches": 1, "real_calibration_worst_class": 0.005,
                   "real_calibration_ratio": calibration[name], "syn_calibration_ratio": calibration[name],
                   "real_validation_ratio": 9.0, "syn_later_windows_worse": "every window"}
            if failing.get(name) == "window":
                row["syn_early_windows_worse"] = 1
            elif failing.get(name) == "big_day":
                row["syn_big_day_breaches"] = 2
            elif failing.get(name) == "class":
                row["real_calibration_worst_class"] = 0.02
            rows[f"{method}|{name}"] = row
    return pd.DataFrame.from_dict(rows, orient="index")


def test_the_cheapest_qualifier_on_calibration_days_is_chosen(configs):
    names = list(configs.CANDIDATES)
    calibration = {name: 1.0 + i / 10 for i, name in enumerate(names)}
    calibration[names[2]] = 0.5  # the cheapest ...
    calibration[names[3]] = 0.4  # ... but this one, and the next, fail a 2021 check
    calibration[names[4]] = 0.3
    chosen, rows = configs.select(_table(configs, calibration, {names[3]: "big_day", names[4]: "class"}))
    assert chosen == names[2]
    assert rows.set_index("candidate")["qualifies"].to_dict() == {n: n not in names[3:5] for n in names}
    everyone_fails = {name: "window" for name in names}
    chosen, rows = configs.select(_table(configs, calibration, everyone_fails))
    assert chosen == names[0] and not rows["qualifies"].any()  # none qualifies: the first stays
