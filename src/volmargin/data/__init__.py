"""Market data: loading and validating OHLCV bars, and a synthetic market for tests and demos."""

from volmargin.data.loader import GapReport, Panel, asset_name, load_bars, load_panel, validate_bars
from volmargin.data.synthetic import synthetic_market, write_synthetic_csv

__all__ = ["GapReport", "Panel", "asset_name", "load_bars", "load_panel", "validate_bars",
           "synthetic_market", "write_synthetic_csv"]
