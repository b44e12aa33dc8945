"""Property-based tests (hypothesis): random bad frames, files and arrays through the loader and every
serving entry point give a typed error, a valid result, or a flagged fail-safe margin that is never
below the margin of the same asset without the bad rows; never a traceback, never a silent NaN."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reliability_fixtures import ASSETS, build

import volmargin_serving as vs
from volmargin.data import load_bars, validate_bars
from volmargin.errors import DataError
from volmargin.features.learned import INPUT_COLUMNS

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
BAD_VALUES = [np.nan, np.inf, -np.inf, -1.0, -1e-12, 0.0, 0.5, 1e300, -1e300]
UNIT_COLUMNS = [INPUT_COLUMNS.index("volume"), INPUT_COLUMNS.index("traded_value")]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    return build(tmp_path_factory.mktemp("properties"))


# ------------------------------------------------------------------ the loader


def _clean_frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    high, low = np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999
    stamps = pd.date_range("2023-01-01", periods=n, freq="h", tz="UTC")
    return pd.DataFrame({"timestamp": stamps, "open": open_, "high": high, "low": low, "close": close,
                         "volume": rng.uniform(1, 10, n)})


@st.composite
def corrupted_frames(draw):
    frame = _clean_frame().astype({c: object for c in ("open", "high", "low", "close", "volume")})
    for _ in range(draw(st.integers(1, 4))):
        n = len(frame)
        if n == 0:
            break
        kind = draw(st.sampled_from(["value", "text", "swap_rows", "duplicate", "shift", "high_low", "drop_column",
                                     "extra_column", "empty"]))
        row = draw(st.integers(0, n - 1))
        column = draw(st.sampled_from(["open", "high", "low", "close", "volume"]))
        if kind == "value":
            frame.loc[row, column] = draw(st.sampled_from(BAD_VALUES))
        elif kind == "text":
            frame.loc[row, column] = draw(st.sampled_from(["", "abc", "1e", "NaN", "--"]))
        elif kind == "swap_rows":
            other = draw(st.integers(0, n - 1))
            frame.iloc[[row, other]] = frame.iloc[[other, row]].to_numpy()
        elif kind == "duplicate":
            frame = pd.concat([frame, frame.iloc[[row]]], ignore_index=True).reset_index(drop=True)
        elif kind == "shift":
            frame.loc[row, "timestamp"] = frame.loc[row, "timestamp"] + pd.Timedelta(minutes=draw(st.integers(-90, 90)))
        elif kind == "high_low" and {"high", "low"} <= set(frame):
            frame.loc[row, ["high", "low"]] = frame.loc[row, ["low", "high"]].to_numpy()
        elif kind == "drop_column" and column in frame:
            frame = frame.drop(columns=column)
        elif kind == "extra_column":
            frame["extra"] = 1.0
        elif kind == "empty":
            frame = frame.iloc[:0]
        # keep the value columns object (pandas may infer a str column after a concat of text cells, which
        # then refuses a float: a generator failure, not the loader's)
        frame = frame.astype({c: object for c in ("open", "high", "low", "close", "volume") if c in frame})
    return frame


def _assert_valid_bars(bars: pd.DataFrame) -> None:
    values = bars.to_numpy()
    assert np.isfinite(values).all() and (values[:, :4] > 0).all() and (values[:, 4] >= 0).all()
    assert (bars["high"] >= bars["low"]).all() and bars.index.is_monotonic_increasing and bars.index.is_unique


@SETTINGS
@given(frame=corrupted_frames())
def test_the_loader_gives_valid_bars_or_one_data_error(frame):
    try:
        bars = validate_bars(frame, source="random.csv")
    except DataError as exc:
        assert str(exc).startswith("random.csv") and "\n" not in str(exc)
        return
    _assert_valid_bars(bars)


@SETTINGS
@given(frame=corrupted_frames(), compress=st.booleans(), cut=st.integers(0, 400))
def test_files_of_corrupted_or_truncated_bars_load_or_fail_in_one_line(frame, compress, cut, tmp_path_factory):
    text = frame.to_csv(index=False).encode()
    data = gzip.compress(text) if compress else text
    data = data[:len(data) - cut] if cut < len(data) else data
    path = tmp_path_factory.mktemp("files") / ("bars.csv.gz" if compress else "bars.csv")
    path.write_bytes(data)
    try:
        bars = load_bars(path)
    except DataError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        return
    _assert_valid_bars(bars)


@SETTINGS
@given(data=st.binary(max_size=2000))
def test_random_bytes_never_crash_the_loader(data, tmp_path_factory):
    path = tmp_path_factory.mktemp("bytes") / "noise.parquet"
    path.write_bytes(data)
    try:
        _assert_valid_bars(load_bars(path))
    except DataError:
        pass


# ------------------------------------------------------------------ serving


@st.composite
def corruptions(draw, rows: int, columns: int):
    """A list of (kind, row, column, value) edits of one asset's daily inputs."""
    edits = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["value", "value", "value", "drop_row", "future_date", "duplicate_date",
                                     "int_dtype", "truncate", "text_cell", "text_dates", "unit"]))
        edits.append((kind, draw(st.integers(1, rows)), draw(st.integers(0, columns - 1)),
                      draw(st.sampled_from(BAD_VALUES))))
    return edits


def _apply(inputs: np.ndarray, dates: np.ndarray, edits, as_of) -> tuple[np.ndarray, np.ndarray]:
    inputs, dates = inputs.copy(), dates.copy()
    as_int = any(kind == "int_dtype" for kind, *_ in edits)
    text_cells = [(len(inputs) - min(back, len(inputs)), column) for kind, back, column, _ in edits if kind == "text_cell"]
    for kind, back, column, value in edits:
        row = len(inputs) - min(back, len(inputs))
        if kind == "value":
            inputs[row, column] = value
        elif kind == "unit":  # a volume (x 1000) or a traded value (/ 1000) in the wrong unit; both columns x 1000
            # on one day keep its average price, recognisable only above DOUBT_VOLUME_RATIO (README, Reliability)
            volume = column % 2 == 0
            inputs[row, UNIT_COLUMNS[0 if volume else 1]] *= 1e3 if volume else 1e-3
        elif kind == "drop_row" and len(inputs) > 1:  # a gap inside the window (dropping the newest row
            row = max(row - 1, 0)                          # is a matter of freshness, `max_age_days`)
            inputs, dates = np.delete(inputs, row, axis=0), np.delete(dates, row)
        elif kind == "future_date":
            dates[-1] = as_of + np.timedelta64(back, "D")
        elif kind == "duplicate_date" and len(dates) > 1:
            dates[row] = dates[row - 1]
        elif kind == "truncate":
            inputs, dates = inputs[-back:], dates[-back:]
    if as_int:
        with np.errstate(invalid="ignore"):
            inputs = np.nan_to_num(inputs, posinf=0, neginf=0).astype(np.int64)
    elif text_cells:  # a feed that sends text in a cell: the array holds objects
        inputs = inputs.astype(object)
        for row, column in text_cells:
            inputs[min(row, len(inputs) - 1), column] = "n/a"
    if any(kind == "text_dates" for kind, *_ in edits):
        dates = dates.astype("datetime64[D]").astype(str)
    return inputs, dates


def _finite(forecasts: vs.Forecasts) -> bool:
    return bool(np.isfinite(forecasts.variance).all() and (forecasts.variance > 0).all()
                and np.isfinite(forecasts.var).all() and np.isfinite(forecasts.es).all())


@SETTINGS
@given(data=st.data())
def test_forecast_daily_and_history_give_a_typed_error_or_finite_forecasts(served, data):
    runtime = vs.load(served.bundle)
    k = data.draw(st.integers(0, len(ASSETS) - 1))
    edits = data.draw(corruptions(runtime.history_days, len(INPUT_COLUMNS)))
    inputs, dates = _apply(served.inputs[k], served.dates[k], edits, served.as_of)
    for call in (lambda: runtime.forecast_daily(inputs, dates, as_of=served.as_of),
                 lambda: runtime.forecast_history(inputs, dates)):
        try:
            out = call()
        except vs.InputError as exc:
            assert "\n" not in str(exc)
            continue
        assert _finite(out), f"a silent non-finite forecast from {edits}"


@SETTINGS
@given(data=st.data())
def test_forecast_features_gives_a_typed_error_or_finite_forecasts(served, data):
    runtime = vs.load(served.bundle)
    shape = data.draw(st.sampled_from([(2, runtime.window, 12), (1, runtime.window, 12), (2, runtime.window + 1, 12),
                                       (2, 12), (0, runtime.window, 12)]))
    values = data.draw(st.lists(st.sampled_from([0.0, 1.0, -3.0, np.nan, np.inf, 1e30]), min_size=int(np.prod(shape)),
                                max_size=int(np.prod(shape))))
    dtype = data.draw(st.sampled_from([np.float32, np.float64, np.int64]))
    with np.errstate(invalid="ignore", over="ignore"):
        values = np.asarray(values) if dtype is not np.int64 else np.nan_to_num(values, posinf=0, neginf=0)
        features = values.astype(dtype).reshape(shape)
    level = np.asarray(data.draw(st.lists(st.sampled_from([-8.0, 0.0, np.nan]), min_size=shape[0], max_size=shape[0])))
    try:
        out = runtime.forecast_features(features, level)
    except vs.InputError:
        return
    assert _finite(out) or len(out.variance) == 0


@SETTINGS
@given(data=st.data())
def test_forecast_bars_gives_a_typed_error_or_finite_forecasts(served, data):
    runtime = vs.load(served.bundle, max_age_days=2)
    days = runtime.history_days + 2
    stamps = np.datetime64("2023-01-01T00", "h") + np.arange(days * 24).astype("timedelta64[h]")
    rng = np.random.default_rng(data.draw(st.integers(0, 3)))
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, len(stamps))))
    open_ = np.r_[100.0, close[:-1]]
    bars = np.column_stack([open_, np.maximum(open_, close) * 1.001, np.minimum(open_, close) * 0.999, close,
                            rng.uniform(1, 10, len(stamps))])
    for _ in range(data.draw(st.integers(1, 4))):
        row, column = data.draw(st.integers(0, len(bars) - 1)), data.draw(st.integers(0, 4))
        bars[row, column] = data.draw(st.sampled_from(BAD_VALUES))
    if data.draw(st.booleans()):
        stamps = stamps[::-1]
    as_of = stamps.max() + np.timedelta64(1, "h")
    try:
        out = runtime.forecast_bars(stamps, bars, as_of=as_of)
    except vs.InputError:
        return
    assert _finite(out)


def _margins_with_bad_rows(served, data):
    """Margins of every asset with bad rows in one asset's inputs, and the same without them."""
    clean_runtime = vs.load(served.bundle, calibration=served.calibration)
    k = data.draw(st.integers(0, len(ASSETS) - 1))
    previous = data.draw(st.sampled_from([None, 0.02, 0.1, 0.5]))
    previous = None if previous is None else np.full((len(ASSETS), 2), previous)
    without = clean_runtime.margins(ASSETS, served.inputs, served.dates, as_of=served.as_of, previous=previous)
    edits = data.draw(corruptions(clean_runtime.history_days, len(INPUT_COLUMNS)))
    inputs = list(served.inputs)
    dates = list(served.dates)
    inputs[k], dates[k] = _apply(served.inputs[k], served.dates[k], edits, served.as_of)
    runtime = vs.load(served.bundle, calibration=served.calibration)
    if any(kind in ("int_dtype", "truncate") for kind, *_ in edits):
        runtime.margins(ASSETS, served.inputs, served.dates, as_of=served.as_of, previous=previous)
    got = runtime.margins(ASSETS, inputs, dates, as_of=served.as_of, previous=previous)
    assert np.isfinite(got.initial).all() and ((got.initial > 0) & (got.initial <= 1)).all()
    assert ((got.haircut >= 0) & (got.haircut < 1)).all()
    if got.fail_safe[k].any():
        assert all(got.reason[k]), "a fail-safe margin without its reason"
    return got, without, k, edits, previous


@SETTINGS
@given(data=st.data())
def test_bad_rows_give_flagged_bounded_margins_and_never_touch_other_assets(served, data):
    got, without, k, edits, previous = _margins_with_bad_rows(served, data)
    others = [i for i in range(len(ASSETS)) if i != k]
    np.testing.assert_array_equal(got.initial[others], without.initial[others])
    assert not got.fail_safe[others].any()


@SETTINGS
@given(data=st.data())
def test_bad_rows_never_lower_a_margin_below_the_true_rows(served, data):
    """The asset's fail-safe margin and haircut are at least those of the same asset without the bad
    rows (same previous margins). Bad values, gaps, repeated or future dates: from a runtime with no
    memory of earlier margins (the repaired inputs bound it). Inputs unusable as a whole (integers, too
    few rows) say nothing of the true rows: there the bound is the last good margin the runtime priced."""
    got, without, k, edits, _ = _margins_with_bad_rows(served, data)
    assert (got.initial[k] >= without.initial[k] - 1e-12).all(), f"margin lowered by {edits}"
    assert got.haircut[k, 0] >= without.haircut[k, 0] - 1e-12, f"haircut lowered by {edits}"


# ------------------------------------------------------------------ portfolio and option margins


PORTFOLIO_ASSETS = ("btc", "eth", "sol", "doge")


def _scenarios(stress_mode: str):
    from volmargin_serving.portfolio import PortfolioPolicy, PortfolioScenarios

    rng = np.random.default_rng(3)
    z = rng.standard_t(4, size=(300, len(PORTFOLIO_ASSETS)))
    stress = rng.normal(0, 0.1, size=(10, len(PORTFOLIO_ASSETS)))
    return PortfolioScenarios(PORTFOLIO_ASSETS, z, np.arange(300).astype("datetime64[D]"), None, stress,
                              np.full(len(PORTFOLIO_ASSETS), 0.08), PortfolioPolicy(stress_mode=stress_mode,
                                                                                     concentration=0.1),
                              max_move=2.0)


@SETTINGS
@given(data=st.data())
def test_portfolio_margins_give_a_typed_error_or_a_finite_flagged_margin(data):
    """Random bad forecasts, volumes and positions: a typed error naming the position, or a finite margin
    at or above 0 with every held asset whose forecast or (under the add-on) volume is unusable flagged."""
    from volmargin_serving.portfolio import PortfolioEngine

    scenarios = _scenarios(data.draw(st.sampled_from(["none", "weight", "floor"])))
    n = len(PORTFOLIO_ASSETS)
    variance = np.array(data.draw(st.lists(st.sampled_from([4e-4, 1e-3, np.nan, np.inf, -1e-3, 0.0, 1e300]),
                                           min_size=n, max_size=n)))
    adv = np.array(data.draw(st.lists(st.sampled_from([1e9, 1e6, 0.0, np.nan]), min_size=n, max_size=n)))
    names = data.draw(st.lists(st.sampled_from([*PORTFOLIO_ASSETS, "unknown", ""]), min_size=0, max_size=6))
    notionals = data.draw(st.lists(st.sampled_from([1e6, -2e5, 0.0, np.nan, np.inf, -1e12]), min_size=len(names),
                                   max_size=len(names)))
    kinds = data.draw(st.lists(st.sampled_from(["perp", "spot", "option?"]), min_size=len(names), max_size=len(names)))
    try:
        engine = PortfolioEngine(scenarios, variance, adv)
        margin = engine.margin(names=names, notionals=notionals, kinds=kinds)
    except vs.InputError as exc:
        assert "\n" not in str(exc)
        return
    assert np.isfinite(margin.initial) and margin.initial >= 0 and margin.maintenance <= margin.initial
    unusable = {a for a, v in zip(PORTFOLIO_ASSETS, variance) if not (np.isfinite(v) and v > 0)}
    no_volume = {a for a, v in zip(PORTFOLIO_ASSETS, adv) if not (np.isfinite(v) and v > 0)}  # concentration 0.1
    held = {a for a, x in zip(names, notionals) if x != 0}
    assert set(margin.flagged) == (unusable | no_volume) & held


@SETTINGS
@given(data=st.data())
def test_option_margins_give_a_typed_error_or_a_finite_margin(data):
    """Random bad quotes (NaN or negative IV, price or strike, expired options, ragged arrays): an
    `OptionQuoteError` naming the option and field, or a finite, non-negative margin."""
    import volmargin_serving.options as vo

    n = data.draw(st.integers(1, 6))
    good = {"quantity": [-1.0] * n, "strike": [50_000.0] * n, "is_call": [True] * n, "days": [7.0] * n,
            "forward": [50_000.0] * n, "iv": [0.7] * n}
    bad = {"quantity": [np.nan, np.inf, 0.0, 1e9], "strike": [np.nan, -1.0, 0.0, 1e-9, 1e12],
           "days": [0.0, -3.0, np.nan, 1e-6, 400.0], "forward": [np.nan, 0.0, -5.0, 1e12], "iv": [np.nan, -0.2, 0.0, 50.0]}
    for _ in range(data.draw(st.integers(1, 4))):
        field = data.draw(st.sampled_from(sorted(bad)))
        good[field][data.draw(st.integers(0, n - 1))] = data.draw(st.sampled_from(bad[field]))
    if data.draw(st.booleans()):
        good["iv"] = good["iv"][:-1] or [0.7, 0.7]  # ragged
    try:
        margin = vo.option_margin(vo.book_from_positions(**good))
    except vs.InputError as exc:
        assert "\n" not in str(exc)
        return
    assert np.isfinite(margin.initial) and margin.initial >= 0 and np.isfinite(margin.fraction)
