"""The incremental serving state (`volmargin_serving.stream`): it follows the numpy core, the one feature
definition training uses, over 1,000+ real days (features within float32 rounding, forecasts within 1e-9
of the careful path's); a refused row raises the careful path's own error and leaves the state as it was;
its row check is `validation.value_problems`.

Tiny nn and gbm models are trained once on a synthetic panel (tests/serving_fixtures.py).
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from serving_fixtures import bundles, panel  # noqa: F401 (fixtures)

import volmargin_serving as vs
from volmargin.data import load_bars
from volmargin.features.realized import daily_measures
from volmargin.serving_graph import parity_windows
from volmargin_serving.features import FEATURE_NAMES, INPUT_COLUMNS, compute_features, standardize
from volmargin_serving.outputs import postprocess, postprocess_one
from volmargin_serving.validation import value_problems

REAL_FILES = ("binance_btcusdt_1h.csv.gz", "binance_ethusdt_1h.csv.gz", "binance_solusdt_1h.csv.gz")
REAL_SPAN = ("2020-09-01", "2023-12-31")  # 1,217 days, every one of them present in the three files
COLUMN = {name: j for j, name in enumerate(INPUT_COLUMNS)}


def _arrays(daily: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    inputs = np.column_stack([daily[c].to_numpy(dtype=float) for c in INPUT_COLUMNS])
    return inputs, daily.index.tz_convert(None).to_numpy().astype("datetime64[D]")


@pytest.fixture(scope="module")
def real(shared_data) -> tuple[np.ndarray, np.ndarray]:
    """(assets, days, columns) daily inputs of the real files over REAL_SPAN and their dates (days,)."""
    paths = [shared_data / name for name in REAL_FILES]
    if not all(path.is_file() for path in paths):
        pytest.skip(f"{REAL_FILES} not all in {shared_data}")
    arrays = [_arrays(daily_measures(load_bars(path).loc[REAL_SPAN[0]:REAL_SPAN[1]])) for path in paths]
    days = arrays[0][1]
    assert all(np.array_equal(d, days) for _, d in arrays) and (np.diff(days.astype(np.int64)) == 1).all()
    inputs = np.stack([x for x, _ in arrays])
    assert np.isfinite(inputs).all()
    return inputs, days


def _core(runtime, inputs: np.ndarray, days: np.ndarray) -> np.ndarray:
    """Standardized features of every row of one asset's history by the numpy core, as training builds them."""
    columns = {name: inputs[:, j] for name, j in COLUMN.items()}
    columns["complete"] = columns["complete"] > 0.5
    features, _ = compute_features(columns, (days.astype(np.int64) + 3) % 7, runtime.spec)
    return standardize(features[..., :runtime.core_width], runtime.mean, runtime.scale)


def _within_float32_rounding(got: np.ndarray, expected: np.ndarray, slack: np.ndarray | float = 0.0) -> None:
    """Equal, or one float32 step apart (a float64 value rounded the other way), plus `slack` per column."""
    step = np.spacing(np.abs(expected)) + slack
    assert (np.abs(got - expected) <= step).all(), (np.argwhere(np.abs(got - expected) > step)[:5],
                                                     np.max(np.abs(got - expected) / step))


def _dispersion_slack(runtime, inputs: np.ndarray) -> np.ndarray:
    """Per standardized column, what rounding alone can move rv_disp = sqrt(mean(log rv^2) - level^2) where
    the window's log RVs are (nearly) all equal: the difference of two means of up to level_days terms as
    large as the largest log rv^2 is exact only to level_days x eps x that, and the square root of such a
    rounding residue can be ~1e-6; running sums and the core's cumulative sums leave different residues."""
    slack = np.zeros(len(runtime.mean))
    largest = np.max(np.log(np.maximum(inputs[..., COLUMN["rv"]], 1e-12)) ** 2)
    column = FEATURE_NAMES.index("rv_disp")
    slack[column] = np.sqrt(runtime.spec.level_days * np.finfo(float).eps * largest) / runtime.scale[column]
    return slack


def _stream(runtime, inputs: np.ndarray, days: np.ndarray):
    """Both states started from the first history_days rows and updated with every later one: their
    newest standardized feature rows and forecasts (variance, var, es) per update."""
    history = runtime.history_days
    single = runtime.stream(inputs[0, :history], days[:history], as_of=days[history - 1])
    batch = runtime.stream(inputs[:, :history], days[:history], as_of=days[history - 1])
    features = {"single": [], "batch": []}
    forecasts = {"single": [], "batch": []}
    for t in range(history, len(days)):
        one = single.update(inputs[0, t], days[t], as_of=days[t])
        many, errors = batch.update(inputs[:, t], days[t], as_of=days[t])
        assert errors == [None] * len(inputs)
        slot = days[t].astype(np.int64) % runtime.window
        features["single"].append(single._features[slot].copy())
        features["batch"].append(batch.features[:, slot].copy())
        forecasts["single"].append((one.variance, one.var, one.es))
        forecasts["batch"].append((many.variance, many.var, many.es))
    return features, forecasts


@pytest.mark.parametrize("name", ["gbm", "nn", "blend", "gbm_level"])
def test_state_follows_the_core_on_over_a_thousand_real_days(bundles, real, name):
    """The shared-definition test: a state whose update formulas drift from `compute_features` (training's
    features) or from the careful path fails here."""
    runtime = vs.load(bundles[name], fast=False)
    inputs, days = real
    history = runtime.history_days
    features, forecasts = _stream(runtime, inputs, days)
    assert len(features["single"]) >= 1000
    for k in range(len(inputs)):
        core = _core(runtime, inputs[k], days)[history:]
        _within_float32_rounding(np.stack([f[k] for f in features["batch"]]), core)
        if k == 0:
            _within_float32_rounding(np.stack(features["single"]), core)
        # the careful path's forecasts (batch scoring: every row of the history)
        careful = runtime.forecast_history(inputs[k], days)
        for path in ("single", "batch") if k == 0 else ("batch",):
            row = 0 if path == "single" else k
            for i, expected in enumerate((careful.variance, careful.var, careful.es)):
                got = np.stack([f[i][row] for f in forecasts[path]])
                np.testing.assert_allclose(got, expected[1:], rtol=1e-9)


def _edge_inputs(panel: dict[str, pd.DataFrame]) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic history with the cases real BTC days lack: a run of incomplete days longer than the
    level window (level from all days, empty complete-day means), rv = bv = 0, rv = 0 < bv, zero volume
    and ranges."""
    inputs, days = _arrays(next(iter(panel.values())))
    inputs = inputs.copy()
    inputs[150:230, COLUMN["complete"]] = 0.0
    for t in (250, 251, 300):
        inputs[t, [COLUMN["rv"], COLUMN["bv"], COLUMN["ret"]]] = 0.0
    inputs[260, [COLUMN["rv"], COLUMN["ret"]]] = 0.0
    inputs[270, COLUMN["volume"]] = 0.0
    inputs[280, [COLUMN["parkinson"], COLUMN["rogers_satchell"]]] = 0.0
    assert not value_problems(inputs).any()
    return inputs, days


@pytest.mark.parametrize("name", ["gbm", "nn", "blend", "gbm_level"])
def test_state_follows_the_core_through_missing_and_zero_days(bundles, panel, name):
    runtime = vs.load(bundles[name], fast=False)
    inputs, days = _edge_inputs(panel)
    features, forecasts = _stream(runtime, inputs[None], days)
    core = _core(runtime, inputs, days)[runtime.history_days:]
    slack = _dispersion_slack(runtime, inputs)  # the run of incomplete days leaves one complete day in the window
    _within_float32_rounding(np.stack(features["single"]), core, slack)
    _within_float32_rounding(np.stack([f[0] for f in features["batch"]]), core, slack)
    careful = runtime.forecast_history(inputs, days)
    for path in ("single", "batch"):  # the rv_disp residue reaches the forecasts: 4e-9 relative seen
        np.testing.assert_allclose(np.concatenate([f[0] for f in forecasts[path]]), careful.variance[1:], rtol=1e-7)


def _corruptions(row: np.ndarray, day: np.datetime64) -> dict[str, tuple[np.ndarray, np.datetime64, np.datetime64]]:
    """name -> (row, date, as_of) each refused by the careful path (as_of: the date unless said)."""
    def changed(column: str, value: float) -> np.ndarray:
        bad = row.copy()
        bad[COLUMN[column]] = value
        return bad

    one = np.timedelta64(1, "D")
    return {
        "nan": (changed("rv", np.nan), day, day),
        "infinite volume": (changed("volume", np.inf), day, day),
        "negative bv": (changed("bv", -1e-6), day, day),
        "flag 0.5": (changed("complete", 0.5), day, day),
        "impossible return": (changed("ret", 10.0), day, day),
        "gap": (row, day + one, day + one),
        "same day again": (row, day - one, day),
        "after as_of": (row, day, day - one),
        "stale": (row, day, day + 5 * one),
    }


def _snapshot(state) -> dict:
    """Every field of the state but its runtime and its model calls (bound to its own buffers)."""
    return copy.deepcopy({key: value for key, value in vars(state).items() if key not in ("runtime", "_model")})


def _assert_same(before: dict, after: dict) -> None:
    assert before.keys() == after.keys()
    for key, value in before.items():
        if isinstance(value, (np.ndarray, list)):
            same = np.array_equal(np.asarray(value, dtype=float), np.asarray(after[key], dtype=float), equal_nan=True)
            assert same, key
        elif not isinstance(value, dict):
            assert value == after[key], key


@pytest.mark.parametrize("name", ["gbm", "nn", "blend", "gbm_level"])
def test_refused_row_raises_the_careful_error_and_leaves_the_state_unchanged(bundles, panel, name):
    runtime, careful = vs.load(bundles[name]), vs.load(bundles[name], fast=False)
    inputs, days = _arrays(next(iter(panel.values())))
    history, t = runtime.history_days, runtime.history_days + 20
    start = (inputs[t - history:t], days[t - history:t])
    reference = runtime.stream(*start, as_of=days[t - 1]).update(inputs[t], days[t], as_of=days[t])
    for what, (row, date, as_of) in _corruptions(inputs[t], days[t]).items():
        with pytest.raises(vs.InputError) as expected:
            careful.forecast_daily(np.vstack([start[0], row]), np.append(start[1], date), as_of=as_of)
        single = runtime.stream(*start, as_of=days[t - 1])
        batch = runtime.stream(np.stack([start[0], inputs[t - history - 5:t - 5]]),
                               np.stack([start[1], days[t - history - 5:t - 5] + 5]), as_of=days[t - 1])
        before, before_batch = _snapshot(single), _snapshot(batch)
        with pytest.raises(vs.InputError) as got:
            single.update(row, date, as_of=as_of)
        assert (type(got.value), str(got.value)) == (type(expected.value), str(expected.value)), what
        _assert_same(before, _snapshot(single))
        # in a batch, only the bad asset is refused; the other is served (no future or stale day here)
        if what not in ("after as_of", "stale"):
            clean = runtime.stream(np.stack([start[0], inputs[t - history - 5:t - 5]]),
                                   np.stack([start[1], days[t - history - 5:t - 5] + 5]), as_of=days[t - 1])
            served, _ = clean.update(np.stack([inputs[t], inputs[t - 5]]), np.stack([days[t], days[t]]), as_of=as_of)
            out, errors = batch.update(np.stack([row, inputs[t - 5]]), np.stack([date, days[t]]), as_of=as_of)
            assert (type(errors[0]), str(errors[0])) == (type(expected.value), str(expected.value)), what
            assert errors[1] is None and np.isnan(out.variance[0]) and np.isfinite(out.variance[1])
            # the other asset's figures are those of the batch without the bad row, to the last bit
            for field in ("variance", "var", "es"):
                np.testing.assert_array_equal(getattr(out, field)[1], getattr(served, field)[1], err_msg=what)
            after = _snapshot(batch)
            for key in ("terms", "squares", "levels", "features", "rows", "day", "sums"):
                assert np.array_equal(before_batch[key][0], after[key][0]), (what, key)
        # and the state serves the next good day as if the bad row had never come
        again = single.update(inputs[t], days[t], as_of=days[t])
        np.testing.assert_array_equal(again.variance, reference.variance)


def test_row_check_is_the_validation_rule(bundles, panel):
    """The one-asset state's plain-Python check refuses exactly the rows `validation.value_problems` flags."""
    runtime = vs.load(bundles["gbm"])
    inputs, days = _arrays(next(iter(panel.values())))
    history = runtime.history_days
    state = runtime.stream(inputs[:history], days[:history], as_of=days[history - 1])
    rng = np.random.default_rng(7)
    specials = np.array([np.nan, np.inf, -np.inf, -1e-9, -0.0, 0.0, 0.5, 1.0, 2.0, 1e-300, 1e300, -1e300])
    flagged = 0
    for _ in range(2000):
        row = inputs[rng.integers(len(inputs))].copy()
        for column in rng.choice(len(INPUT_COLUMNS), size=rng.integers(1, 3), replace=False):
            row[column] = rng.choice(specials)
        refused = bool(value_problems(row[None, None])[0, 0])
        flagged += refused
        assert state._possible(row.tolist()) is not refused, row
    assert 0 < flagged < 2000


def test_wrong_call_shapes_and_types_raise_typed_errors(bundles, panel):
    runtime = vs.load(bundles["nn"])
    inputs, days = _arrays(next(iter(panel.values())))
    history = runtime.history_days
    single = runtime.stream(inputs[:history], days[:history], as_of=days[history - 1])
    batch = runtime.stream(inputs[None, :history], days[:history], as_of=days[history - 1])
    with pytest.raises(vs.InputDtypeError):
        single.update(inputs[history].astype(np.int64), days[history], as_of=days[history])
    with pytest.raises(vs.InputShapeError):
        single.update(inputs[history, :5], days[history], as_of=days[history])
    with pytest.raises(vs.InputDtypeError):
        single.update(inputs[history], "2020-01-01", as_of=days[history])
    with pytest.raises(vs.InputShapeError):
        batch.update(inputs[history:history + 2], days[history], as_of=days[history])
    with pytest.raises(vs.InputShapeError):  # too little history to start from: the careful path's error
        runtime.stream(inputs[:history - 1], days[:history - 1], as_of=days[history - 2])
    out = single.update(inputs[history], days[history], as_of=days[history])
    assert np.isfinite(out.variance).all()
    refused = inputs[history].copy()
    refused[COLUMN["rv"]] = -1.0
    out, errors = batch.update(refused[None], days[history], as_of=days[history])  # every asset refused
    assert isinstance(errors[0], vs.ImpossibleInputError) and np.isnan(out.variance).all() and np.isnan(out.var).all()


def test_one_asset_post_processing_is_the_shared_one():
    """`outputs.postprocess_one` (the one-asset state's) gives `outputs.postprocess`'s figures."""
    rng = np.random.default_rng(3)
    for n_levels in (1, 2, 3):
        raw = rng.normal(size=(1, 1 + 4 * n_levels)).astype(np.float32)
        log_level = float(rng.normal(-8.0, 1.0))
        for got, expected in zip(postprocess_one(raw, log_level, n_levels),
                                 postprocess(raw, np.array([log_level]), n_levels)):
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=1e-15)
    # an absurd level (a finite rv near the float64 limit): inf as numpy gives it, not OverflowError
    raw = np.array([[1.0, -2.0, -2.5, 2.0, 2.5]], dtype=np.float32)
    with np.errstate(over="ignore"):  # numpy says so; the point is the value
        numpy_form = postprocess(raw, np.array([709.0]), 1)
    for got, expected in zip(postprocess_one(raw, 709.0, 1), numpy_form):
        np.testing.assert_array_equal(got, expected)
    assert np.isinf(postprocess_one(raw, 709.0, 1)[0]).all()


@pytest.mark.parametrize("name", ["gbm", "nn", "blend"])
def test_bound_model_reads_the_buffers_as_they_are_at_each_call(bundles, name):
    """`Runtime.bind_model` (the one-asset state's model call): the output of `run_model` on each window's
    current contents, written into the bound output buffer; other buffers are refused."""
    runtime = vs.load(bundles[name])
    rng = np.random.default_rng(11)
    window, width = runtime.window, len(runtime.mean)
    buffer = np.zeros((2 * window, width), dtype=np.float32)
    raw = np.zeros((1, 1 + 4 * len(runtime.levels)), dtype=np.float32)
    calls = runtime.bind_model([buffer[None, slot + 1:slot + 1 + window] for slot in range(window)], raw)
    for _ in range(3):  # new contents each time: the calls read the memory, not a copy made at binding
        buffer[:] = rng.normal(size=buffer.shape)
        for slot, call in enumerate(calls):
            call()
            np.testing.assert_array_equal(raw, runtime.run_model(buffer[None, slot + 1:slot + 1 + window]))
    with pytest.raises(vs.InputDtypeError):
        runtime.bind_model([buffer[None, :window].astype(np.float64)], raw)
    with pytest.raises(vs.InputDtypeError):
        runtime.bind_model([buffer[None, :window]], raw.astype(np.float64))
    strided = np.zeros((1, window, 2 * width), dtype=np.float32)[:, :, ::2]
    with pytest.raises(vs.InputDtypeError):  # a strided view would be read as if contiguous
        runtime.bind_model([strided], raw)


@pytest.mark.parametrize("name", ["gbm", "blend"])
def test_a_refused_row_leaves_the_other_assets_forecasts_to_the_last_bit(bundles, real, name):
    """A batch of 12 real windows (three files at four offsets), one asset's row refused in turn: the
    others' forecasts equal those of the same update without the bad row, bit for bit (the model's kernels
    round by an element's place in the batch on some machines, so the model must see the same batch)."""
    runtime = vs.load(bundles[name])
    history, offsets = runtime.history_days, (0, 97, 211, 353)
    span = history + 24
    inputs = np.stack([real[0][i, o:o + span] for o in offsets for i in range(len(real[0]))])
    days = real[1][:span]
    for t in range(history, span):
        start = (inputs[:, t - history:t], days[t - history:t])
        clean, _ = runtime.stream(*start, as_of=days[t - 1]).update(inputs[:, t], days[t], as_of=days[t])
        bad_rows = inputs[:, t].copy()
        refused = t % len(inputs)
        bad_rows[refused, COLUMN["rv"]] = np.nan
        got, errors = runtime.stream(*start, as_of=days[t - 1]).update(bad_rows, days[t], as_of=days[t])
        assert errors[refused] is not None and np.isnan(got.variance[refused])
        others = np.arange(len(inputs)) != refused
        for field in ("variance", "var", "es"):
            np.testing.assert_array_equal(getattr(got, field)[others], getattr(clean, field)[others])


# --- session 27's mutation audit of the incremental state and the fast graph: a stale row in the batch state,
# yesterday's row at the age limit, running sums after a huge day, returns just past the bound

ONE = np.timedelta64(1, "D")


def test_both_states_refuse_a_stale_row_and_serve_yesterday_s_row_at_the_age_limit(bundles, panel):
    """max_age_days = 1: a row dated as_of's day or the day before is served (the usual case: yesterday closed,
    as_of is now), as the careful path serves it; one 5 days old is the careful path's StaleInputError,
    in the one-asset state and in the batch state alike."""
    runtime = vs.load(bundles["gbm"])
    inputs, days = _arrays(next(iter(panel.values())))
    history, t = runtime.history_days, runtime.history_days + 20
    start = (inputs[t - history:t], days[t - history:t])
    for as_of in (days[t] + ONE, (days[t] + ONE).astype("datetime64[s]") + np.timedelta64(13, "h")):
        careful = runtime.forecast_daily(np.vstack([start[0], inputs[t]]), np.append(start[1], days[t]), as_of=as_of)
        single = runtime.stream(*start, as_of=days[t - 1]).update(inputs[t], days[t], as_of=as_of)
        np.testing.assert_allclose(single.variance, careful.variance, rtol=1e-9)
        out, errors = runtime.stream(start[0][None], start[1], as_of=days[t - 1]).update(inputs[t][None], days[t],
                                                                                          as_of=as_of)
        assert errors == [None]
        np.testing.assert_allclose(out.variance, careful.variance, rtol=1e-9)
    stale = days[t] + 5 * ONE
    with pytest.raises(vs.StaleInputError):
        runtime.stream(*start, as_of=days[t - 1]).update(inputs[t], days[t], as_of=stale)
    batch = runtime.stream(start[0][None], start[1], as_of=days[t - 1])
    before = batch.day.copy()
    out, errors = batch.update(inputs[t][None], days[t], as_of=stale)
    assert isinstance(errors[0], vs.StaleInputError) and np.isnan(out.variance).all()
    assert (batch.day == before).all()


@pytest.mark.parametrize("name", ["gbm", "nn"])
def test_running_sums_forget_a_huge_day_once_it_left_every_window(bundles, panel, name):
    """A day a trillion times the usual rv and traded value leaves a residue of ~1e-4 of the usual sums
    when it is subtracted again; the periodic re-basing clears it: once the day is out of every window and
    every sum re-based, the forecast is the careful path's on the same rows."""
    runtime = vs.load(bundles[name], fast=False)
    inputs, days = _arrays(next(iter(panel.values())))
    inputs = inputs.copy()
    history = runtime.history_days
    spike = history + 3
    for column in ("rv", "bv", "parkinson", "rogers_satchell", "traded_value"):
        inputs[spike, COLUMN[column]] *= 1e12
    single = runtime.stream(inputs[:history], days[:history], as_of=days[history - 1])
    batch = runtime.stream(inputs[None, :history], days[:history], as_of=days[history - 1])
    end = spike + max(history, 2 * single._ring) + 2
    assert end < len(days)
    for t in range(history, end):
        one = single.update(inputs[t], days[t], as_of=days[t])
        many, errors = batch.update(inputs[None, t], days[t], as_of=days[t])
        assert errors == [None]
    careful = runtime.forecast_daily(inputs[end - history:end], days[end - history:end], as_of=days[end - 1])
    for got in (one, many):
        for field in ("variance", "var", "es"):
            np.testing.assert_allclose(getattr(got, field), getattr(careful, field), rtol=1e-9, err_msg=field)


@pytest.mark.parametrize("name", ["gbm", "nn"])
def test_a_day_in_the_wrong_unit_leaves_no_trace_once_it_left_the_window(bundles, panel, name):
    """Session 30's red team: a day's traded value x1e20 (wei for ether) left the running sums at 0 or below for up
    to 90 days after it left every window, until their periodic re-base: forecasts 8% off the careful path's,
    unflagged. A sum is re-based at once when the term leaving it dwarfs what is left."""
    runtime = vs.load(bundles[name], fast=False)
    inputs, days = _arrays(next(iter(panel.values())))
    inputs = inputs.copy()
    history = runtime.history_days
    spike = history + 3
    inputs[spike, COLUMN["traded_value"]] *= 1e20
    inputs[spike, COLUMN["rv"]] *= 1e10
    inputs[spike, COLUMN["bv"]] *= 1e10
    single = runtime.stream(inputs[:history], days[:history], as_of=days[history - 1])
    batch = runtime.stream(inputs[None, :history], days[:history], as_of=days[history - 1])
    end = spike + 2 * single._ring
    assert end < len(days)
    for t in range(history, end):
        one = single.update(inputs[t], days[t], as_of=days[t])
        many, _ = batch.update(inputs[None, t], days[t], as_of=days[t])
        if t >= spike + single._ring:  # out of every mean's window: every day from then on, not only after re-bases
            exact = batch.sums.copy()
            batch._rebase(np.arange(1))  # every sum from its ring: what the running sums must hold
            np.testing.assert_allclose(exact, batch.sums, rtol=1e-9, err_msg=str(days[t]))
            np.testing.assert_allclose(single._sums, batch.sums[0], rtol=1e-9, err_msg=str(days[t]))
            careful = runtime.forecast_daily(inputs[t - history + 1:t + 1], days[t - history + 1:t + 1], as_of=days[t])
            for got in (one, many):  # the core's cumulative sums carry the spike's rounding: ~1e-7 of a feature
                np.testing.assert_allclose(got.variance, careful.variance, rtol=1e-6, err_msg=str(days[t]))


def test_a_return_just_beyond_the_bound_and_a_tiny_negative_value_are_refused_on_every_path(bundles, panel):
    """ret^2 = 1440 rv (1 + 2e-8) (beyond validation's 1e-9 slack) and bv = -1e-300 or -5e-324 are
    refused by the careful path; the fast graph flags them (ok False) and both incremental states refuse them."""
    runtime = vs.load(bundles["gbm"])
    history = runtime.history_days
    daily, days = parity_windows(panel, history + 1, count=8)
    x, d = daily[0], days[0].astype("datetime64[D]")
    bad_rows = []
    row = x[-1].copy()
    row[COLUMN["ret"]] = np.sqrt(1440 * row[COLUMN["rv"]]) * (1 + 1e-8)
    bad_rows.append(row)
    for value in (-1e-300, -5e-324):
        row = x[-1].copy()
        row[COLUMN["bv"]] = value
        bad_rows.append(row)
    for row in bad_rows:
        window = np.vstack([x[1:-1], row])
        with pytest.raises(vs.ImpossibleInputError):
            runtime._forecast_daily(window, d[1:], d[-1])
        ok = runtime._run_fast(window[None], d[1:].astype(np.int64)[None], int(d[-1].astype(np.int64)) - 1,
                               int(d[-1].astype(np.int64)))[0]
        assert not ok[0], row
        with pytest.raises(vs.ImpossibleInputError):
            runtime.stream(x[:-1], d[:-1], as_of=d[-2]).update(row, d[-1], as_of=d[-1])
        _, errors = runtime.stream(x[None, :-1], d[:-1], as_of=d[-2]).update(row[None], d[-1], as_of=d[-1])
        assert isinstance(errors[0], vs.ImpossibleInputError)
