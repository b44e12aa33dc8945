"""Simulator speed: 10,000 accounts x 1,000 paths x 24 hourly steps for one asset, on one core.

Run: OMP_NUM_THREADS=1 .venv/bin/python bench/simulation_speed.py [--accounts 10000 --paths 1000 --steps 24]
The paths are Student-t hourly moves at 80% annualised volatility with a -10% hour on a fifth of them
(so that liquidations and cascades happen); impact on (square-root, Y = DEFAULT_IMPACT), full
liquidation, oracle at the current price (every cascade round re-reads it). Prints the best of 3 runs,
wall and CPU time, the liquidations and cascade rounds it did, and the peak memory of the process.
Target: <= 10 s.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from volmargin.simulation import (EngineConfig, MarginTerms, Market, PopulationConfig, SquareRootImpact,
                                  draw_accounts, simulate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--paths", type=int, default=1_000)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--liquidation", default="full", choices=["full", "partial"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    sigma = 0.8 / np.sqrt(365 * 24)
    moves = sigma * rng.standard_t(4, (args.paths, args.steps)) / np.sqrt(2)
    moves[rng.random(args.paths) < 0.2, args.steps // 3] -= 0.10
    log_price = np.hstack([np.zeros((args.paths, 1)), np.cumsum(moves, axis=1)])
    market = Market(log_price, volume=1 / (24 * 0.5), volatility=sigma)  # open interest = half a day's volume
    accounts = draw_accounts(PopulationConfig(accounts=args.accounts, seed=0))
    terms = MarginTerms.constant(0.05, 0.03, 0.01, args.paths)
    best = best_cpu = np.inf
    for _ in range(args.repeat):
        began, began_cpu = time.perf_counter(), time.process_time()
        result = simulate(accounts, market, terms, SquareRootImpact(), EngineConfig(liquidation=args.liquidation))
        best, best_cpu = min(best, time.perf_counter() - began), min(best_cpu, time.process_time() - began_cpu)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.accounts:,} accounts x {args.paths:,} paths x {args.steps} steps ({args.liquidation} liquidation): "
          f"{best:.2f} s wall, {best_cpu:.2f} s CPU (best of {args.repeat}; target <= 10 s; on a shared machine the CPU "
          f"time is the one-core figure), peak memory {peak:,.0f} MB")
    print(f"liquidation events {int(result.liquidations.sum()):,}, most cascade rounds in a step "
          f"{int(result.rounds.max())}, unconverged paths {int(result.unconverged.sum())}, "
          f"bad debt p99 {np.quantile(result.bad_debt.sum(1) / result.open_interest, 0.99):.3%} of open interest")


if __name__ == "__main__":
    main()
