"""Option valuation and the scenario-grid margin: the numpy core lives once in `volmargin_serving.options`
(shared with serving); this module re-exports it for the library's backtest and calibration."""

from volmargin_serving.options import (  # noqa: F401
    DAYS_PER_YEAR, DERIBIT_BTC, DERIBIT_ETH, DERIBIT_VOL, Books, Grid, OptionMargin, OptionQuoteError, Smile,
    black76, book_from_positions, contingency, grid_from_forecasts, greeks, historical_iv_quantiles, initial_margin,
    intrinsic, lattice_moves, margin_fraction, ndtr, npdf, option_margin, premium_btc, prepare, scale_grid,
    scenario_losses,
)
