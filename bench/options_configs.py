"""One option-grid configuration for every measure of issue 13: fixed candidates, a selection rule that reads
calibration days only, then the chosen candidate read on the later days.

    cd bench && nice -n 5 python options_configs.py [--underlying btc|eth] [--out DIR]

BTC (default) prices every candidate on the real chains (calibrated on 2021-06/07, validated on 2022-01/02,
as `volmargin options --calibrate-until 2022-01-01`) and on the synthetic 2021-2025 books
(`options_synthetic.py`: calibrated on 2021-03-25 .. 2021-12-31, validated on 2022-2025), then applies the
rule. ETH prices the candidates on the synthetic ETH books against Deribit's ETH grid (+-18%; the lattice
takes that grid's own step, 4.5%), for reading only: the rule is BTC's.

Written before its run (issue 13, session 10), after a diagnosis of the earlier runs' outputs on the
validation days (so the candidates are not blind to them; the choice among them is): on the real 2022-01/02
months har_qreg's crash-safe grid costs 0.854x static: the lattice adds 10 points over the plain grid
(0.62x), the kept vol states 14, both 23, the stressed component at 0.5 under 1; on the synthetic BTC crash
windows the plain grid's 25 extra breaches are covered mostly by the lattice (19), the kept vol states add
the SVB book, the stressed component at 0.5 none. Candidates, each on Deribit's vega power and extended
table, lattice of the static grid's step, static's vol shocks kept as extra states:

- `lat_kv_s0.5_even`: the crash-safe options of the last session (`--spacing 0.04 --keep-vol --stress 0.5`),
  scales bisected on the 9 even points, the lattice, kept states and stressed component on top;
- `lat_kv_even`: the same without the stressed component;
- `lat_kv_grid`: scales bisected on the grid the method runs (lattice and kept states included), so the
  scale pays only for what the forecasts must still cover beyond them;
- `lat_kv_grid_s0.5`, `lat_kv_grid_s1`: that, with the stressed component at 0.5 or 1 on top.

Rule, reading calibration days only (never 2022-01/02 on the real chains or 2022+ on the synthetic books):
a candidate qualifies when, for both HAR methods (har_qreg, har_hist: the only ones within 1% per class on
the real validation in earlier runs; every method is reported), (a) each synthetic 2021 crash window has no
more breached books than static, (b) the synthetic 2021 books with an MPOR |spot move| >= 7% have no more
breaches in total than static, (c) on the real 2021-06/07 every class is within 1%. Among the qualifiers
the one with the least calibration margin is chosen (the mean over both HAR methods of the real 2021-06/07
and synthetic 2021 average margins relative to static); if none qualifies the first candidate stays.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import shared_data_dir
from options_synthetic import CRASH_WINDOWS, SPLIT, big_day_breaches, crash_table, synthetic_inputs
from volmargin.calibration.option_job import OptionJob, prepare_option_inputs
from volmargin.calibration.options import STATIC, ApcConfig, calibrate_methods, stressed_moves, summarise
from volmargin_serving.options import DERIBIT_BTC, DERIBIT_ETH, DERIBIT_VOL, Grid


@dataclasses.dataclass(frozen=True)
class Candidate:
    scales_on_grid: bool  # bisect the scales on the lattice with kept states (else on the 9 even points)
    stress: float = 0.0  # stressed component on top of the scale


CANDIDATES = {"lat_kv_s0.5_even": Candidate(False, 0.5), "lat_kv_even": Candidate(False),
              "lat_kv_grid": Candidate(True), "lat_kv_grid_s0.5": Candidate(True, 0.5),
              "lat_kv_grid_s1": Candidate(True, 1.0)}
RULE_METHODS = ("auto_har_qreg", "auto_har_hist")
BIG_DAY_SIZE = 0.07


def lattice_grid(static: Grid) -> Grid:
    """The candidates' grid: a lattice of the static grid's own step, static's vol shocks kept as extra states."""
    return Grid(spacing=static.range_down / (static.steps // 2), keep_vol=DERIBIT_VOL)


def price_candidates(books, price, iv, stress, calibrating, static: Grid) -> tuple[dict, dict]:
    """Margins and scales of every method under every candidate, named `method|candidate`."""
    base = lattice_grid(static)
    scale_sets = {}
    for on_grid in (False, True):
        _, scales, _ = calibrate_methods(books, price, iv, calibrating, base=base, static=static,
                                         scale_base=base if on_grid else dataclasses.replace(static, keep_vol=None))
        scale_sets[on_grid] = {k: v for k, v in scales.items() if k != STATIC}
    margins, scales = {}, {}
    for name, c in CANDIDATES.items():
        given = scale_sets[c.scales_on_grid]
        m, _, _ = calibrate_methods(books, price, iv, calibrating, apc=ApcConfig(stress=c.stress) if c.stress else None,
                                    stress=stress, scales=given, base=base, static=static)
        margins.setdefault(STATIC, m[STATIC])
        for method in given:
            margins[f"{method}|{name}"], scales[f"{method}|{name}"] = m[method], given[method]
    return margins, scales


def period_table(summary: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """Per `method|candidate`: worst class, pooled breach rate and margin ratio per period."""
    rows = {}
    for period, g in summary.groupby("period"):
        classes = g[g["portfolio_class"] != "ALL"].groupby("method")["breach_rate"].max()
        pooled = g[g["portfolio_class"] == "ALL"].set_index("method")
        rows[period] = pd.DataFrame({f"{prefix}_{period}_worst_class": classes,
                                     f"{prefix}_{period}_pooled": pooled["breach_rate"],
                                     f"{prefix}_{period}_breaches": pooled["breaches"],
                                     f"{prefix}_{period}_ratio": pooled["margin_ratio_to_static"]})
    return pd.concat(rows.values(), axis=1)


def real_table(data: Path) -> pd.DataFrame:
    job = OptionJob((str(data / "options"),), (str(data / "iv" / "deribit_btc_dvol_1d.csv.gz"),),
                    (str(data / "binance_btcusdt_1h.csv.gz"),), SPLIT, Path("."), stress=1.0)
    inputs = prepare_option_inputs(job)
    books = inputs.books
    calibrating = np.asarray(pd.DatetimeIndex(books.info["day"]) < SPLIT)
    margins, scales = price_candidates(books, inputs.price, inputs.iv, inputs.stress, calibrating, DERIBIT_BTC)
    summary = summarise(books, margins, np.where(calibrating, "calibration", "validation"), scales)
    return period_table(summary, "real"), summary


def synthetic_table(data: Path, underlying: str, static: Grid) -> tuple[pd.DataFrame, pd.DataFrame]:
    states, books, price, iv, ret, dvol = synthetic_inputs(data, underlying, time.perf_counter())
    calibrating = np.asarray(pd.DatetimeIndex(books.info["day"]) < SPLIT)
    margins, scales = price_candidates(books, price, iv, stressed_moves(ret, dvol["close"], 365), calibrating, static)
    summary = summarise(books, margins, np.where(calibrating, "calibration", "validation"), scales)
    table = period_table(summary, "syn")
    crashes = crash_table(books, margins, scales, states)
    counts = crashes[[c for c in crashes if c.startswith("breach ")]].mul(crashes["books"], axis=0).round().astype(int)
    counts.columns = [c[len("breach "):] for c in counts.columns]
    early = [w for w in counts.index if pd.Timestamp(CRASH_WINDOWS[w][1], tz="UTC") < SPLIT]
    later = [w for w in counts.index if w not in early]
    worse = lambda windows, m: [w for w in windows if counts.loc[w, m] > counts.loc[w, STATIC]]  # noqa: E731
    table["syn_early_windows_worse"] = [len(worse(early, m)) for m in table.index]
    table["syn_later_windows_worse"] = ["; ".join(f"{w} {counts.loc[w, m]} ({counts.loc[w, STATIC]})"
                                                  for w in worse(later, m)) or "none" for m in table.index]
    big, count = big_day_breaches(books, margins, states, calibrating)
    table["syn_big_day_breaches"] = pd.Series(big)
    print(f"{count} synthetic calibration books with an MPOR |spot move| >= {BIG_DAY_SIZE:.0%}; static breaches "
          f"{big[STATIC]}")
    return table, counts.T


def select(table: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """The rule of the docstring on the calibration columns only."""
    rows = []
    for name in CANDIDATES:
        rule = table.loc[[f"{m}|{name}" for m in RULE_METHODS]]
        qualifies = bool((rule["syn_early_windows_worse"] == 0).all()
                         and (rule["syn_big_day_breaches"] <= table.loc[STATIC, "syn_big_day_breaches"]).all()
                         and (rule["real_calibration_worst_class"] <= 0.01).all())
        cost = float(rule[["real_calibration_ratio", "syn_calibration_ratio"]].to_numpy().mean())
        rows.append({"candidate": name, "qualifies": qualifies, "calibration_margin_ratio": cost})
    rows = pd.DataFrame(rows)
    qualified = rows[rows["qualifies"]]
    chosen = qualified.loc[qualified["calibration_margin_ratio"].idxmin(), "candidate"] if len(qualified) else \
        next(iter(CANDIDATES))
    return chosen, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--underlying", choices=("btc", "eth"), default="btc")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(f"../runs/bench-options-configs-{args.underlying}")
    out.mkdir(parents=True, exist_ok=True)
    data = shared_data_dir()
    began = time.perf_counter()
    pd.set_option("display.width", 250)
    fmt = lambda x: f"{x:.4f}"  # noqa: E731
    tables = []
    if args.underlying == "btc":
        real, real_summary = real_table(data)
        real_summary.to_csv(out / "real_summary.csv", index=False)
        tables.append(real)
        print(f"real chains done at {time.perf_counter() - began:.0f} s", flush=True)
    static = DERIBIT_BTC if args.underlying == "btc" else DERIBIT_ETH
    syn, windows = synthetic_table(data, args.underlying, static)
    tables.append(syn)
    table = pd.concat(tables, axis=1)
    table.to_csv(out / "candidates.csv")
    windows.to_csv(out / "crash_windows.csv")
    print(f"\n{args.underlying.upper()} candidates (method|candidate), calibration and validation:")
    print(table.to_string(float_format=fmt))
    print("\nbooks breached per crash window:")
    print(windows.to_string())
    if args.underlying == "btc":
        chosen, rows = select(table)
        rows.to_csv(out / "selection.csv", index=False)
        print("\nrule (calibration days only):")
        print(rows.to_string(index=False, float_format=fmt))
        print(f"chosen: {chosen}")
    print(f"\ndone in {time.perf_counter() - began:.0f} s; tables in {out}/")


if __name__ == "__main__":
    main()
