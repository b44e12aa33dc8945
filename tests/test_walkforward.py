import numpy as np
import pandas as pd
import pytest

from volmargin.errors import ConfigError
from volmargin.evaluation import stats
from volmargin.evaluation.scoring import POOLED, diebold_mariano_table, score_forecasts
from volmargin.evaluation.walkforward import WalkForwardSplit

INDEX = pd.date_range("2020-01-01", periods=1000, freq="D", tz="UTC")


def test_blocks_cover_every_origin_once_and_refit_on_cadence():
    split = WalkForwardSplit(start=pd.Timestamp("2021-06-01", tz="UTC"), refit_every=20)
    blocks = list(split.blocks(INDEX))
    origins = pd.DatetimeIndex(np.concatenate([b.origins for b in blocks]))
    assert origins.equals(INDEX[INDEX >= pd.Timestamp("2021-05-31", tz="UTC")])
    assert all(len(b.origins) == 20 for b in blocks[:-1])
    assert all(b.train.stop == b.origins[0] and b.train.start is None for b in blocks)


def test_rolling_window_and_min_train():
    split = WalkForwardSplit(start=INDEX[0], window=100, min_train=400, refit_every=50)
    first = next(split.blocks(INDEX))
    assert first.origins[0] == INDEX[400]  # an origin needs min_train days of history
    assert len(INDEX[(INDEX >= first.train.start) & (INDEX <= first.train.stop)]) == 100
    assert not list(WalkForwardSplit(start=INDEX[-1] + pd.Timedelta(days=5)).blocks(INDEX))


@pytest.mark.parametrize("kwargs", [{"refit_every": 0}, {"window": 5}, {"min_train": 1}])
def test_bad_split_settings(kwargs):
    with pytest.raises(ConfigError):
        WalkForwardSplit(start=INDEX[0], **kwargs)


def _forecast_table(n: int = 600, seed: int = 0) -> pd.DataFrame:
    """Two models on two assets with known truth: 'good' knows the true variance, 'bad' is 4x off."""
    rng = np.random.default_rng(seed)
    frames = []
    for asset in ("a", "b"):
        sigma2 = np.exp(rng.normal(-7, 0.5, n))
        ret = rng.normal(0, np.sqrt(sigma2))
        rv = sigma2 * rng.chisquare(20, n) / 20
        for model, scale in (("good", 1.0), ("bad", 4.0)):
            s2 = sigma2 * scale
            z99, z975 = 2.3263, 1.9600
            es975 = np.sqrt(s2) * 2.3378  # normal ES at 97.5%
            frames.append(pd.DataFrame({
                "asset": asset, "model": model, "date": pd.date_range("2022-01-01", periods=n, tz="UTC"),
                "variance": s2, "realized_rv": rv, "realized_ret": ret,
                **{f"var99_{s}": z99 * np.sqrt(s2) for s in ("long", "short")},
                **{f"var975_{s}": z975 * np.sqrt(s2) for s in ("long", "short")},
                **{f"es975_{s}": es975 for s in ("long", "short")},
            }))
    return pd.concat(frames, ignore_index=True)


def test_scores_rank_the_true_model_first_and_count_exceptions():
    table = _forecast_table()
    scores = score_forecasts(table)
    pooled = scores[scores["asset"] == POOLED].set_index("model")
    assert pooled.loc["good", "qlike"] < pooled.loc["bad", "qlike"]
    assert pooled.loc["good", "n"] == 1200
    good_a = table[(table["model"] == "good") & (table["asset"] == "a")]
    hits = (-good_a["realized_ret"] > good_a["var99_long"]).sum()
    row = scores[(scores["asset"] == "a") & (scores["model"] == "good")].iloc[0]
    assert row["var99_long_exceptions"] == hits
    assert row["basel_zone_long"] in {"green", "yellow", "red"}
    assert abs(row["es975_z2_long"]) < 0.5
    assert pooled.loc["bad", "var99_long_exceptions"] == 0  # 2x too wide VaR never breaches here


def test_rows_without_targets_are_left_out_of_scores():
    table = _forecast_table(n=50)
    table.loc[table.index[:10], "realized_rv"] = np.nan
    table.loc[table.index[10:12], "realized_rv"] = 0.0
    scores = score_forecasts(table)
    assert scores.query("asset == 'a' and model == 'good'")["n"].iloc[0] == 38


def test_diebold_mariano_table_prefers_the_true_model():
    dm = diebold_mariano_table(_forecast_table(), reference="bad")
    row = dm.set_index("model").loc["good"]
    assert row["dm_stat"] < 0 and row["dm_p"] < 0.01 and row["ratio"] < 1


def test_pooled_basel_zone_is_the_worst_assets_and_windows_add_up():
    table = _forecast_table(n=400)
    bad_a = (table["asset"] == "a") & (table["model"] == "good")
    table.loc[bad_a, ["var99_long"]] = table.loc[bad_a, "var99_long"] * 0.3  # asset a breaches often
    scores = score_forecasts(table).set_index(["asset", "model"])
    assert scores.loc[("a", "good"), "basel_zone_long"] == "red"
    assert scores.loc[(POOLED, "good"), "basel_zone_long"] == "red"
    assert scores.loc[(POOLED, "good"), "basel_windows_long"] == 2 * 151


def test_pooled_tests_allow_for_exceptions_on_the_same_dates():
    """(session 25's audit: the pooled Kupiec p treated every asset-day as independent; crypto exceptions
    cluster on dates, so it rejected far too often) Two assets with the same returns breach on the same
    days: a design effect of about 2, the clustered statistic half the pooled one; Christoffersen's pooled
    p-value is the median asset's, not the test of their series end to end."""
    table = _forecast_table(n=500)
    a = table["asset"] == "a"
    for model in ("good", "bad"):
        columns = ["realized_ret", "realized_rv", "variance", "var99_long", "var99_short"]
        table.loc[~a & (table["model"] == model), columns] = table.loc[a & (table["model"] == model), columns].to_numpy()
    table.loc[:, "var99_long"] *= 0.8  # enough exceptions to test
    scores = score_forecasts(table).set_index(["asset", "model"])
    pooled, single = scores.loc[(POOLED, "good")], scores.loc[("a", "good")]
    assert pooled["design_effect_long"] == pytest.approx(2.0, rel=0.01)
    assert pooled["kupiec_p_clustered_long"] > pooled["kupiec_p_long"]
    assert pooled["kupiec_p_clustered_long"] == pytest.approx(single["kupiec_p_long"], rel=0.05)  # one asset's evidence
    assert pooled["christoffersen_p_long"] == pytest.approx(single["christoffersen_p_long"])


def test_refit_every_none_fits_once():
    blocks = list(WalkForwardSplit(start=pd.Timestamp("2021-06-01", tz="UTC"), refit_every=None).blocks(INDEX))
    assert len(blocks) == 1 and blocks[0].origins[-1] == INDEX[-1]


# ----------------------------------------------------------------------------- session 26's mutation audit

def test_dm_compares_models_only_on_the_targets_both_forecast():
    """'good' lacks asset b on the first 300 dates: there both models' daily loss is asset a's alone."""
    from volmargin.evaluation.scoring import pooled_losses
    from volmargin.evaluation.stats import qlike

    table = _forecast_table()
    early = table["date"] < pd.Timestamp("2022-01-01", tz="UTC") + pd.Timedelta(days=300)
    table = table[~((table["model"] == "good") & (table["asset"] == "b") & early)]
    daily = pooled_losses(table)
    bad_a = table[(table["model"] == "bad") & (table["asset"] == "a")].set_index("date")
    loss_a = qlike(bad_a["variance"].to_numpy(), bad_a["realized_rv"].to_numpy())
    first = daily.index < pd.Timestamp("2022-01-01", tz="UTC") + pd.Timedelta(days=300)
    np.testing.assert_allclose(daily.loc[first, "bad"].to_numpy(), loss_a[:300], rtol=1e-12)


def test_the_dm_table_widens_the_hac_lags_for_overlapping_targets():
    """A table of 10-day targets gets the lags of horizon 10 (2 (h - 1) = 18), not the 1-day plug-in."""
    from volmargin.evaluation.scoring import pooled_losses
    from volmargin.evaluation.stats import diebold_mariano

    table = _forecast_table().assign(horizon=10)
    daily = pooled_losses(table)
    row = diebold_mariano_table(table, reference="bad").set_index("model").loc["good"]
    assert row["dm_stat"] == pytest.approx(diebold_mariano(daily["good"], daily["bad"], horizon=10).statistic, rel=1e-12)
    assert row["dm_stat"] != pytest.approx(diebold_mariano(daily["good"], daily["bad"]).statistic, rel=1e-6)


def test_the_pooled_christoffersen_p_is_the_median_assets():
    """Two assets of different evidence: the pooled p is their median (here their mean), not the larger."""
    table = _forecast_table(n=500)
    table.loc[table["asset"] == "a", "var99_long"] *= 0.7
    scores = score_forecasts(table).set_index(["asset", "model"])
    p_a, p_b = (scores.loc[(asset, "good"), "christoffersen_p_long"] for asset in ("a", "b"))
    assert p_a != pytest.approx(p_b)
    assert scores.loc[(POOLED, "good"), "christoffersen_p_long"] == pytest.approx((p_a + p_b) / 2)


def test_a_forecaster_is_never_handed_rows_after_its_last_origin(garch_daily):
    """The walk-forward hands `forecast` the history up to its block's last origin only (the models are
    causal per origin today, so nothing would leak yet: this holds the guard the module promises)."""
    from volmargin.evaluation.walkforward import historical_forecasts
    from volmargin.models.scale import EWMA

    seen = []

    class Spy(EWMA):
        def forecast(self, history, origins, levels):
            seen.append((history.index[-1], origins[-1]))
            return super().forecast(history, origins, levels)

    split = WalkForwardSplit(start=garch_daily.index[1000], refit_every=30, min_train=500)
    historical_forecasts(garch_daily, Spy, split, (0.99,))
    assert len(seen) > 5 and all(last == origin for last, origin in seen)


def test_coverage_tests_at_longer_horizons_read_targets_that_do_not_overlap():
    """(session 27) Exact 5-day 99% VaR of iid returns, forecast every day: one bad day enters five overlapping
    targets, so the exceptions come in runs and Christoffersen's test of every row rejects the exact model; the
    p-values read origins five days apart, the exception count every row."""
    rng, n, h = np.random.default_rng(3), 6000, 5
    sigma = 0.02 * np.exp(0.3 * np.sin(np.arange(n + h) / 50))  # a known, moving daily volatility
    daily = rng.normal(0, sigma)
    windows = np.lib.stride_tricks.sliding_window_view(daily[1:], h)[:n]  # the h days after each origin
    scale = np.sqrt(np.lib.stride_tricks.sliding_window_view(sigma[1:] ** 2, h)[:n].sum(axis=1))
    table = pd.DataFrame({
        "asset": "a", "model": "exact", "origin": pd.date_range("2010-01-01", periods=n, tz="UTC"), "horizon": h,
        "variance": scale ** 2, "realized_rv": (windows ** 2).sum(axis=1), "realized_ret": windows.sum(axis=1),
        **{f"var99_{s}": 2.3263 * scale for s in ("long", "short")},
        **{f"var975_{s}": 1.9600 * scale for s in ("long", "short")},
        **{f"es975_{s}": 2.3378 * scale for s in ("long", "short")},
    })
    row = score_forecasts(table).set_index("asset").loc["a"]
    every = stats.var_backtest(-table["realized_ret"], table["var99_long"], 0.99)
    assert every["christoffersen_p"] < 0.01  # the overlap alone
    assert row["christoffersen_p_long"] > 0.05 and row["kupiec_p_long"] > 0.05
    assert row["var99_long_exceptions"] == every["exceptions"]
    pooled = score_forecasts(table).set_index("asset").loc[POOLED]
    assert pooled["kupiec_p_clustered_long"] > 0.05
