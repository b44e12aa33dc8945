"""The report's liquidation section, shown when the run folder has the simulate stage's outputs
(simulation/summary.csv, simulation/stress.csv): out-of-sample bad debt per policy and the cascade of
each stress event (how much of the event's move the liquidations caused)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from volmargin.reports.html import note, table

SUMMARY = {"asset": None, "policy": None, "paths": "int", "bad_debt_p95": "pct", "bad_debt_p99": "pct",
           "bad_debt_fund_p99": "pct", "meets_target": "check", "liquidations_p95": "pct", "avg_margin": "pct"}
STRESS = {"event": None, "asset": None, "policy": None, "eve_margin": "pct", "bad_debt": "pct",
          "cascade_free_bad_debt": "pct", "liquidated": "pct", "move": "pct", "cascade": "pct", "cascade_share": "pct"}


def simulation_sections(run_dir: Path) -> list[tuple[str, str, str]]:
    folder = Path(run_dir) / "simulation"
    if not (folder / "summary.csv").is_file() or not (folder / "stress.csv").is_file():
        return []
    summary = pd.read_csv(folder / "summary.csv")
    oos = summary[(summary["period"] == "validation") & (summary["kind"] == "all")]
    stress = pd.read_csv(folder / "stress.csv")
    stress = stress.assign(eve_margin=(stress["initial_long"] + stress["initial_short"]) / 2)
    body = (note("Out of sample, 24 h paths (real replays and bootstrapped, forecast-scaled paths): bad debt as a share "
                 "of open interest and of the insurance fund; target met when the 99th percentile is within the "
                 "solvency target.")
            + table(oos[[c for c in SUMMARY if c in oos]], {c: k for c, k in SUMMARY.items() if k})
            + note("Stress events replayed with the terms set on each eve: bad debt with the liquidations' own price "
                   "impact and without it (cascade_free), the event's largest move and the part of it the "
                   "liquidations caused (cascade, log price).")
            + table(stress[[c for c in STRESS if c in stress]].sort_values(["event", "asset", "policy"]),
                    {c: k for c, k in STRESS.items() if k}))
    return [("simulation", "Liquidations and bad debt", body)]
