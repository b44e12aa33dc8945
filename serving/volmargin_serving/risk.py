"""The risk layer core: positions, scenario sets, valuation and risk measures (numpy only).

One implementation, shared by the library (`volmargin.risk` re-exports this module), the portfolio
calibrator and backtest, the simulator and the serving runtime. Plain arrays, no per-position objects:
a book is a vector of signed notionals against a scenario matrix, many books are a matrix.

Objects
-------
- `Positions(asset, notional, kind)`: (n,) arrays: asset index into a universe (e.g.
  `ScenarioSet.assets`), signed notional in the quote currency (> 0 long, < 0 short), instrument kind
  ('spot' | 'perp'; options come later, valued by their own pricing function). Build one from names with
  `Positions.from_names(universe, names, notionals, kinds)`, which raises `UnknownAssetError`,
  `BadPositionError` (a typed `InputError`) on bad input. `Positions.dense(n_assets)` is the (n_assets,)
  net notional vector the linear valuation takes.
- `ScenarioSet(assets, returns, dates, weights, proxied)`: joint margin-period-of-risk (MPOR) log returns,
  `returns` (n_scenarios, n_assets), drawn on the same `dates` (n_scenarios,) for every asset so that the
  cross-asset dependence is kept; `weights` (n_scenarios,) sum to 1 (None: equal); `proxied`
  (n_scenarios, n_assets) marks returns that stand in for an asset without its own history that day.

Valuation (linear instruments: spot and perpetual, P&L = notional x (e^r - 1))
- `simple_returns(returns)` -> e^r - 1, computed once per scenario set and reused for every book.
- `linear_pnl(notional, simple)`: `notional` (n_assets,) or (n_books, n_assets) against `simple`
  (n_scenarios, n_assets) -> P&L (n_scenarios,) or (n_books, n_scenarios). Losses are `-pnl`.

Risk measures of losses along the last axis (positive = a loss), optionally scenario-weighted:
- `value_at_risk(losses, level, weights=None)`: the lower `level` quantile inf{l : P(L <= l) >= level};
- `expected_shortfall(losses, level, weights=None)`: mean loss in the worst (1 - level) probability mass
  (fractional boundary scenario included pro rata, so it is coherent and positively homogeneous);
- `worst_mean(losses, k)`: mean of the k worst scenarios (LCH PAIRS: 6 worst of 2,500);
- `risk_measure(losses, spec, weights=None)` by name: 'var99', 'es975', 'es9976', 'worst6'.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from volmargin_serving.errors import InputError

# the largest |notional| of a position (quote currency): no venue holds a quadrillion of one asset, and sizes
# near float32's range (scenario P&L is float32) overflow a margin to inf or NaN
MAX_NOTIONAL = 1e15
# the least |notional| of a position a user's file may give (0 aside): MIN_NOTIONAL_SHARE of the file's largest,
# and MIN_NOTIONAL absolute. Below, float32 P&L rounds the position to 0 (a 1e-320 book "breached" on every loss
# day and lifted a calibrated scale 5x) and rescaling relative sizes overflows.
MIN_NOTIONAL_SHARE, MIN_NOTIONAL = 1e-9, 1e-12


def tiny_notionals(notional) -> np.ndarray:
    """Which of a file's finite `notional`s are nonzero but below the least (see MIN_NOTIONAL_SHARE)."""
    size = np.abs(np.asarray(notional, dtype=float))
    floor = max(MIN_NOTIONAL, MIN_NOTIONAL_SHARE * float(np.max(size, initial=0.0, where=np.isfinite(size))))
    return (size > 0) & (size < floor)

KINDS = ("spot", "perp")  # linear instruments valued by `linear_pnl`
_KIND_SET = frozenset(KINDS)


class BadPositionError(InputError):
    """A position that cannot be margined: NaN/inf notional, unknown instrument kind, wrong shape."""


class UnknownAssetError(BadPositionError):
    """A position in an asset that the scenario set (the universe) does not hold."""


@lru_cache(maxsize=256)
def _perps(n: int) -> np.ndarray:
    kinds = np.full(n, "perp")
    kinds.flags.writeable = False
    return kinds


@dataclass(frozen=True)
class Positions:
    """A book as arrays: `asset` (n,) int index into the universe, `notional` (n,) signed quote-currency
    size (> 0 long), `kind` (n,) instrument kind, one of KINDS."""

    asset: np.ndarray
    notional: np.ndarray
    kind: np.ndarray

    @classmethod
    def from_names(cls, universe, names, notionals, kinds=None) -> "Positions":
        """Validated positions from asset names (`universe`: the asset names, or a name -> index dict);
        raises UnknownAssetError / BadPositionError naming the first offending position."""
        try:
            names = [names] if isinstance(names, str) else list(names)
        except TypeError:
            raise BadPositionError(f"positions: names must be a list of asset names, got {names!r:.60}") from None
        try:
            notional = np.asarray(notionals, dtype=float).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise BadPositionError(f"positions: notionals are not numbers ({exc})") from exc
        kind = None if kinds is None else ([kinds] if isinstance(kinds, str) else list(kinds))
        if len(notional) != len(names) or (kind is not None and len(kind) != len(names)):
            raise BadPositionError(f"positions: {len(names)} assets, {notional.size} notionals and "
                                   f"{len(names) if kind is None else len(kind)} kinds; one of each per position expected")
        index = universe if isinstance(universe, dict) else {a: i for i, a in enumerate(universe)}
        try:
            asset = np.array([index[n] for n in names], dtype=np.int64)
        except (KeyError, TypeError):
            i = next(i for i, n in enumerate(names) if not isinstance(n, str) or n not in index)
            raise UnknownAssetError(f"position {i}: asset {names[i]!r} is not in the scenario set") from None
        if not (np.abs(notional) <= MAX_NOTIONAL).all():  # NaN fails it too
            i = int(np.flatnonzero(~(np.abs(notional) <= MAX_NOTIONAL))[0])
            raise BadPositionError(f"position {i} ({names[i]}): notional {float(notional[i])!r} is not finite or beyond "
                                   f"+-{MAX_NOTIONAL:g}")
        if kind is None:  # all perpetuals (the default): one shared read-only array, no per-call conversion
            return cls(asset, notional, _perps(len(names)))
        if not set(kind) <= _KIND_SET:
            i = next(i for i, k in enumerate(kind) if k not in _KIND_SET)
            raise BadPositionError(f"position {i} ({names[i]}): instrument kind {kind[i]!r} not one of {KINDS}")
        return cls(asset, notional, np.asarray(kind, dtype=str))

    def dense(self, n_assets: int) -> np.ndarray:
        """(n_assets,) net notional per asset: linear positions in one asset add up."""
        return np.bincount(self.asset, weights=self.notional, minlength=n_assets).astype(float)

    @property
    def gross(self) -> float:
        return float(np.abs(self.notional).sum())


@dataclass(frozen=True)
class ScenarioSet:
    """Joint MPOR log returns `returns` (n_scenarios, n_assets) on `dates` (n_scenarios,), weights summing
    to 1 (None: equal), `proxied` marking stand-in returns (None: none)."""

    assets: tuple[str, ...]
    returns: np.ndarray
    dates: np.ndarray
    weights: np.ndarray | None = None
    proxied: np.ndarray | None = None

    def __post_init__(self) -> None:
        s, a = np.shape(self.returns) if np.ndim(self.returns) == 2 else (-1, -1)
        if a != len(self.assets) or len(self.dates) != s:
            raise ValueError(f"scenario set: returns {np.shape(self.returns)}, {len(self.dates)} dates and "
                             f"{len(self.assets)} assets do not match")
        if self.weights is not None and (len(self.weights) != s or not np.isclose(np.sum(self.weights), 1.0)):
            raise ValueError("scenario set: weights must be one per scenario and sum to 1")

    @property
    def n_scenarios(self) -> int:
        return len(self.dates)

    def simple(self) -> np.ndarray:
        return simple_returns(self.returns)


def simple_returns(returns) -> np.ndarray:
    """MPOR log returns -> simple returns e^r - 1 (what a unit long notional gains)."""
    return np.expm1(np.asarray(returns, dtype=float))


def linear_pnl(notional, simple) -> np.ndarray:
    """P&L per scenario of linear books: (n_assets,) or (n_books, n_assets) notionals against simple returns
    (n_scenarios, n_assets) -> (n_scenarios,) or (n_books, n_scenarios)."""
    return np.asarray(notional) @ np.asarray(simple).T


def _tail_weights(sorted_weights: np.ndarray, mass: float) -> np.ndarray:
    """Weight of each scenario (sorted worst first) inside the worst `mass` of probability."""
    before = np.cumsum(sorted_weights, axis=-1) - sorted_weights
    return np.clip(mass - before, 0.0, sorted_weights)


def expected_shortfall(losses, level: float, weights=None) -> np.ndarray:
    """Mean loss over the worst (1 - level) probability mass along the last axis."""
    losses = np.asarray(losses, dtype=float)
    mass = 1.0 - level
    if not 0 < mass < 1:
        raise ValueError(f"expected_shortfall: level must be in (0, 1), got {level}")
    n = losses.shape[-1]
    if weights is None:  # the ceil(k) worst, the least of them counted pro rata (no sort needed)
        k = mass * n
        top = min(n, int(np.ceil(k - 1e-9)))
        worst = np.partition(losses, n - top, axis=-1)[..., n - top:]
        return (worst.sum(-1) - (top - k) * worst[..., 0]) / k  # partition puts the least of them first
    order = np.argsort(-losses, axis=-1)
    w = np.broadcast_to(np.asarray(weights, dtype=float), losses.shape)
    sorted_w = np.take_along_axis(w, order, axis=-1)
    return (np.take_along_axis(losses, order, axis=-1) * _tail_weights(sorted_w, mass)).sum(-1) / mass


def value_at_risk(losses, level: float, weights=None) -> np.ndarray:
    """Lower `level` quantile of the losses along the last axis: the worst loss l with P(L >= l) > 1 - level."""
    losses = np.asarray(losses, dtype=float)
    mass = 1.0 - level
    if not 0 < mass < 1:
        raise ValueError(f"value_at_risk: level must be in (0, 1), got {level}")
    n = losses.shape[-1]
    if weights is None:
        j = min(n, int(np.floor(mass * n + 1e-9)) + 1)  # the j-th worst
        return -np.partition(-losses, j - 1, axis=-1)[..., j - 1]
    order = np.argsort(-losses, axis=-1)
    w = np.broadcast_to(np.asarray(weights, dtype=float), losses.shape)
    cum = np.cumsum(np.take_along_axis(w, order, axis=-1), axis=-1)
    first = np.argmax(cum > mass + 1e-12, axis=-1)[..., None]
    return np.take_along_axis(np.take_along_axis(losses, order, axis=-1), first, axis=-1)[..., 0]


def worst_mean(losses, k: int) -> np.ndarray:
    """Mean of the k largest losses along the last axis."""
    losses = np.asarray(losses, dtype=float)
    n = losses.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"worst_mean: k must be in [1, {n}], got {k}")
    return np.partition(losses, n - k, axis=-1)[..., n - k:].mean(-1)


_SPEC = re.compile(r"^(var|es|worst)(\d+)$")


@lru_cache(maxsize=64)
def parse_measure(spec: str) -> tuple[str, float]:
    """'var99' -> ('var', 0.99), 'es975' -> ('es', 0.975), 'es9976' -> ('es', 0.9976), 'worst6' -> ('worst', 6)."""
    match = _SPEC.match(str(spec))
    if not match:
        raise ValueError(f"risk measure {spec!r}: expected var<level>, es<level> or worst<k> (e.g. es975, worst6)")
    kind, digits = match.groups()
    if kind == "worst":
        return kind, float(int(digits))
    return kind, float(f"0.{digits}") if len(digits) > 2 else int(digits) / 100


def risk_measure(losses, spec: str, weights=None) -> np.ndarray:
    """Risk measure `spec` (see `parse_measure`) of the losses along the last axis. 'worst<k>' on a
    weighted set is the ES of the worst k / n_scenarios probability mass."""
    kind, value = parse_measure(spec)
    if kind == "var":
        return value_at_risk(losses, value, weights)
    if kind == "es":
        return expected_shortfall(losses, value, weights)
    if weights is None:
        return worst_mean(losses, int(value))
    return expected_shortfall(losses, 1.0 - value / np.shape(losses)[-1], weights)


def pnl_measure(spec: str, n: int, weights=None):
    """Risk measure `spec` of books' losses as a function of their P&L (..., n) -> (...): the hot path of
    serving (one partition of the P&L, no negated copy, no re-parsing), one book (n,) or a block of books
    (m, n). Unweighted, it partitions `pnl` IN PLACE (pass a scratch buffer) and sums the tail in float64.
    Same values as `risk_measure(-pnl, spec, weights)`, which it calls for weighted sets."""
    kind, value = parse_measure(spec)
    if weights is not None:
        return lambda pnl: risk_measure(-pnl, spec, weights)
    if kind == "var":
        if not 0 < 1 - value < 1:
            raise ValueError(f"value_at_risk: level must be in (0, 1), got {value}")
        j = min(n, int(np.floor((1 - value) * n + 1e-9)) + 1)  # the j-th worst loss = the j-th smallest P&L

        def quantile(pnl: np.ndarray) -> np.ndarray:
            pnl.partition(j - 1, axis=-1)
            return -pnl[..., j - 1].astype(float)
        return quantile
    k = value if kind == "worst" else (1 - value) * n
    if not 0 < k < n + 1e-9 or (kind == "es" and not 0 < 1 - value < 1):
        raise ValueError(f"risk measure {spec!r}: tail of {k} scenarios out of {n}")
    top = min(n, int(np.ceil(k - 1e-9)))

    def shortfall(pnl: np.ndarray) -> np.ndarray:  # the `top` smallest P&Ls, the largest of them pro rata
        pnl.partition(top - 1, axis=-1)
        worst = pnl[..., :top]
        return -(worst.sum(-1, dtype=np.float64) - (top - k) * worst[..., top - 1].astype(float)) / k
    return shortfall


def tail_measure(losses, spec: str, n: int) -> np.ndarray:
    """Risk measure `spec` (unweighted) of a set of `n` scenarios of which only the part holding the worst
    ones is given (`losses` along the last axis, at least as many as the tail needs)."""
    losses = np.asarray(losses, dtype=float)
    m = losses.shape[-1]
    kind, value = parse_measure(spec)
    if kind == "var":
        j = min(n, int(np.floor((1 - value) * n + 1e-9)) + 1)
        if j > m:
            raise ValueError(f"tail_measure: {spec} needs the {j} worst of {n}, got {m}")
        return -np.partition(-losses, j - 1, axis=-1)[..., j - 1]
    k = value if kind == "worst" else (1 - value) * n
    top = min(n, int(np.ceil(k - 1e-9)))
    if not 0 < k <= n or top > m:
        raise ValueError(f"tail_measure: {spec} needs the {top} worst of {n}, got {m}")
    worst = np.partition(losses, m - top, axis=-1)[..., m - top:]
    return (worst.sum(-1) - (top - k) * worst[..., 0]) / k
