"""The option-chain and DVOL loaders' refusal rules: rows at expiry, a leg twice in a snapshot, snapshots out
of order, non-positive underlying prices and negative quotes; repeated DVOL stamps, daily over hourly."""
import gzip

import pytest

from volmargin.data.options import load_chain, load_dvol, load_dvols
from volmargin.errors import DataError

CHAIN_2022_01 = "options/deribit_btc_options_eod_202201.csv.gz"


def _lines(shared_data) -> list[str]:
    return gzip.decompress((shared_data / CHAIN_2022_01).read_bytes()).decode().splitlines()[:6]


def _write(tmp_path, lines):
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_row_expiring_at_its_snapshot_is_refused(tmp_path, shared_data):
    lines = _lines(shared_data)
    fields = lines[3].split(",")
    fields[2] = fields[0]  # expiry == snapshot time: no time left, days = 0
    with pytest.raises(DataError, match="row 3: expiry is not after the snapshot timestamp"):
        load_chain(_write(tmp_path, [*lines[:3], ",".join(fields), *lines[4:]]))


def test_a_leg_twice_in_one_snapshot_is_refused(tmp_path, shared_data):
    lines = _lines(shared_data)
    with pytest.raises(DataError, match="row 6: instrument BTC-1JAN22-41000-C appears twice in one snapshot"):
        load_chain(_write(tmp_path, [*lines, lines[5]]))


def test_snapshots_out_of_time_order_are_refused(tmp_path, shared_data):
    lines = _lines(shared_data)
    later = [line.replace("2022-01-01T05:00:46Z", "2022-01-01T06:00:00Z", 1) for line in lines[1:3]]
    with pytest.raises(DataError, match="row 3: timestamps are not in ascending order"):
        load_chain(_write(tmp_path, [lines[0], *later, *lines[3:]]))


def test_a_repeated_dvol_timestamp_is_refused(tmp_path):
    path = tmp_path / "deribit_btc_dvol_1h.csv"
    path.write_text("timestamp,close\n2021-03-24T00:00:00Z,80\n2021-03-24T00:00:00Z,81\n")
    with pytest.raises(DataError, match="row 2: timestamps are not strictly ascending"):
        load_dvol(path)


def test_a_daily_dvol_file_wins_over_an_hourly_one_in_either_order(tmp_path):
    daily = tmp_path / "deribit_btc_dvol_1d.csv"
    daily.write_text("timestamp,open,high,low,close\n2021-03-24T00:00:00Z,80,82,79,81\n2021-03-25T00:00:00Z,81,83,80,82\n")
    hourly = tmp_path / "deribit_btc_dvol_1h.csv"
    hourly.write_text("timestamp,close\n2021-03-24T00:00:00Z,80\n2021-03-24T01:00:00Z,81\n")
    for paths in ([daily, hourly], [hourly, daily], tmp_path):
        assert "open" in load_dvols(paths)["btc"].columns


@pytest.mark.parametrize("column, value, match", [
    (10, "-46705.97", r"underlying_price -46705.97 must be > 0"),
    (10, "0", r"underlying_price 0.0 must be > 0"),
    (7, "-0.0005", r"ask_price -0.0005 must be >= 0"),
    (12, "-7.2", r"open_interest -7.2 must be >= 0")])
def test_non_positive_underlying_and_negative_quotes_are_refused(tmp_path, shared_data, column, value, match):
    lines = _lines(shared_data)
    fields = lines[4].split(",")  # row 4: BTC-1JAN22-40000-P, ask 0.0005, open interest 7.2
    fields[column] = value
    with pytest.raises(DataError, match=rf"row 4: {match}"):
        load_chain(_write(tmp_path, [*lines[:4], ",".join(fields), *lines[5:]]))


# session 28's mutation audit: a negative bid and a zero strike with a consistent name were accepted by a
# change to the checks that no test caught
@pytest.mark.parametrize("column, value, match", [
    (6, "-0.0005", r"bid_price -0.0005 must be >= 0"),
    ((1, 3), ("BTC-1JAN22-0-P", "0"), r"strike 0.0 must be > 0")])
def test_a_negative_bid_and_a_zero_strike_are_refused(tmp_path, shared_data, column, value, match):
    import gzip
    lines = gzip.decompress((shared_data / "options/deribit_btc_options_eod_202201.csv.gz").read_bytes()).decode()
    lines = lines.splitlines()[:6]
    fields = lines[4].split(",")
    for c, v in zip(*((column, value) if isinstance(column, tuple) else ((column,), (value,)))):
        fields[c] = v
    path = tmp_path / "bad.csv"
    path.write_text("\n".join([*lines[:4], ",".join(fields), *lines[5:]]) + "\n")
    with pytest.raises(DataError, match=rf"row 4: {match}"):
        load_chain(path)


def test_a_column_named_twice_in_any_case_is_one_line(tmp_path, shared_data):
    """Session 30's red team: a chain with mark_iv and Mark_IV ended in an AttributeError (an internal error)."""
    lines = _lines(shared_data)
    header = lines[0].split(",")
    twice = [lines[0] + "," + header[header.index("mark_iv")].upper()] + [line + ",0.5" for line in lines[1:]]
    with pytest.raises(DataError, match=r"column 'mark_iv' appears more than once in the header"):
        load_chain(_write(tmp_path, twice))
