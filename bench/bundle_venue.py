"""Exported bundles on a venue they never saw: the six Binance perpetuals of ../shared/data, scored the way a
user checks a bundle (`volmargin score`), against a log-HAR refit every 30 days on each perpetual's own history
(`volmargin backtest --models har --refit-every 30`).

    python bench/bundle_venue.py BUNDLE [BUNDLE ...] [--start 2022-01-01] [--out runs/bench-venue]

The crypto configs train on spot files only (`exclude: ["*_perp_*"]`), so the perpetuals' bars (their own
prices, volumes, funding-driven basis and liquidation cascades) were never read by a bundle, though the spot
markets of the same coins were: a check of the venue, not of unseen coins (`bench/unseen_assets.py` is
that). Prints per bundle the pooled QLIKE / HAR with its Diebold-Mariano p, the median variance / HAR's, the
mean QLIKE of the worst 1% of days (by HAR's loss) against HAR's, the 99% VaR exception rates and QLIKE /
HAR per perpetual.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from common import REPO, shared_data_dir
from volmargin.evaluation.scoring import diebold_mariano_table
from volmargin.evaluation.stats import qlike

KEYS = ["asset", "origin"]


def volmargin(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "volmargin.cli", *args, "--quiet"], cwd=REPO, check=True,
                   stdout=subprocess.DEVNULL)


def exceptions(rows: pd.DataFrame) -> tuple[float, float]:
    return float((-rows["realized_ret"] > rows["var99_long"]).mean()), float((rows["realized_ret"] > rows["var99_short"]).mean())


def dm_pvalue(both: pd.DataFrame) -> float:
    """The Diebold-Mariano p of the bundle against HAR on pooled per-date QLIKE, as every other benchmark tests."""
    table = pd.concat([both.assign(model="bundle"), both.assign(model="har", variance=both["har"])])
    return float(diebold_mariano_table(table, "har")["dm_p"].iloc[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--start", default="2022-01-01")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-venue"))
    args = parser.parse_args()
    perps = [str(p) for p in sorted(shared_data_dir().glob("*_perp_1h.csv.gz"))]
    args.out.mkdir(parents=True, exist_ok=True)
    volmargin("backtest", "--data", *perps, "--models", "har", "--refit-every", "30", "--start", args.start,
              "--out", str(args.out / "har"), "--no-tracking")
    har = pd.read_parquet(args.out / "har" / "forecasts.parquet")
    har = har[(har["model"] == "har") & (har["realized_rv"] > 0)]
    print(f"{len(perps)} perpetuals, HAR from {args.start}: 99% exceptions long / short "
          "{:.2%} / {:.2%}".format(*exceptions(har)))
    har = har.rename(columns={"variance": "har"})[[*KEYS, "date", "har", "realized_rv", "realized_ret"]]
    rows, per_asset = [], {}
    for k, bundle in enumerate(args.bundles):
        scored = args.out / f"bundle{k}.parquet"
        volmargin("score", "--bundle", str(bundle), "--data", *perps, "--out", str(scored))
        both = pd.read_parquet(scored).merge(har, on=KEYS)
        loss, ref = qlike(both["variance"], both["realized_rv"]), qlike(both["har"], both["realized_rv"])
        worst = ref >= np.quantile(ref, 0.99)
        long, short = exceptions(both)
        rows.append({"bundle": str(bundle), "n": len(both), "qlike / HAR": loss.mean() / ref.mean(),
                     "DM p": dm_pvalue(both),
                     "median var / HAR's": float(np.median(both["variance"] / both["har"])),
                     "worst 1% days": loss[worst].mean(), "HAR's worst 1%": ref[worst].mean(),
                     "99% long": long, "99% short": short})
        per_asset[str(bundle)] = both.assign(loss=loss, ref=ref).groupby("asset").apply(
            lambda g: g["loss"].mean() / g["ref"].mean(), include_groups=False)
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4g"))
    print("\nQLIKE / HAR per perpetual:\n")
    print(pd.DataFrame(per_asset).to_markdown(floatfmt=".3f"))


if __name__ == "__main__":
    main()
