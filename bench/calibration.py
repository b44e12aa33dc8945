"""Margin calibration on real data: every model's calibrated margin, validated out of sample.

    python bench/calibration.py runs/crypto-hourly [--validation-start 2022-01-01] [--every YS] [--mpor-hours 8]

Input: a backtest folder whose forecasts start early enough to calibrate on (e.g.
`volmargin backtest --data $(ls ../shared/data/*_1h.csv.gz | grep -v _perp_) --models
hist,ewma,garch,gjr,har,fhs,nn,gbm --start 2021-01-01 --model-refit nn=90,gbm=90 --out runs/real2021-all`).
Calibrates on forecasts realised before the validation start, re-calibrates at every `--every` on all
earlier rows (no look-ahead), MPOR = the backtest horizon, 99% coverage per side, for two policies: the
plain calibrated VaR and the same with every anti-procyclicality tool. Prints the validation table per
model (breach rates, average initial margin, largest 5-day rise, peak-to-trough, Basel green share),
the learned-vs-baseline margin comparison at equal or better coverage, and the stress-event table.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import pandas as pd

from volmargin.calibration import PolicyConfig, margin_paths, margin_summary, stress_report, walk_forward_calibration
from volmargin.config import APC_POLICY, BASELINE_MODELS

POLICIES = {"plain": PolicyConfig(), "apc": PolicyConfig(**APC_POLICY)}
TARGET_MAX_RATE = 0.015  # the target: every model within 1.5% per side


def validation_table(summary: pd.DataFrame) -> pd.DataFrame:
    pooled = summary[summary["asset"] == "ALL"].pivot(index="model", columns="side")
    per_asset = summary[summary["asset"] != "ALL"]
    green = per_asset.groupby(["model", "side"])[["basel_green_windows", "basel_windows"]].sum()
    green_share = (green["basel_green_windows"] / green["basel_windows"]).unstack()
    table = pd.DataFrame({
        "breach_long": pooled[("breach_rate", "long")], "breach_short": pooled[("breach_rate", "short")],
        "avg_im_long": pooled[("avg_margin", "long")], "avg_im_short": pooled[("avg_margin", "short")],
        "max_5d_rise": pooled[("max_increase_5d", "long")].combine(pooled[("max_increase_5d", "short")], max),
        "peak_to_trough": pooled[("peak_to_trough", "long")].combine(pooled[("peak_to_trough", "short")], max),
        "green_250d_long": green_share["long"], "green_250d_short": green_share["short"],
    })
    table["avg_im"] = (table["avg_im_long"] + table["avg_im_short"]) / 2
    table["worst_breach"] = table[["breach_long", "breach_short"]].max(axis=1)
    return table.sort_values("avg_im")


def comparison(table: pd.DataFrame) -> str:
    """Best learned vs best baseline: cheapest margin among models whose worst side meets the target."""
    ok = table[table["worst_breach"] <= TARGET_MAX_RATE]
    learned, base = ok[~ok.index.isin(BASELINE_MODELS)], ok[ok.index.isin(BASELINE_MODELS)]
    if learned.empty or base.empty:
        return "no learned or no baseline model meets the 1.5% breach target on both sides"
    best_l, best_b = learned["avg_im"].idxmin(), base["avg_im"].idxmin()
    saving = 1 - learned.loc[best_l, "avg_im"] / base.loc[best_b, "avg_im"]
    coverage = "better or equal" if table.loc[best_l, "worst_breach"] <= table.loc[best_b, "worst_breach"] else "worse"
    return (f"best learned {best_l}: avg IM {learned.loc[best_l, 'avg_im']:.2%} vs best baseline {best_b}: "
            f"{base.loc[best_b, 'avg_im']:.2%} -> {saving:+.1%} less margin (target >= 15%), coverage {coverage} "
            f"(worst side {table.loc[best_l, 'worst_breach']:.2%} vs {table.loc[best_b, 'worst_breach']:.2%})")


def stress_table(paths: pd.DataFrame) -> pd.DataFrame:
    stress = stress_report(paths)
    grouped = stress.groupby(["event", "model"])
    return pd.DataFrame({
        "out_of_sample": grouped["out_of_sample"].all(), "cases": grouped.size(),
        "breached": grouped["breach"].mean(), "eve_margin": grouped["margin"].mean(),
        "worst_move": grouped["move"].max(), "mean_shortfall": grouped["shortfall"].mean(),
    }).round(4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--validation-start", default="2022-01-01")
    parser.add_argument("--every", default="YS", help="re-calibration frequency (pandas alias)")
    parser.add_argument("--markdown", action="store_true", help="print tables as Markdown (for the README)")
    parser.add_argument("--mpor-hours", type=int, default=None,
                        help="an intraday MPOR: realised moves from the hourly spot files of ../shared/data")
    args = parser.parse_args()
    path = args.run / "forecasts.parquet"
    if not path.is_file():
        sys.exit(f"{path} not found (see the docstring for the backtest command)")
    forecasts = pd.read_parquet(path)
    if args.mpor_hours:
        from common import hourly_spot_files

        from volmargin.calibration.intraday import with_intraday_moves
        from volmargin.data import load_panel

        forecasts = with_intraday_moves(forecasts, load_panel(hourly_spot_files()), args.mpor_hours)
    pd.set_option("display.width", 200)
    for name, base in POLICIES.items():
        policy = dataclasses.replace(base, mpor_hours=args.mpor_hours)
        began = time.perf_counter()
        calibration = walk_forward_calibration(forecasts, policy, args.validation_start, every=args.every)
        paths = margin_paths(forecasts, policy, calibration)
        table = validation_table(margin_summary(paths, policy.target_breach_rate))
        infeasible = calibration[~calibration["feasible"] & (calibration["asset"] != "ALL")]
        print(f"\n## policy {name}: {policy.risk}, validation from {args.validation_start}, re-calibrated {args.every} "
              f"({time.perf_counter() - began:.0f} s; {len(infeasible)} infeasible asset-side-blocks)")
        show = (lambda t: t.to_markdown(floatfmt=".4f")) if args.markdown else \
            (lambda t: t.to_string(float_format=lambda x: f"{x:.4f}"))
        print(show(table.drop(columns=["worst_breach"])))
        print(comparison(table))
        print(f"\nstress events ({name}; margin set on the eve, worst day of the window):")
        print(show(stress_table(paths)))


if __name__ == "__main__":
    main()
