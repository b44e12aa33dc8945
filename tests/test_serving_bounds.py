"""Bundle manifests and calibration sets just past their bounds, the batch state and `daily_inputs` on a day
not yet over, `forecast_features` on non-finite inputs (session 26's mutation audit)."""
from __future__ import annotations

import os

import numpy as np
import pytest
from reliability_fixtures import ASSETS, build, copy_bundle, edit_manifest, resealed_set

import volmargin_serving as vs
import volmargin_serving.calibration as vc
from volmargin_serving.bundle import MANIFEST
from volmargin_serving.features import INPUT_COLUMNS
from volmargin_serving.outputs import measure_name


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return build(tmp_path_factory.mktemp("mutF"))


# ---------------------------------------------------------------- manifest values checked only far from their bounds


def _scale_with_a_zero(m):
    m["features"]["scale"][0] = 0.0  # right length, one zero: (f - mean) / 0


def _spec_value_zero(m):
    key = next(k for k, v in m["features"]["spec"].items() if isinstance(v, int) and k != "long_days")
    m["features"]["spec"][key] = 0


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(levels=[0.3, 0.99]), "levels"),  # a 30% 'VaR' is a gain, not a loss
    (lambda m: m.update(horizon=400), "horizon"),
    (lambda m: m["features"].update(inputs=list(reversed(INPUT_COLUMNS))), "features.inputs"),
    (_scale_with_a_zero, "features.scale"),
    (_spec_value_zero, "features.spec."),
    (lambda m: m.update(training={"bar_seconds": [172_800]}), "training.bar_seconds"),
    (lambda m: m["onnx"].update(inputs=[]), "onnx.inputs"),
    (lambda m: m["files"].update({MANIFEST: "0" * 64}), "files"),
])
def test_manifest_values_just_past_their_bounds_are_refused(served, tmp_path, edit, message):
    with pytest.raises(vs.BundleError, match=message):
        vs.load(edit_manifest(served.bundle, tmp_path / "edited", edit))


def test_a_bundle_file_that_is_a_symlink_is_refused(served, tmp_path):
    """A listed file may not point outside the bundle: its content could change after the checksum."""
    folder = copy_bundle(served.bundle, tmp_path / "linked")
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((folder / "model.onnx").read_bytes())
    (folder / "model.onnx").unlink()
    os.symlink(outside, folder / "model.onnx")  # same bytes: the SHA-256 matches
    with pytest.raises(vs.ChecksumError, match="model.onnx is a symbolic link"):
        vs.load(folder)


def test_a_manifest_that_is_a_symlink_is_refused_by_the_runtime_and_the_batch_commands(served, tmp_path):
    """A symbolic manifest loaded (every file it lists had to be regular) and `score` / `margins` stopped with an
    internal KeyError (their copy of the bundle skipped it): refused in one line everywhere (session 31)."""
    from volmargin.batch import bundle_files

    folder = copy_bundle(served.bundle, tmp_path / "linked")
    outside = tmp_path / "outside.json"
    outside.write_bytes((folder / MANIFEST).read_bytes())
    (folder / MANIFEST).unlink()
    os.symlink(outside, folder / MANIFEST)
    for call in (lambda: vs.load(folder), lambda: bundle_files(folder)):
        with pytest.raises(vs.BundleError, match=r"manifest.json: is a symbolic link"):
            call()


# ---------------------------------------------------------------- calibration sets resealed past a rule


def _no_min_rate_and_a_low_margin(parameters):
    parameters["policy"].pop("min_rate", None)  # a set written before min_rate existed: DEFAULT_MIN_RATE (1%)
    parameters["records"][0].update(initial_margin=0.008, maintenance_margin=0.006)


def _scale_above_bounds(parameters):
    parameters["records"][0]["scale"] = 2 * parameters["policy"]["scale_bounds"][1]


@pytest.mark.parametrize("change, message", [
    (_no_min_rate_and_a_low_margin, "initial_margin = 0.008 is below the policy's min_rate 0.01"),
    (_scale_above_bounds, "is outside the policy's scale_bounds"),
    (lambda p: p["policy"].update(risk="var50"), "policy.risk = 'var50'"),  # a measure the bundle has not
])
def test_a_resealed_set_past_a_sanity_rule_is_refused(served, tmp_path, change, message):
    with pytest.raises(vs.CalibrationError, match=message):
        vs.load(served.bundle, calibration=resealed_set(served, tmp_path, change))


@pytest.mark.parametrize("change, message", [
    (lambda p: p["records"][0].update(floor=-0.1), "floor = -0.1 is not a non-negative"),
    (lambda p: p["policy"].update(maintenance_fraction=1.0), "policy.maintenance_fraction"),
])
def test_a_resealed_set_with_a_negative_floor_or_a_full_maintenance_fraction_is_refused(served, tmp_path, change,
                                                                                       message):
    with pytest.raises(vs.CalibrationError, match=message):
        vs.load(served.bundle, calibration=resealed_set(served, tmp_path, change))


# ---------------------------------------------------------------- the batch state and days not yet over


def test_the_batch_state_refuses_a_row_of_a_day_not_yet_over(served):
    """`StreamState.update` (a batch) refuses a row dated after as_of, as `AssetState.update` and the careful
    path do: a day not yet over holds part of its moves, and read as complete it lowers the forecast."""
    runtime = vs.load(served.bundle, calibration=served.calibration)
    state = runtime.stream(served.inputs[:, :-1], served.dates[:, :-1], as_of=served.as_of - 1)
    before = state.day.copy()
    out, errors = state.update(served.inputs[:, -1], served.dates[:, -1], as_of=served.as_of - 1)
    assert all(isinstance(error, vs.FutureInputError) for error in errors), errors
    assert np.isnan(out.variance).all() and (state.day == before).all()
    margins = runtime.stream(served.inputs[:, :-1], served.dates[:, :-1], as_of=served.as_of - 1).margins(
        ASSETS, served.inputs[:, -1], served.dates[:, -1], as_of=served.as_of - 1)
    assert margins.fail_safe.all() and all("FutureInputError" in r for r in margins.reason.ravel())


# ---------------------------------------------------------------- forecast_features: a bad value is a typed error


def test_forecast_features_refuses_an_infinite_feature_and_a_non_finite_level(served):
    runtime = vs.load(served.bundle)
    features = np.zeros((2, runtime.window, len(runtime.mean)))
    level = np.full(2, np.log(1e-4))
    assert np.isfinite(runtime.forecast_features(features, level).variance).all()
    infinite = features.copy()
    infinite[1, -1, 0] = np.inf
    with pytest.raises(vs.NonFiniteInputError, match="features"):
        runtime.forecast_features(infinite, level)
    for bad in (np.nan, np.inf):
        with pytest.raises(vs.NonFiniteInputError, match="level"):
            runtime.forecast_features(features, np.array([level[0], bad]))


# ---------------------------------------------------------------- daily_inputs: the day of as_of is not over


def test_daily_inputs_leave_out_the_day_of_as_of_even_with_most_of_its_bars(served):
    """At 22:30 the day holds 23 hourly bars, more than min_bars: read as a complete day, its partial moves
    would enter the forecast (and pass check_dates, being dated as_of's own day)."""
    runtime = vs.load(served.bundle)
    stamps = np.arange(np.datetime64("2024-01-01T00:00"), np.datetime64("2024-01-10T23:00"), np.timedelta64(1, "h"))
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(stamps))))
    open_ = np.r_[100.0, close[:-1]]
    ohlcv = np.column_stack([open_, np.maximum(open_, close) * 1.002, np.minimum(open_, close) * 0.998, close,
                             np.full(len(stamps), 10.0)])
    inputs, dates = runtime.daily_inputs(stamps, ohlcv, as_of=np.datetime64("2024-01-10T22:30"))
    assert dates[-1] == np.datetime64("2024-01-09") and len(dates) == len(inputs)


# --- calibration records: the 0.5% hard minimum as a number, the in-force window's ends (session 27)

_MINIMAL_MANIFEST = {"horizon": 1, "levels": [0.99]}


def _minimal_params(**record) -> dict:
    base = {"model": "m", "asset": "a", "initial_margin": 0.05, "maintenance_margin": 0.03, "haircut": 0.1,
            "scale": 1.0, "floor": 0.01, "valid_from": "2024-01-01T00:00:00+00:00", "valid_to": None}
    records = [{**base, "side": side, **record} for side in ("long", "short")]
    policy = {"risk": measure_name("var", 0.99), "haircut_risk": None, "maintenance_fraction": 0.75, "buffer": None,
              "max_up": None, "max_down": None, "liquidation_days": None}
    return {"model": "m", "horizon": 1, "policy": policy, "records": records}


def test_the_minimal_parameter_set_passes():
    vc.check_parameters(_minimal_params(), _MINIMAL_MANIFEST, ["a"])


@pytest.mark.parametrize("min_rate", [0.004, 0.002])  # literal: below the documented 0.5% hard floor (200x leverage)
def test_a_policy_min_rate_below_half_a_percent_is_refused(min_rate):
    parameters = _minimal_params()
    parameters["policy"]["min_rate"] = min_rate
    with pytest.raises(vs.CalibrationError, match="policy.min_rate"):
        vc.check_parameters(parameters, _MINIMAL_MANIFEST)


def _set_of(parameters: dict) -> vc.CalibrationSet:
    windows: dict = {}
    for r in parameters["records"]:
        end = None if r.get("valid_to") is None else vc.instant(r["valid_to"])
        windows.setdefault((r["asset"], r["side"]), []).append((vc.instant(r["valid_from"]), end, r))
    return vc.CalibrationSet(None, "v", parameters, windows)


def test_a_record_is_in_force_from_valid_from_up_to_but_excluding_valid_to():
    s = _set_of(_minimal_params(valid_to="2024-02-01T00:00:00+00:00"))
    assert s.record("a", "long", vc.instant("2024-01-01T00:00:00+00:00"))[1] == ""
    assert s.record("a", "long", vc.instant("2024-01-31T23:59:59+00:00"))[1] == ""
    record, issue = s.record("a", "long", vc.instant("2024-02-01T00:00:00+00:00"))
    assert record is not None and "no parameters in force" in issue


def test_first_in_force_is_the_earliest_start():
    parameters = _minimal_params()
    parameters["records"][1]["valid_from"] = "2024-03-01T00:00:00+00:00"
    assert _set_of(parameters).first_in_force == vc.instant("2024-01-01T00:00:00+00:00")
