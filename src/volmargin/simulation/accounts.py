"""The account population: side, notional, leverage and entry step per account, drawn or read from a file.

Drawn (`PopulationConfig`, seeded): side long with probability `long_share`; notional lognormal
(`size_sigma`), rescaled so the population's open interest is `open_interest` (quote currency; the
simulator sets it from the market's volume, see `volmargin.simulation.scenarios`); desired leverage
lognormal around `leverage_median`, at least 1, and capped at 1 / initial margin when the account opens
(a venue refuses more); a share `at_max_leverage` wants the most the venue allows; entry step uniform on
[0, entry_window) steps (1: every account opens at the start); a share `asset_collateral` posts its
collateral in the asset itself (coin-margined: it loses value with a long position, hedges a short).

From a file (`read_accounts`): CSV or Parquet with columns side (long/short), notional (> 0 and at most
`MAX_NOTIONAL`, at least `MIN_NOTIONAL_SHARE` of the file's largest and `MIN_NOTIONAL`),
leverage (>= 1) and optionally entry_step (integer >= 0, default 0, below the path's
steps) and collateral (cash, the default, or asset: posted in the asset itself, counted at (1 - haircut)
of its value); errors name the file, row and field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from volmargin_serving.risk import (  # one bound for every notional a user gives
    MAX_NOTIONAL, MIN_NOTIONAL, MIN_NOTIONAL_SHARE, tiny_notionals,
)

from volmargin.data.loader import read_csv_file
from volmargin.errors import ConfigError, DataError



@dataclass(frozen=True)
class Accounts:
    side: np.ndarray  # (N,) +1 long, -1 short
    notional: np.ndarray  # (N,) quote currency at entry
    leverage: np.ndarray  # (N,) desired; the engine caps it at 1 / initial margin
    entry_step: np.ndarray  # (N,) int
    asset_collateral: np.ndarray | None = None  # (N,) bool: collateral posted in the asset itself; None: all cash

    def __post_init__(self) -> None:
        n = len(self.side)
        if self.asset_collateral is None:
            object.__setattr__(self, "asset_collateral", np.zeros(n, dtype=bool))
        if not all(len(a) == n for a in (self.notional, self.leverage, self.entry_step, self.asset_collateral)):
            raise ConfigError("accounts: side, notional, leverage and entry_step must have one value per account")

    def long_first(self) -> Accounts:
        """Sorted by side (longs first), then entry step: the engine's column order."""
        order = np.lexsort((self.entry_step, -self.side))
        return Accounts(self.side[order].astype(float), self.notional[order].astype(float),
                        self.leverage[order].astype(float), self.entry_step[order].astype(int),
                        self.asset_collateral[order].astype(bool))

    def scaled(self, open_interest: float) -> Accounts:
        """The same population with notionals rescaled to a total of `open_interest`."""
        return Accounts(self.side, self.notional * (open_interest / self.notional.sum()), self.leverage,
                        self.entry_step, self.asset_collateral)


@dataclass(frozen=True)
class PopulationConfig:
    accounts: int = 10_000
    long_share: float = 0.5
    size_sigma: float = 1.5  # lognormal sigma of notionals (heavy-tailed: a few whales)
    leverage_median: float = 4.0
    leverage_sigma: float = 0.5
    at_max_leverage: float = 0.05  # share of accounts that take the most leverage allowed
    max_leverage: float = 125.0  # the venue's hard cap, before the initial-margin cap
    entry_window: int = 1  # steps over which accounts open
    asset_collateral: float = 0.0  # share of accounts that post their collateral in the asset itself
    seed: int = 0

    def __post_init__(self) -> None:
        bad = first_invalid(vars(self))
        if bad:
            raise ConfigError(f"simulation.population.{bad}: invalid value {getattr(self, bad)!r}")


POPULATION_RULES = {"accounts": lambda v: v >= 1, "long_share": lambda v: 0 <= v <= 1, "size_sigma": lambda v: v >= 0,
                    "leverage_median": lambda v: v >= 1, "leverage_sigma": lambda v: v >= 0,
                    "at_max_leverage": lambda v: 0 <= v <= 1, "max_leverage": lambda v: v >= 1,
                    "entry_window": lambda v: v >= 1, "asset_collateral": lambda v: 0 <= v <= 1}


def first_invalid(values: dict) -> str | None:
    """The first key of `values` that breaks its POPULATION_RULES rule (NaN breaks every one), else None:
    checked on the population and, at load, on the `simulation` section's keys of the same names."""
    return next((key for key, rule in POPULATION_RULES.items() if key in values and not rule(values[key])), None)


def draw_accounts(config: PopulationConfig, open_interest: float = 1.0) -> Accounts:
    rng = np.random.default_rng(config.seed)
    n = config.accounts
    side = np.where(rng.random(n) < config.long_share, 1.0, -1.0)
    notional = rng.lognormal(0.0, config.size_sigma, n)
    leverage = np.clip(config.leverage_median * np.exp(config.leverage_sigma * rng.standard_normal(n)),
                       1.0, config.max_leverage)
    leverage = np.where(rng.random(n) < config.at_max_leverage, config.max_leverage, leverage)
    entry = rng.integers(0, config.entry_window, n)
    # drawn last so that the other draws of a seed do not depend on it
    in_asset = rng.random(n) < config.asset_collateral if config.asset_collateral else np.zeros(n, dtype=bool)
    return Accounts(side, notional, leverage, entry, in_asset).scaled(open_interest)


def read_accounts(path: str | Path, steps: int | None = None) -> Accounts:
    """Accounts from a CSV / Parquet file (see the module docstring); one-line errors name row and field.
    `steps`: the steps of the shortest path they will trade on (entry steps must fall inside it)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: accounts file not found")
    if path.suffix == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None
    else:
        frame = read_csv_file(path)
    missing = [c for c in ("side", "notional", "leverage") if c not in frame]
    if missing:
        raise DataError(f"{path}: missing columns {missing}; expected side, notional, leverage[, entry_step]")
    if frame.empty:
        raise DataError(f"{path}: no accounts")
    side = frame["side"].astype(str).str.strip().str.lower()
    _first_bad(path, ~side.isin(["long", "short"]), "side", frame["side"], "must be long or short")
    notional = pd.to_numeric(frame["notional"], errors="coerce")
    _first_bad(path, ~(np.isfinite(notional) & (notional > 0) & (notional <= MAX_NOTIONAL)), "notional",
               frame["notional"], f"must be a number > 0 and <= {MAX_NOTIONAL:g}")
    _first_bad(path, tiny_notionals(notional), "notional", frame["notional"],
               f"must be at least {MIN_NOTIONAL_SHARE:g} of the file's largest notional (and {MIN_NOTIONAL:g})")
    leverage = pd.to_numeric(frame["leverage"], errors="coerce")
    _first_bad(path, ~(np.isfinite(leverage) & (leverage >= 1)), "leverage", frame["leverage"], "must be a number >= 1")
    entry = pd.to_numeric(frame.get("entry_step", pd.Series(0, index=frame.index)), errors="coerce")
    _first_bad(path, ~(np.isfinite(entry) & (entry >= 0) & (entry == np.round(entry))), "entry_step",
               frame.get("entry_step", entry), "must be an integer >= 0")
    if steps is not None:
        _first_bad(path, entry >= steps, "entry_step", frame.get("entry_step", entry),
                   f"must be < {steps}, the steps of a simulated path (hours)")
    collateral = frame.get("collateral", pd.Series("cash", index=frame.index)).astype(str).str.strip().str.lower()
    _first_bad(path, ~collateral.isin(["cash", "asset"]), "collateral", frame.get("collateral", collateral),
               "must be cash or asset")
    return Accounts(np.where(side == "long", 1.0, -1.0), notional.to_numpy(float), leverage.to_numpy(float),
                    entry.to_numpy(int), (collateral == "asset").to_numpy())


def _first_bad(path: Path, bad: pd.Series, column: str, values: pd.Series, rule: str) -> None:
    bad = np.asarray(bad, dtype=bool)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: row {i + 2}: {column} = {str(values.iloc[i])!r}: {rule}")
