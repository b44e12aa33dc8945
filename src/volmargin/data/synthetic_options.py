"""Synthetic Deribit-style option chains over the whole DVOL history (2021-03 on), for option-margin
backtests far longer than the four months of real chains (../shared/data/options/).

One snapshot a day, at 00:00 UTC of day D + 1 (the end of UTC day D), from data known then:
- underlying: the close of day D's 23:00 hourly bar (it ends at the snapshot); forward = that price for every
  expiry (r = 0, no futures basis);
- ATM implied volatility of an expiry of T days: DVOL's daily close of day D / 100 x term(T);
- smile: total variance relative to the ATM one, w(k) / w_atm = 1 + skew(T) x + curvature(T) x^2 in the
  standardised log-moneyness x = ln(K / F) / sqrt(w_atm), x held within +-X_MAX (flat IV beyond, as the
  real chain's smile is beyond its outermost strikes);
- listed: the fixed tenors `EXPIRY_DAYS` x the strikes `MONEYNESS` x spot, every strike on every expiry (so
  a calendar finds its strike on both expiries), calls and puts; `mark_iv` is the surface's IV.

term, skew and curvature are fitted per expiry bucket on the real chains (`fit_smile_shape`) and
interpolated linearly in ln T between the buckets' median tenors (flat beyond), so an option ageing by a
day moves smoothly along the surface. A book's realised MPOR loss comes from revaluing its options on the
next snapshot's surface (next spot, next DVOL, T - 1 day; `SmileShape.revalue`, the `revalue` of
`volmargin.risk.option_books.build_books`); an option expiring within it settles at intrinsic on the next
spot.

What the synthetic surface lacks (stated with the figures): a term structure and a smile that move on their
own (every expiry's IV moves by DVOL's relative move; short-dated IV spikes more than DVOL in a crash),
listed futures and their basis, and the real strike and expiry calendar.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from volmargin_serving.options import DAYS_PER_YEAR, Smile, black76, intrinsic

EXPIRY_DAYS = (1.0, 2.0, 7.0, 14.0, 21.0, 30.0, 60.0, 90.0, 180.0, 270.0)
MONEYNESS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.925, 0.95, 0.975, 1.0, 1.025, 1.05, 1.075, 1.1, 1.15, 1.2,
             1.25, 1.3, 1.4, 1.5, 1.75, 2.0)
BUCKET_EDGES = (0.0, 4.0, 11.0, 25.0, 45.0, 120.0, 400.0)  # days to expiry: dailies, weeklies, ..., quarterlies
X_MAX = 4.0  # |standardised log-moneyness| of the fit and of the surface
MIN_RATIO = 0.25  # w / w_atm never below this (the quadratic's floor)


@dataclass(frozen=True)
class SmileShape:
    """The relative surface: per bucket (G,) its median tenor in days, ATM IV / DVOL, skew and curvature."""

    days: np.ndarray
    term: np.ndarray
    skew: np.ndarray
    curvature: np.ndarray

    def _at(self, days, values: np.ndarray) -> np.ndarray:
        return np.interp(np.log(days), np.log(self.days), values)

    def ratio(self, days, x) -> np.ndarray:
        """w / w_atm at tenor `days` and standardised log-moneyness x."""
        x = np.clip(x, -X_MAX, X_MAX)
        return np.maximum(1.0 + self._at(days, self.skew) * x + self._at(days, self.curvature) * x * x, MIN_RATIO)

    def iv(self, days, log_moneyness, dvol) -> np.ndarray:
        """IV (fraction) at tenor `days` > 0 and ln(K / F), DVOL `dvol` in percentage points."""
        days = np.asarray(days, dtype=float)
        atm = np.asarray(dvol, dtype=float) / 100.0 * self._at(days, self.term)
        x = np.asarray(log_moneyness, dtype=float) / (atm * np.sqrt(days / DAYS_PER_YEAR))
        return atm * np.sqrt(self.ratio(days, x))

    def revalue(self, legs: pd.DataFrame, nxt: pd.DataFrame) -> np.ndarray:
        """(L,) USD value of each leg (chain rows) on the snapshot `nxt`'s surface (its spot and DVOL);
        intrinsic on its spot where the leg expired by then."""
        stamp, spot, dvol = nxt["timestamp"].iloc[0], nxt["underlying_price"].iloc[0], nxt["dvol"].iloc[0]
        days = (legs["expiry"] - stamp).dt.total_seconds().to_numpy() / 86400.0
        strike, is_call = legs["strike"].to_numpy(), legs["is_call"].to_numpy()
        value = intrinsic(spot, strike, is_call)
        live = days > 0
        iv = self.iv(days[live], np.log(strike[live] / spot), dvol)
        value[live] = black76(spot, strike[live], days[live] / DAYS_PER_YEAR, iv, is_call[live])
        return value


# ---------------------------------------------------------------- fit on the real chains


def smile_points(chain: pd.DataFrame, dvol_close: pd.Series, bar: pd.Timedelta) -> pd.DataFrame:
    """Per chain row: tenor, standardised log-moneyness x, w / w_atm, the expiry's ATM IV over the DVOL known
    at the snapshot (`dvol_close` labelled by bar open time, a bar of length `bar` known at its end), and
    whether the row has a two-sided quote. The ATM total variance of an expiry is the chain's smile
    (`Smile.from_chain`) at k = 0."""
    frames = []
    for stamp, snap in chain.groupby("timestamp", sort=True):
        expiries = snap.groupby("expiry").agg(days=("days", "first"), forward=("underlying_price", "median"))
        group = snap["expiry"].map({e: i for i, e in enumerate(expiries.index)}).to_numpy()
        years = expiries["days"].to_numpy() / DAYS_PER_YEAR
        smile = Smile.from_chain(group, snap["strike"], snap["underlying_price"], snap["mark_iv"], years)
        w_atm = smile.total_variance(np.arange(len(expiries)), np.zeros(len(expiries)))[group]
        k = np.log(snap["strike"].to_numpy() / expiries["forward"].to_numpy()[group])
        known = dvol_close[dvol_close.index <= stamp - bar]
        frames.append(pd.DataFrame({
            "timestamp": stamp, "expiry": snap["expiry"].to_numpy(), "days": years[group] * DAYS_PER_YEAR,
            "x": k / np.sqrt(w_atm), "ratio": snap["mark_iv"].to_numpy() ** 2 * years[group] / w_atm,
            "atm_iv": np.sqrt(w_atm / years[group]), "mark_iv": snap["mark_iv"].to_numpy(),
            "atm_over_dvol": np.sqrt(w_atm / years[group]) / (known.iloc[-1] / 100.0 if len(known) else np.nan),
            "quoted": (snap["bid_price"].notna() & snap["ask_price"].notna()).to_numpy()}))
    return pd.concat(frames, ignore_index=True)


def fit_smile_shape(points: pd.DataFrame, edges=BUCKET_EDGES) -> SmileShape:
    """Per tenor bucket: least squares of w / w_atm - 1 on (x, x^2) over the two-sided quotes within
    |x| <= X_MAX (stale wing marks left out); term = the median ATM IV / DVOL over the bucket's expiries."""
    bucket = pd.cut(points["days"], list(edges), labels=False)
    days, term, skew, curvature = [], [], [], []
    for _, rows in points.groupby(bucket, sort=True):
        fit = rows[rows["quoted"] & (rows["x"].abs() <= X_MAX)]
        design = np.column_stack([fit["x"], fit["x"] ** 2])
        (b1, b2), *_ = np.linalg.lstsq(design, fit["ratio"].to_numpy() - 1.0, rcond=None)
        per_expiry = rows.drop_duplicates(["timestamp", "expiry"])
        days.append(per_expiry["days"].median())
        term.append(per_expiry["atm_over_dvol"].median())
        skew.append(b1)
        curvature.append(b2)
    return SmileShape(*(np.asarray(a, dtype=float) for a in (days, term, skew, curvature)))


# ---------------------------------------------------------------- daily market states and chains


def market_states(bars: pd.DataFrame, dvol_daily: pd.DataFrame) -> pd.DataFrame:
    """Per snapshot (00:00 UTC of D + 1): `spot`, the close of day D's 23:00 hourly bar, and `dvol`, DVOL's
    daily close of day D; a day missing either is left out. Only data known at the snapshot."""
    close = bars["close"]
    last_bar = close[close.index.hour == 23]
    spot = pd.Series(last_bar.to_numpy(), index=last_bar.index.normalize())
    states = pd.DataFrame({"spot": spot, "dvol": dvol_daily["close"]}).dropna()
    states.index = (states.index + pd.Timedelta(days=1)).rename("timestamp")
    return states


def synthetic_chain(states: pd.DataFrame, shape: SmileShape, expiry_days=EXPIRY_DAYS,
                    moneyness=MONEYNESS) -> pd.DataFrame:
    """Chain rows of every snapshot of `states` (each tenor x strike x call/put, sorted like a real chain):
    the columns `volmargin.risk.option_books` reads, plus `dvol`; no instrument names (a synthetic book is
    revalued on the next surface by `SmileShape.revalue`, not looked up by name)."""
    days = np.asarray(expiry_days, dtype=float)
    money = np.asarray(moneyness, dtype=float)
    per_state = len(days) * len(money) * 2
    timestamp = states.index.repeat(per_state)
    spot = np.repeat(states["spot"].to_numpy(dtype=float), per_state)
    dvol = np.repeat(states["dvol"].to_numpy(dtype=float), per_state)
    tenor = np.tile(np.repeat(days, len(money) * 2), len(states))
    strike = spot * np.tile(np.repeat(money, 2), len(states) * len(days))
    is_call = np.tile([True, False], len(states) * len(days) * len(money))
    expiry = timestamp + pd.to_timedelta(tenor, unit="D")
    chain = pd.DataFrame({
        "timestamp": timestamp, "expiry": expiry,
        "strike": strike, "is_call": is_call, "days": tenor, "underlying_price": spot,
        "mark_iv": shape.iv(tenor, np.log(strike / spot), dvol), "dvol": dvol})
    return chain.reset_index(drop=True)
