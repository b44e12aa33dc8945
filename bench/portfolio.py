"""Portfolio margin figures against the issue's targets, from a `volmargin portfolio` output folder.

    python bench/portfolio.py --run runs/pf-bt --out runs/pf [--alts] [-- extra volmargin portfolio options]
    python bench/portfolio.py --out runs/pf            # only read an existing output folder

With --run it first runs `volmargin portfolio` on that backtest folder and every hourly spot file of
../shared/data (and ../shared/data/alts with --alts). Figures (validation period only):
- breach rate per class <= 1.5% (target 1%), Kupiec p > 0.05 for most classes: pooled over book-days,
  clustered by margin date (Rao-Scott, the books of a date share its move) and the median per book;
- hedged pairs: average margin <= 50% of the sum of isolated margins (hedged_*: sized by the trailing
  minimum-variance hedge ratio; equal_*: the same pairs at equal notional);
- all-long baskets in the crash windows (stress events): margin >= the largest single leg's margin;
- each model's average margin against ewma97 (PAIRS) and gjr at equal coverage (both calibrated to the target).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import hourly_spot_files, shared_data_dir  # noqa: E402


def run(args: argparse.Namespace, extra: list[str]) -> None:
    from volmargin.cli import main

    files = [str(p) for p in hourly_spot_files()]
    if args.alts:
        files += [str(p) for p in sorted((shared_data_dir() / "alts").glob("*_1h.csv.gz"))]
    code = main(["portfolio", "--run", *args.run, "--data", *files, "--out", str(args.out), *extra])
    if code:
        sys.exit(code)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(out: Path) -> None:
    summary = pd.read_csv(out / "summary.csv")
    stress = pd.read_csv(out / "stress.csv")
    compare = pd.read_csv(out / "compare.csv")
    classes = summary[summary["portfolio_class"] != "ALL"]
    pd.set_option("display.width", 200)
    print(summary[["portfolio_class", "model", "portfolios", "book_days", "breach_rate", "kupiec_p",
                   "kupiec_p_clustered", "design_effect", "kupiec_p_book_median", "christoffersen_p", "avg_margin", "avg_isolated_margin", "offset", "max_increase_5d",
                   "peak_to_trough", "scale", "correlation_weight", "concentration"]].to_string(index=False,
                                                                                     float_format="%.4f"))
    print(f"\nvalidation from {summary['validation_start'].iloc[0]}")
    calibration = pd.read_csv(out / "calibration.csv")
    for row in calibration[calibration["chosen"]].itertuples():
        print(f"{row.model}: calibrated scale {row.scale:.3f}, correlation weight {row.correlation_weight:g}, "
              f"concentration {row.concentration:g} (calibration period: average margin {row.calibration_avg_margin:.4f}, "
              f"worst class {row.calibration_worst_class_breach_rate:.2%})")
    for model, rows in classes.groupby("model"):
        worst = rows["breach_rate"].max()
        kupiec = (rows["kupiec_p"] > 0.05).sum()
        clustered = (rows["kupiec_p_clustered"] > 0.05).sum()
        per_book = (rows["kupiec_p_book_median"] > 0.05).sum()
        above = rows.loc[rows["breach_rate"] > 0.01, "portfolio_class"].tolist()
        print(f"{model}: worst class breach rate {worst:.2%} (<= 1.50%: {verdict(worst <= 0.015)}); "
              f"Kupiec p > 0.05 in {kupiec} of {len(rows)} classes pooled ({verdict(kupiec > len(rows) / 2)}), "
              f"{clustered} clustered by date ({verdict(clustered > len(rows) / 2)}), median per book in {per_book} "
              f"({verdict(per_book > len(rows) / 2)}); classes above 1%: {', '.join(above) or 'none'}")
    pairs = classes[classes["portfolio_class"].str.startswith(("hedged", "equal"))]
    for row in pairs.itertuples():  # hedged_*: hedge-ratio sized; equal_*: the same pairs at equal notional
        ratio = row.avg_margin / row.avg_isolated_margin
        print(f"{row.model} {row.portfolio_class}: margin / isolated {ratio:.1%} (<= 50%: {verdict(ratio <= 0.5)})")
    crash = stress[stress["portfolio_class"] == "all_long"]
    for row in crash.itertuples():
        print(f"{row.model} all_long in {row.event}: median margin / largest leg {row.margin_vs_largest_isolated:.2f} "
              f"(>= 1: {verdict(row.margin_vs_largest_isolated >= 1)}), breaches {row.breaches} of {row.book_days}")
    pooled = compare[compare["portfolio_class"] == "ALL"]
    for row in pooled.itertuples():
        print(f"{row.model} vs {row.reference}: average margin ratio {row.margin_ratio:.3f} "
              f"(breach {row.breach_rate:.2%} vs {row.reference_breach_rate:.2%})")


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", nargs="+", default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--alts", action="store_true", help="add the 100 alts of ../shared/data/alts")
    args = parser.parse_args(argv)
    if args.run:
        run(args, extra)
    report(args.out)


if __name__ == "__main__":
    main()
