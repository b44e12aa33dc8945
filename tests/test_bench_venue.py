"""`bench/bundle_venue.py --volume-scale`: the perpetuals' copies with every volume scaled, nothing else changed."""

from __future__ import annotations

import pandas as pd
from bench_modules import bench_modules


def test_scaled_copies_multiply_only_the_volume_and_keep_the_file_names(tmp_path):
    bars = pd.DataFrame({"timestamp": ["2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z"], "open": [10.0, 11.0],
                         "high": [12.0, 12.5], "low": [9.5, 10.5], "close": [11.0, 12.0], "volume": [3.0, 0.5]})
    source = tmp_path / "src"
    source.mkdir()
    path = source / "binance_xusdt_perp_1h.csv.gz"
    bars.to_csv(path, index=False)
    copies = tmp_path / "copies"
    copies.mkdir()
    with bench_modules("bundle_venue") as (venue,):
        assert venue.scaled_copies([str(path)], 1.0, copies) == [str(path)]  # the originals, nothing written
        assert not list(copies.iterdir())
        [scaled] = venue.scaled_copies([str(path)], 0.01, copies)
    assert scaled == str(copies / path.name)
    read = pd.read_csv(scaled)
    pd.testing.assert_series_equal(read["volume"], bars["volume"] * 0.01)
    pd.testing.assert_frame_equal(read.drop(columns="volume"), bars.drop(columns="volume"))


def test_resampled_copies_aggregate_hourly_bars_to_the_interval(tmp_path):
    index = pd.date_range("2024-01-01", periods=8, freq="h", tz="UTC")
    bars = pd.DataFrame({"timestamp": index.strftime("%Y-%m-%dT%H:%M:%SZ"), "open": [1.0, 2, 3, 4, 5, 6, 7, 8],
                         "high": [2.0, 5, 4, 5, 9, 7, 8, 9], "low": [0.5, 1, 2, 3, 4, 1, 6, 7],
                         "close": [2.0, 3, 4, 5, 6, 7, 8, 9], "volume": [1.0] * 8})
    path = tmp_path / "x_1h.csv"
    bars.to_csv(path, index=False)
    (tmp_path / "out").mkdir()
    with bench_modules("bundle_venue") as (venue,):
        [coarse] = venue.resampled_copies([str(path)], "4h", tmp_path / "out")
    read = pd.read_csv(coarse)
    assert read["timestamp"].tolist() == ["2024-01-01T00:00:00Z", "2024-01-01T04:00:00Z"]
    assert read[["open", "high", "low", "close", "volume"]].values.tolist() == [[1, 5, 0.5, 5, 4], [5, 9, 1, 9, 4]]
