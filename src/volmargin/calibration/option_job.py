"""`volmargin options`: option books from real chains, the static Deribit grid against autocalibrated grids.

Steps: load and validate the chains, the DVOL files and the underlying's bars; walk-forward price forecasts
of the baseline models (`volmargin.evaluation.backtest.run_backtest`) and IV-move forecasts
(`volmargin.models.ivmoves`) up to the last snapshot; books and realised MPOR losses
(`volmargin.risk.option_books`); calibration before `--calibrate-until`, validation after
(`volmargin.calibration.options`). The scales are calibrated by default on a year of synthetic books
before the cut (`volmargin.data.synthetic_options`: DVOL-priced chains on the smile shape of the real
chains before it), so that a month of calm real books does not set them; `calibrate_on='chains'` takes
the real books. Writes OUT/summary.csv, OUT/grids.csv (grid parameters per method and day),
OUT/iv_scores.csv (pinball loss and exceedances of the IV-move forecasts), OUT/run.json and OUT/report.html
(per-class coverage and margin, grid parameters over time).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from volmargin.errors import ConfigError, DataError

PRICE_MODELS = ("ewma", "gjr", "har")
MIN_SYNTHETIC_DAYS = 30  # fewer synthetic snapshot days than this before the cut cannot set a 1% scale
MAX_SPOT_RATIO = 2.0  # an underlying price this far from the bars' is in another unit, or the bars another asset's
IV_HISTORY_DAYS = 60  # the IV-move forecasters' first forecast needs 60 daily changes (`volmargin.models.ivmoves`)


@dataclass(frozen=True)
class OptionJob:
    chains: tuple[str, ...]
    iv: tuple[str, ...]
    data: tuple[str, ...]
    calibrate_until: pd.Timestamp
    out: Path
    models: tuple[str, ...] = PRICE_MODELS
    iv_models: tuple[str, ...] = ("hist", "qreg")
    underlying: str | None = None  # None: the chains' own (their instrument names)
    target: float = 0.01
    confidence: float | None = 0.95
    risk: str = "var99"
    seed: int = 0
    stress: float = 0.0  # stressed-period component (`ApcConfig.stress`), 0 = off
    stress_days: int = 365
    peak: float = 0.0  # peak memory (`ApcConfig.peak`), 0 = off
    buffer: float | None = None  # APC buffer on the daily grid parameters (`ApcConfig.buffer`)
    max_down: float | None = None  # cap on each parameter's daily fall (`ApcConfig.max_down`)
    steps: int = 8  # price steps of the autocalibrated grids (Deribit's 8: 9 points); more keep them closer
    spacing: float | None = None  # lattice grids instead (`Grid.spacing`): a point every `spacing` out to the range
    keep_vol: bool = False  # static's vol shocks kept as extra vol states (`Grid.keep_vol`)
    scales_on_grid: bool = False  # bisect the scales on the grid the methods run (lattice, kept states), not on
    # the even grid of `steps` with the lattice and kept states added on top
    calibrate_on: str = "synthetic"  # the books the scales are calibrated on: "synthetic" or "chains" (real)
    synthetic_days: int = 365  # days of synthetic books before the cut

    def __post_init__(self) -> None:
        """Each option's type and range, checked before any work (named by its CLI flag)."""
        from volmargin_serving.bundle import real_number

        whole = {"--stress-days": self.stress_days, "--steps": self.steps, "--synthetic-days": self.synthetic_days}
        numbers = {"--target": self.target, "--stress": self.stress, "--peak": self.peak, "--buffer": self.buffer,
                   "--fall-cap": self.max_down, "--spacing": self.spacing}
        for flag, value in whole.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"{flag} must be a whole number, got {value!r}")
        for flag, value in numbers.items():
            if value is not None and not real_number(value):
                raise ConfigError(f"{flag} must be a finite number, got {value!r}")
        for flag, value in (("--models", self.models), ("--iv-models", self.iv_models)):
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{flag} must be a sequence of names, got {value!r}")
        checks = [
            (bool(self.models), "--models is empty"),
            (bool(self.iv_models) and set(self.iv_models) <= {"hist", "qreg"},
             f"--iv-models must be a subset of hist,qreg, got {','.join(self.iv_models)!r}"),
            (0 < self.target < 0.5, f"--target must lie in (0, 0.5), got {self.target}"),
            (0 <= self.stress <= 5, f"--stress must lie in [0, 5], got {self.stress}"),
            (self.stress_days >= 30, f"--stress-days must be at least 30, got {self.stress_days}"),
            (0 <= self.peak <= 1, f"--peak must lie in [0, 1], got {self.peak}"),
            (self.buffer is None or 0 <= self.buffer <= 1, f"--buffer must lie in [0, 1], got {self.buffer}"),
            (self.max_down is None or 0 < self.max_down < 1, f"--fall-cap must lie in (0, 1), got {self.max_down}"),
            (2 <= self.steps <= 64 and self.steps % 2 == 0,
             f"--steps must be an even number from 2 to 64, got {self.steps}"),
            (self.spacing is None or 0.005 <= self.spacing <= 0.5,
             f"--spacing must lie in [0.005, 0.5], got {self.spacing}"),
            (30 <= self.synthetic_days <= 3650, f"--synthetic-days must lie in [30, 3650], got {self.synthetic_days}"),
            (self.calibrate_on in ("synthetic", "chains"),
             f"--calibrate-on must be synthetic or chains, got {self.calibrate_on!r}"),
        ]
        for ok, message in checks:  # NaN fails every comparison, so it is refused too
            if not ok:
                raise ConfigError(message)

    @property
    def apc(self):
        """The APC levers on top of the calibrated scale, None when all are off."""
        from volmargin.calibration.options import ApcConfig

        apc = ApcConfig(buffer=self.buffer, max_down=self.max_down, stress=self.stress, peak=self.peak)
        return apc if apc != ApcConfig() else None


def price_forecasts(data: tuple[str, ...], models: tuple[str, ...], first: pd.Timestamp,
                    last: pd.Timestamp, underlying: str | None = None,
                    chain: pd.DataFrame | None = None) -> tuple[dict, pd.Series]:
    """Walk-forward VaR/ES forecasts of the price models on the bars of one underlying, origins in [first,
    last] (model -> origin-indexed frame), and its daily log returns. Bars named after another known
    underlying than `underlying` (e.g. BTC's for ETH options), or far from the `chain`'s underlying prices
    (`check_underlying_prices`), are refused."""
    from volmargin.data import load_panel
    from volmargin.evaluation.backtest import BacktestConfig, daily_panel, run_backtest
    from volmargin.evaluation.walkforward import WalkForwardSplit

    bars = load_panel(list(data))
    if len(bars) != 1:
        raise ConfigError(f"--data: expected the bars of one underlying, got {len(bars)} assets ({', '.join(bars)})")
    check_bars_underlying(next(iter(bars)), underlying)
    if chain is not None:
        check_underlying_prices(chain, next(iter(bars.values()))["close"])
    panel = daily_panel(bars)
    split = WalkForwardSplit(start=first, end=last, refit_every=20)
    forecasts, _ = run_backtest(panel, BacktestConfig(models=models, split=split), progress=False)
    if forecasts.empty:
        raise DataError("--data: the bars give no forecast before the option snapshots (365 days of history needed)")
    daily = next(iter(panel.values()))
    return {m: g.set_index("origin") for m, g in forecasts.groupby("model")}, daily["ret"]


def daily_close(dvol: pd.DataFrame) -> pd.Series:
    """A DVOL file's daily closes (a daily file's, or the last hourly close of each day, bar open labels)."""
    return dvol["close"] if "open" in dvol.columns else dvol["close"].resample("1D").last().dropna()


def check_dvol_covers(dvol: pd.DataFrame, first: pd.Timestamp, last: pd.Timestamp) -> None:
    """DataError naming the DVOL file unless it has a close on every day from the origin `first` (the day
    before the first snapshot) to `last`, and on every day of the IV_HISTORY_DAYS before `first` that it
    reaches back to: a missing origin would silently give that day's books the static grid's vol shocks,
    and a gap before it would count a many-day change as one day's in the forecasters' history."""
    closes = daily_close(dvol).index
    name = dvol.attrs.get("source", "--iv")
    if closes.empty or closes[0] > first:
        start = "holds no close" if closes.empty else f"starts on {closes[0]:%Y-%m-%d}"
        raise DataError(f"{name}: DVOL {start}, after {first:%Y-%m-%d} (the day before the first snapshot); "
                        f"give DVOL from {first - pd.Timedelta(days=IV_HISTORY_DAYS):%Y-%m-%d} on")
    needed = pd.date_range(max(closes[0], first - pd.Timedelta(days=IV_HISTORY_DAYS)), last, freq="D")
    missing = needed.difference(closes)
    if len(missing):
        raise DataError(f"{name}: no DVOL close on {len(missing)} day(s) from {missing[0]:%Y-%m-%d} to "
                        f"{missing[-1]:%Y-%m-%d}; the IV-move forecasts of the snapshots need every day from "
                        f"{needed[0]:%Y-%m-%d} to {last:%Y-%m-%d}")


def iv_move_forecasts(dvol: pd.DataFrame, ret: pd.Series, first: pd.Timestamp, last: pd.Timestamp,
                      models: tuple[str, ...]) -> tuple[dict, pd.DataFrame]:
    """IV-move forecasts of a DVOL file (daily, or hourly closes taken at each day's end) for origins in
    [first, last]: (model -> origin-indexed q_lo / q_hi, the long table with the realised targets)."""
    from volmargin.models.ivmoves import iv_forecasts

    ivf = iv_forecasts(daily_close(dvol), ret, start=first - pd.Timedelta(days=60), end=last, models=models)
    iv = {m: g.set_index("origin") for m, g in ivf.groupby("model")}
    missing = sorted(set(models) - set(iv))
    if missing:
        raise DataError(f"--iv: no {', '.join(missing)} IV-move forecast before the snapshots (too little DVOL history)")
    return iv, ivf[ivf["origin"] >= first]


def check_bars_underlying(asset: str, underlying: str | None) -> None:
    """Refuse bars whose name says another underlying of `DERIBIT_GRIDS` than the options' own."""
    from volmargin_serving.options import DERIBIT_GRIDS

    named = [u for u in DERIBIT_GRIDS if u in asset.lower()]
    if underlying is not None and named and underlying not in named:
        raise ConfigError(f"--data: the bars of {asset} for options on {underlying}; give the bars of {underlying}")


def check_underlying_prices(chain: pd.DataFrame, close: pd.Series) -> None:
    """DataError naming the snapshot and instrument of the first chain row whose underlying price is more
    than MAX_SPOT_RATIO times from the bars' last close at its time (rows outside the bars' span unchecked)."""
    stamps = pd.DatetimeIndex(chain["timestamp"])
    at = close.sort_index().asof(stamps).to_numpy(dtype=float)
    ratio = chain["underlying_price"].to_numpy() / at
    inside = (stamps <= close.index.max() + pd.Timedelta(days=1)) & np.isfinite(ratio)
    bad = inside & ((ratio > MAX_SPOT_RATIO) | (ratio < 1 / MAX_SPOT_RATIO))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"--chains: snapshot {stamps[i]:%Y-%m-%dT%H:%M:%SZ}: the underlying_price "
                        f"{chain['underlying_price'].iloc[i]:.10g} of {chain['instrument'].iloc[i]} is {ratio[i]:.3g}x "
                        f"the --data bars' close {at[i]:.10g} then (over {MAX_SPOT_RATIO:g}x apart: another unit, or "
                        "bars of another asset)")


def check_calibrate_until(chain: pd.DataFrame, cut: pd.Timestamp) -> None:
    """Books need two snapshots; `cut` must leave snapshot pairs on both sides: calibration (or, for synthetic
    calibration, the smile) before it, validation from it on (a pair's day is its first snapshot's)."""
    stamps = pd.DatetimeIndex(np.sort(chain["timestamp"].unique()))
    if len(stamps) < 2:
        raise DataError(f"--chains: one snapshot ({stamps[0]:%Y-%m-%dT%H:%M:%SZ}); the books need two, a day apart")
    first, last = stamps[0], stamps[-2]
    earliest, latest = (first + pd.Timedelta(1, "ns")).ceil("D"), last.floor("D")
    if earliest <= cut <= latest:
        return
    why = "no snapshot before it" if cut < earliest else "no snapshot pair from it on to validate"
    span = (f"give a date from {earliest:%Y-%m-%d} to {latest:%Y-%m-%d}" if earliest <= latest else
            "the chains have no date with snapshots on both sides")
    raise ConfigError(f"--calibrate-until {cut:%Y-%m-%d}: {why}; {span} (the snapshots before it calibrate, "
                      "those from it on validate)")


def static_fallback_days(books, price: dict, iv: dict, risk: str) -> dict[str, dict[str, int]]:
    """Per autocalibrated method with any: the book days whose grid takes the static grid's price range (no
    price forecast at their origin) or vol shocks (no IV-move forecast, e.g. the first days of the DVOL
    history), of `days` in all (`volmargin.calibration.options.method_grid`)."""
    from volmargin.calibration.options import forecast_inputs, forecast_origins

    origins = forecast_origins(pd.Series(pd.unique(books.info["day"])))
    out = {}
    for price_model, price_frame in price.items():
        for iv_model, iv_frame in iv.items():
            known = forecast_inputs(origins, price_frame, iv_frame, risk).notna()
            counts = {"range": int((~known[["var_long", "var_short"]].all(axis=1)).sum()),
                      "vol": int((~known[["iv_down", "iv_up"]].all(axis=1)).sum())}
            if any(counts.values()):
                out[f"auto_{price_model}_{iv_model}"] = {**counts, "days": len(origins)}
    return out


@dataclass(frozen=True)
class OptionInputs:
    books: object  # volmargin.risk.option_books.OptionBacktestBooks
    price: dict[str, pd.DataFrame]  # price model -> origin-indexed VaR/ES forecasts
    iv: dict[str, pd.DataFrame]  # IV model -> origin-indexed q_lo / q_hi
    iv_forecasts: pd.DataFrame  # long table with the realised targets
    snapshots: int
    stress: pd.DataFrame | None = None  # worst realised moves per origin (`stressed_moves`), if job.stress
    calibration_books: object = None  # synthetic books the scales are calibrated on (None: the real ones)
    underlying: str = "btc"  # of the chains: it picks the DVOL file and the static grid


def prepare_option_inputs(job: OptionJob) -> OptionInputs:
    """Chains, DVOL and bars loaded and validated; price and IV-move forecasts walk-forward up to the last
    snapshot; the books and their realised losses."""
    from volmargin.data.options import chain_underlying, load_chains, load_dvols
    from volmargin.risk.option_books import build_books
    from volmargin_serving.options import DERIBIT_GRIDS

    chain = load_chains(list(job.chains))
    check_calibrate_until(chain, job.calibrate_until)
    underlying = job.underlying or chain_underlying(chain)
    if underlying not in DERIBIT_GRIDS:
        raise ConfigError(f"--chains: options on {underlying}, which has no published Deribit grid here "
                          f"(known: {', '.join(DERIBIT_GRIDS)})")
    dvols = load_dvols(list(job.iv))
    if underlying not in dvols:
        raise ConfigError(f"--iv: no DVOL file of {underlying!r} (found {', '.join(dvols) or 'none'})")
    dvol = dvols[underlying]
    first, last = chain["timestamp"].min().normalize(), chain["timestamp"].max().normalize()
    check_dvol_covers(dvol, first - pd.Timedelta(days=1), last - pd.Timedelta(days=1))  # the snapshots' origins
    synthetic = synthetic_books(chain, dvol, job, underlying) if job.calibrate_on == "synthetic" else None
    if synthetic is not None:
        first = min(first, pd.Timestamp(synthetic.info["day"].min()).normalize())
    origin_first = first - pd.Timedelta(days=1)
    price, ret = price_forecasts(job.data, job.models, origin_first, last, underlying, chain)
    iv, ivf = iv_move_forecasts(dvol, ret, origin_first, last, job.iv_models)
    stress = None
    if job.stress:
        from volmargin.calibration.options import stressed_moves

        stress = stressed_moves(ret, daily_close(dvol), job.stress_days)
    return OptionInputs(build_books(chain, job.seed), price, iv, ivf, int(chain["timestamp"].nunique()), stress,
                        synthetic, underlying)


def synthetic_books(chain: pd.DataFrame, dvol: pd.DataFrame, job: OptionJob, underlying: str | None = None):
    """Books on synthetic chains of the `synthetic_days` before the cut: the underlying's bars and DVOL, on
    the smile shape fitted on the real snapshots before the cut (nothing after it is read)."""
    from volmargin.data import load_panel
    from volmargin.data.synthetic_options import fit_smile_shape, market_states, smile_points, synthetic_chain
    from volmargin.risk.option_books import build_books, select_books

    cut = job.calibrate_until
    before = chain[chain["timestamp"] < cut]
    if before.empty:
        raise ConfigError(f"--calibrate-until {cut.date()}: synthetic calibration fits its smile on the chains "
                          "before it, and there are none (or --calibrate-on chains)")
    bar = pd.Timedelta(days=1) if "open" in dvol.columns else pd.Timedelta(hours=1)
    shape = fit_smile_shape(smile_points(before, dvol["close"], bar))
    bars = load_panel(list(job.data))
    check_bars_underlying(next(iter(bars)), underlying)
    states = market_states(next(iter(bars.values())), daily_close(dvol).to_frame("close"))
    states = states[(states.index >= cut - pd.Timedelta(days=job.synthetic_days)) & (states.index < cut)]
    if len(states) < MIN_SYNTHETIC_DAYS:
        raise DataError(f"--iv / --data: {len(states)} days of DVOL and bars in the {job.synthetic_days} before "
                        f"{cut.date()}; synthetic calibration needs {MIN_SYNTHETIC_DAYS} (or --calibrate-on chains)")
    books = build_books(synthetic_chain(states, shape), job.seed, revalue=shape.revalue)
    return select_books(books, np.asarray(pd.DatetimeIndex(books.info["day"]) < cut))  # losses known at the cut


def run_option_job(job: OptionJob) -> dict:
    from volmargin.calibration.options import calibrate_methods, run_option_backtest
    from volmargin.io import preflight, staged_folder, write_atomic, write_frame
    from volmargin.models.ivmoves import score_quantiles
    from volmargin.risk.option_books import missing_class_days

    preflight(job.out, folder=True)  # before any work
    began = time.perf_counter()
    inputs = prepare_option_inputs(job)
    data = inputs.books
    from volmargin_serving.options import DERIBIT_GRIDS, DERIBIT_VOL

    static = DERIBIT_GRIDS[inputs.underlying]
    base = replace(static, steps=job.steps, spacing=job.spacing, keep_vol=DERIBIT_VOL if job.keep_vol else None)
    # the scales of the even grid unless on the grid: a lattice and kept vol states then add cells on top
    scale_base = base if job.scales_on_grid else replace(static, steps=job.steps)
    scales, feasible = None, None
    if inputs.calibration_books is not None:  # the scales from the synthetic books, then the real ones priced
        synthetic = inputs.calibration_books
        _, scales, synthetic_grids = calibrate_methods(
            synthetic, inputs.price, inputs.iv, np.ones(synthetic.books.count, dtype=bool), job.target, job.apc,
            job.risk, job.confidence, inputs.stress, base=base, static=static, scale_base=scale_base)
        feasible = synthetic_grids.groupby("method")["feasible"].first()
    summary, grids = run_option_backtest(data, inputs.price, inputs.iv, job.calibrate_until, job.target, apc=job.apc,
                                         risk=job.risk, confidence=job.confidence, stress=inputs.stress, base=base,
                                         scale_base=scale_base, scales=scales, static=static)
    if feasible is not None:
        grids["feasible"] = grids["method"].map(feasible)
    if scales is None and not (summary["period"] == "calibration").any():
        raise ConfigError(f"--calibrate-until {job.calibrate_until.date()}: no snapshot pair before it")
    if not (summary["period"] == "validation").any():
        raise ConfigError(f"--calibrate-until {job.calibrate_until.date()}: no snapshot pair from it on to validate")
    record = {"command": "options", "underlying": inputs.underlying, "snapshots": inputs.snapshots,
              "books": int(data.books.count),
              "calibrate_until": str(job.calibrate_until.date()), "target": job.target,
              "confidence": job.confidence, "risk": job.risk, "models": list(job.models),
              "iv_models": list(job.iv_models), "stress": job.stress,
              "stress_days": job.stress_days, "peak": job.peak, "buffer": job.buffer, "fall_cap": job.max_down,
              "steps": job.steps, "spacing": job.spacing, "keep_vol": job.keep_vol,
              "scales_on_grid": job.scales_on_grid,
              "calibrate_on": job.calibrate_on,
              "synthetic_books": None if scales is None else int(inputs.calibration_books.books.count),
              "infeasible": sorted(grids.loc[grids["feasible"].eq(False), "method"].unique()),  # static: None
              "book_days": int(data.info["day"].nunique()),
              "calibration_book_days": int(inputs.calibration_books.books.count) if scales is not None else int(
                  (pd.DatetimeIndex(data.info["day"]) < job.calibrate_until).sum()),
              "missing_class_days": missing_class_days(data.info),
              "static_fallback_days": static_fallback_days(data, inputs.price, inputs.iv, job.risk),
              "synthetic_static_fallback_days": None if scales is None else static_fallback_days(
                  inputs.calibration_books, inputs.price, inputs.iv, job.risk),
              "seconds": round(time.perf_counter() - began, 1)}
    from volmargin.reports.options import write_options_report

    with staged_folder(job.out) as staging:  # the whole folder appears at once, or the old one stays
        write_frame(summary, staging / "summary.csv")
        write_frame(grids, staging / "grids.csv")
        write_frame(score_quantiles(inputs.iv_forecasts), staging / "iv_scores.csv")
        write_atomic(staging / "run.json", lambda p: p.write_text(json.dumps(record, indent=2)))
        write_options_report(summary, grids, record, staging / "report.html")
    return {"record": record, "summary": summary}
