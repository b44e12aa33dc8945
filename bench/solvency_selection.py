"""Choosing the solvency calibration's method on the calibration period only.

The study (bench/simulation.py) calibrates on paths realised before the validation start (2022-01-01) and
reports on the origins after it. This script never reads a bar or a forecast from the validation start on:
it cuts the data there, calibrates each method variant walk-forward from an earlier pseudo-validation
start (2021-01-01) and scores the origins between the two, i.e. a method is chosen on how it did out of
sample inside the calibration period. Assets without paths before the pseudo start are left out.

The same script with `--pseudo-start 2022-01-01 --end 2026-01-01` scores a variant out of sample like the
study (solvency, static and, per variant, the static schedule scaled to that variant's target on the first
block's window, `static_solvent`; no stress events).

Run (after the backtest of bench/simulation.py):
    .venv/bin/python bench/solvency_selection.py runs/sim-bt [--assets ...] [--pseudo-start 2021-01-01]
        [--end 2022-01-01] [--variants current,worst_quarter,...] [--set accounts=1000,...]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import shared_data_dir
from volmargin.calibration.autocalibrate import utc
from volmargin.calibration.policy import PolicyConfig
from volmargin.cli import _policy_items  # KEY=VALUE,... as `volmargin simulate --set`
from volmargin.config import APC_POLICY, SimulationSection, from_dict
from volmargin.data import load_panel
from volmargin.simulation.scenarios import run_paths
from volmargin.simulation.solvency import calibrate_solvency, calibrate_static, solvency_terms, static_terms
from volmargin.simulation.study import asset_case, study_config

VARIANTS = {  # SolvencyTarget fields each method sets (the rest: the defaults)
    "pooled": {"worst_period": None},  # the target pooled over the window (the default before this selection)
    "worst_quarter": {"worst_period": "QS"},
    "faster_rise": {"worst_period": None, "infeasible_change": 0.5},
    "worst_quarter+faster_rise": {"worst_period": "QS", "infeasible_change": 0.5},
    "expanding_window": {"worst_period": None, "window_days": 3650},
    "no_liquidations_limit": {"worst_period": "QS", "max_liquidations": None},  # a sensitivity, not a candidate
}


def score(case, terms, settings, start, target) -> dict:
    """Out-of-sample figures of `terms` on the case's paths from `start` on."""
    later = np.asarray(case.paths.origins[case.paths.day] >= start)
    paths = case.paths.select(later & np.isfinite(terms.initial[case.paths.day]).all(1))
    metrics = run_paths(paths, terms.initial, terms.maintenance, terms.penalty, case.variance, settings,
                        haircut=terms.haircut)
    p99 = float(np.quantile(metrics["bad_debt_fund"], target.quantile))
    return {"paths": len(paths), "bad_debt_fund_p99": p99, "meets_target": p99 <= target.max_bad_debt_fund,
            "liquidations_p95": float(np.quantile(metrics["liquidated"], target.liquidations_quantile)),
            "avg_margin": terms.avg_margin(np.isin(np.arange(len(case.origins)), np.unique(paths.day)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("--assets", default="btcusdt,ethusdt,solusdt,dogeusdt")
    parser.add_argument("--pseudo-start", default="2021-01-01")
    parser.add_argument("--end", default="2022-01-01", help="the study's validation start: nothing from it is read")
    parser.add_argument("--variants", default=",".join(list(VARIANTS)[:5]))
    parser.add_argument("--set", default="", help="SimulationSection keys, KEY=VALUE,...")
    args = parser.parse_args()
    section = from_dict(SimulationSection, _policy_items(args.set), "--set")
    cfg = study_config(section, args.pseudo_start, APC_POLICY, "YS")
    start, end = utc(args.pseudo_start), utc(args.end)
    forecasts = pd.read_parquet(args.run / "forecasts.parquet")
    # the last origin whose 24 h path ends before `end`
    forecasts = forecasts[(forecasts["model"] == cfg.model) & (forecasts["origin"] < end - pd.Timedelta(days=1))]
    folder = shared_data_dir()
    bars = {a: b[b.index < end] for a, b in
            load_panel([folder / f"binance_{a}_1h.csv.gz" for a in args.assets.split(",")]).items()}
    breach = PolicyConfig(**APC_POLICY)
    rule = PolicyConfig(risk=breach.risk, mpor_hours=breach.mpor_hours)  # the bare margin rule, as the study
    rows, blocks = [], []
    for asset in sorted(bars):
        rows_of = forecasts[forecasts["asset"] == asset]
        if rows_of.empty or rows_of["origin"].min() >= start - pd.Timedelta(days=30):
            print(f"{asset}: no forecasts a month before {start.date()}, left out", file=sys.stderr)
            continue
        case = asset_case(forecasts, bars[asset], asset, cfg, rule)
        rows.append({"asset": asset, "variant": "static",
                     **score(case, static_terms(case, cfg.large_caps, cfg.settings.penalty), cfg.settings, start,
                             cfg.target)})
        for name in args.variants.split(","):
            target = dataclasses.replace(cfg.target, **VARIANTS[name])
            began = time.process_time()
            table = calibrate_solvency(case, rule, cfg.settings, target, start)
            blocks.append(table.assign(variant=name))
            row = {"asset": asset, "variant": name,
                   **score(case, solvency_terms(case, rule, table), cfg.settings, start, target),
                   "maintenance_fraction": table["maintenance_fraction"].iloc[0],
                   "infeasible_blocks": int((~table["feasible"]).sum()), "blocks": len(table),
                   "cpu_s": time.process_time() - began}
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
            multiplier = calibrate_static(case, cfg.large_caps, cfg.settings, target, start)["scale"]
            rows.append({"asset": asset, "variant": f"{name}: static_solvent",
                         **score(case, static_terms(case, cfg.large_caps, cfg.settings.penalty, multiplier),
                                 cfg.settings, start, target), "multiplier": multiplier})
            print(rows[-1], file=sys.stderr, flush=True)
    table = pd.DataFrame(rows)
    print(f"## Solvency methods, calibrated from {start.date()} on paths before each block, scored on the origins "
          f"{start.date()} .. {end.date()} (nothing from {end.date()} on is read)\n")
    print(table.to_markdown(index=False, floatfmt=".4f"))
    pooled = table.groupby("variant").agg(assets=("asset", "size"), meets_target=("meets_target", "sum"),
                                          avg_margin=("avg_margin", "mean"),
                                          worst_bad_debt_fund_p99=("bad_debt_fund_p99", "max"))
    print("\n" + pooled.to_markdown(floatfmt=".4f"))
    methods = pooled[~pooled.index.str.contains("static")]
    chosen = methods.sort_values(["meets_target", "avg_margin"], ascending=[False, True]).index[0]
    print(f"\nchosen (target met on the most assets, then the least average margin): {chosen}")
    print("\nblocks:\n")
    print(pd.concat(blocks)[["variant", "asset", "valid_from", "scale", "maintenance_fraction", "feasible",
                             "calibration_bad_debt_fund", "calibration_liquidations"]].to_markdown(index=False,
                                                                                               floatfmt=".4f"))


if __name__ == "__main__":
    main()
