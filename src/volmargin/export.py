"""Export a trained learned forecaster to a self-describing, immutable model bundle.

A bundle is `models/<name>/<version>/` with:
- `model.onnx`: one file, fixed opset, dynamic batch axis. Input `features`, float32 (batch, window,
  n_features): the *standardized* features (the standardisation lives once, in
  `volmargin_serving.features.standardize`, with the statistics in the manifest). Output `raw`, float32
  (batch, 1 + 4 n_levels) in the layout of `volmargin.models.neural.output_columns`; the serving
  runtime's `postprocess` turns it into variance, VaR and ES, as training does.
- `golden.npz`: real daily inputs of a few assets and the outputs the training library computes from
  them; the runtime re-runs them at every load (self-test).
- `fast.onnx` (models without the IV features): the serving fast path, `model.onnx` with the input
  checks, features and standardisation merged in front and the post-processing behind
  (`volmargin.serving_graph`); checked against the careful numpy path on real windows at export
  (manifest key `fast`, with its parity) and on the golden set at every load.
- `manifest.json`: schema version, feature spec and window, input/output names and dtypes, horizon,
  levels, provenance (data fingerprint and dates, scores, MLflow run id) and the SHA-256 of every file.

A parity check runs at every export on real inputs: ONNX Runtime against PyTorch / scikit-learn must
agree within 1e-5 (relative, absolute below 1), else the export fails. It exists because exporters can
be silently wrong (a known defect writes GRU cells with the wrong `linear_before_reset`).
Writing is atomic (a temporary folder renamed into place, under a lock so two exports cannot take one
version) and an existing version is never replaced. With VOLMARGIN_BUNDLE_KEY set, the manifest is
signed (`manifest.sig`, HMAC-SHA256; see `volmargin_serving.bundle`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
from onnx import TensorProto, helper, numpy_helper
from volmargin_serving.bundle import MANIFEST, SCHEMA_VERSION, plain_name, resolve_key, sha256, sign_bundle

from volmargin.errors import ConfigError, VolmarginError
from volmargin.features.learned import (
    FEATURE_NAMES, INPUT_COLUMNS, IV_COLUMN, IV_FEATURE_NAMES, daily_inputs, feature_frame, standardize,
)
from volmargin.models.base import SIDES, GlobalForecaster
from volmargin.models.neural import output_columns, pad, windows
from volmargin.serving_graph import FAST_INPUTS, FAST_OUTPUTS, check_fast_parity, fast_graph

OPSET = 18
INPUT, OUTPUT = "features", "raw"
PARITY_TOLERANCE = 1e-5
GOLDEN_ASSETS = 4
FAST_FILE = "fast.onnx"
EXPORT_WAIT = 600.0  # seconds an export waits for another export of the same name to finish


class ExportError(VolmarginError):
    """The exported graph does not reproduce the trained model, or the bundle cannot be written."""


def names_of(model: GlobalForecaster) -> tuple[str, ...]:
    """The model's feature columns: `FEATURE_NAMES`, plus liquidity and the IV features for a GBM trained
    with them."""
    return tuple(getattr(model, "feature_names_", FEATURE_NAMES))


def reads_iv(model: GlobalForecaster) -> bool:
    """Whether the model reads the implied-volatility features (its bundle then takes `iv` and has no fast path)."""
    return IV_FEATURE_NAMES[0] in names_of(model)


def window_of(model: GlobalForecaster) -> int:
    """Days of features one forecast reads: the network's window; one day for tree models."""
    return int(getattr(model, "window", 1))


def to_onnx(model: GlobalForecaster) -> onnx.ModelProto:
    """The model's graph from standardized windows to raw outputs, checked by the ONNX checker."""
    if model.name == "nn":
        proto = _network_graph(model)
    elif model.name == "gbm":
        proto = _boosting_graph(model)
    elif model.name == "blend":
        proto = _blend_graph(model)
    else:
        raise ConfigError(f"model {model.name!r} cannot be exported; learned models nn, gbm and blend can")
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _network_graph(model) -> onnx.ModelProto:
    import torch

    example = torch.zeros(2, model.window, len(FEATURE_NAMES))
    batch = torch.export.Dim("batch")
    # the exporter logs "torchvision is not installed" once per torchvision op it could register: noise here
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        registry_log.setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(model.network_.eval(), (example,), input_names=[INPUT], output_names=[OUTPUT],
                                        dynamic_shapes=({0: batch},), opset_version=OPSET, dynamo=True,
                                        external_data=False, verbose=False)
        finally:
            registry_log.setLevel(level)
    return program.model_proto


def _register_lightgbm() -> None:
    """LightGBM's converter (onnxmltools) registered with skl2onnx, as skl2onnx documents for LightGBM models;
    a log-link objective (gamma) comes out with its Exp node, so the graph predicts what `predict` does."""
    from lightgbm import LGBMRegressor
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import calculate_linear_regressor_output_shapes

    update_registered_converter(LGBMRegressor, "LightGbmLGBMRegressor", calculate_linear_regressor_output_shapes,
                                convert_lightgbm, options={"split": None})


def _tree_graph(regressor, prefix: str, n_features: int = len(FEATURE_NAMES)) -> onnx.GraphProto:
    """One tree-ensemble regressor as a graph from `x` (batch, n_features) to `<prefix>variable` (batch, 1)."""
    from skl2onnx import to_onnx as sklearn_to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    _register_lightgbm()
    proto = sklearn_to_onnx(regressor, initial_types=[("x", FloatTensorType([None, n_features]))],
                            target_opset={"": OPSET, "ai.onnx.ml": 3})
    return onnx.compose.add_prefix(proto, prefix, rename_inputs=False).graph


def _const(name: str, values) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.FLOAT, np.shape(values), np.asarray(values, np.float32).ravel())


def _boosting_graph(model) -> onnx.ModelProto:
    """The variance booster plus smearing, the quantile boosters made non-crossing by a running max over
    levels, and ES = max(VaR x ES/VaR ratio, VaR): the same as `GBMForecaster.predict_raw`."""
    nodes = [helper.make_node("Flatten", [INPUT], ["x"], axis=1)]
    initializers = []
    graphs = [_tree_graph(model.variance_model_, "variance_", len(names_of(model)))]
    log_variance = "variance_variable"
    if model.variance_loss == "gamma":  # the booster predicts the variance ratio itself: back to logs
        nodes.append(helper.make_node("Log", ["variance_variable"], ["variance_log"]))
        log_variance = "variance_log"
    if getattr(model, "smearing_model_", None) is not None:  # conditional smearing: a gamma booster, in logs
        graphs.append(_tree_graph(model.smearing_model_, "smearing_", len(names_of(model))))
        nodes.append(helper.make_node("Log", ["smearing_variable"], ["smearing"]))
    else:
        initializers.append(_const("smearing", [[model.smearing_]]))
    nodes.append(helper.make_node("Add", [log_variance, "smearing"], ["log_var_rel"]))
    columns = ["log_var_rel"]
    for side in SIDES:
        previous = None
        for j, regressor in enumerate(model.quantile_models_[side]):
            prefix = f"{side}{j}_"
            graphs.append(_tree_graph(regressor, prefix, len(names_of(model))))
            quantile = f"{prefix}variable"
            if previous is not None:
                nodes.append(helper.make_node("Max", [previous, quantile], [f"{prefix}var"]))
                quantile = f"{prefix}var"
            previous = quantile
        var_names = [f"{side}0_variable"] + [f"{side}{j}_var" for j in range(1, len(model.levels_))]
        nodes += [
            helper.make_node("Concat", var_names, [f"{side}_var"], axis=1),
            helper.make_node("Mul", [f"{side}_var", f"{side}_ratio"], [f"{side}_scaled"]),
            helper.make_node("Max", [f"{side}_scaled", f"{side}_var"], [f"{side}_es"]),
        ]
        initializers.append(_const(f"{side}_ratio", [model.es_ratio_[side]]))
        columns += [f"{side}_var", f"{side}_es"]
    nodes.append(helper.make_node("Concat", columns, [OUTPUT], axis=1))
    for graph in graphs:
        nodes[1:1] = list(graph.node)  # after Flatten, before the post-processing that reads their outputs
        initializers += list(graph.initializer)
    inputs = [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 1, len(names_of(model))])]
    outputs = [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 1 + 4 * len(model.levels_)])]
    graph = helper.make_graph(nodes, "volmargin_gbm", inputs, outputs, initializers)
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", 3)]
    return helper.make_model(graph, opset_imports=opsets, producer_name="volmargin")


def _blend_graph(model) -> onnx.ModelProto:
    """The two members' graphs side by side under prefixes, fed from one window standardized with the GBM's
    statistics: the GBM reads its last day, the GRU its columns mapped to its own statistics; behind them
    the variance blend of `BlendForecaster.predict_raw` (log(w e^g + (1 - w) e^n), mixed with the long-run
    level column e^l where it has one: log((1 - s)(w e^g + (1 - w) e^n) + s e^l)) and the GBM's tails; with
    weight 1 the GBM alone (no GRU in the graph)."""
    from onnx.compose import add_prefix

    members = {"g_": add_prefix(_boosting_graph(model.gbm_), "g_")}
    if model.nn_ is not None:
        members["n_"] = add_prefix(_network_graph(model.nn_), "n_")
    w = model.weight
    big = np.iinfo(np.int64).max
    ints = lambda name, values: helper.make_tensor(name, TensorProto.INT64, [len(values)], values)  # noqa: E731
    initializers = [ints("blend_last", [-1]), ints("blend_end", [big]), ints("blend_zero", [0]),
                    ints("blend_one", [1]), ints("blend_axis1", [1]), ints("blend_axis2", [2])]
    last_day = "g_" + INPUT if not model.long_share else "blend_last_day"
    nodes = [helper.make_node("Slice", [INPUT, "blend_last", "blend_end", "blend_axis1"], [last_day])]
    if model.nn_ is not None:
        a, b = model.network_affine()
        initializers += [ints("blend_core", [len(FEATURE_NAMES)]), _const("blend_a", a), _const("blend_b", b)]
        nodes += [
            helper.make_node("Slice", [INPUT, "blend_zero", "blend_core", "blend_axis2"], ["blend_core_features"]),
            helper.make_node("Mul", ["blend_core_features", "blend_a"], ["blend_scaled"]),
            helper.make_node("Add", ["blend_scaled", "blend_b"], ["n_" + INPUT]),
        ]
    for member in members.values():
        nodes += list(member.graph.node)
        initializers += list(member.graph.initializer)
    g = "g_" + OUTPUT
    mix = "blend_var" if not model.long_share else "blend_mix"
    nodes += [
        helper.make_node("Slice", [g, "blend_zero", "blend_one", "blend_axis1"], ["blend_g0"]),
        # in float64: float32 Exp and Log round differently by batch position in ONNX Runtime (vectorised
        # kernels), and one asset must get the same forecast alone as in a batch
        helper.make_node("Cast", ["blend_g0"], ["blend_g0_64"], to=TensorProto.DOUBLE),
        helper.make_node("Exp", ["blend_g0_64"], ["blend_g_var" if model.nn_ is not None else mix]),
    ]
    if model.nn_ is not None:
        n = "n_" + OUTPUT
        initializers += [numpy_helper.from_array(np.array([w], np.float64), "blend_w"),
                         numpy_helper.from_array(np.array([1 - w], np.float64), "blend_1mw")]
        nodes += [
            helper.make_node("Slice", [n, "blend_zero", "blend_one", "blend_axis1"], ["blend_n0"]),
            helper.make_node("Cast", ["blend_n0"], ["blend_n0_64"], to=TensorProto.DOUBLE),
            helper.make_node("Exp", ["blend_n0_64"], ["blend_n_var"]),
            helper.make_node("Mul", ["blend_g_var", "blend_w"], ["blend_g_part"]),
            helper.make_node("Mul", ["blend_n_var", "blend_1mw"], ["blend_n_part"]),
            helper.make_node("Add", ["blend_g_part", "blend_n_part"], [mix]),
        ]
    if model.long_share:  # the last column of the last day: the long-run level, not a GBM input
        gbm_width = len(names_of(model.gbm_))
        initializers += [ints("blend_gbm_width", [gbm_width]),
                         numpy_helper.from_array(np.array([model.long_share], np.float64), "blend_s"),
                         numpy_helper.from_array(np.array([1 - model.long_share], np.float64), "blend_1ms")]
        nodes[1:1] = [helper.make_node("Slice", [last_day, "blend_zero", "blend_gbm_width", "blend_axis2"], ["g_" + INPUT]),
                      helper.make_node("Slice", [last_day, "blend_gbm_width", "blend_end", "blend_axis2"], ["blend_long"])]
        nodes += [
            helper.make_node("Flatten", ["blend_long"], ["blend_long_2d"], axis=1),
            helper.make_node("Cast", ["blend_long_2d"], ["blend_long_64"], to=TensorProto.DOUBLE),
            helper.make_node("Exp", ["blend_long_64"], ["blend_long_var"]),
            helper.make_node("Mul", ["blend_long_var", "blend_s"], ["blend_long_part"]),
            helper.make_node("Mul", ["blend_mix", "blend_1ms"], ["blend_mix_part"]),
            helper.make_node("Add", ["blend_mix_part", "blend_long_part"], ["blend_var"]),
        ]
    nodes += [
        helper.make_node("Log", ["blend_var"], ["blend_log_var_64"]),
        helper.make_node("Cast", ["blend_log_var_64"], ["blend_log_var"], to=TensorProto.FLOAT),
        helper.make_node("Slice", [g, "blend_one", "blend_end", "blend_axis1"], ["blend_tails"]),
        helper.make_node("Concat", ["blend_log_var", "blend_tails"], [OUTPUT], axis=1),
    ]
    n_features, n_out = len(names_of(model)), 1 + 4 * len(model.levels_)
    inputs = [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", model.window, n_features])]
    outputs = [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", n_out])]
    graph = helper.make_graph(nodes, "volmargin_blend", inputs, outputs, initializers)
    opsets = {}
    for member in members.values():
        for opset in member.opset_import:
            opsets[opset.domain] = max(opsets.get(opset.domain, 0), opset.version)
    functions = [f for member in members.values() for f in member.functions]
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                             functions=functions, producer_name="volmargin",
                             ir_version=max(member.ir_version for member in members.values()))


def standardized_windows(model: GlobalForecaster, daily: pd.DataFrame) -> np.ndarray:
    """(days, window, n_features) float32: the standardized window ending at every day of `daily`."""
    names = names_of(model)
    frame = feature_frame(daily, model.feature_spec_, iv_features=reads_iv(model))
    x = pad(standardize(model.scaler_, frame[list(names)].to_numpy()), window_of(model))
    return windows(x, np.arange(len(frame)), window_of(model))


def parity_inputs(model: GlobalForecaster, panel: dict[str, pd.DataFrame], rows: int = 2048, seed: int = 0) -> np.ndarray:
    """Real standardized windows sampled across every asset and date of `panel`."""
    x = np.concatenate([standardized_windows(model, daily) for daily in panel.values()])
    pick = np.random.default_rng(seed).choice(len(x), size=min(rows, len(x)), replace=False)
    return x[np.sort(pick)]


def reference_outputs(model: GlobalForecaster, x: np.ndarray) -> np.ndarray:
    """The trained model's own raw outputs (PyTorch or scikit-learn) for standardized windows."""
    return np.asarray(model.predict_raw(x[:, -1] if model.name == "gbm" else x), dtype=np.float64)


def session(proto: onnx.ModelProto, disabled_optimizers: tuple[str, ...] = ()):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disabled_optimizers))


def check_parity(proto: onnx.ModelProto, reference: np.ndarray, x: np.ndarray) -> dict:
    """ONNX Runtime outputs against the reference; raises `ExportError` beyond the tolerance."""
    got = session(proto).run([OUTPUT], {INPUT: x})[0].astype(np.float64)
    if got.shape != reference.shape:
        raise ExportError(f"parity check failed: ONNX output shape {got.shape} differs from {reference.shape}")
    error = np.abs(got - reference) / np.maximum(np.abs(reference), 1.0)
    worst = float(np.max(error))
    if not worst <= PARITY_TOLERANCE:
        row, column = np.unravel_index(int(np.argmax(error)), error.shape)
        raise ExportError(f"parity check failed: ONNX Runtime differs from the trained model by {worst:.3g} "
                          f"(limit {PARITY_TOLERANCE:g}) at row {row}, output column {column}; the exported "
                          "graph is wrong (e.g. a mis-exported GRU cell), so no bundle was written")
    return {"rows": len(x), "max_error": worst, "max_abs_diff": float(np.max(np.abs(got - reference)))}


def golden_set(model: GlobalForecaster, panel: dict[str, pd.DataFrame], history_days: int) -> dict[str, np.ndarray]:
    """The last `history_days` daily inputs of up to `GOLDEN_ASSETS` assets and the training library's
    forecasts from them, as arrays for `golden.npz`."""
    long_enough = [a for a in sorted(panel) if len(panel[a]) >= history_days]
    # one as_of for the whole golden batch: only assets whose data end on the panel's last day (a delisted
    # or shorter file would be stale at that as_of and the self-test would refuse it)
    latest = max((panel[a].index[-1] for a in long_enough), default=None)
    usable = [a for a in long_enough if panel[a].index[-1] == latest][:GOLDEN_ASSETS]
    if not usable:
        raise ExportError(f"no asset has the {history_days} days of history a golden self-test needs")
    inputs, dates, variance, var, es, iv = [], [], [], [], [], []
    for asset in usable:
        daily = panel[asset].iloc[-history_days:]
        columns = daily_inputs(daily)
        inputs.append(np.column_stack([columns[c].astype(float) for c in INPUT_COLUMNS]))
        dates.append(daily.index.tz_convert(None).to_numpy().astype("datetime64[D]"))
        iv.append(daily[IV_COLUMN].to_numpy(float) if IV_COLUMN in daily else np.full(len(daily), np.nan))
        forecast = model.forecast(daily, daily.index[-1:], model.levels_)
        variance.append(forecast.variance)
        var.append(np.stack([forecast.var[s] for s in SIDES], axis=1))
        es.append(np.stack([forecast.es[s] for s in SIDES], axis=1))
    golden = {"inputs": np.stack(inputs), "dates": np.stack(dates), "variance": np.concatenate(variance),
              "var": np.concatenate(var), "es": np.concatenate(es), "assets": np.array(usable)}
    if reads_iv(model):
        golden["iv"] = np.stack(iv)
    return golden


def fast_path(model: GlobalForecaster, proto: onnx.ModelProto,
              panel: dict[str, pd.DataFrame]) -> tuple[onnx.ModelProto, dict] | None:
    """The serving fast path (`volmargin.serving_graph`) for `proto` and its parity against the careful path
    on real windows of `panel`; None for models with the IV features (they serve by the careful path).
    Raises `ExportError` where the fast path differs beyond `PARITY_TOLERANCE`."""
    if reads_iv(model):
        return None
    window, spec = window_of(model), model.feature_spec_
    args = (spec, model.scaler_.mean_, model.scaler_.scale_)
    tail = (window, model.horizon_, len(model.levels_))
    fast = fast_graph(proto, *args, spec.history_days(window), *tail)
    try:
        parity = check_fast_parity(fast, proto, *args, *tail, panel, PARITY_TOLERANCE)
    except ValueError as exc:
        raise ExportError(f"fast path parity check failed: {exc}; no bundle was written") from None
    return fast, parity


def _fast_manifest(parity: dict) -> dict:
    return {"file": FAST_FILE, "inputs": list(FAST_INPUTS), "outputs": list(FAST_OUTPUTS), "parity": parity}


def next_version(folder: Path) -> str:
    """1 + the highest integer version under models/<name>/."""
    taken = [int(p.name) for p in folder.glob("*") if p.is_dir() and p.name.isdigit()] if folder.is_dir() else []
    return str(max(taken, default=0) + 1)


def _manifest(model: GlobalForecaster, name: str, version: str, history_days: int, parity: dict,
              files: dict[str, str], provenance: dict) -> dict:
    n_out = 1 + 4 * len(model.levels_)
    return {
        "schema_version": SCHEMA_VERSION,
        "name": name,
        "version": version,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": {"kind": model.name, "class": type(model).__name__,
                  "params": {k: v if isinstance(v, (int, float, str, bool, dict)) else list(v)
                             for k, v in model.get_params().items() if v is not None and k != "logger"}},
        "features": {
            "names": list(names_of(model)), "inputs": list(INPUT_COLUMNS), "spec": vars(model.feature_spec_).copy(),
            "window": window_of(model), "history_days": history_days,
            "mean": model.scaler_.mean_.tolist(), "scale": model.scaler_.scale_.tolist(),
        },
        "onnx": {
            "file": "model.onnx", "opset": OPSET,
            "inputs": [{"name": INPUT, "dtype": "float32", "shape": ["batch", window_of(model), len(names_of(model))]}],
            "outputs": [{"name": OUTPUT, "dtype": "float32", "shape": ["batch", n_out]}],
            "output_columns": output_columns(model.levels_),
        },
        "horizon": model.horizon_,
        "levels": list(model.levels_),
        "sides": list(SIDES),
        "parity": parity,
        "golden": {"file": "golden.npz", "rtol": PARITY_TOLERANCE},
        **provenance,
        "files": files,
    }


def check_names(name: str | None, version: str | None, root: str | Path) -> None:
    """ConfigError unless the bundle name and version are plain names, so the bundle stays inside `root`, and
    the version a positive integer, as `next_version` numbers them."""
    for key, value in (("name", name), ("version", version)):
        if value is not None and not (plain_name(str(value)) and not str(value).startswith(".")):
            raise ConfigError(f"--{key} {value!r}: a bundle {key} is a plain name (no '/', '..' or leading '.'), "
                              f"so the bundle stays inside {root}")
    if version is not None and not re.fullmatch(r"[1-9][0-9]*", str(version)):  # '01' beside '1', ' 7', '-1', '1.5'
        raise ConfigError(f"--version {version!r}: a bundle version is a positive whole number without leading "
                          "zeros (1, 2, ...), as the next version is numbered")
    from volmargin.io import refuse_inside_bundle

    refuse_inside_bundle(Path(root) / "bundle")  # the root itself inside a bundle


def write_bundle(model: GlobalForecaster, panel: dict[str, pd.DataFrame], root: str | Path = "models",
                 name: str | None = None, version: str | None = None, provenance: dict | None = None,
                 calibration: dict | None = None) -> Path:
    """Export, check parity, write and self-test a bundle; returns models/<name>/<version>.

    `panel` (asset -> daily measures, real data) feeds the parity check and the golden set;
    `provenance` adds keys to the manifest (e.g. training, scores, mlflow); `calibration` (parameters as
    `parameter_set` returns them) is written as the bundle's calibration set beside it before the bundle
    appears, so a bundle is never seen (or left by a kill) without the set it was exported with.
    """
    from volmargin_serving.runtime import Runtime

    from volmargin.io import output_lock, usual_mode

    name = name or model.name
    check_names(name, version, root)
    folder = Path(root) / name
    if version is not None and (folder / str(version)).exists():
        raise ExportError(f"{folder / str(version)} exists; bundles are immutable, choose another version")
    proto = to_onnx(model)
    x = parity_inputs(model, panel)
    parity = check_parity(proto, reference_outputs(model, x), x)
    history_days = model.feature_spec_.history_days(window_of(model))
    fast = fast_path(model, proto, panel)
    golden = golden_set(model, panel, history_days)
    key = resolve_key()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {folder}: {exc.strerror or exc}") from None
    # two exports of one name cannot take the same version; the second waits its turn (two runs sharing a
    # models folder failed at the export after all their work), up to EXPORT_WAIT seconds
    with output_lock(folder, wait=EXPORT_WAIT):
        for stale in folder.glob(".*.staging"):  # left by an export that was killed
            shutil.rmtree(stale, ignore_errors=True)
        version = str(version or next_version(folder))
        target = folder / version
        if target.exists():
            raise ExportError(f"{target} exists; bundles are immutable, choose another version")
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".staging", dir=folder))
        try:
            usual_mode(staging, folder=True)  # mkdtemp's 0700 would hide the bundle from a service of another user
            onnx.save_model(proto, staging / "model.onnx")
            if fast is not None:
                onnx.save_model(fast[0], staging / FAST_FILE)
            np.savez(staging / "golden.npz", **golden)
            files = {p.name: sha256(p) for p in sorted(staging.iterdir())}
            manifest = _manifest(model, name, version, history_days, parity, files, provenance or {})
            if fast is not None:
                manifest["fast"] = _fast_manifest(fast[1])
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            if key is not None:
                sign_bundle(staging, key)
            Runtime(staging, key=key)  # verifies checksums and runs the golden self-test before the bundle appears
            if calibration is not None:  # bound to the manifest's hash, the staging folder's is the bundle's
                from volmargin.calibration.parameters import write_parameter_set
                from volmargin_serving.calibration import calibration_beside

                write_parameter_set(calibration, staging, calibration_beside(target))
            os.rename(staging, target)  # atomic; fails rather than replacing a non-empty version
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target

