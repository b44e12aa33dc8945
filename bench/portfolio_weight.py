"""Which rule should set the correlation weight w of the portfolio margin? Chosen on a hold-out inside the
calibration period, as bench/portfolio_measure.py chooses the measure.

    python bench/portfolio_weight.py --run runs/pf-bt --alts --out runs/pf-weight [--measures var99,es975] \
        [--models ewma,har,ewma97] [--holdout-start 2021-04-01] [--validation-start 2022-04-01] \
        [--policy concentration=0.5]
    python bench/portfolio_weight.py --out runs/pf-weight      # only apply the rule to the files written

The candidate rules, written down before any run (RULES): "cheapest" (the calibration's rule before this
step: the scale and w of `portfolio.CORRELATION_GRID` with the least average margin meeting the targets),
and w fixed at 0, 0.1, 0.25 or 0.5 with only the scale calibrated; by default with the measure fixed
(var99, the default chosen by portfolio_measure.py), with --measures jointly with the measure (a candidate
is a measure and a rule; each measure writes `OUT/weights-<measure>.csv`, the choice reads them all). The
book panels are computed once per measure and model; every rule is calibrated on the same panel, so a
measure costs about what it costs in portfolio_measure.py.

The choice, fixed before any run (the validation period from --validation-start is not used by it), is
portfolio_measure.py's with candidates (measure and rule) in place of measures:
1. per candidate and model, the scale (and, for "cheapest", w) calibrated (`calibrate_books`: pooled breaches
   <= 1%, no class above 1.5%, least average margin) on the margin dates whose MPOR is realised before
   --holdout-start, the adversarial books picked out of sample per quarter (`portfolio.adversarial_schedule`);
2. scored on the hold-out, margin dates from --holdout-start whose MPOR is realised before
   --validation-start: per class, breach rate and Kupiec p clustered by margin date;
3. eligible: candidates whose worst class on the hold-out is <= 1.5% for every model (all candidates if none is);
   the winner has the most classes with clustered Kupiec p > 0.05, summed over the models, ties broken by
   the least hold-out average margin (mean over the models).
For information only (never used by the rule) each candidate is also recalibrated on every date before
--validation-start and scored on the validation period (quarters cut at --holdout-start, so these rows
differ slightly from a `volmargin portfolio` run).

Session 9c ran the var99 candidates first (chosen: "cheapest"), then, declared after seeing that result
and before running it, var99 and es975 jointly (10 candidates, the same rule).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import portfolio_measure  # noqa: E402

# rule name -> the correlation weights the calibration may choose from (the scale is always calibrated)
RULES: dict[str, tuple[float, ...]] = {"cheapest": (0.0, 0.1, 0.25, 0.5, 0.75, 1.0), "w=0": (0.0,),
                                       "w=0.1": (0.1,), "w=0.25": (0.25,), "w=0.5": (0.5,)}


def scored(mp, policy, target: float, grid: tuple[float, ...], fit: np.ndarray, score: np.ndarray,
           period: str) -> pd.DataFrame:
    """Calibrate on the `fit` rows over the weights `grid`, summarise the `score` rows, tagged with the period."""
    from volmargin.risk import portfolio as pf

    cal = pf.calibrate_books(mp.bp, mp.classes, fit, policy, target, grid=grid)
    summary = pf.summarise(mp.bp, mp.classes, score, cal.policy, target, mp.fhs.panel.horizon)
    return summary.assign(period=period, feasible=cal.feasible)


def run_rules(measure: str, forecasts: pd.DataFrame, daily, args: argparse.Namespace) -> pd.DataFrame:
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
        for rule, grid in RULES.items():
            for period, rows, score in (("holdout", fit, hold), ("validation", before_validation, after)):
                frames.append(scored(mp, policy, job.target, grid, rows, score, period).assign(rule=rule))
        print(f"{measure} {mp.fhs.panel.model}: done at {time.strftime('%H:%M:%S')}", flush=True)
    table = pd.concat(frames, ignore_index=True)
    return table.assign(measure=measure, candidate=measure + " " + table["rule"])


if __name__ == "__main__":
    portfolio_measure.bench_main(__doc__, "var99", run_rules, "weights", "candidate")
