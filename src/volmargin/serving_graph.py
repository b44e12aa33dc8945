"""The serving fast path: input checks, features, standardisation, model and post-processing in one ONNX graph.

A forecast from daily inputs used to be some sixty numpy calls around one `session.run`, each costing a
few microseconds: ten times the cost of the model itself. `fast_graph` puts all of it in front of and
behind the exported model, so `Runtime.forecast_daily` makes one `session.run` and reads its outputs:

    inputs   daily  float64 (assets, history_days, len(INPUT_COLUMNS))   the last history_days rows
             days   int64   (assets, history_days)                      days since 1970-01-01
             bounds int64   (2,)                                        [oldest allowed newest day, as_of's day]
    outputs  ok        bool    (assets,)            the rows pass every check of `validation.check_values`
                                                    and `check_dates` (finite, possible, consecutive, fresh)
             variance  float64 (assets,)            as `outputs.postprocess`
             tails     float64 (assets, 2, 2, levels)   [:, side, 0] VaR, [:, side, 1] ES

Where `ok` is False the runtime discards the outputs and takes its careful numpy path, which raises the
typed error (or repairs, in `margins`); the graph never has to be right on bad input, only to flag it.

The features are those of `volmargin_serving.features.compute_features` (the one definition, used by
training) with the same floating-point operations in the same order, so the graph's standardized float32
features equal numpy's (tests/test_serving_graph.py checks it on real bars); the export checks the whole
graph against the careful path (`check_fast_parity`). Trailing means are differences of one cumulative
sum, as in `features.trailing_means`; the day of week is a 7-row table of numpy's own sin/cos values.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from volmargin_serving.features import _FLOOR, CORE_COLUMNS, FEATURE_NAMES, INPUT_COLUMNS, FeatureSpec
from volmargin_serving.validation import FLAGS, MAX_BARS_PER_DAY, NON_NEGATIVE

FAST_INPUTS = ("daily", "days", "bounds")
FAST_OUTPUTS = ("ok", "variance", "tails")
_COLUMN = {name: i for i, name in enumerate(INPUT_COLUMNS)}


class _Builder:
    """Nodes and constants of a graph under construction; every name gets the `fast_` prefix so that it
    cannot collide with the model's."""

    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.constants: list[onnx.TensorProto] = []
        self._count = 0

    def const(self, values, dtype=np.float64) -> str:
        self._count += 1
        name = f"fast_c{self._count}"
        self.constants.append(numpy_helper.from_array(np.asarray(values, dtype=dtype), name))
        return name

    def op(self, kind: str, *inputs: str, outputs: int = 1, name: str | None = None, **attributes) -> str | list[str]:
        self._count += 1
        names = [name] if name else [f"fast_{kind.lower()}{self._count}_{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(kind, list(inputs), names, **attributes))
        return names if outputs > 1 else names[0]

    def scalar(self, value, dtype=np.float64) -> str:
        """A constant for elementwise ops on (assets, rows, columns) tensors. Shaped (1, 1, 1), not (): ONNX
        Runtime (1.32) broadcasts a 0-d operand against a trailing axis of length 1 element by element, at
        some 50 ns an element against about 1 ns for a rank-matched one (a micro-benchmark of Mul on
        (1024, 119, 1) doubles); the same holds for Max and Where, so the graph uses Clip and products."""
        return self.const(np.full((1, 1, 1), value), dtype)

    def log(self, x: str) -> str:
        """features._log: log(max(x, 1e-12)); Clip is max(x, 1e-12) on finite values, without broadcasting."""
        return self.op("Log", self.op("Clip", x, self.const(_FLOOR)))

    def rows(self, x: str, start: int, end: int, axis: int = 1) -> str:
        return self.op("Slice", x, self.const([start], np.int64), self.const([end], np.int64), self.const([axis], np.int64))


def _window_slots(spec: FeatureSpec, long: bool) -> dict[str, tuple[int, int]]:
    """Trailing windows the features read: name -> (rows, lag in rows); the long-run level's if `long`."""
    slots = {"week": (spec.week_days, 0), "month": (spec.month_days, 0), "level": (spec.level_days, 0),
             "volume": (spec.volume_days, 0), "level_lagged": (spec.level_days, spec.month_days),
             "liquidity": (spec.liquidity_days, 0)}
    if long and spec.long_days < 2:
        raise ValueError(f"a model reading the long-run level needs long_days >= 2, got {spec.long_days}")
    return slots | ({"long": (spec.long_days, 0)} if long else {})


# Trailing means the features read: name -> (window slot, series, validity mask), cf. compute_features
_MEANS = {
    "rv_week": ("week", "rv", "complete"), "rv_month": ("month", "rv", "complete"),
    "rv_level": ("level", "rv", "complete"), "ret_week": ("week", "ret", "all"),
    "log_volume": ("volume", "log_volume", "all"), "log_rv": ("level", "log_rv_c", "complete"),
    "log_rv_all": ("level", "log_rv_all", "all"), "log_rv_sq": ("level", "log_rv_sq", "complete"),
    "jump": ("level", "jump", "jump_valid"), "lagged_log_rv": ("level_lagged", "log_rv_c", "complete"),
    "lagged_log_rv_all": ("level_lagged", "log_rv_all", "all"),
    "traded_value": ("liquidity", "traded_value", "all"), "rv_long": ("long", "rv", "complete"),
}
_SERIES = ("log_rv_c", "log_rv_all", "rv", "ret", "log_volume", "log_rv_sq", "jump", "traded_value")
_MASKS = ("complete", "jump_valid", "all")


def _checks(b: _Builder, daily: str, days: str, bounds: str, rows: int) -> str:
    """ok (assets,): the rows pass `validation.check_values` and `check_dates` (with gaps refused).
    Written with same-shape comparisons only (fast in ONNX Runtime, unlike broadcast ones)."""
    delta = b.op("Sub", daily, daily)
    finite = b.op("Equal", delta, delta)  # x - x is NaN for NaN and +-inf
    others = b.rows(daily, 1, len(INPUT_COLUMNS), axis=2)  # every column but ret must be >= 0
    if INPUT_COLUMNS[0] != "ret" or not all(c in NON_NEGATIVE or c in FLAGS for c in INPUT_COLUMNS[1:]):
        raise ValueError(f"the fast path's checks are written for the inputs ret, then >= 0 columns; got {INPUT_COLUMNS}")
    non_negative = b.op("Equal", b.op("Abs", others), others)  # -0.0 passes, as in numpy (-0.0 < 0 is False)
    ret, rv, complete = (b.rows(daily, _COLUMN[c], _COLUMN[c] + 1, axis=2) for c in ("ret", "rv", "complete"))
    limit = b.op("Mul", b.op("Mul", rv, b.scalar(float(MAX_BARS_PER_DAY))), b.scalar(1 + 1e-9))  # validation's order
    possible = b.op("LessOrEqual", b.op("Mul", ret, ret), limit)
    flag = b.op("Equal", b.op("Mul", complete, complete), complete)  # c*c == c with c >= 0: c is 0 or 1
    passed = b.op("Concat", finite, non_negative, possible, flag, axis=2)
    values_ok = b.op("ReduceMin", b.op("Cast", passed, to=TensorProto.INT32), b.const([1, 2], np.int64), keepdims=0)
    step = b.op("Sub", b.rows(days, 1, rows), b.rows(days, 0, rows - 1))
    consecutive = b.op("ReduceMin", b.op("Cast", b.op("Equal", step, b.const([[1]], np.int64)), to=TensorProto.INT32),
                       b.const([1], np.int64), keepdims=0)
    newest = b.op("Squeeze", b.rows(days, rows - 1, rows), b.const([1], np.int64))
    oldest, today = b.op("Split", bounds, outputs=2, axis=0, num_outputs=2)
    fresh = b.op("And", b.op("GreaterOrEqual", newest, oldest), b.op("LessOrEqual", newest, today))
    ok = b.op("And", b.op("Equal", b.op("Mul", values_ok, consecutive), b.const(1, np.int32)), fresh)
    return b.op("Identity", ok, name="ok")


def _features(b: _Builder, daily: str, days: str, spec: FeatureSpec, rows: int, window: int,
              long: bool) -> tuple[str, str, str]:
    """Raw features (assets, window, `_built_width(long)`) of the last `window` rows, their validity (bool,
    same shape; False where numpy gives NaN) and level_t (assets, window, 1); cf. `compute_features`. The
    long-run level (the last core column) only if `long`: the one model that reads it needs long_days rows."""
    ret, rv, bv, parkinson, rogers_satchell, volume, traded_value, complete_flag = b.op(
        "Split", daily, outputs=len(INPUT_COLUMNS), axis=2, num_outputs=len(INPUT_COLUMNS))
    # The checks passed, so every input is finite and `complete` is 0 or 1: masking is a product with it
    # (x * 1 == x; x * 0 is a zero, which adds nothing to a sum), cheaper than Where.
    complete = b.op("Cast", complete_flag, to=TensorProto.BOOL)
    zero = b.scalar(0.0)
    log_rv_all = b.log(rv)
    log_rv_c = b.op("Mul", log_rv_all, complete_flag)
    # numpy's (rv - bv) / rv is NaN where both are 0 and -inf (clipped to 0) where only rv is; dividing by
    # rv raised to the smallest double keeps it finite there and changes nothing where rv > 0
    safe_rv = b.op("Clip", rv, b.const(np.nextafter(0.0, 1.0)))
    ratio = b.op("Clip", b.op("Div", b.op("Sub", rv, bv), safe_rv), b.const(0.0), b.const(1.0))
    jump_valid = b.op("And", complete, b.op("Greater", b.op("Add", rv, bv), zero))
    jump_mask = b.op("Cast", jump_valid, to=TensorProto.DOUBLE)
    series = {
        "log_rv_c": log_rv_c, "log_rv_all": log_rv_all, "rv": b.op("Mul", rv, complete_flag), "ret": ret,
        "log_volume": b.log(volume), "log_rv_sq": b.op("Mul", log_rv_c, log_rv_c),
        "jump": b.op("Mul", ratio, jump_mask), "traded_value": traded_value,
    }
    masks = {"complete": complete_flag, "jump_valid": jump_mask,
             "all": b.op("Add", b.op("Sub", complete_flag, complete_flag), b.scalar(1.0))}
    stacked = b.op("Concat", *(series[s] for s in _SERIES), *(masks[m] for m in _MASKS), axis=2)
    # sums[t] = cumsum[t] - cumsum[t - w] as in features.trailing_means; a zero row in front stands for "nothing
    # to subtract", and x - 0 == x, so the sums are numpy's to the bit
    cumulative = b.op("Pad", b.op("CumSum", stacked, b.const(1, np.int64)), b.const([0, 1, 0, 0, 0, 0], np.int64))
    slots = _window_slots(spec, long)
    means = {name: mean for name, mean in _MEANS.items() if mean[0] in slots}
    kept = np.arange(rows - window, rows)
    ends = np.stack([kept + 1 - lag for _, lag in slots.values()], axis=1)  # (window, slots)
    starts = np.maximum(np.stack([kept + 1 - lag - w for w, lag in slots.values()], axis=1), 0)
    sums = b.op("Sub", b.op("Gather", cumulative, b.const(ends, np.int64), axis=1),
                b.op("Gather", cumulative, b.const(starts, np.int64), axis=1))  # (assets, window, slots, columns)
    width = len(_SERIES) + len(_MASKS)
    flat = b.op("Reshape", sums, b.const([0, 0, len(slots) * width], np.int64))
    slot_index = {name: k for k, name in enumerate(slots)}
    totals = [slot_index[s] * width + _SERIES.index(x) for s, x, _ in means.values()]
    counts = [slot_index[s] * width + len(_SERIES) + _MASKS.index(m) for s, _, m in means.values()]
    count = b.op("Gather", flat, b.const(counts, np.int64), axis=2)
    mean = b.op("Div", b.op("Gather", flat, b.const(totals, np.int64), axis=2), b.op("Clip", count, b.const(1.0)))
    known = b.op("Greater", count, zero)  # numpy's mean is NaN where the window holds no valid row
    m = dict(zip(means, b.op("Split", mean, outputs=len(means), axis=2, num_outputs=len(means))))
    k = dict(zip(means, b.op("Split", known, outputs=len(means), axis=2, num_outputs=len(means))))

    level = b.op("Where", k["log_rv"], m["log_rv"], m["log_rv_all"])
    level_change = b.op("Sub", level, b.op("Where", k["lagged_log_rv"], m["lagged_log_rv"], m["lagged_log_rv_all"]))
    # the largest squared return of the level window: a max pool over the days the kept rows read
    # (channels first); rows >= window + level_days - 1, so every kept row has a full window, as in numpy
    squares = b.op("Transpose", b.op("Mul", ret, ret), perm=[0, 2, 1])
    pooled = b.op("MaxPool", b.rows(squares, rows - window - spec.level_days + 1, rows, axis=2),
                  kernel_shape=[spec.level_days], strides=[1])
    max_square = b.op("Transpose", pooled, perm=[0, 2, 1])

    def last(x: str) -> str:
        return b.rows(x, rows - window, rows)

    scale = b.op("Exp", b.op("Mul", level, b.scalar(0.5)))
    clip = (b.const(-spec.ret_clip), b.const(spec.ret_clip))
    log_rv = last(log_rv_all)
    dow = b.op("Gather", b.const(_weekday_table()), b.op("Mod", last(days), b.const([[7]], np.int64)), axis=0)
    columns = {
        "rv_d": b.op("Sub", log_rv, level),
        "rv_w": b.op("Sub", b.log(m["rv_week"]), level),
        "rv_m": b.op("Sub", b.log(m["rv_month"]), level),
        "level_chg": level_change,
        "ret_d": b.op("Clip", b.op("Div", last(ret), scale), *clip),
        "ret_w": b.op("Clip", b.op("Div", b.op("Mul", b.scalar(np.sqrt(spec.week_days)), m["ret_week"]), scale), *clip),
        "jump": last(series["jump"]),
        "range_pk": b.op("Sub", b.log(last(parkinson)), log_rv),
        "range_rs": b.op("Sub", b.log(last(rogers_satchell)), log_rv),
        "volume": b.op("Sub", last(series["log_volume"]), m["log_volume"]),
        "dow": dow,  # dow_sin, dow_cos
        "level_gap": b.op("Sub", b.log(m["rv_level"]), m["log_rv"]),
        "rv_disp": b.op("Sqrt", b.op("Clip", b.op("Sub", m["log_rv_sq"], b.op("Mul", m["log_rv"], m["log_rv"])),
                                     b.const(0.0))),
        "jump_freq": m["jump"],
        "max_move": b.op("Sub", b.log(max_square), level),
        "liquidity": b.log(m["traded_value"]),
    }
    if long:
        columns["long_level"] = b.op("Sub", b.log(m["rv_long"]), level)
    features = b.op("Concat", *columns.values(), axis=2)
    kept_complete, kept_jump = last(complete), last(jump_valid)
    always = b.op("Cast", last(masks["all"]), to=TensorProto.BOOL)
    validity = {"rv_d": kept_complete, "rv_w": k["rv_week"], "rv_m": k["rv_month"], "jump": kept_jump,
                "range_pk": kept_complete, "range_rs": kept_complete, "level_gap": k["log_rv"],
                "rv_disp": k["log_rv"], "jump_freq": k["jump"]} | ({"long_level": k["rv_long"]} if long else {})
    valid = b.op("Concat", *(validity.get(name, always) for name in CORE_COLUMNS[:_built_width(long)]), axis=2)
    return features, valid, level


def _built_width(long: bool) -> int:
    """Core columns `_features` builds: all, or all but the long-run level."""
    return len(CORE_COLUMNS) - (not long)


def _reads_long(mean: np.ndarray) -> bool:
    """Whether a model with these statistics reads the long-run level (the last core column)."""
    return len(mean) == len(CORE_COLUMNS)


def _weekday_table() -> np.ndarray:
    """(7, 2) sin and cos of the day-of-week angle by days since 1970-01-01 modulo 7, computed as numpy
    computes them in `compute_features` (weekday 0 = Monday; 1970-01-01 was a Thursday)."""
    weekday = (np.arange(7) + 3) % 7
    angle = 2 * np.pi * weekday / 7
    return np.stack([np.sin(angle), np.cos(angle)], axis=1)


def _standardized(b: _Builder, features: str, valid: str, mean: np.ndarray, scale: np.ndarray, model_input: str) -> str:
    """features.standardize: (x - mean) / scale, missing at 0, as float32, under the model's input name; of
    the first len(mean) core columns, the ones the model reads (`features.core_width`)."""
    if len(mean) < _built_width(_reads_long(mean)):
        features, valid = (b.rows(x, 0, len(mean), axis=2) for x in (features, valid))
    z = b.op("Div", b.op("Sub", features, b.const(mean)), b.const(scale))
    # every feature is finite here (logs of floored values, means over at least one row), so a product
    # with the mask puts the missing ones at 0 (the sign of a zero is no input to the model)
    return b.op("Cast", b.op("Mul", z, b.op("Cast", valid, to=TensorProto.DOUBLE)), to=TensorProto.FLOAT, name=model_input)


def _postprocessed(b: _Builder, raw: str, level: str, horizon: int, n_levels: int, rows: int, window: int) -> None:
    """outputs.postprocess: variance = exp((level + log h) + m), tails = raw tails x sqrt(variance)."""
    raw = b.op("Cast", raw, to=TensorProto.DOUBLE)
    log_level = b.op("Add", b.op("Reshape", b.rows(level, window - 1, window), b.const([-1], np.int64)),
                     b.const(np.log(horizon)))
    relative = b.op("Reshape", b.rows(raw, 0, 1), b.const([-1], np.int64))
    variance = b.op("Exp", b.op("Add", log_level, relative), name="variance")
    volatility = b.op("Reshape", b.op("Sqrt", variance), b.const([-1, 1, 1, 1], np.int64))
    tails = b.op("Reshape", b.rows(raw, 1, 1 + 4 * n_levels), b.const([-1, 2, 2, n_levels], np.int64))
    b.op("Mul", tails, volatility, name="tails")


def feature_graph(spec: FeatureSpec, mean: np.ndarray, scale: np.ndarray, rows: int, window: int) -> onnx.ModelProto:
    """The fast path's checks and standardized features alone: inputs as `fast_graph`, outputs `ok`,
    `features` (assets, window, n_features) float32 and `level` (assets, window, 1). For tests and profiling."""
    b = _Builder()
    _checks(b, "daily", "days", "bounds", rows)
    features, valid, level = _features(b, "daily", "days", spec, rows, window, _reads_long(mean))
    _standardized(b, features, valid, mean, scale, "features")
    b.op("Identity", level, name="level")
    outputs = [helper.make_tensor_value_info("ok", TensorProto.BOOL, ["assets"]),
               helper.make_tensor_value_info("features", TensorProto.FLOAT, ["assets", window, len(mean)]),
               helper.make_tensor_value_info("level", TensorProto.DOUBLE, ["assets", window, 1])]
    graph = helper.make_graph(b.nodes, "volmargin_features", _inputs(rows), outputs, b.constants)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def _inputs(rows: int) -> list[onnx.ValueInfoProto]:
    return [helper.make_tensor_value_info("daily", TensorProto.DOUBLE, ["assets", rows, len(INPUT_COLUMNS)]),
            helper.make_tensor_value_info("days", TensorProto.INT64, ["assets", rows]),
            helper.make_tensor_value_info("bounds", TensorProto.INT64, [2])]


def fast_graph(model: onnx.ModelProto, spec: FeatureSpec, mean: np.ndarray, scale: np.ndarray, rows: int,
               window: int, horizon: int, n_levels: int) -> onnx.ModelProto:
    """The exported `model` (standardized windows -> raw) with the checks and features merged in front and
    the post-processing behind: one graph from the last `rows` daily inputs to checked forecasts."""
    if len(mean) not in (len(FEATURE_NAMES), len(CORE_COLUMNS) - 1, len(CORE_COLUMNS)):
        raise ValueError("the fast path computes the core features only; IV bundles use the careful path")
    merged = onnx.ModelProto()
    merged.CopyFrom(model)
    graph = merged.graph
    model_input, model_output = graph.input[0].name, graph.output[0].name
    b = _Builder()
    ok = _checks(b, "daily", "days", "bounds", rows)
    features, valid, level = _features(b, "daily", "days", spec, rows, window, _reads_long(mean))
    _standardized(b, features, valid, np.asarray(mean, float), np.asarray(scale, float), model_input)
    front = list(b.nodes)
    b.nodes.clear()
    _postprocessed(b, model_output, level, horizon, n_levels, rows, window)
    nodes = front + list(graph.node) + b.nodes
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(b.constants)
    del graph.input[:]
    graph.input.extend(_inputs(rows))
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info(ok, TensorProto.BOOL, ["assets"]),
                         helper.make_tensor_value_info("variance", TensorProto.DOUBLE, ["assets"]),
                         helper.make_tensor_value_info("tails", TensorProto.DOUBLE, ["assets", 2, 2, n_levels])])
    graph.name = f"{graph.name}_fast"
    onnx.checker.check_model(merged, full_check=True)
    return merged


def parity_windows(panel: dict, rows: int, count: int = 1024, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Up to `count` real windows of `rows` consecutive days that pass the input checks, sampled across the
    assets and dates of `panel` (asset -> daily measures): daily (k, rows, columns) and days (k, rows)."""
    from volmargin_serving.validation import value_problems

    from volmargin.features.learned import daily_inputs

    daily, days = [], []
    for frame in panel.values():
        columns = daily_inputs(frame)
        x = np.column_stack([columns[c].astype(float) for c in INPUT_COLUMNS])
        d = frame.index.tz_convert(None).to_numpy().astype("datetime64[D]").astype(np.int64)
        for end in range(rows, len(x) + 1):
            if d[end - 1] - d[end - rows] == rows - 1 and not value_problems(x[end - rows:end]).any():
                daily.append(x[end - rows:end])
                days.append(d[end - rows:end])
    if not daily:
        raise ValueError(f"no window of {rows} consecutive valid days in the panel")
    pick = np.sort(np.random.default_rng(seed).choice(len(daily), size=min(count, len(daily)), replace=False))
    return np.stack(daily)[pick], np.stack(days)[pick]


def careful_forecasts(model: onnx.ModelProto, spec: FeatureSpec, mean, scale, window: int, horizon: int,
                      n_levels: int, daily: np.ndarray, days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Variance and tails of the careful numpy path (`volmargin_serving.features` + `model` + `postprocess`)
    on windows as `parity_windows` gives them: the reference of the fast path."""
    from volmargin_serving.features import compute_features, horizon_level, standardize
    from volmargin_serving.outputs import postprocess

    from volmargin.export import INPUT, OUTPUT, session

    columns = dict(zip(INPUT_COLUMNS, np.moveaxis(daily, -1, 0)))
    columns["complete"] = columns["complete"] > 0.5
    features, level = compute_features(columns, (days + 3) % 7, spec, last=window)
    features = features[..., :len(mean)]  # the core columns the model reads
    raw = session(model).run([OUTPUT], {INPUT: standardize(features, np.asarray(mean), np.asarray(scale))})[0]
    variance, var, es = postprocess(raw, horizon_level(level[:, -1], horizon), n_levels)
    return variance, np.stack([var, es], axis=2)


def check_fast_parity(fast: onnx.ModelProto, model: onnx.ModelProto, spec: FeatureSpec, mean, scale, window: int,
                      horizon: int, n_levels: int, panel: dict, tolerance: float) -> dict:
    """The fast graph against the careful path on real windows: every window accepted, forecasts within
    `tolerance` relative; raises ValueError naming the worst otherwise."""
    from volmargin_serving.runtime import FAST_DISABLED_OPTIMIZERS

    from volmargin.export import session

    rows = spec.history_days(window)
    daily, days = parity_windows(panel, rows)
    variance, tails = careful_forecasts(model, spec, mean, scale, window, horizon, n_levels, daily, days)
    ok, fast_variance, fast_tails = session(fast, FAST_DISABLED_OPTIMIZERS).run(None, {"daily": daily, "days": days,
                                                              "bounds": np.array([days[:, -1].min(), days[:, -1].max()])})
    if not ok.all():
        raise ValueError(f"the fast path flags real window {int(np.argmin(ok))} that the careful path accepts")
    reference = np.column_stack([variance, tails.reshape(len(tails), -1)])
    got = np.column_stack([fast_variance, fast_tails.reshape(len(fast_tails), -1)])
    error = np.abs(got - reference) / np.maximum(np.abs(reference), np.finfo(float).tiny)  # variances are ~1e-3
    worst = float(np.max(error))
    if not worst <= tolerance:
        row, column = np.unravel_index(int(np.argmax(error)), error.shape)
        raise ValueError(f"the fast path differs from the careful path by {worst:.3g} (limit {tolerance:g}) at "
                         f"window {row}, output {column}")
    return {"rows": len(daily), "max_error": worst, "identical": float(np.mean(got == reference))}
