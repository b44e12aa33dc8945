"""A backtest-like run folder of unseen-asset forecasts, for `volmargin portfolio` with learned filters.

    python bench/learned_filter_run.py --forecasts runs/bench-unseen/forecasts.parquet --out runs/learned-bt19 \
        [--models gbm,nn,gjr,ewma,har] [--first-by 2022-06-30] [--last-from 2025-12-01]

Takes the `bench/unseen_assets.py` forecasts (learned models: the `unseen` set, each asset scored by a model
that never saw it; baselines: their own refits) of the chosen models, on the assets that every one of them
forecasts from `--first-by` or earlier through `--last-from` or later (a universe chosen by data
availability, the same books for every model), and writes OUT/forecasts.parquet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from volmargin.io import write_frame


def select(forecasts: pd.DataFrame, models: list[str], first_by: pd.Timestamp, last_from: pd.Timestamp) -> pd.DataFrame:
    rows = forecasts[forecasts["model"].isin(models) & forecasts["set"].isin(["unseen", "both"])]
    missing = sorted(set(models) - set(rows["model"]))
    if missing:
        raise SystemExit(f"no unseen-asset forecasts of {', '.join(missing)}")
    span = rows.groupby(["model", "asset"])["origin"].agg(["min", "max"])
    covered = span[(span["min"] <= first_by) & (span["max"] >= last_from)].reset_index()
    assets = set.intersection(*(set(covered.loc[covered["model"] == m, "asset"]) for m in models))
    return rows[rows["asset"].isin(assets)].drop(columns="set")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forecasts", type=Path, nargs="+", required=True, help="unseen_assets.py forecasts.parquet")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", default="gbm,nn,gjr,ewma,har")
    parser.add_argument("--first-by", default="2022-06-30")
    parser.add_argument("--last-from", default="2025-12-01")
    args = parser.parse_args()
    table = pd.concat([pd.read_parquet(p) for p in args.forecasts], ignore_index=True)
    table = table.drop_duplicates(["model", "set", "asset", "origin"], keep="last")
    chosen = select(table, [m for m in args.models.split(",") if m], pd.Timestamp(args.first_by, tz="UTC"),
                    pd.Timestamp(args.last_from, tz="UTC"))
    args.out.mkdir(parents=True, exist_ok=True)
    write_frame(chosen, args.out / "forecasts.parquet")
    print(f"{chosen['asset'].nunique()} assets, models {', '.join(sorted(chosen['model'].unique()))}, origins "
          f"{chosen['origin'].min().date()} .. {chosen['origin'].max().date()}: wrote {args.out / 'forecasts.parquet'}")


if __name__ == "__main__":
    main()
