"""Shared helpers for benchmarks: where the real data lives and which files are hourly spot."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    folder = Path(os.environ.get("VOLMARGIN_SHARED_DATA", REPO.parent / "shared" / "data"))
    if not folder.is_dir():
        sys.exit(f"benchmark needs the real data folder {folder} (set VOLMARGIN_SHARED_DATA)")
    return folder


def hourly_spot_files(folder: Path | None = None) -> list[Path]:
    """Every hourly spot file: perpetuals are left out (the benchmarks are on spot markets)."""
    folder = folder or shared_data_dir()
    return sorted(p for p in folder.glob("*_1h.csv.gz") if "_perp_" not in p.name)


def percentiles(call, calls: int, warmup: int = 500, clock=time.perf_counter_ns) -> tuple[float, float]:
    """p50 and p99 of one call in microseconds, after `warmup` untimed calls (serving benchmarks)."""
    import numpy as np

    for _ in range(warmup):
        call()
    times = np.empty(calls)
    for i in range(calls):
        began = clock()
        call()
        times[i] = clock() - began
    return float(np.percentile(times, 50)) / 1e3, float(np.percentile(times, 99)) / 1e3


def rows_to_send(bundle) -> int:
    """The daily rows a bench sends a bundle per asset: 150, or its `history_days` and 30 more where longer
    (a 152-day bundle sent 150 rows refuses them all, and every margin is fail-safe)."""
    import volmargin_serving as vs

    return max(150, vs.load(bundle).history_days + 30)
