"""The embedded runtime: load a verified bundle once, then forecast volatility, VaR and ES per tail.

    from volmargin_serving import load
    runtime = load("models/nn/1")                      # checksums, schema, golden self-test, warm-up
    out = runtime.forecast_daily(inputs, dates, as_of=today)   # one asset or a batch of assets
    out.volatility, out.var[:, 0, -1]                  # h-day vol; long VaR at the highest level

    runtime = load("models/nn/1", calibration="models/nn/1.calibration.json")  # bound to this bundle
    margins = runtime.margins(["BTC", "ETH"], inputs, dates, as_of=today)       # (assets, 2): long, short
    margins.initial, margins.fail_safe, margins.reason

    state = runtime.stream(inputs, dates, as_of=today)  # once; then each day only the newly closed rows:
    out, errors = state.update(rows, days, as_of=today)  # see volmargin_serving.stream

A `Runtime` is immutable after loading (but for a lock-guarded memory of each asset's last good margins,
the floor of its fail-safe margins) and ONNX Runtime sessions are thread-safe, so one runtime serves any
number of threads. `Server` holds the current runtime and swaps in a new bundle atomically.
"""

from __future__ import annotations

import copy
import threading
import zipfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import onnxruntime as ort

from volmargin_serving.bars import (
    aggregate_bars, bar_interval, daily_from_bars, default_min_bars, interval_text, learned_interval, to_nanoseconds,
)
from volmargin_serving.bundle import learned_bar_seconds, read_manifest, resolve_key, verify_files
from volmargin_serving.calibration import CalibrationSet
from volmargin_serving.errors import (
    BundleError, CalibrationError, GapInputError, ImpossibleInputError, InputDtypeError, InputError, InputShapeError,
    IntervalInputError, NonFiniteInputError, SelfTestError, ServingError, UnsortedInputError,
)
from volmargin_serving.features import (
    INPUT_COLUMNS, IV_FEATURE_NAMES, MIN_IV_INDEX, FeatureSpec, compute_features, compute_iv_features, core_width,
    horizon_level, standardize,
)
from volmargin_serving.margins import Margins, larger, price
from volmargin_serving.outputs import SIDES, Forecasts, postprocess
from volmargin_serving.repairs import READINGS, calendar_days, carried, float_cells, readings
from volmargin_serving.validation import (check_bars, check_dates, check_values, doubt_message, doubtful_values,
                                         served_float)

_EPOCH_WEEKDAY = 3  # 1970-01-01 was a Thursday (Monday = 0)
_CHUNK = 64  # assets per feature computation in a batch (see forecast_daily)
# The golden self-test's tolerance is the runtime's, never the bundle's: a manifest cannot loosen it.
SELF_TEST_RTOL = 1e-5
MEMORY_DAYS = 3  # days of normally priced margins kept per asset, to chain a re-priced or backfilled day from
# ONNX Runtime's NoopElimination drops a Mul by a float64 constant that is 1 in float32 (the 1 + 1e-9 of
# the return check, `validation._return_too_large`): the fast graph would then accept a return numpy refuses.
FAST_DISABLED_OPTIMIZERS = ("NoopElimination",)


def _weekday(days: np.ndarray) -> np.ndarray:
    """0 = Monday .. 6 = Sunday of datetime64[D] days, as the features take it."""
    return (days.astype(np.int64) + _EPOCH_WEEKDAY) % 7


_RV, _BV, _COMPLETE = (INPUT_COLUMNS.index(name) for name in ("rv", "bv", "complete"))


def _no_bv(windows: np.ndarray) -> np.ndarray:
    """(..., days) True on a day with an rv but no bipower variation (bv < rv / 10^4)."""
    return (windows[..., _BV] < windows[..., _RV] / 1e4) & (windows[..., _RV] > 0)


def partial_days(windows: np.ndarray) -> np.ndarray:
    """(assets,) True where an (assets, days, columns) window holds a day `Runtime._read_days_whole` reads
    whole: an incomplete day, or one with an rv but no bipower variation."""
    return ((windows[..., _COMPLETE] < 0.5) | _no_bv(windows)).any(axis=-1)


# datetime64 units finer than nanoseconds span a few hours around 1970: a day does not convert to them
_TOO_FINE = ("ps", "fs", "as")


def _as_days(dates: np.ndarray) -> np.ndarray:
    dates = np.asarray(dates)
    if not np.issubdtype(dates.dtype, np.datetime64) or np.datetime_data(dates.dtype)[0] in _TOO_FINE:
        raise InputDtypeError(f"dates must be numpy datetime64 (UTC days), got dtype {dates.dtype}")
    return dates.astype("datetime64[D]")


def _check_floats(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    if not served_float(values.dtype):
        raise InputDtypeError(f"{name} must be float32 or float64, got dtype {values.dtype}")
    if not np.isfinite(values).all():
        where = np.argwhere(~np.isfinite(values))[0].tolist()
        raise NonFiniteInputError(f"{name} has NaN or infinite values (first at index {where})")
    return values


def _instant(as_of: np.datetime64 | None) -> np.datetime64:
    """`as_of` as a numpy instant (None: now); InputDtypeError where it is none (e.g. 'yesterday', NaN, NaT)."""
    if as_of is None:
        return np.datetime64("now")
    try:
        instant = np.datetime64(as_of)
    except (TypeError, ValueError):
        instant = np.datetime64("NaT")
    too_fine = np.datetime_data(instant.dtype)[0] in _TOO_FINE
    if np.isnat(instant) or isinstance(as_of, (int, float, np.number)) or too_fine:  # an int: a count of units
        raise InputDtypeError(f"as_of must be a date or instant (numpy datetime64, datetime or ISO string), "
                              f"got {as_of!r}")
    return instant


def _iv_array(iv) -> np.ndarray:
    """The IV index as floats; InputDtypeError where it is not numbers."""
    try:
        return np.asarray(iv, dtype=float)
    except (TypeError, ValueError):
        raise InputDtypeError(f"iv must be numbers (annualised %, NaN where there is no index), got {iv!r:.80}") from None


def _bad_iv(iv: np.ndarray) -> tuple[np.ndarray, InputError | None]:
    """The cells of an IV index that are not a possible level (infinite, <= 0, or below `MIN_IV_INDEX`, a
    fraction given for a percentage) and the error naming the first; NaN is no index, not a bad one."""
    with np.errstate(invalid="ignore"):
        bad = np.isinf(iv) | (iv <= 0)
        fraction = ~bad & (iv < MIN_IV_INDEX)
    if bad.any():
        return bad | fraction, NonFiniteInputError(f"iv must be > 0 and finite or NaN (first bad at "
                                                   f"{np.argwhere(bad)[0].tolist()})")
    if fraction.any():
        return fraction, ImpossibleInputError(f"iv is {float(iv[fraction][0])!r} at {np.argwhere(fraction)[0].tolist()}, "
                                              f"below {MIN_IV_INDEX:g}: the index is annualised percent (65 for 65%)")
    return bad, None


def _per_asset(values, n: int, name: str) -> list:
    """One entry per asset of a batch argument: the rows of an array or the items of a sequence (None:
    no data for that asset). A count that differs from the assets' is the caller's error, not an asset's."""
    got = None if values is None or not hasattr(values, "__len__") else len(values)
    if got != n:
        raise InputShapeError(f"{name} must have one entry per asset ({n}), "
                              f"got {got if got is not None else repr(values)}")
    return list(values)


def _take(out: Forecasts, place: np.ndarray) -> Forecasts:
    """The forecasts of the assets at `place` (a mask or indices) of a batch."""
    return Forecasts(out.variance[place], out.var[place], out.es[place], out.levels, out.horizon)


def _previous(previous, n: int) -> np.ndarray | None:
    """Yesterday's initial margins (assets, 2), NaN where there is none. Invalid values raise: they are
    the service's own state, and dropping them would lift the speed limit on a falling margin."""
    if previous is None:
        return None
    try:
        previous = np.asarray(previous, dtype=float)
    except (TypeError, ValueError):  # text, a mapping, a ragged list
        raise InputDtypeError("previous must be an array of numbers (assets, 2): long, short per asset") from None
    if previous.shape != (n, len(SIDES)):
        raise InputShapeError(f"previous must have shape ({n}, {len(SIDES)}): long, short per asset; "
                              f"got {previous.shape}")
    if ((previous <= 0) | (previous > 1)).any():
        raise InputError("previous margins must lie in (0, 1] (NaN: none)")
    return previous


def _some(inputs, dates) -> None:
    """InputShapeError for a batch of no asset or no day (ONNX Runtime aborts the process on an empty batch),
    or dates that are not one per row of the inputs (numpy's broadcast error, deep in the features, before)."""
    try:
        rows, days = np.shape(inputs), np.shape(dates)
    except ValueError:  # a ragged sequence
        raise InputShapeError("inputs and dates must be rectangular arrays") from None
    if 0 in rows or 0 in days:
        raise InputShapeError(f"inputs {rows} and dates {days} hold no asset or no day")
    if len(rows) >= 2 and days not in (rows[-2:-1], rows[:-1]):
        shapes = f"{rows[-2:-1]}" + (f" or {rows[:-1]}" if len(rows) > 2 else "")
        raise InputShapeError(f"dates {days} must have shape {shapes}: one per row of inputs {rows}")


def _distinct(assets: tuple) -> tuple[str, ...]:
    """Asset names of a batch: non-empty strings, each once (a repeated name would price one asset's rows
    with another's terms and memory)."""
    if not assets:
        raise InputShapeError("assets is empty: give at least one asset")
    if not all(isinstance(a, str) and a for a in assets):
        bad = [a for a in assets if not (isinstance(a, str) and a)]
        raise InputDtypeError(f"asset names must be non-empty strings, got {bad[:3]}")
    if len(set(assets)) < len(assets):
        raise InputShapeError(f"asset {next(a for a in assets if assets.count(a) > 1)!r} appears twice in one batch")
    return assets


def _gap_in(dates: np.ndarray) -> str:
    """The careful path's refusal of a window whose dates skip a day (`validation.check_dates`), '' if none: a
    service refuses such a window (fail safe), so a scored table must not call it fine."""
    try:
        check_dates(_as_days(dates), np.datetime64(_as_days(dates)[-1]), np.timedelta64(1 << 40, "D"))
    except GapInputError as exc:
        return str(exc)
    return ""


def _check_sorted(name: str, values: np.ndarray) -> None:
    # NaT is the int64 minimum: after a date it read as sorted through the difference's overflow
    if np.issubdtype(values.dtype, np.datetime64) and np.isnat(values).any():
        raise InputDtypeError(f"{name} hold NaT (not a time)")
    if values.shape[-1] > 1 and not (np.diff(values.astype(np.int64), axis=-1) > 0).all():
        raise UnsortedInputError(f"{name} must be strictly increasing along the time axis (unsorted or duplicate rows)")


class Runtime:
    """One loaded bundle. Loading verifies the manifest (schema, types, ranges, file references inside the
    bundle, its HMAC signature when a key is configured), the checksums of the other files, builds a
    single-threaded ONNX Runtime session, runs the golden self-test and warms the session up.

    `calibration`: a calibration set of this bundle (`volmargin_serving.calibration`), needed by
    `margins`; it is verified at load (checksum, bundle binding, hard floors, sanity rules, its signature
    when a key is configured), and with `assets` it must hold both sides of each of them.
    `key`: the service's HMAC key (bytes or str; default: the environment variable VOLMARGIN_BUNDLE_KEY);
    with a key, unsigned or wrongly signed bundles and calibration sets are refused (`SignatureError`).
    `fast`: serve `forecast_daily` by the bundle's fast path (`fast.onnx`, self-tested at load too) where
    it has one; False: always by the careful numpy path.

    The runtime remembers the last margin it priced normally for each asset (`margins`): a fail-safe
    margin is never below it. That memory is the only state that changes after loading; it is guarded
    by a lock, so a runtime still serves any number of threads."""

    def __init__(self, folder: str | Path, threads: int = 1, max_age_days: int = 1,
                 calibration: str | Path | None = None, assets: list[str] | None = None,
                 key: bytes | str | None = None, fast: bool = True):
        self.path = Path(folder)
        key = resolve_key(key)
        self.manifest = read_manifest(self.path, key)
        verify_files(self.path, self.manifest)
        if calibration is None and assets is not None:
            raise CalibrationError("assets: the assets to cover need a calibration set")
        self.calibration = None if calibration is None else CalibrationSet.read(calibration, self.path,
                                                                                self.manifest, assets, key)
        self._last_good: dict[str, tuple[np.datetime64, np.ndarray, float]] = {}
        # per asset, the margins priced normally on each of its last MEMORY_DAYS days (`_chained`)
        self._by_day: dict[str, dict[np.datetime64, np.ndarray]] = {}
        self._memory_lock = threading.Lock()
        features = self.manifest["features"]
        self.spec = FeatureSpec(**features["spec"])
        self.window = int(features["window"])
        self.history_days = int(features["history_days"])
        self.mean = np.asarray(features["mean"], dtype=np.float64)
        self.scale = np.asarray(features["scale"], dtype=np.float64)
        self.iv_features = IV_FEATURE_NAMES[0] in features["names"]  # takes an implied-volatility index
        self.core_width = core_width(features["names"])  # how many of the core feature columns the model reads
        self.levels = tuple(float(x) for x in self.manifest["levels"])
        self.horizon = int(self.manifest["horizon"])
        self.bar_seconds = learned_bar_seconds(self.manifest)  # the bars' intervals the model learned from
        self.max_age = np.timedelta64(max_age_days, "D")
        self._max_age_days = int(max_age_days)
        self._session = self._open_session(self.manifest["onnx"]["file"], threads)
        self._input = self.manifest["onnx"]["inputs"][0]["name"]
        self._output = self.manifest["onnx"]["outputs"][0]["name"]
        # the fast path (`_forecast_fast`): one graph from daily inputs to checked forecasts, where the bundle has one
        self._fast = (self._open_session(self.manifest["fast"]["file"], threads, FAST_DISABLED_OPTIMIZERS)
                      if fast and "fast" in self.manifest else None)
        self._self_test()

    def _open_session(self, file: str, threads: int, disabled_optimizers: tuple[str, ...] = ()) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            return ort.InferenceSession(str(self.path / file), options, providers=["CPUExecutionProvider"],
                                        disabled_optimizers=list(disabled_optimizers))
        except Exception as exc:  # onnxruntime raises its own untyped errors for malformed graphs
            raise BundleError(f"{self.path}: ONNX Runtime cannot load {file} ({exc})") from exc

    def _self_test(self) -> None:
        """Golden inputs through the whole path (features, ONNX, post-processing) must give the golden
        outputs recorded at export; this also warms the session up. Any failure is a SelfTestError: a manifest
        edited where no key checks it (an output name, the count of levels, another graph file) or a replaced
        golden file breaks the path anywhere in ONNX Runtime or numpy."""
        try:
            self._golden_check()
        except ServingError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever breaks the golden path unfits the bundle
            raise SelfTestError(f"{self.path}: the golden self-test failed ({type(exc).__name__}: "
                                f"{' '.join(str(exc).split())[:200]})") from None

    def _golden_check(self) -> None:
        try:
            with np.load(self.path / self.manifest["golden"]["file"], allow_pickle=False) as archive:
                golden = {name: archive[name] for name in ("inputs", "dates", "variance", "var", "es")}
                golden["iv"] = archive["iv"] if "iv" in archive else None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise SelfTestError(f"{self.path}: golden set unreadable ({exc})") from None
        try:
            for _ in range(3):
                out = self._forecast_daily(golden["inputs"], golden["dates"], golden["dates"][..., -1].max(),
                                           gaps=False, iv=golden["iv"])
        except InputError as exc:
            raise SelfTestError(f"{self.path}: golden inputs refused ({exc})") from None
        self._compare_golden(out, golden, "")
        if self._fast is not None:  # the fast path too, on the golden assets whose rows it accepts
            # (an ONNX Runtime that computes the graph differently fails here, not in a margin call)
            newest = golden["dates"][:, -1].astype(np.int64)
            days = golden["dates"][:, -self.history_days:].astype(np.int64)
            for _ in range(3):
                ok, variance, tails = self._run_fast(golden["inputs"][:, -self.history_days:], days,
                                                     newest.min(), newest.max())
            if not ok.any():  # no golden window it can test (e.g. a missing day): serve by the careful path
                self._fast = None
                return
            fast = Forecasts(variance[ok], tails[ok][:, :, 0], tails[ok][:, :, 1], self.levels, self.horizon)
            self._compare_golden(fast, {name: golden[name][ok] for name in ("variance", "var", "es")}, "fast path ")

    def _compare_golden(self, out: Forecasts, golden: dict, path: str) -> None:
        for name in ("variance", "var", "es"):
            got, expected = getattr(out, name), golden[name]
            if got.shape != expected.shape:
                raise SelfTestError(f"{self.path}: golden self-test failed: {path}{name} has shape {got.shape}, "
                                    f"expected {expected.shape}")
            with np.errstate(divide="ignore", invalid="ignore"):
                error = np.max(np.abs(got - expected) / np.abs(expected))
            if not error <= SELF_TEST_RTOL:
                raise SelfTestError(f"{self.path}: golden self-test failed: {path}{name} differs by {error:.3g} "
                                    f"relative (limit {SELF_TEST_RTOL:g})")

    def run_model(self, standardized: np.ndarray) -> np.ndarray:
        """The ONNX graph on standardized float32 windows (batch, window, features)."""
        return self._session.run([self._output], {self._input: standardized})[0]

    def bind_model(self, windows: list[np.ndarray], raw: np.ndarray) -> list[Callable[[], None]]:
        """One call per window of the ONNX graph, bound by ONNX Runtime's IO binding to the memory of
        `windows` (float32 C-contiguous (batch, window, features) arrays or views, the caller's buffers)
        and of `raw` (float32 (batch, outputs)): each call runs the graph on the window's current contents
        into `raw`. It passes no arrays and allocates nothing: on one asset, converting `run_model`'s input
        and output costs about as much as a small graph itself. The buffers must outlive the calls."""
        if raw.dtype != np.float32 or not raw.flags.c_contiguous:
            raise InputDtypeError("raw must be a C-contiguous float32 array")
        output = ort.OrtValue.ortvalue_from_numpy(raw)  # CPU OrtValues wrap the arrays' memory: no copy
        calls = []
        for window in windows:
            if window.dtype != np.float32 or not window.flags.c_contiguous:
                raise InputDtypeError("windows must be C-contiguous float32 arrays")
            binding = self._session.io_binding()
            binding.bind_ortvalue_input(self._input, ort.OrtValue.ortvalue_from_numpy(window))
            binding.bind_ortvalue_output(self._output, output)
            calls.append(partial(self._session.run_with_iobinding, binding))
        return calls

    def forecast_features(self, features: np.ndarray, level: np.ndarray) -> Forecasts:
        """Forecasts from precomputed raw features (batch, window, n_features) as `compute_features`
        returns them (NaN allowed: missing, like in training) and level_t (batch,)."""
        features = np.asarray(features)
        if features.ndim != 3 or features.shape[1:] != (self.window, len(self.mean)):
            raise InputShapeError(f"features must have shape (batch, {self.window}, {len(self.mean)}), "
                                  f"got {features.shape}")
        if not served_float(features.dtype):
            raise InputDtypeError(f"features must be floating point, got dtype {features.dtype}")
        if np.isinf(features).any():  # NaN is a missing feature (as in training); infinity is a bad one
            raise NonFiniteInputError(f"features has infinite values (first at index {np.argwhere(np.isinf(features))[0].tolist()})")
        level = _check_floats("level", np.asarray(level).reshape(-1))
        if len(level) != len(features):
            raise InputShapeError(f"level has {len(level)} rows for {len(features)} feature windows")
        return self._forecast(features, level)

    def _forecast(self, features: np.ndarray, level: np.ndarray) -> Forecasts:
        """Checked features (batch, window, n_features) and level_t (batch,) -> forecasts."""
        raw = self.run_model(standardize(features, self.mean, self.scale))
        return Forecasts(*postprocess(raw, horizon_level(level, self.horizon), len(self.levels)),
                         self.levels, self.horizon)

    def forecast_daily(self, inputs: np.ndarray, dates: np.ndarray, as_of: np.datetime64 | None = None,
                       iv: np.ndarray | None = None) -> Forecasts:
        """Forecasts made at the last row, from daily inputs (days, len(INPUT_COLUMNS)) of one asset or
        (assets, days, len(INPUT_COLUMNS)) of a batch, columns in `INPUT_COLUMNS` order (`complete` as
        0/1), and their UTC dates (days,) or (assets, days). At least `history_days` rows are needed;
        only the last `history_days` are used, and they must be valid (`volmargin_serving.validation`):
        finite, possible, one row per day, none after `as_of` (default: now), the newest at most
        `max_age_days` older than as_of's day.

        `iv` (optional; only bundles trained with the IV features read it): the implied-volatility index
        (annualised %, e.g. Deribit DVOL at each day's close) aligned with `inputs`, shape (days,) or
        (assets, days); NaN or None where the asset has none, the case the model was trained on too.

        With a bundle that has a fast path (`fast.onnx`), valid float64 inputs take one ONNX call that
        checks, computes and post-processes everything; inputs it flags take the careful numpy path,
        which raises the typed error."""
        as_of = _instant(as_of)
        _some(inputs, dates)
        if self._fast is not None:  # a bundle with a fast path takes no IV index (export writes none for them)
            out = self._forecast_fast(inputs, dates, as_of)
            if out is not None:
                return out
        return self._forecast_daily(inputs, dates, as_of, iv=iv)

    def stream(self, inputs: np.ndarray, dates: np.ndarray, as_of: np.datetime64 | None = None):
        """Incremental state started from daily inputs as for `forecast_daily` (the same checks): an
        `AssetState` from one asset's (days, columns), a `StreamState` from a batch (assets, days,
        columns). Each `update` then folds in one newly closed day per asset; see `volmargin_serving.stream`."""
        from volmargin_serving.stream import AssetState, StreamState

        _some(inputs, dates)
        return (AssetState if np.ndim(inputs) == 2 else StreamState)(self, inputs, dates, as_of)

    def _forecast_fast(self, inputs, dates, as_of: np.datetime64) -> Forecasts | None:
        """Forecasts by the fast path, or None where it does not apply (other dtypes or shapes) or flags an
        asset: the careful path then forecasts or raises."""
        if not (isinstance(inputs, np.ndarray) and isinstance(dates, np.ndarray) and inputs.dtype == np.float64
                and dates.dtype.kind == "M" and inputs.ndim in (2, 3)  # kind M: datetime64
                and np.datetime_data(dates.dtype)[0] not in _TOO_FINE):
            return None
        n = self.history_days
        if (inputs.shape[-1] != len(INPUT_COLUMNS) or inputs.shape[-2] < n or dates.shape[-1] != inputs.shape[-2]
                or dates.ndim >= inputs.ndim):
            return None
        batch = inputs[None, -n:] if inputs.ndim == 2 else inputs[:, -n:]
        days = dates[..., -n:].astype("datetime64[D]", copy=False).view(np.int64)
        if days.ndim == 1:
            days = np.broadcast_to(days, batch.shape[:2]) if len(batch) > 1 else days[None]
        elif days.shape != batch.shape[:2]:
            return None
        today = as_of.astype("datetime64[D]").astype(np.int64)
        ok, variance, tails = self._run_fast(batch, days, today - self._max_age_days, today)
        if not ok.all():
            return None
        return Forecasts(variance, tails[:, :, 0], tails[:, :, 1], self.levels, self.horizon)

    def _run_fast(self, batch: np.ndarray, days: np.ndarray, oldest, today) -> tuple[np.ndarray, ...]:
        """The fast graph on (assets, history_days, columns) float64 rows and their int64 days: per asset
        ok (passes every check), variance and tails (assets, side, VaR/ES, level)."""
        return self._fast.run(None, {"daily": np.ascontiguousarray(batch), "days": np.ascontiguousarray(days),
                                     "bounds": np.array([oldest, today], dtype=np.int64)})

    def _forecast_daily(self, inputs, dates, as_of: np.datetime64, gaps: bool = True,
                        iv: np.ndarray | None = None) -> Forecasts:
        batch, days = self._checked_history(inputs, dates, as_of, gaps)
        return self._forecast_checked(batch, days, self._checked_iv(iv, np.shape(inputs)[:-1], self.history_days))

    def _checked_history(self, inputs, dates, as_of: np.datetime64,
                         gaps: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """The last `history_days` rows (assets, days, columns) of daily inputs and their days, checked."""
        inputs = np.asarray(inputs)
        if inputs.ndim not in (2, 3) or inputs.shape[-1] != len(INPUT_COLUMNS):
            raise InputShapeError(f"inputs must have shape ([assets,] days, {len(INPUT_COLUMNS)}) with columns "
                                  f"{INPUT_COLUMNS}, got {inputs.shape}")
        if inputs.shape[-2] < self.history_days:
            raise InputShapeError(f"inputs have {inputs.shape[-2]} days; the model needs {self.history_days}")
        days = _as_days(dates)
        if days.shape[-1] != inputs.shape[-2] or days.ndim > inputs.ndim - 1:
            raise InputShapeError(f"dates have shape {days.shape} for inputs of shape {inputs.shape}")
        n = self.history_days  # only these rows enter the forecast, so only these are checked
        batch = check_values("inputs", inputs[None, -n:] if inputs.ndim == 2 else inputs[:, -n:])
        days = days[..., -n:]
        check_dates(days, as_of, self.max_age, gaps)
        return batch, days

    def _checked_iv(self, iv, shape: tuple[int, ...], rows: int) -> np.ndarray | None:
        """The last `rows` of the optional IV index as (assets, rows); None where the bundle ignores it.
        NaN is a missing index (the model's own case); infinity, zero or a negative level is a bad one."""
        if iv is None or not self.iv_features:
            return None
        iv = _iv_array(iv)
        if iv.shape != shape:
            raise InputShapeError(f"iv has shape {iv.shape}; expected {shape}, one value per input row")
        bad, error = _bad_iv(iv)
        if error is not None:
            raise error
        return np.atleast_2d(iv)[:, -rows:]

    def _iv_each(self, iv, rows_in: list) -> tuple[list, list[str]]:
        """Per asset of a `margins` batch, its IV index aligned with its rows (None: no index) and the problem
        with the rows the model reads ('' if none). A bad level is read as no index (NaN), the case the model
        was trained on, and the asset is flagged: its fail-safe margin is then never below the one without it."""
        n = len(rows_in)
        if iv is None or not self.iv_features:
            return [None] * n, [""] * n
        ivs, problems = [], []
        for values, rows in zip(_per_asset(iv, n, "iv"), rows_in):
            try:
                if values is None or not hasattr(rows, "__len__"):  # no index, or no rows: the inputs' own error
                    ivs.append(None)
                    problems.append("")
                    continue
                values = _iv_array(values)
                if values.shape != (len(rows),):
                    raise InputShapeError(f"iv has shape {values.shape}; expected ({len(rows)},), one value per "
                                          "input row")
            except InputError as exc:
                ivs.append(None)
                problems.append(f"{type(exc).__name__}: {exc}")
                continue
            bad, _ = _bad_iv(values)  # read as no index wherever they are; flagged where the model reads them
            _, error = _bad_iv(values[-self.history_days:])
            ivs.append(np.where(bad, np.nan, values) if bad.any() else values)
            problems.append("" if error is None else f"{type(error).__name__}: {error} (read as no index)")
        return ivs, problems

    def _forecast_checked(self, batch: np.ndarray, days: np.ndarray, iv: np.ndarray | None = None) -> Forecasts:
        """Forecasts from the last `history_days` rows (assets, days, columns) and their dates."""
        weekday = np.broadcast_to(_weekday(days), batch.shape[:2])
        # Features of a few assets at a time: their arrays stay in cache; a whole batch of 1,024 assets
        # makes every numpy temporary a fresh multi-MB allocation and runs at less than half the speed.
        chunks = [self._daily_features(batch[i:i + _CHUNK], weekday[i:i + _CHUNK],
                                       None if iv is None else iv[i:i + _CHUNK])
                  for i in range(0, len(batch), _CHUNK)]
        features, level = (np.concatenate(parts) for parts in zip(*chunks))
        return self._forecast(features, level)

    def _daily_features(self, batch: np.ndarray, weekday: np.ndarray,
                        iv: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Checked daily inputs (assets, days, columns) -> the last model window of features and level_t."""
        by_column = np.ascontiguousarray(np.moveaxis(batch, -1, 0))  # (column, asset, day): contiguous days
        columns = dict(zip(INPUT_COLUMNS, by_column))
        columns["complete"] = columns["complete"] > 0.5
        features, level = compute_features(columns, weekday, self.spec, last=self.window)
        features = features[..., :self.core_width]
        if self.iv_features:  # the same core as training; no index = the rows trained with iv_present 0
            features = np.concatenate([features, compute_iv_features(iv, level, self.spec, last=self.window)], axis=-1)
        return features, level[:, -1]

    def forecast_history(self, inputs: np.ndarray, dates: np.ndarray, chunk: int = 4096,
                         iv: np.ndarray | None = None) -> Forecasts:
        """Forecasts made at every row of one asset's daily history (days, len(INPUT_COLUMNS)) that has
        `history_days` rows behind it (rows history_days-1 .. end, in order): batch scoring and backfills.
        No freshness check: the history is in the past by design; values are checked as in
        `forecast_daily`, days may be missing (scored as they come). `iv` (days,): the optional
        implied-volatility index, as for `forecast_daily`."""
        inputs = np.asarray(inputs)
        if inputs.ndim != 2 or inputs.shape[-1] != len(INPUT_COLUMNS):
            raise InputShapeError(f"inputs must have shape (days, {len(INPUT_COLUMNS)}), got {inputs.shape}")
        if len(inputs) < self.history_days:
            raise InputShapeError(f"inputs have {len(inputs)} days; the model needs {self.history_days}")
        days = _as_days(dates)
        if days.shape != (len(inputs),):
            raise InputShapeError(f"dates have shape {days.shape} for {len(inputs)} rows of inputs")
        _check_sorted("dates", days)
        inputs = check_values("inputs", inputs)
        iv = self._checked_iv(iv, inputs.shape[:-1], len(inputs))
        columns = {name: inputs[:, i] for i, name in enumerate(INPUT_COLUMNS)}
        columns["complete"] = columns["complete"] > 0.5
        features, level = compute_features(columns, _weekday(days), self.spec)
        features = features[..., :self.core_width]
        if self.iv_features:  # as `_daily_features`: no index = the rows trained with iv_present 0
            features = np.concatenate([features, compute_iv_features(None if iv is None else iv[0], level, self.spec)],
                                      axis=-1)
        standardized = standardize(features, self.mean, self.scale)
        # windows ending at rows history_days-1 .. end: (rows, window, n_features)
        ends = np.arange(self.history_days - 1, len(inputs))
        views = np.lib.stride_tricks.sliding_window_view(standardized, self.window, axis=0)
        windows = np.ascontiguousarray(views[ends - self.window + 1].transpose(0, 2, 1))
        raw = np.concatenate([self.run_model(windows[i:i + chunk]) for i in range(0, len(windows), chunk)])
        return Forecasts(*postprocess(raw, horizon_level(level[ends], self.horizon), len(self.levels)),
                         self.levels, self.horizon)

    def history_doubts(self, inputs: np.ndarray, dates: np.ndarray | None = None, chunk: int = 1024) -> list[str]:
        """For each forecast of `forecast_history` on the same checked inputs, the doubt a margin service
        would have raised on its window (`validation.doubtful_values`; '' where none): the forecasts it
        would have priced fail-safe and flagged. Messages name the row's date where `dates` (days,) are
        given, else its row counted from the first row of `inputs`; with `dates`, a window whose dates skip a day
        is the service's refusal (`GapInputError`'s message). `chunk` windows at a time (memory)."""
        inputs = np.asarray(inputs, dtype=float)
        n = self.history_days
        windows = np.lib.stride_tricks.sliding_window_view(inputs, n, axis=0).transpose(0, 2, 1)
        doubt = np.concatenate([doubtful_values(windows[i:i + chunk]) for i in range(0, len(windows), chunk)])
        said = [doubt_message(d, w, start, dates=None if dates is None else dates[start:start + n])
                for start, (d, w) in enumerate(zip(doubt, windows))]
        return said if dates is None else [_gap_in(dates[start:start + n]) or text for start, text in enumerate(said)]

    def forecast_bars(self, timestamps: np.ndarray, ohlcv: np.ndarray, min_bars: int | None = None,
                      as_of: np.datetime64 | None = None) -> Forecasts:
        """Forecast for one asset from its recent intraday bars (bars, 5: open, high, low, close, volume)
        and their UTC timestamps: `forecast_daily` of its `daily_inputs`."""
        inputs, dates = self.daily_inputs(timestamps, ohlcv, min_bars, as_of)
        return self.forecast_daily(inputs, dates, as_of=as_of)

    def daily_inputs(self, timestamps: np.ndarray, ohlcv: np.ndarray, min_bars: int | None = None,
                     as_of: np.datetime64 | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One asset's daily input rows (days, `INPUT_COLUMNS`) and their dates (datetime64[D]) from its
        intraday bars (bars, 5: open, high, low, close, volume) and their UTC timestamps, as `forecast_daily`
        and `margins` take them (stack several assets' last `history_days` rows). A day that has not ended
        by `as_of` (default: now) is left out. Bars finer than those the model learned from are aggregated to
        them first; `min_bars` counts those (default: 20 of 24 hourly bars, scaled to their interval)."""
        ohlcv = check_bars(ohlcv)
        if ohlcv.ndim != 2 or ohlcv.shape[1] != 5:
            raise InputShapeError(f"ohlcv must have shape (bars, 5): open, high, low, close, volume; got {ohlcv.shape}")
        stamps = np.asarray(timestamps)
        if not np.issubdtype(stamps.dtype, np.datetime64) or stamps.shape != (len(ohlcv),):
            raise InputDtypeError(f"timestamps must be datetime64 of shape ({len(ohlcv)},), got {stamps.dtype} {stamps.shape}")
        _check_sorted("timestamps", stamps.astype("datetime64[ns]"))
        stamps, ohlcv = self._bars_as_learned(stamps, ohlcv)
        as_of = _instant(as_of)
        ended = to_nanoseconds(stamps) < to_nanoseconds(np.asarray([as_of.astype("datetime64[D]")]))[0]
        per_day = 86_400 // (bar_interval(stamps) or 3600)
        min_bars = default_min_bars(86_400 // per_day) if min_bars is None else min_bars
        if not (isinstance(min_bars, (int, np.integer)) and 1 <= min_bars <= per_day):
            raise InputShapeError(f"min_bars must be a whole number in 1 .. {per_day} (the bars a UTC day holds at "
                                  f"the interval the model reads), got {min_bars!r}")
        daily = daily_from_bars(stamps[ended], *ohlcv[ended].T, min_bars=min_bars)
        return np.column_stack([daily[c].astype(float) for c in INPUT_COLUMNS]), daily["date"]

    def _bars_as_learned(self, stamps: np.ndarray, ohlcv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bars at the interval the model learned from: finer bars that divide it aggregated to it
        (`bars.aggregate_bars`); IntervalInputError for coarser ones or ones that do not divide it."""
        interval = bar_interval(stamps)
        newest = bar_interval(stamps[stamps >= stamps[-1] - np.timedelta64(1, "D")]) if len(stamps) else 0
        if newest and interval and newest != interval:  # coarser bars at the recent end read as a gap-ridden day
            raise IntervalInputError(f"bars of mixed intervals: {interval_text(interval)} in most of them, "
                                     f"{interval_text(newest)} in the last day; give bars of one interval")
        target = learned_interval(self.bar_seconds, interval)
        if target is None:
            learned = " or ".join(interval_text(s) for s in self.bar_seconds)
            raise IntervalInputError(f"bars of {interval_text(interval)}, but the model learned from {learned} bars (a "
                                     "day's realized measures sum its bars' returns): give those, or finer bars that "
                                     "divide them")
        if target == interval:
            return stamps, ohlcv
        stamps, *columns = aggregate_bars(stamps, *ohlcv.T, seconds=target)
        return stamps, np.column_stack(columns)

    def margins(self, assets: list[str], inputs, dates, as_of: np.datetime64 | None = None,
                previous: np.ndarray | None = None, iv=None) -> Margins:
        """Margin figures per asset and side from daily inputs as for `forecast_daily`: an array (assets,
        days, len(INPUT_COLUMNS)) or a sequence of per-asset (days, len(INPUT_COLUMNS)) arrays (None: no
        data), with dates (days,) shared, (assets, days) or a sequence. Meant to be called once a day:
        `previous` (assets, 2) holds yesterday's initial margins (NaN: none) for the policy's buffer and
        speed limits; without it each margin is a first margin (`margin_rate` with no previous). Either way a
        margin is at least the one chained from the margins this runtime priced for the day before (`_chained`),
        whatever the order the days are priced in.

        Fail safe, never lower: an asset whose inputs are refused (any `InputError`), that has no
        parameters in force at `as_of` or whose forecast is unusable gets, with `fail_safe` set and the
        reason, the largest of: its published margin, the floor rate, the policy's minimum rate,
        `previous`, the last margin this runtime priced normally for it, and the rule applied to a
        forecast from its inputs with the bad rows treated as missing (where they can be); an asset
        missing from the calibration set gets margin and haircut 1 (fully collateralised). One asset's
        failure never changes another's figures. See `volmargin_serving.margins.price` for the rule.

        `iv` (only bundles trained with the IV features read it): per asset its implied-volatility index
        aligned with its inputs, as for `forecast_daily` (an array (assets, days) or a sequence; None or NaN
        where an asset has none). A bad level (infinite, <= 0, a fraction for a percentage) in the rows the
        model reads is read as no index and the asset priced fail safe, never below its margin without it."""
        assets, as_of, terms, previous = self._margin_terms(assets, as_of, previous)
        forecasts, errors, doubtful = self._forecast_each(inputs, dates, as_of, terms.known.any(axis=1), iv)
        return self._price(assets, terms, forecasts, errors, doubtful, previous, as_of)

    def _margin_terms(self, assets, as_of, previous) -> tuple:
        """assets as a tuple, as_of as an instant, the calibration terms in force and checked `previous`."""
        if self.calibration is None:
            raise CalibrationError(f"{self.path}: loaded without a calibration set; margins need one")
        if isinstance(assets, (set, frozenset, str)):  # no order to pair with the rows, or one name's letters
            raise InputDtypeError("assets must be a sequence of names in the rows' order, got a "
                                  f"{type(assets).__name__}")
        assets, as_of = _distinct(tuple(assets)), _instant(as_of)
        previous = _previous(previous, len(assets))
        return assets, as_of, self.calibration.terms(assets, as_of), previous

    def _price(self, assets: tuple[str, ...], terms, forecasts: Forecasts, errors: np.ndarray, doubtful: list,
               previous: np.ndarray | None, as_of: np.datetime64) -> Margins:
        """`margins.price` with this runtime's calibration and memory of last good margins, which it updates."""
        good_initial, good_haircut, priced_today = self._recall(assets, as_of)

        def priced(previous_margins: np.ndarray | None) -> Margins:
            return price(assets, terms, forecasts, errors, self.calibration.policy, self.calibration.horizon,
                         previous_margins, self.calibration.version, doubtful=doubtful,
                         last_good=(good_initial, good_haircut), priced_today=priced_today)

        margins = priced(previous)
        if (chained := self._chained(assets, as_of, previous)) is not None:
            margins = larger(margins, priced(chained), self.calibration.policy)
        self._remember(margins, as_of)
        return margins

    def _recall(self, assets: tuple[str, ...], as_of: np.datetime64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last normally priced initial margins (assets, 2) and haircuts (assets,), NaN where none, and
        (assets,) True where they were priced for `as_of`'s own day (a reading of that day's market)."""
        initial, cut = np.full((len(assets), len(SIDES)), np.nan), np.full(len(assets), np.nan)
        today, day = np.zeros(len(assets), dtype=bool), np.datetime64(as_of, "D")
        with self._memory_lock:
            for k, asset in enumerate(assets):
                if asset in self._last_good:
                    priced, initial[k], cut[k] = self._last_good[asset]
                    today[k] = np.datetime64(priced, "D") == day
        return initial, cut, today

    def _chained(self, assets: tuple[str, ...], as_of: np.datetime64,
                 previous: np.ndarray | None) -> np.ndarray | None:
        """`previous`, at least the margins this runtime priced normally for the day before `as_of`'s, where that
        raises it (else None): the margins are then priced with it too and the larger kept. A `previous` sent
        lower, or none (a restarted caller), had dropped the buffer and the fall limit: 20% under the chained margin
        in a day, unflagged (session 31's red team). A larger previous never lowers `apc_step`'s margin."""
        yesterday = np.datetime64(as_of, "D") - np.timedelta64(1, "D")
        known = np.full((len(assets), len(SIDES)), np.nan)
        with self._memory_lock:
            for k, asset in enumerate(assets):
                known[k] = self._by_day.get(asset, {}).get(yesterday, known[k])
        chained = known if previous is None else np.fmax(previous, known)
        same = np.isnan(known).all() if previous is None else np.array_equal(chained, previous, equal_nan=True)
        return None if same else chained

    def with_fresh_memory(self) -> "Runtime":
        """This runtime (its sessions, bundle and calibration shared) with no memory of margins priced: for a
        replay whose figures must not depend on what the same process priced before (a cached runtime on a Dask
        worker carried one command's margins into the next: up to 1.69x; session 31's red team)."""
        fresh = copy.copy(self)
        fresh._last_good, fresh._by_day, fresh._memory_lock = {}, {}, threading.Lock()
        return fresh

    def _remember(self, margins: Margins, as_of: np.datetime64) -> None:
        """Keep each asset's margins priced normally (no side fail-safe): at the newest as_of seen (floors of its
        fail-safe margins) and by day, its last `MEMORY_DAYS` (`_chained`)."""
        with self._memory_lock:
            for k, asset in enumerate(margins.assets):
                if margins.fail_safe[k].any():
                    continue
                days = self._by_day.setdefault(asset, {})
                days[np.datetime64(as_of, "D")] = margins.initial[k].copy()  # in any order: backfills, restarts
                for old in sorted(days)[:-MEMORY_DAYS]:
                    del days[old]
                stored = self._last_good.get(asset)
                if stored is None or stored[0] <= as_of:
                    self._last_good[asset] = (as_of, margins.initial[k].copy(), float(margins.haircut[k, 0]))

    def _forecast_each(self, inputs, dates, as_of: np.datetime64, wanted: np.ndarray,
                       iv=None) -> tuple[Forecasts, np.ndarray, Forecasts]:
        """Forecasts of the `wanted` assets (NaN rows for the others), each asset's input error or doubt
        ('' if none) and, for refused or doubtful assets, their forecasts under each reading of the bad
        rows (`repairs.READINGS`; NaN where none can be made). One batch call; if the batch is refused, each
        asset is checked alone, so that a bad asset gets its own error, and the others are forecast in the
        batch's layout without it (`_kept_in_place`), so that it cannot change their figures."""
        n = len(wanted)
        rows_in = _per_asset(inputs, n, "inputs")
        dates_in = [dates] * n if isinstance(dates, np.ndarray) and dates.ndim == 1 else _per_asset(dates, n, "dates")
        ivs, iv_problems = self._iv_each(iv, rows_in)
        variance, errors = np.full(n, np.nan), np.full(n, "", dtype=object)
        var, es = (np.full((n, len(SIDES), len(self.levels)), np.nan) for _ in range(2))
        doubt = self._no_readings(n)

        def keep(index, out: Forecasts, checked: np.ndarray) -> None:
            variance[index], var[index], es[index] = out.variance, out.var, out.es
            windows = checked.reshape(-1, *checked.shape[-2:])
            for k, message, window in zip(np.atleast_1d(index), self._doubts(windows), windows):
                self._read_days_whole((variance, var, es), k, window, dates_in[k], ivs[k])
                if message:
                    errors[k] = message
                    repair(k)

        def repair(k: int) -> None:
            self._read_into(doubt, k, rows_in[k], dates_in[k], as_of, ivs[k])

        rows = np.flatnonzero(wanted)
        try:
            keep(rows, *self._forecast_stacked(rows_in, dates_in, ivs, rows, as_of))
        except (InputError, ValueError, TypeError):  # refused, or ragged / missing entries that cannot stack
            def refused(k: int, exc: InputError) -> None:
                errors[k] = f"{type(exc).__name__}: {exc}"
                repair(k)

            good = []
            for k in rows:
                try:
                    if rows_in[k] is None:
                        raise InputError("no inputs for this asset")
                    self._checked_history(rows_in[k], dates_in[k], as_of)
                    good.append(k)
                except InputError as exc:
                    refused(k, exc)
            if good and not self._kept_in_place(good, rows, rows_in, dates_in, ivs, as_of, keep):
                for k in good:  # ragged, as the batch was without the bad asset: one call per asset
                    try:
                        keep([k], self.forecast_daily(rows_in[k], dates_in[k], as_of, iv=ivs[k]),
                             np.asarray(rows_in[k]))
                    except InputError as exc:
                        refused(k, exc)
        for k in np.flatnonzero(wanted):  # an asset's own input error, where it has one, comes first
            errors[k] = errors[k] or iv_problems[k]
        return (Forecasts(variance, var, es, self.levels, self.horizon), errors,
                [Forecasts(*d, self.levels, self.horizon) for d in doubt])

    def _kept_in_place(self, good: list[int], rows: np.ndarray, rows_in: list, dates_in: list, ivs: list,
                       as_of: np.datetime64, keep) -> bool:
        """`keep` the forecasts of the `good` assets of a refused batch made in the batch's own layout, each
        refused asset's place held by a copy of a good one: some ONNX Runtime kernels (Exp, Log) round an
        element by its place in the batch, so the same rows in another layout could differ in the last bit
        from the figures of the batch without the bad asset. False where that batch cannot be made."""
        kept = set(good)
        try:
            out, checked = self._forecast_stacked(rows_in, dates_in, ivs, [k if k in kept else good[0] for k in rows],
                                                  as_of)
        except (InputError, ValueError, TypeError):
            return False
        place = np.isin(rows, good)
        keep(good, _take(out, place), checked[place])
        return True

    def _forecast_stacked(self, rows_in: list, dates_in: list, ivs: list, rows, as_of: np.datetime64
                          ) -> tuple[Forecasts, np.ndarray]:
        """Forecasts of the assets `rows` in one batch call, and the stacked inputs. TypeError where an
        asset's inputs are not floating point (stacking would cast them silently), ValueError where they
        are ragged; InputError where the batch is refused."""
        if not all(served_float(np.asarray(rows_in[k]).dtype) for k in rows):
            raise TypeError("an asset's inputs are not floating point")
        stacked = np.stack([rows_in[k] for k in rows]), np.stack([dates_in[k] for k in rows])
        iv = None if all(ivs[k] is None for k in rows) else np.stack(
            [np.full(len(rows_in[k]), np.nan) if ivs[k] is None else ivs[k] for k in rows])
        return self.forecast_daily(*stacked, as_of, iv=iv), stacked[0]

    def _read_days_whole(self, forecasts: tuple[np.ndarray, ...], k: int, inputs: np.ndarray, dates,
                         iv: np.ndarray | None = None) -> None:
        """Asset k's (variance, var, es), in place, the larger of the model's and those with its window's
        partial days read whole: an incomplete day as complete (its measures cover part of its moves, and the
        model reads them as missing, which forgets the part it saw; one among the last five days is doubtful
        as well, `validation.doubtful_values`), and a day with no bipower variation but an rv (bv < rv / 10^4)
        as a day without a jump (bv = rv: a bv of 0 is a tick-bound market or a bad value, and the model reads
        the day as all jump, less persistent; such a bv lowered a test-bundle margin by 0.55% in session 20's
        property tests). Only for windows that hold such a day (26 of 104,162 real days since 2022 are
        incomplete; 22 of the 150,936 real days of the 129 hourly spot files have no bv)."""
        window = self._whole_days(inputs[-self.history_days:])
        if window is None:
            return
        read = self._forecast_checked(window[None], _as_days(dates)[None, -self.history_days:],
                                      None if iv is None else iv[None, -self.history_days:])
        for mine, theirs in zip(forecasts, (read.variance, read.var, read.es)):
            mine[k] = np.fmax(mine[k], theirs[0])

    @staticmethod
    def _whole_days(window: np.ndarray) -> np.ndarray | None:
        """`window` (days, columns) with its partial days read whole (see `_read_days_whole`), None where it has
        none."""
        if not partial_days(window[None]).any():
            return None
        window, no_bv = window.copy(), _no_bv(window)
        window[:, _COMPLETE] = 1.0
        window[no_bv, _BV] = window[no_bv, _RV]
        return window

    def _no_readings(self, n: int) -> list[list[np.ndarray]]:
        """Per `repairs.READINGS` entry, [variance, var, es] of n assets, NaN until `_read_into` fills them."""
        return [[np.full(n, np.nan), *(np.full((n, len(SIDES), len(self.levels)), np.nan) for _ in range(2))]
                for _ in range(len(READINGS))]

    def _read_into(self, doubt: list[list[np.ndarray]], k: int, inputs, dates, as_of: np.datetime64,
                   iv: np.ndarray | None = None) -> None:
        """Asset k's forecasts under every reading of its refused or doubtful rows into `doubt`."""
        repaired = self._repaired(inputs, dates, as_of, iv)
        for i in range(len(READINGS) if repaired is not None else 0):
            doubt[i][0][k], doubt[i][1][k], doubt[i][2][k] = repaired.variance[i], repaired.var[i], repaired.es[i]

    def _repaired(self, inputs, dates, as_of: np.datetime64, iv: np.ndarray | None = None) -> Forecasts | None:
        """Forecasts of one refused or doubtful asset, one per `repairs.READINGS` entry, from its last
        `history_days` days; None where no reading can be made (unusable shape or dates, stale data).
        Only ever candidates for a higher fail-safe margin, never margins of their own."""
        x, days = float_cells(inputs), calendar_days(dates)
        if x is None or days is None or x.ndim != 2 or x.shape[1] != len(INPUT_COLUMNS) or days.shape != (len(x),):
            return None
        made = readings(x, days, as_of, self.history_days, self.max_age)
        if made is None:
            return None
        # the IV index dated as each reading dates the rows (a row's index moves with it)
        return self._forecast_checked(*made, None if iv is None else carried(iv, days, as_of, self.history_days,
                                                                             self.max_age))

    def _doubts(self, inputs: np.ndarray) -> list[str]:
        """Per asset of checked (assets, rows, columns) inputs, the doubt about the rows the model reads
        ('' where none; see `validation.doubtful_values`)."""
        window = inputs[:, -self.history_days:]
        offset = inputs.shape[1] - window.shape[1]
        doubt = doubtful_values(window)
        return [doubt_message(d, w, offset) for d, w in zip(doubt, window)]


class Server:
    """The runtime a margin service calls, swappable while serving: `swap` loads and self-tests the new
    bundle (and verifies its calibration set) first and then replaces the reference in one step, so every
    call runs wholly on the old or wholly on the new bundle, and a bad bundle never replaces a good one."""

    def __init__(self, folder: str | Path, calibration: str | Path | None = None, **options):
        """`options` as for `Runtime` (threads, max_age_days, assets, key)."""
        self._options = options
        self._runtime = Runtime(folder, calibration=calibration, **options)
        self._lock = threading.Lock()  # serialises swaps, never forecasts

    @property
    def runtime(self) -> Runtime:
        return self._runtime

    def swap(self, folder: str | Path, calibration: str | Path | None = None) -> Runtime:
        """Load `folder` with `calibration` (a set built from that bundle) and make it current; returns
        the old runtime. A server that prices margins refuses to swap to a bundle without a calibration
        set: its margin calls would all fail."""
        with self._lock:
            if calibration is None and self._runtime.calibration is not None:
                raise CalibrationError(f"swap to {folder}: this server prices margins; give the calibration set "
                                       "built from the new bundle")
            fresh = Runtime(folder, calibration=calibration, **self._options)
            # the last good margins stay floors of fail-safe margins: one memory, shared, so that what a call
            # still running on the old runtime remembers after the swap is not lost (a copy taken here was)
            fresh._last_good, fresh._memory_lock = self._runtime._last_good, self._runtime._memory_lock
            fresh._by_day = self._runtime._by_day
            old, self._runtime = self._runtime, fresh
        return old

    def forecast_daily(self, *args, **kwargs) -> Forecasts:
        return self._runtime.forecast_daily(*args, **kwargs)

    def forecast_features(self, *args, **kwargs) -> Forecasts:
        return self._runtime.forecast_features(*args, **kwargs)

    def forecast_bars(self, *args, **kwargs) -> Forecasts:
        return self._runtime.forecast_bars(*args, **kwargs)

    def daily_inputs(self, *args, **kwargs) -> tuple[np.ndarray, np.ndarray]:
        return self._runtime.daily_inputs(*args, **kwargs)

    def margins(self, *args, **kwargs) -> Margins:
        return self._runtime.margins(*args, **kwargs)


def load(folder: str | Path, threads: int = 1, max_age_days: int = 1, calibration: str | Path | None = None,
         assets: list[str] | None = None, key: bytes | str | None = None, fast: bool = True) -> Runtime:
    """Load and verify a bundle folder and, if given, its calibration set (see `Runtime`); with a `key`
    (or VOLMARGIN_BUNDLE_KEY set), both must carry a valid HMAC-SHA256 signature. `fast=False` leaves the
    bundle's fast path unused (every call takes the careful numpy path)."""
    return Runtime(folder, threads=threads, max_age_days=max_age_days, calibration=calibration, assets=assets,
                   key=key, fast=fast)
