"""Where a learned model loses to HAR on unseen assets, by the age of the asset's listing at the origin.

    python bench/unseen_by_age.py RUN [--model gbmcfg]

RUN is a `bench/unseen_assets.py --out` folder (its `forecasts.parquet`). The age is only known for the alts
listed inside the alts' download (`alts/files.csv`: a first bar after the dump's start, 2021-04-04T21:00Z):
the other alts began before it (age unknown, at least the dump's), and the large caps' files begin where
their sources begin. Prints rows, assets, mean QLIKE of HAR and the model, their ratio and the median log
ratio of the variance forecasts per group, then the pooled ratio if a group had the large caps' ratio.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from common import shared_data_dir

DUMP_START = "2021-04-04"  # the alts' source begins here for every pair listed before it


def listing_groups(origins: pd.DataFrame, first_bars: dict[str, str]) -> pd.Series:
    first = origins.asset.map(first_bars)
    known = first.notna() & ~first.fillna("").str.startswith(DUMP_START)
    age = (pd.to_datetime(origins.origin).dt.tz_localize(None)
           - pd.to_datetime(first.where(known)).dt.tz_localize(None)).dt.days
    days = pd.cut(age, [0, 365, 730, 10_000], right=False,
                  labels=["listed < 1 year", "listed 1-2 years", "listed 2+ years"])
    return pd.Series(np.where(first.isna(), "large cap", np.where(known, days.astype(str), "alt listed before the dump")),
                     index=origins.index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--model", default="gbmcfg")
    args = parser.parse_args()
    files = pd.read_csv(shared_data_dir() / "alts" / "files.csv")
    first_bars = dict(zip(files.file.str.replace("_1h.csv.gz", "", regex=False), files["first"]))
    frame = pd.read_parquet(args.run / "forecasts.parquet", columns=["asset", "model", "origin", "variance",
                                                                      "realized_rv"])
    wide = frame[frame.model.isin(["har", args.model])].pivot_table(
        index=["asset", "origin"], columns="model", values=["variance", "realized_rv"]).dropna()
    rv = wide[("realized_rv", "har")]
    rows = pd.DataFrame({
        "har": rv / wide[("variance", "har")] - np.log(rv / wide[("variance", "har")]) - 1,
        "model": rv / wide[("variance", args.model)] - np.log(rv / wide[("variance", args.model)]) - 1,
        "log_ratio": np.log(wide[("variance", args.model)] / wide[("variance", "har")]),
    }).reset_index()
    rows["group"] = listing_groups(rows, first_bars)
    table = rows.groupby("group").agg(rows=("har", "size"), assets=("asset", "nunique"), qlike_har=("har", "mean"),
                                      qlike_model=("model", "mean"), median_log_ratio=("log_ratio", "median"))
    table["ratio"] = table.qlike_model / table.qlike_har
    with pd.option_context("display.width", 200):
        print(table.round(4).to_string())
    sums = rows.groupby("group")[["har", "model"]].sum()
    print(f"pooled QLIKE / HAR: {sums.model.sum() / sums.har.sum():.4f} over {len(rows):,} rows")
    for group in sums.index.drop("large cap"):  # what each group costs the pooled figure
        moved = sums.model.drop(group).sum() + table.ratio["large cap"] * sums.har[group]
        print(f"  if '{group}' had the large caps' ratio: {moved / sums.har.sum():.4f}")


if __name__ == "__main__":
    main()
