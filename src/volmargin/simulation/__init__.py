"""Liquidation and bad-debt simulation: a margin policy run through accounts, an oracle, a liquidation
engine and market impact on price paths (one asset per run).

The model, step by step (steps are the paths' bars, hourly here; prices relative to the start):
1. Accounts (`accounts`): side, notional, desired leverage, entry step; drawn from seeded distributions
   or read from a file. An account opens at the simulated price of its entry step with collateral
   notional / min(leverage, 1 / initial margin): the policy's initial margin caps leverage.
2. Market (`engine.Market`): an exogenous log-price path per path (real replays, bootstrapped and
   volatility-scaled paths, stress events: `paths`), the traded volume and volatility of each step
   (the liquidity proxy) and, optionally, funding rates.
3. Oracle: margin is checked at an oracle price that reads the simulated price `oracle_delay` steps
   late (fractional delays interpolate in log price) and updates every `oracle_cadence` steps.
4. Liquidation: an account whose equity (collateral + P&L at the oracle price) is below maintenance
   margin is liquidated, fully, or partially (the least share that restores initial margin at the
   oracle price, net of the penalty; what is left is checked again).
5. Execution and impact (`impact`): the step's liquidation flow is executed at the price after the
   square-root impact of the step's cumulative net flow against the step's traded volume. The impact
   is permanent: it is added to every later price of the path.
6. Penalty and bad debt: the penalty (a share of the closed notional, at most the equity left) is paid
   to the insurance fund; an account closed with negative equity is made whole by the fund, and that
   payment is the bad debt.
7. Feedback (cascades): the impact moves the simulated price, which (when the oracle reads the current
   step) moves the oracle, which can put more accounts under maintenance margin; each step repeats
   check -> liquidate -> impact until no new account is hit (a fixed point) or `max_rounds` rounds
   (paths still moving then are flagged `unconverged`).
8. Funding (optional): at the end of each step longs pay shorts rate x notional (the market, the
   counterparty of every position, pays or receives the imbalance).
Money is conserved exactly between accounts, the insurance fund and the market (tested).

Speed: state is (paths, accounts) arrays and the only Python loops are over steps and cascade rounds;
each round is one comparison of the oracle against every account's liquidation price, and the work on
liquidated accounts is done on the (path, account) pairs found, not on the whole array.
"""

from volmargin.simulation.accounts import Accounts, PopulationConfig, draw_accounts, read_accounts
from volmargin.simulation.engine import EngineConfig, MarginTerms, Market, SimulationResult, simulate
from volmargin.simulation.impact import DEFAULT_IMPACT, SquareRootImpact

__all__ = ["DEFAULT_IMPACT", "Accounts", "EngineConfig", "MarginTerms", "Market", "PopulationConfig",
           "SimulationResult", "SquareRootImpact", "draw_accounts", "read_accounts", "simulate"]
