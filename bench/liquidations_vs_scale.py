"""Bad debt and liquidations at risk against the solvency rule's scale, on one calibration window: shows
that liquidations at risk need not fall as the scale rises (why the solvency calibration bisects on bad
debt alone and scans for the liquidations limit).

Run (after the backtest of bench/simulation.py):
    .venv/bin/python bench/liquidations_vs_scale.py runs/sim-bt [--assets btcusdt] [--before 2022-01-01]
Paths: the 365 days of replays and bootstrapped paths realised before `--before`, 1,000 accounts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from common import shared_data_dir
from volmargin.calibration.autocalibrate import utc
from volmargin.calibration.policy import PolicyConfig
from volmargin.config import APC_POLICY, SimulationSection
from volmargin.data import load_panel
from volmargin.simulation.solvency import Candidate, _evaluate, calibration_window
from volmargin.simulation.study import asset_case, study_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", type=Path)
    parser.add_argument("--assets", default="btcusdt")
    parser.add_argument("--before", default="2022-01-01")
    args = parser.parse_args()
    cfg = study_config(SimulationSection(), args.before, APC_POLICY, "YS")
    end = utc(args.before)
    forecasts = pd.read_parquet(args.run / "forecasts.parquet")
    forecasts = forecasts[(forecasts["model"] == cfg.model) & (forecasts["origin"] < end - pd.Timedelta(days=1))]
    policy = PolicyConfig(**APC_POLICY)
    rule = PolicyConfig(risk=policy.risk, mpor_hours=policy.mpor_hours)
    rows = []
    for asset, bars in load_panel([shared_data_dir() / f"binance_{a}_1h.csv.gz" for a in args.assets.split(",")]).items():
        case = asset_case(forecasts, bars[bars.index < end], asset, cfg, rule)
        paths = calibration_window(case, end, cfg.target)
        accounts = cfg.settings.accounts()
        for fraction in (0.5, 0.75):
            for scale in (0.3, 0.5, 0.7, 1.0, 1.4, 2.0, 3.0):
                bad_debt, liquidations = _evaluate(case, rule, paths, scale, Candidate(fraction, cfg.settings.penalty, 1.0),
                                                   cfg.settings, accounts, cfg.target)
                rows.append({"asset": asset, "maintenance_fraction": fraction, "scale": scale,
                             "bad_debt_fund_worst_quarter_p99": bad_debt, "liquidations_p95": liquidations})
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f"))


if __name__ == "__main__":
    main()
