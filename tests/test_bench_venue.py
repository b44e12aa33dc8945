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
