"""Levers for the learned forecasters on unseen assets, tried after the fact on saved forecasts.

    python bench/unseen_levers.py [--select runs/sel-alts --select-model l2] [--report runs/bench-unseen]

Reads the forecast tables `bench/unseen_assets.py` saved: the selection run (trained to 2021-09-30,
scored on 2021-Q4; `--train-end 2021-09-30 --min-train 150 --variants ...`) and the reported one (trained
to 2021-12-31, scored 2022-2025). Two levers on the unseen-asset variance forecasts f, each chosen on the
selection run and reported on the later one, QLIKE against the same HAR rows:
- combination with HAR (stacking): exp(w log HAR + (1 - w) log f);
- online per-asset recalibration: f x c^p, c the mean of realized / forecast over the asset's last K
  days whose outcome is known at the origin (no look-ahead).
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from volmargin.evaluation.stats import qlike

WEIGHTS = (0.0, 0.25, 0.5, 0.75)
RECALIBRATIONS = tuple((k, p) for k in (20, 40, 60) for p in (0.5, 1.0))


def unseen_rows(path: str, model: str) -> pd.DataFrame:
    """One-day unseen forecasts of `model` with HAR's forecast of the same asset and origin."""
    table = pd.read_parquet(f"{path}/forecasts.parquet")
    table = table[(table["horizon"] == 1) & (table["realized_rv"] > 0)]
    har = table[table["model"] == "har"].set_index(["asset", "origin"])["variance"].rename("har")
    rows = table[(table["model"] == model) & (table["set"] == "unseen")]
    return rows.join(har, on=["asset", "origin"]).dropna(subset=["har"]).sort_values(["asset", "origin"])


def recalibrated(rows: pd.DataFrame, days: int, power: float) -> np.ndarray:
    ratio = rows["realized_rv"] / rows["variance"]
    known = ratio.groupby(rows["asset"]).transform(lambda r: r.rolling(days, min_periods=5).mean().shift(1))
    return (rows["variance"] * known.fillna(1.0) ** power).to_numpy()


def figures(rows: pd.DataFrame, variance: np.ndarray) -> dict:
    loss, har = qlike(variance, rows["realized_rv"].to_numpy()), qlike(rows["har"].to_numpy(), rows["realized_rv"].to_numpy())
    worst = har >= np.quantile(har, 0.99)
    return {"qlike / HAR": loss.mean() / har.mean(), "median variance / HAR": np.median(variance / rows["har"]),
            "worst 1% QLIKE": loss[worst].mean(), "HAR worst 1%": har[worst].mean()}


def levers(rows: pd.DataFrame) -> pd.DataFrame:
    log_f, log_h = np.log(rows["variance"].to_numpy()), np.log(rows["har"].to_numpy())
    out = {f"HAR weight {w}": figures(rows, np.exp(w * log_h + (1 - w) * log_f)) for w in WEIGHTS}
    out |= {f"recalibrated K={k} p={p}": figures(rows, recalibrated(rows, k, p)) for k, p in RECALIBRATIONS}
    return pd.DataFrame(out).T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--select", default="runs/sel-alts")
    parser.add_argument("--select-model", default="l2")
    parser.add_argument("--report", default="runs/bench-unseen")
    parser.add_argument("--models", default="gbm,nn")
    args = parser.parse_args()
    selection = levers(unseen_rows(args.select, args.select_model))
    print(f"Selection ({args.select}, {args.select_model}):\n{selection.round(3).to_markdown()}")
    chosen = [selection.filter(like=kind, axis=0)["qlike / HAR"].idxmin() for kind in ("HAR weight", "recalibrated")]
    print(f"chosen: {', '.join(chosen)}")
    for model in args.models.split(","):
        report = levers(unseen_rows(args.report, model)).loc[["HAR weight 0.0", *chosen]]
        print(f"\nReported ({args.report}, {model}, unseen):\n{report.round(3).to_markdown()}")


if __name__ == "__main__":
    main()
