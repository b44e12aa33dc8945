"""Option books built from real Deribit chain snapshots, and their realised MPOR loss.

Each snapshot (one a day) gets a fixed set of books per class and tenor, plus seeded random books:

| class | legs (1 contract = 1 BTC; tenors 7 and 30 days, the listed expiry nearest) |
|---|---|
| short_straddle | short the ATM call and put |
| short_strangle | short the 25-delta call and the 25-delta put |
| risk_reversal | long the 25-delta call, short the 25-delta put |
| calendar | short the near ATM call (7 or 30 days), long the same strike about 4 / 8 weeks later (the listed strike both expiries share nearest the money) |
| covered_call | long 1 future of the expiry, short its 25-delta call |
| butterfly | long the 90% and 110% strike calls, short 2 ATM calls |
| delta_hedged_short_gamma | short the ATM call, long its delta in the expiry's future |
| random | 2-6 options of any listed strike and expiry, quantities in -3..3 (not 0), 20 books a snapshot |

The realised loss is over consecutive snapshots (MPOR = their spacing, about 1 day): each option is re-valued
at the next snapshot's mark price, Black-76 at that row's mark IV and underlying (Deribit's mark price
is that value); an option that expired in between is settled at its intrinsic value on the next
snapshot's nearest-expiry underlying (a proxy of the 08:00 delivery price, which the data lacks). A
futures leg is linear in USD on the expiry's underlying. Losses and margins are in USD; `notional` =
spot proxy x max(gross option contracts, |futures contracts|).

The revaluation at the next snapshot is pluggable (`build_books(..., revalue=...)`): `chain_values` reads the
next real snapshot; `volmargin.data.synthetic_options` revalues on its next synthetic surface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from volmargin.errors import DataError
from volmargin_serving.options import DAYS_PER_YEAR, Books, Smile, black76, greeks, intrinsic, prepare

CLASSES = ("short_straddle", "short_strangle", "risk_reversal", "calendar", "covered_call", "butterfly",
           "delta_hedged_short_gamma", "random")
TENORS = (7.0, 30.0)
RANDOM_BOOKS = 20
MAX_GAP_DAYS = 1.5  # consecutive snapshots further apart do not make an MPOR pair
Revalue = Callable[[pd.DataFrame, pd.DataFrame], np.ndarray]  # (legs: rows of a snapshot, next snapshot) -> USD


@dataclass(frozen=True)
class OptionBacktestBooks:
    """Every book of every snapshot pair: `books` (prepared, margin inputs at the first snapshot),
    `info` (one row per book: day, portfolio_class, tenor), `loss` (B,) realised USD loss."""

    books: Books
    info: pd.DataFrame
    loss: np.ndarray
    mpor_days: np.ndarray


def _snapshots(chain: pd.DataFrame) -> list[pd.DataFrame]:
    return [frame for _, frame in chain.groupby("timestamp", sort=True)]


def _expiry_table(snap: pd.DataFrame) -> pd.DataFrame:
    """Per expiry: days, forward (median underlying of its rows)."""
    grouped = snap.groupby("expiry")  # plain reductions: named aggregation costs ~30 ms a snapshot
    return pd.DataFrame({"days": grouped["days"].first(), "forward": grouped["underlying_price"].median()})


def _nearest_expiry(expiries: pd.DataFrame, days: float, minimum: float = 0.5):
    """The listed expiry nearest `days` among those at least `minimum` days out; None if none is."""
    live = expiries[expiries["days"] >= minimum]
    return live.index[np.argmin(np.abs(live["days"].to_numpy() - days))] if len(live) else None


def _legs_of(snap: pd.DataFrame, expiry) -> pd.DataFrame:
    return snap[snap["expiry"] == expiry]


def _pick_strike(rows: pd.DataFrame, target: float) -> float:
    strikes = np.unique(rows["strike"].to_numpy())
    return float(strikes[np.argmin(np.abs(strikes - target))])


def _row(rows: pd.DataFrame, strike: float, is_call: bool) -> pd.Series | None:
    hit = rows[(rows["strike"] == strike) & (rows["is_call"] == is_call)]
    return None if hit.empty else hit.iloc[0]


def _delta_row(rows: pd.DataFrame, is_call: bool, target: float) -> pd.Series | None:
    side = rows[rows["is_call"] == is_call]
    if side.empty:  # a thin snapshot: no book needs this leg
        return None
    delta = greeks(side["underlying_price"], side["strike"], side["days"] / DAYS_PER_YEAR, side["mark_iv"],
                   side["is_call"])["delta"]
    return side.iloc[int(np.argmin(np.abs(delta - target)))]


def _class_books(snap: pd.DataFrame, rng: np.random.Generator) -> list[tuple[str, float, list, float, object]]:
    """(class, tenor, [(row, quantity)], future_qty, future_expiry) for one snapshot; a class whose legs the
    snapshot does not list (e.g. no puts, or too few rows) is left out of it."""
    expiries = _expiry_table(snap)
    out = []
    for tenor in TENORS:
        expiry = _nearest_expiry(expiries, tenor)
        if expiry is None:
            continue
        rows, forward = _legs_of(snap, expiry), expiries.loc[expiry, "forward"]
        atm = _pick_strike(rows, forward)
        call, put = _row(rows, atm, True), _row(rows, atm, False)
        c25, p25 = _delta_row(rows, True, 0.25), _delta_row(rows, False, -0.25)
        out.append(("short_straddle", tenor, [(call, -1.0), (put, -1.0)], 0.0, expiry))
        out.append(("short_strangle", tenor, [(c25, -1.0), (p25, -1.0)], 0.0, expiry))
        out.append(("risk_reversal", tenor, [(c25, 1.0), (p25, -1.0)], 0.0, expiry))
        out.append(("covered_call", tenor, [(c25, -1.0)], 1.0, expiry))
        low, high = _pick_strike(rows, 0.9 * forward), _pick_strike(rows, 1.1 * forward)
        if low < atm < high:
            out.append(("butterfly", tenor, [(_row(rows, low, True), 1.0), (call, -2.0),
                                             (_row(rows, high, True), 1.0)], 0.0, expiry))
        if call is not None:
            delta = greeks(call["underlying_price"], call["strike"], call["days"] / DAYS_PER_YEAR, call["mark_iv"],
                           True)["delta"]
            out.append(("delta_hedged_short_gamma", tenor, [(call, -1.0)], float(delta), expiry))
        far = _nearest_expiry(expiries, tenor + (28.0 if tenor < 30 else 60.0), minimum=tenor + 7)
        far_rows = _legs_of(snap, far) if far is not None else rows.iloc[:0]
        common = np.intersect1d(rows["strike"], far_rows["strike"])
        if far != expiry and len(common):
            strike = float(common[np.argmin(np.abs(common - forward))])
            out.append(("calendar", tenor, [(_row(rows, strike, True), -1.0), (_row(far_rows, strike, True), 1.0)],
                        0.0, expiry))
    for _ in range(RANDOM_BOOKS):
        size = int(rng.integers(2, 7))
        if size > len(snap):  # fewer rows than legs
            continue
        picks = rng.choice(len(snap), size=size, replace=False)
        quantity = rng.choice([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0], size=len(picks))
        out.append(("random", np.nan, [(row, q) for (_, row), q in zip(snap.iloc[picks].iterrows(), quantity)],
                    0.0, None))
    return [book for book in out if all(row is not None for row, _ in book[2])]


def _next_value(row: pd.Series, nxt: pd.DataFrame, by_name: pd.DataFrame, spot_next: float) -> float:
    """USD value of an option at the next snapshot (mark price), settled at intrinsic if it expired."""
    if row["expiry"] <= nxt["timestamp"].iloc[0]:
        return float(intrinsic(spot_next, row["strike"], row["is_call"]))
    if row["instrument"] not in by_name.index:
        return np.nan
    n = by_name.loc[row["instrument"]]
    return float(black76(n["underlying_price"], n["strike"], n["days"] / DAYS_PER_YEAR, n["mark_iv"], n["is_call"]))


def chain_values(legs: pd.DataFrame, nxt: pd.DataFrame) -> np.ndarray:
    """(L,) USD value of each leg at the next real snapshot `nxt` (NaN where the instrument is missing)."""
    spot_next = _expiry_table(nxt)["forward"].iloc[0]
    by_name = nxt.set_index("instrument")
    return np.array([_next_value(row, nxt, by_name, spot_next) for _, row in legs.iterrows()], dtype=float)


def build_books(chain: pd.DataFrame, seed: int = 0, revalue: Revalue = chain_values) -> OptionBacktestBooks:
    """Books of every consecutive snapshot pair of `chain` (see module doc), as one prepared batch; a book with
    a leg `revalue` cannot value at the next snapshot (NaN) is left out."""
    snaps = _snapshots(chain.reset_index(drop=True))  # unique labels: legs are looked up by row label
    legs, info, futures, smile_quotes = [], [], [], []
    group_years: list[float] = []
    for day, (snap, nxt) in enumerate(zip(snaps[:-1], snaps[1:])):
        mpor = (nxt["timestamp"].iloc[0] - snap["timestamp"].iloc[0]).total_seconds() / 86400
        if mpor > MAX_GAP_DAYS:
            continue
        rng = np.random.default_rng([seed, int(snap["timestamp"].iloc[0].timestamp())])
        expiries = _expiry_table(snap)
        groups = {e: len(group_years) + i for i, e in enumerate(expiries.index)}
        group_years += list(expiries["days"] / DAYS_PER_YEAR)
        smile_quotes.append(pd.DataFrame({
            "group": snap["expiry"].map(groups).to_numpy(), "strike": snap["strike"].to_numpy(),
            "forward": snap["underlying_price"].to_numpy(), "iv": snap["mark_iv"].to_numpy()}))
        next_expiries = _expiry_table(nxt)
        spot, spot_next = expiries["forward"].iloc[0], next_expiries["forward"].iloc[0]
        candidates = _class_books(snap, rng)
        all_values = revalue(snap.loc[[row.name for c in candidates for row, _ in c[2]]], nxt)
        ends = np.cumsum([len(c[2]) for c in candidates])
        for (cls, tenor, book_legs, future_qty, future_expiry), end in zip(candidates, ends):
            values = all_values[end - len(book_legs):end]
            if not np.all(np.isfinite(values)):
                continue
            book = len(info)
            f0 = expiries.loc[future_expiry, "forward"] if future_qty else spot
            f1 = (next_expiries["forward"].get(future_expiry, spot_next) if future_qty else spot_next)
            gross = sum(abs(q) for _, q in book_legs)
            info.append({"day": snap["timestamp"].iloc[0], "portfolio_class": cls, "tenor": tenor,
                         "mpor_days": mpor, "spot": spot})
            futures.append((future_qty, f0, f1, spot * max(gross, abs(future_qty))))
            for (row, q), value_next in zip(book_legs, values):
                legs.append((book, q, row["strike"], row["is_call"], row["days"], row["underlying_price"],
                             row["mark_iv"], groups[row["expiry"]], value_next))
    if not info:
        raise DataError(f"the chains give no option book: books need two snapshots at most {MAX_GAP_DAYS:g} days "
                        "apart, the later one listing every leg")
    legs_arr = np.array(legs, dtype=float)
    fut = np.array(futures, dtype=float)
    quotes = pd.concat(smile_quotes, ignore_index=True)
    smile = Smile.from_chain(quotes["group"].to_numpy(), quotes["strike"].to_numpy(),
                             quotes["forward"].to_numpy(), quotes["iv"].to_numpy(), np.array(group_years))
    books = prepare(Books(legs_arr[:, 0].astype(np.int64), legs_arr[:, 1], legs_arr[:, 2], legs_arr[:, 3] > 0.5,
                          legs_arr[:, 4], legs_arr[:, 5], legs_arr[:, 6], legs_arr[:, 7].astype(np.int64), smile,
                          fut[:, 0], fut[:, 1], fut[:, 3]))
    pnl = np.bincount(books.book, books.quantity * (legs_arr[:, 8] - books.value), minlength=len(info))
    pnl += fut[:, 0] * (fut[:, 2] - fut[:, 1])
    table = pd.DataFrame(info)
    return OptionBacktestBooks(books, table, -pnl, table["mpor_days"].to_numpy())


def missing_class_days(info: pd.DataFrame) -> dict[str, int]:
    """Per class, the snapshot days with books that hold none of it (a thin snapshot lists too few legs, or
    a leg is missing from the next one): a class priced on fewer days than the others is named, not hidden."""
    days = info.groupby("portfolio_class")["day"].nunique()
    total = info["day"].nunique()
    return {cls: int(total - days.get(cls, 0)) for cls in CLASSES if days.get(cls, 0) < total}


def select_books(data: OptionBacktestBooks, keep: np.ndarray) -> OptionBacktestBooks:
    """The books flagged in `keep` (B,) with their legs, renumbered, on the same smile."""
    b = data.books
    legs = keep[b.book]
    number = np.cumsum(keep) - 1
    books = prepare(Books(number[b.book[legs]], b.quantity[legs], b.strike[legs], b.is_call[legs], b.days[legs],
                          b.forward[legs], b.iv[legs], b.group[legs], b.smile, b.future_qty[keep],
                          b.future_price[keep], b.notional[keep]))
    return OptionBacktestBooks(books, data.info[keep].reset_index(drop=True), data.loss[keep], data.mpor_days[keep])
