"""Implied-volatility (DVOL) features: causal, NaN-tolerant, aligned with the day they are known at, and the
same forecast from the training library and from a serving bundle (with and without the index)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import volmargin_serving as vs
from volmargin.data import synthetic_market
from volmargin.data.options import load_dvol
from volmargin.evaluation.backtest import daily_panel
from volmargin.export import write_bundle
from volmargin.features.learned import INPUT_COLUMNS, IV_COLUMN, attach_iv, daily_inputs, feature_frame
from volmargin.models import make_forecaster
from volmargin_serving.features import IV_FEATURE_NAMES, FeatureSpec, compute_iv_features


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
