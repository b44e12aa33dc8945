"""Forecast evaluation: loss functions, forecast-comparison tests and risk backtests."""

from volmargin.evaluation.stats import (
    ChristoffersenResult,
    DMResult,
    MZResult,
    TestResult,
    acerbi_szekely_z2,
    basel_zone,
    basel_zones,
    christoffersen,
    default_dm_lags,
    diebold_mariano,
    kupiec_pof,
    mincer_zarnowitz,
    mse_log,
    qlike,
    var_backtest,
    worst_basel_zone,
)

__all__ = [
    "ChristoffersenResult",
    "DMResult",
    "MZResult",
    "TestResult",
    "acerbi_szekely_z2",
    "basel_zone",
    "basel_zones",
    "christoffersen",
    "default_dm_lags",
    "diebold_mariano",
    "kupiec_pof",
    "mincer_zarnowitz",
    "mse_log",
    "qlike",
    "var_backtest",
    "worst_basel_zone",
]
