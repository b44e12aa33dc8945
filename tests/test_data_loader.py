"""The OHLCV loader: formats, validation errors (one per rule), gaps, sorting, asset names and panels."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from volmargin.data import GapReport, asset_name, load_bars, load_panel
from volmargin.data.loader import name_interval
from volmargin.errors import DataError

HEADER = "timestamp,open,high,low,close,volume"
START = pd.Timestamp("2021-05-19T00:00:00Z")
HOUR_MS = 3_600_000


def bars(n: int = 5, step: str = "1h") -> list[list]:
    """Valid canonical rows: [iso timestamp, open, high, low, close, volume]."""
    times = pd.date_range(START, periods=n, freq=step)
    return [[t.strftime("%Y-%m-%dT%H:%M:%SZ"), 100.0 + i, 102.0 + i, 99.0 + i, 101.0 + i, 10.0 + i]
            for i, t in enumerate(times)]


def csv_text(rows: list[list], header: str = HEADER) -> str:
    return "\n".join([header, *(",".join(str(x) for x in row) for row in rows)]) + "\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def epoch_rows(rows: list[list], scale: int) -> list[list]:
    """Canonical rows with timestamps as epoch milliseconds * scale."""
    return [[int(pd.Timestamp(r[0]).value // 1_000_000) * scale, *r[1:]] for r in rows]


def binance_text(rows: list[list], scale: int = 1) -> str:
    lines = []
    for open_ms, o, h, lo, c, v in epoch_rows(rows, scale):
        close_time = open_ms + (HOUR_MS - 1) * scale
        lines.append(f"{open_ms},{o},{h},{lo},{c},{v},{close_time},{v * c},42,{v / 2},{v * c / 2},0")
    return "\n".join(lines) + "\n"


def cdd_text(rows: list[list], unit_ms: bool = False, symbol: str = "BTC/USD") -> str:
    """CryptoDataDownload export of the rows: URL line, header, newest first."""
    lines = ["https://www.CryptoDataDownload.com",
             "unix,date,symbol,open,high,low,close,Volume BTC,Volume USD,tradecount"]
    for r in reversed(rows):
        t = pd.Timestamp(r[0])
        unix = t.value // (1_000_000 if unit_ms else 1_000_000_000)
        lines.append(f"{unix},{t:%Y-%m-%d %H:%M:%S},{symbol},{r[1]},{r[2]},{r[3]},{r[4]},{r[5]},{r[5] * r[4]},7")
    return "\n".join(lines) + "\n"


def expected_frame(n: int = 5) -> pd.DataFrame:
    rows = bars(n)
    index = pd.DatetimeIndex([pd.Timestamp(r[0]) for r in rows], name="timestamp").as_unit("ns")
    return pd.DataFrame([r[1:] for r in rows], index=index, columns=["open", "high", "low", "close", "volume"])


def check_frame(frame: pd.DataFrame, path: Path, n: int = 5) -> None:
    pd.testing.assert_frame_equal(frame, expected_frame(n))
    assert str(frame.index.tz) == "UTC"
    assert frame.attrs["source"] == str(path)
    assert frame.attrs["freq"] == pd.Timedelta("1h")
    assert frame.attrs["gaps"] == GapReport(0, 0, 0, None)


# ---------------------------------------------------------------- formats


def test_canonical_csv(tmp_path):
    path = write(tmp_path / "x_1h.csv", csv_text(bars()))
    check_frame(load_bars(path), path)


def test_canonical_csv_gz(tmp_path):
    path = tmp_path / "x_1h.csv.gz"
    path.write_bytes(gzip.compress(csv_text(bars()).encode()))
    check_frame(load_bars(path), path)


@pytest.mark.parametrize("layout", ["column", "utc_index", "naive_index"])
def test_parquet(tmp_path, layout):
    frame = expected_frame()
    if layout == "column":
        frame = frame.reset_index()
    elif layout == "naive_index":
        frame.index = frame.index.tz_localize(None)
    path = tmp_path / "x.parquet"
    frame.to_parquet(path)
    check_frame(load_bars(path), path)


@pytest.mark.parametrize("scale", [1, 1000], ids=["ms", "us"])
def test_binance_dump(tmp_path, scale):
    path = write(tmp_path / "BTCUSDT-1h-2025-01.csv", binance_text(bars(), scale))
    check_frame(load_bars(path), path)


def test_binance_dump_switching_from_ms_to_us(tmp_path):
    rows = bars(4)
    text = binance_text(rows[:2]) + binance_text(rows[2:], 1000)
    path = write(tmp_path / "joined.csv", text)
    check_frame(load_bars(path), path, n=4)


@pytest.mark.parametrize("unit_ms", [False, True], ids=["seconds", "ms"])
def test_cryptodatadownload(tmp_path, unit_ms):
    path = write(tmp_path / "Bitstamp_BTCUSD_1h.csv", cdd_text(bars(), unit_ms))
    check_frame(load_bars(path), path)


def test_cryptodatadownload_symbol_without_slash(tmp_path):
    text = cdd_text(bars(), symbol="BTCUSD")
    path = write(tmp_path / "cdd.csv", text.replace("Volume USD", "Volume USDT"))
    check_frame(load_bars(path), path)


def test_format_is_recognised_by_content_not_name(tmp_path):
    path = tmp_path / "misnamed.parquet"
    path.write_bytes(gzip.compress(binance_text(bars()).encode()))
    check_frame(load_bars(path), path)


# ---------------------------------------------------------------- validation: one test per rule


def with_cell(row: int, col: int, value) -> list[list]:
    """Valid bars with one cell (1-based data row, column index in the canonical row) replaced."""
    rows = bars()
    rows[row - 1][col] = value
    return rows


def ts(row: int) -> str:
    return bars()[row - 1][0]


BAD_ROWS = {
    "unparsable timestamp": (with_cell(2, 0, "2021-13-45T00:00:00Z"), "row 2: unparsable timestamp '2021-13-45T00:00:00Z'"),
    "duplicate timestamp": (with_cell(4, 0, ts(3)), f"row 4 ({ts(3)}): duplicate timestamp (same as row 3)"),
    "unsorted": ([bars()[i] for i in (0, 2, 1, 3, 4)], f"row 3 ({ts(2)}): timestamps not ascending"),
    "non-positive price": (with_cell(3, 4, 0), f"row 3 ({ts(3)}): non-positive close 0.0"),
    "non-finite price": (with_cell(2, 1, "inf"), f"row 2 ({ts(2)}): non-finite open inf"),
    "non-finite volume": (with_cell(5, 5, ""), f"row 5 ({ts(5)}): non-finite volume nan"),
    "non-numeric text": (with_cell(4, 2, "abc"), f"row 4 ({ts(4)}): non-numeric high 'abc'"),
    "high below low": (with_cell(2, 2, 98.0), f"row 2 ({ts(2)}): high 98.0 < low 100.0"),
    "open outside range": (with_cell(3, 1, 110.0), f"row 3 ({ts(3)}): open 110.0 or close 103.0 outside"),
    "negative volume": (with_cell(4, 5, -1.0), f"row 4 ({ts(4)}): negative volume -1.0"),
    "off the grid": (with_cell(4, 0, "2021-05-19T03:30:00Z"),
                     "row 4 (2021-05-19T03:30:00Z): off the 1h bar grid: 90min after the previous bar"),
}


@pytest.mark.parametrize("rule", BAD_ROWS)
def test_row_errors_name_file_row_and_timestamp(tmp_path, rule):
    rows, message = BAD_ROWS[rule]
    path = write(tmp_path / "bad.csv", csv_text(rows))
    with pytest.raises(DataError) as info:
        load_bars(path)
    assert str(info.value).startswith(f"{path}: {message}")
    assert "\n" not in str(info.value)


BAD_FILES = {
    "empty file": ("", "empty file (no data rows)"),
    "header only": (HEADER + "\n", "empty file (no data rows)"),
    "missing column": (csv_text([r[:5] for r in bars()], HEADER.removesuffix(",volume")), "missing column(s) volume"),
    "a second price column": (csv_text([[*r, r[4]] for r in bars()], HEADER + ",c"),
                              "column(s) c beside timestamp,open,high,low,close,volume: which one holds the bars"),
    "two volume aliases": (csv_text([[*r, r[5]] for r in bars()], HEADER.replace("volume", "v") + ",vol"),
                           "columns v and vol both name the volume; keep one"),
    "binance column count": ("\n".join(line.rsplit(",", 1)[0] for line in binance_text(bars()).splitlines()),
                             "a file without a header row must have 12 columns (a Binance kline dump) or 6 or 7 "
                             "(time, open, high, low, close, volume, then trades or not), found 11"),
    "cdd volume unresolved": (cdd_text(bars(), symbol="ETH/USD"), "cannot tell the base-asset volume column"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_file_errors_name_file(tmp_path, case):
    text, message = BAD_FILES[case]
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(DataError, match=f"^{path}: {message}".replace("(", r"\(").replace(")", r"\)")):
        load_bars(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=f"^{path}: file not found$"):
        load_bars(path)


def test_other_columns_are_left_out_and_named(tmp_path):
    path = tmp_path / "x.parquet"
    expected_frame().assign(vwap=1.0).to_parquet(path)
    assert load_bars(path).attrs["ignored"] == ("vwap",)
    text = write(tmp_path / "t.csv", csv_text([[*r, 3, "ETH/USDT"] for r in bars()], HEADER + ",trades,symbol"))
    loaded = load_bars(text)
    check_frame(loaded, text)
    assert loaded.attrs["ignored"] == ("trades", "symbol")


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b"\x1f\x8b" + b"junk" * 50, b"PAR1" + b"junk" * 50],
                         ids=["binary", "bad-gzip", "bad-parquet"])
def test_unreadable_file(tmp_path, content):
    path = tmp_path / "x.csv.gz"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"^{path}: unreadable"):
        load_bars(path)


def test_cdd_rows_are_counted_in_file_order(tmp_path):
    rows = with_cell(2, 2, 98.0)  # oldest-but-one bar, i.e. the 4th data row of the newest-first file
    path = write(tmp_path / "cdd.csv", cdd_text(rows))
    with pytest.raises(DataError, match=f"row 4 \\({ts(2)}\\): high 98.0 < low 100.0"):
        load_bars(path)


def test_cdd_must_be_strictly_newest_first(tmp_path):
    lines = cdd_text(bars()).splitlines()
    lines[3], lines[4] = lines[4], lines[3]
    path = write(tmp_path / "cdd.csv", "\n".join(lines))
    with pytest.raises(DataError, match="timestamps not ascending"):
        load_bars(path)
    check_frame(load_bars(path, sort=True), path)


# ---------------------------------------------------------------- sort, freq, gaps


def test_sort_true_sorts_but_still_rejects_duplicates(tmp_path):
    rows = bars()
    path = write(tmp_path / "x.csv", csv_text([rows[i] for i in (4, 0, 3, 1, 2)]))
    check_frame(load_bars(path, sort=True), path)
    dup = write(tmp_path / "dup.csv", csv_text([rows[i] for i in (4, 0, 3, 1, 1)]))
    with pytest.raises(DataError, match="row 5 .*duplicate timestamp \\(same as row 4\\)"):
        load_bars(dup, sort=True)


def test_freq_given_overrides_inference(tmp_path):
    path = write(tmp_path / "x.csv", csv_text(bars(step="2h")))
    assert load_bars(path).attrs["freq"] == pd.Timedelta("2h")
    frame = load_bars(path, freq="1h")
    assert frame.attrs["freq"] == pd.Timedelta("1h")
    assert frame.attrs["gaps"].count == 4
    with pytest.raises(DataError, match="row 2 .*off the 3h bar grid"):
        load_bars(path, freq="3h")


def test_gap_report(tmp_path):
    rows = bars(20)
    kept = [r for i, r in enumerate(rows) if i not in {3, 7, 8, 9, 15}]  # gaps of 1, 3 and 1 bars
    path = write(tmp_path / "gaps.csv", csv_text(kept))
    gaps = load_bars(path).attrs["gaps"]
    assert gaps == GapReport(3, 5, 3, pd.Timestamp(rows[6][0]))
    assert str(gaps) == "3 gaps, 5 missing bars; largest 3 bars after 2021-05-19T06:00Z"
    assert str(GapReport(1, 1, 1, pd.Timestamp(rows[6][0]))) == "1 gap, 1 missing bar; largest 1 bar after 2021-05-19T06:00Z"
    assert str(GapReport(0, 0, 0, None)) == "no gaps"


def test_the_interval_a_file_name_declares_fixes_the_grid(tmp_path):
    """A 30-minute feed that lost every hh:30 bar looked like complete hourly bars (each high-low half its hour):
    margins 18% lower, unflagged. The name's token fixes the interval, so the lost bars are gaps (and their hours
    incomplete); a name declaring coarser bars than the rows hold names the first row off its grid; a name without
    a token, or a month, still infers the interval from the rows."""
    from volmargin.evaluation.backtest import daily_panel

    half_hours = bars(96, "30min")
    lossy = write(tmp_path / "venue_btcusdt_30m.csv", csv_text(half_hours[::2]))
    frame = load_bars(lossy)
    assert frame.attrs["freq"] == pd.Timedelta("30min") and frame.attrs["gaps"].missing_bars == 47
    assert not daily_panel({"venue": frame})["venue"]["complete"].any()
    untokened = load_bars(write(tmp_path / "venue.csv", csv_text(half_hours[::2])))
    assert daily_panel({"venue": untokened})["venue"]["complete"].all()  # what it was read as before
    with pytest.raises(DataError, match=r"btc_1h\.csv: row 2 .*off the 1h bar grid.*the 1h bars its name declares"):
        load_bars(write(tmp_path / "btc_1h.csv", csv_text(half_hours)))
    for name in ("btc.csv", "btc_1mo.csv"):
        assert load_bars(write(tmp_path / name, csv_text(half_hours[::2]))).attrs["freq"] == pd.Timedelta("1h")
    assert load_bars(lossy, freq="1h").attrs["freq"] == pd.Timedelta("1h")  # an explicit freq still rules


@pytest.mark.parametrize("name, interval", [
    ("BTCUSDT-30m-2024-01.csv", "30min"), ("btcusdt-30m.csv", "30min"), ("btcusdt_30m_2024.csv", "30min"),
    ("PAIR-30m.parquet", "30min"), ("btc_4H.csv", "4h"), ("eth_15min.csv.gz", "15min"), ("x_1w.csv", "7D"),
    ("BTCUSDT_1M.csv", None), ("btc_1mo.csv", None), ("binance_1inchusdt.csv", None), ("btc.csv", None),
])
def test_the_interval_tokens_real_file_names_carry(name, interval):
    """Binance's dumps put the interval between hyphens (1M there is a month, no fixed length)."""
    assert name_interval(name) == (None if interval is None else pd.Timedelta(interval))


@pytest.mark.parametrize("name", ["btc_0h.csv", "btc_99999999999d.csv", "btc_1000000000000000000s.csv"])
def test_a_name_declaring_no_possible_bar_is_one_line(name):
    with pytest.raises(DataError, match=rf"^{name}: its name declares bars of .*; a bar lasts more than 0"):
        name_interval(name)


# ---------------------------------------------------------------- asset names and panels


@pytest.mark.parametrize("name, asset", [
    ("binance_btcusdt_1h.csv.gz", "binance_btcusdt"),
    ("binance_btcusdt_perp_1h.csv.gz", "binance_btcusdt_perp"),
    ("bitstamp_btcusd_1d.csv", "bitstamp_btcusd"),
    ("ETH_15m.parquet", "eth"),
    ("BTCUSDT-1h-2024-01.csv", "btcusdt-1h-2024-01"),
    ("/some/dir/syn_a_4h.csv.gz", "syn_a"),
])
def test_asset_name(name, asset):
    assert asset_name(name) == asset


def make_panel_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "panel"
    folder.mkdir()
    write(folder / "zzz_1h.csv", csv_text(bars()))
    (folder / "aaa_1h.csv.gz").write_bytes(gzip.compress(csv_text(bars()).encode()))
    expected_frame().to_parquet(folder / "mmm_1h.parquet")
    write(folder / "notes.txt", "not data")
    return folder


def test_load_panel_directory(tmp_path):
    panel = load_panel(make_panel_dir(tmp_path))
    assert list(panel) == ["aaa", "mmm", "zzz"]
    for frame in panel.values():
        pd.testing.assert_frame_equal(frame, expected_frame())


def test_load_panel_glob_and_list(tmp_path):
    folder = make_panel_dir(tmp_path)
    assert list(load_panel(str(folder / "*.csv*"))) == ["aaa", "zzz"]
    assert list(load_panel([folder / "zzz_1h.csv", str(folder / "m*")])) == ["mmm", "zzz"]


def test_load_panel_same_asset_twice(tmp_path):
    folder = make_panel_dir(tmp_path)
    write(folder / "aaa_4h.csv", csv_text(bars(step="4h")))
    with pytest.raises(DataError, match="aaa_1h.csv.gz and .*aaa_4h.csv both give asset name 'aaa'"):
        load_panel(folder)


def test_load_panel_nothing_matched(tmp_path):
    with pytest.raises(DataError, match="nothing_\\*.csv: no files match this pattern"):
        load_panel(str(tmp_path / "nothing_*.csv"))


# ---------------------------------------------------------------- real data


def test_real_binance_btcusdt(shared_data):
    frame = load_bars(shared_data / "binance_btcusdt_1h.csv.gz")
    assert len(frame) == 73284
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert (frame.dtypes == np.float64).all()
    assert frame.index[0] == pd.Timestamp("2017-08-17T04:00:00Z")
    gaps = frame.attrs["gaps"]
    assert (gaps.count, gaps.missing_bars, gaps.largest) == (28, 128, 33)
    assert gaps.largest_after == pd.Timestamp("2018-02-08T00:00:00Z")


@pytest.mark.parametrize("header, rows", [
    (HEADER, lambda: list(reversed(bars()))),  # newest first throughout, as many exports are
    (HEADER.replace("timestamp", "time"), bars),
    (HEADER.replace("timestamp", "date"), bars),
    (HEADER, lambda: epoch_rows(bars(), 1)),  # epoch milliseconds
    (HEADER, lambda: [[r[0] // 1000, *r[1:]] for r in epoch_rows(bars(), 1)]),  # epoch seconds
    ("ts,o,h,l,c,vol,volCcy,volCcyQuote,confirm",  # OKX's candles, newest first
     lambda: [[*r, r[5] * r[4], r[5] * r[4], 1] for r in reversed(epoch_rows(bars(), 1))]),
    ("startTime,openPrice,highPrice,lowPrice,closePrice,volume,turnover",  # Bybit's kline export
     lambda: [[*r, r[5] * r[4]] for r in epoch_rows(bars(), 1)]),
    ("open_time,open,high,low,close,volume", lambda: epoch_rows(bars(), 1)),
    (None, lambda: [[r[0] // 1000, *r[1:], 42] for r in epoch_rows(bars(), 1)]),  # Kraken's OHLCVT, no header
], ids=["newest_first", "time", "date", "epoch_ms", "epoch_s", "okx", "bybit", "open_time", "kraken"])
def test_venue_exports_in_other_orders_and_stamps_read_as_canonical(tmp_path, header, rows):
    text = csv_text(rows(), header) if header else "\n".join(",".join(map(str, r)) for r in rows()) + "\n"
    path = write(tmp_path / "x.csv", text)
    check_frame(load_bars(path), path)


def test_stamps_that_are_not_epoch_or_a_second_stamp_column_are_refused(tmp_path):
    compact = write(tmp_path / "z.csv", csv_text([[r[0][:16].replace("-", "").replace("T", "").replace(":", ""), *r[1:]]
                                                  for r in bars()]))  # 202105190000: not epoch
    with pytest.raises(DataError, match="row 1: timestamp '202105190000' read as epoch .* before any crypto market"):
        load_bars(compact)
    two_names = write(tmp_path / "y.csv", csv_text([[*r, r[0]] for r in bars()], HEADER + ",date"))
    with pytest.raises(DataError, match="column\\(s\\) date beside"):  # a second stamp is not guessed away
        load_bars(two_names)


# ----------------------------------------------------------------------------- session 26's mutation audit
import volmargin.data.loader  # noqa: E402


@pytest.mark.parametrize("close", [110.0, 90.0], ids=["above_high", "below_low"])
def test_close_outside_the_bar_range_is_refused(tmp_path, close):
    path = write(tmp_path / "bad.csv", csv_text(with_cell(3, 4, close)))  # row 3: open 102, high 104, low 101
    with pytest.raises(DataError, match=rf"row 3 \({ts(3)}\): open 102.0 or close {close} outside"):
        load_bars(path)


def test_a_minority_of_coarser_rows_does_not_set_the_interval(tmp_path):
    """10 rows on the hour and 12 at :15/:30/:45: the 1h phase holds fewer than half the rows, so the file is
    15-minute bars with gaps, not hourly bars with rows off the grid."""
    hours = pd.date_range("2021-05-19", periods=10, freq="h", tz="UTC")
    quarters = [h + pd.Timedelta(minutes=m) for h in hours[:4] for m in (15, 30, 45)]
    stamps = sorted([*hours, *quarters])
    rows = [[t.strftime("%Y-%m-%dT%H:%M:%SZ"), 100.0, 102.0, 99.0, 101.0, 1.0] for t in stamps]
    frame = load_bars(write(tmp_path / "mixed.csv", csv_text(rows)))
    assert frame.attrs["freq"] == pd.Timedelta("15min") and len(frame) == 22


def test_a_gzip_bomb_is_refused_by_its_ratio(tmp_path, monkeypatch):
    monkeypatch.setattr(volmargin.data.loader, "MAX_RATIO", 2)  # a 2 MB limit for files under 1 MB: the rule, cheaply
    text = csv_text(bars()) + "#" * (3 << 20)
    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    with pytest.raises(DataError, match="decompression bomb"):
        load_bars(path)


# session 29's red team: numbers a CSV can hide

def test_an_unquoted_thousands_separator_is_refused_and_a_trailing_comma_is_not(tmp_path):
    """`5,053.49` unquoted made a row one field longer than the header; pandas dropped the extra field with a
    warning and the volume read as 5 (a model's variances x0.52-x1.71). A comma ending every row is an empty
    last field and still reads."""
    head = "timestamp,open,high,low,close,volume\n"
    stamps = [f"2022-01-01T{h:02d}:00:00Z" for h in range(3)]
    bad = tmp_path / "bad.csv"
    bad.write_text(head + "".join(f"{t},1,2,0.5,1.5,{v}\n" for t, v in zip(stamps, ["5,053.49", "943.8", "485.2"])))
    with pytest.raises(DataError, match="bad.csv: a row holds more fields than the header .*thousands separator"):
        load_bars(bad)
    trailing = tmp_path / "trailing.csv"
    trailing.write_text(head + "".join(f"{t},1,2,0.5,1.5,9.5,\n" for t in stamps))
    assert load_bars(trailing)["volume"].tolist() == [9.5] * 3


def test_true_or_false_is_not_a_volume(tmp_path):
    path = tmp_path / "bool.csv"
    path.write_text("timestamp,open,high,low,close,volume\n" + "".join(
        f"2022-01-01T{h:02d}:00:00Z,1,2,0.5,1.5,{b}\n" for h, b in enumerate(["True", "False", "True"])))
    with pytest.raises(DataError, match="bool.csv: row 1 .*non-numeric volume 'True'"):
        load_bars(path)


@pytest.mark.parametrize("text, match", [
    ("timestamp;open;high;low;close;volume\n2022-01-01T00:00:00Z;1;2;0.5;1.5;9\n", "separated by ';', not commas"),
    ("timestamp\topen\thigh\tlow\tclose\tvolume\n2022-01-01T00:00:00Z\t1\t2\t0.5\t1.5\t9\n", r"separated by '\\t'"),
    ("# exported by my desk\ntimestamp,open,high,low,close,volume\n2022-01-01T00:00:00Z,1,2,0.5,1.5,9\n",
     "a comment line above the header"),
])
def test_a_separator_or_a_comment_line_is_named_not_read_as_another_format(tmp_path, text, match):
    """Session 29's red team: these read as a CryptoDataDownload file and the error named its missing columns."""
    path = tmp_path / "bars.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        load_bars(path)


def test_a_one_bar_file_is_refused_without_naming_an_option_the_cli_lacks(tmp_path):
    path = write(tmp_path / "one.csv", csv_text(bars(n=1)))
    with pytest.raises(DataError, match=r"one.csv: a single row .*at least two bars") as error:
        load_bars(path)
    assert "freq" not in str(error.value)
    assert len(load_bars(path, freq="1h")) == 1


def test_a_column_named_twice_in_a_users_csv_is_refused(tmp_path):
    """Session 30's red team: an accounts file with `notional` twice was read with the first, in silence."""
    from volmargin.data.loader import read_csv_file

    path = write(tmp_path / "accounts.csv", "side,notional,leverage,Notional\nlong,1,2,3\n")
    with pytest.raises(DataError, match=r"accounts.csv: column 'notional' appears more than once"):
        read_csv_file(path)
    assert list(read_csv_file(write(tmp_path / "ok.csv", "side,notional\nlong,1\n")).columns) == ["side", "notional"]
    close_twice = csv_text([row + [row[4] * 2] for row in bars()], header=HEADER + ",close")
    with pytest.raises(DataError, match=r"x.csv: column 'close' appears more than once"):  # a bar file too
        load_bars(write(tmp_path / "x.csv", close_twice))
