"""Load and validate Deribit option chains (../shared/data/options/) and DVOL series (../shared/data/iv/).

Like `volmargin.data.loader`, every problem raises `DataError` with one line naming the file and the first
offending data row (1-based, in file order) and field.

- Chains: one row per instrument and snapshot, columns `CHAIN_COLUMNS`; `mark_iv` a fraction, bid/ask in
  BTC per option (empty: no order on that side; bid <= ask), `underlying_price` in USD; the instrument
  name (`BTC-7JAN22-55000-C`) agrees with the row's expiry date, strike and type. Returned with parsed UTC
  `timestamp`/`expiry`, `is_call`, and `days` = (expiry - timestamp) in days.
- DVOL: `timestamp,open,high,low,close` (daily, open and close within [low, high]) or `timestamp,close`
  (hourly), in percentage points;
  returned as float columns on a UTC DatetimeIndex, with `attrs["freq"]`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from volmargin.data.loader import _decode, _expand, _read_bytes, _read_csv, check_header
from volmargin.errors import DataError
from volmargin_serving.features import MIN_IV_INDEX
from volmargin_serving.options import MAX_IV

CHAIN_COLUMNS = ("timestamp", "instrument", "expiry", "strike", "type", "mark_iv", "bid_price", "ask_price",
                 "bid_size", "ask_size", "underlying_price", "underlying_index", "open_interest", "volume",
                 "delta", "gamma", "vega", "theta", "rho")
_REQUIRED = ("timestamp", "instrument", "expiry", "strike", "type", "mark_iv", "underlying_price")
_POSITIVE = ("strike", "mark_iv", "underlying_price")
_OPTIONAL_NONNEGATIVE = ("bid_price", "ask_price", "bid_size", "ask_size", "open_interest", "volume")
# Deribit's option names: underlying, expiry date, strike ('d' a decimal point: XRP_USDC-..-0d5-P), C or P
_NAME = r"^([A-Za-z0-9_]+)-(\d{1,2}[A-Za-z]{3}\d{2})-(\d+(?:[.d]\d+)?)-([CPcp])$"
_NUMERIC = ("strike", "mark_iv", "bid_price", "ask_price", "bid_size", "ask_size", "underlying_price",
            "open_interest", "volume", "delta", "gamma", "vega", "theta", "rho")


def _fail(name: str, row: int, message: str) -> DataError:
    return DataError(f"{name}: row {row}: {message}")


def _read(path: str | Path) -> tuple[pd.DataFrame, str]:
    name = str(path)
    text = _decode(_read_bytes(Path(path), name), name)
    check_header(text, name)
    frame = _read_csv(text, name, dtype=str, keep_default_na=False)
    if frame.empty:
        raise DataError(f"{name}: empty file (no data rows)")
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    return frame, name


def _columns(frame: pd.DataFrame, name: str, expected: Iterable[str], required: Iterable[str]) -> None:
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise DataError(f"{name}: missing column(s) {', '.join(missing)}; expected {','.join(expected)}")
    extra = [c for c in frame.columns if c not in expected]
    if extra:
        raise DataError(f"{name}: unknown column(s) {', '.join(extra)}; expected {','.join(expected)}")


def _times(frame: pd.DataFrame, column: str, name: str) -> pd.DatetimeIndex:
    text = frame[column].str.strip()
    parsed = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _fail(name, i + 1, f"{column} {frame[column].iloc[i]!r} is not an ISO 8601 time")
    dated_only = text.str.fullmatch(r"\d{4}-\d{2}-\d{2}").to_numpy()
    if dated_only.any():  # read as 00:00 UTC: an option expiring at Deribit's 08:00 would be 8 hours short
        i = int(np.flatnonzero(dated_only)[0])
        raise _fail(name, i + 1, f"{column} {frame[column].iloc[i]!r} has no time of day (Deribit's options expire "
                    "at 08:00 UTC); give the full ISO 8601 time")
    return pd.DatetimeIndex(parsed)


def _numbers(frame: pd.DataFrame, column: str, name: str, required: bool) -> np.ndarray:
    text = frame[column].str.strip()
    empty = (text == "").to_numpy()
    values = pd.to_numeric(text.where(~empty, "nan"), errors="coerce").to_numpy(dtype=float)
    unparsed = np.isnan(values) & ~empty & ~text.str.lower().eq("nan").to_numpy()
    missing = (empty | np.isnan(values)) if required else np.zeros(len(values), dtype=bool)
    bad = unparsed | missing | np.isinf(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = "is empty" if empty[i] else f"{frame[column].iloc[i]!r} is not a finite number"
        raise _fail(name, i + 1, f"{column} {what}")
    return values


def _first(checks: Iterable[tuple[np.ndarray, Callable[[int], str]]]) -> tuple[int, str] | None:
    """The earliest row any check flags, with that check's message; None if none does."""
    hits = [(int(np.flatnonzero(bad)[0]), message) for bad, message in checks if bad.any()]
    if not hits:
        return None
    row, message = min(hits, key=lambda hit: hit[0])
    return row, message(row)


def _check_names(out: pd.DataFrame, name: str) -> None:
    """Each instrument name agrees with its row's expiry date, strike and type: the next snapshot's row of a
    leg is found by its name, so a row that disagrees would be valued as another option."""
    instrument = out["instrument"]
    parts = instrument.str.extract(_NAME)
    expiry = pd.to_datetime(parts[1].str.upper(), format="%d%b%y", errors="coerce", utc=True)
    strike = pd.to_numeric(parts[2].str.replace("d", ".", regex=False), errors="coerce").to_numpy(dtype=float)
    unnamed = (parts[0].isna() | expiry.isna()).to_numpy()
    said = lambda i: f"instrument {instrument.iloc[i]} disagrees with its "  # noqa: E731
    hit = _first([
        ((instrument == "").to_numpy(), lambda i: "instrument is empty"),
        (unnamed, lambda i: f"instrument {instrument.iloc[i]!r} is not a Deribit option name "
                            "(e.g. BTC-7JAN22-55000-C)"),
        (~unnamed & (expiry != out["expiry"].dt.normalize()).to_numpy(),
         lambda i: said(i) + f"expiry {out['expiry'].iloc[i]:%Y-%m-%d}"),
        (~unnamed & (strike != out["strike"].to_numpy()), lambda i: said(i) + f"strike {out['strike'].iloc[i]:g}"),
        (~unnamed & ((parts[3].str.upper() == "C") != out["is_call"]).to_numpy(),
         lambda i: said(i) + f"type {'call' if out['is_call'].iloc[i] else 'put'}")])
    if hit is not None:
        raise _fail(name, hit[0] + 1, hit[1])


def load_chain(path: str | Path) -> pd.DataFrame:
    """One option-chain file, validated (see module doc)."""
    frame, name = _read(path)
    _columns(frame, name, CHAIN_COLUMNS, _REQUIRED)
    out = pd.DataFrame({"timestamp": _times(frame, "timestamp", name), "expiry": _times(frame, "expiry", name)})
    out["instrument"] = frame["instrument"].str.strip().to_numpy()
    if "underlying_index" in frame.columns:
        out["underlying_index"] = frame["underlying_index"].str.strip().to_numpy()
    kind = frame["type"].str.strip().str.lower()
    bad = ~kind.isin(["call", "put"]).to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _fail(name, i + 1, f"type {frame['type'].iloc[i]!r} is neither 'call' nor 'put'")
    out["is_call"] = (kind == "call").to_numpy()
    for column in _NUMERIC:
        if column in frame.columns:
            out[column] = _numbers(frame, column, name, column in _REQUIRED)
    for column in _POSITIVE:
        bad = ~(out[column].to_numpy() > 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise _fail(name, i + 1, f"{column} {float(out[column].iloc[i])!r} must be > 0")
    for column in _OPTIONAL_NONNEGATIVE:
        if column in out:
            bad = out[column].to_numpy() < 0
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise _fail(name, i + 1, f"{column} {float(out[column].iloc[i])!r} must be >= 0")
    if "bid_price" in out and "ask_price" in out:
        crossed = (out["bid_price"] > out["ask_price"]).to_numpy()  # an empty side is NaN: never crossed
        if crossed.any():
            i = int(np.flatnonzero(crossed)[0])
            raise _fail(name, i + 1, f"bid_price {out['bid_price'].iloc[i]:g} is above ask_price "
                                     f"{out['ask_price'].iloc[i]:g} (a crossed quote)")
    high = (out["mark_iv"] > MAX_IV).to_numpy()
    if high.any():
        i = int(np.flatnonzero(high)[0])
        raise _fail(name, i + 1, f"mark_iv {float(out['mark_iv'].iloc[i])!r} is above {MAX_IV:g} "
                                 f"({MAX_IV:,.0%} a year); it must be a fraction (0.65 for 65%)")
    late = (out["expiry"] <= out["timestamp"]).to_numpy()
    if late.any():
        i = int(np.flatnonzero(late)[0])
        raise _fail(name, i + 1, "expiry is not after the snapshot timestamp")
    _check_names(out, name)
    duplicated = out.duplicated(["timestamp", "instrument"]).to_numpy()
    if duplicated.any():
        i = int(np.flatnonzero(duplicated)[0])
        raise _fail(name, i + 1, f"instrument {out['instrument'].iloc[i]} appears twice in one snapshot")
    unsorted = np.diff(pd.DatetimeIndex(out["timestamp"]).asi8) < 0
    if unsorted.any():
        raise _fail(name, int(np.flatnonzero(unsorted)[0]) + 2, "timestamps are not in ascending order")
    out["days"] = (out["expiry"] - out["timestamp"]).dt.total_seconds().to_numpy() / 86400.0
    out.attrs["source"] = name
    return out


def load_chains(paths) -> pd.DataFrame:
    """Chain files, folders or globs, concatenated in time order (a snapshot may appear in one file only)."""
    frames = [load_chain(p) for p in _expand(paths)]
    chain = pd.concat(frames, ignore_index=True).sort_values(["timestamp", "expiry", "strike", "is_call"],
                                                              kind="stable", ignore_index=True)
    seen = {}
    for frame in frames:
        for stamp in frame["timestamp"].unique():
            if stamp in seen:
                raise DataError(f"{frame.attrs['source']} and {seen[stamp]} both hold the snapshot {stamp}")
            seen[stamp] = frame.attrs["source"]
    return chain


def chain_underlying(chain: pd.DataFrame) -> str:
    """The one underlying of loaded chains, from the instrument names (`BTC-24SEP21-56000-P` -> 'btc')."""
    names = sorted(set(chain["instrument"].str.split("-").str[0].str.lower()))
    if len(names) != 1:
        raise DataError(f"--chains: options on {' and '.join(names) or 'nothing'}; give the chains of one underlying")
    return names[0]


def load_dvol(path: str | Path) -> pd.DataFrame:
    """One DVOL file (daily OHLC or hourly close), validated: positive finite levels, ascending unique
    timestamps; on daily files, timestamps at 00:00 UTC and low <= open, close <= high."""
    frame, name = _read(path)
    daily = "open" in frame.columns
    expected = ("timestamp", "open", "high", "low", "close") if daily else ("timestamp", "close")
    _columns(frame, name, expected, expected)
    index = _times(frame, "timestamp", name)
    out = pd.DataFrame({c: _numbers(frame, c, name, True) for c in expected[1:]}, index=index)
    out.index.name = "timestamp"
    for column in expected[1:]:
        bad = ~(out[column].to_numpy() > 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise _fail(name, i + 1, f"{column} {float(out[column].iloc[i])!r} must be > 0")
        low = out[column].to_numpy() < MIN_IV_INDEX
        if low.any():
            i = int(np.flatnonzero(low)[0])
            raise _fail(name, i + 1, f"{column} {float(out[column].iloc[i])!r} is below {MIN_IV_INDEX:g}: DVOL is "
                                     "annualised percent (65 for 65%)")
    if daily:
        off = index != index.normalize()  # a daily bar is labelled by its UTC day's open
        if off.any():
            i = int(np.flatnonzero(off)[0])
            raise _fail(name, i + 1, f"timestamp {frame['timestamp'].iloc[i]!r} is not at 00:00 UTC, as a daily "
                                     "DVOL bar's is")
        low, high = out["low"].to_numpy(), out["high"].to_numpy()
        outside = lambda c: (out[c].to_numpy() > high) | (out[c].to_numpy() < low)  # noqa: E731
        hit = _first([(low > high, lambda i: "low above high"),
                      (outside("open"), lambda i: f"open {out['open'].iloc[i]:g} outside [low, high]"),
                      (outside("close"), lambda i: f"close {out['close'].iloc[i]:g} outside [low, high]")])
        if hit is not None:
            raise _fail(name, hit[0] + 1, hit[1])
    step = np.diff(index.asi8)
    if (step <= 0).any():
        raise _fail(name, int(np.flatnonzero(step <= 0)[0]) + 2, "timestamps are not strictly ascending")
    out.attrs["source"] = name
    out.attrs["freq"] = pd.Timedelta(int(np.median(step)), "ns") if len(step) else None
    return out


def load_dvols(paths) -> dict[str, pd.DataFrame]:
    """DVOL files by underlying (`deribit_btc_dvol_1d.csv.gz` -> 'btc'); a daily file wins over an hourly
    one of the same underlying."""
    out: dict[str, pd.DataFrame] = {}
    for file in _expand(paths):
        frame = load_dvol(file)
        parts = Path(file).name.lower().split("_")
        key = parts[1] if len(parts) > 2 and parts[0] == "deribit" else Path(file).name.split(".")[0]
        if key not in out or "open" in frame.columns:
            out[key] = frame
    return out
