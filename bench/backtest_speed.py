"""Backtest wall time per asset-year for each baseline, on every hourly spot file of ../shared/data.

Run: .venv/bin/python bench/backtest_speed.py [--start 2021-01-01] [--refit-every 20]
Prints one row per model: assets, forecast-years, seconds, seconds per asset-year.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from common import hourly_spot_files
from volmargin.data import load_panel
from volmargin.evaluation.backtest import BacktestConfig, daily_panel, run_backtest
from volmargin.evaluation.walkforward import WalkForwardSplit
from volmargin.models import BASELINES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--start", default="2021-01-01")
    parser.add_argument("--refit-every", type=int, default=20)
    parser.add_argument("--models", default=",".join(BASELINES))
    args = parser.parse_args()
    began = time.perf_counter()
    panel = daily_panel(load_panel([str(p) for p in hourly_spot_files()]))
    print(f"loaded {len(panel)} assets in {time.perf_counter() - began:.1f} s")
    split = WalkForwardSplit(start=pd.Timestamp(args.start, tz="UTC"), refit_every=args.refit_every)
    config = BacktestConfig(models=tuple(args.models.split(",")), split=split)
    _, timings = run_backtest(panel, config, progress=False)
    table = timings.groupby("model", sort=False).agg(assets=("asset", "nunique"), days=("days", "sum"),
                                                      seconds=("seconds", "sum"))
    table["asset_years"] = table["days"] / 365.25
    table["s_per_asset_year"] = table["seconds"] / table["asset_years"]
    print(f"\nBacktest speed from {args.start}, refit every {args.refit_every} days (1 process):")
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
