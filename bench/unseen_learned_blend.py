"""The GBM's variance blended with the GRU ensemble's, on saved unseen-asset forecasts.

    python bench/unseen_learned_blend.py --gbm runs/s11-q4 runs/s11-2021 --gru runs/nn-seeds-q4 runs/nn-seeds-2021 \
        --report-gbm runs/s11-report --report-gru runs/nn-seeds-report

The two learned models err differently (trees on 17 features, a recurrent network on a 16-feature window),
so their average may beat either on assets neither saw. Blend: variance w f_gbm + (1 - w) f_gru, the
GBM's VaR and ES scaled by sqrt(blend / f_gbm) (its calibrated standardized tails kept). The GRU is the
product's ensemble of three (`nn: {members: 3}`): on the selection runs the mean of the saved seeds 0, 1, 2
networks' variances (member k is the network of seed k: tests/test_learned.py), on the report run the
ensemble's own forecasts (`nn_m3`).

Rule, written before the run (session 14): among w in --weights, the one with the least mean QLIKE / HAR
over the two selection runs (129 assets trained to 2021-09-30 scored over 2021-Q4; 29 large caps trained
to 2020-12-31 scored over 2021) is chosen; it goes into the product only if it beats the GBM alone by at
least 0.003 QLIKE / HAR on both selection runs. The report run (trained to 2021-12-31, scored 2022-2025) is
read after the choice, with every figure of `bench/unseen_assets.py` (accuracy, tails, margins).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from unseen_har_blend import blended, print_report, ratio_to_har

KEYS = ["asset", "origin"]
SEEDS = ("nn", "nn_s1", "nn_s2")


def unseen_one_day(forecasts: pd.DataFrame, model: str) -> pd.DataFrame:
    return forecasts[(forecasts["model"] == model) & (forecasts["horizon"] == 1) & (forecasts["set"] == "unseen")]


def gru_ensemble_variance(gru_run: Path) -> pd.Series:
    """The three-network ensemble's variance per (asset, origin): `nn_m3` where the run has it, else the
    mean of the seeds' variances (the ensemble's own rule)."""
    forecasts = pd.read_parquet(gru_run / "forecasts.parquet")
    if "nn_m3" in set(forecasts["model"]):
        return unseen_one_day(forecasts, "nn_m3").set_index(KEYS)["variance"]
    seeds = [pd.read_parquet(gru_run / f"part-{seed}.parquet") for seed in SEEDS]
    seeds = [unseen_one_day(part.assign(model=seed), seed).set_index(KEYS)["variance"] for seed, part in zip(SEEDS, seeds)]
    return pd.concat(seeds, axis=1, join="inner").mean(axis=1)


def with_blends(gbm_run: Path, gru_run: Path, weights: list[float]) -> pd.DataFrame:
    """The GBM run's forecast table, on the rows the GRU scored too, plus `gbm_gru_w{w}` per weight < 1."""
    forecasts = pd.read_parquet(gbm_run / "forecasts.parquet")
    gru = gru_ensemble_variance(gru_run).rename("gru").reset_index()
    rows = unseen_one_day(forecasts, "gbm").merge(gru, on=KEYS)
    blends = []
    for w in weights:
        if w >= 1:
            continue
        blends.append(blended(rows.drop(columns="gru"), rows["gru"].to_numpy(), w, f"gbm_gru_w{w:g}"))
    kept = forecasts.merge(rows[KEYS], on=KEYS)  # every model on the same rows
    return pd.concat([kept, *blends], ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gbm", nargs=2, type=Path, required=True, help="the two selection runs with the GBM")
    parser.add_argument("--gru", nargs=2, type=Path, required=True, help="the same runs with the GRU seeds")
    parser.add_argument("--report-gbm", type=Path, required=True)
    parser.add_argument("--report-gru", type=Path, required=True)
    parser.add_argument("--weights", default="0.5,0.6,0.7,0.8,0.9,1")
    args = parser.parse_args()
    began = time.perf_counter()
    weights = [float(w) for w in args.weights.split(",")]
    select = {str(g): with_blends(g, n, weights) for g, n in zip(args.gbm, args.gru)}
    ratios = pd.DataFrame({path: ratio_to_har(table) for path, table in select.items()})
    gain = ratios.loc["gbm"] - ratios
    table = pd.concat([ratios, ratios.mean(axis=1).rename("selection mean"),
                       gain.min(axis=1).rename("least gain over the GBM")], axis=1).sort_values("selection mean")
    chosen = table["selection mean"].idxmin()
    kept = chosen != "gbm" and table.loc[chosen, "least gain over the GBM"] >= 0.003
    print("QLIKE / HAR, unseen rows, selection runs:\n")
    print(table.to_markdown(floatfmt=".4f"))
    print(f"\nchosen: {chosen}; rule (>= 0.003 better than the GBM on both): {'kept' if kept else 'rejected'}\n")
    print("report run (read after the choice):\n")
    print_report(with_blends(args.report_gbm, args.report_gru, weights), ["gbm", chosen])
    print(f"\nwall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
