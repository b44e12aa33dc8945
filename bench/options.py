"""Option margin figures on real Deribit BTC option books: the static Deribit grid against the
autocalibrated grids, per portfolio class, calibrated on 2021-06/07 and validated on 2022-01/02, and the
reverse (calibrated on 2022-01/02, validated on 2021-06/07) as a check; plus the IV-move forecast scores.

    nice -n 10 python bench/options.py [--out runs/bench-options]

Reads every file of ../shared/data/options/, iv/deribit_btc_dvol_1d.csv.gz and binance_btcusdt_1h.csv.gz.
Margins and shortfalls are fractions of each book's underlying notional (spot x gross contracts).
Targets: breach rate per class <= 1% on the validation months; average margin of an autocalibrated grid
<= 0.85 x the static grid's at the same or better coverage.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from common import shared_data_dir
from volmargin.calibration.option_job import OptionJob, prepare_option_inputs
from volmargin.calibration.options import STATIC, run_option_backtest
from volmargin.models.ivmoves import iv_forecasts, score_quantiles
from volmargin.data.options import load_dvol

SPLIT = pd.Timestamp("2021-12-01", tz="UTC")


def verdict(summary: pd.DataFrame) -> pd.DataFrame:
    """Per method on the validation period: worst class breach rate, pooled breach rate, margin ratio."""
    v = summary[summary["period"] == "validation"]
    classes = v[v["portfolio_class"] != "ALL"]
    pooled = v[v["portfolio_class"] == "ALL"].set_index("method")
    static_worst = classes[classes["method"] == STATIC]["breach_rate"].max()
    out = pd.DataFrame({
        "scale": pooled["scale"],
        "worst_class_breach": classes.groupby("method")["breach_rate"].max(),
        "pooled_breach": pooled["breach_rate"],
        "worst_shortfall": pooled["worst_shortfall"],
        "avg_margin": pooled["avg_margin"],
        "ratio_to_static": pooled["margin_ratio_to_static"],
    })
    out["breach_target_met"] = out["worst_class_breach"] <= 0.01
    out["margin_target_met"] = (out["ratio_to_static"] <= 0.85) & (out["worst_class_breach"] <= max(static_worst, 0.01))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-options"))
    args = parser.parse_args()
    data = shared_data_dir()
    began = time.perf_counter()
    job = OptionJob(chains=(str(data / "options"),), iv=(str(data / "iv" / "deribit_btc_dvol_1d.csv.gz"),),
                    data=(str(data / "binance_btcusdt_1h.csv.gz"),), calibrate_until=SPLIT, out=args.out)
    inputs = prepare_option_inputs(job)
    print(f"{inputs.books.books.count} books ({len(inputs.books.books.book)} option legs) over {inputs.snapshots} "
          f"snapshots, inputs in {time.perf_counter() - began:.0f} s")
    pd.set_option("display.width", 250)
    fmt = lambda x: f"{x:.4f}"  # noqa: E731
    args.out.mkdir(parents=True, exist_ok=True)
    for name, kwargs in (("forward: calibrate 2021-06/07, validate 2022-01/02", {}),
                         ("reverse: calibrate 2022-01/02, validate 2021-06/07", {"calibrate_after": SPLIT})):
        summary, grids = run_option_backtest(inputs.books, inputs.price, inputs.iv, SPLIT, **kwargs)
        tag = name.split(":")[0]
        summary.to_csv(args.out / f"summary_{tag}.csv", index=False)
        grids.to_csv(args.out / f"grids_{tag}.csv", index=False)
        print(f"\n== {name}")
        print(verdict(summary).to_string(float_format=fmt))
        v = summary[summary["period"] == "validation"]
        for value in ("breach_rate", "avg_margin", "worst_shortfall"):
            print(f"\nvalidation {value} per class:")
            print(v.pivot(index="portfolio_class", columns="method", values=value).to_string(float_format=fmt))
        g = grids[grids["method"] != STATIC].groupby("method")[["range_down", "range_up", "vol_up", "vol_down"]]
        print("\ngrid parameters over the snapshot days (mean [min, max]):")
        print(g.agg(lambda s: f"{s.mean():.3f} [{s.min():.3f}, {s.max():.3f}]").to_string())
    dvol = load_dvol(data / "iv" / "deribit_btc_dvol_1d.csv.gz")["close"]
    scores = score_quantiles(iv_forecasts(dvol, start="2021-06-01"))
    print("\nIV-move forecasts (1-day log change of DVOL), out of sample 2021-06 .. 2026-04; "
          "exceedance targets 1% each side:")
    print(scores.to_string(index=False, float_format=lambda x: f"{x:.5f}"))
    print(f"\ndone in {time.perf_counter() - began:.0f} s; tables in {args.out}/")


if __name__ == "__main__":
    main()
