"""Load and validate OHLCV bars from canonical CSV/Parquet, Binance kline dumps and CryptoDataDownload exports.

Every problem raises `DataError` with one line naming the file and, where it applies, the first offending
data row (1-based, in file order) and its timestamp. Gaps are reported in `attrs["gaps"]`, never filled.
"""

from __future__ import annotations

import glob
import csv
import gzip
import io
import os
import re
import stat
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from volmargin.errors import DataError

COLUMNS = ("open", "high", "low", "close", "volume")
PRICES = COLUMNS[:4]
DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet")

Panel = dict[str, pd.DataFrame]

_BINANCE_NCOLS = 12
_FREQ_TOKEN = re.compile(r"_\d+(?:s|m|min|h|d|w|mo)$")
# an interval in a file name: a count and a unit between separators (m minutes, M months as Binance writes them)
_INTERVAL_TOKEN = re.compile(r"(?:^|[-_])(\d+)(min|mo|[smhdwSHDWM])(?=$|[-_.])")
_INTERVAL_UNITS = {"s": "s", "m": "min", "min": "min", "h": "h", "d": "d", "w": "w"}
_UNIT_SECONDS = {"s": 1, "min": 60, "h": 3600, "d": 86_400, "w": 604_800}
_LONGEST_BAR_SECONDS = 604_800
_GLOB_CHARS = re.compile(r"[*?\[]")
MAX_DECOMPRESSED = 4 << 30  # bytes a gzip file may expand to (the largest real hourly file is ~10 MB)
MAX_RATIO = 1000  # and at most this many times its compressed size: more is a decompression bomb


@dataclass(frozen=True)
class GapReport:
    """Gaps longer than one bar: how many, how many bars they miss, and the largest one."""

    count: int
    missing_bars: int
    largest: int
    largest_after: pd.Timestamp | None  # the last bar before the largest gap

    def __str__(self) -> str:
        if self.count == 0:
            return "no gaps"
        after = self.largest_after.strftime("%Y-%m-%dT%H:%MZ")
        return (f"{_plural(self.count, 'gap')}, {_plural(self.missing_bars, 'missing bar')}; "
                f"largest {_plural(self.largest, 'bar')} after {after}")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


@dataclass
class _Raw:
    """Parsed but unvalidated bars in intended time order; `rows` maps positions to 1-based file data rows."""

    ts: pd.DatetimeIndex
    values: pd.DataFrame  # the five OHLCV columns, any dtype
    rows: np.ndarray
    ignored: tuple[str, ...] = ()  # the file's other columns, left out


# ---------------------------------------------------------------- public API


def bar_seconds(bars: pd.DataFrame) -> int:
    """The bar interval of a loaded bar frame in seconds (its `freq`; hourly where it has none: synthetic)."""
    return int(pd.Timedelta(bars.attrs.get("freq", pd.Timedelta(hours=1))).total_seconds())


def load_bars(path: str | Path, *, sort: bool = False, freq: str | None = None) -> pd.DataFrame:
    """Read one file of OHLCV bars (format recognised by content) and validate it.

    Returns float64 columns open, high, low, close, volume on a UTC DatetimeIndex named `timestamp`
    (bar open times, ascending, unique) with attrs `source`, `freq` (pd.Timedelta), `gaps` (GapReport) and
    `ignored` (the file's columns left out, e.g. trades or a quote volume).
    `sort=True` sorts unsorted rows instead of rejecting them; `freq` fixes the bar interval instead of
    inferring it as the most common spacing; where `freq` is None the interval the file's name declares
    (binance_btcusdt_30m.csv.gz: 30 minutes) fixes it, so a feed that lost bars is read with its gaps.
    """
    name = str(path)
    raw = _read_bytes(Path(path), name)
    if raw[:4] == b"PAR1":
        parsed = _parse_frame(_read_parquet(raw, name), name)
    else:
        parsed = _parse_text(_decode(raw, name), name)
    if freq is None and (declared := name_interval(path)) is not None:
        try:
            return _validate(parsed, name, sort=sort, freq=declared)
        except DataError as exc:
            if "bar grid" not in str(exc):
                raise
            raise DataError(f"{exc} (the {_fmt_td(declared)} bars its name declares; rename the file if its "
                            "interval is another)") from None
    return _validate(parsed, name, sort=sort, freq=freq)


def name_interval(path: str | Path) -> pd.Timedelta | None:
    """The bar interval a file's name declares by its last interval token (_30m, -1h-, _4H, _1d; Binance's dumps
    BTCUSDT-30m-2024-01.csv), None where it declares none or months (1M, 1mo: no fixed length). Inferred from
    the spacing instead, a 30-minute feed that lost every hh:30 bar read as complete hourly bars, each high-low
    half its hour, and priced margins 18% lower (session 31)."""
    stem = Path(path).name
    for suffix in (".gz", ".csv", ".parquet"):
        stem = stem.removesuffix(suffix).removesuffix(suffix.upper())
    tokens = _INTERVAL_TOKEN.findall(stem)
    if not tokens or tokens[-1][1] in ("M", "mo"):
        return None
    count, unit = int(tokens[-1][0]), _INTERVAL_UNITS[tokens[-1][1].lower()]
    if not 0 < count * _UNIT_SECONDS[unit] <= _LONGEST_BAR_SECONDS:
        raise DataError(f"{path}: its name declares bars of {tokens[-1][0]}{tokens[-1][1]}; a bar lasts more than "
                        "0 and at most a week (rename the file)")
    return pd.Timedelta(count * _UNIT_SECONDS[unit], unit="s")


def validate_bars(frame: pd.DataFrame, *, source: str, sort: bool = False,
                  freq: str | pd.Timedelta | None = None) -> pd.DataFrame:
    """Apply the file rules to an in-memory frame (canonical columns; timestamps as index or column)."""
    return _validate(_parse_frame(frame, source), source, sort=sort, freq=freq)


def asset_name(path: str | Path) -> str:
    """File name without data suffixes and a trailing frequency token: binance_btcusdt_1h.csv.gz -> binance_btcusdt."""
    name = Path(path).name.lower()
    for suffix in (".gz", ".csv", ".parquet"):
        name = name.removesuffix(suffix)
    return _FREQ_TOKEN.sub("", name)


QUOTES = ("usdt", "usdc", "busd", "usd", "eur")  # quote currencies of the same coin's pairs across venues


def instrument(asset: str) -> str:
    """The coin an asset name trades, for keeping one coin's pairs together: binance_btcusdt, bitstamp_btcusd and
    binance_btcusdt_perp are all 'btc' (their daily returns correlate 0.9975: dealt into different folds, each BTC
    was scored by a model trained on the other; session 31's red team). A name of another shape is its own."""
    venue, _, pair = asset.lower().partition("_")
    pair = pair.removesuffix("_perp")
    quote = next((q for q in QUOTES if pair.endswith(q) and len(pair) > len(q)), "")
    return pair[:len(pair) - len(quote)] if quote and pair.isalnum() else asset


def with_instruments_together(dealt: dict[str, int]) -> dict[str, int]:
    """Asset -> group with every pair of one coin (`instrument`) in the group of its first name (sorted)."""
    first: dict[str, int] = {}
    for name in sorted(dealt):
        first.setdefault(instrument(name), dealt[name])
    return {name: first[instrument(name)] for name in dealt}


def load_panel(paths: str | Path | Iterable[str | Path], *, sort: bool = False,
               freq: str | None = None) -> Panel:
    """Load files, directories (all *.csv, *.csv.gz, *.parquet in them) and glob patterns into asset -> bars."""
    files = _expand(paths)
    by_asset: dict[str, Path] = {}
    for file in files:
        asset = asset_name(file)
        if asset in by_asset:
            raise DataError(f"{by_asset[asset]} and {file} both give asset name {asset!r}")
        by_asset[asset] = file
    return {asset: load_bars(by_asset[asset], sort=sort, freq=freq) for asset in sorted(by_asset)}


# ---------------------------------------------------------------- reading


def _expand(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    files: dict[Path, Path] = {}  # keyed by resolved path: the same file named twice is loaded once
    for item in items:
        for file in _expand_one(item):
            try:
                files.setdefault(file.resolve(strict=True), file)
            except FileNotFoundError:
                raise DataError(f"{file}: file not found") from None
            except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
                raise DataError(f"{file}: cannot resolve the path ({exc})") from None
    return list(files.values())


def _expand_one(item: str | Path) -> list[Path]:
    path = Path(item)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(DATA_SUFFIXES))
        skipped = [p.name for p in path.iterdir() if p.name.lower().endswith(DATA_SUFFIXES) and not p.is_file()]
        if skipped:  # a broken link, a link loop, a FIFO named like data: say so rather than skip it quietly
            raise DataError(f"{path / skipped[0]}: not a readable regular file (broken link, link loop, FIFO?)")
        if not found:
            raise DataError(f"{item}: no *.csv, *.csv.gz or *.parquet files in this directory")
        return found
    if _GLOB_CHARS.search(str(item)):
        found = sorted(Path(p) for p in glob.glob(str(item)) if Path(p).is_file())
        if not found:
            where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"  # configs' paths are relative
            raise DataError(f"{item}: no files match this pattern{where}")
        return found
    return [path]


def _read_bytes(path: Path, name: str) -> bytes:
    try:
        mode = os.stat(path).st_mode  # follows symlinks: what would be read
        if stat.S_ISDIR(mode):
            raise DataError(f"{name}: is a directory, not a data file")
        if not stat.S_ISREG(mode):  # a FIFO or device would block or never end
            raise DataError(f"{name}: not a regular file (a FIFO, device or socket); give a data file")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{name}: is a directory, not a data file") from None
    except OSError as exc:
        raise DataError(f"{name}: cannot read file ({exc.strerror or exc})") from None
    if raw[:2] == b"\x1f\x8b":
        return _gunzip(raw, name)
    return raw


def _gunzip(raw: bytes, name: str) -> bytes:
    """The decompressed bytes, read in blocks and stopped at `MAX_DECOMPRESSED` / `MAX_RATIO`."""
    limit = min(MAX_DECOMPRESSED, MAX_RATIO * max(len(raw), 1 << 20))
    out, size = [], 0
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as handle:
            while block := handle.read(1 << 22):
                size += len(block)
                if size > limit:
                    raise DataError(f"{name}: decompresses to more than {limit >> 20} MB "
                                    f"({MAX_RATIO}x its size at most); not a bar file (a decompression bomb?)")
                out.append(block)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{name}: unreadable gzip file ({exc})") from None
    return b"".join(out)


def _read_parquet(raw: bytes, name: str) -> pd.DataFrame:
    try:
        return pd.read_parquet(io.BytesIO(raw))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{name}: unreadable Parquet file ({_one_line(exc)})") from None


def _decode(raw: bytes, name: str) -> str:
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:
        raise DataError(f"{name}: unreadable file (not CSV, gzip-compressed CSV or Parquet)")
    return text


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


_TRAILING_COMMA = re.compile(r",[ \t]*(?=\r?\n|\Z)")


def _read_csv(text: str, name: str, **kwargs) -> pd.DataFrame:
    """pandas' CSV reader with its errors as one line; a row longer than the header is refused (pandas drops its
    extra fields with a warning: an unquoted 5,053.49 read as volume 5), unless every row ends in a comma."""
    try:
        try:
            return _read_csv_strict(text, **kwargs)
        except pd.errors.ParserWarning:
            stripped = _TRAILING_COMMA.sub("", text)
            if stripped == text:
                raise
            return _read_csv_strict(stripped, **kwargs)  # a trailing comma on each row: an empty last field
    except pd.errors.ParserWarning:
        raise DataError(f"{name}: a row holds more fields than the header (an unquoted thousands separator, as in "
                        "5,053.49?); give one value per column") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{name}: empty file (no data rows)") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{name}: malformed CSV ({_one_line(exc)})") from None


def read_csv_file(path: str | Path, **kwargs) -> pd.DataFrame:
    """A user's CSV file (plain or gzip) as pandas reads it with `kwargs`, through this module's checks: a
    regular file, a gzip that is whole and not a bomb, UTF-8 text, no row longer than its header; DataError
    naming the file otherwise. The readers of specs, funding and accounts files share it with the bars."""
    name = str(path)
    text = _decode(_read_bytes(Path(path), name), name)
    check_header(text, name)
    return _read_csv(text, name, **kwargs)


def check_header(text: str, name: str) -> None:
    """DataError where a CSV's header names a column twice (case and spaces aside): pandas renames the second to
    `x.1`, and a reader took the first in silence (or failed on the pair, an internal error)."""
    header = [field.strip().lower() for field in next(csv.reader(io.StringIO(text.lstrip())), [])]
    twice = sorted({field for field in header if field and header.count(field) > 1})
    if twice:
        raise DataError(f"{name}: column {twice[0]!r} appears more than once in the header; give each column once")


def _read_csv_strict(text: str, **kwargs) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        return pd.read_csv(io.StringIO(text), index_col=False, **kwargs)


# ---------------------------------------------------------------- formats


def _fields(line: str) -> list[str]:
    return [f.strip().strip('"').lower() for f in line.split(",")]


def _parse_text(text: str, name: str) -> _Raw:
    lines = text[:65536].lstrip().splitlines()[:2]
    if not lines:
        raise DataError(f"{name}: empty file (no data rows)")
    first = _fields(lines[0])
    second = _fields(lines[1]) if len(lines) > 1 else []
    if first[0].isdigit() and len(first) in HEADERLESS_NCOLS:
        return _parse_headerless(text, name)
    if (first[0].isdigit() or first[0] == "open_time") and len(first) == _BINANCE_NCOLS:
        return _parse_binance(text, name, has_header=not first[0].isdigit())
    if first[0].isdigit():
        raise DataError(f"{name}: a file without a header row must have {_BINANCE_NCOLS} columns (a Binance kline "
                        f"dump) or {' or '.join(map(str, HEADERLESS_NCOLS))} (time, open, high, low, close, volume"
                        f", then trades or not), found {len(first)}")
    if _is_cdd_header(first):
        return _parse_cdd(text, name, skip=0)
    if len(first) == 1 and (separator := next((s for s in (";", "\t", "|") if s in lines[0]), None)):
        raise DataError(f"{name}: the header is separated by {separator!r}, not commas; give comma-separated values")
    if lines[0].lstrip().startswith("#"):
        raise DataError(f"{name}: a comment line above the header ({lines[0][:40]!r}); remove it")
    if len(first) == 1 or _is_cdd_header(second):
        return _parse_cdd(text, name, skip=1)  # CryptoDataDownload: a URL/text line before the header
    return _parse_canonical(text, name)


def _is_cdd_header(fields: list[str]) -> bool:
    return any(f.startswith("unix") for f in fields)


# other names of the timestamp column in venues' exports, taken where no column is named timestamp
TIMESTAMP_ALIASES = ("time", "date", "datetime", "ts", "open_time", "opentime", "starttime", "start_time")
# other names of the OHLCV columns (OKX: o, h, l, c, vol; Bybit: openPrice, ...), taken where the canonical
# name is absent; any other column (trades, quote volume, symbol) is left out and named in attrs["ignored"]
COLUMN_ALIASES = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume", "vol": "volume",
                  "openprice": "open", "highprice": "high", "lowprice": "low", "closeprice": "close"}
HEADERLESS_NCOLS = (6, 7)  # time, open, high, low, close, volume[, trades] (Kraken's OHLCVT)
FIRST_MARKET = pd.Timestamp("2009-01-03", tz="UTC")  # Bitcoin's genesis block: no bar is older


def _parse_canonical(text: str, name: str) -> _Raw:
    check_header(text, name)
    header = _read_csv(text, name, nrows=0).columns
    raw_ts = [c for c in header if c.strip().lower() in ("timestamp", *TIMESTAMP_ALIASES)]
    frame = _read_csv(text, name, dtype={c: str for c in raw_ts})
    return _parse_frame(frame, name)


def _parse_frame(frame: pd.DataFrame, name: str) -> _Raw:
    """Canonical columns (Parquet, canonical CSV, in-memory): timestamp + OHLCV under their names or the
    aliases above; other columns are left out, but a second timestamp or price column is refused."""
    frame = frame.rename(columns=lambda c: str(c).strip().lower())
    if frame.columns.duplicated().any():
        raise DataError(f"{name}: repeated column name(s); expected timestamp,{','.join(COLUMNS)}")
    aliases = [c for c in TIMESTAMP_ALIASES if c in frame.columns]
    if "timestamp" not in frame.columns and len(aliases) == 1:
        frame = frame.rename(columns={aliases[0]: "timestamp"})
    if "timestamp" not in frame.columns and isinstance(frame.index, pd.DatetimeIndex):
        frame = frame.rename_axis("timestamp").reset_index()
    renames = {a: c for a, c in COLUMN_ALIASES.items() if a in frame.columns and c not in frame.columns}
    for field in set(renames.values()):
        if len(twice := [a for a, c in renames.items() if c == field]) > 1:  # e.g. both v and vol
            raise DataError(f"{name}: columns {' and '.join(twice)} both name the {field}; keep one")
    frame = frame.rename(columns=renames)
    expected = ("timestamp", *COLUMNS)
    missing = [c for c in expected if c not in frame.columns]
    if missing:
        raise DataError(f"{name}: missing column(s) {', '.join(missing)}; expected {','.join(expected)}")
    ambiguous = [str(c) for c in frame.columns if c in (*TIMESTAMP_ALIASES, *COLUMN_ALIASES)]
    if ambiguous:
        raise DataError(f"{name}: column(s) {', '.join(ambiguous)} beside {','.join(expected)}: which one holds the "
                        "bars? keep one")
    _require_rows(frame, name)
    rows = np.arange(1, len(frame) + 1)
    ts = parse_timestamps(frame["timestamp"], name, rows)
    ignored = tuple(str(c) for c in frame.columns if c not in expected)
    return _Raw(ts, frame[list(COLUMNS)].reset_index(drop=True), rows, ignored)


def parse_timestamps(stamps: pd.Series, name: str, rows: np.ndarray | None = None) -> pd.DatetimeIndex:
    """A column of times as UTC: ISO 8601 (naive means UTC) or epoch s, ms or us (told apart per value);
    DataError naming the row (`rows`: each value's row number) of the first that is neither, or epoch before
    any crypto market. Every reader of user files takes its times from here."""
    rows = np.arange(1, len(stamps) + 1) if rows is None else rows
    epoch = stamps.dtype.kind in "iu" or bool(stamps.astype(str).str.fullmatch(r"\d+").all())  # epoch s, ms or us
    ts = (_parse_epoch if epoch else _parse_iso)(stamps, rows, name)
    if epoch and (early := ts < FIRST_MARKET).any():  # e.g. 202104042100 (YYYYMMDDhhmm) read as epoch ms: 1976
        pos = _first(np.asarray(early), rows)
        raise DataError(f"{name}: row {rows[pos]}: timestamp {stamps.iloc[pos]!r} read as epoch s/ms/us is "
                        f"{ts[pos]:%Y-%m-%d}, before any crypto market; give ISO 8601 or epoch timestamps")
    return ts


def _parse_headerless(text: str, name: str) -> _Raw:
    """time, open, high, low, close, volume[, trades] without a header row (Kraken's OHLCVT export)."""
    frame = _read_csv(text, name, header=None, dtype={0: str})
    frame.columns = ["timestamp", *COLUMNS, "trades"][:frame.shape[1]]
    return _parse_frame(frame, name)


def _parse_binance(text: str, name: str, *, has_header: bool) -> _Raw:
    frame = _read_csv(text, name, header=None, skiprows=int(has_header))
    if frame.shape[1] != _BINANCE_NCOLS:
        raise DataError(f"{name}: Binance kline dump must have {_BINANCE_NCOLS} columns, found {frame.shape[1]}")
    _require_rows(frame, name)
    rows = np.arange(1, len(frame) + 1)
    values = frame.iloc[:, 1:6].set_axis(list(COLUMNS), axis=1)
    return _Raw(_parse_epoch(frame[0], rows, name), values, rows)


def _parse_cdd(text: str, name: str, *, skip: int) -> _Raw:
    frame = _read_csv(text, name, skiprows=skip)
    frame.columns = [str(c).strip() for c in frame.columns]
    lower = {c.lower(): c for c in frame.columns}
    unix = next((c for c in frame.columns if c.lower().startswith("unix")), None)
    missing = [c for c in ("unix", "symbol", *PRICES) if (unix if c == "unix" else lower.get(c)) is None]
    if missing:
        raise DataError(f"{name}: missing CryptoDataDownload column(s) {', '.join(missing)}; "
                        f"found {', '.join(frame.columns)}")
    _require_rows(frame, name)
    volume = _cdd_volume_column(frame, lower["symbol"], name)
    values = frame[[lower[c] for c in PRICES] + [volume]].set_axis(list(COLUMNS), axis=1)
    # The format is newest-first by definition: reverse it, keeping each position's file row number.
    rows = np.arange(len(frame), 0, -1)
    ts = _parse_epoch(frame[unix], np.arange(1, len(frame) + 1), name)[::-1]
    return _Raw(ts, values.iloc[::-1].reset_index(drop=True), rows)


def _cdd_volume_column(frame: pd.DataFrame, symbol_col: str, name: str) -> str:
    """`Volume <BASE>`, BASE being the symbol's part before '/' (or the one volume column it starts with)."""
    volumes = {c[len("volume "):].strip().upper(): c for c in frame.columns if c.lower().startswith("volume ")}
    symbol = str(frame[symbol_col].iloc[0]).strip().upper()
    if "/" in symbol:
        candidates = [volumes.get(symbol.split("/")[0])]
    else:
        candidates = [col for base, col in volumes.items() if base and symbol.startswith(base)]
    if len(candidates) != 1 or candidates[0] is None:
        raise DataError(f"{name}: cannot tell the base-asset volume column for symbol {symbol!r} "
                        f"among columns {', '.join(frame.columns)}")
    return candidates[0]


def _require_rows(frame: pd.DataFrame, name: str) -> None:
    if frame.empty:
        raise DataError(f"{name}: empty file (no data rows)")


# ---------------------------------------------------------------- timestamps


def _parse_iso(values: pd.Series, rows: np.ndarray, name: str) -> pd.DatetimeIndex:
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values.dtype):
        ts = pd.DatetimeIndex(values)
        ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")  # naive means UTC
    else:
        ts = pd.DatetimeIndex(pd.to_datetime(values.astype(str), format="ISO8601", utc=True, errors="coerce"))
    _reject_unparsable(ts.isna(), values, rows, name)
    return ts.as_unit("ns")


def _parse_epoch(values: pd.Series, rows: np.ndarray, name: str) -> pd.DatetimeIndex:
    """Epoch seconds, milliseconds or microseconds, told apart per value by magnitude."""
    num = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(num) & (num > 0) & (num < 1e17) & (np.mod(num, 1) == 0)
    _reject_unparsable(~ok, values, rows, name)
    ints = values.astype("int64").to_numpy() if values.dtype.kind == "i" else num.astype("int64")
    scale = np.select([ints < 10**11, ints < 10**14], [10**9, 10**6], 10**3)
    return pd.DatetimeIndex(pd.to_datetime(ints * scale, unit="ns", utc=True)).as_unit("ns")


def _reject_unparsable(bad: np.ndarray, values: pd.Series, rows: np.ndarray, name: str) -> None:
    if bad.any():
        pos = _first(np.asarray(bad), rows)
        raise DataError(f"{name}: row {rows[pos]}: unparsable timestamp {values.iloc[pos]!r}")


# ---------------------------------------------------------------- validation


def _first(mask: np.ndarray, rows: np.ndarray) -> int:
    """Position of the earliest file row among those flagged."""
    idx = np.flatnonzero(mask)
    return int(idx[np.argmin(rows[idx])])


def _fmt(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def _fail(name: str, raw: _Raw, pos: int, message: str) -> DataError:
    return DataError(f"{name}: row {raw.rows[pos]} ({_fmt(raw.ts[pos])}): {message}")


def _validate(raw: _Raw, name: str, *, sort: bool, freq: str | pd.Timedelta | None) -> pd.DataFrame:
    arr = _numeric(raw, name)
    _check_values(raw, arr, name)
    raw, arr = _check_order(raw, arr, name, sort=sort)
    interval = _check_grid(raw, name, freq)
    index = pd.DatetimeIndex(raw.ts, name="timestamp")
    frame = pd.DataFrame(arr, index=index, columns=list(COLUMNS))
    frame.attrs.update(source=name, freq=interval, gaps=gap_report(index, interval), ignored=raw.ignored)
    return frame


def _numeric(raw: _Raw, name: str) -> np.ndarray:
    """OHLCV as an (n, 5) float64 array; text that is not a number is an error (empty cells become NaN)."""
    out = np.empty((len(raw.rows), len(COLUMNS)))
    for j, col in enumerate(COLUMNS):
        series = raw.values[col]
        if pd.api.types.is_bool_dtype(series.dtype):  # True / False: numeric to pandas, no price or volume
            raise _fail(name, raw, 0, f"non-numeric {col} {str(series.iloc[0])!r}")
        if pd.api.types.is_numeric_dtype(series.dtype):
            out[:, j] = series.to_numpy(dtype=float, na_value=np.nan)
            continue
        num = pd.to_numeric(series, errors="coerce")
        bad = (num.isna() & series.notna()).to_numpy()
        if bad.any():
            pos = _first(bad, raw.rows)
            raise _fail(name, raw, pos, f"non-numeric {col} {series.iloc[pos]!r}")
        out[:, j] = num.to_numpy(dtype=float, na_value=np.nan)
    return out


def _check_values(raw: _Raw, arr: np.ndarray, name: str) -> None:
    o, h, lo, c, v = arr.T
    checks = [
        (~np.isfinite(arr), "non-finite {col} {val}"),
        (arr[:, :4] <= 0, "non-positive {col} {val}"),
    ]
    for mask2d, template in checks:
        rows_bad = mask2d.any(axis=1)
        if rows_bad.any():
            pos = _first(rows_bad, raw.rows)
            j = int(np.argmax(mask2d[pos]))
            raise _fail(name, raw, pos, template.format(col=COLUMNS[j], val=arr[pos, j]))
    if (bad := h < lo).any():
        pos = _first(bad, raw.rows)
        raise _fail(name, raw, pos, f"high {h[pos]} < low {lo[pos]}")
    if (bad := (o < lo) | (o > h) | (c < lo) | (c > h)).any():
        pos = _first(bad, raw.rows)
        raise _fail(name, raw, pos, f"open {o[pos]} or close {c[pos]} outside [low {lo[pos]}, high {h[pos]}]")
    if (bad := v < 0).any():
        pos = _first(bad, raw.rows)
        raise _fail(name, raw, pos, f"negative volume {v[pos]}")


def _check_order(raw: _Raw, arr: np.ndarray, name: str, *, sort: bool) -> tuple[_Raw, np.ndarray]:
    ns = raw.ts.asi8
    order = np.lexsort((raw.rows, ns))  # by time, then file row: a later duplicate follows its original
    dup = np.zeros(len(ns), dtype=bool)
    dup[order[1:]] = ns[order[1:]] == ns[order[:-1]]
    if dup.any():
        pos = _first(dup, raw.rows)
        original = raw.rows[ns == ns[pos]].min()
        raise _fail(name, raw, pos, f"duplicate timestamp (same as row {original})")
    back = np.zeros(len(ns), dtype=bool)
    back[1:] = ns[1:] < ns[:-1]
    if not back.any():
        return raw, arr
    if not sort and not back[1:].all():  # a file newest-first throughout (an export's order) is read reversed
        pos = _first(back, raw.rows)
        raise _fail(name, raw, pos, f"timestamps not ascending: out of order next to row {raw.rows[pos - 1]} "
                                    f"({_fmt(raw.ts[pos - 1])}); sort the file by timestamp "
                                    "(in Python: load_bars(..., sort=True))")
    return _Raw(raw.ts[order], raw.values.iloc[order], raw.rows[order], raw.ignored), arr[order]


def _majority_interval(ns: np.ndarray, diffs: np.ndarray) -> pd.Timedelta:
    """The bar interval: the coarsest common spacing whose grid holds most rows on one phase, else the
    most common spacing. Rows at a finer spacing inside a coarser file (15m rows among 1h bars) make more
    short spacings than they are rows; counting rows on the grid tells the file's own interval."""
    values, counts = np.unique(diffs, return_counts=True)
    common = values[np.argsort(counts)[::-1][:6]]
    base = int(common[0])
    for interval in sorted((int(v) for v in common if v > base and v % base == 0), reverse=True):
        _, on_phase = np.unique(ns % interval, return_counts=True)
        ranked = np.sort(on_phase)[::-1]
        second = ranked[1] if len(ranked) > 1 else 0
        if ranked[0] > len(ns) / 2 and second <= ranked[0] / 2:  # a majority, not one of several phases
            return pd.Timedelta(interval, unit="ns")
    return pd.Timedelta(base, unit="ns")


def _check_grid(raw: _Raw, name: str, freq: str | pd.Timedelta | None) -> pd.Timedelta:
    """The bar interval (given, or the file's majority interval, see `_majority_interval`); every spacing
    must be a whole multiple of it, else the first row off the grid is named."""
    diffs = np.diff(raw.ts.asi8)
    if freq is not None:
        interval = _parse_freq(freq, name)
    elif len(diffs):
        interval = _majority_interval(raw.ts.asi8, diffs)
    else:
        raise DataError(f"{name}: a single row cannot show the bar interval; a bar file needs at least two bars")
    off = np.zeros(len(raw.rows), dtype=bool)
    off[1:] = diffs % interval.value != 0
    if off.any():
        pos = _first(off, raw.rows)
        raise _fail(name, raw, pos, f"off the {_fmt_td(interval)} bar grid: "
                                    f"{_fmt_td(pd.Timedelta(int(diffs[pos - 1]), unit='ns'))} after the previous bar")
    return interval


def _parse_freq(freq: str | pd.Timedelta, name: str) -> pd.Timedelta:
    try:
        interval = pd.Timedelta(freq)
    except ValueError:
        raise DataError(f"{name}: bad freq {freq!r}") from None
    if interval <= pd.Timedelta(0):
        raise DataError(f"{name}: freq must be positive, got {freq!r}")
    return interval


def _fmt_td(td: pd.Timedelta) -> str:
    seconds = int(td.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return str(td)


def gap_report(index: pd.DatetimeIndex, interval: pd.Timedelta) -> GapReport:
    """Gaps in an ascending index on a grid of `interval`."""
    missing = np.diff(index.asi8) // interval.value - 1
    gaps = np.flatnonzero(missing > 0)
    if not gaps.size:
        return GapReport(0, 0, 0, None)
    biggest = gaps[np.argmax(missing[gaps])]
    return GapReport(int(gaps.size), int(missing[gaps].sum()), int(missing[biggest]), index[biggest])
