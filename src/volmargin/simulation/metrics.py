"""Solvency metrics of simulated paths, the way parameter-risk providers report them.

Per path (24 h, or an event's length): `bad_debt` (absorbed by the insurance fund, with the negative equity of
positions still open at the path's end, which a lagging oracle has not closed yet; a fraction of the open
interest), `bad_debt_fund` (the same as a fraction of the fund at the start), `liquidated` (notional
closed by liquidation, fraction of open interest), `fund_drawdown` (largest fall of the fund from its
running peak, fraction of the starting fund: penalties first raise it), `cascade` (the largest log-price
move the liquidations themselves caused: simulated minus exogenous price, which is the price with the
feedback minus the price without it) and `move` (the largest simulated log-price move from the start).
Summaries: mean and 95th / 99th percentiles over paths ("liquidations at risk" is the percentile of
`liquidated`, as Chaos Labs' VaR is the percentile of bad debt).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from volmargin.simulation.engine import SimulationResult

PATH_METRICS = ["bad_debt", "bad_debt_fund", "liquidated", "fund_drawdown", "cascade", "move", "unconverged"]


def path_metrics(result: SimulationResult) -> pd.DataFrame:
    oi, fund0 = result.open_interest, result.fund_start
    bad = result.bad_debt.sum(1) + result.open_shortfall  # what is still open and underwater is owed too
    fund = np.hstack([result.fund, (result.fund[:, -1] - result.open_shortfall)[:, None]])
    peak = np.maximum.accumulate(fund, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        bad_fund = np.where(fund0 > 0, bad / fund0, np.where(bad > 0, np.inf, 0.0))
        drawdown = np.where(fund0 > 0, (peak - fund).max(1) / fund0, 0.0)
    return pd.DataFrame({
        "bad_debt": bad / oi, "bad_debt_fund": bad_fund, "liquidated": result.liquidated.sum(1) / oi,
        "fund_drawdown": drawdown, "cascade": np.abs(result.impact).max(1),
        "move": np.abs(result.log_price).max(1), "unconverged": result.unconverged,
    })


def summarize(metrics: pd.DataFrame) -> dict:
    def q(column: str, level: float) -> float:
        return float(np.quantile(metrics[column], level)) if len(metrics) else np.nan

    return {"paths": len(metrics), "bad_debt_mean": float(metrics["bad_debt"].mean()),
            "bad_debt_p95": q("bad_debt", 0.95), "bad_debt_p99": q("bad_debt", 0.99),
            "bad_debt_fund_p95": q("bad_debt_fund", 0.95), "bad_debt_fund_p99": q("bad_debt_fund", 0.99),
            "liquidations_p95": q("liquidated", 0.95), "liquidations_p99": q("liquidated", 0.99),
            "fund_drawdown_p99": q("fund_drawdown", 0.99), "cascade_mean": float(metrics["cascade"].mean()),
            "cascade_p99": q("cascade", 0.99), "unconverged": int(metrics["unconverged"].sum())}
