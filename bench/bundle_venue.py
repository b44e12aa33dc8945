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

`--volume-scale 1,0.1,0.01` scores each bundle again on copies of the perpetuals whose volumes are multiplied
by each factor: a venue with that share of Binance's turnover, or a pair quoted in another currency (an
ETH/BTC pair's traded value is in BTC, some 1e-4.5 of its USDT value). The bundles' liquidity feature reads
the traded value (volume x close, quote currency); every other feature is scale-free.

`--bars 4h` runs everything (HAR included) on the perpetuals' hourly bars aggregated to that interval: a venue
or data vendor whose bars are coarser than the training files' hours (the daily realized measures then sum
fewer, longer returns).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
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


def scaled_copies(files: list[str], scale: float, folder: Path) -> list[str]:
    """The bar files with every volume multiplied by `scale`, written into `folder` (the files as they are at 1)."""
    if scale == 1:
        return files
    copies = []
    for name in files:
        bars = pd.read_csv(name)
        bars["volume"] *= scale
        copies.append(str(folder / Path(name).name))
        bars.to_csv(copies[-1], index=False)
    return copies


def resampled_copies(files: list[str], interval: str, folder: Path) -> list[str]:
    """The bar files aggregated to `interval` bars (first open, highest high, lowest low, last close, summed
    volume; a bar of no hourly bar is left out), written into `folder`."""
    copies = []
    for name in files:
        bars = pd.read_csv(name, parse_dates=["timestamp"], index_col="timestamp")
        coarse = bars.resample(interval).agg({"open": "first", "high": "max", "low": "min", "close": "last",
                                              "volume": "sum"}).dropna(subset=["close"])
        copies.append(str(folder / Path(name).name))
        coarse.reset_index().to_csv(copies[-1], index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    return copies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", type=Path)
    parser.add_argument("--start", default="2022-01-01")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-venue"))
    parser.add_argument("--volume-scale", default="1", help="comma-separated volume factors (default 1)")
    parser.add_argument("--bars", default=None, help="aggregate the hourly bars to this interval first, e.g. 4h")
    args = parser.parse_args()
    scales = [float(x) for x in args.volume_scale.split(",")]
    perps = [str(p) for p in sorted(shared_data_dir().glob("*_perp_1h.csv.gz"))]
    args.out.mkdir(parents=True, exist_ok=True)
    rows, per_asset = [], {}
    with tempfile.TemporaryDirectory() as scratch:
        if args.bars:
            (Path(scratch) / "coarse").mkdir()
            perps = resampled_copies(perps, args.bars, Path(scratch) / "coarse")
        volmargin("backtest", "--data", *perps, "--models", "har", "--refit-every", "30", "--start", args.start,
                  "--out", str(args.out / "har"), "--no-tracking")
        har = pd.read_parquet(args.out / "har" / "forecasts.parquet")
        har = har[(har["model"] == "har") & (har["realized_rv"] > 0)]
        print(f"{len(perps)} perpetuals{f' ({args.bars} bars)' if args.bars else ''}, HAR from {args.start}: "
              "99% exceptions long / short {:.2%} / {:.2%}".format(*exceptions(har)))
        har = har.rename(columns={"variance": "har"})[[*KEYS, "date", "har", "realized_rv", "realized_ret"]]
        for scale in scales:
            files = scaled_copies(perps, scale, Path(scratch))
            for k, bundle in enumerate(args.bundles):
                scored = args.out / (f"bundle{k}.parquet" if scale == 1 else f"bundle{k}-volume{scale:g}.parquet")
                volmargin("score", "--bundle", str(bundle), "--data", *files, "--out", str(scored))
                label = str(bundle) if len(scales) == 1 else f"{bundle}, volume x {scale:g}"
                rows.append(scored_row(pd.read_parquet(scored).merge(har, on=KEYS), label, per_asset))
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4g"))
    print("\nQLIKE / HAR per perpetual:\n")
    print(pd.DataFrame(per_asset).to_markdown(floatfmt=".3f"))


def scored_row(both: pd.DataFrame, label: str, per_asset: dict) -> dict:
    """The figures of one bundle's scores joined with HAR's; its per-perpetual ratio goes into `per_asset`."""
    loss, ref = qlike(both["variance"], both["realized_rv"]), qlike(both["har"], both["realized_rv"])
    worst = ref >= np.quantile(ref, 0.99)
    long, short = exceptions(both)
    per_asset[label] = both.assign(loss=loss, ref=ref).groupby("asset").apply(
        lambda g: g["loss"].mean() / g["ref"].mean(), include_groups=False)
    return {"bundle": label, "n": len(both), "qlike / HAR": loss.mean() / ref.mean(), "DM p": dm_pvalue(both),
            "median var / HAR's": float(np.median(both["variance"] / both["har"])),
            "worst 1% days": loss[worst].mean(), "HAR's worst 1%": ref[worst].mean(), "99% long": long, "99% short": short}


if __name__ == "__main__":
    main()
