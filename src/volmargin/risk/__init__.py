"""The risk layer: positions, scenario sets, valuation, risk measures (numpy core in
`volmargin_serving.risk`, re-exported here), FHS scenario generation (`volmargin.risk.scenarios`) and the
portfolio margin backtest (`volmargin.risk.portfolio`); option valuation and books (`volmargin.risk.options`,
`volmargin.risk.option_books`)."""

from volmargin_serving.risk import (
    KINDS, BadPositionError, Positions, ScenarioSet, UnknownAssetError, expected_shortfall, linear_pnl,
    parse_measure, risk_measure, simple_returns, value_at_risk, worst_mean,
)

__all__ = [
    "KINDS", "BadPositionError", "Positions", "ScenarioSet", "UnknownAssetError", "expected_shortfall",
    "linear_pnl", "parse_measure", "risk_measure", "simple_returns", "value_at_risk", "worst_mean",
]
