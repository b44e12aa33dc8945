"""Implied-volatility (DVOL) features: causal, NaN-tolerant, aligned with the day they are known at, and the
same forecast from the training library and from a serving bundle (with and without the index)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

import volmargin_serving as vs
from volmargin.calibration import PolicyConfig, parameter_set, walk_forward_calibration, write_parameter_set
from volmargin.data import synthetic_market
from volmargin.data.options import load_dvol
from volmargin.evaluation.backtest import daily_panel
from volmargin.evaluation.walkforward import WalkForwardSplit, panel_historical_forecasts
from volmargin.export import write_bundle
from volmargin.features.learned import INPUT_COLUMNS, IV_COLUMN, attach_iv, daily_inputs, feature_frame
from volmargin.models import make_forecaster
from volmargin_serving.features import IV_FEATURE_NAMES, FeatureSpec, compute_iv_features
from volmargin_serving.repairs import READINGS, carried


def _arrays(daily: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    columns = daily_inputs(daily)
    inputs = np.column_stack([columns[c].astype(float) for c in INPUT_COLUMNS])
    return inputs, daily.index.tz_convert(None).to_numpy().astype("datetime64[D]")


def _synthetic_iv(daily: pd.DataFrame, seed: int) -> np.ndarray:
    """An index that leads the realized variance a little (annualised %), missing on a few days."""
    rv = daily["rv"].rolling(10, min_periods=1).mean().to_numpy()
    noise = np.random.default_rng(seed).normal(0, 0.1, len(rv))
    iv = 100 * np.sqrt(365 * rv) * np.exp(noise + 0.1)
    iv[::37] = np.nan
    return iv


@pytest.fixture(scope="module")
def panel() -> dict[str, pd.DataFrame]:
    panel = daily_panel(synthetic_market(n_assets=3, days=400, seed=5))
    names = sorted(panel)
    for i, name in enumerate(names[:2]):  # the third asset has no index at all
        panel[name] = panel[name].assign(**{IV_COLUMN: _synthetic_iv(panel[name], i)})
    return panel


def test_iv_features_are_causal_and_flag_missing_days():
    level = np.linspace(-8, -7, 60)
    iv = np.linspace(40, 80, 60)
    iv[10] = np.nan
    base = compute_iv_features(iv, level)
    later = iv.copy()
    later[40:] *= 3  # changing the future leaves every earlier row alone
    assert np.array_equal(compute_iv_features(later, level)[:40], base[:40], equal_nan=True)
    assert not np.allclose(compute_iv_features(later, level)[40:, 1], base[40:, 1])
    assert base[10, 0] == 0 and np.isnan(base[10, 1]) and base[11, 0] == 1
    np.testing.assert_allclose(base[20, 1], np.log((iv[20] / 100) ** 2 / 365) - level[20])
    absent = compute_iv_features(None, level)
    assert absent.shape == (60, len(IV_FEATURE_NAMES)) and not absent[:, 0].any() and np.isnan(absent[:, 1:]).all()
    # the last rows from the full history equal the tail of the full computation (serving's `last`)
    np.testing.assert_array_equal(compute_iv_features(iv, level[-8:], FeatureSpec(), last=8), base[-8:])


def test_attach_iv_puts_each_close_on_its_own_day():
    days = pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC")
    daily = pd.DataFrame({"rv": [1.0, 1.0, 1.0]}, index=days)
    one_a_day = pd.DataFrame({"close": [50.0, 60.0]}, index=days[:2])
    hourly = pd.DataFrame({"close": np.arange(48.0)}, index=pd.date_range("2024-01-01", periods=48, freq="h", tz="UTC"))
    np.testing.assert_array_equal(attach_iv(daily, one_a_day)[IV_COLUMN], [50.0, 60.0, np.nan])
    # hourly labels are bar open times: the day's value is the 23:00 bar's close, never the next day's
    np.testing.assert_array_equal(attach_iv(daily, hourly)[IV_COLUMN], [23.0, 47.0, np.nan])


def test_daily_and_hourly_dvol_agree_on_real_data(shared_data):
    folder = shared_data / "iv"
    daily = load_dvol(folder / "deribit_btc_dvol_1d.csv.gz")
    hourly = load_dvol(folder / "deribit_btc_dvol_1h.csv.gz")
    frame = pd.DataFrame(index=daily.index[:400])
    frame.index = frame.index.tz_localize("UTC") if frame.index.tz is None else frame.index
    a, b = attach_iv(frame, daily)[IV_COLUMN], attach_iv(frame, hourly)[IV_COLUMN]
    assert np.allclose(a, b)  # the shared data's README: daily close D == hourly close labelled D 23:00


def test_gbm_with_iv_serves_the_library_forecast(panel, tmp_path):
    model = make_forecaster("gbm", n_estimators=20, tail_estimators=10, iv_features=True).fit_panel(panel)
    assert model.feature_names_[-3:] == IV_FEATURE_NAMES
    # the index matters to the model where present
    first = sorted(panel)[0]
    daily = panel[first]
    with_iv = model.forecast(daily, daily.index[-60:], model.levels_).variance
    without = model.forecast(daily.drop(columns=IV_COLUMN), daily.index[-60:], model.levels_).variance
    assert not np.allclose(with_iv, without)
    runtime = vs.load(write_bundle(model, panel, tmp_path))
    assert runtime.iv_features
    for name, daily in panel.items():
        inputs, dates = _arrays(daily)
        iv = daily[IV_COLUMN].to_numpy() if IV_COLUMN in daily else None
        served = runtime.forecast_daily(inputs, dates, as_of=dates[-1] + 1, iv=iv)
        expected = model.forecast(daily, daily.index[-1:], model.levels_)
        np.testing.assert_allclose(served.variance, expected.variance, rtol=1e-4)
        np.testing.assert_allclose(served.var[:, 0], expected.var["long"], rtol=1e-4)
        # backfills read the index too: every row's forecast is the library's
        history = runtime.forecast_history(inputs, dates, iv=iv)
        scored = daily.index[runtime.history_days - 1:]
        np.testing.assert_allclose(history.variance, model.forecast(daily, scored, model.levels_).variance, rtol=1e-4)
    inputs, dates = _arrays(panel[first])
    bad = panel[first][IV_COLUMN].to_numpy().copy()
    bad[-1] = -5.0
    with pytest.raises(vs.InputError, match="iv must be > 0"):
        runtime.forecast_daily(inputs, dates, as_of=dates[-1] + 1, iv=bad)
    bad[-1] = 0.65  # a fraction: read as 0.65%, implied far below realized
    with pytest.raises(vs.ImpossibleInputError, match="iv is 0.65 .* annualised percent"):
        runtime.forecast_daily(inputs, dates, as_of=dates[-1] + 1, iv=bad)


def test_iv_features_off_keep_the_old_feature_set(panel):
    frame = feature_frame(panel[sorted(panel)[0]])
    assert not set(IV_FEATURE_NAMES) & set(frame.columns)


# --- the index through margins, the config-driven jobs and the bundle commands (session 27) ---

POLICY = PolicyConfig(buffer=0.25, max_up=0.5, max_down=0.2)


def _leading_iv(daily: pd.DataFrame) -> pd.Series:
    """An index that knows the next day's realized variance, so that a tiny model reads it on every day."""
    return 100 * np.sqrt(365 * daily["rv"].shift(-1).fillna(daily["rv"]).clip(lower=1e-6))


@pytest.fixture(scope="module")
def led() -> dict[str, pd.DataFrame]:
    """`panel`'s market with a leading index on its first two assets."""
    led = daily_panel(synthetic_market(n_assets=3, days=400, seed=5))
    return {name: daily.assign(**{IV_COLUMN: _leading_iv(daily)}) if name != "syn_c" else daily
            for name, daily in led.items()}


@pytest.fixture(scope="module")
def iv_model(led):
    return make_forecaster("gbm", n_estimators=20, tail_estimators=10, iv_features=True).fit_panel(led)


@pytest.fixture(scope="module")
def iv_runtime(iv_model, led, tmp_path_factory) -> vs.Runtime:
    """The IV model's bundle with a calibration set from its walk-forward forecasts."""
    bundle = write_bundle(iv_model, led, tmp_path_factory.mktemp("iv-models"))
    frames = panel_historical_forecasts(
        led, lambda: make_forecaster("gbm", n_estimators=20, tail_estimators=10, iv_features=True),
        WalkForwardSplit(min_train=150, refit_every=None), (0.975, 0.99))
    forecasts = pd.concat([f.assign(asset=a, model="gbm") for a, f in frames.items()], ignore_index=True)
    blocks = walk_forward_calibration(forecasts, POLICY, forecasts["origin"].min() + pd.Timedelta(days=30), "MS")
    parameters = parameter_set(forecasts, POLICY, blocks, "gbm", assets=sorted(led))
    calibration = write_parameter_set(parameters, bundle, bundle.with_name("calibration.json"))
    return vs.load(bundle, calibration=calibration)


def _margin_batch(panel, end: int = 0) -> tuple[list, np.ndarray, np.ndarray, list, np.datetime64]:
    """150 days of inputs of every asset ending `end` days before the last, their index and the next day."""
    assets, window = sorted(panel), slice(-150 - end, len(next(iter(panel.values()))) - end)
    arrays = [_arrays(panel[a].iloc[window]) for a in assets]
    iv = [panel[a][IV_COLUMN].to_numpy()[window] if IV_COLUMN in panel[a] else None for a in assets]
    dates = np.stack([d for _, d in arrays])
    return assets, np.stack([i for i, _ in arrays]), dates, iv, dates[0, -1] + np.timedelta64(1, "D")


def test_margins_read_the_index_as_forecast_daily_does(iv_runtime, led):
    """(session 27: `margins` took no index, so a bundle trained with DVOL priced every asset without it)"""
    differs = []
    for end in range(0, 60, 6):
        assets, inputs, dates, iv, as_of = _margin_batch(led, end)
        served = iv_runtime.margins(assets, inputs, dates, as_of=as_of, iv=iv)
        stacked = np.stack([np.full(150, np.nan) if x is None else x for x in iv])
        expected = iv_runtime.forecast_daily(inputs, dates, as_of=as_of, iv=stacked)
        np.testing.assert_array_equal(served.forecasts.variance, expected.variance)
        without = iv_runtime.margins(assets, inputs, dates, as_of=as_of)
        np.testing.assert_array_equal(served.initial[2], without.initial[2])  # the asset without an index
        differs.append(not np.allclose(served.forecasts.variance[:2], without.forecasts.variance[:2]))
        if end == 0:  # the set's parameters are in force from its last month only
            assert not served.fail_safe.any()
    assert sum(differs) >= 8, differs


def test_batch_margins_of_a_panel_read_its_index(iv_runtime, led):
    """`volmargin margins` (batch.serve_asset) gives the margins the runtime gives with the index."""
    from volmargin.batch import bundle_files, serve_asset

    files, document = bundle_files(iv_runtime.path), iv_runtime.calibration.path.read_bytes()
    differs = []
    for end in range(3):  # days the set's parameters are in force
        assets, inputs, dates, iv, as_of = _margin_batch(led, end)
        expected = iv_runtime.margins(assets, inputs, dates, as_of=as_of, iv=iv)
        for k, asset in enumerate(assets):
            rows = serve_asset(files, document, asset, led[asset].iloc[:len(led[asset]) - end], latest=True)
            np.testing.assert_allclose(rows["initial_margin"], expected.initial[k], rtol=1e-9)
        differs.append(not np.allclose(expected.initial, iv_runtime.margins(assets, inputs, dates, as_of=as_of).initial))
    assert any(differs)


@pytest.mark.parametrize("bad", [-5.0, np.inf, 0.65, "shape"])
def test_a_bad_index_is_read_as_none_and_flagged_never_lower(iv_runtime, led, bad):
    assets, inputs, dates, iv, as_of = _margin_batch(led)
    good = iv_runtime.margins(assets, inputs, dates, as_of=as_of, iv=iv)
    broken, missing = list(iv), list(iv)
    if bad == "shape":
        broken[0], missing[0] = iv[0][1:], None
    else:
        broken[0], missing[0] = iv[0].copy(), iv[0].copy()
        broken[0][-1], missing[0][-1] = bad, np.nan
    served = iv_runtime.margins(assets, inputs, dates, as_of=as_of, iv=broken)
    clean = vs.load(iv_runtime.path, calibration=iv_runtime.calibration.path).margins(
        assets, inputs, dates, as_of=as_of, iv=missing)  # a fresh runtime: no memory of `good`
    assert served.fail_safe[0].all() and "iv" in served.reason[0, 0] and "read as no index" in served.reason[0, 0] \
        or bad == "shape" and "InputShapeError: iv has shape" in served.reason[0, 0]
    assert (served.initial[0] >= clean.initial[0]).all()  # never below the margin without the bad index
    assert (served.initial[0] >= good.initial[0]).all()  # nor below the last good one (the runtime's memory)
    np.testing.assert_array_equal(served.initial[1:], good.initial[1:])  # the others untouched
    assert not served.fail_safe[1:].any()


def test_a_bad_index_before_the_rows_the_model_reads_changes_nothing(iv_runtime, led):
    assets, inputs, dates, iv, as_of = _margin_batch(led)
    early = [None if x is None else x.copy() for x in iv]
    early[0][0] = -5.0  # 150 rows given, the model reads the last history_days
    assert iv_runtime.history_days < 150
    good = iv_runtime.margins(assets, inputs, dates, as_of=as_of, iv=iv)
    served = iv_runtime.margins(assets, inputs, dates, as_of=as_of, iv=early)
    assert not served.fail_safe.any()
    np.testing.assert_array_equal(served.initial, good.initial)


def test_the_index_moves_with_its_rows_in_the_readings_of_bad_rows():
    days = np.arange(np.datetime64("2024-01-01"), np.datetime64("2024-01-11"))
    iv = np.arange(10.0, 20.0)
    as_of = days[-1] + 1
    placed = carried(iv, days, as_of, 5, np.timedelta64(3, "D"))
    assert placed.shape == (len(READINGS), 5)
    for row in placed:  # dated as given or consecutively, the rows and their index are the last five
        np.testing.assert_array_equal(row, iv[-5:])
    twice = days.copy()
    twice[-1] = twice[-2]  # the newest row stamped with yesterday: as given, that day is unknown
    placed = carried(iv, twice, as_of, 5, np.timedelta64(3, "D"))
    by_dating = dict(zip([d for d, _ in READINGS], placed))
    assert np.isnan(by_dating["as_given"][-1])
    np.testing.assert_array_equal(by_dating["consecutive"], iv[-5:])


DVOL_CONFIG = """
data: {{paths: ["{data}/*.csv.gz"], iv: {{"syn_a*": "{dvol}"}}}}
window: {{train_end: 2022-06-30, min_train_days: 200}}
model: {{name: gbm, params: {{n_estimators: 20, tail_estimators: 10, iv_features: true}}}}
tracking: {{registered_model: tiny-iv-gbm}}
output: {out}
"""


def _write_dvol(path, daily: pd.DataFrame) -> None:
    """A daily DVOL file of `_leading_iv`."""
    close = _leading_iv(daily)
    pd.DataFrame({"timestamp": close.index.strftime("%Y-%m-%dT%H:%M:%SZ"), "open": close, "high": close,
                  "low": close, "close": close}).to_csv(path, index=False)


def test_config_jobs_train_export_and_score_with_the_index(tmp_path, capsys):
    """data.iv: `train` learns from the index, `export` checks parity with it, `score --iv` reads it."""
    from volmargin.cli import main
    from volmargin.data import write_synthetic_csv
    from volmargin.training import load_trained

    data = tmp_path / "data"
    write_synthetic_csv(data, n_assets=3, days=600, seed=5)
    dvol = tmp_path / "dvol.csv"
    _write_dvol(dvol, daily_panel(synthetic_market(n_assets=3, days=600, seed=5))["syn_a"])
    config = tmp_path / "cfg.yaml"
    config.write_text(DVOL_CONFIG.format(data=data, dvol=dvol, out=tmp_path / "train"))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["train", "--config", str(config), "--quiet", "--tracking-uri", uri]) == 0
    assert main(["export", "--run", str(tmp_path / "train"), "--root", str(tmp_path / "models"),
                 "--tracking-uri", uri]) == 0
    bundle = tmp_path / "models" / "gbm" / "1"
    golden = json.loads((bundle / "manifest.json").read_text())["golden"]["file"]
    with np.load(bundle / golden) as archive:  # the export's parity check and the load's self-test read the index
        assert "iv" in archive and np.isfinite(archive["iv"]).any()
    model, _, _ = load_trained(tmp_path / "train")
    scored = {}
    for option in ([], ["--iv", f"syn_a*={dvol}"]):
        out = tmp_path / f"scores{len(option)}.csv"
        assert main(["score", "--bundle", str(bundle), "--data", str(data), "--out", str(out), "--quiet",
                     *option]) == 0
        scored[bool(option)] = pd.read_csv(out).query("asset == 'syn_a'")["variance"].to_numpy()
    assert "reads an implied-volatility index; without --iv" in capsys.readouterr().out
    daily = attach_iv(daily_panel(synthetic_market(n_assets=3, days=600, seed=5))["syn_a"], load_dvol(dvol))
    origins = daily.index[-len(scored[True]):]
    np.testing.assert_allclose(scored[True], model.forecast(daily, origins, model.levels_).variance, rtol=1e-4)
    assert not np.allclose(scored[False], scored[True])


@pytest.mark.parametrize("iv, message", [
    ({"syn_z*": "x.csv"}, "data.iv: 'syn_z*' matches no asset of the data"),
    ({"syn_*": "x.csv", "*_a": "y.csv"}, "data.iv: asset syn_a matches both 'syn_*' and '*_a'"),
])
def test_index_patterns_that_miss_or_overlap_stop_with_one_line(panel, iv, message):
    from volmargin.errors import ConfigError
    from volmargin.training import with_iv_index

    with pytest.raises(ConfigError, match=re.escape(message)):
        with_iv_index(panel, iv)


def test_an_index_option_without_its_pattern_stops_with_one_line(tmp_path, capsys):
    from volmargin.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["score", "--bundle", str(tmp_path), "--out", str(tmp_path / "s.csv"), "--iv", "dvol.csv"])
    assert stop.value.code == 2 and "expected PATTERN=FILE" in capsys.readouterr().err


# ------------------------------------------------------------------ session 28's mutation audit
# Each test below fails on a change the suite let through: the index cut to the model's window (iv_chg lost),
# an index one row off accepted, a bad level before the last row unflagged, fail-safe readings made without
# the index, every pattern's assets given the first pattern's index, the pooled clustered Kupiec at h > 1
# reading overlapping rows.

def _spy(runtime, monkeypatch) -> list[np.ndarray]:
    """Every standardized window the runtime's model is run on."""
    calls, run = [], runtime.run_model
    monkeypatch.setattr(runtime, "run_model", lambda x: (calls.append(np.array(x)), run(x))[1])
    return calls


def _iv_columns(runtime) -> list[int]:
    names = list(runtime.manifest["features"]["names"])
    return [names.index(n) for n in IV_FEATURE_NAMES]


# forecast_daily cut the index to `window` rows instead of `history_days`: iv_chg read as missing
def test_forecast_daily_feeds_the_model_the_library_iv_features(iv_runtime, led, monkeypatch):
    calls = _spy(iv_runtime, monkeypatch)
    name = "syn_a"
    inputs, dates = _arrays(led[name])
    iv_runtime.forecast_daily(inputs, dates, as_of=dates[-1] + 1, iv=led[name][IV_COLUMN].to_numpy())
    expected = feature_frame(led[name], iv_runtime.spec, iv_features=True)[list(IV_FEATURE_NAMES)].to_numpy()[-1]
    cols = _iv_columns(iv_runtime)
    mean, scale = iv_runtime.mean[cols], iv_runtime.scale[cols]
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(calls[-1][0, -1, cols], ((expected - mean) / scale).astype(np.float32), rtol=1e-5)


# forecast_daily accepted an index one row longer or shorter than the inputs (read shifted a day)
@pytest.mark.parametrize("shift", [1, -1])
def test_forecast_daily_refuses_an_index_not_one_per_input_row(iv_runtime, led, shift):
    inputs, dates = _arrays(led["syn_a"])
    iv = led["syn_a"][IV_COLUMN].to_numpy()
    iv = np.r_[iv, 60.0] if shift > 0 else iv[1:]
    with pytest.raises(vs.InputShapeError, match="iv has shape"):
        iv_runtime.forecast_daily(inputs, dates, as_of=dates[-1] + 1, iv=iv)


# a bad level flagged only on the last row (or only in the last `window` rows)
@pytest.mark.parametrize("back", [6, 2])
def test_a_bad_index_on_a_row_the_model_reads_before_the_last_is_flagged(iv_runtime, led, back):
    assets, inputs, dates, iv, as_of = _margin_batch(led)
    broken = [None if x is None else x.copy() for x in iv]
    broken[0][-back] = -5.0  # row -6: the week-ago index that iv_chg of the last row reads
    served = iv_runtime.margins(assets, inputs, dates, as_of=as_of, iv=broken)
    assert served.fail_safe[0].all() and "read as no index" in served.reason[0, 0]
    assert not served.fail_safe[1:].any()


def _present_everywhere(calls, runtime) -> None:
    col = _iv_columns(runtime)[0]
    one = np.float32((1.0 - runtime.mean[col]) / runtime.scale[col])
    assert calls and all((c[:, -1, col] == one).all() for c in calls), [c[:, -1, col] for c in calls]


# the reading with partial days read whole dropped the index
def test_the_whole_day_reading_of_a_partial_day_reads_the_index(iv_runtime, led, monkeypatch):
    assets, inputs, dates, iv, as_of = _margin_batch(led)
    inputs = inputs.copy()
    inputs[0, -3, INPUT_COLUMNS.index("complete")] = 0.0  # a partial day among the rows the model reads
    calls = _spy(iv_runtime, monkeypatch)
    iv_runtime.margins(assets[:1], inputs[:1], dates[:1], as_of=as_of, iv=iv[:1])
    assert len(calls) >= 2  # the model's forecast and the whole-day reading
    _present_everywhere(calls, iv_runtime)


# the readings of a refused asset's rows (fail-safe candidates) dropped the index
def test_the_readings_of_refused_rows_read_the_index(iv_runtime, led, monkeypatch):
    assets, inputs, dates, iv, as_of = _margin_batch(led)
    inputs = inputs.copy()
    inputs[0, -2, INPUT_COLUMNS.index("rv")] = -1.0  # a bad value: the asset is refused and its rows read
    calls = _spy(iv_runtime, monkeypatch)
    served = iv_runtime.margins(assets[:1], inputs[:1], dates[:1], as_of=as_of, iv=iv[:1])
    assert served.fail_safe[0].all() and len(calls) >= 1
    _present_everywhere(calls, iv_runtime)


# every matched asset got the first pattern's index
def test_each_pattern_gives_its_own_assets_their_own_index(tmp_path):
    from volmargin.training import with_iv_index

    panel = daily_panel(synthetic_market(n_assets=3, days=60, seed=5))
    files = {}
    for k, name in enumerate(("syn_a", "syn_b")):
        days = panel[name].index
        level = 40.0 + 20.0 * k
        path = tmp_path / f"deribit_{name}_dvol_1d.csv"
        pd.DataFrame({"timestamp": days.strftime("%Y-%m-%dT%H:%M:%SZ"), **{c: level for c in
                      ("open", "high", "low", "close")}}).to_csv(path, index=False)
        files[f"{name}*"] = str(path)
    attached = with_iv_index(panel, files)
    assert (attached["syn_a"][IV_COLUMN] == 40.0).all() and (attached["syn_b"][IV_COLUMN] == 60.0).all()
    assert IV_COLUMN not in attached["syn_c"]


# the pooled row's clustered Kupiec test read every (overlapping) row at h > 1
def test_the_pooled_clustered_kupiec_reads_origins_h_days_apart():
    from volmargin.evaluation import stats
    from volmargin.evaluation.scoring import POOLED, coverage_rows, score_forecasts, scorable

    rng, n, h = np.random.default_rng(3), 3000, 5
    sigma = 0.02 * np.exp(0.3 * np.sin(np.arange(n + h) / 50))
    daily = rng.normal(0, sigma)
    windows = np.lib.stride_tricks.sliding_window_view(daily[1:], h)[:n]
    scale = 0.9 * np.sqrt(np.lib.stride_tricks.sliding_window_view(sigma[1:] ** 2, h)[:n].sum(axis=1))
    table = pd.DataFrame({
        "asset": "a", "model": "m", "origin": pd.date_range("2010-01-01", periods=n, tz="UTC"), "horizon": h,
        "variance": scale ** 2, "realized_rv": (windows ** 2).sum(axis=1), "realized_ret": windows.sum(axis=1),
        **{f"var99_{s}": 2.3263 * scale for s in ("long", "short")},
        **{f"var975_{s}": 1.9600 * scale for s in ("long", "short")},
        **{f"es975_{s}": 2.3378 * scale for s in ("long", "short")},
    })
    pooled = score_forecasts(table).set_index("asset").loc[POOLED]
    rows = coverage_rows(scorable(table))
    hits = -rows["realized_ret"].to_numpy() > rows["var99_long"].to_numpy()
    expected = stats.kupiec_clustered(hits, pd.factorize(rows["origin"])[0], 0.01).pvalue
    assert pooled["kupiec_p_clustered_long"] == pytest.approx(expected, rel=1e-12)
