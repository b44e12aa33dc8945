"""The serving fast path (`volmargin.serving_graph`, a bundle's `fast.onnx`): its features equal the numpy
core's on real bars (bit for bit, or one float32 step where ONNX Runtime's log and numpy's differ by an ulp) (and training's), its checks flag exactly what the careful path refuses,
and its forecasts equal the careful path's.

Tiny nn and gbm models are trained once on a synthetic panel (tests/serving_fixtures.py).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pandas as pd
import pytest
from serving_fixtures import TINY, bundles, panel  # noqa: F401 (fixtures)

import volmargin_serving as vs
from volmargin.data import load_bars
from volmargin.export import FAST_FILE, session
from volmargin.features.learned import CORE_COLUMNS, INPUT_COLUMNS, feature_frame
from volmargin.features.realized import daily_measures
from volmargin.serving_graph import fast_graph, feature_graph, parity_windows
from volmargin_serving.bundle import MANIFEST, sha256
from volmargin_serving.features import FeatureSpec, compute_features, standardize
from volmargin_serving.runtime import FAST_DISABLED_OPTIMIZERS

REAL_FILES = ("binance_btcusdt_1h.csv.gz", "binance_dogeusdt_1h.csv.gz", "binance_solusdt_1h.csv.gz")


@pytest.fixture(scope="module")
def real_panel(shared_data) -> dict[str, pd.DataFrame]:
    paths = [shared_data / name for name in REAL_FILES if (shared_data / name).is_file()]
    if not paths:
        pytest.skip(f"none of {REAL_FILES} in {shared_data}")
    return {path.name: daily_measures(load_bars(path).loc["2020-06-01":"2023-06-30"]) for path in paths}


def _core(daily: np.ndarray, days: np.ndarray, spec: FeatureSpec, window: int, mean, scale):
    """The numpy core on the same rows as the graph: standardized features and level of the last `window` rows."""
    columns = dict(zip(INPUT_COLUMNS, np.moveaxis(daily, -1, 0)))
    columns["complete"] = columns["complete"] > 0.5
    features, level = compute_features(columns, (days + 3) % 7, spec, last=window)
    return standardize(features, mean, scale), level


def _inputs(daily: pd.DataFrame) -> np.ndarray:
    return np.column_stack([daily[c].to_numpy(dtype=float) for c in INPUT_COLUMNS])


def _asset_windows(daily: pd.DataFrame, rows: int, step: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows of `rows` consecutive valid days ending every `step` days: inputs, days and end rows."""
    x, days = _inputs(daily), daily.index.tz_convert(None).to_numpy().astype("datetime64[D]").astype(np.int64)
    ends = [end for end in range(rows - 1, len(x), step)
            if days[end] - days[end - rows + 1] == rows - 1 and np.isfinite(x[end - rows + 1:end + 1]).all()]
    return (np.stack([x[e - rows + 1:e + 1] for e in ends]), np.stack([days[e - rows + 1:e + 1] for e in ends]),
            np.array(ends))


@pytest.mark.parametrize("window", [1, 8, 32])
def test_graph_features_equal_numpy_and_training_on_real_bars(real_panel, window):
    """Training's features (`feature_frame`, the numpy core over each asset's whole history) and the fast
    graph's, standardized as the model reads them: the graph equals the core on the same rows within one
    float32 step (ORT's Log and numpy's differ in the last bit of about a fifth of real RVs, which can move a
    standardized feature across a float32 rounding boundary),
    and training up to the rounding of its longer running sums. Every core column, the long-run level too."""
    spec = FeatureSpec(long_days=121)
    rows = spec.history_days(window)
    mean, scale = np.linspace(-1, 1, len(CORE_COLUMNS)), np.linspace(0.5, 2, len(CORE_COLUMNS))
    graph = session(feature_graph(spec, mean, scale, rows, window), FAST_DISABLED_OPTIMIZERS)
    for daily in real_panel.values():
        x, days, ends = _asset_windows(daily, rows)
        ok, features, level = graph.run(None, {"daily": x, "days": days,
                                               "bounds": np.array([days[:, -1].min(), days[:, -1].max()])})
        assert ok.all() and len(ends) > 100
        expected, expected_level = _core(x, days, spec, window, mean, scale)
        np.testing.assert_array_max_ulp(features, expected, maxulp=1)  # float32
        assert (features == expected).mean() > 0.9999
        np.testing.assert_allclose(level[..., 0], expected_level, rtol=1e-14)  # ORT's and numpy's log may differ by an ulp
        assert (expected == 0).mean() < 0.2  # real rows: not a comparison of missing features
        trained = standardize(feature_frame(daily, spec)[list(CORE_COLUMNS)].to_numpy(), mean, scale)
        served = trained[ends[:, None] + np.arange(1 - window, 1)]
        np.testing.assert_allclose(features, served, rtol=1e-6, atol=1e-6)


def _windows(panel: dict, runtime: vs.Runtime) -> tuple[np.ndarray, np.ndarray]:
    daily, days = parity_windows(panel, runtime.history_days, count=64)
    return daily, days.astype("datetime64[D]")


@pytest.mark.parametrize("name", [*TINY, "gbm_level"])
def test_fast_path_forecasts_equal_the_careful_path(name, bundles, panel):
    runtime, careful = vs.load(bundles[name]), vs.load(bundles[name], fast=False)
    assert runtime._fast is not None and careful._fast is None
    manifest = json.loads((bundles[name] / MANIFEST).read_text())
    assert manifest["fast"]["file"] == FAST_FILE and manifest["fast"]["parity"]["max_error"] <= 1e-5
    daily, dates = _windows(panel, runtime)
    as_of = dates[:, -1].max()
    loose = vs.load(bundles[name], max_age_days=400)  # windows end on different days
    fast, slow = loose.forecast_daily(daily, dates, as_of=as_of), vs.load(
        bundles[name], max_age_days=400, fast=False).forecast_daily(daily, dates, as_of=as_of)
    for measure in ("variance", "var", "es"):  # ORT's exp may differ from numpy's by an ulp
        np.testing.assert_allclose(getattr(fast, measure), getattr(slow, measure), rtol=1e-12)
    with pytest.raises(vs.InputShapeError):  # the careful path's shape errors stand
        runtime.forecast_daily(daily[0], dates[:1], as_of=dates[0, -1])
    single = runtime.forecast_daily(daily[0], dates[0], as_of=dates[0, -1])  # one asset, 1-d dates
    np.testing.assert_allclose(single.var, careful.forecast_daily(daily[0], dates[0], as_of=dates[0, -1]).var, rtol=1e-12)


CORRUPTIONS = (np.nan, np.inf, -np.inf, -1.0, -1e-300, 0.0, 0.5, 2.0, 1e300, -1e300, 1e-300)


def test_fast_checks_flag_exactly_what_the_careful_path_refuses(bundles, panel):
    """Random corruptions of values and dates: the graph's `ok` is True exactly where the careful path
    forecasts, and where it is False the runtime raises the careful path's typed error."""
    runtime = vs.load(bundles["gbm"])
    daily, dates = _windows(panel, runtime)
    rng = np.random.default_rng(0)
    outcomes = set()
    for trial in range(300):
        k = trial % len(daily)
        x, d = daily[k].copy(), dates[k].copy()
        as_of = d[-1] + np.timedelta64(int(rng.integers(-1, 3)), "D")
        if trial % 3 == 0:  # a date moved: duplicate, gap, unsorted
            d[rng.integers(len(d))] += np.timedelta64(int(rng.choice([-1, 1, 2])), "D")
        else:
            x[rng.integers(len(x)), rng.integers(len(INPUT_COLUMNS))] = rng.choice(CORRUPTIONS)
        if trial % 7 == 0:  # a return at and just past the bound ret^2 <= 1440 rv
            x[-1, 0] = np.sqrt(1440 * x[-1, 1]) * rng.choice([1.0, 1 + 1e-8])
        ok = runtime._run_fast(x[None], d.astype(np.int64)[None], (as_of - runtime.max_age).astype("datetime64[D]").astype(np.int64),
                               as_of.astype("datetime64[D]").astype(np.int64))[0]
        try:
            expected = runtime._forecast_daily(x, d, as_of)
            accepted = True
        except vs.InputError as exc:
            accepted, error = False, type(exc)
        assert bool(ok[0]) == accepted, (trial, x, d, as_of)
        if not accepted:
            with pytest.raises(error):
                runtime.forecast_daily(x, d, as_of=as_of)
        else:
            np.testing.assert_allclose(runtime.forecast_daily(x, d, as_of=as_of).var, expected.var, rtol=1e-12)
        outcomes.add(accepted)
    assert outcomes == {True, False}


def test_a_tampered_fast_graph_or_manifest_entry_is_refused(bundles, tmp_path):
    bundle = tmp_path / "copy"
    bundle.mkdir()
    for path in bundles["gbm"].iterdir():
        (bundle / path.name).write_bytes(path.read_bytes())
    (bundle / FAST_FILE).write_bytes((bundle / FAST_FILE).read_bytes() + b"\0")
    with pytest.raises(vs.ChecksumError):
        vs.load(bundle)
    manifest = json.loads((bundle / MANIFEST).read_text())
    (bundle / FAST_FILE).write_bytes((bundles["gbm"] / FAST_FILE).read_bytes())
    for bad in ("../fast.onnx", "model.onnx", "absent.onnx"):
        manifest["fast"]["file"] = bad
        (bundle / MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(vs.BundleError, match="fast.file"):
            vs.load(bundle)
    manifest["fast"]["file"] = FAST_FILE
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    vs.load(bundle)
    # a fast graph that computes something else, with a matching checksum: the golden self-test refuses it
    features = manifest["features"]
    wrong = fast_graph(onnx.load(bundle / "model.onnx"), FeatureSpec(**features["spec"]), np.array(features["mean"]),
                       np.array(features["scale"]) * 1.5, features["history_days"], features["window"],
                       manifest["horizon"], len(manifest["levels"]))
    onnx.save_model(wrong, bundle / FAST_FILE)
    manifest["files"][FAST_FILE] = sha256(bundle / FAST_FILE)
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(vs.SelfTestError, match="fast path"):
        vs.load(bundle)
    assert vs.load(bundle, fast=False)._fast is None  # the careful path alone still serves


def test_only_the_blend_reads_the_long_run_level_and_its_manifest_says_so(bundles, tmp_path):
    """The blend's bundle reads the long-run level (the last core column) and so needs long_days of inputs; the
    GBM's and the GRU's do not and keep their history; a manifest whose long_days disagrees with its names is
    refused, and one written before the field existed (no long_days key) still loads."""
    import shutil

    manifests = {name: json.loads((bundles[name] / MANIFEST).read_text()) for name in TINY}
    blend = manifests["blend"]["features"]
    assert blend["names"][-1] == "long_level" and blend["spec"]["long_days"] == 121
    assert blend["history_days"] == blend["window"] + 121 - 1 == vs.load(bundles["blend"]).history_days
    for name in ("gbm", "nn"):
        features = manifests[name]["features"]
        assert "long_level" not in features["names"] and features["spec"]["long_days"] == 0
        assert features["history_days"] == features["window"] + 90 - 1  # liquidity_days, as before

    def edited(name: str, edit) -> str:
        folder = tmp_path / f"{name}-{len(list(tmp_path.iterdir()))}"
        shutil.copytree(bundles[name], folder)
        manifest = json.loads((folder / MANIFEST).read_text())
        edit(manifest["features"]["spec"])
        (folder / MANIFEST).write_text(json.dumps(manifest))
        return folder

    with pytest.raises(vs.BundleError, match="features.spec.long_days: 0"):
        vs.load(edited("blend", lambda spec: spec.update(long_days=0)))
    with pytest.raises(vs.BundleError, match="features.spec.long_days: 121"):
        vs.load(edited("gbm", lambda spec: spec.update(long_days=121)))
    assert vs.load(edited("gbm", lambda spec: spec.pop("long_days"))).history_days == manifests["gbm"]["features"]["history_days"]
