"""Perpetual funding for the simulator, from the funding files of the data folder (README `funding/`).

A file has columns timestamp (the settlement time, UTC), venue, symbol, funding_rate (the fraction of
notional longs pay shorts for the interval; not annualised). An asset named `<venue>_<symbol>` (e.g.
`binance_btcusdt`, `binance_btcusdt_perp`) takes the rows of that venue and symbol (case-insensitive). A
path step that ends on a settlement time pays that rate; other steps, and times the file does not
cover, pay nothing (never filled). The study (`study_rates`) requires rows of every asset it simulates: a
file that lacks one is refused rather than leaving that asset unfunded beside funded ones. The same
venue, symbol and time twice with different rates is refused (which one holds is unknown); exact
repeats are kept once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from volmargin.data.loader import parse_timestamps, read_csv_file
from volmargin.errors import DataError

COLUMNS = ["timestamp", "venue", "symbol", "funding_rate"]
# A median rate above this per settlement is percent sent as a fraction: the real 8-hour rates' median is 1e-4
# (0.01%, 25,174 rows of `funding/`), Hyperliquid's hourly 1.25e-5; in percent, 0.01 and 1.25e-3 (the
# latter passes: a check by level cannot tell hourly percent from a hot 8-hour market).
PERCENT_LIKE = 2e-3


def read_funding(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    frame = read_csv_file(path)
    missing = [c for c in COLUMNS if c not in frame]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; expected {', '.join(COLUMNS)}")
    if frame.empty:
        raise DataError(f"{path}: no funding rows")
    stamps = parse_timestamps(frame["timestamp"], str(path), np.arange(2, len(frame) + 2))  # rows: file lines
    rate = pd.to_numeric(frame["funding_rate"], errors="coerce")
    bad = ~(rate.abs() < 1)  # NaN and inf fail it too
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: row {row + 2}: funding_rate {frame['funding_rate'].iloc[row]} is not a fraction of "
                        "the position in (-1, 1)")
    if rate.abs().median() > PERCENT_LIKE:
        raise DataError(f"{path}: the median |funding_rate| is {rate.abs().median():g}, above {PERCENT_LIKE:g} a "
                        "settlement: rates in percent? give fractions of the position (0.0001 for 0.01%)")
    table = pd.DataFrame({"timestamp": stamps, "venue": frame["venue"].astype(str).str.lower(),
                          "symbol": frame["symbol"].astype(str).str.lower(), "funding_rate": rate})
    _check_conflicts(path, table)
    return table


def _check_conflicts(path: Path, table: pd.DataFrame) -> None:
    """DataError naming the first two rows with the same venue, symbol and time but different rates."""
    key = ["venue", "symbol", "timestamp"]
    conflict = table.groupby(key)["funding_rate"].transform("nunique").to_numpy() > 1
    if not conflict.any():
        return
    first = table.iloc[int(np.flatnonzero(conflict)[0])]
    other = (table[key] == first[key]).all(axis=1) & (table["funding_rate"] != first["funding_rate"])
    rows = [int(first.name) + 2, int(np.flatnonzero(other)[0]) + 2]
    raise DataError(f"{path}: rows {rows[0]} and {rows[1]}: {first['venue']} {first['symbol']} at "
                    f"{first['timestamp']:%Y-%m-%dT%H:%M:%SZ} has two funding rates "
                    f"({first['funding_rate']:g} and {table['funding_rate'].iloc[rows[1] - 2]:g})")


def study_rates(path: str | Path, assets: list[str]) -> dict[str, pd.Series]:
    """Each asset's rates from the funding file; DataError naming the file and the first asset it has no row of."""
    table = read_funding(path)
    rates = {asset: asset_rates(table, asset) for asset in assets}
    lacking = [asset for asset, r in rates.items() if r is None]
    if lacking:
        venue, _, symbol = lacking[0].lower().removesuffix("_perp").partition("_")
        more = f" (nor of {', '.join(lacking[1:])})" if len(lacking) > 1 else ""
        raise DataError(f"{path}: no funding rows of {lacking[0]} (venue {venue}, symbol {symbol}){more}; give a "
                        "file that covers every simulated asset, or leave out funding")
    return rates


def asset_rates(table: pd.DataFrame, asset: str) -> pd.Series | None:
    """Settlement time -> rate of `asset`, or None if the table has no row of it."""
    venue, _, symbol = asset.lower().removesuffix("_perp").partition("_")
    rows = table[(table["venue"] == venue) & (table["symbol"] == symbol)]
    if rows.empty:
        return None
    return rows.drop_duplicates("timestamp").set_index("timestamp")["funding_rate"].sort_index()


def funding_matrix(rates: pd.Series, starts: pd.DatetimeIndex, steps: int) -> np.ndarray:
    """(P, steps) rate paid at the end of each hourly step of paths starting at `starts`."""
    ends = np.asarray(starts.as_unit("ns").asi8)[:, None] + (np.arange(1, steps + 1) * 3_600_000_000_000)[None, :]
    index = rates.index.as_unit("ns").asi8
    where = np.searchsorted(index, ends)
    hit = (where < len(index)) & (index[np.minimum(where, len(index) - 1)] == ends)
    return np.where(hit, rates.to_numpy()[np.minimum(where, len(index) - 1)], 0.0)
