"""Tried: a volume-free single-name add-on for the portfolio margin, calibrated with the scale and w.

    python bench/portfolio_single_name.py --run runs/pf-bt --alts --models ewma --validation-start 2022-04-01 \
        [--grid 0,0.05,0.1,0.2,0.3,0.5] [--concentration 0.5]

IM = scale x max(blend, floor) + k x (the largest position's own risk, the panel's `largest`) + the
concentration add-on (fixed coefficient): k charges a book of one or few large positions without the
traded volume, whose level drifts over the years. For each k of the grid, (scale, w) are calibrated as
`volmargin portfolio` does (`calibrate_books`, calibration period only); the k with the cheapest feasible
calibration-period margin is chosen. Prints per k the calibration-period result and, for k = 0 (the
library's rule) and the chosen k, the validation figures: breach per class, Kupiec p > 0.05 counts, the
average margin and the hedged pairs' margin against the sum of their legs' margins under the same rule.
Not in the library or serving: an experiment.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import hourly_spot_files, shared_data_dir  # noqa: E402


def with_single_name(bp, k: float):
    """The panel whose add-ons include k x the largest position's own risk."""
    extra = k * np.nan_to_num(bp.largest)[..., None]  # margin_path takes the policy's column of the grid
    return dataclasses.replace(bp, addon_grid=bp.addon_grid + extra, largest_addon_grid=bp.largest_addon_grid + extra)


def pair_ratio(bp, bp_k, policy, k: float, cols: np.ndarray, rows: np.ndarray) -> float:
    """Average margin over the average sum of the legs' margins, each leg a one-position book under the same
    rule (scale + k) x its own risk + its add-on."""
    from volmargin.risk import portfolio as pf

    margin = pf.margin_path(bp_k, policy)[rows][:, cols]
    legs = (policy.scale + k) * bp.isolated + bp.with_concentration(policy.concentration).addon
    live = bp.alive[rows][:, cols]
    return float(np.nanmean(np.where(live, margin, np.nan)) / np.nanmean(np.where(live, legs[rows][:, cols], np.nan)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, nargs="+", required=True)
    parser.add_argument("--alts", action="store_true")
    parser.add_argument("--models", default="ewma")
    parser.add_argument("--validation-start", required=True)
    parser.add_argument("--grid", default="0,0.05,0.1,0.2,0.3,0.5")
    parser.add_argument("--concentration", type=float, default=0.5)
    args = parser.parse_args()

    from volmargin.cli import load_data
    from volmargin.evaluation.backtest import daily_panel
    from volmargin.risk import portfolio as pf
    from volmargin.risk.job import PortfolioJob, model_panels
    from volmargin_serving.portfolio import PortfolioPolicy

    files = [str(p) for p in hourly_spot_files()]
    if args.alts:
        files += [str(p) for p in sorted((shared_data_dir() / "alts").glob("*_1h.csv.gz"))]
    forecasts = pd.concat([pd.read_parquet(r / "forecasts.parquet") for r in args.run], ignore_index=True)
    daily = daily_panel(load_data(files))
    job = PortfolioJob(models=tuple(args.models.split(",")), policy=PortfolioPolicy(concentration=args.concentration),
                       validation_start=args.validation_start)
    grid = [float(k) for k in args.grid.split(",")]
    for mp in model_panels(forecasts, daily, job):
        model, rows = mp.fhs.panel.model, mp.cal_rows
        results = []
        for k in grid:
            bp_k = with_single_name(mp.bp, k)
            cal = pf.calibrate_books(bp_k, mp.classes, rows, job.policy, job.target, grid=pf.CORRELATION_GRID)
            chosen = cal.table[(cal.table["scale"] == cal.policy.scale)
                               & (cal.table["correlation_weight"] == cal.policy.correlation_weight)].iloc[0]
            results.append((k, cal, bp_k, chosen["calibration_avg_margin"]))
            print(f"{model} k={k:g}: scale {cal.policy.scale:.3f}, w {cal.policy.correlation_weight:g}, feasible "
                  f"{cal.feasible}, calibration avg margin {chosen['calibration_avg_margin']:.4f}, worst class "
                  f"{chosen['calibration_worst_class_breach_rate']:.2%}", flush=True)
        best = min((r for r in results if r[1].feasible), key=lambda r: r[3])
        for label, (k, cal, bp_k, _) in (("k=0 (library rule)", results[0]), (f"chosen k={best[0]:g}", best)):
            summary = pf.summarise(bp_k, mp.classes, ~rows, cal.policy, job.target, mp.fhs.panel.horizon)
            classes = summary[summary["portfolio_class"] != "ALL"].set_index("portfolio_class")
            pooled = summary[summary["portfolio_class"] == "ALL"].iloc[0]
            print(f"\n{model} {label}, validation from {mp.start.date()}:")
            print(classes[["breach_rate", "kupiec_p_clustered", "avg_margin"]].to_string(float_format="%.4f"))
            print(f"pooled breach {pooled['breach_rate']:.2%}, avg margin {pooled['avg_margin']:.4f}; Kupiec p > 0.05 "
                  f"pooled {(classes['kupiec_p'] > 0.05).sum()}, clustered {(classes['kupiec_p_clustered'] > 0.05).sum()}, "
                  f"median book {(classes['kupiec_p_book_median'] > 0.05).sum()} of {len(classes)}")
            for cls in ("hedged_alt_btc", "hedged_btc_eth"):
                cols = np.asarray(mp.classes) == cls
                if cols.any():
                    print(f"{cls}: margin / sum of legs' margins {pair_ratio(mp.bp, bp_k, cal.policy, k, cols, ~rows):.1%}")


if __name__ == "__main__":
    main()
