"""Liquidation and bad-debt benchmark: the impact law against real liquidation minutes, then today's
breach-rate policy, the solvency-calibrated policy, a static venue schedule and that schedule scaled to the same
bad-debt target (static_solvent) through replays, bootstrapped paths and the stress events.

Run (after a backtest, e.g. `volmargin backtest --data <btc eth sol doge files> --models ewma,har
--start 2020-01-01 --out runs/sim-bt --no-tracking`):
    .venv/bin/python bench/simulation.py runs/sim-bt [--assets btcusdt,ethusdt,solusdt,dogeusdt]
        [--validation-start 2022-01-01] [--set accounts=1000,bootstrap_paths=4,...]
Calibration (both policies) sees only paths realised before the validation start; the tables score the
origins after it (out of sample) and the stress events with the terms set on each eve.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from common import shared_data_dir
from volmargin.calibration.autocalibrate import utc
from volmargin.calibration.policy import PolicyConfig
from volmargin.cli import _policy_items  # KEY=VALUE,... as `volmargin simulate --set`
from volmargin.config import APC_POLICY, SimulationSection, from_dict
from volmargin.data import load_panel
from volmargin.simulation.impact import DEFAULT_IMPACT, fit_liquidation_impact, read_liquidation_minutes
from volmargin.simulation.solvency import calibration_window, search_candidates
from volmargin.simulation.study import StudyResult, asset_case, headline, run_study, study_config, write_study


def impact_check(folder: Path) -> None:
    minutes = read_liquidation_minutes(folder / "liquidity" / "binance_ethusdt_perp_liquidations_1m_202101.csv.gz")
    print("## Square-root impact against the January 2021 Binance ETHUSDT perp liquidation minutes\n")
    rows = []
    for label, name in (("spot bars (the simulator's proxy)", "binance_ethusdt_1h.csv.gz"),
                        ("perp bars", "binance_ethusdt_perp_1h.csv.gz")):
        bars = next(iter(load_panel([folder / name]).values()))
        fit = fit_liquidation_impact(minutes, bars)
        rows.append({"volume": label, "minutes": fit.minutes, "Y same minute": f"{fit.coefficient:.2f} ± {fit.stderr:.2f}",
                     "Y next minute": f"{fit.lagged_coefficient:.2f} ± {fit.lagged_stderr:.2f}", "R2 same minute": f"{fit.r2:.2f}"})
    print(pd.DataFrame(rows).to_markdown(index=False))
    print(f"\nthe simulator's Y = {DEFAULT_IMPACT} (HAC standard errors; the same-minute slope is an upper bound: "
          "falling prices also trigger long liquidations)\n")


def _study(forecasts, bars, cfg):
    return run_study(forecasts, bars, cfg, log=lambda m: print(m, file=sys.stderr, flush=True))


def run_parallel(forecasts: pd.DataFrame, bars: dict, cfg, workers: int) -> StudyResult:
    """The study with the assets dealt round-robin to `workers` processes (each asset is independent)."""
    names = sorted(bars)
    groups = [names[i::workers] for i in range(max(1, min(workers, len(names))))]
    if len(groups) == 1:
        return _study(forecasts, bars, cfg)
    began = time.perf_counter()
    with ProcessPoolExecutor(len(groups)) as pool:
        parts = list(pool.map(_study, [forecasts[forecasts["asset"].isin(g)] for g in groups],
                              [{a: bars[a] for a in g} for g in groups], [cfg] * len(groups)))
    return StudyResult(*(pd.concat([getattr(p, k) for p in parts], ignore_index=True)
                         for k in ("summary", "stress", "solvency")), time.perf_counter() - began)


def first_block_candidates(forecasts: pd.DataFrame, bars: dict, cfg) -> pd.DataFrame:
    """The solvency calibration's first-block search per asset, every candidate of the grid (what each
    maintenance fraction and haircut factor would cost), on the paths before the validation start."""
    policy = PolicyConfig(**cfg.breach_policy)
    rule = PolicyConfig(risk=policy.risk, mpor_hours=policy.mpor_hours)  # the bare margin rule, as the study
    start, frames = utc(cfg.validation_start), []
    for asset in sorted(bars):
        case = asset_case(forecasts, bars[asset], asset, cfg, rule)
        paths = calibration_window(case, start, cfg.target)
        table = search_candidates(case, rule, paths, cfg.settings, cfg.settings.accounts(), cfg.target)
        frames.append(table.assign(asset=asset))
    return pd.concat(frames, ignore_index=True)


def versus(table: pd.DataFrame, pooled: pd.DataFrame, static: str) -> str:
    """The solvency policy's average margin against a static schedule's, pooled and per asset."""
    margin = table.pivot(index="asset", columns="policy", values="avg_margin")
    per_asset = ", ".join(f"{a} {m['solvency']:.2%} vs {m[static]:.2%} ({m['solvency'] / m[static] - 1:+.0%})"
                          for a, m in margin.iterrows())
    ours, theirs = pooled.loc["solvency", "avg_margin"], pooled.loc[static, "avg_margin"]
    return (f"\nsolvency-calibrated vs {static}: average margin {ours:.2%} vs {theirs:.2%} ({ours / theirs - 1:+.1%}; "
            f"{per_asset}); target met out of sample on {int(pooled.loc['solvency', 'meets_target'])} of "
            f"{int(pooled.loc['solvency', 'assets'])} assets ({static}: {int(pooled.loc[static, 'meets_target'])})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("--assets", default="btcusdt,ethusdt,solusdt,dogeusdt")
    parser.add_argument("--validation-start", default="2022-01-01")
    parser.add_argument("--set", default="", help="SimulationSection keys, KEY=VALUE,...")
    parser.add_argument("--out", type=Path, default=None, help="default: RUN/simulation")
    parser.add_argument("--workers", type=int, default=1, help="processes, each simulating a share of the assets")
    parser.add_argument("--candidates", action="store_true",
                        help="also print every candidate of the first block's search (maintenance, haircut)")
    args = parser.parse_args()
    folder = shared_data_dir()
    impact_check(folder)
    section = from_dict(SimulationSection, _policy_items(args.set), "--set")
    forecasts = pd.read_parquet(args.run / "forecasts.parquet")
    files = [folder / f"binance_{a}_1h.csv.gz" for a in args.assets.split(",")]
    bars = load_panel(files)
    cfg = study_config(section, args.validation_start, APC_POLICY, "YS")
    result = run_parallel(forecasts, bars, cfg, args.workers)
    out = args.out or args.run / "simulation"
    write_study(result, out, {"config": dataclasses.asdict(cfg), "seconds": result.seconds})
    target = cfg.target.max_bad_debt_fund
    print(f"## Out of sample from {cfg.validation_start} ({cfg.model}, {section.accounts:,} accounts, "
          f"{section.bootstrap_paths} bootstrapped paths per day beside the replay)\n")
    print(f"bad debt per 24 h as a fraction of open interest (p99) and of the insurance fund "
          f"({section.insurance_fund:.0%} of open interest; target p99 <= {target:.0%}); liquidations p95 "
          "as a fraction of open interest; avg_margin the average initial margin over days and sides\n")
    table = headline(result, target)
    print(table.to_markdown(index=False, floatfmt=".4f"))
    by_kind = result.summary[result.summary["period"] == "validation"].pivot_table(
        index=["asset", "policy"], columns="kind", values="bad_debt_fund_p99")
    print("\np99 of 24 h bad debt / insurance fund, out of sample, per path kind:\n")
    print(by_kind.to_markdown(floatfmt=".4f"))
    pooled = table.groupby("policy").agg(assets=("asset", "size"), meets_target=("meets_target", "sum"),
                                         avg_margin=("avg_margin", "mean"),
                                         bad_debt_fund_p99_worst=("bad_debt_fund_p99", "max"))
    print("\nPooled over assets:\n")
    print(pooled.to_markdown(floatfmt=".4f"))
    for static in ("static", "static_solvent"):
        print(versus(table, pooled, static))
    calibrated = result.solvency[result.solvency["policy"] == "static_solvent"]
    print("\nstatic_solvent: the static schedule's multiplier per asset, fixed on the paths before "
          f"{cfg.validation_start}:\n")
    print(calibrated[["asset", "scale", "maintenance_fraction", "feasible", "calibration_bad_debt_fund",
                      "calibration_liquidations", "calibration_avg_margin"]].to_markdown(index=False, floatfmt=".4f"))
    stress = result.stress.assign(eve_margin=lambda f: (f["initial_long"] + f["initial_short"]) / 2)
    print("\n## Stress events: the terms set on the eve, the event's path replayed (bad debt over the event)\n")
    cols = ["event", "asset", "policy", "out_of_sample", "eve_margin", "bad_debt", "bad_debt_fund", "liquidated",
            "move", "cascade", "cascade_share", "cascade_free_bad_debt"]
    print(stress[cols].sort_values(["event", "asset", "policy"]).to_markdown(index=False, floatfmt=".4f"))
    per_event = stress.pivot_table(index="event", columns="policy", values=["bad_debt", "eve_margin"], aggfunc="mean")
    print("\nPer event, mean over assets:\n")
    print(per_event.to_markdown(floatfmt=".4f"))
    solvency_blocks = result.solvency[result.solvency["policy"] == "solvency"]
    blocks = solvency_blocks.groupby("asset").agg(blocks=("scale", "size"), first_scale=("scale", "first"),
                                                  last_scale=("scale", "last"),
                                                  maintenance_fraction=("maintenance_fraction", "first"),
                                                  haircut_factor=("haircut_factor", "first"),
                                                  infeasible_blocks=("feasible", lambda s: int((~s).sum())))
    print("\nSolvency calibration blocks:\n")
    print(blocks.to_markdown(floatfmt=".3f"))
    if args.candidates:
        print("\nFirst block's search, every candidate (cost: average initial margin + the haircut's cost):\n")
        print(first_block_candidates(forecasts, bars, cfg).to_markdown(index=False, floatfmt=".4f"))
    print(f"\nwall time {result.seconds:.0f} s; tables in {out}")


if __name__ == "__main__":
    main()
