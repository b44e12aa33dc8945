"""Which class binds the portfolio calibration at each correlation weight w? (why one scale over-covers)

    python bench/portfolio_binding.py --run runs/pf-bt --alts [--measure var99] [--models ewma] \
        [--validation-start 2022-04-01] [--policy concentration=0.5]

Per model and each w of `portfolio.CORRELATION_GRID`: the scale calibrated at that w alone
(`calibrate_books`, pooled 1%, no class above 1.5%) on the dates before the validation start, the
calibration-period average margin and the class closest to its cap there (the binding one), with every
class's calibration breach rate; then, for information only (the calibration does not see it), each
class's validation breach rate and clustered Kupiec p at that (scale, w). `--leave-out adversarial`
calibrates without that class's books (they are still scored in validation): what binds without it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from portfolio_measure import load_inputs  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", nargs="+", required=True)
    parser.add_argument("--alts", action="store_true")
    parser.add_argument("--measure", default="var99")
    parser.add_argument("--models", default="ewma")
    parser.add_argument("--validation-start", default="2022-04-01")
    parser.add_argument("--policy", default="concentration=0.5")
    parser.add_argument("--leave-out", default="", help="comma-separated classes the calibration does not see")
    args = parser.parse_args()

    from volmargin.cli import _policy_items
    from volmargin.risk import portfolio as pf
    from volmargin.risk.job import PortfolioJob, model_panels
    from volmargin_serving.portfolio import PortfolioPolicy

    forecasts, daily = load_inputs(args.run, args.alts)
    policy = PortfolioPolicy(**{**_policy_items(args.policy), "measure": args.measure})
    job = PortfolioJob(models=tuple(args.models.split(",")), policy=policy, validation_start=args.validation_start)
    pd.set_option("display.width", 240)
    for mp in model_panels(forecasts, daily, job, progress=False):
        rows = []
        for w in pf.CORRELATION_GRID:
            seen = ~np.isin(mp.classes, [c for c in args.leave_out.split(",") if c])
            cal = pf.calibrate_books(mp.bp.columns(seen), mp.classes[seen], mp.cal_rows, policy, job.target, grid=(w,))
            fit = pf.summarise(mp.bp, mp.classes, mp.cal_rows, cal.policy, job.target, mp.fhs.panel.horizon)
            val = pf.summarise(mp.bp, mp.classes, ~mp.cal_rows, cal.policy, job.target, mp.fhs.panel.horizon)
            classes = fit[fit["portfolio_class"] != "ALL"].set_index("portfolio_class")
            checked = val[val["portfolio_class"] != "ALL"]
            row = {"w": w, "scale": cal.policy.scale, "feasible": cal.feasible,
                   "cal_avg_margin": float(fit.loc[fit["portfolio_class"] == "ALL", "avg_margin"].iloc[0]),
                   "binding": classes.loc[classes.index.isin(mp.classes[seen]), "breach_rate"].idxmax(),
                   "val_clustered_pass": int((checked["kupiec_p_clustered"] > 0.05).sum())}
            row |= {f"cal:{c}": r for c, r in classes["breach_rate"].items()}
            row |= {f"val:{c}": r for c, r in zip(checked["portfolio_class"], checked["breach_rate"])}
            rows.append(row)
        table = pd.DataFrame(rows)
        print(f"\n{mp.fhs.panel.model}, {args.measure}: calibration period to {mp.start.date()}, breach rates per class"
              + (f"; calibrated without {args.leave_out}" if args.leave_out else ""))
        print(table.T.to_string(float_format=lambda x: f"{x:.4f}"))


if __name__ == "__main__":
    main()
