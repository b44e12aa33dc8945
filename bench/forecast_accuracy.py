"""Forecast-accuracy benchmark: learned models against the baselines, walk-forward, on real data.

All hourly spot files of ../shared/data, targets from 2022-01-01 to the end of the data, horizon 1 day,
models ewma, gjr, har, gbm, nn. Baselines refit every 20 days, learned models every 60 (each refit sees
every asset's data up to that day only). Prints markdown tables: pooled QLIKE, the QLIKE ratio of each
model to HAR and to GJR-GARCH with Diebold-Mariano p-values, VaR 99% exception rates and Kupiec p per
tail, per-asset QLIKE, and wall time per model.

Run: .venv/bin/python bench/forecast_accuracy.py [--out runs/bench-accuracy] [--learned-refit 60] \
         [--models ewma,gjr,har,gbm,nn,blend --params '{"nn": {"members": 3}}']
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from common import hourly_spot_files
from volmargin.data import load_panel
from volmargin.evaluation.backtest import BacktestConfig, daily_panel, run_backtest
from volmargin.evaluation.scoring import POOLED, diebold_mariano_table, score_forecasts
from volmargin.evaluation.walkforward import WalkForwardSplit
from volmargin.io import write_frame

LEARNED = ("gbm", "nn", "blend")


def accuracy_table(scores: pd.DataFrame, forecasts: pd.DataFrame, timings: pd.DataFrame) -> pd.DataFrame:
    pooled = scores[scores["asset"] == POOLED].set_index("model")
    table = pooled[["n", "qlike", "var99_long_rate", "kupiec_p_long", "var99_short_rate", "kupiec_p_short"]].copy()
    for reference in ("har", "gjr"):
        dm = diebold_mariano_table(forecasts, reference).set_index("model")
        table[f"ratio_vs_{reference}"] = dm["ratio"]
        table[f"dm_p_vs_{reference}"] = dm["dm_p"]
    table["seconds"] = timings.groupby("model")["seconds"].sum()
    return table.reset_index().sort_values("qlike")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--start", default="2022-01-01")
    parser.add_argument("--models", default="ewma,gjr,har,gbm,nn")
    parser.add_argument("--refit-every", type=int, default=20)
    parser.add_argument("--learned-refit", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-accuracy"))
    parser.add_argument("--params", default="{}", help='JSON per learned model, e.g. {"nn": {"members": 3}}; '
                        "blend takes the run's gbm and nn parameters, so its forecasts combine theirs")
    args = parser.parse_args()
    params = json.loads(args.params)
    params["blend"] = {"gbm": params.get("gbm", {}), "nn": params.get("nn", {}), **params.get("blend", {})}
    began = time.perf_counter()
    panel = daily_panel(load_panel([str(p) for p in hourly_spot_files()]))
    models = tuple(args.models.split(","))
    config = BacktestConfig(
        models=models, split=WalkForwardSplit(start=pd.Timestamp(args.start, tz="UTC"), refit_every=args.refit_every),
        model_refit_every={m: args.learned_refit for m in LEARNED if m in models},
        model_params={m: p for m, p in params.items() if m in models},
    )
    forecasts, timings = run_backtest(panel, config)
    scores = score_forecasts(forecasts)
    args.out.mkdir(parents=True, exist_ok=True)
    write_frame(forecasts, args.out / "forecasts.parquet")
    write_frame(scores, args.out / "scores.csv")
    write_frame(timings, args.out / "timings.csv")
    table = accuracy_table(scores, forecasts, timings)
    write_frame(table, args.out / "accuracy.csv")
    print(f"\n{len(panel)} assets, targets from {args.start}; total wall time {time.perf_counter() - began:.0f} s\n")
    print(table.to_markdown(index=False, floatfmt=".4f"))
    per_asset = scores[scores["asset"] != POOLED].pivot(index="asset", columns="model", values="qlike")
    print("\nPer-asset QLIKE:\n")
    print(per_asset.reset_index().to_markdown(index=False, floatfmt=".4f"))


if __name__ == "__main__":
    main()
