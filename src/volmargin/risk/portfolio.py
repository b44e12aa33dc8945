"""Portfolio margin backtest: populations of test books, their daily margin components under a model's FHS
scenarios, autocalibration of the scale, the correlation-stress weight and the concentration add-on's
coefficient, summaries and stress replays.

The margin rule is `volmargin_serving.portfolio` (the code serving runs): per margin date the scenario set
is assembled as serving assembles it (`day_scenarios`: move cap, stressed rows weighted in or kept as a
floor), the books' joint, isolated and stressed risks (`book_components`) and the concentration add-on, for
each coefficient of a grid, are computed once (`book_panel`); scale and blend weight then act linearly, so
calibration bisects on stored components.

Population classes (`make_population`): random long/short books, all-long and all-short baskets, hedged
pairs (BTC vs ETH; alts vs BTC) sized as a desk hedges, by the minimum-variance hedge ratio (the beta of
the position's returns on the hedge's, over the HEDGE_WINDOW days realised by each margin date, so no
look-ahead: `hedge_ratio`), the same pairs at equal notional as classes of their own (`equal_*`),
concentrated single-alt books, and adversarial books, chosen out of sample as an adversary would pick
them before it trades (`adversarial_schedule`): on each block of margin dates (calendar quarters, cut at
the validation start) it holds, of 200 random sparse candidates, the ones whose margin was smallest
relative to their realised tail (ES 97.5% of realised losses; `select_adversarial`) over the
ADVERSARY_WINDOW days before the block, on margin dates whose MPOR loss was realised before the block
starts; a book is scored only on the blocks it was picked for, so no adversarial book-day (calibration
or validation) was seen by its selection. (Before session 9b the books were picked on the whole
calibration period and scored on it too, so they bound the calibration by construction.) Every book has the same gross
notional; rates are fractions of it. A book is margined on a date when every asset it holds has a
forecast and enough scenario dates; a breach is a realised MPOR loss above the initial margin (dates
without a realised return of a held asset are left out, never filled).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from volmargin_serving.margins import apc_step, speed_bounds
from volmargin_serving.portfolio import (
    PortfolioPolicy, book_components, comonotone_risk, comonotone_tails, day_scenarios, initial_margin, isolated_margin,
    position_addons, scenario_returns, stressed_unit_risks, unit_risks,
)
from volmargin_serving.risk import (
    MAX_NOTIONAL, MIN_NOTIONAL, MIN_NOTIONAL_SHARE, expected_shortfall, simple_returns, tiny_notionals,
)

from volmargin.data.loader import read_csv_file
from volmargin.errors import ConfigError, DataError
from volmargin.evaluation import stats
from volmargin.evaluation.scoring import POOLED
from volmargin.risk.scenarios import FHS

CLASSES = ("random_ls", "all_long", "all_short", "hedged_btc_eth", "hedged_alt_btc", "equal_btc_eth",
           "equal_alt_btc", "concentrated_alt", "adversarial")
# the minimum-variance hedge ratio of a hedged pair: estimated on the last HEDGE_WINDOW days of realised
# MPOR returns (at least HEDGE_MIN_DAYS of them; a quarter, as a desk re-estimates a beta), clipped to
# HEDGE_BOUNDS so that a freak window never flips or dwarfs the hedge
HEDGE_WINDOW, HEDGE_MIN_DAYS, HEDGE_BOUNDS = 90, 60, (0.2, 5.0)
SUMMARY_COLUMNS = ["portfolio_class", "model", "portfolios", "days", "book_days", "breaches", "breach_rate",
                   "kupiec_p", "kupiec_p_clustered", "design_effect", "kupiec_p_book_median", "christoffersen_p", "avg_margin", "avg_isolated_margin", "offset", "max_increase_5d",
                   "peak_to_trough", "scale", "correlation_weight", "concentration"]
# the correlation weights w the calibration chooses from: w fixed at 0.1, only the scale calibrated, chosen
# with the measure es975 on a hold-out inside the calibration period over the cheapest feasible (scale, w)
# of CORRELATION_GRID (the rule before session 9c) and w fixed at 0, 0.25 or 0.5 (bench/portfolio_weight.py)
CALIBRATION_WEIGHTS = (0.1,)
CORRELATION_GRID = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)  # `--correlation-grid auto`: the cheapest w of these
# the adversary picks its books for each block of margin dates on the realised history of the
# ADVERSARY_WINDOW days before the block (a year: recent regimes, the same look-back for every block), a
# candidate needing ADVERSARY_MIN_DAYS realised days there (most alts are forecast from late 2021 only)
ADVERSARY_WINDOW, ADVERSARY_MIN_DAYS, ADVERSARY_BLOCKS = 365, 60, "QS"
# concentration coefficients the calibration may choose from (`calibrate_books(concentrations=...)`): the
# square-root-law add-on charges a book of a few large positions in thin assets more than a diversified
# one, so a larger coefficient can carry the concentrated books' risk and let the scale fall for the rest
CONCENTRATION_GRID = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
SPEC_COLUMNS = ("portfolio", "asset", "notional", "portfolio_class")


@dataclass(frozen=True)
class Population:
    """Books as a (P, A) signed notional matrix over `assets`, each with a name and a class. A book with a
    `hedge_leg` (asset index, -1: none) holds its other asset and the hedge leg in the proportion 1 : the
    hedge ratio of each margin date, at the book's gross (`dated_notional`); its row holds the legs' sides
    at equal notional, which sets the sides and the gross only."""

    assets: tuple[str, ...]
    names: tuple[str, ...]
    classes: np.ndarray
    notional: np.ndarray
    hedge_leg: np.ndarray | None = None

    def hedge_legs(self) -> np.ndarray:
        return np.full(len(self.names), -1) if self.hedge_leg is None else self.hedge_leg

    def subset(self, keep: np.ndarray) -> "Population":
        keep = np.asarray(keep)
        return Population(self.assets, tuple(np.asarray(self.names)[keep]), self.classes[keep], self.notional[keep],
                          None if self.hedge_leg is None else self.hedge_leg[keep])

    def __add__(self, other: "Population") -> "Population":
        legs = None if self.hedge_leg is None and other.hedge_leg is None else \
            np.concatenate([self.hedge_legs(), other.hedge_legs()])
        return Population(self.assets, self.names + other.names, np.concatenate([self.classes, other.classes]),
                          np.vstack([self.notional, other.notional]), legs)


def find_asset(assets: Iterable[str], token: str) -> str | None:
    """The asset whose name holds `token` ('btc' -> binance_btcusdt), preferring USDT spot names."""
    hits = [a for a in assets if token in a.lower()]
    return min(hits, key=lambda a: (f"{token}usdt" not in a, len(a))) if hits else None


def _book(assets: tuple[str, ...], legs: Mapping[str, float], gross: float) -> np.ndarray:
    row = np.zeros(len(assets))
    for asset, weight in legs.items():
        row[assets.index(asset)] += weight
    return row * gross / np.abs(row).sum()


def make_population(assets: tuple[str, ...], gross: float = 1e6, seed: int = 0, n_random: int = 60,
                    n_baskets: int = 20, basket_size: int = 10, n_alts: int = 20) -> Population:
    """The generated test population (every class but `adversarial`, see `adversarial_candidates`)."""
    rng = np.random.default_rng(seed)
    assets = tuple(assets)
    btc, eth = find_asset(assets, "btc"), find_asset(assets, "eth")
    alts = [a for a in assets if a not in (btc, eth)]
    size = min(basket_size, len(assets))
    rows, names, classes = [], [], []

    hedges = []

    def add(cls: str, name: str, legs: Mapping[str, float], hedge: str | None = None) -> None:
        rows.append(_book(assets, legs, gross)), names.append(f"{cls}:{name}"), classes.append(cls)
        hedges.append(-1 if hedge is None else assets.index(hedge))

    def pair(kind: str, name: str, position: str, hedge: str, sign: float) -> None:
        """The position against its hedge: hedge-ratio sized (`hedged_<kind>`) and at equal notional."""
        add(f"hedged_{kind}", name, {position: sign, hedge: -sign}, hedge)
        add(f"equal_{kind}", name, {position: sign, hedge: -sign})

    for i in range(n_random):
        picked = rng.choice(assets, size, replace=False)
        add("random_ls", str(i), dict(zip(picked, rng.choice([-1, 1], size) * rng.lognormal(0, 0.5, size))))
    for i in range(n_baskets):
        picked = rng.choice(assets, size, replace=False)
        add("all_long", str(i), dict.fromkeys(picked, 1.0))
        add("all_short", str(i), dict.fromkeys(picked, -1.0))
    if btc and eth:
        pair("btc_eth", "long_btc", btc, eth, 1.0)
        pair("btc_eth", "long_eth", eth, btc, 1.0)
    chosen = [str(a) for a in rng.choice(alts, min(n_alts, len(alts)), replace=False)] if alts else []
    for alt in chosen:
        if btc:
            pair("alt_btc", f"long_{alt}", alt, btc, 1.0)
            pair("alt_btc", f"short_{alt}", alt, btc, -1.0)
        add("concentrated_alt", f"long_{alt}", {alt: 1.0})
        add("concentrated_alt", f"short_{alt}", {alt: -1.0})
    return Population(assets, tuple(names), np.array(classes, dtype=object),
                      np.array(rows).reshape(len(rows), len(assets)), np.array(hedges, dtype=int))


def hedge_ratio(realized: np.ndarray, t: int, horizon: int, position: int, hedge: int) -> float:
    """Minimum-variance hedge ratio cov(r_position, r_hedge) / var(r_hedge) of margin date index t, from the
    MPOR log returns `realized` (T, A) of the last HEDGE_WINDOW origins realised by t (s + horizon <= t;
    days missing either return left out), clipped to HEDGE_BOUNDS; NaN with fewer than HEDGE_MIN_DAYS."""
    last = t - horizon  # the last origin whose MPOR return is realised by t
    window = realized[max(0, last - HEDGE_WINDOW + 1): max(0, last + 1)][:, [position, hedge]]
    window = window[~np.isnan(window).any(1)]
    if len(window) < HEDGE_MIN_DAYS:
        return np.nan
    x, y = window[:, 0] - window[:, 0].mean(), window[:, 1] - window[:, 1].mean()
    variance = float(y @ y)
    return float(np.clip(x @ y / variance, *HEDGE_BOUNDS)) if variance > 0 else np.nan


def dated_notional(population: Population, realized: np.ndarray, t: int, horizon: int) -> np.ndarray:
    """(P, A) notionals of margin date index t: the fixed books as they are, each hedged pair at its hedge
    ratio of that date (`hedge_ratio`) scaled back to the book's gross; NaN rows where no ratio is known."""
    legs = population.hedge_legs()
    if not (legs >= 0).any():
        return population.notional
    n = population.notional.copy()
    for k in np.flatnonzero(legs >= 0):
        hedge = legs[k]
        position = int(np.flatnonzero((n[k] != 0) & (np.arange(n.shape[1]) != hedge))[0])
        ratio = hedge_ratio(realized, t, horizon, position, hedge)
        gross = np.abs(n[k]).sum()
        n[k, hedge] *= ratio / abs(n[k, hedge])  # the sign kept, the size the ratio of the position's
        n[k, position] /= abs(n[k, position])
        n[k] *= gross / np.abs(n[k]).sum()
    return n


def adversarial_candidates(assets: tuple[str, ...], n: int = 200, gross: float = 1e6, seed: int = 1) -> Population:
    """Random sparse books (2 to 5 legs, random signs and sizes) for the adversary to choose from."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        k = int(rng.integers(2, min(5, len(assets)) + 1))
        picked = rng.choice(len(assets), k, replace=False)
        row = np.zeros(len(assets))
        row[picked] = rng.choice([-1, 1], k) * rng.lognormal(0, 0.7, k)
        rows.append(row * gross / np.abs(row).sum())
    return Population(tuple(assets), tuple(f"candidate:{i}" for i in range(n)), np.full(n, "candidate", dtype=object),
                      np.array(rows))


def read_population(path, assets: tuple[str, ...]) -> Population:
    """Books from a CSV with columns portfolio, asset, notional and optionally portfolio_class (default
    'custom'); one row per position. Errors name the file and the row (or the book)."""
    table = _read_spec(path)
    fail = lambda row, problem: DataError(f"{path}: row {row + 2}: {problem}")  # noqa: E731 - row 1 the header
    notional = pd.to_numeric(table["notional"].str.strip(), errors="coerce").to_numpy(dtype=float)
    for row, (book, asset, text, cls, value) in enumerate(zip(table["portfolio"], table["asset"], table["notional"],
                                                              table["portfolio_class"], notional)):
        if not book.strip():
            raise fail(row, "portfolio is empty")
        if asset not in assets:
            raise fail(row, f"asset {asset!r} has no forecasts in the run from every model compared")
        if not text.strip():
            raise fail(row, "notional is empty")
        if not np.isfinite(value):
            raise fail(row, f"notional {text!r} is not a finite number")
        if abs(value) > MAX_NOTIONAL:
            raise fail(row, f"notional {text} is beyond +-{MAX_NOTIONAL:g}")
        if not cls.strip():
            raise fail(row, "portfolio_class is empty")
        if cls == POOLED:
            raise fail(row, "portfolio_class 'ALL' is reserved for the pooled summary row")
    if (tiny := tiny_notionals(notional)).any():
        row = int(np.flatnonzero(tiny)[0])
        raise fail(row, f"notional {table['notional'].iloc[row].strip()} is below {MIN_NOTIONAL_SHARE:g} of the "
                        f"file's largest |notional| (or {MIN_NOTIONAL:g}); give 0 for no position")
    twice = table.duplicated(["portfolio", "asset"], keep=False).to_numpy()
    if twice.any():
        first = table[twice].iloc[0]
        rows = np.flatnonzero(twice & (table["portfolio"] == first["portfolio"]).to_numpy()
                              & (table["asset"] == first["asset"]).to_numpy()) + 2
        raise DataError(f"{path}: rows {', '.join(map(str, rows))} hold the same position ({first['asset']} in "
                        f"book {first['portfolio']!r}); give one row per position")
    books = list(dict.fromkeys(table["portfolio"]))
    classes = table.groupby("portfolio", sort=False)["portfolio_class"].unique()
    mixed = classes[classes.map(len) > 1]
    if len(mixed):
        raise DataError(f"{path}: book {mixed.index[0]!r} has several classes ({', '.join(mixed.iloc[0])}); "
                        "give each book one portfolio_class")
    matrix = np.zeros((len(books), len(assets)))
    np.add.at(matrix, (table["portfolio"].map(books.index).to_numpy(), table["asset"].map(assets.index).to_numpy()),
              notional)
    flat = [b for b, row in zip(books, matrix) if not np.abs(row).sum() > 0]
    if flat:  # margin rates are fractions of the gross notional: none exists for an empty book
        raise DataError(f"{path}: book {flat[0]!r} has zero gross notional (every position 0)")
    return Population(tuple(assets), tuple(books), classes.reindex(books).map(lambda c: c[0]).to_numpy(dtype=object),
                      matrix)


def _read_spec(path) -> pd.DataFrame:
    """The spec's cells as text (an empty cell ''), its columns checked: SPEC_COLUMNS, the class optional."""
    table = read_csv_file(path, dtype=str, keep_default_na=False)
    expected = ",".join(SPEC_COLUMNS[:3]) + f"[,{SPEC_COLUMNS[3]}]"
    missing = [c for c in SPEC_COLUMNS[:3] if c not in table]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; expected {expected}")
    extra = [str(c) for c in table.columns if c not in SPEC_COLUMNS]
    if extra:
        raise DataError(f"{path}: unknown column(s) {', '.join(extra)}; expected {expected}")
    if table.empty:
        raise DataError(f"{path}: no positions (a header only); expected one row per position")
    return table if "portfolio_class" in table else table.assign(portfolio_class="custom")


@dataclass(frozen=True)
class BookPanel:
    """Daily margin components of a population under one model: (T, P) arrays in currency, NaN / False
    where a book is not margined; `loss` the realised MPOR loss (NaN where not realised)."""

    model: str
    dates: pd.DatetimeIndex
    joint: np.ndarray
    isolated: np.ndarray
    floor: np.ndarray
    comonotone: np.ndarray  # the perfect-correlation stress (NaN unless the policy's correlation_stress uses it)
    addon: np.ndarray
    largest: np.ndarray  # the largest single position's own risk (scale-free) plus its add-on, per scale 1
    largest_addon: np.ndarray
    loss: np.ndarray
    alive: np.ndarray
    gross: np.ndarray
    # the add-on and the largest position's add-on (T, P, G) for each coefficient of `concentrations`;
    # `addon` and `largest_addon` are those of the panel's current coefficient (`with_concentration`)
    addon_grid: np.ndarray
    largest_addon_grid: np.ndarray
    concentrations: tuple[float, ...]
    # (T, P): the book holds an asset without a usable traded volume that day (None: no volumes given), so a
    # concentration add-on charges that position in full: coverage by a missing input, not by the rule
    no_volume: np.ndarray | None = None

    def columns(self, keep: np.ndarray) -> "BookPanel":
        arrays = {name: getattr(self, name)[:, keep] for name in _by_date(self)}
        return dataclasses.replace(self, gross=self.gross[keep], **arrays)

    def rows(self, keep: np.ndarray) -> "BookPanel":
        arrays = {name: getattr(self, name)[keep] for name in _by_date(self)}
        return dataclasses.replace(self, dates=self.dates[keep], **arrays)

    def with_concentration(self, coefficient: float) -> "BookPanel":
        """The panel whose add-ons are those of concentration `coefficient` (one of `concentrations`)."""
        if coefficient not in self.concentrations:
            raise ConfigError(f"concentration {coefficient} was not computed; the panel has {self.concentrations}")
        g = self.concentrations.index(coefficient)
        return dataclasses.replace(self, addon=self.addon_grid[..., g], largest_addon=self.largest_addon_grid[..., g])


def _by_date(bp: BookPanel) -> list[str]:
    """The fields of a panel indexed (date, book, ...)."""
    return [f.name for f in dataclasses.fields(bp)
            if f.name not in ("model", "dates", "gross", "concentrations") and getattr(bp, f.name) is not None]


def rolling_adv(daily: Mapping[str, pd.DataFrame], assets: tuple[str, ...], origins: pd.DatetimeIndex,
                days: int = 30) -> np.ndarray:
    """(T, A) mean daily traded value (close x base volume) over the `days` days up to each origin, NaN
    before an asset's first `days // 3` days (its positions then pay the full concentration charge)."""
    out = np.full((len(origins), len(assets)), np.nan)
    for k, asset in enumerate(assets):
        if asset in daily:
            value = daily[asset]["close"] * daily[asset]["volume"]
            mean = value.rolling(days, min_periods=max(5, days // 3)).mean()
            # a day without bars keeps the last known figure (causal), for at most `days` days
            out[:, k] = mean.reindex(origins, method="ffill", limit=days).to_numpy()
    return out


def book_panel(fhs: FHS, population: Population, policy: PortfolioPolicy, adv: np.ndarray | None = None,
               days: np.ndarray | None = None, progress=None, concentrations: Iterable[float] = ()) -> BookPanel:
    """Margin components of every book on every margin date index in `days` (default: all grid dates), the
    add-ons for each coefficient of `concentrations` and the policy's own (the panel's current one)."""
    panel = fhs.panel
    if tuple(panel.assets) != tuple(population.assets):
        raise ConfigError("population and filter panel must share the same assets, in order")
    days = np.arange(len(panel.origins)) if days is None else np.asarray(days)
    grid = tuple(sorted({float(c) for c in concentrations} | {float(policy.concentration)}))
    shape = (len(days), len(population.notional))
    out = {k: np.full(shape, np.nan) for k in ("joint", "isolated", "floor", "comonotone", "largest", "loss")}
    out |= {k: np.full((*shape, len(grid)), np.nan) for k in ("addon_grid", "largest_addon_grid")}
    alive = np.zeros(shape, dtype=bool)
    no_volume = None if adv is None else np.zeros(shape, dtype=bool)
    for i, t in enumerate(days):
        if progress is not None:
            progress(i, len(days))
        if not fhs.enough(t):
            continue
        sigma = panel.sigma[t]
        live = np.isfinite(sigma) & (sigma > 0)
        n = dated_notional(population, panel.realized, t, panel.horizon)
        held = n != 0
        books = ~(held & ~live).any(1) & np.isfinite(n).all(1)  # margined: a forecast for every asset held
        if not books.any():
            continue
        nb = n[books]
        values = _day_components(nb, *_day_scenarios(fhs, t, live, policy), policy, np.nan_to_num(sigma),
                                 None if adv is None else adv[t], grid)
        values["loss"] = _realised_loss(nb, held[books], panel.realized[t])
        rows = np.flatnonzero(books)
        for key, value in values.items():
            out[key][i, rows] = value
        alive[i, rows] = True
        if adv is not None:  # as `addon_coefficients`: a NaN, 0 or infinite volume is none
            no_volume[i, rows] = (held[books] & ~(np.isfinite(adv[t]) & (adv[t] > 0))).any(1)
    g = grid.index(float(policy.concentration))
    return BookPanel(panel.model, panel.origins[days], alive=alive, gross=np.abs(population.notional).sum(1),
                     addon=out["addon_grid"][..., g], largest_addon=out["largest_addon_grid"][..., g],
                     concentrations=grid, no_volume=no_volume, **out)


def _day_scenarios(fhs: FHS, t: int, live: np.ndarray,
                   policy: PortfolioPolicy) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """`day_scenarios` (serving's assembly) of margin date t: the look-back's z x today's forecast, clipped
    at the move cap, and the stressed window's raw returns; an asset without a forecast (not `live`) moves 0
    in both (no book margined on t holds it)."""
    z, _ = fhs.standardized(t)
    returns = scenario_returns(np.where(live, z, 0.0), np.where(live, fhs.panel.sigma[t], 0.0), fhs.move_cap(t))
    stress = None
    if policy.stress_mode != "none":
        stress = np.where(live, np.nan_to_num(fhs.raw[fhs.stress_rows(t)]), 0.0)
    return day_scenarios(returns, stress, policy)


def _day_components(nb: np.ndarray, simple_t: np.ndarray, weights: np.ndarray | None, stress_t: np.ndarray | None,
                    policy: PortfolioPolicy, sigma: np.ndarray, adv: np.ndarray | None,
                    grid: tuple[float, ...]) -> dict[str, np.ndarray]:
    """Margin components of books `nb` (P, A) on one date's scenario set: joint, isolated, floor and
    comonotone risks, the add-on for each coefficient of `grid`, and the largest position's own risk and
    add-on (the position whose stressed-floored own risk is largest)."""
    unit = unit_risks(simple_t.T, policy.measure, weights)
    joint, isolated, floor = book_components(nb, simple_t, unit, policy.measure, weights, stress_t)
    como = np.full(len(nb), np.nan)
    if policy.correlation_stress == "comonotone":
        como = comonotone_risk(nb, comonotone_tails(simple_t), policy.measure, simple_t.shape[1])
    own_unit = stressed_unit_risks(unit, stress_t, policy.measure)
    per_position = np.maximum(nb, 0) * own_unit[:, 0] + np.maximum(-nb, 0) * own_unit[:, 1]
    per_addon = np.stack([position_addons(nb, sigma, adv, c) for c in grid], axis=-1)
    top, books = np.argmax(per_position, axis=1), np.arange(len(nb))
    return {"joint": joint, "isolated": isolated, "floor": floor, "comonotone": como,
            "addon_grid": per_addon.sum(1), "largest": per_position[books, top],
            "largest_addon_grid": per_addon[books, top]}


def _realised_loss(nb: np.ndarray, held: np.ndarray, realised: np.ndarray) -> np.ndarray:
    """The books' realised MPOR loss, NaN where a held asset's return is not realised (never filled)."""
    loss = -(nb @ np.nan_to_num(simple_returns(realised)))
    return np.where((held & np.isnan(realised)).any(1), np.nan, loss)


def margin_path(bp: BookPanel, policy: PortfolioPolicy) -> np.ndarray:
    """(T, P) initial margin in currency: the rule (the add-on of the policy's concentration coefficient),
    then the APC path tools on the margin rate."""
    bp = bp.with_concentration(policy.concentration)
    im = initial_margin(bp.joint, bp.isolated, bp.addon, policy, bp.floor, bp.comonotone)
    if policy.buffer is None and policy.max_up is None and policy.max_down is None:
        return np.where(bp.alive, im, np.nan)
    rate = im / bp.gross
    low, high = speed_bounds(np.ones(rate.shape[1]), policy.max_up, policy.max_down)
    path, previous = np.full_like(rate, np.nan), np.full(rate.shape[1], np.nan)
    for t in range(len(rate)):
        step = apc_step(rate[t], previous, policy.buffer, low, high)
        path[t] = np.where(bp.alive[t], step, np.nan)
        np.copyto(previous, step, where=bp.alive[t])
    return path * bp.gross


def isolated_path(bp: BookPanel, policy: PortfolioPolicy) -> np.ndarray:
    bp = bp.with_concentration(policy.concentration)
    return np.where(bp.alive, isolated_margin(bp.isolated, bp.addon, policy), np.nan)


def select_adversarial(bp: BookPanel, rows: np.ndarray, n: int = 20, min_days: int = ADVERSARY_MIN_DAYS) -> np.ndarray:
    """Column indices of the `n` candidate books with the smallest mean margin (scale 1, no blend) relative to
    their realised tail (ES 97.5% of realised losses), both over the margin dates `rows` (T,) only."""
    seen_rows = bp.rows(np.asarray(rows, bool))
    ratios = np.full(seen_rows.joint.shape[1], np.inf)
    for k in range(len(ratios)):
        seen = seen_rows.alive[:, k] & ~np.isnan(seen_rows.loss[:, k])
        if seen.sum() >= min_days:
            tail = expected_shortfall(seen_rows.loss[seen, k], 0.975)
            if tail > 0:
                ratios[k] = np.mean(seen_rows.joint[seen, k]) / tail
    ranked = np.argsort(ratios)
    return ranked[np.isfinite(ratios[ranked])][:n]


def adversary_blocks(dates: pd.DatetimeIndex, cuts: Iterable[pd.Timestamp] = ()) -> pd.DatetimeIndex:
    """The first dates of the adversary's blocks: calendar quarter starts within `dates`, the first date, and
    each of `cuts` (the validation start, so that no block straddles it)."""
    quarters = pd.date_range(dates[0].normalize(), dates[-1], freq=ADVERSARY_BLOCKS)
    return pd.DatetimeIndex([dates[0], *quarters, *cuts]).sort_values().unique()


def adversarial_schedule(bp: BookPanel, horizon: int, starts: pd.DatetimeIndex, n: int = 20,
                         window: int = ADVERSARY_WINDOW, min_days: int = ADVERSARY_MIN_DAYS) -> np.ndarray:
    """(T, P) booleans: the candidates the adversary holds on each margin date of `bp` (the candidates'
    panel). On the block from each of `starts` to the next it holds `select_adversarial`'s picks over the
    margin dates of the `window` days before the block whose MPOR loss (`horizon` days) is realised before
    the block starts, so what a block's books are scored on never entered their choice."""
    held = np.zeros(bp.alive.shape, dtype=bool)
    ends = [*starts[1:], bp.dates[-1] + pd.Timedelta(days=1)]
    for start, end in zip(starts, ends):
        block = np.asarray((bp.dates >= start) & (bp.dates < end))
        known = np.asarray((bp.dates >= start - pd.Timedelta(days=window))
                           & (bp.dates + pd.Timedelta(days=horizon) < start))
        if block.any() and known.any():
            held[np.ix_(block, select_adversarial(bp, known, n, min_days))] = True
    return held & bp.alive


def _breaches(bp: BookPanel, margin: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, P) booleans: realised book-days counted, and breaches among them, restricted to `rows` (T,)."""
    counted = bp.alive & ~np.isnan(bp.loss) & rows[:, None]
    return counted, counted & (bp.loss > margin)


@dataclass(frozen=True)
class Calibration:
    policy: PortfolioPolicy
    feasible: bool
    table: pd.DataFrame  # per (concentration, correlation weight): scale, feasible, avg margin rate, worst class


def calibrate_books(bp: BookPanel, classes: np.ndarray, rows: np.ndarray, policy: PortfolioPolicy,
                    target: float = 0.01, class_cap: float | None = None, grid: Iterable[float] = CALIBRATION_WEIGHTS,
                    bounds: tuple[float, float] = (0.1, 20.0), tolerance: float = 1e-3,
                    concentrations: Iterable[float] | None = None) -> Calibration:
    """The (scale, correlation weight, concentration coefficient) with the smallest average margin rate such
    that, on `rows`, the population's breaches are at most target x its realised book-days and every
    class's at most `class_cap` (default 1.5 x target) x its own: geometric bisection on the scale (breach
    counts cannot rise with it, APC tools included) for each weight of `grid` and each coefficient of
    `concentrations` (default: the policy's alone; each must be in the panel's grid, `book_panel`). With an
    add-on, book-days holding an asset without a usable volume are left out (`calibration_rows`)."""
    labels = np.asarray(classes)
    kinds = sorted(set(labels))
    cap = 1.5 * target if class_cap is None else class_cap
    coefficients = (policy.concentration,) if concentrations is None else tuple(concentrations)
    counted = calibration_rows(bp, rows, coefficients)
    days = {c: counted[:, labels == c].sum() for c in kinds}
    allowed = {c: np.floor(cap * d + 1e-9) for c, d in days.items()}
    allowed_all = np.floor(target * counted.sum() + 1e-9)

    def ok(p: PortfolioPolicy) -> tuple[bool, float, float]:
        margin = margin_path(bp, p)
        hits = counted & (bp.loss > margin)
        worst = max((hits[:, labels == c].sum() / days[c] for c in kinds if days[c]), default=np.nan)
        feasible = hits.sum() <= allowed_all and all(hits[:, labels == c].sum() <= allowed[c] for c in kinds)
        rate = np.nanmean(np.where(counted, margin / bp.gross, np.nan))
        return feasible, worst, rate

    records = []
    for coefficient in coefficients:
        for w in grid:
            candidate = dataclasses.replace(policy, correlation_weight=float(w), concentration=float(coefficient))
            hi = _smallest_scale(lambda scale: ok(dataclasses.replace(candidate, scale=scale))[0], bounds, tolerance)
            found, worst, rate = ok(dataclasses.replace(candidate, scale=hi))
            records.append({"concentration": float(coefficient), "correlation_weight": float(w), "scale": hi,
                            "feasible": found, "calibration_worst_class_breach_rate": worst,
                            "calibration_avg_margin": rate})
    table = pd.DataFrame(records)
    usable = table[table["feasible"]]
    best = (usable if len(usable) else table).sort_values("calibration_avg_margin", kind="stable").iloc[0]
    chosen = dataclasses.replace(policy, scale=float(best["scale"]), correlation_weight=float(best["correlation_weight"]),
                                 concentration=float(best["concentration"]))
    return Calibration(chosen, bool(len(usable)), table)


def calibration_rows(bp: BookPanel, rows: np.ndarray, concentrations: Iterable[float]) -> np.ndarray:
    """(T, P) book-days a calibration counts on margin dates `rows`: margined and realised, less, when a
    concentration add-on may be chosen, those holding an asset without a usable volume. Their add-on is the
    whole position only because the volume is missing (bars that cover the assets unevenly): counted, they
    passed as covered and lowered the scale, which then served books with volumes under the target."""
    counted = bp.alive & ~np.isnan(bp.loss) & rows[:, None]
    if bp.no_volume is not None and any(c > 0 for c in concentrations):
        counted &= ~bp.no_volume
    return counted


def _smallest_scale(feasible, bounds: tuple[float, float], tolerance: float) -> float:
    """Geometric bisection: the smallest scale in `bounds` (to `tolerance`) that is feasible, given that
    feasibility cannot be lost by raising the scale; the upper bound when even it is not feasible."""
    lo, hi = bounds
    if feasible(hi):
        while hi > lo * (1 + tolerance):
            mid = float(np.sqrt(lo * hi))
            if feasible(mid):
                hi = mid
            else:
                lo = mid
    return hi


def summarise(bp: BookPanel, classes: np.ndarray, rows: np.ndarray, policy: PortfolioPolicy,
              target: float = 0.01, horizon: int = 1) -> pd.DataFrame:
    """One row per class (and 'ALL'), columns SUMMARY_COLUMNS, over the margin dates `rows`.

    kupiec_p pools the class's book-days as if independent (books in a class are cross-sectionally
    dependent: one market move breaches many of them at once, so the pooled test is far stricter than its
    nominal size); kupiec_p_clustered is the same test corrected for that dependence (Rao-Scott, clusters
    = margin dates, `horizon` consecutive dates per cluster so overlapping MPORs share one), design_effect
    its variance inflation (1: independent book-days); kupiec_p_book_median and christoffersen_p are the medians
    over the class's books (>= 50 realised days) of each book's own Kupiec POF and Christoffersen
    conditional-coverage p-values, on margin dates `horizon` apart (overlapping MPORs breach in runs). Margin
    figures are fractions of gross notional over margined book-days;
    offset = 1 - avg_margin / avg_isolated_margin; procyclicality: the largest rise of a book's margin rate over
    5 calendar days (`stats.max_rise`, as the single-asset calibration's) and the largest peak-to-trough ratio,
    worst book."""
    margin = margin_path(bp, policy)
    iso = isolated_path(bp, policy)
    counted, hits = _breaches(bp, margin, rows)
    labels = np.asarray(classes)
    out = []
    for cls in [*sorted(set(labels)), POOLED]:
        cols = np.ones(len(labels), bool) if cls == POOLED else labels == cls
        live = bp.alive[:, cols] & rows[:, None]
        c, h = counted[:, cols], hits[:, cols]
        day = np.broadcast_to(np.arange(len(c))[:, None] // horizon, c.shape)  # the cluster of each book-day
        n_days, n_hits = int(c.sum()), int(h.sum())
        rate = np.where(live, margin[:, cols] / bp.gross[cols], np.nan)
        iso_rate = np.where(live, iso[:, cols] / bp.gross[cols], np.nan)
        cc, pof = [], []
        spaced = np.arange(len(c)) % horizon == 0  # each book's tests: dates `horizon` apart, MPORs that do not overlap
        for k in range(c.shape[1]):
            series = h[c[:, k] & spaced, k]
            if len(series) >= 50:
                cc.append(stats.christoffersen(series, target).p_cc)
                pof.append(stats.kupiec_pof(series, target).pvalue)
        avg, avg_iso = (float(np.nanmean(x)) if live.any() else np.nan for x in (rate, iso_rate))
        seen = live.any(0)
        ptt = float(np.max(np.nanmax(rate[:, seen], 0) / np.nanmin(rate[:, seen], 0))) if seen.any() else np.nan
        out.append({"portfolio_class": cls, "model": bp.model, "portfolios": int(live.any(0).sum()),
                    "days": int(live.any(1).sum()), "book_days": n_days, "breaches": n_hits,
                    "breach_rate": n_hits / n_days if n_days else np.nan,
                    "kupiec_p": stats.kupiec_pof(h[c], target).pvalue if n_days else np.nan,
                    "kupiec_p_clustered": stats.kupiec_clustered(h[c], day[c], target).pvalue if n_days else np.nan,
                    "design_effect": stats.design_effect(h[c], day[c]) if n_days else np.nan,
                    "kupiec_p_book_median": float(np.median(pof)) if pof else np.nan,
                    "christoffersen_p": float(np.median(cc)) if cc else np.nan,
                    "avg_margin": avg, "avg_isolated_margin": avg_iso,
                    "offset": 1 - avg / avg_iso if avg_iso else np.nan,
                    "max_increase_5d": stats.max_rise(rate, bp.dates, 5), "peak_to_trough": float(ptt),
                    "scale": policy.scale, "correlation_weight": policy.correlation_weight,
                    "concentration": policy.concentration})
    return pd.DataFrame(out, columns=SUMMARY_COLUMNS)


STRESS_REPLAY_COLUMNS = ["event", "portfolio_class", "model", "portfolios", "book_days", "breaches", "avg_margin",
                         "avg_loss", "max_shortfall", "margin_vs_largest_isolated", "out_of_sample"]


def stress_replay(bp: BookPanel, classes: np.ndarray, policy: PortfolioPolicy, events: Mapping[str, tuple[str, str]],
                  out_of_sample_from: pd.Timestamp) -> pd.DataFrame:
    """Per event (inclusive first/last target days) and class: margined books, breaches, average margin and
    loss (fractions of gross), the worst shortfall, and the median ratio of the book's margin to its largest
    single position's isolated margin (>= 1: the book never asks less than its biggest leg alone)."""
    margin = margin_path(bp, policy)
    bp = bp.with_concentration(policy.concentration)
    largest = policy.scale * bp.largest + bp.largest_addon
    target_day = bp.dates + pd.Timedelta(days=1)
    labels = np.asarray(classes)
    out = []
    for name, (first, last) in events.items():
        window = np.asarray((target_day >= pd.Timestamp(first, tz="UTC")) & (target_day <= pd.Timestamp(last, tz="UTC")))
        if not window.any():
            continue
        for cls in sorted(set(labels)):
            cols = labels == cls
            live = bp.alive[window][:, cols] & ~np.isnan(bp.loss[window][:, cols])
            if not live.any():
                continue
            m, loss = margin[window][:, cols], bp.loss[window][:, cols]
            g = bp.gross[cols]
            short = np.where(live, (loss - m) / g, np.nan)
            out.append({"event": name, "portfolio_class": cls, "model": bp.model, "portfolios": int(live.any(0).sum()),
                        "book_days": int(live.sum()), "breaches": int((live & (loss > m)).sum()),
                        "avg_margin": float(np.nanmean(np.where(live, m / g, np.nan))),
                        "avg_loss": float(np.nanmean(np.where(live, loss / g, np.nan))),
                        "max_shortfall": float(max(0.0, np.nanmax(short))),
                        "margin_vs_largest_isolated": float(np.nanmedian(np.where(live, m / largest[window][:, cols], np.nan))),
                        "out_of_sample": bool(bp.dates[window][0] >= out_of_sample_from)})
    return pd.DataFrame(out, columns=STRESS_REPLAY_COLUMNS)
