"""A margin policy's terms run over a path set: the glue between paths, the population and the engine.

Money is in units of open interest (the population's notional is 1 on every path). Liquidity: the open
interest is `open_interest` times the asset's daily traded volume (the bars' volume is the proxy), so
each hourly step trades 1 / (24 x open_interest) of it; the step's volatility for the impact law is the
model's forecast, sqrt(daily variance / 24). Paths are run in chunks of `chunk` to bound memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from volmargin.errors import ConfigError
from volmargin.simulation.accounts import Accounts, PopulationConfig, draw_accounts, read_accounts
from volmargin.simulation.engine import EngineConfig, MarginTerms, Market, simulate
from volmargin.simulation.impact import DEFAULT_IMPACT, SquareRootImpact
from volmargin.simulation.metrics import path_metrics
from volmargin.simulation.paths import HOURS, PathSet


@dataclass(frozen=True)
class SimulationSettings:
    population: PopulationConfig = field(default_factory=lambda: PopulationConfig(accounts=1000))
    engine: EngineConfig = field(default_factory=EngineConfig)
    impact: float = DEFAULT_IMPACT  # Y of the square-root law
    open_interest: float = 0.5  # open interest / daily traded volume
    penalty: float = 0.01  # liquidation penalty of the reference policies
    bootstrap_paths: int = 4  # bootstrapped paths per origin day, beside its replay
    block_hours: int = 6
    lookback_days: int = 730
    chunk: int = 2000  # paths per engine call
    seed: int = 0
    accounts_file: str | None = None  # read the population instead of drawing it

    def __post_init__(self) -> None:
        checks = {"impact": self.impact >= 0, "open_interest": self.open_interest > 0,
                  "penalty": 0 <= self.penalty < 1, "bootstrap_paths": self.bootstrap_paths >= 0,
                  "block_hours": 1 <= self.block_hours <= HOURS, "lookback_days": self.lookback_days >= 30,
                  "chunk": self.chunk >= 1}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"simulation.{bad[0]}: invalid value {getattr(self, bad[0])!r}")

    def accounts(self) -> Accounts:
        """The population, notionals scaled to a total of 1 (money is in units of open interest)."""
        if self.accounts_file:
            return read_accounts(self.accounts_file, steps=HOURS).scaled(1.0)  # the shortest paths: a day
        return draw_accounts(self.population, open_interest=1.0)


MAX_HAIRCUT = 0.95


def collateral_haircut(initial: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """Haircut of the asset as collateral per origin day: `factor` x the long side's initial margin (the
    collateral is a long spot holding; its margin is what it can lose before it is sold), capped at 95%."""
    return np.clip(factor * np.nan_to_num(np.asarray(initial, dtype=float)[:, 0], nan=MAX_HAIRCUT), 0.0, MAX_HAIRCUT)


def run_paths(paths: PathSet, initial: np.ndarray, maintenance: np.ndarray, penalty, variance: np.ndarray,
              settings: SimulationSettings, accounts: Accounts | None = None, haircut=None) -> pd.DataFrame:
    """Path metrics (`volmargin.simulation.metrics.PATH_METRICS`) of every path, with its kind and origin.
    `initial`, `maintenance` (D, 2) and `variance` (D,) are per origin day of `paths.origins`; `penalty` a
    scalar or (D,); `haircut` (D,) of collateral posted in the asset (None: the long side's initial margin, the
    margin of the long spot holding the collateral is)."""
    accounts = settings.accounts() if accounts is None else accounts
    penalty = np.broadcast_to(np.asarray(penalty, dtype=float), (len(paths.origins),))
    haircut = collateral_haircut(initial) if haircut is None else np.asarray(haircut, dtype=float)
    volume = 1.0 / (HOURS * settings.open_interest)
    impact = SquareRootImpact(settings.impact)
    frames = []
    for lo in range(0, len(paths), settings.chunk):
        rows = slice(lo, lo + settings.chunk)
        day = paths.day[rows]
        funding = None if paths.funding is None else paths.funding[rows]
        market = Market(paths.log_price[rows], volume, np.sqrt(variance[day] / HOURS), funding)
        terms = MarginTerms(initial[day], maintenance[day], penalty[day], haircut[day])
        frames.append(path_metrics(simulate(accounts, market, terms, impact, settings.engine)))
    metrics = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["bad_debt", "bad_debt_fund", "liquidated", "fund_drawdown", "cascade", "move", "unconverged"])
    metrics.insert(0, "kind", paths.kind)
    metrics.insert(1, "origin", paths.origins[paths.day] if len(paths) else pd.DatetimeIndex([], tz="UTC"))
    return metrics
