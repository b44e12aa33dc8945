"""Which risk measure should the portfolio margin take? Chosen on a hold-out inside the calibration period.

    python bench/portfolio_measure.py --run runs/pf-bt --alts --out runs/pf-measure --measures var99,es975 \
        [--models ewma,har,ewma97] [--holdout-start 2021-04-01] [--validation-start 2022-04-01] \
        [--policy concentration=0.5]
    python bench/portfolio_measure.py --out runs/pf-measure     # only apply the rule to the files written

Each measure is run on its own (one process per measure list: runs can go side by side) and writes
`OUT/measure-<measure>.csv`; the rule then reads every such file of OUT.

The rule, fixed before any run (the validation period from --validation-start is not used by it):
1. per measure and model, the scale and correlation weight are calibrated (`calibrate_books`: pooled
   breaches <= 1%, no class above 1.5%, least average margin) on the margin dates whose MPOR is realised
   before --holdout-start (the adversarial books as `volmargin portfolio` holds them: on each quarter the
   candidates worst on the year before it, `portfolio.adversarial_schedule`; session 9 ran this bench with
   the books picked on the dates before --holdout-start and scored on them too);
2. the books are scored on the hold-out, margin dates from --holdout-start whose MPOR is realised before
   --validation-start: per class, breach rate and Kupiec p clustered by margin date;
3. eligible: measures whose worst class on the hold-out is <= 1.5% for every model (all measures if none
   is); the winner has the most classes with clustered Kupiec p > 0.05, summed over the models, ties broken
   by the least hold-out average margin (mean over the models).
For information only (never used by the rule) each measure is also recalibrated on every date before
--validation-start and scored on the validation period; the quarters' blocks are cut at
--holdout-start, not --validation-start, so these rows differ slightly from a `volmargin portfolio` run,
which is what the README reports for the chosen measure.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import hourly_spot_files, shared_data_dir  # noqa: E402

CAP, ALPHA = 0.015, 0.05


def load_inputs(runs: list[str], alts: bool):
    """The forecasts of the backtest run folders and the daily bars of the hourly spot files (and alts)."""
    from volmargin.cli import load_data
    from volmargin.evaluation.backtest import daily_panel

    forecasts = pd.concat([pd.read_parquet(Path(r) / "forecasts.parquet") for r in runs], ignore_index=True)
    forecasts = forecasts.drop_duplicates(["model", "asset", "origin"], keep="last")
    files = [str(p) for p in hourly_spot_files()]
    if alts:
        files += [str(p) for p in sorted((shared_data_dir() / "alts").glob("*_1h.csv.gz"))]
    return forecasts, daily_panel(load_data(files))


def scored(mp, policy, target: float, grid: tuple[float, ...], fit: np.ndarray, score: np.ndarray,
           period: str) -> pd.DataFrame:
    """Calibrate on the `fit` rows over the weights `grid`, summarise the `score` rows, tagged with the period."""
    from volmargin.risk import portfolio as pf

    cal = pf.calibrate_books(mp.bp, mp.classes, fit, policy, target, grid=grid)
    summary = pf.summarise(mp.bp, mp.classes, score, cal.policy, target, mp.fhs.panel.horizon)
    return summary.assign(period=period, measure=policy.measure, feasible=cal.feasible)


def run_rules(measure: str, forecasts: pd.DataFrame, daily, args: argparse.Namespace,
              rules: dict[str, tuple[float, ...]]) -> pd.DataFrame:
    """Per model and weight rule (name -> the weights the calibration may choose from), calibrated before the
    hold-out and scored on it, and calibrated before the validation start and scored after it."""
    from volmargin.cli import _policy_items
    from volmargin.risk.job import PortfolioJob, model_panels
    from volmargin_serving.portfolio import PortfolioPolicy

    policy = PortfolioPolicy(**{**_policy_items(args.policy), "measure": measure})
    job = PortfolioJob(models=tuple(args.models.split(",")), policy=policy, validation_start=args.holdout_start)
    holdout = pd.Timestamp(args.holdout_start, tz="UTC")
    validation = pd.Timestamp(args.validation_start, tz="UTC")
    frames = []
    for mp in model_panels(forecasts, daily, job, progress=False):
        realised = mp.bp.dates + pd.Timedelta(days=mp.fhs.panel.horizon)
        fit = np.asarray(realised < holdout)  # = mp.cal_rows
        hold = np.asarray((mp.bp.dates >= holdout) & (realised < validation))
        before_validation = np.asarray(realised < validation)
        after = np.asarray(mp.bp.dates >= validation)
        for rule, grid in rules.items():
            for period, rows, score in (("holdout", fit, hold), ("validation", before_validation, after)):
                frames.append(scored(mp, policy, job.target, grid, rows, score, period).assign(rule=rule))
        print(f"{measure} {mp.fhs.panel.model}: done at {time.strftime('%H:%M:%S')}", flush=True)
    table = pd.concat(frames, ignore_index=True)
    return table.assign(candidate=measure + " " + table["rule"])


def run_measure(measure: str, forecasts: pd.DataFrame, daily, args: argparse.Namespace) -> pd.DataFrame:
    """The measure with the calibration choosing the cheapest feasible (scale, w) of the full weight grid."""
    from volmargin.risk import portfolio as pf

    return run_rules(measure, forecasts, daily, args, {"cheapest": pf.CORRELATION_GRID})


def choose(table: pd.DataFrame, key: str = "measure") -> pd.DataFrame:
    """Per candidate (the values of column `key`: measures, or weight rules in portfolio_weight.py), the
    rule's figures on the hold-out (see the module docstring), best first."""
    hold = table[(table["period"] == "holdout") & (table["portfolio_class"] != "ALL")]
    rows = []
    for candidate, per in hold.groupby(key):
        worst = per.groupby("model")["breach_rate"].max()
        margin = table[(table["period"] == "holdout") & (table["portfolio_class"] == "ALL")
                       & (table[key] == candidate)]["avg_margin"].mean()
        rows.append({key: candidate, "eligible": bool((worst <= CAP).all()),
                     "worst_class": float(worst.max()),
                     "clustered_pass": int((per["kupiec_p_clustered"] > ALPHA).sum()),
                     "classes": len(per), "holdout_avg_margin": float(margin)})
    ranked = pd.DataFrame(rows)
    eligible = ranked["eligible"] if ranked["eligible"].any() else np.ones(len(ranked), bool)
    ranked = ranked.assign(considered=eligible)
    return ranked.sort_values(["considered", "clustered_pass", "holdout_avg_margin"], ascending=[False, False, True])


def report(out: Path, pattern: str = "measure-*.csv", key: str = "measure") -> None:
    """Print the hold-out and validation tables of the candidates in column `key` (measures here, weight
    rules in portfolio_weight.py) and the rule's ranking on the hold-out."""
    files = sorted(out.glob(pattern))
    if not files:
        sys.exit(f"{out}: no {pattern} (run with --run first)")
    table = pd.concat([pd.read_csv(f) for f in files], ignore_index=True)
    pd.set_option("display.width", 220)
    for period in ("holdout", "validation"):
        part = table[table["period"] == period]
        print(f"\n{period}: breach rate / clustered Kupiec p per class")
        wide = part.assign(cell=[f"{b:.2%} p{p:.2f}" for b, p in zip(part["breach_rate"], part["kupiec_p_clustered"])])
        print(wide.pivot_table(index=[key, "model"], columns="portfolio_class", values="cell",
                               aggfunc="first").to_string())
        print(part[part["portfolio_class"] == "ALL"][[key, "model", "scale", "correlation_weight",
                                                       "breach_rate", "avg_margin", "feasible"]]
              .to_string(index=False, float_format="%.4f"))
    ranked = choose(table, key)
    print("\nrule on the hold-out (worst class <= 1.5%, most classes with clustered Kupiec p > 0.05, then least margin):")
    print(ranked.to_string(index=False, float_format="%.4f"))
    print(f"chosen: {ranked[key].iloc[0]}")


def bench_main(doc: str, measures: str, run_one, stem: str, key: str) -> None:
    """The command line of a hold-out choice: `run_one(measure, forecasts, daily, args)` per measure, written
    to OUT/<stem>-<measure>.csv, then the tables and the rule's choice among the values of column `key`."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", nargs="+", default=None)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--alts", action="store_true", help="add the 100 alts of ../shared/data/alts")
    parser.add_argument("--measures", default=measures)
    parser.add_argument("--models", default="ewma,har,ewma97")
    parser.add_argument("--holdout-start", default="2021-04-01")
    parser.add_argument("--validation-start", default="2022-04-01")
    parser.add_argument("--policy", default="concentration=0.5")
    args = parser.parse_args()
    if args.run:
        began = time.process_time()
        forecasts, daily = load_inputs(args.run, args.alts)
        args.out.mkdir(parents=True, exist_ok=True)
        for measure in args.measures.split(","):
            run_one(measure, forecasts, daily, args).to_csv(args.out / f"{stem}-{measure}.csv", index=False)
        print(f"CPU {time.process_time() - began:.0f} s")
    report(args.out, f"{stem}-*.csv", key)


if __name__ == "__main__":
    bench_main(__doc__, "var99,es975,es99,var995", run_measure, "measure", "measure")
