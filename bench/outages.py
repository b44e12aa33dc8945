"""Exchange outages on crash days: does a day cut short lower the served margin? Prints the counts.

    .venv/bin/python bench/outages.py [--bundle BUNDLE] [--next 0]

BUNDLE: a bundle with its calibration set beside it (BUNDLE.calibration.json); by default the newest one the
main job (`volmargin run --config training/configs/crypto-hourly.yaml`) exported under models/.

For BTC, ETH, SOL, XRP and DOGE (hourly spot files of ../shared/data), on each asset's 15 largest daily
moves from 2025-01-02, a random 6-hour hole is cut in the day's hourly bars (18 of 24 left: an incomplete
day) and the served margin of the last 150 daily rows up to that day (the bundle's `history_days` and 30
more where that is longer; `--next N`: up to N days later, the hole N rows back) is compared with the margin
of the true rows, each from a fresh runtime (no memory, no `previous`) with the bundle's calibration set.
About a minute. `--time`: also the p50 wall time of `Runtime.margins` on the cut rows (an incomplete day in
the window: priced under two readings, and the fail-safe readings where doubtful) against the true rows, one
warm runtime each, 30 calls per case.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import hourly_spot_files, rows_to_send  # noqa: E402

ASSETS = ("btcusdt", "ethusdt", "solusdt", "xrpusdt", "dogeusdt")
HOLE_HOURS, MOVES = 6, 15


def daily_arrays(bars: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    from volmargin.features.learned import INPUT_COLUMNS, daily_inputs
    from volmargin.features.realized import daily_measures

    daily = daily_measures(bars, 20)
    columns = daily_inputs(daily)
    return (np.column_stack([np.asarray(columns[c], float) for c in INPUT_COLUMNS]),
            daily.index.tz_convert(None).to_numpy().astype("datetime64[D]"))


def newest_main_job_bundle(parser: argparse.ArgumentParser) -> str:
    """The newest models/volmargin-crypto-*/N with a calibration set (the main job exports its champion so)."""
    found = sorted(Path("models").glob("volmargin-crypto-*/*.calibration.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        parser.error("no bundle of the main job under models/: run `volmargin run --config "
                     "training/configs/crypto-hourly.yaml` first, or pass --bundle")
    return str(found[-1]).removesuffix(".calibration.json")


def main() -> None:
    import volmargin_serving as vs
    from volmargin.data import load_panel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", help="default: the main job's newest bundle under models/")
    parser.add_argument("--next", type=int, default=0, help="price N days after the outage")
    parser.add_argument("--time", action="store_true", help="also time the margins of the cut and the true rows")
    args = parser.parse_args()
    args.bundle = args.bundle or newest_main_job_bundle(parser)
    calibration = f"{args.bundle}.calibration.json"
    rng = np.random.default_rng(5)
    rows_sent = rows_to_send(args.bundle)
    bars = load_panel([f for f in hourly_spot_files() if any(f"binance_{a}_1h" in f.name for a in ASSETS)])
    ratios, timings = [], []
    for asset, asset_bars in bars.items():
        rows, dates = daily_arrays(asset_bars)
        candidates = np.arange(np.searchsorted(dates, np.datetime64("2025-01-02")), len(rows) - args.next)
        for moved in candidates[np.argsort(-np.abs(rows[candidates, 0]))[:MOVES]]:
            day = pd.Timestamp(dates[moved]).tz_localize("UTC")
            start = day + pd.Timedelta(hours=int(rng.integers(0, 24 - HOLE_HOURS + 1)))
            hole = (asset_bars.index >= start) & (asset_bars.index < start + pd.Timedelta(hours=HOLE_HOURS))
            kept = asset_bars[~hole]
            kept.attrs.update(asset_bars.attrs)
            end = moved + args.next
            last_bar = pd.Timestamp(dates[end]).tz_localize("UTC") + pd.Timedelta(hours=23)
            cut, cut_dates = daily_arrays(kept.loc[:last_bar])
            true = vs.load(args.bundle, calibration=calibration).margins(
                [asset], [rows[end - rows_sent + 1:end + 1]], [dates[end - rows_sent + 1:end + 1]], as_of=dates[end])
            served = vs.load(args.bundle, calibration=calibration).margins(
                [asset], [cut[-rows_sent:]], [cut_dates[-rows_sent:]], as_of=dates[end])
            ratios.append((asset, float((served.initial / true.initial).min())))
            if args.time:
                timings.append([p50_seconds(vs.load(args.bundle, calibration=calibration), asset, r[-rows_sent:],
                                            d[-rows_sent:], dates[end])
                                for r, d in ((cut, cut_dates), (rows[:end + 1], dates[:end + 1]))])
    table = pd.DataFrame(ratios, columns=["asset", "ratio"])
    lowered = table[table["ratio"] < 1 - 1e-12]
    print(table.groupby("asset")["ratio"].agg(["count", "min", "median"]).round(3).to_string())
    print(f"{HOLE_HOURS}-hour outages on the {MOVES} largest moves since 2025 (priced {args.next} days later): "
          f"{len(lowered)} of {len(table)} margins below the true rows' "
          f"(worst {1 - table['ratio'].min():.1%} lower)" if len(lowered) else
          f"{HOLE_HOURS}-hour outages: 0 of {len(table)} margins below the true rows'")
    if timings:
        cut_time, true_time = np.median(timings, axis=0) * 1e3
        print(f"Runtime.margins, one asset, p50 over the cases: {cut_time:.2f} ms with the outage in the window, "
              f"{true_time:.2f} ms on the true rows ({cut_time / true_time:.1f}x)")


def p50_seconds(runtime, asset: str, rows: np.ndarray, dates: np.ndarray, as_of, calls: int = 30) -> float:
    runtime.margins([asset], [rows], [dates], as_of=as_of)  # warm
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        runtime.margins([asset], [rows], [dates], as_of=as_of)
        times.append(time.perf_counter() - began)
    return float(np.median(times))


if __name__ == "__main__":
    main()
