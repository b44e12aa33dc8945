"""Perpetual funding for the simulator, from the funding files of the data folder (README `funding/`).

A file has columns timestamp (the settlement time, UTC), venue, symbol, funding_rate (the fraction of
notional longs pay shorts for the interval; not annualised). An asset named `<venue>_<symbol>` (e.g.
`binance_btcusdt`, `binance_btcusdt_perp`) takes the rows of that venue and symbol (case-insensitive). A
path step that ends on a settlement time pays that rate; other steps, and times the file does not
cover, pay nothing (never filled).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from volmargin.errors import DataError

COLUMNS = ["timestamp", "venue", "symbol", "funding_rate"]


def read_funding(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None
    missing = [c for c in COLUMNS if c not in frame]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; expected {', '.join(COLUMNS)}")
    stamps = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce")
    rate = pd.to_numeric(frame["funding_rate"], errors="coerce")
    bad = stamps.isna() | ~np.isfinite(rate) | (rate.abs() >= 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: row {row + 2}: unparsable timestamp or funding_rate {frame['funding_rate'].iloc[row]!r}")
    return pd.DataFrame({"timestamp": stamps, "venue": frame["venue"].astype(str).str.lower(),
                         "symbol": frame["symbol"].astype(str).str.lower(), "funding_rate": rate})


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
