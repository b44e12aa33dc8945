"""Scores at their edges (session 31's red team on the statistics): a short or degenerate backtest is scored,
not stopped; h-day coverage tests read non-overlapping origins wherever they fall, Basel zones too; a zero-breach
target is tested as such."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from volmargin.calibration.backtest import margin_summary
from volmargin.evaluation import stats
from volmargin.evaluation.scoring import coverage_mask, diebold_mariano_table, score_forecasts


def _table(n: int = 400, h: int = 1, step: int = 1, offset: int = 0, seed: int = 0, models=("m", "ref"),
           width: float = 0.9) -> pd.DataFrame:
    """A forecast table of one asset: origins `step` days apart from 2010-01-01 + `offset` days, h-day targets."""
    rng = np.random.default_rng(seed)
    origins = pd.Timestamp("2010-01-01", tz="UTC") + pd.to_timedelta(offset + step * np.arange(n), unit="D")
    sigma = 0.02 * np.sqrt(h)
    ret = rng.normal(0, sigma, n)
    frames = []
    for k, model in enumerate(models):
        scale = sigma * (width + 0.1 * k)
        frames.append(pd.DataFrame({
            "asset": "a", "model": model, "origin": origins, "date": origins, "horizon": h,
            "variance": np.full(n, scale ** 2) * np.exp(rng.normal(0, 0.1, n)),
            "realized_rv": ret ** 2 + 1e-8, "realized_ret": ret,
            **{f"var99_{s}": 2.3263 * scale for s in ("long", "short")},
            **{f"var975_{s}": 1.9600 * scale for s in ("long", "short")},
            **{f"es975_{s}": 2.3378 * scale for s in ("long", "short")},
        }))
    return pd.concat(frames, ignore_index=True)


def test_a_dm_test_that_cannot_be_computed_is_left_empty_not_an_internal_error(caplog):
    """Eight dates at h = 5 (lags 8 reach n) and a loss differential constant over three dates stopped the whole
    backtest with an internal error, writing nothing: the table keeps the model's losses, the test NaN, said why."""
    short = diebold_mariano_table(_table(n=8, h=5), "ref")
    assert len(short) == 1 and np.isnan(short.loc[0, "dm_p"]) and short.loc[0, "mean_loss"] > 0
    assert "not computed" in caplog.text
    constant = _table(n=3)  # targets 1.5x ref's forecast, m's twice ref's: each model's QLIKE constant
    ref = constant["model"] == "ref"
    constant["realized_rv"] = np.tile(1.5 * constant.loc[ref, "variance"].to_numpy(), 2)
    constant.loc[~ref, "variance"] = 2 * constant.loc[ref, "variance"].to_numpy()
    assert np.isnan(diebold_mariano_table(constant, "ref").loc[0, "dm_stat"])


def test_dm_refuses_a_differential_constant_up_to_rounding_and_fractional_lags():
    """a against a + 0.1 gave DM -8.3e15, p 0 (the differential constant but for rounding); lags 2.7 read as 2."""
    a = np.random.default_rng(1).uniform(0, 1, 500)
    with pytest.raises(ValueError, match="constant"):
        stats.diebold_mariano(a, a + 0.1)
    with pytest.raises(ValueError, match="lags: must be a non-negative integer"):
        stats.diebold_mariano(a, a[::-1], lags=2.7)
    assert stats.diebold_mariano(a, a[::-1], lags=2).n == 500


def test_h_day_coverage_tests_read_origins_h_days_apart_on_whatever_phase_they_fall():
    """Origins already 5 days apart but on day numbers 1 mod 5 kept none and every p-value was NaN; a daily series
    keeps phase 0 (the same calendar days for every asset and model), within one origin of the best phase."""
    offset = _table(n=436, h=5, step=5, offset=1)
    assert coverage_mask(offset["origin"], 5).all()
    row = score_forecasts(offset).set_index(["asset", "model"]).loc[("a", "m")]
    assert np.isfinite(row["kupiec_p_long"]) and np.isfinite(row["christoffersen_p_short"])
    daily = pd.date_range("2010-01-03", periods=103, tz="UTC")
    mask = coverage_mask(daily, 5)
    days = daily.tz_convert(None).to_numpy().astype("datetime64[D]").astype(np.int64)
    assert (days[mask] % 5 == 0).all() and mask.sum() >= 20


def test_h_day_basel_zones_count_each_move_once():
    """At h = 5 one large move is an exception of up to five overlapping rows: the zone read every row (red where
    the non-overlapping origins are green); it reads the rows the coverage tests read."""
    table = _table(n=1500, h=5, models=("m",), width=0.9)
    scored = score_forecasts(table).set_index(["asset", "model"]).loc[("a", "m")]
    sparse = table[coverage_mask(table["origin"], 5)]
    hits = -sparse["realized_ret"].to_numpy() > sparse["var99_long"].to_numpy()
    assert scored["basel_zone_long"] == stats.worst_basel_zone(hits, 250, 0.01)
    assert scored["basel_windows_long"] == len(stats.basel_zones(hits, 250, 0.01))
    assert scored["var99_long_exceptions"] == (-table["realized_ret"] > table["var99_long"]).sum()


def test_a_zero_breach_target_is_tested_at_zero_not_at_one_percent():
    """Target 0 (a calibration allowing no breach) was tested at 1% in silence: 3 breaches in 500 days read
    Kupiec p 0.33, green. At p = 0 any breach rejects with certainty and is red; none is p 1, green."""
    origins = pd.date_range("2020-01-01", periods=500, tz="UTC")
    paths = pd.DataFrame({"model": "m", "asset": "a", "side": "long", "origin": origins, "date": origins,
                          "initial_margin": 0.1, "loss": 0.0, "breach": False, "shortfall": 0.0, "calibrated": True})
    clean = margin_summary(paths, 0.0).iloc[0]
    assert clean["kupiec_p"] == 1.0 and clean["basel_zone"] == "green" and clean["basel_windows"] == 251
    paths.loc[[10, 200, 400], ["breach", "loss", "shortfall"]] = [True, 0.2, 0.1]
    breached = margin_summary(paths, 0.0).iloc[0]
    assert breached["kupiec_p"] == 0.0 and breached["basel_zone"] == "red" and breached["breaches"] == 3
    assert breached["basel_green_windows"] == 0
    assert margin_summary(paths, 0.01).iloc[0]["kupiec_p"] > 0.05
    with pytest.raises(ValueError, match="target_breach_rate"):
        margin_summary(paths, 1.5)


def test_a_model_constant_on_one_asset_is_scored_with_no_mincer_zarnowitz_r2():
    """A constant variance stopped the whole scoring run ('sigma2 is constant', an internal error in the CLI)."""
    table = _table(n=300)
    table.loc[table["model"] == "m", "variance"] = 4e-4
    scores = score_forecasts(table).set_index(["asset", "model"])
    assert np.isnan(scores.loc[("a", "m"), "mz_r2"]) and np.isfinite(scores.loc[("a", "m"), "qlike"])
    assert np.isfinite(scores.loc[("a", "ref"), "mz_r2"])


def test_a_sample_shorter_than_the_basel_window_is_judged_on_its_own_length():
    """At h = 10, 1,100 daily origins leave 110 non-overlapping ones: judged against the 250-day thresholds, a VaR
    breached 4-5x its target read green (session 31's red team on its own fix); now against 110 rows' thresholds."""
    hits = np.zeros(110, dtype=bool)
    hits[[5, 30, 60, 85, 100]] = True  # 4.5%, where 1% is expected
    assert stats.worst_basel_zone(hits, 250, 0.01) != "green"
    assert stats.worst_basel_zone(hits, 250, 0.01) == stats.basel_zone(5, 110, 0.01)
    assert stats.worst_basel_zone(np.zeros(110, dtype=bool), 250, 0.01) == "green"
