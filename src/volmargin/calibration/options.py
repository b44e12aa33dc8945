"""The autocalibrated option margin grid and its backtest on real option books.

Methods:
- `deribit_static`: Deribit's published grid of the underlying (`volmargin_serving.options.DERIBIT_GRIDS`:
  BTC +-16%, ETH +-18%).
- `auto_<price model>_<iv model>`: per day, the grid of `grid_from_forecasts`: price ranges from the price
  model's 99% VaR of a long (fall) and short (rise) position over the MPOR, vol shocks from the IV model's
  1% / 99% quantiles of the DVOL log change over the MPOR, all times one scale per method.

No look-ahead: a snapshot taken during UTC day D uses the forecasts of origin D - 1 (data up to the end of
day D - 1, both for the bars and the daily DVOL close). The scale is the smallest one (geometric bisection,
as `volmargin.calibration.autocalibrate` does) at which every portfolio class meets the breach target on
the calibration days; the classes are a fixed test set of typical books, not a per-class parameter. The
scale then applies, unchanged, to the later (validation) days. Optional anti-procyclicality (`ApcConfig`),
applied in this order: a floor at a fraction of the static grid's; a stressed-period component, each
parameter at least a fraction of what the worst realised 1-day moves of a look-back would set
(`stressed_moves`, `volmargin_serving.options.stressed_grid`); a peak memory, each parameter at least a
fraction of its own largest value over the last `peak_days` snapshot days (`peak_grid`); then the daily
path of `volmargin_serving.margins.apc_step`: a buffer (held up to (1 + buffer) x target while the target falls,
spent when it rises) and speed limits (`speed_bounds`, e.g. a cap on the daily fall). Only the static-grid
floor is inside the scale's bisection; the others go on top of the scale calibrated without them, so they
only raise grid parameters (inside the bisection a floor lets the scale fall until the calm days' breaches
bind, which is how the static-grid floor lost the May 2021 coverage). A raised price range moves the grid's
price points of an even grid, so a single book's margin can still fall; more `steps` (`base`) keep the points
closer, and a lattice grid (`base=Grid(spacing=0.04)`) only adds points as a range widens, so there it cannot.
The margin is not monotone in the vol shocks either; `base=Grid(spacing=0.04, keep_vol=DERIBIT_VOL)` keeps the
static grid's shocks as extra vol states, so a grid whose ranges are at least 16% holds every static cell.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from volmargin.calibration.autocalibrate import TOLERANCE, utc
from volmargin.evaluation.scoring import POOLED
from volmargin.risk.option_books import OptionBacktestBooks, select_books
from volmargin_serving.margins import apc_step, speed_bounds
from volmargin_serving.options import (DERIBIT_BTC, GRID_PARAMETERS, Grid, grid_from_forecasts, initial_margin,
                                       peak_grid, stressed_grid)

STATIC = "deribit_static"
SCALE_BOUNDS = (0.05, 20.0)
INFEASIBLE_LADDER = 25  # scales tried over SCALE_BOUNDS when the upper bound misses the target
SUMMARY_COLUMNS = ["portfolio_class", "method", "period", "portfolios", "days", "breaches", "breach_rate",
                   "avg_margin", "worst_shortfall", "scale", "margin_ratio_to_static"]


@dataclass(frozen=True)
class ApcConfig:
    buffer: float | None = None  # margin held up to (1 + buffer) x target while it falls
    max_up: float | None = None  # daily speed limits on each grid parameter
    max_down: float | None = None
    floor: float = 0.0  # each grid parameter at least this fraction of the static grid's (no path)
    stress: float = 0.0  # each at least this fraction of the grid the look-back's worst 1-day moves set
    peak: float = 0.0  # each at least this fraction of its own largest value over the last `peak_days` days
    peak_days: int = 365

    @property
    def has_path(self) -> bool:
        """Whether a day's grid depends on the earlier days' (buffer or speed limits)."""
        return not (self.buffer is None and self.max_up is None and self.max_down is None)


def forecast_origins(days: pd.Series) -> pd.DatetimeIndex:
    """The forecast origin each snapshot may use: the UTC day before the snapshot's day."""
    return pd.DatetimeIndex(days).normalize() - pd.Timedelta(days=1)


STRESS_COLUMNS = ["fall", "rise", "iv_fall", "iv_rise"]
MIN_STRESS_CHANGES = 30  # fewer realised changes in the look-back: no stressed component that day


def stressed_moves(ret: pd.Series, dvol_close: pd.Series, days: int = 365) -> pd.DataFrame:
    """Origin-indexed worst realised 1-day log moves of the `days` calendar days up to the origin (known at
    its end): fall / rise of the underlying (`ret`, daily log returns), iv_fall / iv_rise of DVOL (daily
    closes); NaN with fewer than 30 changes. The rolling form of `worst_log_changes`."""
    window = f"{days}D"
    iv_change = np.log(dvol_close).diff().dropna()
    frame = pd.DataFrame({
        "fall": ret.rolling(window, min_periods=MIN_STRESS_CHANGES).min(),
        "rise": ret.rolling(window, min_periods=MIN_STRESS_CHANGES).max()})
    iv = pd.DataFrame({"iv_fall": iv_change.rolling(window, min_periods=MIN_STRESS_CHANGES).min(),
                       "iv_rise": iv_change.rolling(window, min_periods=MIN_STRESS_CHANGES).max()})
    return frame.join(iv, how="outer")


def forecast_inputs(origins: pd.DatetimeIndex, price: pd.DataFrame, iv: pd.DataFrame, risk: str = "var99",
                    stress: pd.DataFrame | None = None) -> pd.DataFrame:
    """(B, 4) var_long, var_short, iv_down, iv_up per book from a price model's forecasts (origin-indexed,
    `risk`_long / `risk`_short, e.g. var99 or es975) and an IV model's (origin-indexed, q_lo / q_hi); NaN
    where missing. With `stress` (`stressed_moves`), its four columns too."""
    p = price.reindex(origins)
    q = iv.reindex(origins)
    frame = pd.DataFrame({"var_long": p[f"{risk}_long"].to_numpy(), "var_short": p[f"{risk}_short"].to_numpy(),
                          "iv_down": q["q_lo"].to_numpy(), "iv_up": q["q_hi"].to_numpy()})
    if stress is not None:
        frame[STRESS_COLUMNS] = stress.reindex(origins)[STRESS_COLUMNS].to_numpy()
    return frame


def _apc(values: np.ndarray, day_index: np.ndarray, apc: ApcConfig | None) -> np.ndarray:
    """Each per-book parameter as a daily path through the APC step (one value per day, in day order)."""
    if apc is None or not apc.has_path:
        return values
    days, first = np.unique(day_index, return_index=True)
    daily = values[first]
    low, high = speed_bounds(1.0, apc.max_up, apc.max_down)
    out, previous = np.empty_like(daily), np.nan
    for i, target in enumerate(daily):
        previous = out[i] = apc_step(np.asarray(target), np.asarray(previous), apc.buffer, low, high)
    return out[np.searchsorted(days, day_index)]


def method_grid(inputs: pd.DataFrame, scale: float, day_index: np.ndarray, apc: ApcConfig | None = None,
                base: Grid = DERIBIT_BTC, static: Grid = DERIBIT_BTC) -> Grid:
    """The grid of every book for one autocalibrated method (vega power, steps and extended table of `base`).
    A book without a price forecast gets the `static` grid's price range, one without an IV-move forecast its
    vol shocks (e.g. the first weeks of the DVOL history, before the IV forecasters have 60 changes), each
    unscaled; the APC floor is a share of the same static grid."""
    # unknown: any valid stand-in, replaced by the static grid's parameters below
    known = inputs[["var_long", "var_short", "iv_up", "iv_down"]].fillna({"var_long": 1.0, "var_short": 1.0,
                                                                          "iv_up": 0.0, "iv_down": 0.0})
    # a forecast quantile on the wrong side of 0 (IV all but sure to rise, say) gives no shock, never a reversed one
    known = known.assign(iv_up=known["iv_up"].clip(lower=0.0), iv_down=known["iv_down"].clip(upper=0.0))
    forecast = grid_from_forecasts(known["var_long"], known["var_short"], known["iv_up"], known["iv_down"], scale,
                                   base=base)
    has_price = np.isfinite(inputs[["var_long", "var_short"]].to_numpy()).all(axis=1)
    has_iv = np.isfinite(inputs[["iv_down", "iv_up"]].to_numpy()).all(axis=1)
    fields = {}
    for name, known in (("range_down", has_price), ("range_up", has_price), ("vol_up", has_iv), ("vol_down", has_iv)):
        value = np.where(known, np.asarray(getattr(forecast, name), dtype=float), getattr(static, name))
        if apc is not None and apc.floor:
            value = np.maximum(value, apc.floor * getattr(static, name))
        fields[name] = value
    grid = dataclasses.replace(forecast, **fields)
    if apc is not None and apc.stress:
        if not set(STRESS_COLUMNS) <= set(inputs.columns):
            raise ValueError("ApcConfig.stress needs the stressed moves in the inputs (forecast_inputs(stress=...))")
        moves = {name: inputs[name].to_numpy() for name in STRESS_COLUMNS}
        grid = stressed_grid(grid, (moves["fall"], moves["rise"]), (moves["iv_fall"], moves["iv_rise"]), apc.stress)
    if apc is not None and apc.peak:
        grid = peak_grid(grid, _recent_peak(grid, day_index, apc.peak_days), apc.peak)
    return dataclasses.replace(grid, **{name: _apc(np.asarray(getattr(grid, name)), day_index, apc)
                                        for name in GRID_PARAMETERS})


def _recent_peak(grid: Grid, day_index: np.ndarray, days: int) -> Grid:
    """Per book, each grid parameter's largest daily value over the last `days` snapshot days up to its own
    (one snapshot a day: the synthetic chains; on the real chains' monthly blocks the window spans the gaps)."""
    _, first = np.unique(day_index, return_index=True)
    peaks = {}
    for name in GRID_PARAMETERS:
        daily = pd.Series(np.broadcast_to(np.asarray(getattr(grid, name), dtype=float), day_index.shape)[first])
        peaks[name] = daily.rolling(days, min_periods=1).max().to_numpy()[day_index]
    return dataclasses.replace(grid, **peaks)


def allowed_breaches(n, target: float, confidence: float | None) -> np.ndarray:
    """Breaches a class may have on n calibration books: floor(target x n), or, with `confidence`, the
    count that a true breach rate of `target` would exceed with that probability (binomial), so that a
    few lucky calibration days do not set the scale: 0 of 120 books at 95%, 4 of 1,000."""
    n = np.asarray(n)
    if confidence is None:
        return np.floor(target * n + 1e-9)
    from scipy.stats import binom

    return np.maximum(binom.ppf(1 - confidence, n, target) - 1, 0)


def _allowed(classes: np.ndarray, counted: np.ndarray, target: float, confidence: float | None):
    codes, names = pd.factorize(classes)
    n = np.bincount(codes[counted], minlength=len(names))
    return codes, allowed_breaches(n, target, confidence), n


def calibrate_scale(data: OptionBacktestBooks, inputs: pd.DataFrame, counted: np.ndarray, target: float = 0.01,
                    apc: ApcConfig | None = None, confidence: float | None = 0.95,
                    base: Grid = DERIBIT_BTC, static: Grid = DERIBIT_BTC) -> tuple[float, bool]:
    """Smallest scale at which every class has at most target x its counted books in breach; (scale,
    feasible). Where the upper bound misses the target, some losses lie outside the grid's shape (e.g. a
    calendar whose near and far IVs move apart; and a very wide grid's points straddle moderate moves):
    the method is reported infeasible, and its scale is the smallest on a ladder over the bounds that
    leaves each class no more breaches than the ladder's best for it (or the target), refined by
    bisection below it: never the upper bound's margins for a breach no scale removes."""
    codes, allowed, _ = _allowed(data.info["portfolio_class"].to_numpy(), counted, target, confidence)
    if apc is None or not apc.has_path:  # each book's margin is its own day's: price only the counted books
        data, inputs, codes = select_books(data, counted), inputs[counted], codes[counted]  # (calibration)
        counted = np.ones(len(codes), dtype=bool)
    day_index = _day_index(data)

    def hits(scale: float) -> np.ndarray:
        margin = initial_margin(data.books, method_grid(inputs, scale, day_index, apc, base, static), data.mpor_days)
        return np.bincount(codes[counted], (data.loss > margin)[counted], minlength=len(allowed))

    lo, hi = SCALE_BOUNDS
    feasible = bool(np.all(hits(hi) <= allowed))
    if not feasible:
        ladder = np.geomspace(lo, hi, INFEASIBLE_LADDER)
        counts = np.array([hits(scale) for scale in ladder])
        allowed = np.maximum(allowed, counts.min(axis=0))
        first = int(np.argmax((counts <= allowed).all(axis=1)))
        lo, hi = ladder[max(first - 1, 0)], ladder[first]
    while hi > lo * (1 + TOLERANCE):
        mid = float(np.sqrt(lo * hi))
        lo, hi = (lo, mid) if np.all(hits(mid) <= allowed) else (mid, hi)
    return hi, feasible


def _day_index(data: OptionBacktestBooks) -> np.ndarray:
    return pd.factorize(data.info["day"], sort=True)[0]


def summarise(data: OptionBacktestBooks, margins: dict[str, np.ndarray], periods: np.ndarray,
              scales: dict[str, float]) -> pd.DataFrame:
    """Per class (and 'ALL'), method and period: books, days, breaches, breach rate, average margin and worst
    shortfall (fractions of the book's underlying notional), the average margin relative to the static grid."""
    frame = data.info[["day", "portfolio_class"]].assign(period=periods, loss=data.loss / data.books.notional)
    rows = []
    for method, margin in margins.items():
        f = frame.assign(margin=margin / data.books.notional, static=margins[STATIC] / data.books.notional)
        f = pd.concat([f, f.assign(portfolio_class=POOLED)])
        for (cls, period), g in f.groupby(["portfolio_class", "period"], sort=False):
            breach = g["loss"] > g["margin"]
            rows.append({"portfolio_class": cls, "method": method, "period": period, "portfolios": len(g),
                         "days": g["day"].nunique(), "breaches": int(breach.sum()), "breach_rate": breach.mean(),
                         "avg_margin": g["margin"].mean(),
                         "worst_shortfall": float(np.maximum(g["loss"] - g["margin"], 0).max()),
                         "scale": scales.get(method, 1.0),
                         "margin_ratio_to_static": g["margin"].mean() / g["static"].mean()})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


def calibrate_methods(data: OptionBacktestBooks, price: dict[str, pd.DataFrame], iv: dict[str, pd.DataFrame],
                      calibrating: np.ndarray, target: float = 0.01, apc: ApcConfig | None = None,
                      risk: str = "var99", confidence: float | None = 0.95, stress: pd.DataFrame | None = None,
                      scales: dict[str, float] | None = None, base: Grid = DERIBIT_BTC,
                      static: Grid = DERIBIT_BTC, scale_base: Grid | None = None,
                      ) -> tuple[dict[str, np.ndarray], dict[str, float], pd.DataFrame]:
    """Every method calibrated on the books flagged `calibrating`: (USD margin per book by method, scale by
    method, the grid parameters of each method per day). `stress` (`stressed_moves`) feeds `apc.stress`;
    every APC component but the static floor goes on top of the scale calibrated without it; `scales` (by
    method) skips the bisection (e.g. the same scales under several stressed fractions); `base` gives the
    autocalibrated grids their vega power, steps, lattice, kept vol states and extended table; `scale_base`
    (default `base`) the grid the scales are bisected on (e.g. Deribit's 9 even points, with a lattice and
    kept vol states only adding cells on top); `static` is the baseline grid (Deribit's BTC or ETH)."""
    origins = forecast_origins(data.info["day"])
    scale_apc = ApcConfig(floor=apc.floor) if apc is not None and apc.floor else None  # the rest goes on top
    margins = {STATIC: initial_margin(data.books, static, data.mpor_days)}
    given, calibrated, grids = scales or {}, {}, [_grid_frame(STATIC, data, static, 1.0)]
    day_index = _day_index(data)
    for price_model, price_frame in price.items():
        for iv_model, iv_frame in iv.items():
            method = f"auto_{price_model}_{iv_model}"
            inputs = forecast_inputs(origins, price_frame, iv_frame, risk, stress)
            if method in given:
                scale, feasible = given[method], None  # not bisected here
            else:
                scale, feasible = calibrate_scale(data, inputs, calibrating, target, scale_apc, confidence,
                                                  scale_base or base, static)
            grid = method_grid(inputs, scale, day_index, apc, base, static)
            margins[method], calibrated[method] = initial_margin(data.books, grid, data.mpor_days), scale
            grids.append(_grid_frame(method, data, grid, scale).assign(feasible=feasible))
    return margins, calibrated, pd.concat(grids, ignore_index=True)


def run_option_backtest(data: OptionBacktestBooks, price: dict[str, pd.DataFrame], iv: dict[str, pd.DataFrame],
                        calibrate_until, target: float = 0.01, apc: ApcConfig | None = None,
                        calibrate_after=None, risk: str = "var99", confidence: float | None = 0.95,
                        stress: pd.DataFrame | None = None, base: Grid = DERIBIT_BTC,
                        scale_base: Grid | None = None, scales: dict[str, float] | None = None,
                        static: Grid = DERIBIT_BTC) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Calibrate every method on the books of days < `calibrate_until` (with `calibrate_after`, the reverse
    check: on those of days >= it instead), then summarise calibration and validation days. Returns (summary, grids): the
    grid parameters of each method per day. `base`, `scale_base` and `static` (the baseline: Deribit's grid
    of the chains' underlying) as in `calibrate_methods`; `scales` (by method) calibrated elsewhere, e.g.
    on synthetic books, skip the bisection."""
    days = pd.DatetimeIndex(data.info["day"])
    calibrating = np.asarray(days < utc(calibrate_until))
    if calibrate_after is not None:
        calibrating = np.asarray(days >= utc(calibrate_after))
    periods = np.where(calibrating, "calibration", "validation")
    margins, scales, grids = calibrate_methods(data, price, iv, calibrating, target, apc, risk, confidence, stress,
                                               scales=scales, base=base, static=static, scale_base=scale_base)
    return summarise(data, margins, periods, scales), grids


def _grid_frame(method: str, data: OptionBacktestBooks, grid: Grid, scale: float) -> pd.DataFrame:
    n = data.books.count
    frame = pd.DataFrame({"day": data.info["day"], "method": method, "scale": scale,
                          **{k: np.broadcast_to(np.asarray(getattr(grid, k), dtype=float), (n,))
                             for k in ("range_down", "range_up", "vol_up", "vol_down")}})
    return frame.drop_duplicates("day").reset_index(drop=True)
