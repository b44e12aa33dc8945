"""The synthetic 2021-2025 option-margin backtest: books priced each day from DVOL, the hourly bars and a
smile shape fitted on the real Deribit chains (`volmargin.data.synthetic_options`), so that the May 2021,
May 2022 and November 2022 crashes are in it; the static Deribit grid against the autocalibrated grids.

    cd bench && nice -n 10 ../.venv/bin/python options_synthetic.py [--underlying btc|eth] [--out DIR]

Split, fixed before any result was seen: every method's scale is calibrated on the snapshots before
2022-01-01 (2021-03-25 .. 2021-12-31) and validated, unchanged, on 2022-01-01 .. 2026-01-01 (the bars
end 2025-12-31). Breach = realised 1-day loss > initial margin; margins are fractions of each book's
underlying notional. Targets: breach rate per class <= 1% on the validation days; average margin of an
autocalibrated grid <= 0.85 x the static grid's at the same or better coverage; in every crash window,
a breach rate no higher than the static grid's. The smile shape is fitted on all four real chain months
(2021-06/07, 2022-01/02) with BTC's hourly DVOL; ETH (`--underlying eth`) borrows BTC's shape and
Deribit's BTC grid as its static baseline (the data have no ETH chain).

`--floors 0,0.5,0.75` also calibrates every method with an anti-procyclical floor (each grid parameter at
least that fraction of the static grid's, `ApcConfig.floor`); the rule to pick one, stated before its
results: the smallest floor at which a method has no more breaches than the static grid in each crash
window of the calibration months (2021-05, 2021-09-07, 2021-12-04); the later windows are the test.

`--stress 0.25,0.5,0.75,1` adds the stressed-period component (`ApcConfig.stress`: each grid parameter at
least that fraction of what the worst realised 1-day moves of the underlying and of DVOL over the last 365
days would set, on top of the scale calibrated without it). The rule to pick the fraction per method, stated
before its results and the same as the floors': the smallest fraction at which the method has no more
breaches than the static grid in each crash window of the calibration months; none if no fraction does.
The look-back (365 days) and the candidate fractions are fixed, not selected. The selected variants are
then read on 2022-2025 (per class, margin ratio, crash windows).

`--levers` (session of issue 13, written before its run) adds, on top of the scales calibrated without
them, the fixed candidates of `LEVERS`: the stressed component at 0.5 or 1, each alone or with one of
three further anti-procyclical levers on the daily grid parameters: an EMIR-style buffer of 25% (held up to
1.25 x the target while it falls, spent when it rises), a cap of 3% a day on how fast each parameter may
fall, or a peak memory (each parameter at least 50% or 75% of its own largest value over the last 365
days), or the three together (buffer 25%, cap 3%, peak 50%: `_all`). The rule to pick one per method,
stated before its results, reads the calibration days only (2021-03-25 .. 2021-12-31): a candidate
qualifies when (a) each crash window of the calibration months has no more breaches than the static
grid's and (b) the calibration books whose MPOR spot move is at least `BIG_DAY` (7%) in size have no
more breaches in total than the static grid has on them; among the qualifiers the one with the least
average calibration margin is selected. If none qualifies the method
gets none (the candidate with the fewest (b) breaches, then least margin, is shown for information). The
selected variants are then read on 2022-2025 as they are: per class, margin ratio, crash windows.

`--levers --steps 16` prices the same candidates on grids of 16 price steps instead of Deribit's 8 (the
scales still bisected on 8): a grid set wider than +-16% keeps Deribit's 4% spacing up to +-32%, and
its 9 points are among the 17, so a book's margin can only rise. Added after reading the 2022-2025
breaches of `--levers` (mixed random books whose loss lies between two points of a wide grid): its
figures are for information, not a held-out test.

`--levers --spacing 0.04` (issue 13, third session, written before its run): the autocalibrated grids become
lattice grids (`Grid.spacing`): price points every 4% (Deribit's spacing, fixed in advance, not selected)
out to each calibrated range rounded up to the lattice, so a wider range only adds points (its margin never
falls as the range widens) and a range of at least 16% contains the static grid's 9 points. The scales are
bisected on the lattice grid (it is the grid the method would run), then the same 12 `LEVERS` candidates go
on top. Motivated by the breaching books of the 2022-2023 test windows (`--levers` above): the crash-window
result is therefore not fully held out. The rule changes in one point, stated before the run and reading
the calibration days only: qualify on (a) and (b) as above; then, among the qualifiers whose average
calibration margin is at most `MARGIN_BUDGET` (0.85) x the static grid's, select the one with the MOST
calibration margin (`select_levers(rule="budget")`). Why, a priori: 2021 does not tell the qualifiers apart
on coverage (2-12 of 12 qualified per method), so the cheapest qualifier is the one nearest to failing; the
issue's targets put crash coverage first under a margin budget of 0.85x, so the budget is spent on
coverage. With no qualifier within the budget, the cheapest qualifier is shown (flagged over budget). The
old rule's choice (cheapest qualifier) is printed beside it for information.

`--spacing 0.04 --even-scales` (added after the run above had read the 2022-2025 windows: for information,
not a held-out test): the same lattice candidates and budget rule, but the scales bisected on Deribit's 9
even points as in `--levers` (the lattice's rounding up adds margin on the calm calibration days, which let
the bisected scales fall from 1.51-1.54 to 1.24 for HAR on BTC).

`--spacing 0.04 --even-scales --keep-vol` (issue 13, fourth session, written before its run): the lattice
grids also keep the static grid's vol shocks (up 50%, down 25%, same vega power) as two more vol states at
every price point and under the extended table (`Grid.keep_vol`), so a grid whose range is at least 16%
contains every cell of the static grid and its margin is never below static's for any book. Motivated by
the one book that still breached in a later window under `--even-scales` (2023-03-14, SVB: a book long vol
at one tenor and short at another, binding at +4% under static's vol-up 0.50 and losing less under the
forecast's larger 0.59): the 2022-2025 crash-window result is therefore not fully held out. Decided before
the run: the scales are bisected on Deribit's 9 even points without the kept states (as `--even-scales`:
the scale is the forecasts' calibration, the kept states a floor on top), and the candidates are the
stressed component at F = 0.5 and 1 only (`KEEP_VOL_LEVERS`, the two plain `_s` levers, no buffer, cap
or peak); the rule is the budget rule above (qualify on (a) and (b) on the 2021 calibration days, then the
most calibration margin within 0.85 x static's). 2022-2025 is read as it comes.

`--eth-static` (issue 13, written before its run, after the `--keep-vol` run had missed 0.85x on ETH): ETH's
static baseline becomes Deribit's ETH grid (`DERIBIT_ETH`, +-18%, the issue's own parameters), where every
earlier ETH run borrowed BTC's +-16%; it is also the fallback and floor reference of the autocalibrated grids.
With it the ETH command is `--levers --spacing 0.045 --even-scales --keep-vol --underlying eth --eth-static`:
the lattice spacing is the static grid's own step (0.18 / 4), so that a range of at least 18% contains its 9
points; scales, candidates and the budget rule as in `--keep-vol`. 2022-2025 is read as it comes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import shared_data_dir
from options import verdict
from volmargin.calibration.option_job import PRICE_MODELS, iv_move_forecasts, price_forecasts
from volmargin.calibration.options import STATIC, ApcConfig, calibrate_methods, stressed_moves, summarise
from volmargin.data import load_bars
from volmargin.data.options import load_chains, load_dvol
from volmargin.data.synthetic_options import (X_MAX, fit_smile_shape, market_states, smile_points,
                                              synthetic_chain)
from volmargin.risk.option_books import build_books
from volmargin_serving.options import DERIBIT_BTC, DERIBIT_ETH, DERIBIT_VOL, Grid

SPLIT = pd.Timestamp("2022-01-01", tz="UTC")
# Loss days (UTC) of known crypto crashes, listed before the results were seen; a book is in a window when
# the day its 1-day MPOR covers is. Not `volmargin.data.events.STRESS_EVENTS` on purpose: these windows take
# the days around each crash too (a book priced the day before is the one that breaches) and three 2021-22
# events BTC options felt; every figure of docs/options.md was measured on them.
CRASH_WINDOWS = {
    "2021-05 China ban (May 19)": ("2021-05-12", "2021-05-23"),
    "2021-09-07 El Salvador day": ("2021-09-06", "2021-09-08"),
    "2021-12-04 weekend crash": ("2021-12-03", "2021-12-05"),
    "2022-01 sell-off": ("2022-01-20", "2022-01-24"),
    "2022-05 LUNA": ("2022-05-05", "2022-05-13"),
    "2022-06 Celsius / 3AC": ("2022-06-10", "2022-06-19"),
    "2022-11 FTX": ("2022-11-06", "2022-11-14"),
    "2023-03 SVB / USDC": ("2023-03-09", "2023-03-14"),
    "2024-08-05 carry unwind": ("2024-08-02", "2024-08-07"),
    "2025-10-10 tariff crash": ("2025-10-09", "2025-10-12"),
}
STRESS_DAYS = 365  # look-back of the stressed-period component, fixed before any run
BIG_MOVE = 0.10  # other loss days with |spot move| above this are listed as "any others in the data"
BIG_DAY = 0.07  # `--levers` rule (b): calibration books whose MPOR |spot move| is at least this
MARGIN_BUDGET = 0.85  # `--spacing` rule: the margin target, read on the calibration days
# `--levers` candidates, fixed before their run: name suffix -> APC on top of the calibrated scale
LEVERS = {f"_s{stress:g}{suffix}": ApcConfig(stress=stress, **extra)
          for stress in (0.5, 1.0)
          for suffix, extra in (("", {}), ("_buf0.25", {"buffer": 0.25}), ("_cap0.03", {"max_down": 0.03}),
                                ("_peak0.5", {"peak": 0.5}), ("_peak0.75", {"peak": 0.75}),
                                ("_all", {"peak": 0.5, "buffer": 0.25, "max_down": 0.03}))}
KEEP_VOL_LEVERS = ("_s0.5", "_s1")  # `--keep-vol` candidates, fixed before its run


def fit_shape(data: Path):
    chain = load_chains([str(data / "options")])
    hourly = load_dvol(data / "iv" / "deribit_btc_dvol_1h.csv.gz")["close"]
    points = smile_points(chain, hourly, pd.Timedelta(hours=1))
    shape = fit_smile_shape(points)
    quoted = points[points["quoted"] & (points["x"].abs() <= X_MAX)]
    shape_err = np.abs(quoted["atm_iv"] * np.sqrt(shape.ratio(quoted["days"], quoted["x"])) - quoted["mark_iv"])
    k = quoted["x"] * quoted["atm_iv"] * np.sqrt(quoted["days"] / 365.0)
    full_err = np.abs(shape.iv(quoted["days"], k, 100 * quoted["atm_iv"] / quoted["atm_over_dvol"])
                      - quoted["mark_iv"])
    print("smile shape per tenor bucket (fitted on the 120 real snapshots, two-sided quotes, |x| <= 4):")
    print(pd.DataFrame({"median days": shape.days, "ATM IV / DVOL": shape.term, "skew": shape.skew,
                        "curvature": shape.curvature}).to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    print(f"|IV error| on {len(quoted)} quoted rows: shape at each expiry's real ATM IV median {shape_err.median():.4f}"
          f" p90 {shape_err.quantile(0.9):.4f}; whole surface from DVOL median {full_err.median():.4f}"
          f" p90 {full_err.quantile(0.9):.4f}")
    return shape


def window_labels(loss_days: pd.DatetimeIndex) -> np.ndarray:
    labels = np.full(len(loss_days), "", dtype=object)
    for name, (first, last) in CRASH_WINDOWS.items():
        inside = (loss_days >= pd.Timestamp(first, tz="UTC")) & (loss_days <= pd.Timestamp(last, tz="UTC"))
        labels[np.asarray(inside)] = name
    return labels


def mpor_moves(states: pd.DataFrame) -> pd.Series:
    """Per snapshot: the spot's relative move over its MPOR (to the next day's snapshot)."""
    spot = states["spot"]
    return (spot.shift(-1) / spot - 1).dropna()


def crash_table(data, margins, scales, states) -> pd.DataFrame:
    loss_days = pd.DatetimeIndex(data.info["day"]).normalize()
    labels = window_labels(loss_days)
    table = summarise(data, margins, labels, scales)
    table = table[(table["period"] != "") & (table["portfolio_class"] == "ALL")]
    move = mpor_moves(states)
    worst = {name: move[(move.index.normalize() >= pd.Timestamp(a, tz="UTC"))
                        & (move.index.normalize() <= pd.Timestamp(b, tz="UTC"))].min()
             for name, (a, b) in CRASH_WINDOWS.items()}
    out = table.pivot(index="period", columns="method", values="breach_rate").add_prefix("breach ")
    margin = table.pivot(index="period", columns="method", values="avg_margin").add_prefix("margin ")
    out = out.join(margin).join(table.groupby("period")["portfolios"].first().rename("books"))
    out["worst 1-day move"] = pd.Series(worst)
    return out.loc[[n for n in CRASH_WINDOWS if n in out.index]]


def early_windows_covered(crashes: pd.DataFrame, method: str) -> bool:
    """No more breaches than static in each crash window of the calibration months."""
    early = [w for w in crashes.index if pd.Timestamp(CRASH_WINDOWS[w][1], tz="UTC") < SPLIT]
    return bool((crashes.loc[early, f"breach {method}"] <= crashes.loc[early, f"breach {STATIC}"] + 1e-12).all())


def print_stress_selection(summary: pd.DataFrame, crashes: pd.DataFrame, fractions: list[float], out: Path) -> None:
    """The fraction each method's rule selects (calibration-month windows only), then that variant on the
    later windows and the validation days."""
    v = summary[summary["period"] == "validation"]
    rows = []
    for method in [m for m in summary["method"].unique() if m != STATIC and "_floor" not in m and "_stress" not in m]:
        chosen = next((f for f in sorted(fractions) if early_windows_covered(crashes, f"{method}_stress{f:g}")), None)
        name = f"{method}_stress{chosen:g}" if chosen is not None else method
        later = [w for w in crashes.index if pd.Timestamp(CRASH_WINDOWS[w][1], tz="UTC") >= SPLIT]
        worse = [w for w in later if crashes.loc[w, f"breach {name}"] > crashes.loc[w, f"breach {STATIC}"] + 1e-12]
        classes = v[(v["method"] == name) & (v["portfolio_class"] != "ALL")]
        pooled = v[(v["method"] == name) & (v["portfolio_class"] == "ALL")].iloc[0]
        rows.append({"method": method, "selected_fraction": chosen, "worst_class_breach": classes["breach_rate"].max(),
                     "pooled_breach": pooled["breach_rate"], "margin_ratio_to_static": pooled["margin_ratio_to_static"],
                     "later_windows_worse_than_static": "; ".join(worse) or "none"})
    table = pd.DataFrame(rows)
    table.to_csv(out / "stress_selection.csv", index=False)
    print("\nstressed component, fraction selected on the calibration-month windows, read on 2022-2025:")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))


def big_day_breaches(books, margins: dict[str, np.ndarray], states: pd.DataFrame, calibrating: np.ndarray) -> dict:
    """Per method: breaches on the calibration books whose MPOR |spot move| is at least `BIG_DAY`."""
    move = mpor_moves(states).reindex(pd.DatetimeIndex(books.info["day"])).to_numpy()
    big = calibrating & (np.abs(move) >= BIG_DAY)
    return {method: int((books.loss > margin)[big].sum()) for method, margin in margins.items()}, int(big.sum())


def select_levers(summary: pd.DataFrame, crashes: pd.DataFrame, big: dict[str, int], methods: list[str],
                  out: Path, rule: str = "cheapest", levers=tuple(LEVERS)) -> pd.DataFrame:
    """The `--levers` rule per method (calibration days only), then the selected variant read on 2022-2025.
    `rule`: "cheapest" qualifier, or "budget": the qualifier with the most calibration margin within
    `MARGIN_BUDGET` x static's (the cheapest qualifier, flagged, if none is within it)."""
    calib = summary[(summary["period"] == "calibration") & (summary["portfolio_class"] == "ALL")].set_index("method")
    v = summary[summary["period"] == "validation"]
    later = [w for w in crashes.index if pd.Timestamp(CRASH_WINDOWS[w][1], tz="UTC") >= SPLIT]
    rows = []
    for method in methods:
        names = [method + suffix for suffix in levers]
        qualified = [n for n in names if early_windows_covered(crashes, n) and big[n] <= big[STATIC]]
        cheapest = min(qualified, key=lambda n: calib.loc[n, "avg_margin"]) if qualified else None
        within = [n for n in qualified if calib.loc[n, "margin_ratio_to_static"] <= MARGIN_BUDGET + 1e-12]
        chosen = cheapest
        if rule == "budget" and within:
            chosen = max(within, key=lambda n: calib.loc[n, "avg_margin"])
        shown = chosen or min(names, key=lambda n: (big[n], calib.loc[n, "avg_margin"]))
        worse = [w for w in later if crashes.loc[w, f"breach {shown}"] > crashes.loc[w, f"breach {STATIC}"] + 1e-12]
        classes = v[(v["method"] == shown) & (v["portfolio_class"] != "ALL")]
        pooled = v[(v["method"] == shown) & (v["portfolio_class"] == "ALL")].iloc[0]
        rows.append({"method": method, "selected": chosen[len(method):] if chosen else "none",
                     "within_budget": bool(chosen in within) if rule == "budget" else None,
                     "cheapest_qualifier": cheapest[len(method):] if cheapest else "none",
                     "shown": shown[len(method):], "qualified": len(qualified), "qualified_within_budget": len(within),
                     "big_day_breaches": big[shown], "static_big_day_breaches": big[STATIC],
                     "calibration_margin_ratio": calib.loc[shown, "margin_ratio_to_static"],
                     "worst_class_breach": classes["breach_rate"].max(), "pooled_breach": pooled["breach_rate"],
                     "margin_ratio_to_static": pooled["margin_ratio_to_static"],
                     "later_windows_worse_than_static": "; ".join(worse) or "none"})
    table = pd.DataFrame(rows)
    table.to_csv(out / "lever_selection.csv", index=False)
    print(f"\n--levers: variant selected on the calibration days (rule {rule!r}, docstring), read on 2022-2025:")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    return table


def synthetic_inputs(data: Path, underlying: str, began: float):
    """The synthetic chains' market states and books, the price and IV-move forecasts over them, the daily
    returns and DVOL: (states, books, price, iv, ret, dvol), with progress lines timed from `began`."""
    shape = fit_shape(data)
    bars_file = data / f"binance_{underlying}usdt_1h.csv.gz"
    dvol = load_dvol(data / "iv" / f"deribit_{underlying}_dvol_1d.csv.gz")
    states = market_states(load_bars(bars_file), dvol)
    books = build_books(synthetic_chain(states, shape), revalue=shape.revalue)
    print(f"\n{underlying.upper()}: {books.books.count} books ({len(books.books.book)} option legs) over "
          f"{books.info['day'].nunique()} snapshot pairs {states.index[0].date()} .. {states.index[-1].date()}, "
          f"built in {time.perf_counter() - began:.0f} s")
    origin_first = states.index[0].normalize() - pd.Timedelta(days=1)
    last = states.index[-1].normalize()
    price, ret = price_forecasts((str(bars_file),), PRICE_MODELS, origin_first, last)
    iv, _ = iv_move_forecasts(dvol, ret, origin_first, last, ("hist", "qreg"))
    print(f"forecasts done at {time.perf_counter() - began:.0f} s", flush=True)
    return states, books, price, iv, ret, dvol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--underlying", choices=("btc", "eth"), default="btc")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--floors", type=lambda text: [float(x) for x in text.split(",")], default=[0.0],
                        help="APC floors to compare, fractions of the static grid's parameters (default 0)")
    parser.add_argument("--stress", type=lambda text: [float(x) for x in text.split(",")], default=[],
                        help="stressed-component fractions to compare (worst 1-day moves of 365 days), e.g. 0.5,1")
    parser.add_argument("--levers", action="store_true",
                        help="the fixed LEVERS candidates on top of the scales and the rule of the docstring")
    parser.add_argument("--steps", type=int, default=8, help="price steps of the --levers grids (default 8)")
    parser.add_argument("--even-scales", action="store_true",
                        help="with --spacing: bisect the scales on Deribit's 9 even points, not on the lattice")
    parser.add_argument("--spacing", type=float, default=None,
                        help="lattice grids of this spacing for every autocalibrated method (scales bisected on "
                             "them) and the budget rule of the docstring, e.g. 0.04")
    parser.add_argument("--keep-vol", action="store_true",
                        help="with --levers --spacing: keep static's vol shocks as extra vol states "
                             "(Grid.keep_vol) and price only the KEEP_VOL_LEVERS candidates")
    parser.add_argument("--eth-static", action="store_true",
                        help="Deribit's ETH grid (+-18%%) as the static baseline (default: BTC's, as earlier runs)")
    args = parser.parse_args()
    if args.keep_vol and not (args.levers and args.spacing):
        parser.error("--keep-vol goes with --levers --spacing")
    if (args.stress or args.levers) and 0.0 not in args.floors:
        parser.error("--stress and --levers add to the scales calibrated without a floor: include 0 in --floors")
    out = args.out or Path(f"../runs/bench-options-synthetic-{args.underlying}")
    out.mkdir(parents=True, exist_ok=True)
    data = shared_data_dir()
    began = time.perf_counter()
    states, books, price, iv, ret, dvol = synthetic_inputs(data, args.underlying, began)
    calibrating = np.asarray(pd.DatetimeIndex(books.info["day"]) < SPLIT)
    margins, scales, grids = {}, {}, []
    base = Grid(steps=args.steps, spacing=args.spacing, keep_vol=DERIBIT_VOL if args.keep_vol else None)
    levers = {k: LEVERS[k] for k in KEEP_VOL_LEVERS} if args.keep_vol else LEVERS  # the --levers candidates
    scale_base = base if args.spacing and not args.even_scales else Grid()  # --steps: scales of Deribit's 9 points
    static = DERIBIT_ETH if args.eth_static else DERIBIT_BTC
    for floor in args.floors:
        m, sc, g = calibrate_methods(books, price, iv, calibrating, apc=ApcConfig(floor=floor) if floor else None,
                                     base=scale_base, static=static)
        suffix = f"_floor{floor:g}" if floor else ""
        for method in m if not margins else [k for k in m if k != STATIC]:
            name = method if method == STATIC else method + suffix
            margins[name], scales[name] = m[method], sc.get(method, 1.0)
        grids.append(g.assign(floor=floor))
    stress = stressed_moves(ret, dvol["close"], STRESS_DAYS)
    base_scales = {k: v for k, v in scales.items() if k != STATIC and "_floor" not in k}
    for fraction in args.stress:  # on top of the scales calibrated without it: no bisection again
        m, _, g = calibrate_methods(books, price, iv, calibrating, apc=ApcConfig(stress=fraction), stress=stress,
                                    scales=base_scales, base=scale_base, static=static)
        for method in (k for k in m if k != STATIC):
            name = f"{method}_stress{fraction:g}"
            margins[name], scales[name] = m[method], base_scales[method]
        grids.append(g[g["method"] != STATIC].assign(stress=fraction))
    for suffix, apc in levers.items() if args.levers else ():
        m, _, g = calibrate_methods(books, price, iv, calibrating, apc=apc, stress=stress, scales=base_scales,
                                    base=base, static=static)
        for method in (k for k in m if k != STATIC):
            margins[method + suffix], scales[method + suffix] = m[method], base_scales[method]
        grids.append(g[g["method"] != STATIC].assign(lever=suffix))
        print(f"lever {suffix} done at {time.perf_counter() - began:.0f} s", flush=True)
    grids = pd.concat(grids, ignore_index=True)
    summary = summarise(books, margins, np.where(calibrating, "calibration", "validation"), scales)
    summary.to_csv(out / "summary.csv", index=False)
    grids.to_csv(out / "grids.csv", index=False)
    pd.set_option("display.width", 250)
    fmt = lambda x: f"{x:.4f}"  # noqa: E731
    print(f"\n== calibrate {books.info['day'].min().date()} .. 2021-12-31, validate 2022-01-01 .. "
          f"{books.info['day'].max().date()}")
    print(verdict(summary).to_string(float_format=fmt))
    v = summary[summary["period"] == "validation"]
    for value in ("breach_rate", "avg_margin"):
        print(f"\nvalidation {value} per class:")
        print(v.pivot(index="portfolio_class", columns="method", values=value).to_string(float_format=fmt))
    crashes = crash_table(books, margins, scales, states)
    crashes.to_csv(out / "crash_windows.csv")
    print("\ncrash windows (all classes pooled; breach rate and average margin per method):")
    print(crashes.to_string(float_format=fmt))
    for method in margins:
        if method != STATIC:
            worse = crashes[crashes[f"breach {method}"] > crashes[f"breach {STATIC}"] + 1e-12].index
            early = [w for w in worse if pd.Timestamp(CRASH_WINDOWS[w][1], tz="UTC") < SPLIT]
            print(f"{method}: windows with more breaches than static: calibration months "
                  f"{', '.join(early) or 'none'}; later {', '.join(w for w in worse if w not in early) or 'none'}")
    if args.stress:
        print_stress_selection(summary, crashes, args.stress, out)
    if args.levers:
        big, count = big_day_breaches(books, margins, states, calibrating)
        print(f"\n{count} calibration books with an MPOR |spot move| >= {BIG_DAY:.0%}; static breaches {big[STATIC]}")
        select_levers(summary, crashes, big, list(base_scales), out, rule="budget" if args.spacing else "cheapest",
                      levers=tuple(levers))
    move = mpor_moves(states)
    labels = window_labels(move.index.normalize())
    others = move[(move.abs() > BIG_MOVE) & (labels == "")]
    print(f"\nother days with |spot move| > {BIG_MOVE:.0%} outside the windows: "
          + (", ".join(f"{d.date()} {m:+.1%}" for d, m in others.items()) or "none"))
    print(f"\ndone in {time.perf_counter() - began:.0f} s; tables in {out}/")


if __name__ == "__main__":
    main()
