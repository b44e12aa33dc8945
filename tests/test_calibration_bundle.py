"""Bundle calibration (`calibrate_bundle`, `realized_forecasts`, `check_calibration_data`,
`default_validation_start`) on a hand-made scored table and a manifest-only bundle folder (no model trained);
session 29's mutation audit: each test fails on a change the suite let through."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from volmargin.calibration import PolicyConfig, calibrate, margin_paths, margin_summary
from volmargin.calibration.bundle import (
    calibrate_bundle, check_calibration_data, default_validation_start, realized_forecasts,
)
from volmargin.calibration.intraday import with_intraday_moves
from volmargin.data import synthetic_market
from volmargin.errors import ConfigError, DataError
from volmargin.evaluation.backtest import daily_panel

TRAIN_END = "2021-06-30"
FIRST = pd.Timestamp("2021-07-01", tz="UTC")  # the first out-of-sample origin


@pytest.fixture(scope="module")
def bars() -> dict[str, pd.DataFrame]:
    return synthetic_market(n_assets=2, days=700, seed=6)  # hourly bars from 2021-01-01


@pytest.fixture(scope="module")
def panel(bars) -> dict[str, pd.DataFrame]:
    return daily_panel(bars)


def scored_table(panel, horizon: int = 1) -> pd.DataFrame:
    """What `score_panel` gives: one row per asset and origin, a 30-day mean of rv as the variance."""
    frames = []
    for asset, daily in panel.items():
        variance = daily["rv"].rolling(30, min_periods=30).mean().dropna() * horizon
        q = 2.326 * np.sqrt(variance.to_numpy())
        frames.append(pd.DataFrame({"asset": asset, "origin": variance.index, "horizon": horizon,
                                    "variance": variance.to_numpy(), "volatility": np.sqrt(variance.to_numpy()),
                                    "var99_long": q, "var99_short": q, "es99_long": 1.1 * q, "es99_short": 1.1 * q}))
    return pd.concat(frames, ignore_index=True)


def manifest_bundle(folder, train_end: str = TRAIN_END):
    """`calibrate_bundle` reads the manifest's name and training.train_end only."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"name": "m", "training": {"train_end": train_end}}))
    return folder


def test_realized_forecasts_are_the_targets_after_each_origin_dated_the_next_day(panel):
    """h = 5: realized_rv is the sum of rv over days t+1..t+5 (not the squared return), realized_ret the sum of
    ret, and `date` is origin + 1 day (the backtest's layout), not origin + horizon."""
    scored = scored_table(panel, horizon=5)
    frame = realized_forecasts(scored, panel, "m")
    row = frame[frame["asset"] == "syn_a"].iloc[100]
    daily = panel["syn_a"]
    after = daily.loc[row["origin"] + pd.Timedelta(days=1): row["origin"] + pd.Timedelta(days=5)]
    assert len(after) == 5
    assert row["realized_rv"] == pytest.approx(after["rv"].sum(), rel=1e-12)
    assert row["realized_ret"] == pytest.approx(after["ret"].sum(), rel=1e-12)
    assert row["realized_rv"] != pytest.approx(row["realized_ret"] ** 2, rel=1e-3)  # else the test proves nothing
    assert (frame["date"] - frame["origin"] == pd.Timedelta(days=1)).all()
    assert frame["model"].eq("m").all() and "volatility" not in frame


def test_the_default_validation_start_is_the_month_start_half_way_through():
    first, last = pd.Timestamp("2021-07-01", tz="UTC"), pd.Timestamp("2022-07-31", tz="UTC")
    assert default_validation_start(first, last) == pd.Timestamp("2022-01-01", tz="UTC")  # middle 2022-01-14
    assert default_validation_start(first, pd.Timestamp("2023-07-02", tz="UTC")) == pd.Timestamp("2022-07-01", tz="UTC")


def test_a_bundle_calibrates_on_every_out_of_sample_row_before_the_validation_start(panel, tmp_path):
    """Origins from train_end + 1 day on, realised before the start: (start - first) - 1 rows per asset
    (origin + 1 day < start), no more and no fewer; the default start is half-way, on a month start."""
    bundle = manifest_bundle(tmp_path / "b")
    scored = scored_table(panel)
    start = pd.Timestamp("2022-01-01", tz="UTC")
    _, table, _ = calibrate_bundle(bundle, scored, panel, PolicyConfig(), start)
    days = table.loc[table["asset"] != "ALL"].set_index(["asset", "side"])["calibration_days"]
    assert (days == (start - FIRST).days - 1).all(), days
    _, default, _ = calibrate_bundle(bundle, scored, panel, PolicyConfig())
    last = scored["origin"].max()
    assert (default["valid_from"] == default_validation_start(FIRST, last)).all()


def test_a_bundle_validation_start_too_early_or_too_late_is_refused(panel, tmp_path):
    bundle = manifest_bundle(tmp_path / "b")
    scored = scored_table(panel)
    with pytest.raises(ConfigError, match="leaves 120 days to calibrate on"):
        calibrate_bundle(bundle, scored, panel, PolicyConfig(), FIRST + pd.Timedelta(days=120))
    with pytest.raises(ConfigError, match="is not before the data's last origin"):
        calibrate_bundle(bundle, scored, panel, PolicyConfig(), scored["origin"].max())
    calibrate_bundle(bundle, scored, panel, PolicyConfig(), FIRST + pd.Timedelta(days=180))  # the least it takes


def test_a_bundle_summary_tests_coverage_at_the_policys_target(panel, tmp_path):
    policy = PolicyConfig(target_breach_rate=0.025)
    _, table, summary = calibrate_bundle(manifest_bundle(tmp_path / "b"), scored_table(panel), panel, policy,
                                         pd.Timestamp("2022-01-01", tz="UTC"))
    forecasts = realized_forecasts(scored_table(panel).query("origin >= @FIRST"), panel, "m")
    expected = margin_summary(margin_paths(forecasts, policy, table), 0.025)
    pd.testing.assert_frame_equal(summary, expected)
    assert not summary["kupiec_p"].equals(margin_summary(margin_paths(forecasts, policy, table))["kupiec_p"])


def test_an_infeasible_bundle_calibration_is_published_flagged_not_raised(panel, tmp_path):
    policy = PolicyConfig(target_breach_rate=0.0, scale_bounds=(0.1, 0.5))
    parameters, _, _ = calibrate_bundle(manifest_bundle(tmp_path / "b"), scored_table(panel), panel, policy,
                                        pd.Timestamp("2022-01-01", tz="UTC"))
    assert parameters["records"] and not any(r["feasible"] for r in parameters["records"])


def test_an_intraday_mpor_calibrates_the_bundle_on_the_bars_moves(bars, panel, tmp_path):
    """policy.mpor_hours = 8: the breaches (and so the scales) are those of the first 8 hours after each
    close (`with_intraday_moves`), not the daily returns."""
    policy, start = PolicyConfig(mpor_hours=8), pd.Timestamp("2022-01-01", tz="UTC")
    scored = scored_table(panel)
    _, table, _ = calibrate_bundle(manifest_bundle(tmp_path / "b"), scored, panel, policy, start, bars)
    forecasts = with_intraday_moves(realized_forecasts(scored.query("origin >= @FIRST"), panel, "m"), bars, 8)
    expected = calibrate(forecasts, policy, start, calibration_start=FIRST)
    pd.testing.assert_frame_equal(table, expected)
    daily = calibrate(realized_forecasts(scored.query("origin >= @FIRST"), panel, "m"), policy, start, FIRST)
    assert not np.allclose(table["scale"], daily["scale"])


def test_calibration_data_must_go_on_180_days_after_the_training_end_in_some_asset(panel, tmp_path, monkeypatch):
    """(the manifest is read verified; a stand-in reader gives this test's train_end)"""
    import volmargin_serving.bundle

    manifest = {"training": {"train_end": TRAIN_END}}
    monkeypatch.setattr(volmargin_serving.bundle, "read_manifest", lambda folder: manifest)
    bundle = tmp_path / "b"
    cut = {a: d.loc[: FIRST + pd.Timedelta(days=180)] for a, d in panel.items()}
    check_calibration_data(bundle, cut)  # exactly 180 days: enough
    short = {a: d.loc[: FIRST + pd.Timedelta(days=179)] for a, d in panel.items()}
    with pytest.raises(DataError, match="before 180 days after the bundle's training end"):
        check_calibration_data(bundle, short)
    check_calibration_data(bundle, {"syn_a": cut["syn_a"], "syn_b": panel["syn_b"].loc[:"2021-09-01"]})


# session 30's second mutation audit (s30m2)
def test_a_bundles_summary_at_a_five_day_mpor_reads_origins_five_days_apart(panel, tmp_path):
    policy = PolicyConfig()
    scored = scored_table(panel, horizon=5)
    _, table, summary = calibrate_bundle(manifest_bundle(tmp_path / "b"), scored, panel, policy,
                                         pd.Timestamp("2022-01-01", tz="UTC"))
    forecasts = realized_forecasts(scored.query("origin >= @FIRST"), panel, "m")
    paths = margin_paths(forecasts, policy, table)
    pd.testing.assert_frame_equal(summary, margin_summary(paths, policy.target_breach_rate, horizon=5))
    every_row = margin_summary(paths, policy.target_breach_rate)
    assert not summary["kupiec_p"].equals(every_row["kupiec_p"])  # the test tells the two readings apart
    assert (summary["breaches"] == every_row["breaches"]).all()  # counts and rates still read every row