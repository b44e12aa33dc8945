"""Serving latency of the option portfolio margin: a 50-option book on the 27-cell grid plus the extended
table, one thread, numpy only.

    OMP_NUM_THREADS=1 python bench/options_serving.py [--calls 5000]

The book: 50 options drawn (seeded) from the first 2022-01 snapshot of ../shared/data/options/ across all
its strikes and expiries, quantities in -3..3; the smile of each expiry comes from the whole snapshot.
Timed per call with `time.perf_counter_ns` after a warm-up: `option_margin` on a prepared book (re-margined:
its per-option arrays and the grid's per-option shocks are cached in it), `prepare` + `option_margin` (the
same book with cold caches, as after new marks) and `book_from_positions` + `option_margin` (validation,
smile fit and margin from raw arrays), and, for information, `option_margin` on a 4% lattice grid of Deribit's
ranges keeping static's vol shocks beside its own (`Grid.keep_vol`: 45 core + 16 extended cells). Wall time
and, because a shared machine's other processes inflate it, this thread's CPU time (`time.thread_time_ns`,
1 us resolution on Linux).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from common import percentiles, shared_data_dir  # noqa: E402
from volmargin.data.options import load_chain  # noqa: E402
from volmargin_serving.options import (DERIBIT_BTC, DERIBIT_VOL, Grid, book_from_positions,  # noqa: E402
                                       option_margin, prepare)




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    chain = load_chain(shared_data_dir() / "options" / "deribit_btc_options_eod_202201.csv.gz")
    snap = chain[chain["timestamp"] == chain["timestamp"].iloc[0]]
    rng = np.random.default_rng(0)
    rows = snap.iloc[rng.choice(len(snap), 50, replace=False)]
    quantity = rng.choice([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0], 50)
    quotes = (snap["days"].to_numpy(), snap["strike"].to_numpy(), snap["underlying_price"].to_numpy(),
              snap["mark_iv"].to_numpy())
    positions = (quantity, rows["strike"].to_numpy(), rows["is_call"].to_numpy(), rows["days"].to_numpy(),
                 rows["underlying_price"].to_numpy(), rows["mark_iv"].to_numpy())
    book = book_from_positions(*positions, smile_quotes=quotes)
    margin = option_margin(book, DERIBIT_BTC)
    print(f"book: 50 options, {len(np.unique(book.days))} expiries, {len(margin.losses)} cells; "
          f"initial margin {margin.initial:,.0f} USD ({margin.fraction:.2%} of notional)")
    p50, p99 = percentiles(lambda: option_margin(book, DERIBIT_BTC), args.calls)
    print(f"option_margin (prepared book), wall:     p50 {p50:7.1f} us  p99 {p99:7.1f} us  (target p50 <= 200 us)")
    p50, p99 = percentiles(lambda: option_margin(book, DERIBIT_BTC), args.calls, clock=time.thread_time_ns)
    print(f"option_margin (prepared book), CPU time: p50 {p50:7.1f} us  p99 {p99:7.1f} us  (this thread only: "
          "robust to other processes on a shared machine)")
    p50, p99 = percentiles(lambda: option_margin(prepare(dataclasses.replace(book, cache=None))), args.calls)
    print(f"prepare + option_margin (cold caches):   p50 {p50:7.1f} us  p99 {p99:7.1f} us  (new market data, same "
          "positions and smile: today's values, per-option arrays and grid shocks recomputed)")
    p50, p99 = percentiles(lambda: option_margin(book_from_positions(*positions, smile_quotes=quotes)), args.calls)
    print(f"book_from_positions + option_margin:     p50 {p50:7.1f} us  p99 {p99:7.1f} us")
    kept = Grid(vol_up=0.6, vol_down=0.3, spacing=0.04, keep_vol=DERIBIT_VOL)
    cells = len(option_margin(book, kept).losses)
    p50, p99 = percentiles(lambda: option_margin(book, kept), args.calls)
    print(f"option_margin, kept vol states ({cells} cells): p50 {p50:7.1f} us  p99 {p99:7.1f} us  (wall)")


if __name__ == "__main__":
    main()
