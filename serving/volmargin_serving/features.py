"""Scale-free daily features: the one implementation shared by training (`volmargin`) and serving.

Plain numpy so that margin services need nothing else. Every function works along the last axis, so
one asset is a 1-d array of days and a batch of assets is a (assets, days) array.

Every feature at day t uses rows up to t only, and none depends on the asset's price or volatility
*level*: each variance measure enters relative to `level_t`, the trailing mean of log realized variance
over the last `level_days` rows (complete days only). One model can therefore serve BTC and a small
altcoin alike, and the variance forecast is `exp(level_t + log h + prediction)`.

Features (columns of `FEATURE_NAMES`, in order):
- rv_d, rv_w, rv_m: log RV of the day and log mean RV over the last 5 / 22 rows, minus level_t (HAR
  components in relative form); incomplete days count as missing;
- level_chg: level_t - level_{t-22}, the drift of the asset's own level;
- ret_d, ret_w: the day's return and the 5-day return over sqrt(level variance), clipped;
- jump: (rv - bv) / rv clipped to [0, 1], the jump share of the day's variance;
- range_pk, range_rs: log(Parkinson / rv) and log(Rogers-Satchell / rv);
- volume: log volume minus its trailing 22-row mean of logs;
- dow_sin, dow_cos: day of week;
- the asset's own tail and jump behaviour over the level window (what lets one model serve a thin, jumpy
  listing it never saw as well as BTC: the level is a mean of *logs*, and for jumpier assets it sits
  further below the log of the mean variance):
  level_gap: log(mean RV) - level_t (>= 0 by Jensen's inequality), rv_disp: standard deviation of log RV,
  jump_freq: mean jump share, max_move: log of the largest squared daily return minus level_t.
A missing input gives NaN; `standardize` puts NaN at the training mean (0 after scaling).

The liquidity feature (`LIQUIDITY_FEATURE_NAMES`, computed with the others and read by the models trained
with it, the GBM by default): log of the mean daily traded value (quote currency, e.g. USDT) over the last
`liquidity_days` rows. The one feature that is not scale-free, on purpose: a thin market jumps more than its
own recent variance says (chosen on unseen-asset validation folds for the GBM; it made the GRU worse there).

The long-run level (`LONG_LEVEL_FEATURE_NAMES`, after liquidity, read by a blend that mixes it in): log of the
mean RV of the complete days among the last `long_days` rows minus level_t. Not a model input: the blend's graph
mixes the variance it implies, exp(level_t + long_level) a day, into its forecast (`volmargin.models.blend`):
a frozen global model does not know a new asset's own long-run variance; this does, from rows serving has.

Optional implied-volatility features (`IV_FEATURE_NAMES`, appended after the others by models trained
with them), from a 30-day implied-volatility index such as Deribit's DVOL (annualised, in percent) whose
value at row t is its close at the end of day t, the same instant as the day's realized measures:
- iv_present: 1 where the index is known at t, else 0 (the missing indicator: an asset without an
  implied-volatility index, or a day it was not published, is a row the trees can tell apart);
- iv_level: log of the index's daily variance (iv / 100)^2 / 365 minus level_t (implied over realized:
  scale-free, so BTC's and ETH's DVOL enter on one scale);
- iv_chg: log(iv_t / iv_{t - week_days}), the index's weekly move.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

INPUT_COLUMNS = ("ret", "rv", "bv", "parkinson", "rogers_satchell", "volume", "traded_value", "complete")
FEATURE_NAMES = (
    "rv_d", "rv_w", "rv_m", "level_chg", "ret_d", "ret_w", "jump", "range_pk", "range_rs", "volume",
    "dow_sin", "dow_cos", "level_gap", "rv_disp", "jump_freq", "max_move",
)
LIQUIDITY_FEATURE_NAMES = ("liquidity",)
LONG_LEVEL_FEATURE_NAMES = ("long_level",)
# what `compute_features` returns; a model reads a prefix
CORE_COLUMNS = FEATURE_NAMES + LIQUIDITY_FEATURE_NAMES + LONG_LEVEL_FEATURE_NAMES
IV_FEATURE_NAMES = ("iv_present", "iv_level", "iv_chg")
# The lowest level an implied-volatility index (annualised, in percent) may have: DVOL has ranged 31-193;
# an index sent as a fraction (0.65 for 65%) would read as implied far below realized.
MIN_IV_INDEX = 2.0


def model_feature_names(liquidity: bool, iv_features: bool, long_level: bool = False) -> tuple[str, ...]:
    """A model's feature columns, in order: `FEATURE_NAMES`, liquidity if it reads it, the long-run level if so
    (a blend mixing it in), the IV features if so."""
    return (FEATURE_NAMES + LIQUIDITY_FEATURE_NAMES * liquidity + LONG_LEVEL_FEATURE_NAMES * long_level
            + IV_FEATURE_NAMES * iv_features)


def core_width(names) -> int:
    """How many of the `CORE_COLUMNS` a model with these feature names reads (always a prefix: a model that
    reads the long-run level reads liquidity too)."""
    width = len(FEATURE_NAMES) + (LIQUIDITY_FEATURE_NAMES[0] in names)
    if LONG_LEVEL_FEATURE_NAMES[0] in names:
        if width == len(FEATURE_NAMES):
            raise ValueError("a model that reads long_level must read liquidity too (the core columns are a prefix)")
        width += 1
    return width


_FLOOR = 1e-12  # zero variance or volume (a halted market) must not give log(0)


@dataclass(frozen=True)
class FeatureSpec:
    """Window lengths (rows) of the feature builder; stored with a trained model and in its bundle."""

    level_days: int = 66
    week_days: int = 5
    month_days: int = 22
    volume_days: int = 22
    ret_clip: float = 10.0
    liquidity_days: int = 90
    long_days: int = 0  # the long-run level's rows; 0: no model reads it (its mean then spans one row)

    def history_days(self, window: int) -> int:
        """Rows of daily inputs that determine the last `window` feature rows exactly: each feature row
        looks back at most month_days (level_chg) + level_days - 1 rows, liquidity_days - 1 or long_days - 1."""
        return window + max(self.month_days + max(self.level_days, self.volume_days), self.liquidity_days,
                            self.long_days) - 1


def trailing_means(x: np.ndarray, windows: tuple[int, ...]) -> np.ndarray:
    """Mean of the finite values among the last `windows[i]` rows (including the current one) of each
    series x[i] along the last axis (fewer at the start); NaN if none.

    Cumulative sums along the last axis make it causal: the value at t is built from x[..., :t+1] only.
    All series go through one pair of cumulative sums: on the hundred-odd rows a forecast needs, the
    fixed cost of each numpy call outweighs its arithmetic.
    """
    valid = np.isfinite(x)
    sums = np.cumsum(np.stack([np.where(valid, x, 0.0), valid]), axis=-1)  # (2, series, ..., days)
    lagged = sums.copy()
    for i, window in enumerate(windows):
        if window < x.shape[-1]:
            sums[:, i, ..., window:] -= lagged[:, i, ..., :-window]
    total, count = sums
    return np.where(count > 0, total / count, np.nan)


def _clip(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """np.clip's result (NaN kept) at a fraction of its call overhead, which dominates on serving-sized rows."""
    return np.minimum(np.maximum(x, low), high)


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, _FLOOR))


def _lag(x: np.ndarray, k: int) -> np.ndarray:
    out = np.full(x.shape, np.nan)
    if k < x.shape[-1]:
        out[..., k:] = x[..., : x.shape[-1] - k]
    return out


def _trailing_max(x: np.ndarray, window: int) -> np.ndarray:
    """Largest finite value among the last `window` rows (including the current one) along the last
    axis; NaN where there is none. Causal: the value at t reads x[..., :t+1] only."""
    padded = np.concatenate([np.full(x.shape[:-1] + (window - 1,), np.nan), x], axis=-1)
    views = np.lib.stride_tricks.sliding_window_view(padded, window, axis=-1)
    with np.errstate(invalid="ignore"):
        return np.fmax.reduce(views, axis=-1)


# The trailing means the features read, in the order `daily_series` stacks their series:
# name -> window (a `FeatureSpec` field). A day whose series value is NaN does not count in that mean.
TRAILING_MEANS = {
    "log_rv": "level_days", "log_rv_all": "level_days", "rv_week": "week_days", "rv_month": "month_days",
    "ret_week": "week_days", "log_volume": "volume_days", "rv_level": "level_days", "log_rv_sq": "level_days",
    "jump": "level_days", "traded_value": "liquidity_days", "rv_long": "long_days",
}


def mean_windows(spec: FeatureSpec) -> tuple[int, ...]:
    """Rows of each of the `TRAILING_MEANS`, in order (at least one: long_days may be 0)."""
    return tuple(max(getattr(spec, field), 1) for field in TRAILING_MEANS.values())


def daily_series(inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """The series (len(TRAILING_MEANS), ...) whose trailing means the features read, elementwise from the
    daily inputs (NaN where a day does not count): log RV of complete days, log RV of all days (the level's
    fallback), RV of complete days (three times), the return, log volume, RV of complete days, squared log
    RV of complete days, the jump share, the traded value, RV of complete days. The same rows give the day's
    own terms (`feature_columns`)."""
    complete = np.asarray(inputs["complete"], dtype=bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        log_rv_all = _log(inputs["rv"])  # incomplete days too: the level's fallback
        rv = np.where(complete, inputs["rv"], np.nan)
        log_rv_complete = np.where(complete, log_rv_all, np.nan)
        jump_share = _clip((rv - inputs["bv"]) / rv, 0.0, 1.0)
        log_volume = _log(inputs["volume"])
        return np.stack([log_rv_complete, log_rv_all, rv, rv, inputs["ret"], log_volume,
                         rv, log_rv_complete ** 2, jump_share, inputs["traded_value"], rv])


def level_of(means: np.ndarray) -> np.ndarray:
    """level_t from the `TRAILING_MEANS` (first axis): the mean log RV of the complete days in the window;
    of all its days where none is complete."""
    return np.where(np.isfinite(means[0]), means[0], means[1])


def feature_columns(series: np.ndarray, means: np.ndarray, level: np.ndarray, level_change: np.ndarray,
                    max_square: np.ndarray, inputs: Mapping[str, np.ndarray], weekday: np.ndarray,
                    spec: FeatureSpec) -> np.ndarray:
    """The features (..., len(CORE_COLUMNS)) of rows whose history enters only through their trailing
    means (`TRAILING_MEANS` first, then the rows' shape), level_t, level_t - level_{t-month_days} and the
    largest squared return of the level window: what `compute_features` computes on its kept rows and
    `volmargin_serving.stream` on each newly closed day. `series` is `daily_series` of the same rows,
    `inputs` their ret, parkinson and rogers_satchell."""
    with np.errstate(invalid="ignore", divide="ignore"):
        rv, log_volume, jump_share = series[2], series[5], series[8]
        ret, parkinson, rogers_satchell = (np.asarray(inputs[c]) for c in ("ret", "parkinson", "rogers_satchell"))
        scale = np.exp(0.5 * level)
        log_rv = _log(rv)
        angle = 2 * np.pi * weekday / 7
        columns = (
            log_rv - level,
            _log(means[2]) - level,
            _log(means[3]) - level,
            level_change,
            _clip(ret / scale, -spec.ret_clip, spec.ret_clip),
            _clip(np.sqrt(spec.week_days) * means[4] / scale, -spec.ret_clip, spec.ret_clip),
            jump_share,
            _log(parkinson) - log_rv,
            _log(rogers_satchell) - log_rv,
            log_volume - means[5],
            np.sin(angle),
            np.cos(angle),
            _log(means[6]) - means[0],
            np.sqrt(np.maximum(means[7] - means[0] ** 2, 0.0)),
            means[8],
            _log(max_square) - level,
            _log(means[9]),
            _log(means[10]) - level,
        )
    return np.stack(columns, axis=-1)


def compute_features(
    inputs: Mapping[str, np.ndarray], weekday: np.ndarray, spec: FeatureSpec = FeatureSpec(), last: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Features (..., days, len(CORE_COLUMNS)) and level_t (..., days) from daily input arrays.

    `inputs` holds the `INPUT_COLUMNS` arrays in time order along the last axis (`complete` boolean);
    `weekday` is 0 = Monday .. 6 = Sunday. `last` keeps only the last rows of the output (serving needs
    one model window, not the whole history it was computed from): only the rolling sums and the level
    run over the whole history, the rest over the kept rows.
    """
    keep = slice(-last, None) if last else slice(None)
    series = daily_series(inputs)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = trailing_means(series, mean_windows(spec))
        level = level_of(means)
        level_change = level - _lag(level, spec.month_days)
        max_square = _trailing_max(np.asarray(inputs["ret"], dtype=float) ** 2, spec.level_days)
    kept = {c: np.asarray(inputs[c])[..., keep] for c in ("ret", "parkinson", "rogers_satchell")}
    weekday = np.broadcast_to(weekday, series.shape[1:])[..., keep]
    features = feature_columns(series[..., keep], means[..., keep], level[..., keep], level_change[..., keep],
                               max_square[..., keep], kept, weekday, spec)
    return features, level[..., keep]


def compute_iv_features(iv: np.ndarray | None, level: np.ndarray, spec: FeatureSpec = FeatureSpec(),
                        last: int | None = None) -> np.ndarray:
    """`IV_FEATURE_NAMES` columns (..., days, 3) from the implied-volatility index `iv` (annualised %, NaN or
    None where absent) aligned with the daily inputs, and the full-history level_t of `compute_features`.
    `last` keeps the last rows, as in `compute_features` (`level` may already be cut to them)."""
    level = np.asarray(level, dtype=float)
    if iv is None:  # no index for this asset: present = 0, the rest missing
        kept = level[..., -last:] if last else level
        return np.stack([np.zeros(kept.shape), np.full(kept.shape, np.nan), np.full(kept.shape, np.nan)], axis=-1)
    iv = np.asarray(iv, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        known = np.isfinite(iv) & (iv > 0)
        log_iv = np.where(known, np.log(np.where(known, iv, 1.0)), np.nan)
        change = log_iv - _lag(log_iv, spec.week_days)
        keep = slice(-last, None) if last else slice(None)
        log_iv, known, change = log_iv[..., keep], known[..., keep], change[..., keep]
        level = level[..., -log_iv.shape[-1]:]
        iv_level = 2 * log_iv - 2 * np.log(100.0) - np.log(365.0) - level
    return np.stack([known.astype(float), iv_level, change], axis=-1)


def horizon_level(level: np.ndarray, horizon: int) -> np.ndarray:
    """Log of the level-implied variance of the h-day return: level_t + log h."""
    return np.asarray(level) + np.log(horizon)


def standardize(features: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(features - mean) / scale with missing values at the training mean (0), as float32 for the models.

    The same arithmetic as scikit-learn's StandardScaler.transform, so training and serving feed the
    models bit-identical inputs (a tree split cannot flip between them).
    """
    with np.errstate(invalid="ignore"):
        return np.nan_to_num((features - mean) / scale, nan=0.0).astype(np.float32)
