"""Option valuation and the Deribit-style scenario-grid margin of option books (numpy only).

This is the one implementation: the training library's backtest (`volmargin.risk.options` re-exports it)
and a margin service call the same functions, so a served margin is the backtested one.

Conventions (Deribit's, checked against its chains in the tests):
- Black-76 with r = 0 on the option's own underlying F (the expiry's future, or Deribit's synthetic
  forward), T = (expiry - now) / 365 days. `black76` gives USD per option (1 option = 1 BTC);
  `premium_btc` = USD price / F is Deribit's quoted premium.
- Greeks: delta dV/dF (not premium-adjusted), gamma per USD, vega in USD per vol point (0.01 of IV),
  theta in USD per calendar day.
- Smile per expiry: total variance w = IV^2 T interpolated linearly in log-moneyness k = ln(K / F)
  between the quoted strikes; beyond the outermost strikes w (so the IV) is held flat (`Smile`).
- Scenario dynamics: sticky moneyness. When the underlying moves to F (1 + s), an option of strike K
  takes the smile's IV at ln(K / (F (1 + s))): the smile moves with the underlying, as crypto smiles
  mostly do day to day (sticky strike would price a fall at the put wing's level without the smile
  following it). The vol scenario then multiplies that IV.
- The scenarios are valued at the end of the margin period of risk (MPOR): T - mpor; an option that
  expires within the MPOR is settled at its intrinsic value on the scenario price.

Margin accounting is in USD (as for Deribit's linear, USDC-settled options): a book's scenario loss is
the fall of its USD value, futures legs are linear (q x (F' - F)). `margin_fraction` expresses it per
unit of the book's underlying notional.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from volmargin_serving.errors import InputError

DAYS_PER_YEAR = 365.0
VOL_POINT = 0.01  # Deribit's vega is per 1 vol point
MIN_DAYS = 1.0 / 24  # time to expiry floor (days) in the vega-power scaling: no infinite shocks at expiry
MAX_FALL = 0.95  # a price range never takes the underlying below 5% of its level
MIN_VOL_FACTOR = 0.1  # a vol-down shock never takes an IV below 10% of its level
_OFFSET = 64.0  # per-expiry shift of log-moneyness: one np.interp serves every expiry of a batch
_MAX_K = 24.0  # |ln(K / F)| read on the smile at most (a moved underlying adds at most ln 20 < 3 to it)
_EDGE = 31.0  # each expiry's smile ends in flat sentinel nodes at k = +-_EDGE (|ln(K / F')| never nears it)


# ---------------------------------------------------------------- the normal CDF and Black-76

# Abramowitz & Stegun 26.2.17 (Zelen & Severo): for x >= 0, N(x) = 1 - phi(x) P(t), t = 1 / (1 + p x),
# P of degree 5, |error| < 7.5e-8 (tested against scipy.special.ndtr). Numpy has no erf, this is the hot
# loop of every grid and it is branch-free: five in-place Horner steps and one exp.
_P = 0.2316419
_B = (1.330274429, -1.821255978, 1.781477937, -0.356563782, 0.319381530)
_INV_SQRT_2PI = 1.0 / np.sqrt(2 * np.pi)
_B_PDF = tuple(b * _INV_SQRT_2PI for b in _B)


def ndtr(x) -> np.ndarray:
    """Standard normal CDF, vectorised, |error| < 1e-7."""
    x = np.asarray(x, dtype=float)
    return _ndtr(np.atleast_1d(x)).reshape(np.shape(x))


def _ndtr(x: np.ndarray, gauss: np.ndarray | None = None) -> np.ndarray:
    """`ndtr` of a float array of at least one dimension in few numpy calls; `gauss` = exp(-x^2 / 2) if the
    caller has it (exp is the costliest step: Black-76 gets N(d2)'s from N(d1)'s, see `scenario_losses`)."""
    z = np.abs(x)
    t = _P * z
    t += 1.0
    np.reciprocal(t, out=t)
    poly = t * _B_PDF[0]
    for b in _B_PDF[1:]:  # Horner, in place; the coefficients carry 1 / sqrt(2 pi)
        poly += b
        poly *= t
    if gauss is None:
        z *= z
        z *= -0.5
        gauss = np.exp(z, out=z)
    poly *= gauss  # the upper tail 1 - N(|x|)
    np.subtract(0.5, poly, out=poly)
    np.copysign(poly, x, out=poly)
    poly += 0.5  # N(x) = 1/2 + sign(x) (1/2 - tail): no np.where (slow on a slow machine)
    return poly


def npdf(x) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    return _INV_SQRT_2PI * np.exp(-0.5 * x * x)


def intrinsic(forward, strike, is_call) -> np.ndarray:
    diff = np.asarray(forward, dtype=float) - strike
    return np.maximum(np.where(is_call, diff, -diff), 0.0)


def black76(forward, strike, years, sigma, is_call) -> np.ndarray:
    """Undiscounted (r = 0) Black-76 value in USD per option; intrinsic value where years <= 0."""
    forward, strike = np.asarray(forward, dtype=float), np.asarray(strike, dtype=float)
    sd = np.asarray(sigma, dtype=float) * np.sqrt(np.maximum(years, 0.0))
    shape = np.broadcast_shapes(forward.shape, strike.shape, sd.shape, np.shape(is_call))
    forward, strike, sd = (np.atleast_1d(a) for a in (forward, strike, sd))
    sign = np.where(np.atleast_1d(is_call), 1.0, -1.0)
    value = _black76(forward, strike, np.log(strike / forward), sd, sign)
    return value.reshape(shape)


def _black76(forward, strike, log_moneyness, sd, sign) -> np.ndarray:
    """Black-76 in its signed form s (F N(s d1) - K N(s d2)), s = +1 for a call and -1 for a put, from
    k = ln(K / F) and the total standard deviation sd = sigma sqrt(T). sd <= 0 (expired) is taken as
    1e-12, where the formula is the intrinsic value to within 1e-9 of the strike: no branch."""
    sd = np.maximum(sd, 1e-12)
    signed_d = -sign * log_moneyness / sd  # s (d1 + d2) / 2
    half = 0.5 * sign * sd  # s (d1 - d2) / 2
    return np.maximum(sign * (forward * _ndtr(signed_d + half) - strike * _ndtr(signed_d - half)), 0.0)


def premium_btc(forward, strike, years, sigma, is_call) -> np.ndarray:
    """Deribit's premium: the Black-76 USD value over the underlying price, in BTC per option."""
    return black76(forward, strike, years, sigma, is_call) / np.asarray(forward, dtype=float)


def greeks(forward, strike, years, sigma, is_call) -> dict[str, np.ndarray]:
    """Black-76 Greeks in Deribit's units: delta, gamma (per USD), vega (USD per vol point), theta
    (USD per calendar day, the instantaneous rate: within a day of expiry it can exceed the option's value,
    where Deribit's theta is nearer the day's actual decay). An expired option (years <= 0) has the intrinsic
    delta (0 or +-1; at the money the limit, +-1/2) and no gamma, vega or theta."""
    forward, strike = np.asarray(forward, dtype=float), np.asarray(strike, dtype=float)
    years, sigma = np.asarray(years, dtype=float), np.asarray(sigma, dtype=float)
    live = years > 0
    root = np.sqrt(np.where(live, years, 1.0))  # expired: any positive stand-in, their Greeks are set below
    sd = np.where(live, sigma * root, 1e-12)
    d1 = np.log(forward / strike) / sd + 0.5 * sd
    density = np.where(live, npdf(d1), 0.0)
    return {
        "delta": np.where(is_call, ndtr(d1), ndtr(d1) - 1.0),
        "gamma": density / (forward * sd),
        "vega": forward * density * root * VOL_POINT,
        "theta": -forward * density * sigma / (2 * root) / DAYS_PER_YEAR,
    }


# ---------------------------------------------------------------- smiles


@dataclass(frozen=True)
class Smile:
    """The smiles of several expiries at once: nodes of expiry g sorted by log-moneyness, w = IV^2 T.

    `iv(group, k)` interpolates w linearly in k between the nodes of each option's expiry and holds it
    flat beyond them (sentinel nodes at k = +-_EDGE repeat the outermost quotes, so k needs no clipping to
    each expiry's outermost nodes, only to +-_EDGE); all expiries go through one np.interp, each shifted by
    its own offset."""

    years: np.ndarray  # (G,) time to expiry of each expiry group
    x: np.ndarray  # all nodes and sentinels, log-moneyness + _OFFSET x group, ascending
    w: np.ndarray  # total variance at the nodes and sentinels

    @classmethod
    def from_quotes(cls, group, log_moneyness, iv, years) -> "Smile":
        """Nodes from quotes: `group` (n,) int expiry index in 0..G-1, k, IV; `years` (G,). Quotes of one
        strike (a call and a put) are averaged in total variance."""
        group = np.asarray(group, dtype=np.int64)
        years = np.asarray(years, dtype=float)
        k = np.asarray(log_moneyness, dtype=float)
        w = np.asarray(iv, dtype=float) ** 2 * years[group]
        x = np.round(k, 10) + _OFFSET * group
        nodes, inverse = np.unique(x, return_inverse=True)
        w_nodes = np.bincount(inverse, w) / np.bincount(inverse)
        node_group = np.rint(nodes / _OFFSET).astype(np.int64)
        first = np.flatnonzero(np.diff(node_group, prepend=-1))
        last = np.append(first[1:], len(nodes)) - 1
        x = np.concatenate([nodes, _OFFSET * node_group[first] - _EDGE, _OFFSET * node_group[last] + _EDGE])
        order = np.argsort(x, kind="stable")
        return cls(years, x[order], np.concatenate([w_nodes, w_nodes[first], w_nodes[last]])[order])

    @classmethod
    def from_chain(cls, group, strike, forward, iv, years) -> "Smile":
        """Nodes from chain rows: log-moneyness against the median underlying price of each expiry (rows of
        one expiry are read at slightly different moments), so one smile serves every strike of it."""
        group = np.asarray(group, dtype=np.int64)
        forward = np.asarray(forward, dtype=float)
        order = np.argsort(group, kind="stable")
        bounds = np.flatnonzero(np.diff(group[order])) + 1
        medians = np.full(len(years), np.nan)
        for part in np.split(order, bounds):
            medians[group[part[0]]] = np.median(forward[part])
        return cls.from_quotes(group, np.log(np.asarray(strike, dtype=float) / medians[group]), iv, years)

    def iv(self, group, log_moneyness) -> np.ndarray:
        group = np.asarray(group, dtype=np.int64)
        return np.sqrt(self.total_variance(group, log_moneyness) / self.years[group])

    def total_variance(self, group, log_moneyness) -> np.ndarray:
        group = np.asarray(group, dtype=np.int64)
        return np.interp(np.clip(log_moneyness, -_EDGE, _EDGE) + _OFFSET * group, self.x, self.w)


# ---------------------------------------------------------------- books and grids


@dataclass(frozen=True)
class Books:
    """A batch of option books as flat arrays, options sorted by book.

    Options (M,): `book` index, signed `quantity` (contracts; + long), `strike`, `is_call`, `days` to
    expiry, `forward` (the option's own underlying price), `iv` (its mark IV), `group` (its expiry in
    `smile`). Books (B,): a linear futures leg `future_qty` (BTC, + long) at `future_price`, and
    `notional`, the USD amount margins are expressed against (`margin_fraction`)."""

    book: np.ndarray
    quantity: np.ndarray
    strike: np.ndarray
    is_call: np.ndarray
    days: np.ndarray
    forward: np.ndarray
    iv: np.ndarray
    group: np.ndarray
    smile: Smile
    future_qty: np.ndarray
    future_price: np.ndarray
    notional: np.ndarray
    value: np.ndarray = field(default=None)  # (M,) USD value per option now, filled by `prepare`
    own_smile: bool = False  # the smile is of the book's own marks (no smile quotes): see `option_margin`
    cache: dict = field(default=None, repr=False, compare=False)  # per-option arrays (`prepare`), shocks per grid

    @property
    def count(self) -> int:
        return len(self.future_qty)


def prepare(books: Books) -> Books:
    """Books with today's USD value of every option (the loss reference of every scenario) and the
    per-option arrays every grid reuses (a served book is priced many times between position changes).
    Scenario values use Black-76's signed form s (F' N(s d1) - K N(s d2)) with the position folded in:
    `qs_forward` = q s F, `qs_strike` = q s K, and the book's value today `value_sum` = sum of q x value."""
    value = black76(books.forward, books.strike, books.days / DAYS_PER_YEAR, books.iv, books.is_call)
    smile, group = books.smile, books.group
    sign = np.where(books.is_call, 1.0, -1.0)
    log_kf = np.log(books.strike / books.forward)
    signed_forward, signed_strike = books.quantity * sign * books.forward, books.quantity * sign * books.strike
    smile_x = np.clip(log_kf, -_MAX_K, _MAX_K) + _OFFSET * group
    # the scenarios' IVs move along the smile from the option's own mark (sqrt(w) x mark / smile's IV today): a mark
    # off the smile was valued today at the mark and in every cell at the smile, a gain in every cell (session 30's
    # red team: a short put's margin 0.69x with a mark of 0.9 over a smile of 0.6)
    mark_ratio = books.iv * np.sqrt(smile.years[group] / np.interp(smile_x, smile.x, smile.w))
    cache = {
        "log_kf": log_kf[:, None], "smile_x": smile_x[:, None], "mark_ratio": mark_ratio[:, None],
        "inv_years": (1.0 / smile.years[group]), "days": np.maximum(books.days, MIN_DAYS),
        "neg_sign": -sign[:, None], "half_sign": 0.5 * sign[:, None],
        "f_over_k": (books.forward / books.strike)[:, None],
        "qs_forward": signed_forward[:, None], "qs_strike": signed_strike[:, None],
        "signed_position": np.stack([signed_forward, -signed_strike])[:, None, :],  # (2, 1, M), one book
        "value_sum": np.bincount(books.book, books.quantity * value, minlength=books.count)[:, None],
        "linear": (books.future_qty * books.future_price)[:, None],
    }
    return dataclasses.replace(books, value=value, cache=cache)


@dataclass(frozen=True)
class Grid:
    """Scenario-grid parameters per book (B,) arrays or scalars.

    Core grid: `steps` + 1 price moves evenly from -range_down to +range_up (9 for Deribit's ±16%), or, with
    a `spacing`, a lattice (`lattice_moves`): 0 and every multiple of `spacing` out to each range rounded up
    to the lattice, so its points never get sparser than `spacing` and a wider range only adds points (the
    margin never falls as a range widens; at spacing 0.04 a range of at least 16% contains Deribit's 9
    points). Each move under vol up, unchanged and down: IV x (1 + vol_up x (30/days)^p), IV, IV x (1 - vol_down x
    (30/days)^p), with p = power_short under 30 days to expiry, power_long beyond (vega power).
    Extended table: the large `extended` moves under vol up only, each loss dampened to the fraction
    (range / |move|)^2 of it (range_down for falls, range_up for rises): a loss growing like the square
    of the move (a delta-gamma book) weighs the same there as at the edge of the core range, so the
    table binds only where losses accelerate beyond the core range, i.e. far out-of-the-money short
    options whose gamma is still to come. Deribit publishes the moves and that only "a fraction" of the
    P&L counts, after "a dampener", not the formula; this quadratic dampener is our choice. Where a range is
    wider than an extended move (a forecast grid past 33% down or 50% up) the weight exceeds 1: that move lies
    inside the core range and its loss counts more than once, an over-charge kept as measured (not capped).
    IM = max(0, worst core loss, worst dampened extended loss) + contingency x net short contracts per
    strike; MM = maintenance x IM.
    `keep_vol` = (up, down), e.g. `DERIBIT_VOL`: two more vol states at every core move and under the
    extended table, IV x (1 + up x scaling) and IV x (1 - down x scaling), beside the grid's own shocks.
    A book's margin is not monotone in the vol shocks (a calendar long vol at one tenor and short at
    another can lose more at a smaller shock), so a forecast grid whose shocks differ from static's can
    miss static's binding cell; keeping static's shocks as extra states, on a lattice whose range is at
    least static's, makes its cells a superset of static's: its margin is never below static's.
    `mpor_days` is the MPOR the moves cover: priced at a longer one, they widen (`grid_for_mpor`)."""

    range_down: np.ndarray | float = 0.16
    range_up: np.ndarray | float = 0.16
    vol_up: np.ndarray | float = 0.50
    vol_down: np.ndarray | float = 0.25
    power_short: float = 0.30
    power_long: float = 0.13
    steps: int = 8
    extended: tuple[float, ...] = (-0.66, -0.33, 0.50, 1.00, 2.00, 3.00, 4.00, 5.00)
    contingency: float = 0.0  # USD per net short contract per strike (Deribit's current S:PM has none)
    maintenance: float = 0.8
    spacing: float | None = None  # lattice spacing of the core price moves; None: `steps` even steps
    keep_vol: tuple[float, float] | None = None  # (vol_up, vol_down) kept as extra vol states; None: none
    mpor_days: float = 1.0  # the MPOR its moves cover (see `grid_for_mpor`)


DERIBIT_BTC = Grid()  # Deribit's published BTC parameters
DERIBIT_ETH = Grid(range_down=0.18, range_up=0.18)  # ETH: the price moved across +-18%, the rest as BTC's
DERIBIT_VOL = (DERIBIT_BTC.vol_up, DERIBIT_BTC.vol_down)  # its vol shocks, for `Grid.keep_vol`
DERIBIT_GRIDS = {"btc": DERIBIT_BTC, "eth": DERIBIT_ETH}  # the published grid of each underlying
GRID_PARAMETERS = ("range_down", "range_up", "vol_up", "vol_down")  # those set per day from the forecasts


def scale_grid(grid: Grid, scale) -> Grid:
    """The grid with its price ranges and vol shocks multiplied by `scale` (scalar or (B,))."""
    scale = np.asarray(scale, dtype=float)
    return dataclasses.replace(grid, **{name: getattr(grid, name) * scale for name in GRID_PARAMETERS})


# Snapshot times drift by hours (the real chains' pairs lie 0.96 to 1.04 days apart), so an MPOR within this factor
# of the grid's is the grid's (the backtest pairs no snapshots further apart than this either)
MPOR_SLACK = 1.5


def grid_for_mpor(grid: Grid, mpor_days) -> Grid:
    """`grid` for books valued `mpor_days` (scalar or (B,)) ahead: where that is more than `MPOR_SLACK` x the
    MPOR its moves cover, its price ranges and vol shocks times sqrt(mpor_days / grid.mpor_days), the square root
    of time; never narrowed. Without it a 10-day MPOR on a 1-day grid priced a short strangle at 0.72x its
    1-day margin: the options' decay over 10 days counted, the moves stayed a day's (session 31's red team)."""
    ratio = np.asarray(mpor_days, dtype=float) / _positive("grid mpor_days", grid.mpor_days)
    if not (ratio > MPOR_SLACK).any():
        return grid
    return scale_grid(grid, np.where(ratio > MPOR_SLACK, np.sqrt(ratio), 1.0))


class Cells(NamedTuple):
    """A grid's cells for B books: C cells over U distinct price moves (17 of Deribit's 35 cells: the core
    moves repeat under the three vol states)."""

    moves: np.ndarray  # (B, C) relative price move of each cell
    growth: np.ndarray  # (B, C) 1 + move
    log_growth: np.ndarray  # (B, U) ln(1 + move) of each distinct move
    move: np.ndarray  # (C,) the distinct move of each cell
    vol_state: np.ndarray  # (C,) 0 vol up, 1 unchanged, 2 down; with `Grid.keep_vol` 3 kept up, 4 kept down
    weight: np.ndarray  # (B, C) loss weight: 1 on the core grid, the dampener on the extended table


def _cells(grid: Grid, count: int) -> Cells:
    """The cells of `grid` for `count` books; cached for a grid of scalars (a served static grid)."""
    if count == 1:
        try:
            return _cached_cells(grid)
        except TypeError:  # array parameters are not hashable
            pass
    return _build_cells(grid, count)


def lattice_moves(range_down, range_up, spacing: float) -> np.ndarray:
    """(B, P) core price moves of a lattice grid: 0 and +-j x `spacing` for j = 1 .. ceil(range / spacing) on
    each side (falls also capped at MAX_FALL). The batch shares P columns: a book whose rounded range is
    narrower than the batch's widest repeats its edge move (a repeated cell changes no maximum)."""
    down = np.minimum(np.atleast_1d(np.asarray(range_down, dtype=float)), MAX_FALL)
    up = np.atleast_1d(np.asarray(range_up, dtype=float))
    down, up = np.broadcast_arrays(down, up)
    # the tolerance keeps a range on the lattice (0.16 / 0.04 = 4.000000000000001) from taking one more point
    edge_down, edge_up = (np.ceil(r / spacing - 1e-9) * spacing for r in (down, up))
    # at least one point a side, so that a NaN range gives NaN moves (a NaN margin, as on the even grid)
    sides = [int(np.nanmax(np.ceil(r / spacing - 1e-9), initial=1)) for r in (down, up)]
    steps_down, steps_up = (np.arange(1, n + 1) * spacing for n in sides)
    falls = -np.minimum(np.minimum(steps_down[::-1][None, :], edge_down[:, None]), MAX_FALL)
    rises = np.minimum(steps_up[None, :], edge_up[:, None])
    return np.hstack([falls, np.zeros((len(down), 1)), rises])


def _core_moves(grid: Grid, count: int) -> np.ndarray:
    """(B, P) core price moves: `steps` even steps over each range, or the lattice of `grid.spacing`."""
    down = np.broadcast_to(np.asarray(grid.range_down, dtype=float), (count,))
    up = np.broadcast_to(np.asarray(grid.range_up, dtype=float), (count,))
    if grid.spacing is not None:
        return lattice_moves(down, up, grid.spacing)
    half = grid.steps // 2
    unit = np.arange(-half, half + 1) / half  # -1 .. 1
    return np.where(unit < 0, unit * np.minimum(down, MAX_FALL)[:, None], unit * up[:, None])


def _build_cells(grid: Grid, count: int) -> Cells:
    for name in GRID_PARAMETERS:  # here, not per call: a served grid of scalars is cached
        if np.size(getattr(grid, name)) not in (1, count):
            raise ForecastInputError(f"grid {name}: {np.size(getattr(grid, name))} values for {count} book(s); one, "
                                     "or one per book")
    core = _core_moves(grid, count)  # (B, P)
    points = core.shape[1]
    down = np.minimum(np.broadcast_to(np.asarray(grid.range_down, dtype=float), (count,)), MAX_FALL)[:, None]
    up = np.broadcast_to(np.asarray(grid.range_up, dtype=float), (count,))[:, None]
    ext = np.asarray(grid.extended, dtype=float)
    distinct = np.hstack([core, np.broadcast_to(ext, (count, len(ext)))])  # (B, U)
    core_states = [0, 1, 2, 3, 4] if grid.keep_vol is not None else [0, 1, 2]
    ext_states = [0, 3] if grid.keep_vol is not None else [0]  # the extended table under vol up (each kind)
    move = np.concatenate([np.repeat(np.arange(points), len(core_states)),
                           np.tile(points + np.arange(len(ext)), len(ext_states))])
    vol_state = np.concatenate([np.tile(core_states, points), np.repeat(ext_states, len(ext))])
    dampener = (np.where(ext < 0, down, up) / np.abs(ext)) ** 2
    weight = np.hstack([np.ones((count, len(core_states) * points))] + [dampener] * len(ext_states))
    moves = distinct[:, move]
    return Cells(moves, 1.0 + moves, np.log1p(distinct), move, vol_state, weight)


@functools.lru_cache(maxsize=64)
def _cached_cells(grid: Grid) -> Cells:
    cells = _build_cells(grid, 1)
    for array in cells:
        array.flags.writeable = False  # shared by every call on this grid
    return cells


def scenario_losses(books: Books, grid: Grid, mpor_days: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """(B, C) USD loss of every book in every grid cell, valued at the end of the MPOR (`mpor_days`, scalar
    or (B,)), and the (B, C) weights of the cells (1 on the core grid, the dampener on the extended table).

    Written for few numpy calls (a served book of 50 options is mostly call overhead): per-option arrays
    come from `prepare`, a grid's cells and per-option shocks from caches, one book needs no gather, the smile
    is read once per distinct price move (not per cell), N(d1) and N(d2) share one exp and one CDF call,
    and Black-76's signed form s (F' N(s d1) - K N(s d2)) sums over a book's options as a matrix product."""
    books = books if books.cache is not None else prepare(books)
    b, c = books.count, books.cache
    mpor_days = _checked_mpor(mpor_days, b)
    grid = grid_for_mpor(grid, mpor_days)
    cells = _cells(grid, b)
    one = b == 1
    per_option = (lambda a: a) if one else (lambda a: a[books.book])  # noqa: E731
    # per distinct move: ln(K / F') = ln(K / F) - ln(1 + s) and the smile's IV^2 T there (sticky moneyness)
    log_growth = per_option(cells.log_growth)
    root_w = np.sqrt(np.interp(c["smile_x"] - log_growth, books.smile.x, books.smile.w))
    root_w *= c["mark_ratio"]
    k_over_root_w = c["log_kf"] - log_growth
    k_over_root_w /= root_w
    # per cell: sd = sqrt(w) x shock; s d1, s d2 = -s k / sd +- s sd / 2
    shock, signed_inverse = _shock(books, grid, cells, mpor_days, one)
    half_sd = np.take(root_w, cells.move, axis=1)
    half_sd *= shock
    half_sd *= c["half_sign"]  # s sd / 2
    d = np.empty((2,) + half_sd.shape)
    np.take(k_over_root_w, cells.move, axis=1, out=d[0])
    d[0] *= signed_inverse  # -s k / sd
    np.subtract(d[0], half_sd, out=d[1])
    d[0] += half_sd
    growth = per_option(cells.growth)
    gauss = np.empty_like(d)  # exp(-d2^2 / 2) = exp(-d1^2 / 2) F' / K: one exp for both
    np.multiply(d[0], d[0], out=gauss[0])
    gauss[0] *= -0.5
    np.exp(gauss[0], out=gauss[0])
    np.multiply(c["f_over_k"], growth, out=gauss[1])
    gauss[1] *= gauss[0]
    n = _ndtr(d, gauss)  # N(s d1), N(s d2)
    if one:  # sum over options of q s F N(s d1) (1 + move) - q s K N(s d2)
        terms = np.matmul(c["signed_position"], n)  # (2, 1, C)
        book_pnl = terms[0] * growth
        book_pnl += terms[1]
    else:
        pnl = n[0]
        pnl *= c["qs_forward"] * growth
        n[1] *= c["qs_strike"]
        pnl -= n[1]
        book_pnl = np.zeros((b, pnl.shape[1]))
        has = np.bincount(books.book, minlength=b) > 0
        if len(books.book):
            book_pnl[has] = np.add.reduceat(pnl, np.searchsorted(books.book, np.arange(b))[has], axis=0)
    book_pnl -= c["value_sum"]
    book_pnl += c["linear"] * cells.moves
    np.negative(book_pnl, out=book_pnl)
    return book_pnl, cells.weight


def _shock(books: Books, grid: Grid, cells: Cells, mpor_days, one: bool) -> tuple[np.ndarray, np.ndarray]:
    """(M, C) factor from sqrt(w) of a cell's move to its sd at the MPOR's end: the vol shock (1 + vol_up x
    scaling, 1 or max(1 - vol_down x scaling, 0.1) by the cell's vol state, scaling = (30 / days)^p) x
    sqrt((T - mpor)+ / T), at least 1e-12 (an option expiring within the MPOR is worth its intrinsic value);
    and -s / that factor. Cached in the book for a grid of scalars and a scalar MPOR: they depend on the
    grid, the MPOR and the days to expiry only."""
    c, key = books.cache, None
    if np.ndim(mpor_days) == 0:
        try:
            key = ("shock", grid, float(mpor_days))
            return c[key]
        except TypeError:  # array grid parameters are not hashable
            key = None
        except KeyError:
            pass
    days = c["days"]
    scaling = (30.0 / days) ** np.where(days < 30, grid.power_short, grid.power_long)
    vol_up, vol_down = (np.asarray(v, dtype=float) for v in (grid.vol_up, grid.vol_down))
    pick = lambda v: v if v.ndim == 0 or one else v[books.book]  # noqa: E731
    up_and_down = lambda up, down: [1.0 + up * scaling, np.maximum(1.0 - down * scaling, MIN_VOL_FACTOR)]  # noqa: E731
    (up, down), unchanged = up_and_down(pick(vol_up), pick(vol_down)), np.ones_like(scaling)
    states = [up, unchanged, down] + (up_and_down(*grid.keep_vol) if grid.keep_vol is not None else [])
    factors = np.stack(states, axis=1)[:, cells.vol_state]
    mpor = mpor_days if np.ndim(mpor_days) == 0 else np.asarray(mpor_days, dtype=float).reshape(-1)[books.book]
    factors *= np.sqrt(np.maximum(books.days - mpor, 0.0) / DAYS_PER_YEAR * c["inv_years"])[:, None]
    np.maximum(factors, 1e-12, out=factors)
    result = factors, c["neg_sign"] / factors
    if key is not None:
        for array in result:
            array.flags.writeable = False
        c[key] = result
    return result


def contingency(books: Books, grid: Grid) -> np.ndarray:
    """(B,) add-on: `grid.contingency` per net short contract per (book, strike)."""
    if not grid.contingency:
        return np.zeros(books.count)
    key = books.book.astype(float) * 1e9 + books.strike
    keys, inverse = np.unique(key, return_inverse=True)
    net = np.bincount(inverse, books.quantity)
    owner = np.rint(np.floor(keys / 1e9)).astype(np.int64)
    return grid.contingency * np.bincount(owner, np.maximum(-net, 0.0), minlength=books.count)


def _checked_mpor(mpor_days, count: int):
    """The MPOR in days as a float or (count,) floats, each finite and positive; ForecastInputError otherwise (a
    NaN priced a NaN margin, 0 or a negative one a margin)."""
    if type(mpor_days) is float and 0 < mpor_days < math.inf:  # the served call's: no array to build
        return mpor_days
    days = np.asarray(_positive("mpor_days", mpor_days), dtype=float)
    if days.ndim == 0:
        return float(days)
    if days.shape != (count,):
        raise ForecastInputError(f"mpor_days: {days.shape} values for {count} book(s); one, or one per book")
    return days


def initial_margin(books: Books, grid: Grid, mpor_days: float = 1.0) -> np.ndarray:
    """(B,) initial margin in USD of each book: see `Grid`."""
    loss, weight = scenario_losses(books, grid, mpor_days)
    return np.maximum((loss * weight).max(axis=1), 0.0) + contingency(books, grid)


def margin_fraction(books: Books, margin) -> np.ndarray:
    return np.asarray(margin, dtype=float) / books.notional


# ---------------------------------------------------------------- grids from forecasts


# The largest log move a grid forecast may carry (a 20-fold rise, a 95% fall or a 20-fold IV over the MPOR).
# Real 1-day 99% VaRs of BTC lie near 0.02-0.3, DVOL's log-change quantiles near -0.4 .. 0.7; a VaR sent in
# percent (7 for 7%) or basis points would read as an e^7-fold move.
MAX_LOG_MOVE = 3.0


def grid_from_forecasts(var_long, var_short, iv_up, iv_down, scale=1.0, base: Grid = DERIBIT_BTC) -> Grid:
    """The autocalibrated grid of each book/day: price ranges from the log-return VaR of a long (fall)
    and a short (rise) position over the MPOR, vol shocks from the upper and lower quantiles of the
    log change of the 30-day implied volatility (DVOL) over the MPOR, all times `scale`. The vega power
    scaling of `base` carries the 30-day shock to other expiries (DVOL is the 30-day IV). A NaN,
    negative VaR, an IV move on the wrong side of 0 or a move beyond `MAX_LOG_MOVE` raises
    `ForecastInputError` naming the input."""
    var_long, var_short, iv_up, iv_down = (_checked_move(name, value) for name, value in
                                           (("var_long", var_long), ("var_short", var_short),
                                            ("iv_up", iv_up), ("iv_down", iv_down)))
    for name, value in (("var_long", var_long), ("var_short", var_short)):
        if (value < 0).any():
            raise ForecastInputError(f"{name} = {value[value < 0].flat[0]:g} is negative: a VaR is the size of a loss")
        if (value < MIN_VAR).any():  # 0 for a missing value gave a short straddle no margin at all
            raise ForecastInputError(f"{name} = {value[value < MIN_VAR].flat[0]:g}: a VaR below {MIN_VAR:g} over the "
                                     "MPOR is no forecast (a missing value sent as 0?)")
    # the IV moves are signed quantiles (historical_iv_quantiles' order reversed): a size sent as iv_down
    # (+0.15) read as a quantile above 0 gave no vol-down shock, a long-vega book a tenth of its margin
    for name, value, wrong in (("iv_up", iv_up, iv_up < 0), ("iv_down", iv_down, iv_down > 0)):
        if wrong.any():
            raise ForecastInputError(f"{name} = {value[wrong].flat[0]:g}: the IV moves are the signed upper and lower "
                                     "quantiles of the log IV change, iv_up >= 0 >= iv_down")
    return _grid_of_moves(var_long, var_short, iv_up, iv_down, _positive("scale", scale), base)


def _positive(name: str, value, low: float = 0.0, strict: bool = True):
    """`value` (scalar or array) when every entry is a finite number above `low` (at least, if not `strict`);
    else ForecastInputError naming it: a NaN, zero or negative scale or fraction lowered margins silently."""
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ForecastInputError(f"{name} = {value!r} is not a number") from None
    if not (np.isfinite(array) & ((array > low) if strict else (array >= low))).all():
        raise ForecastInputError(f"{name} = {value!r} must be finite and {'>' if strict else '>='} {low:g}")
    return value


def _grid_of_moves(fall, rise, iv_up, iv_down, scale=1.0, base: Grid = DERIBIT_BTC) -> Grid:
    """`grid_from_forecasts` without its checks: NaN moves give NaN parameters (for `stressed_grid`)."""
    scale = np.asarray(scale, dtype=float)
    return Grid(range_down=scale * -np.expm1(-np.asarray(fall, dtype=float)),
                range_up=scale * np.expm1(np.asarray(rise, dtype=float)),
                vol_up=scale * np.expm1(np.maximum(iv_up, 0.0)), vol_down=scale * -np.expm1(np.minimum(iv_down, 0.0)),
                power_short=base.power_short, power_long=base.power_long, steps=base.steps,
                extended=base.extended, contingency=base.contingency, maintenance=base.maintenance,
                spacing=base.spacing, keep_vol=base.keep_vol, mpor_days=base.mpor_days)


def _checked_move(name: str, value) -> np.ndarray:
    """A log-move forecast as a float array, refused (`ForecastInputError`) if NaN or beyond `MAX_LOG_MOVE`."""
    try:
        value = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ForecastInputError(f"{name} = {value!r} is not a number") from None
    bad = ~(np.abs(value) <= MAX_LOG_MOVE)
    if bad.any():
        raise ForecastInputError(f"{name} = {value[bad].flat[0]:g} is not a log move over the MPOR within "
                                 f"+-{MAX_LOG_MOVE:g} (NaN, or sent in percent or basis points?)")
    return value


def stressed_grid(grid: Grid, price_moves, iv_moves, fraction: float) -> Grid:
    """The stressed-period component: `grid` with each parameter at least `fraction` x the one that the
    worst realised 1-day moves of a long look-back would set, read as `grid_from_forecasts` reads the
    forecasts. `price_moves` = (largest log fall, largest log rise) of the underlying, `iv_moves` the same
    of DVOL (signed, scalars or (B,); `worst_log_changes`). A grid set from forecasts after calm weeks then
    never falls below a fraction of the last stress, as a CCP's stressed VaR or stressed-period weight
    keeps it; NaN moves (no history yet) leave the parameter as it is."""
    (fall, rise), (iv_fall, iv_rise) = price_moves, iv_moves
    for name, move, sign in (("price_moves", fall, -1), ("price_moves", rise, 1), ("iv_moves", iv_fall, -1),
                             ("iv_moves", iv_rise, 1)):
        move = np.asarray(move, dtype=float)  # NaN (no history yet) passes: it leaves its parameter as it is
        if (np.abs(move) > MAX_LOG_MOVE).any():
            raise ForecastInputError(f"{name}: a log move of {move!r} is beyond +-{MAX_LOG_MOVE:g}")
        if (sign * move < 0).any():  # a fall sent as a size, or the pair swapped, dropped the stressed floor
            raise ForecastInputError(f"{name}: (largest fall, largest rise) are signed log moves, fall <= 0 <= rise; "
                                     f"got {'a fall' if sign < 0 else 'a rise'} of {move!r}")
    floor = _grid_of_moves(-np.asarray(fall, dtype=float), rise, iv_rise, iv_fall, base=grid)
    return floored_grid(grid, floor, fraction)


def floored_grid(grid: Grid, floor: Grid, fraction: float = 1.0) -> Grid:
    """`grid` with each price range and vol shock at least `fraction` x `floor`'s (NaN in `floor`: no floor).
    The one floor of the stressed-period component (`stressed_grid`) and of the peak memory (`peak_grid`)."""
    fraction = _positive("fraction", fraction, strict=False)
    return dataclasses.replace(grid, **{name: np.fmax(getattr(grid, name), fraction * np.asarray(getattr(floor, name)))
                                        for name in GRID_PARAMETERS})


def peak_grid(grid: Grid, recent_peak: Grid, fraction: float) -> Grid:
    """The peak memory: `grid` with each parameter at least `fraction` x the largest value that parameter
    took over a look-back (`recent_peak`, today's grid included; a service keeps the running maxima of its
    daily grids). After a stress the grid may fall with the forecasts, but not below that share of the
    stress until it leaves the look-back: a crash that follows a calm spell meets a grid still carrying
    part of the last one."""
    return floored_grid(grid, recent_peak, fraction)


def historical_iv_quantiles(dvol_close, window: int = 365, levels=(0.01, 0.99), horizon: int = 1,
                            min_obs: int = 60) -> np.ndarray:
    """(2,) lower and upper empirical quantiles of the `horizon`-day log change of a daily DVOL close
    series over its last `window` changes (all history known today: no look-ahead)."""
    return _log_change_quantiles(dvol_close, "dvol_close", window, levels, horizon, min_obs)


def worst_log_changes(close, window: int = 365, min_obs: int = 30, name: str = "close") -> np.ndarray:
    """(2,) largest 1-day log fall and rise (signed) of a daily close series (the underlying's or DVOL's)
    over its last `window` changes: the look-back of `stressed_grid`."""
    return _log_change_quantiles(close, name, window, (0.0, 1.0), 1, min_obs)


def _log_change_quantiles(close, name: str, window: int, levels, horizon: int, min_obs: int) -> np.ndarray:
    close = np.asarray(close, dtype=float)
    if close.ndim != 1 or not np.all(np.isfinite(close)) or np.any(close <= 0):
        raise OptionQuoteError(f"{name}: expected a 1-D series of positive finite daily closes")
    change = np.log(close[horizon:] / close[:-horizon])[-window:]
    if len(change) < min_obs:
        raise OptionQuoteError(f"{name}: {len(change)} changes, at least {min_obs} needed")
    return np.quantile(change, levels)


# ---------------------------------------------------------------- serving entry point


class ForecastInputError(InputError):
    """A forecast given to the option grid (VaR or IV-move quantile) that is not a usable log move."""


class OptionQuoteError(InputError):
    """An unusable option quote: NaN or non-positive IV, price or strike, an expired option, a bad shape;
    the message names the option (position index) and the field."""


@dataclass(frozen=True)
class OptionMargin:
    initial: float  # USD
    maintenance: float  # USD
    fraction: float  # initial / notional
    worst_cell: int  # index of the binding cell (core grid cells first, then the extended table)
    losses: np.ndarray  # (C,) weighted USD loss per cell


# The highest implied volatility (a fraction a year) a quote may carry. The real chains' mark IVs lie in
# 0.37 .. 2.23; an IV sent in percent (65 for 65%, Deribit's API unit) read as 6,500% prices options near
# their bounds, and a short put's margin falls to zero.
MAX_IV = 10.0
# The lowest: an IV of 1e-300 passed as positive and priced a NaN margin (its variance underflows to 0).
MIN_IV = 1e-4
# The longest time to expiry a quote may carry: ten years. Days sent in minutes or seconds (43,200 or 2.6
# million for 30 days) read as centuries: a short put's margin fell to 0.8% or 0 of its 30-day margin.
MAX_DAYS = 3660.0
# A venue lists one daily expiry within a day of any moment (Deribit: 08:00 UTC), so a chain or book with this
# many expiries all under one day has its days to expiry in another unit (years: 0.082 for 30 days), which
# settles every option within the MPOR and prices no vega.
MIN_EXPIRIES_FOR_UNIT_CHECK = 3
# The least VaR forecast over the MPOR `grid_from_forecasts` takes: far below any market's (a stablecoin's daily
# 99% VaR is ~1e-4), so below it the value is missing, not small.
MIN_VAR = 1e-5
# A leg held at less than this share of the book's largest quantity does not quote the book's fallback smile.
# (1e-6 until session 31: a 0.0001-contract leg beside 100-contract ones still bent their smile, 8-16% off the margin)
MIN_QUOTED_SHARE = 0.01
# The largest price (strike, forward, future price, USD) and size (contracts, futures) a book may give: a forward
# of 1e308 priced an infinite margin, a future of 1e308 contracts a NaN one (session 30's red team).
MAX_PRICE, MAX_SIZE = 1e12, 1e9


def _check(name: str, values: np.ndarray, positive: bool = True, what: str = "option") -> None:
    bad = ~np.isfinite(values) | ((values <= 0) if positive else False)
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        expected = "a positive finite number" if positive else "a finite number"
        raise OptionQuoteError(f"{what} {i}: {name} is {float(values[i])!r}, expected {expected}")


def _check_at_most(name: str, values: np.ndarray, most: float, what: str = "option") -> None:
    if np.any(values > most):
        i = int(np.flatnonzero(values > most)[0])
        raise OptionQuoteError(f"{what} {i}: {name} is {float(values[i])!r}, above {most:g}")


def _check_moneyness(strike: np.ndarray, forward: np.ndarray, what: str = "option") -> None:
    """|ln(K / F)| within the smile's reach (`_MAX_K`): beyond it a quote was read on another expiry's smile."""
    far = np.abs(np.log(strike / forward)) > _MAX_K
    if np.any(far):
        i = int(np.flatnonzero(far)[0])
        raise OptionQuoteError(f"{what} {i}: strike {float(strike[i])!r} is e^{_MAX_K:g} times off the forward "
                               f"{float(forward[i])!r} or more")


def _check_iv(iv: np.ndarray, what: str = "option") -> None:
    _check("iv", iv, what=what)
    if np.any(iv < MIN_IV):
        i = int(np.flatnonzero(iv < MIN_IV)[0])
        raise OptionQuoteError(f"{what} {i}: iv is {float(iv[i])!r}, below {MIN_IV:g} a year")
    if np.any(iv > MAX_IV):
        i = int(np.flatnonzero(iv > MAX_IV)[0])
        raise OptionQuoteError(f"{what} {i}: iv is {float(iv[i])!r}, above {MAX_IV:g} ({MAX_IV:,.0%} a year); implied "
                               "volatility is a fraction (0.65 for 65%)")


def _check_days(days: np.ndarray, what: str = "option") -> None:
    if np.any(days > MAX_DAYS):
        i = int(np.flatnonzero(days > MAX_DAYS)[0])
        raise OptionQuoteError(f"{what} {i}: days to expiry {float(days[i])!r} is beyond {MAX_DAYS:g} (ten years); "
                               "days sent in hours, minutes or seconds?")


def _flags(is_call) -> np.ndarray:
    """`is_call` as booleans from booleans or 0/1 numbers: a string ('put', 'False') would read as True."""
    values = np.atleast_1d(np.asarray(is_call))
    if values.ndim != 1:
        raise OptionQuoteError(f"is_call must be a 1-D array, got shape {values.shape}")
    if values.dtype == bool:
        return values
    if values.dtype.kind in "iuf" and np.isin(values, (0, 1)).all():
        return values.astype(bool)
    raise OptionQuoteError(f"is_call must be booleans (or 0/1), got {values[:3].tolist()} of dtype {values.dtype}")


def book_from_positions(quantity, strike, is_call, days, forward, iv, future_qty: float = 0.0,
                        future_price: float | None = None, smile_quotes=None) -> Books:
    """One book (B = 1) from position arrays, validated. `days` > 0 to expiry, `forward` each option's
    underlying price, `iv` its mark IV (fraction). The smile of each expiry (keyed by `days`) comes
    from `smile_quotes` = (days, strike, forward, iv) arrays of the chain if given, else from the book's
    own options. Bad quotes raise `OptionQuoteError`."""
    try:
        arrays = [np.atleast_1d(np.asarray(a, dtype=float)) for a in (quantity, strike, days, forward, iv)]
        future_qty = float(future_qty)
        future_price = None if future_price is None else float(future_price)
    except (TypeError, ValueError) as exc:
        raise OptionQuoteError(f"positions: a numeric field holds something else ({exc})") from None
    quantity, strike, days, forward, iv = arrays
    is_call = _flags(is_call)
    if len({len(a) for a in (*arrays, is_call)}) != 1 or any(a.ndim != 1 for a in arrays) or not len(is_call):
        raise OptionQuoteError("positions: quantity, strike, is_call, days, forward and iv must be 1-D arrays of one "
                               "length, at least one option")
    if not (abs(future_qty) <= MAX_SIZE) or not (future_price is None or 0 < future_price <= MAX_PRICE):
        raise OptionQuoteError(f"future_qty {future_qty!r} must be finite, at most {MAX_SIZE:g} contracts, and "
                               f"future_price {future_price!r} positive, at most {MAX_PRICE:g}")
    _check("quantity", quantity, positive=False)
    _check_at_most("quantity", np.abs(quantity), MAX_SIZE)
    for name, values in (("strike", strike), ("forward", forward)):
        _check(name, values)
        _check_at_most(name, values, MAX_PRICE)
    _check_moneyness(strike, forward)
    _check_iv(iv)
    expired = ~(days > 0)
    if np.any(expired):
        i = int(np.flatnonzero(expired)[0])
        raise OptionQuoteError(f"option {i}: expired or undated (days to expiry {days[i]!r})")
    _check_days(days)
    leg = np.arange(len(quantity))
    if np.any(quantity) and not np.all(quantity):  # a closed leg adds nothing, and needs no quote of its expiry
        leg = np.flatnonzero(quantity)
        quantity, strike, is_call, days, forward, iv = (a[leg] for a in (quantity, strike, is_call, days, forward, iv))
    own_smile = smile_quotes is None
    if own_smile:  # the book's own marks, of the legs it holds: a leg of no size is no quote to trust
        held = np.abs(quantity) >= MIN_QUOTED_SHARE * np.abs(quantity).max() if np.any(quantity) else slice(None)
        smile_quotes = (days[held], strike[held], forward[held], iv[held])
    try:
        q_days, q_strike, q_forward, q_iv = (np.atleast_1d(np.asarray(a, dtype=float)) for a in smile_quotes)
    except (TypeError, ValueError) as exc:
        raise OptionQuoteError(f"smile_quotes: expected four 1-D arrays (days, strike, forward, iv): {exc}") from None
    if len({a.shape for a in (q_days, q_strike, q_forward, q_iv)}) != 1 or q_days.ndim != 1:
        raise OptionQuoteError("smile_quotes: days, strike, forward and iv must be 1-D arrays of one length")
    for name, values in (("days", q_days), ("strike", q_strike), ("forward", q_forward)):
        _check(name, values, what="smile quote")
    _check_moneyness(q_strike, q_forward, what="smile quote")
    _check_days(q_days, what="smile quote")
    _check_iv(q_iv, what="smile quote")
    expiries, q_group = np.unique(q_days, return_inverse=True)
    if len(expiries) >= MIN_EXPIRIES_FOR_UNIT_CHECK and expiries[-1] < 1.0:
        raise OptionQuoteError(f"smile quotes: {len(expiries)} expiries all within a day ({expiries[0]:g} .. "
                               f"{expiries[-1]:g} days to expiry); days sent as years?")
    group = np.searchsorted(expiries, days)
    unquoted = (group >= len(expiries)) | (expiries[np.minimum(group, len(expiries) - 1)] != days)
    if np.any(unquoted):
        i = int(np.flatnonzero(unquoted)[0])
        raise OptionQuoteError(f"option {leg[i]}: smile_quotes hold no quote for its expiry ({days[i]:g} days)")
    smile = Smile.from_chain(q_group, q_strike, q_forward, q_iv, expiries / DAYS_PER_YEAR)
    spot = float(np.median(forward)) if future_price is None else float(future_price)
    notional = spot * max(float(np.abs(quantity).sum()), abs(future_qty), 1e-12)
    books = Books(np.zeros(len(strike), dtype=np.int64), quantity, strike, is_call, days, forward, iv, group,
                  smile, np.array([float(future_qty)]), np.array([spot]), np.array([notional]), own_smile=own_smile)
    return prepare(books)


def _own_marks(books: Books) -> Books:
    """The book with every option on a smile of its own mark alone (each leg sticky at its mark), for the bound
    of `option_margin` on a book without smile quotes."""
    legs = np.arange(len(books.strike))
    smile = Smile.from_chain(legs, books.strike, books.forward, books.iv, books.days / DAYS_PER_YEAR)
    return prepare(dataclasses.replace(books, group=legs, smile=smile, own_smile=False, value=None, cache=None))


def option_margin(books: Books, grid: Grid = DERIBIT_BTC, mpor_days: float = 1.0) -> OptionMargin:
    """The margin of one prepared book (see `book_from_positions`) on `grid`. A book built without smile quotes
    takes its smile from its own marks, and a leg's mark bends the smile that moves the other legs' IVs: there
    its margin is at least that with every leg at its own mark (a short put's margin fell 15% with a 0.01-contract
    call beside it, 49% with that call's mark off the market; session 31's red team)."""
    margin = _margin_on(books, grid, mpor_days)
    if books.own_smile:
        twin = books.cache.get("own_marks") if books.cache is not None else None
        if twin is None:
            twin = _own_marks(books)
            if books.cache is not None:
                books.cache["own_marks"] = twin
        margin = max(margin, _margin_on(twin, grid, mpor_days), key=lambda m: m.initial)
    return margin


def _margin_on(books: Books, grid: Grid, mpor_days) -> OptionMargin:
    loss, weight = scenario_losses(books, grid, mpor_days)
    weighted = (loss * weight)[0]
    worst = int(np.argmax(weighted))
    initial = max(float(weighted[worst]), 0.0) + (float(contingency(books, grid)[0]) if grid.contingency else 0.0)
    return OptionMargin(initial, grid.maintenance * initial, initial / float(books.notional[0]), worst, weighted)
