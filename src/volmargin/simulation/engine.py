"""The liquidation engine: accounts x paths as arrays, one loop over time steps and cascade rounds.

See the package docstring (`volmargin.simulation`) for the model. State per (path, account), all
(P, N) float arrays, columns ordered longs first: `qty` (signed units held), `cash` (collateral minus
the cost of the position, so equity = cash + qty x price) and `trigger` (the oracle price at which the
account falls below maintenance margin; -inf / +inf for closed or not yet opened longs / shorts, so
one comparison per round finds every account to liquidate). Everything that happens to a liquidated
account is done on the few (path, account) pairs that `np.nonzero` returns, never on the whole array.

Ledger (conserved exactly, tested): every trade moves cash between an account and the market (the
counterparty of every position), funding too; the penalty moves cash from an account to the insurance
fund; bad debt is the fund paying an account's negative cash back to zero.
"""

from __future__ import annotations

import math

from dataclasses import dataclass, field

import numpy as np

from volmargin.errors import ConfigError
from volmargin.simulation.accounts import Accounts
from volmargin.simulation.impact import SquareRootImpact

LIQUIDATION_MODES = ("full", "partial")
MAX_ORACLE_DELAY = 24  # steps (hours): a day; past it an oracle is not late but absent


@dataclass(frozen=True)
class MarginTerms:
    """The policy's terms per path: rates of notional, (P, 2) with sides (long, short) or broadcastable."""

    initial: np.ndarray
    maintenance: np.ndarray
    penalty: np.ndarray | float  # fraction of the closed notional paid to the insurance fund
    haircut: np.ndarray | float = 0.0  # (P,): collateral posted in the asset counts at (1 - haircut) of its value

    @classmethod
    def constant(cls, initial: float, maintenance: float, penalty: float, paths: int = 1) -> MarginTerms:
        return cls(np.full((paths, 2), initial), np.full((paths, 2), maintenance), penalty)

    def with_haircut(self, haircut) -> MarginTerms:
        return MarginTerms(self.initial, self.maintenance, self.penalty, haircut)

    def checked(self, paths: int) -> MarginTerms:
        im = np.broadcast_to(np.asarray(self.initial, dtype=float), (paths, 2))
        mm = np.broadcast_to(np.asarray(self.maintenance, dtype=float), (paths, 2))
        pen = np.broadcast_to(np.asarray(self.penalty, dtype=float), (paths,))
        if not (np.all((im > 0) & (im <= 1)) and np.all((mm > 0) & (mm < im))):
            raise ConfigError("margin terms: need 0 < maintenance < initial <= 1 on every path and side")
        if not np.all((pen >= 0) & (pen < 1)):
            raise ConfigError("margin terms: the liquidation penalty must lie in [0, 1)")
        cut = np.broadcast_to(np.asarray(self.haircut, dtype=float), (paths,))
        if not np.all((cut >= 0) & (cut < 1)):
            raise ConfigError("margin terms: the collateral haircut must lie in [0, 1)")
        return MarginTerms(im, mm, pen, cut)


@dataclass(frozen=True)
class Market:
    """Exogenous market per path: log price relative to the start (P, T+1), column 0 = 0; liquidity
    per step: traded volume in quote currency (USD) and the log-return volatility of one step, (P,) or
    (P, T); funding (P, T) or None: the rate longs pay shorts at the end of each step (fraction of notional)."""

    log_price: np.ndarray
    volume: np.ndarray | float
    volatility: np.ndarray | float
    funding: np.ndarray | None = None

    @property
    def paths(self) -> int:
        return self.log_price.shape[0]

    @property
    def steps(self) -> int:
        return self.log_price.shape[1] - 1

    def per_step(self, values, name: str) -> np.ndarray:
        """(P, T) view of a per-path or per-step input."""
        arr = np.asarray(values, dtype=float)
        arr = arr[:, None] if arr.ndim == 1 else arr
        out = np.broadcast_to(arr, (self.paths, self.steps))
        if not np.all(np.isfinite(out)) or np.any(out < 0):
            raise ConfigError(f"market.{name}: must be finite and >= 0 on every path and step")
        return out


@dataclass(frozen=True)
class EngineConfig:
    oracle_delay: float = 0.0  # steps the oracle lags the market (fractional: interpolated in log price)
    oracle_cadence: int = 1  # the oracle updates every this many steps
    liquidation: str = "full"  # full: close the position; partial: close just enough to restore initial margin
    max_rounds: int = 20  # cascade rounds per step (liquidation -> impact -> oracle -> liquidation ...)
    insurance_fund: float = 0.02  # initial fund, as a fraction of the open interest of the population

    def __post_init__(self) -> None:
        checks = {"oracle_delay": 0 <= self.oracle_delay <= MAX_ORACLE_DELAY,
                  "oracle_cadence": self.oracle_cadence >= 1,
                  "liquidation": self.liquidation in LIQUIDATION_MODES, "max_rounds": self.max_rounds >= 1,
                  "insurance_fund": 0 <= self.insurance_fund < math.inf}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"simulation.{bad[0]}: invalid value {getattr(self, bad[0])!r}")


@dataclass
class SimulationResult:
    """Per path (P,) totals and (P, T) per-step flows; money in quote currency (USD)."""

    open_interest: np.ndarray  # (P,) notional opened
    deposits: np.ndarray  # (P,) collateral deposited in cash (quote currency)
    fund_start: np.ndarray  # (P,)
    bad_debt: np.ndarray  # (P, T) absorbed by the fund per step
    penalties: np.ndarray  # (P, T) paid to the fund per step
    liquidated: np.ndarray  # (P, T) notional closed by liquidation per step (at execution price)
    liquidations: np.ndarray  # (P, T) liquidation events per step
    log_price: np.ndarray  # (P, T+1) simulated log price, impact included
    impact: np.ndarray  # (P, T+1) cumulative log impact of liquidation flow (simulated - exogenous)
    rounds: np.ndarray  # (P, T) cascade rounds with liquidations per step
    unconverged: np.ndarray  # (P,) True where a step still had new liquidations after max_rounds
    account_cash: np.ndarray  # (P,) cash of all accounts at the end (closed accounts: what they keep)
    account_qty: np.ndarray  # (P,) units still held by accounts (positions)
    account_collateral: np.ndarray  # (P,) units of the asset still held as collateral
    collateral_deposited: np.ndarray  # (P,) units of the asset deposited as collateral (worth part of `deposits`)
    market_cash: np.ndarray  # (P,)
    market_qty: np.ndarray  # (P,)
    open_equity: np.ndarray  # (P,) equity of the positions still open, at the last price
    open_shortfall: np.ndarray  # (P,) their negative equity at the last price: bad debt an oracle that lags
    # (or a cascade cut at max_rounds) has not closed yet, owed by the fund all the same
    fund: np.ndarray = field(init=False)  # (P, T+1) insurance fund balance

    def __post_init__(self) -> None:
        flows = np.cumsum(self.penalties - self.bad_debt, axis=1)
        self.fund = self.fund_start[:, None] + np.hstack([np.zeros((len(flows), 1)), flows])


def simulate(accounts: Accounts, market: Market, terms: MarginTerms, impact: SquareRootImpact,
             config: EngineConfig = EngineConfig()) -> SimulationResult:
    """Run the population through every path; see the package docstring for the model."""
    return _Engine(accounts, market, terms.checked(market.paths), impact, config).run()


class _Engine:
    def __init__(self, accounts: Accounts, market: Market, terms: MarginTerms, impact: SquareRootImpact,
                 config: EngineConfig) -> None:
        if np.any(accounts.entry_step >= max(market.steps, 1)):
            raise ConfigError(f"accounts: entry_step must be < the number of steps ({market.steps})")
        if not np.all(np.isfinite(market.log_price)) or np.any(market.log_price[:, 0] != 0):
            raise ConfigError("market.log_price: must be finite with column 0 = 0 (prices relative to the start)")
        self.acc, self.mkt, self.terms, self.impact, self.cfg = accounts.long_first(), market, terms, impact, config
        p, n, t = market.paths, len(self.acc.side), market.steps
        self.n_long = int(np.sum(self.acc.side > 0))
        self.long = self.acc.side > 0
        self.volume = market.per_step(market.volume, "volume")
        if impact.coefficient > 0 and np.any(self.volume == 0):
            raise ConfigError("market.volume: must be > 0 on every path and step when the impact is on")
        self.sigma = market.per_step(market.volatility, "volatility")
        self.funding = None if market.funding is None else np.asarray(market.funding, dtype=float)
        self.qty, self.cash = np.zeros((p, n)), np.zeros((p, n))
        self.in_asset = self.acc.asset_collateral
        self.coll = np.zeros((p, n))  # units of the asset posted as collateral (accounts with `in_asset`)
        self.coll_deposited = np.zeros(p)
        self.trigger = np.where(self.long, -np.inf, np.inf)[None, :].repeat(p, axis=0)
        self.side_index = np.where(self.long, 0, 1)
        self.s = market.log_price.astype(float).copy()  # simulated log price, impact added as it happens
        self.impact_now = np.zeros(p)  # cumulative log impact so far
        self.impact_before = np.zeros(p)  # ... at the start of the current step
        self.flow = np.zeros(p)  # signed USD liquidation flow of the current step (buy > 0)
        self.market_cash, self.market_qty = np.zeros(p), np.zeros(p)
        self.oi = np.full(p, float(self.acc.notional.sum()))
        self.fund0 = config.insurance_fund * self.oi
        self.deposits = np.zeros(p)
        shape = (p, t)
        self.bad_debt, self.penalties = np.zeros(shape), np.zeros(shape)
        self.liquidated, self.events, self.rounds = np.zeros(shape), np.zeros(shape), np.zeros(shape, dtype=int)
        self.unconverged = np.zeros(p, dtype=bool)
        self.impact_path = np.zeros((p, t + 1))
        self.max_long, self.min_short = np.full(p, -np.inf), np.full(p, np.inf)
        self.waiting = np.zeros(n, dtype=bool)  # opened, but the oracle has read no price since their entry

    # --- oracle ------------------------------------------------------------------------------------
    def read_time(self, t: int) -> float:
        """The (fractional) step whose price the oracle shows at step t: its last update minus the delay."""
        return max(self.cfg.oracle_cadence * (t // self.cfg.oracle_cadence) - self.cfg.oracle_delay, 0.0)

    def oracle(self, t: int, rows: np.ndarray) -> np.ndarray:
        """Oracle price at step t on `rows`: the simulated price at the last update time minus the delay."""
        read = self.read_time(t)
        lo = int(np.floor(read))
        hi = min(lo + 1, t)
        w = read - lo
        s = self.s[rows]
        return np.exp((1 - w) * s[:, lo] + w * s[:, hi]) if w else np.exp(s[:, lo])

    # --- accounts ------------------------------------------------------------------------------------
    def open_cohort(self, t: int) -> None:
        """Open the accounts entering at step t: columns are sorted by (side, entry step), so each side's
        cohort is one contiguous block and every array operation is on a slice."""
        price = np.exp(self.s[:, t])[:, None]
        opened = False
        for side, block in ((0, slice(0, self.n_long)), (1, slice(self.n_long, None))):
            entry = self.acc.entry_step[block]
            lo, hi = (block.start or 0) + np.searchsorted(entry, [t, t + 1])
            if lo == hi:
                continue
            opened = True
            cols = slice(lo, hi)
            im, mm = self.terms.initial[:, side:side + 1], self.terms.maintenance[:, side:side + 1]
            in_asset = self.in_asset[cols][None, :]
            # the haircut collateral must cover initial margin: leverage <= (1 - haircut) / im in the asset
            counted = np.where(in_asset, 1.0 - self.terms.haircut[:, None], 1.0)
            leverage = np.minimum(self.acc.leverage[cols][None, :], counted / im)
            notional = self.acc.notional[cols][None, :]
            qty = self.qty[:, cols]
            np.multiply(self.acc.side[cols][None, :] / price, notional, out=qty)
            collateral = notional / leverage
            units = np.where(in_asset, collateral / price, 0.0)
            self.coll[:, cols] = units
            np.subtract(np.where(in_asset, 0.0, collateral), qty * price, out=self.cash[:, cols])
            self.trigger[:, cols] = self.liquidation_price(qty, self.cash[:, cols], mm, side == 0,
                                                           counted * units)
            self.coll_deposited += units.sum(1)
            self.deposits += np.where(in_asset, 0.0, collateral).sum(1)
            self.market_cash += (qty * price).sum(1)
            self.market_qty -= qty.sum(1)
        if opened:
            self.hold_unread(t)
            self.refresh_extremes(np.arange(len(price)))

    def hold_unread(self, t: int) -> None:
        """Accounts opened at a step the next oracle does not read yet wait: a lagging oracle would check them
        against a price from before they opened (a long opened after a rise liquidated on the pre-rise price)."""
        self.waiting |= (self.acc.entry_step == t) & (self.read_time(t + 1) < t)
        self.trigger[:, self.waiting] = np.where(self.long[self.waiting], -np.inf, np.inf)

    def release_read(self, t: int) -> None:
        """Waiting accounts whose entry step the oracle of step t has read are checked from now on."""
        ready = self.waiting & (self.acc.entry_step <= self.read_time(t))
        if ready.any():
            self.waiting &= ~ready
            rows, cols = np.nonzero(np.broadcast_to(ready, self.trigger.shape))
            self.set_trigger(rows, cols)
            self.refresh_extremes(np.arange(len(self.s)))

    @staticmethod
    def liquidation_price(qty, cash, mm, long, counted=0.0) -> np.ndarray:
        """Oracle price below (long) / above (short) which the margin equity (cash + (q + k) O, with k the
        haircut collateral units (1 - h) c) is < maintenance margin mm |q| O:
        long  <=>  O < -cash / (q (1 - mm) + k); short (q < 0)  <=>  O > cash / (|q| (1 + mm) - k), never if
        the collateral hedges the short (|q| (1 + mm) <= k); a closed position never triggers."""
        with np.errstate(divide="ignore", invalid="ignore"):
            short_den = -qty * (1 + mm) - counted
            trig = np.where(long, -cash / (qty * (1 - mm) + counted),
                            np.where(short_den > 0, cash / short_den, np.inf))
        return np.where(qty == 0, np.where(long, -np.inf, np.inf), trig)

    def counted(self, rows, cols) -> np.ndarray:
        """Haircut collateral units (1 - h) c of (path, account) pairs."""
        return (1.0 - self.terms.haircut[rows]) * self.coll[rows, cols]

    def set_trigger(self, rows, cols) -> None:
        self.trigger[rows, cols] = self.liquidation_price(
            self.qty[rows, cols], self.cash[rows, cols], self.terms.maintenance[rows, self.side_index[cols]],
            self.long[cols], self.counted(rows, cols))

    def refresh_extremes(self, rows: np.ndarray, trig: np.ndarray | None = None) -> None:
        """The highest long and lowest short liquidation price of each path in `rows` (`trig`: their rows of
        `trigger`, if at hand): a path whose oracle lies between them has nothing to liquidate and is
        never scanned."""
        trig = self.trigger[rows] if trig is None else trig
        self.max_long[rows] = trig[:, :self.n_long].max(1, initial=-np.inf)
        self.min_short[rows] = trig[:, self.n_long:].min(1, initial=np.inf)

    def triggered(self, trig: np.ndarray, oracle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row of `trig`, account) pairs below maintenance margin at the oracle price."""
        hit = np.empty(trig.shape, dtype=bool)
        np.less(oracle[:, None], trig[:, :self.n_long], out=hit[:, :self.n_long])
        np.greater(oracle[:, None], trig[:, self.n_long:], out=hit[:, self.n_long:])
        return np.nonzero(hit)

    def close_fraction(self, rows, cols, oracle) -> np.ndarray:
        """Share of each triggered position to close: all of it (full), or the least that brings the rest
        back to initial margin at the oracle price, counting the penalty (partial)."""
        if self.cfg.liquidation == "full":
            return np.ones(len(rows))
        in_asset = self.in_asset[cols]  # accounts with collateral in the asset are always closed in full
        qty, cash = self.qty[rows, cols], self.cash[rows, cols]
        notional = np.abs(qty) * oracle
        ratio = (cash + qty * oracle) / notional
        side = self.side_index[cols]
        im, pen = self.terms.initial[rows, side], self.terms.penalty[rows]
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = (im - ratio) / (im - pen)
        return np.where((im > pen) & ~in_asset, np.clip(frac, 0.0, 1.0), 1.0)

    def liquidate(self, t: int, rows, cols, frac) -> None:
        """Close `frac` of each position at the post-impact price of the step's cumulative flow; a fully
        closed account's collateral in the asset is sold with it (into the same flow)."""
        p = len(self.s)
        closed_all = frac >= 1.0
        sold = np.where(closed_all, self.coll[rows, cols], 0.0)  # collateral units sold
        traded = -frac * self.qty[rows, cols] - sold  # units bought (> 0: a short's buy-back)
        price_pre = np.exp(self.s[rows, t])
        self.flow += np.bincount(rows, traded * price_pre, minlength=p)
        step = t - 1
        new_impact = self.impact_before + self.impact.log_impact(self.flow, self.volume[:, step], self.sigma[:, step])
        self.s[:, t] = self.mkt.log_price[:, t] + new_impact
        self.impact_now = new_impact
        exec_price = np.exp(self.s[rows, t])
        self.cash[rows, cols] -= traded * exec_price
        self.qty[rows, cols] += traded + sold
        self.coll[rows, cols] -= sold
        self.qty[rows[closed_all], cols[closed_all]] = 0.0  # exact zero, no rounding residue
        self.market_cash += np.bincount(rows, traded * exec_price, minlength=p)
        self.market_qty -= np.bincount(rows, traded, minlength=p)
        equity = self.cash[rows, cols] + (self.qty[rows, cols] + self.coll[rows, cols]) * exec_price
        closed = np.abs(traded + sold) * exec_price  # the position's notional closed
        penalty = np.minimum(self.terms.penalty[rows] * closed, np.maximum(equity, 0.0))
        self.cash[rows, cols] -= penalty
        shortfall = np.where(self.qty[rows, cols] == 0, np.maximum(-self.cash[rows, cols], 0.0), 0.0)
        self.cash[rows, cols] += shortfall
        self.penalties[:, step] += np.bincount(rows, penalty, minlength=p)
        self.bad_debt[:, step] += np.bincount(rows, shortfall, minlength=p)
        self.liquidated[:, step] += np.bincount(rows, closed, minlength=p)
        self.events[:, step] += np.bincount(rows, minlength=p)
        self.set_trigger(rows, cols)

    def pay_funding(self, t: int) -> None:
        rate = self.funding[:, t - 1][:, None]
        payment = rate * self.qty * np.exp(self.s[:, t])[:, None]  # longs pay when the rate is positive
        self.cash -= payment
        self.market_cash += payment.sum(1)
        self.trigger = self.liquidation_price(self.qty, self.cash, self.terms.maintenance[:, self.side_index],
                                              self.long[None, :], (1.0 - self.terms.haircut[:, None]) * self.coll)
        self.trigger[:, self.waiting] = np.where(self.long[self.waiting], -np.inf, np.inf)
        self.refresh_extremes(np.arange(len(self.s)))

    # --- the loop ----------------------------------------------------------------------------------------
    def run(self) -> SimulationResult:
        self.open_cohort(0)
        every = np.arange(len(self.s))
        for t in range(1, self.mkt.steps + 1):
            self.impact_before[:] = self.impact_now
            self.s[:, t] = self.mkt.log_price[:, t] + self.impact_now
            self.flow[:] = 0.0
            if self.funding is not None and np.any(self.funding[:, t - 1] != 0):
                self.pay_funding(t)
            self.release_read(t)
            for k in range(self.cfg.max_rounds + 1):
                oracle = self.oracle(t, every)
                rows = np.flatnonzero((oracle < self.max_long) | (oracle > self.min_short))
                if not len(rows):
                    break
                if k == self.cfg.max_rounds:
                    self.unconverged[rows] = True
                    break
                trig = self.trigger[rows]
                local, hit_cols = self.triggered(trig, oracle[rows])
                hit_rows = rows[local]
                frac = self.close_fraction(hit_rows, hit_cols, oracle[hit_rows])
                self.liquidate(t, hit_rows, hit_cols, frac)
                trig[local, hit_cols] = self.trigger[hit_rows, hit_cols]
                self.refresh_extremes(rows, trig)
                self.rounds[rows, t - 1] += 1
            self.impact_path[:, t] = self.impact_now
            if t < self.mkt.steps:
                self.open_cohort(t)
        return self.result()

    def result(self) -> SimulationResult:
        last = np.exp(self.s[:, -1])[:, None]
        equity = self.cash + (self.qty + self.coll) * last
        return SimulationResult(
            open_interest=self.oi, deposits=self.deposits, fund_start=self.fund0, bad_debt=self.bad_debt,
            penalties=self.penalties, liquidated=self.liquidated, liquidations=self.events, log_price=self.s,
            impact=self.impact_path, rounds=self.rounds, unconverged=self.unconverged,
            account_cash=self.cash.sum(1), account_qty=self.qty.sum(1), account_collateral=self.coll.sum(1),
            collateral_deposited=self.coll_deposited, market_cash=self.market_cash, market_qty=self.market_qty,
            open_equity=equity.sum(1, where=self.qty != 0),
            open_shortfall=np.maximum(-equity, 0.0).sum(1, where=self.qty != 0))
