"""Portfolio margin serving figures, one thread: latency of one book, throughput of a batch.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python bench/portfolio_serving.py [SCENARIOS.npz] [--calls 20000]

Without a scenario file (from `volmargin portfolio`, OUT/scenarios-<model>.npz) a seeded stand-in of
129 assets x 2,500 scenarios is used. The engine is built once per day (today's forecasts scale the
standardised scenarios; `PortfolioEngine(...)`, timed separately); a call is then `engine.margin(...)`
for a 30-asset book: from validated names (what a service receives) and from prebuilt `Positions`.
Targets: p50 <= 100 us, p99 <= 500 us per book; >= 5,000 books a second in a batch.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads its BLAS: one thread

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from common import percentiles  # noqa: E402
from volmargin_serving.portfolio import PortfolioEngine, PortfolioPolicy, PortfolioScenarios, load_scenarios  # noqa: E402
from volmargin_serving.risk import Positions  # noqa: E402




def stand_in(n_assets: int = 129, n_scenarios: int = 2500, stress: str = "isolated") -> PortfolioScenarios:
    rng = np.random.default_rng(0)
    z = 0.7 * rng.standard_t(4, (n_scenarios, 1)) + 0.7 * rng.standard_t(4, (n_scenarios, n_assets))
    dates = np.datetime64("2019-01-01") + np.arange(n_scenarios)
    policy = PortfolioPolicy(scale=1.2, correlation_weight=0.1, concentration=0.5, correlation_stress=stress)
    return PortfolioScenarios(tuple(f"asset_{i}" for i in range(n_assets)), z, dates, None, None,
                              np.full(n_assets, 0.08), policy, "stand-in")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenarios", nargs="?", default=None)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=10000)
    parser.add_argument("--book", type=int, default=30, help="assets per book")
    parser.add_argument("--correlation-stress", default="isolated", choices=("isolated", "comonotone"),
                        help="the stand-in's correlation stress (a scenario file carries its own)")
    args = parser.parse_args()
    scenarios = load_scenarios(args.scenarios) if args.scenarios else stand_in(stress=args.correlation_stress)
    n_assets = len(scenarios.assets)
    rng = np.random.default_rng(1)
    variance = (0.02 + 0.06 * rng.random(n_assets)) ** 2
    adv = 10 ** rng.uniform(6, 9, n_assets)
    began = time.perf_counter()
    engine = PortfolioEngine(scenarios, variance, adv)
    build_ms = (time.perf_counter() - began) * 1e3
    size = min(args.book, n_assets)
    picked = rng.choice(n_assets, size, replace=False)
    names = [scenarios.assets[i] for i in picked]
    notionals = rng.choice([-1, 1], size) * rng.lognormal(11, 1, size)
    positions = Positions.from_names(scenarios.assets, names, notionals)
    policy = scenarios.policy  # a file with APC tools needs the margin rate in force (NaN: a first margin)
    first = np.nan if (policy.buffer, policy.max_up, policy.max_down) != (None, None, None) else None
    p50, p99 = percentiles(lambda: engine.margin(names=names, notionals=notionals, previous=first), args.calls)
    q50, q99 = percentiles(lambda: engine.margin(positions, previous=first), args.calls)
    books = np.zeros((args.batch, n_assets))
    for row in books:
        cols = rng.choice(n_assets, size, replace=False)
        row[cols] = rng.choice([-1, 1], size) * rng.lognormal(11, 1, size)
    engine.margin_batch(books[:100], None if first is None else np.full(100, np.nan))
    began, cpu = time.perf_counter(), time.process_time()
    engine.margin_batch(books, None if first is None else np.full(len(books), np.nan))
    rate, cpu_rate = args.batch / (time.perf_counter() - began), args.batch / (time.process_time() - cpu)
    print(f"scenario set: {n_assets} assets x {len(scenarios.z)} scenarios ({scenarios.model}), measure "
          f"{scenarios.policy.measure}, stress {scenarios.policy.stress_mode}, correlation stress "
          f"{scenarios.policy.correlation_stress}; one thread")
    print(f"engine build (once a day, today's forecasts): {build_ms:.1f} ms")
    print(f"one {size}-asset book from names: p50 {p50:.1f} us, p99 {p99:.1f} us (target p50 <= 100, p99 <= 500)")
    print(f"one {size}-asset book from Positions: p50 {q50:.1f} us, p99 {q99:.1f} us")
    print(f"batch of {args.batch} books: {rate:,.0f} books/s wall, {cpu_rate:,.0f} per CPU-second (target >= 5,000)")


if __name__ == "__main__":
    main()
