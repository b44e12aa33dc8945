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
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import portfolio_measure  # noqa: E402

# rule name -> the correlation weights the calibration may choose from (the scale is always calibrated)
RULES: dict[str, tuple[float, ...]] = {"cheapest": (0.0, 0.1, 0.25, 0.5, 0.75, 1.0), "w=0": (0.0,),
                                       "w=0.1": (0.1,), "w=0.25": (0.25,), "w=0.5": (0.5,)}


def run_rules(measure: str, forecasts: pd.DataFrame, daily, args: argparse.Namespace) -> pd.DataFrame:
    return portfolio_measure.run_rules(measure, forecasts, daily, args, RULES)


if __name__ == "__main__":
    portfolio_measure.bench_main(__doc__, "var99", run_rules, "weights", "candidate")
