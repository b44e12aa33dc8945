"""Margins in the serving runtime: the calibration set file, its checks at load, the margin rule shared
with the training library, and the fail-safe fallbacks.

A tiny boosting model is trained on a synthetic panel, exported, forecast walk-forward and calibrated
with anti-procyclicality tools on (buffer, speed limits, look-back floor), so every part of the rule runs.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import volmargin_serving as vs
from volmargin.calibration import (
    PolicyConfig, haircut, liquidation_threshold, margin_rate, parameter_set, walk_forward_calibration,
    write_parameter_set,
)
from volmargin.data import synthetic_market
from volmargin.errors import ConfigError
from volmargin.evaluation.backtest import daily_panel
from volmargin.evaluation.walkforward import WalkForwardSplit, panel_historical_forecasts
from volmargin.export import write_bundle
from volmargin.features.learned import INPUT_COLUMNS, daily_inputs
from volmargin.models import make_forecaster
from volmargin_serving import margins as serving_margins
from volmargin_serving.bundle import MANIFEST
from volmargin_serving.calibration import KIND, digest, seal

TINY = {"n_estimators": 20, "tail_estimators": 10}
POLICY = PolicyConfig(buffer=0.25, max_up=0.5, max_down=0.2, lookback_floor=True, lookback_days=60,
                      lookback_z=1.0, floor_min_obs=30)  # floors bind at times, forecasts at others
ASSETS = ["syn_a", "syn_b", "syn_c"]
SIDES = ("long", "short")


@pytest.fixture(scope="module")
def panel() -> dict[str, pd.DataFrame]:
    return daily_panel(synthetic_market(n_assets=3, days=500, seed=4))


@pytest.fixture(scope="module")
def model(panel):
    return make_forecaster("gbm", **TINY).fit_panel(panel)


@pytest.fixture(scope="module")
def bundle(model, panel, tmp_path_factory) -> Path:
    return write_bundle(model, panel, tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def parameters(panel) -> dict:
    """The parameter set of the model's walk-forward forecasts, calibrated quarterly."""
    split = WalkForwardSplit(min_train=250, refit_every=None)
    frames = panel_historical_forecasts(panel, lambda: make_forecaster("gbm", **TINY), split, (0.975, 0.99))
    forecasts = pd.concat([f.assign(asset=a, model="gbm") for a, f in frames.items()], ignore_index=True)
    blocks = walk_forward_calibration(forecasts, POLICY, forecasts["origin"].min() + pd.Timedelta(days=150), "QS")
    return parameter_set(forecasts, POLICY, blocks, "gbm", assets=ASSETS)


@pytest.fixture(scope="module")
def calibration(parameters, bundle) -> Path:
    return write_parameter_set(parameters, bundle, bundle.with_name(f"{bundle.name}.calibration.json"))


@pytest.fixture(scope="module")
def document(calibration) -> dict:
    return json.loads(calibration.read_text())


@pytest.fixture(scope="module")
def runtime(bundle, calibration) -> vs.Runtime:
    return vs.load(bundle, calibration=calibration, assets=ASSETS)


def _arrays(daily: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    columns = daily_inputs(daily)
    inputs = np.column_stack([columns[c].astype(float) for c in INPUT_COLUMNS])
    return inputs, daily.index.tz_convert(None).to_numpy().astype("datetime64[D]")


@pytest.fixture(scope="module")
def batch(panel) -> tuple[np.ndarray, np.ndarray, np.datetime64]:
    """The last 150 days of inputs of every asset, their dates and the day after the last (as_of)."""
    arrays = [_arrays(panel[a].iloc[-150:]) for a in ASSETS]
    dates = np.stack([d for _, d in arrays])
    return np.stack([i for i, _ in arrays]), dates, dates[0, -1] + np.timedelta64(1, "D")


@pytest.fixture(scope="module")
def clean(runtime, batch) -> vs.Margins:
    return runtime.margins(ASSETS, *batch[:2], as_of=batch[2])


def _record(parameters: dict, asset: str, side: str) -> dict:
    return next(r for r in parameters["records"] if r["asset"] == asset and r["side"] == side)


def _floor_rate(record: dict) -> float:
    x = record["scale"] * record["floor"]
    return min(-np.expm1(-x) if record["side"] == "long" else np.expm1(x), 1.0)


def _variant(document: dict, folder: Path, record: dict | None = None, index: int = 0, **top) -> Path:
    """A correctly sealed copy of the calibration set with one record (syn_a/long by default) changed."""
    changed = copy.deepcopy(document)
    changed["parameters"]["records"][index].update(record or {})
    changed.update(top)
    path = folder / "variant.calibration.json"
    path.write_text(json.dumps(seal(changed)))
    return path


def _copy(bundle: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    for path in bundle.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


# ------------------------------------------------------------------ the file and the shared rule


def test_the_margin_rule_lives_once_in_serving():
    import volmargin.calibration.policy as policy

    for name in ("rate_from_log", "speed_bounds", "apc_step", "margin_rate", "liquidation_threshold", "haircut"):
        assert getattr(policy, name) is getattr(serving_margins, name)


def test_calibration_set_layout_and_checksum(document, bundle, parameters):
    assert set(document) == {"schema_version", "kind", "version", "created", "bundle", "parameters", "sha256"}
    assert document["kind"] == KIND and document["schema_version"] == 1
    manifest = json.loads((bundle / MANIFEST).read_text())
    assert document["bundle"] == {"name": "gbm", "version": manifest["version"],
                                  "manifest_sha256": vs.bundle.sha256(bundle / MANIFEST)}
    assert document["version"].startswith(f"gbm-{manifest['version']}-")
    assert document["parameters"] == parameters and document["sha256"] == digest(document)


def test_served_margins_equal_the_library_rule_on_the_same_forecast(clean, model, panel, parameters, runtime):
    assert clean.calibration == runtime.calibration.version and clean.assets == tuple(ASSETS)
    assert not clean.fail_safe.any() and (clean.reason == "").all()
    for k, asset in enumerate(ASSETS):
        daily = panel[asset]
        forecast = model.forecast(daily, daily.index[-1:], model.levels_)
        for i, side in enumerate(SIDES):
            r = _record(parameters, asset, side)
            risk = forecast.var[side][:, model.levels_.index(0.99)]
            expected = margin_rate(risk, side, r["scale"], r["floor"], buffer=0.25, max_up=0.5, max_down=0.2)[0]
            assert clean.initial[k, i] == pytest.approx(expected, rel=1e-5)
            assert clean.initial[k, i] >= _floor_rate(r)
            assert clean.maintenance[k, i] == pytest.approx(0.75 * clean.initial[k, i], rel=1e-12)
            assert clean.liquidation[k, i] == pytest.approx(
                liquidation_threshold(clean.initial[k, i], clean.maintenance[k, i], side), rel=1e-12)
        long = _record(parameters, asset, "long")
        cut = max(haircut(forecast.var["long"][:, model.levels_.index(0.99)], long["scale"])[0],
                  clean.initial[k, 0])  # at least the long margin (session 31)
        assert clean.haircut[k] == pytest.approx([cut, cut], rel=1e-5)
    rows = clean.rows()
    assert len(rows) == 6 and json.loads(json.dumps(rows)) == rows


def test_previous_margins_drive_the_buffer_and_speed_limits(runtime, batch, clean, parameters):
    inputs, dates, as_of = batch
    previous = 0.8 * clean.initial
    served = runtime.margins(ASSETS, inputs, dates, as_of=as_of, previous=previous)
    risk = np.stack([clean.forecasts.columns()[f"var99_{s}"] for s in SIDES], axis=1)
    for k, asset in enumerate(ASSETS):
        for i, side in enumerate(SIDES):
            r = _record(parameters, asset, side)
            rule = margin_rate(risk[k, i], side, r["scale"], r["floor"], previous[k, i], buffer=0.25, max_up=0.5,
                               max_down=0.2)
            assert served.initial[k, i] == pytest.approx(max(rule, _floor_rate(r)), rel=1e-12)
    tiny = np.full((3, 2), 1e-3)  # the speed limit holds the rule at 1.5e-3, under the floor
    floors = np.array([[_floor_rate(_record(parameters, a, s)) for s in SIDES] for a in ASSETS])
    scales = np.array([[_record(parameters, a, s)["scale"] for s in SIDES] for a in ASSETS])
    held = margin_rate(risk, np.array(SIDES), scales, 0.0, tiny, buffer=0.25, max_up=0.5, max_down=0.2)
    assert (held < floors).all()
    lifted = runtime.margins(ASSETS, inputs, dates, as_of=as_of, previous=tiny)
    assert np.allclose(lifted.initial, floors, rtol=1e-12) and not lifted.fail_safe.any()
    with pytest.raises(vs.InputShapeError):
        runtime.margins(ASSETS, inputs, dates, as_of=as_of, previous=tiny[:2])


# ------------------------------------------------------------------ refused at load


def test_a_tampered_calibration_set_is_refused(bundle, document, tmp_path):
    tampered = copy.deepcopy(document)
    tampered["parameters"]["records"][0]["initial_margin"] *= 0.5  # a lower margin, checksum not renewed
    path = tmp_path / "tampered.json"
    path.write_text(json.dumps(tampered))
    with pytest.raises(vs.CalibrationError, match="SHA-256 differs"):
        vs.load(bundle, calibration=path)
    path.write_text(json.dumps({**seal(document), "kind": "something-else"}))
    with pytest.raises(vs.CalibrationError, match="not a volmargin calibration set"):
        vs.load(bundle, calibration=path)


def test_a_calibration_set_with_nan_or_no_records_is_refused_naming_the_file(bundle, document, tmp_path):
    nan = copy.deepcopy(document)
    nan["parameters"]["records"][0]["initial_margin"] = float("nan")  # JSON has no NaN: Python writes a literal
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(nan))
    with pytest.raises(vs.CalibrationError, match=f"{path}: calibration set is not JSON-ready"):
        vs.load(bundle, calibration=path)
    empty = copy.deepcopy(document)
    empty["parameters"]["records"] = []  # sealed anew: intact, but it would serve every margin fail-safe
    path = tmp_path / "empty.json"
    path.write_text(json.dumps(seal(empty)))
    with pytest.raises(vs.CalibrationError, match=f"{path}: parameters.records: expected a non-empty list"):
        vs.load(bundle, calibration=path)


def test_a_calibration_set_of_another_bundle_is_refused(bundle, calibration, tmp_path):
    other = _copy(bundle, tmp_path / "gbm" / "2")
    manifest = json.loads((other / MANIFEST).read_text())
    manifest["version"] = "2"
    (other / MANIFEST).write_text(json.dumps(manifest))
    vs.load(other)  # a sound bundle
    with pytest.raises(vs.CalibrationError, match=r"built from bundle gbm/1 .* not from gbm/2"):
        vs.load(other, calibration=calibration)


@pytest.mark.parametrize("change, message", [
    ({"maintenance_margin": 0.9}, "syn_a/long: maintenance_margin = 0.9 is not below initial_margin"),
    ({"initial_margin": 1.5}, r"syn_a/long: initial_margin = 1.5 is outside \(0, 1\]"),
    ({"initial_margin": 0.0}, r"syn_a/long: initial_margin = 0.0 is outside \(0, 1\]"),
    ({"maintenance_margin": -0.1}, r"syn_a/long: maintenance_margin = -0.1 is outside \(0, 1\]"),
    ({"haircut": 1.0}, r"syn_a/long: haircut = 1.0 is outside \[0, 1\)"),
    ({"haircut": -0.01}, r"syn_a/long: haircut = -0.01 is outside \[0, 1\)"),
    ({"valid_to": "2022-01-01T00:00:00+00:00"}, r"syn_a/long: valid_to = 2022-01-01T00:00:00\+00:00 is not after"),
    ({"side": "both"}, "syn_a/both: side = 'both' is not one of"),
    ({"scale": 0.0}, "syn_a/long: scale = 0.0 is not positive"),
])
def test_each_sanity_rule_is_enforced_at_load(change, message, bundle, document, tmp_path):
    with pytest.raises(vs.CalibrationError, match=message):
        vs.load(bundle, calibration=_variant(document, tmp_path, change))


def test_assets_the_service_needs_must_be_covered(bundle, calibration, document, tmp_path):
    with pytest.raises(vs.CalibrationError, match="zzz/long: missing from the parameter set"):
        vs.load(bundle, calibration=calibration, assets=[*ASSETS, "zzz"])
    overlapping = copy.deepcopy(document)
    records = overlapping["parameters"]["records"]
    records.append({**records[0], "valid_from": "2022-05-01T00:00:00+00:00"})  # inside the open window
    path = tmp_path / "overlap.json"
    path.write_text(json.dumps(seal(overlapping)))
    with pytest.raises(vs.CalibrationError, match="syn_a/long: valid_from = 2022-05-01.* overlaps"):
        vs.load(bundle, calibration=path)
    with pytest.raises(vs.CalibrationError, match="need a calibration set"):
        vs.load(bundle, assets=ASSETS)


def test_write_parameter_set_refuses_what_serving_would_refuse(parameters, bundle, tmp_path):
    bad = copy.deepcopy(parameters)
    bad["records"][1]["haircut"] = 1.0
    with pytest.raises(ConfigError, match="syn_a/short: haircut = 1.0 is outside"):
        write_parameter_set(bad, bundle, tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="horizon"):
        write_parameter_set({**parameters, "horizon": 5}, bundle, tmp_path / "bad.json")
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------ fail safe


def test_a_bad_asset_gets_the_conservative_margin_and_leaves_the_others_alone(runtime, batch, clean, parameters):
    inputs, dates, as_of = batch
    broken = inputs.copy()
    broken[1, -2, 1] = np.nan  # syn_b
    served = runtime.margins(ASSETS, broken, dates, as_of=as_of, previous=None)
    assert served.fail_safe[1].all() and not served.fail_safe[[0, 2]].any()
    assert all("NonFiniteInputError" in reason for reason in served.reason[1])
    for i, side in enumerate(SIDES):
        r = _record(parameters, "syn_b", side)
        # never below the published margin and floor (nor, tests/test_reliability_serving.py, the clean margin)
        assert served.initial[1, i] >= max(r["initial_margin"], _floor_rate(r))
        assert served.haircut[1, i] >= r["haircut"]
    assert np.isnan(served.forecasts.variance[1])
    for name in ("initial", "maintenance", "liquidation", "haircut"):
        np.testing.assert_allclose(getattr(served, name)[[0, 2]], getattr(clean, name)[[0, 2]], rtol=1e-6)
    held = runtime.margins(ASSETS, broken, dates, as_of=as_of, previous=np.full((3, 2), 0.5))
    assert (held.initial[1] == 0.5).all()  # never below yesterday's margin while the data is bad


def test_unknown_missing_and_stale_assets_fail_safe_per_asset(runtime, batch, clean):
    inputs, dates, as_of = batch
    assets = ["zzz", *ASSETS]
    stale = (inputs[1][:-5], dates[1][:-5])  # its newest row is 6 days before as_of
    served = runtime.margins(assets, [inputs[0], inputs[0], stale[0], None], [dates[0], dates[0], stale[1], dates[2]],
                             as_of=as_of)
    assert served.fail_safe.all(axis=1).tolist() == [True, False, True, True]
    assert (served.initial[0] == 1.0).all() and (served.haircut[0] == 1.0).all()
    assert "not in the calibration set" in served.reason[0, 0]
    assert "StaleInputError" in served.reason[2, 0] and "no inputs" in served.reason[3, 1]
    np.testing.assert_allclose(served.initial[1], clean.initial[0], rtol=1e-6)
    with pytest.raises(vs.InputShapeError, match="one entry per asset"):
        runtime.margins(assets, inputs, dates, as_of=as_of)


def test_parameters_out_of_their_window_fail_safe(bundle, document, batch, tmp_path, parameters):
    expired = {"valid_to": "2022-05-01T00:00:00+00:00"}  # the set runs to 2022-05-15
    runtime = vs.load(bundle, calibration=_variant(document, tmp_path, expired, index=5))  # syn_c/short
    served = runtime.margins(ASSETS, *batch[:2], as_of=batch[2])
    assert served.fail_safe.tolist() == [[False, False], [False, False], [False, True]]
    assert "syn_c/short: no parameters in force" in served.reason[2, 1]
    r = _record(parameters, "syn_c", "short")
    assert served.initial[2, 1] == max(r["initial_margin"], _floor_rate(r))


def test_a_floor_above_the_forecast_sets_the_margin(bundle, document, batch, clean, tmp_path):
    high = {"floor": 0.3}  # a stressed floor far above the forecast risk of syn_a/long
    runtime = vs.load(bundle, calibration=_variant(document, tmp_path, high))
    served = runtime.margins(ASSETS, *batch[:2], as_of=batch[2])
    scale = document["parameters"]["records"][0]["scale"]
    assert served.initial[0, 0] == pytest.approx(-np.expm1(-scale * 0.3) * 1.25, rel=1e-12)  # floor x buffer
    assert served.initial[0, 0] > 2 * clean.initial[0, 0] and not served.fail_safe.any()
    np.testing.assert_array_equal(served.initial[1:], clean.initial[1:])


# ------------------------------------------------------------------ server and isolation


def test_a_server_swaps_bundle_and_calibration_together(bundle, calibration, batch, clean, tmp_path):
    server = vs.Server(bundle, calibration=calibration)
    other = _copy(bundle, tmp_path / "gbm" / "2")
    manifest = json.loads((other / MANIFEST).read_text())
    manifest["version"] = "2"
    (other / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(vs.CalibrationError, match="give the calibration set"):
        server.swap(bundle)
    with pytest.raises(vs.CalibrationError, match="built from bundle gbm/1"):
        server.swap(other, calibration=calibration)
    server.swap(bundle, calibration=calibration)
    served = server.margins(ASSETS, *batch[:2], as_of=batch[2])
    np.testing.assert_array_equal(served.initial, clean.initial)


def test_serving_prices_margins_without_the_training_stack(bundle, calibration, batch):
    inputs, dates, as_of = batch
    np.save(bundle.parent / "margin_inputs.npy", inputs)
    code = (
        "import sys, numpy as np, volmargin_serving as vs\n"
        f"rt = vs.load({str(bundle)!r}, calibration={str(calibration)!r})\n"
        f"x = np.load({str(bundle.parent / 'margin_inputs.npy')!r})\n"
        f"d = np.arange(np.datetime64({str(dates[0, 0])!r}), np.datetime64({str(dates[0, -1])!r}) + 1)\n"
        f"m = rt.margins({ASSETS!r}, x, d, as_of=np.datetime64({str(as_of)!r}))\n"
        "assert not m.fail_safe.any(), m.reason\n"
        "heavy = {'torch', 'pandas', 'mlflow', 'arch', 'sklearn', 'lightning', 'scipy', 'volmargin'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_an_intraday_mpor_scales_the_served_risk_by_the_square_root_of_time(parameters, bundle, batch, clean, tmp_path):
    hourly = copy.deepcopy(parameters)
    hourly["policy"]["mpor_hours"] = 6  # a quarter of the forecast's day: half its risk
    path = write_parameter_set(hourly, bundle, tmp_path / "six-hours.calibration.json")
    served = vs.load(bundle, calibration=path, assets=ASSETS).margins(ASSETS, *batch[:2], as_of=batch[2])
    assert (served.initial < clean.initial).any()  # the forecast, not only the floor, sets some margins
    risk = np.stack([clean.forecasts.columns()[f"var99_{s}"] for s in SIDES], axis=1)
    for k, asset in enumerate(ASSETS):
        for i, side in enumerate(SIDES):
            r = _record(parameters, asset, side)
            rule = margin_rate(0.5 * risk[k, i], side, r["scale"], r["floor"], buffer=0.25, max_up=0.5, max_down=0.2)
            assert served.initial[k, i] == pytest.approx(max(rule, _floor_rate(r)), rel=1e-6)


# ------------------------------------------------------------------ the incremental state's margins


def _same_margins(got: vs.Margins, expected: vs.Margins) -> None:
    for field in ("initial", "maintenance", "liquidation", "haircut"):
        np.testing.assert_allclose(getattr(got, field), getattr(expected, field), rtol=1e-12, err_msg=field)
    assert np.array_equal(got.fail_safe, expected.fail_safe)
    assert got.reason.tolist() == expected.reason.tolist()


def test_stream_margins_are_the_careful_margins_with_bad_and_doubtful_rows(bundle, calibration, batch):
    """`StreamState.margins` on the newly closed day gives `Runtime.margins`' figures on the last
    history_days rows: clean, with a refused row (fail safe over its readings, the state unchanged) and
    with a doubtful value (served flagged)."""
    inputs, dates, as_of = batch
    clean = inputs[:, -1]
    refused, doubtful = clean.copy(), clean.copy()
    refused[1, INPUT_COLUMNS.index("rv")] = np.nan
    doubtful[2, INPUT_COLUMNS.index("volume")] *= 1e7
    for row in (clean, refused, doubtful, np.stack([clean[0], refused[1], doubtful[2]])):
        careful, incremental = (vs.load(bundle, calibration=calibration, assets=ASSETS) for _ in range(2))
        history = careful.history_days
        window = inputs[:, -history:].copy()
        window[:, -1] = row
        expected = careful.margins(ASSETS, window, dates[:, -history:], as_of=as_of)
        state = incremental.stream(inputs[:, :-1], dates[:, :-1], as_of=dates[0, -2])
        before = state.sums.copy(), state.rows.copy()
        got = state.margins(ASSETS, row, dates[:, -1], as_of=as_of)
        _same_margins(got, expected)
        bad = ~np.isfinite(row).all(axis=1)
        assert got.fail_safe[bad].all() and np.array_equal(state.sums[bad], before[0][bad])
        assert np.array_equal(state.rows[bad], before[1][bad]) and not np.array_equal(state.rows[~bad], before[1][~bad])


@pytest.mark.parametrize("factor", [6.0, 0.05], ids=["violent", "quiet"])
def test_an_incomplete_day_is_priced_at_the_larger_of_its_readings_in_both_paths(bundle, calibration, batch, factor):
    """An older incomplete day (bars missing: partial measures) is read as the model reads it (missing)
    and as complete, and the margin takes the larger forecast; not a fail-safe (the model trained on such
    days); the incremental state gives the same figures. A violent partial day read whole raises the
    forecast; a quiet one (session 26's mutation audit: only the violent case was tested) would lower it, and
    the model's own reading is kept."""
    inputs, dates, as_of = batch
    inputs = inputs.copy()
    complete = INPUT_COLUMNS.index("complete")
    inputs[0, -8, complete] = 0.0
    inputs[0, -8, [INPUT_COLUMNS.index(c) for c in ("rv", "bv", "parkinson", "rogers_satchell")]] *= factor
    as_complete = inputs.copy()
    as_complete[0, -8, complete] = 1.0
    careful = vs.load(bundle, calibration=calibration, assets=ASSETS)
    history = careful.history_days
    got = careful.margins(ASSETS, inputs[:, -history:], dates[:, -history:], as_of=as_of)
    readings = [careful.forecast_daily(x[0, -history:], dates[0, -history:], as_of=as_of) for x in (inputs, as_complete)]
    assert (readings[1].variance[0] > readings[0].variance[0]) == (factor > 1)  # what the part it saw says
    np.testing.assert_allclose(got.forecasts.variance[0], max(r.variance[0] for r in readings), rtol=1e-12)
    np.testing.assert_allclose(got.forecasts.var[0], np.fmax(readings[0].var[0], readings[1].var[0]), rtol=1e-12)
    assert not got.fail_safe[1:].any() and (factor < 1 or not got.fail_safe.any())  # a quiet day may be doubtful
    state = vs.load(bundle, calibration=calibration, assets=ASSETS).stream(inputs[:, :-1], dates[:, :-1],
                                                                           as_of=dates[0, -2])
    _same_margins(state.margins(ASSETS, inputs[:, -1], dates[:, -1], as_of=as_of), got)


@pytest.mark.parametrize("own_partial", [False, True])
def test_a_refused_row_leaves_the_other_assets_incomplete_days_read_whole_in_the_stream(bundle, calibration, batch,
                                                                                      own_partial):
    """Session 29's red team: with one asset's new row refused, the stream read the others' incomplete days by
    that asset's rows (a variable reused): their violent partial days were not read whole (margins 0.95x the
    careful path's, unflagged), or, where the refused asset had one too, numpy's broadcast error."""
    inputs, dates, as_of = batch
    inputs = inputs.copy()
    measures = [INPUT_COLUMNS.index(c) for c in ("rv", "bv", "parkinson", "rogers_satchell")]
    for k in (1, 2):
        inputs[k, -8, INPUT_COLUMNS.index("complete")] = 0.0
        inputs[k, -8, measures] *= 6.0
    if own_partial:
        inputs[0, -20, INPUT_COLUMNS.index("complete")] = 0.0
    row = inputs[:, -1].copy()
    row[0, INPUT_COLUMNS.index("rv")] = np.nan
    careful = vs.load(bundle, calibration=calibration, assets=ASSETS)
    history = careful.history_days
    window = inputs[:, -history:].copy()
    window[:, -1] = row
    expected = careful.margins(ASSETS, window, dates[:, -history:], as_of=as_of)
    state = vs.load(bundle, calibration=calibration, assets=ASSETS).stream(inputs[:, :-1], dates[:, :-1],
                                                                           as_of=dates[0, -2])
    got = state.margins(ASSETS, row, dates[:, -1], as_of=as_of)
    _same_margins(got, expected)
    assert got.fail_safe[0].all() and not got.fail_safe[1:].any()


def test_history_doubts_flag_the_origins_a_service_would_flag(runtime, batch):
    """`Runtime.history_doubts` (the `doubt` column of `volmargin score`) flags exactly the origins whose
    window `Runtime.margins` serves flagged as doubtful, and names the doubtful row's date."""
    inputs, dates, as_of = batch
    history = inputs[0].copy()
    spike, resent = 125, 140  # windows ending after the calibration set's first valid day (2022-04-01)
    history[spike, INPUT_COLUMNS.index("volume")] *= 1e7
    history[resent] = history[resent - 1]
    doubts = runtime.history_doubts(history, dates[0])
    n = runtime.history_days
    assert len(doubts) == len(history) - n + 1 and runtime.history_doubts(history, dates[0], chunk=7) == doubts
    for start in (spike - n, spike - n + 1, resent - n + 1, len(history) - n):
        window = slice(start, start + n)
        served = runtime.margins(ASSETS[:1], history[None, window], dates[:1, window], as_of=dates[0, window][-1] + 1)
        assert bool(doubts[start]) == served.reason[0, 0].startswith("doubtful input"), start
    assert f"the row of {dates[0, spike]}" in doubts[spike - n + 1]
    assert [bool(d) for d in doubts] == [start + n > spike for start in range(len(doubts))]  # resent > spike


def test_margins_cli_is_what_the_runtime_publishes_day_by_day(bundle, calibration, panel, runtime, tmp_path, capsys):
    """`volmargin margins` chains `Runtime.margins` over the days (yesterday's margins as `previous`), as
    a service calling it once a day publishes them; `--latest` is one first margin per asset."""
    from volmargin.cli import main
    from volmargin.data import write_synthetic_csv

    files = [str(p) for p in write_synthetic_csv(tmp_path / "data", n_assets=3, days=500, seed=4)]  # the panel's bars
    start = panel[ASSETS[0]].index[-30]
    args = ["margins", "--bundle", str(bundle), "--data", *files, "--quiet"]  # the set beside the bundle by default
    assert main([*args, "--start", str(start.date()), "--out", str(tmp_path / "m.parquet")]) == 0
    said = capsys.readouterr().out
    assert "fail-safe (column `reason`)" in said
    # days before the set's as_of are its replay, not the set a service held then (session 30's red team)
    as_of = pd.Timestamp(json.loads(calibration.read_text())["parameters"]["as_of"])
    assert as_of > start and f"before the set's as_of {as_of:%Y-%m-%d} are priced with the set as of then" in said
    served = pd.read_parquet(tmp_path / "m.parquet")
    inputs, dates = _arrays(panel[ASSETS[0]])
    n, first = runtime.history_days, len(inputs) - 30
    previous, expected = None, []
    for end in range(first, len(inputs)):
        out = runtime.margins(ASSETS[:1], inputs[None, end - n + 1:end + 1], dates[None, end - n + 1:end + 1],
                              as_of=dates[end] + 1, previous=previous)
        previous = out.initial
        expected += [r["initial_margin"] for r in out.rows()]
    mine = served[served["asset"] == ASSETS[0]]
    assert len(mine) == 60 and mine["origin"].iloc[0] == start and mine["side"].tolist()[:2] == ["long", "short"]
    assert not mine["fail_safe"].any() and mine["initial_margin"].nunique() > 10  # the rule, day by day
    assert mine["initial_margin"].tolist() == pytest.approx(expected, rel=1e-12)
    assert main([*args, "--latest", "--out", str(tmp_path / "last.csv")]) == 0
    last = pd.read_csv(tmp_path / "last.csv")
    alone = runtime.margins(ASSETS[:1], inputs[None, -n:], dates[None, -n:], as_of=dates[-1] + 1)
    assert len(last) == 2 * len(ASSETS)
    assert last[last["asset"] == ASSETS[0]]["initial_margin"].tolist() == pytest.approx(alone.initial[0].tolist())
    assert main(["margins", "--bundle", str(bundle), "--calibration", str(tmp_path / "none.json"), "--data", *files,
                 "--out", str(tmp_path / "x.csv")]) == 2
    assert "no calibration set at" in capsys.readouterr().err
    last_day = panel[ASSETS[0]].index[-1].date()
    assert main([*args, "--start", "2099-01-01", "--out", str(tmp_path / "late.csv")]) == 2
    assert f"--start 2099-01-01 is after the data's last day {last_day}" in capsys.readouterr().err


def test_margins_cli_prices_a_listing_younger_than_the_window_fail_safe_and_names_it(bundle, calibration, runtime,
                                                                                     panel, tmp_path, capsys):
    """`--latest` (what a service publishes today) prices every asset: one with fewer days than the bundle's
    window gets the runtime's fail-safe margin and says why; a replay, which starts at a full window, and
    `volmargin score` name the assets they could not cover instead of dropping them silently."""
    from volmargin.cli import main
    from volmargin.data import write_synthetic_csv

    files = sorted(str(p) for p in write_synthetic_csv(tmp_path / "data", n_assets=3, days=500, seed=4))
    assert ASSETS[0] in files[0]
    young = pd.read_csv(files[0]).tail(24 * (runtime.history_days - 20))  # the newest days only
    young.to_csv(files[0], index=False)
    args = ["--bundle", str(bundle), "--data", *files, "--quiet"]
    assert main(["margins", *args, "--latest", "--out", str(tmp_path / "last.csv")]) == 0
    last = pd.read_csv(tmp_path / "last.csv").set_index(["asset", "side"])
    assert len(last) == 2 * len(ASSETS) and last.loc[ASSETS[0], "fail_safe"].all()
    assert last.loc[ASSETS[0], "reason"].str.contains(f"the model needs {runtime.history_days}").all()
    assert not last.drop(index=ASSETS[0])["fail_safe"].any()
    capsys.readouterr()
    start = panel[ASSETS[1]].index[-30].date()
    assert main(["margins", *args, "--start", str(start), "--out", str(tmp_path / "m.csv")]) == 0
    assert f"no margin for 1 asset(s) with less history than {bundle} needs: {ASSETS[0]}" in capsys.readouterr().out
    assert main(["score", *args, "--out", str(tmp_path / "s.csv")]) == 0
    assert f"no forecast for 1 asset(s) with less history than {bundle} needs: {ASSETS[0]}" in capsys.readouterr().out



def test_calibrate_cli_says_which_end_of_its_window_is_wrong(bundle, panel, tmp_path, capsys):
    from volmargin.cli import main
    from volmargin.data import write_synthetic_csv

    dated = _copy(bundle, tmp_path / "gbm" / "1")
    manifest = json.loads((dated / MANIFEST).read_text())
    train_end = str(panel[ASSETS[0]].index[250].date())  # what `volmargin export` records; this test bundle lacks it
    (dated / MANIFEST).write_text(json.dumps({**manifest, "training": {"train_end": train_end}}))
    files = [str(p) for p in write_synthetic_csv(tmp_path / "data", n_assets=3, days=500, seed=4)]
    args = ["calibrate", "--bundle", str(dated), "--data", *files, "--out", str(tmp_path / "c.json"), "--no-tracking"]
    assert main([*args, "--validation-start", "2019-01-01"]) == 2
    err = capsys.readouterr().err
    assert f"validation start 2019-01-01 leaves 0 days to calibrate on after the bundle's training end {train_end}" in err
    assert main([*args, "--validation-start", "2099-01-01"]) == 2
    assert "validation start 2099-01-01 is not before the data's last origin" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


def test_a_batch_of_no_asset_a_repeated_name_or_an_unreadable_as_of_is_a_typed_error(runtime, batch):
    """(session 23's serving campaign) an empty batch aborted the process inside ONNX Runtime; a repeated
    name priced one asset's rows with the other's terms; 'yesterday' or 20260101 as as_of raised numpy's
    ValueError or read as a count of microseconds."""
    inputs, dates, as_of = batch
    with pytest.raises(vs.InputShapeError, match="hold no asset or no day"):
        runtime.forecast_daily(inputs[:0], dates[:0], as_of=as_of)
    with pytest.raises(vs.InputShapeError, match="hold no asset or no day"):
        runtime.stream(inputs[:0], dates[:0], as_of=as_of)
    with pytest.raises(vs.InputShapeError, match=f"asset {ASSETS[0]!r} appears twice"):
        runtime.margins([ASSETS[0], ASSETS[0], ASSETS[2]], inputs, dates, as_of=as_of)
    with pytest.raises(vs.InputDtypeError, match="asset names must be non-empty strings"):
        runtime.margins(["", ASSETS[1], ASSETS[2]], inputs, dates, as_of=as_of)
    for bad in ("yesterday", 20260101, float("nan")):
        with pytest.raises(vs.InputDtypeError, match="as_of must be a date or instant"):
            runtime.forecast_daily(inputs, dates, as_of=bad)
    with pytest.raises(vs.InputShapeError, match=r"dates \(2, 150\) must have shape \(150,\) or \(3, 150\)"):
        runtime.forecast_daily(inputs, dates[:2], as_of=as_of)  # was numpy's broadcast error in the features
    with pytest.raises(vs.InputShapeError, match="inputs must have one entry per asset"):
        runtime.margins(ASSETS, 1.0, dates, as_of=as_of)  # was a TypeError


def test_a_row_without_a_date_leaves_its_asset_fail_safe_and_the_others_as_they_were(runtime, batch):
    inputs, dates, as_of = batch
    clean = runtime.margins(ASSETS, inputs, dates, as_of=as_of)
    spoiled = np.broadcast_to(dates, inputs.shape[:2]).copy()
    spoiled[1, -1] = np.datetime64("NaT")  # raised numpy's ValueError for the whole batch
    served = runtime.margins(ASSETS, inputs, spoiled, as_of=as_of)
    assert served.fail_safe[1].all() and not served.fail_safe[[0, 2]].any()
    assert (served.initial[1] >= clean.initial[1]).all()
    assert np.array_equal(served.initial[[0, 2]], clean.initial[[0, 2]])


def test_a_served_margin_moves_one_days_speed_limit_from_previous(bundle, calibration, batch, clean, parameters):
    """`previous` half / 1.6 x today's clean margin: the up limit (50%) or down limit (20%) of ONE day binds
    (the existing test's previous = 0.8 x clean binds neither, so a rule run with days=2 went unseen). A fresh
    runtime: one that priced the day before chains from that too (`Runtime._chained`)."""
    inputs, dates, as_of = batch
    runtime = vs.load(bundle, calibration=calibration, assets=ASSETS)
    floors = np.array([[_floor_rate(_record(parameters, a, s)) for s in SIDES] for a in ASSETS])
    for factor, bound in ((0.5, 1.5), (1.6, 0.8)):  # max_up = 0.5, max_down = 0.2 (POLICY)
        previous = factor * clean.initial
        served = runtime.margins(ASSETS, inputs, dates, as_of=as_of, previous=previous)
        limited = np.maximum(bound * previous, floors)
        binding = limited > floors * (1 + 1e-9)  # where the floor does not hide the speed limit
        assert binding.sum() >= 2 and not served.fail_safe.any()
        np.testing.assert_allclose(served.initial[binding], limited[binding], rtol=1e-12)


def test_a_bundle_is_calibrated_on_its_out_of_sample_forecasts_only(bundle, panel, tmp_path):
    """`calibrate_bundle` reads the forecasts made after the bundle's training end only: rows up to that day,
    however wrong, change nothing (in-sample forecasts fit the training data and would understate the scale)."""
    from volmargin.batch import score_panel
    from volmargin.calibration.bundle import calibrate_bundle

    dated = _copy(bundle, tmp_path / "gbm" / "1")
    manifest = json.loads((dated / MANIFEST).read_text())
    train_end = panel[ASSETS[0]].index[250]
    (dated / MANIFEST).write_text(json.dumps({**manifest, "training": {"train_end": str(train_end.date())}}))
    scored = score_panel(dated, panel, progress=False)
    spoiled = scored.copy()
    inside = spoiled["origin"] <= train_end + pd.Timedelta(hours=23)
    risk = [c for c in spoiled if c == "variance" or c.startswith(("var", "es"))]
    spoiled.loc[inside, risk] *= 0.01
    assert inside.sum() >= 3 * 30
    start = train_end + pd.Timedelta(days=200)
    clean, table, _ = calibrate_bundle(dated, scored, panel, POLICY, start)
    again, _, _ = calibrate_bundle(dated, spoiled, panel, POLICY, start)
    assert again["records"] == clean["records"]
    days = table.loc[table["asset"].isin(ASSETS), "calibration_days"]  # per asset (the pooled rows add them up)
    assert (days > 0).all() and (days <= 199).all()
