"""The walk-forward split and tables, per-model refit cadences, blends, the backtest CLI's input checks (session 29's
mutation audit: each test fails on a change the suite let through)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from volmargin.evaluation.walkforward import WalkForwardSplit, historical_forecasts, panel_historical_forecasts
from volmargin.models.base import GlobalForecaster
from volmargin.models.scale import EWMA

INDEX = pd.date_range("2020-01-01", periods=1000, freq="D", tz="UTC")


def test_the_end_date_is_the_last_origin_itself():
    """`end` (--end, 'last forecast origin') is inclusive: the split's last origin is that day."""
    split = WalkForwardSplit(end=INDEX[500], min_train=30, refit_every=7)
    assert split.origins(INDEX)[-1] == INDEX[500]
    assert list(split.blocks(INDEX))[-1].origins[-1] == INDEX[500]


def test_forecast_rows_carry_their_first_target_day_and_their_horizons_targets(garch_daily):
    """`date` is the day after the origin, and realized_rv / realized_ret are the h-day targets of that origin."""
    from volmargin.features.realized import horizon_targets

    split = WalkForwardSplit(start=garch_daily.index[1300], refit_every=50, min_train=500)
    for h in (1, 5):
        frame = historical_forecasts(garch_daily, EWMA, split, (0.99,), horizon=h)
        assert (frame["date"] == frame["origin"] + pd.Timedelta(days=1)).all()
        targets = horizon_targets(garch_daily, h).loc[pd.DatetimeIndex(frame["origin"])]
        np.testing.assert_array_equal(frame["realized_rv"].to_numpy(), targets["target_rv"].to_numpy())
        np.testing.assert_array_equal(frame["realized_ret"].to_numpy(), targets["target_ret"].to_numpy())


def test_a_rolling_window_bounds_the_history_a_forecast_reads(garch_daily):
    """With `window`, a block's forecasts read history from the block's training start only (not from the
    asset's first day): a rolling-window EWMA is seeded inside its window."""
    seen = []

    class Spy(EWMA):
        def forecast(self, history, origins, levels):
            seen.append((history.index[0], origins[0]))
            return super().forecast(history, origins, levels)

    window = 200
    split = WalkForwardSplit(start=garch_daily.index[900], refit_every=60, window=window, min_train=500)
    historical_forecasts(garch_daily, Spy, split, (0.99,))
    assert len(seen) > 5
    assert all(first == refit - pd.Timedelta(days=window - 1) for first, refit in seen)


class _PanelSpy(GlobalForecaster):
    """A global model that records the last training day of every asset at each refit (EWMA forecasts)."""

    name = "panel-spy"

    def __init__(self) -> None:
        self.fits_: list[dict] = []

    def fit_panel(self, trains, horizon=1):
        self.fits_.append({asset: frame.index[-1] for asset, frame in trains.items()})
        return self

    def forecast(self, history, origins, levels):
        return EWMA().fit(history).forecast(history, origins, levels)


def test_a_global_model_is_fitted_on_rows_up_to_its_refit_origin_and_forecasts_every_origin(garch_daily):
    """Each global refit sees every asset's rows up to the block's refit origin only (no look-ahead inside the
    block), and every origin of every asset is forecast once (the block's last one included)."""
    panel = {"a": garch_daily, "b": garch_daily.iloc[700:]}  # b joins inside a block
    split = WalkForwardSplit(start=garch_daily.index[1000], refit_every=30, min_train=400)
    models = []

    def make():
        models.append(_PanelSpy())
        return models[-1]

    refits: list = []
    frames = panel_historical_forecasts(panel, make, split, (0.99,), on_refit=refits.append)
    fits = models[-1].fits_
    assert len(fits) == len(refits) > 5
    for origin, last in zip(refits, fits):
        assert all(day <= origin for day in last.values()), (origin, last)
    for asset, daily in panel.items():
        assert list(frames[asset]["origin"]) == list(split.origins(daily.index))


# ----------------------------------------------------------------------------- the backtest command's input checks

def test_an_end_the_day_before_the_start_is_one_origin_not_an_error(tmp_path, capsys):
    """--end is the last origin and --start the first target day: --end = --start - 1 day is one forecast, and
    passes the date check (the command then stops at the next check, --workers 0, before reading any data)."""
    from volmargin.cli import main

    argv = ["backtest", "--start", "2021-10-01", "--end", "2021-09-30", "--workers", "0", "--out", str(tmp_path / "o"),
            "--quiet", "--no-tracking"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--workers must be >= 1" in err and "--end" not in err


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    from volmargin.data import write_synthetic_csv

    return [str(p) for p in write_synthetic_csv(tmp_path_factory.mktemp("bars"), n_assets=1, days=420, seed=5)]


def test_model_refit_naming_a_model_not_run_is_refused(small_files, tmp_path, capsys):
    from volmargin.cli import main

    assert main(["backtest", "--data", *small_files, "--models", "ewma", "--model-refit", "nn=60",
                 "--out", str(tmp_path / "o"), "--quiet", "--no-tracking"]) == 2
    assert "--model-refit names models not in --models: nn" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- per-model refit cadence

def test_a_per_model_refit_cadence_reaches_a_per_asset_model(garch_daily):
    """`model_refit_every` (--model-refit har=N) changes when a per-asset model refits: HAR refit once is the
    split with refit_every=None, and differs from refitting every 20 days."""
    import dataclasses

    from volmargin.evaluation.backtest import BacktestConfig, run_backtest

    panel = {"a": garch_daily.iloc[:900]}
    split = WalkForwardSplit(start=garch_daily.index[600], refit_every=20, min_train=400)
    cadence = BacktestConfig(models=("har",), split=split, model_refit_every={"har": 10_000})
    once = BacktestConfig(models=("har",), split=dataclasses.replace(split, refit_every=None))
    every_20 = BacktestConfig(models=("har",), split=split)
    got = run_backtest(panel, cadence, progress=False)[0]
    pd.testing.assert_frame_equal(got, run_backtest(panel, once, progress=False)[0])
    assert not np.allclose(got["variance"], run_backtest(panel, every_20, progress=False)[0]["variance"])


def test_a_horizon_below_one_day_is_refused_before_any_work(tmp_path, capsys):
    from volmargin.cli import main

    for horizon in ("0", "-3"):
        assert main(["backtest", "--horizon", horizon, "--workers", "0", "--out", str(tmp_path / "o"), "--quiet",
                     "--no-tracking"]) == 2
        assert f"--horizon must lie in 1 .. 30 days (a margin period of risk), got {horizon}" in capsys.readouterr().err


def test_min_bars_may_ask_for_every_bar_of_the_day():
    """--min-bars 24 on hourly bars (a day complete only with all its bars) is allowed; 25 is not."""
    from volmargin.data import synthetic_market
    from volmargin.errors import DataError
    from volmargin.evaluation.backtest import daily_panel

    bars = synthetic_market(n_assets=1, days=40, seed=1)
    strict = daily_panel(bars, 24)
    assert strict[next(iter(strict))]["complete"].sum() > 20
    with pytest.raises(DataError, match="min bars 25: must lie in 1 .. 24"):
        daily_panel(bars, 25)


def test_a_blend_whose_members_refit_on_another_cadence_is_fitted_not_combined():
    """The blend is combined from its members' forecasts only when they refit as it would: a blend at
    --model-refit blend=60 beside a gbm refit every 20 days is walked forward on its own."""
    from volmargin.config import RunConfig
    from volmargin.evaluation.backtest import BacktestConfig, derived_blend

    gbm = {"n_estimators": 20, "tail_estimators": 10}
    run = RunConfig(learned={"gbm": gbm, "blend": {"weight": 1.0, "long_share": 0.1}})
    params = {"gbm": gbm, "blend": run.learned["blend"]}
    config = BacktestConfig(models=("gbm", "blend"), split=WalkForwardSplit(refit_every=20), model_params=params)
    assert derived_blend(config, ["gbm", "blend"]) == "blend"
    slower = BacktestConfig(models=config.models, split=config.split, model_params=params,
                            model_refit_every={"blend": 60})
    assert derived_blend(slower, ["gbm", "blend"]) is None


def test_zero_or_negative_workers_are_refused_without_starting_a_cluster():
    """(a regression here made `--workers 0` start a cluster of no workers and wait on it forever: the CLI test
    of that message then hangs instead of failing)"""
    from volmargin.distributed import check_options
    from volmargin.errors import ConfigError

    for workers in (0, -1):
        with pytest.raises(ConfigError, match=f"--workers must be >= 1, got {workers}"):
            check_options(None, workers)
    check_options(None, 1)


@pytest.mark.parametrize("argv, message", [
    (["--min-train", "100000"], "argument --min-train: at most 36500 days, got 100000"),
    (["--refit-every", "100000000"], "argument --refit-every: at most 36500 days, got 100000000"),
    (["--window", "100000000"], "argument --window: at most 36500 days, got 100000000"),
    (["--model-refit", "hist=100000000"], "argument --model-refit: at most 36500 days, got 100000000"),
    (["--model-refit", "hist=5,hist=6"], "argument --model-refit: hist is given twice"),  # the last won silently
    (["--model-refit", "hist=0"], "argument --model-refit: hist=0: a model refits every 1 day or more"),  # (late)
])
def test_backtest_day_counts_past_a_century_and_a_model_refit_twice_are_refused(argv, message, tmp_path, capsys):
    """Session 31's red team: these day counts ended in 'internal error: OutOfBounds...' (pandas' dates overflow),
    after the data was read; the run config caps its day counts at 36500 too."""
    from volmargin.cli import main

    with pytest.raises(SystemExit):
        main(["backtest", "--models", "hist", *argv, "--out", str(tmp_path / "o"), "--quiet", "--no-tracking"])
    assert message in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_the_options_stress_look_back_is_capped_as_the_backtests_day_counts(tmp_path, capsys):
    """`options --stress-days` took any count (the run config and the backtest cap theirs at 36500 days)."""
    from volmargin.cli import main

    with pytest.raises(SystemExit):
        main(["options", "--stress-days", "100000000", "--out", str(tmp_path / "o")])
    assert "argument --stress-days: at most 36500 days, got 100000000" in capsys.readouterr().err
