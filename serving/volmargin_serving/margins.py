"""The margin rule: a forecast's log-return risk over the MPOR becomes margin rates (numpy only).

This is the one implementation: the training library's calibrator and backtest
(`volmargin.calibration.policy` re-exports these functions) and the serving runtime both call it, so a
served margin is the margin the calibration was fitted and backtested on.

Rates are on simple returns, what a position really loses: long loss 1 - e^-x, short loss e^x - 1 for a
log-return loss x, capped at 1 (fully collateralised). The base margin is `scale x max(risk, floor)`, the
floor being the policy's anti-procyclicality floor (stressed / look-back) in log-return units; then the
buffer and speed limits act against the previous margin (see `apc_step`).

`price` applies the rule to a batch of served forecasts with the calibrated `Terms` of each asset and
side, failing safe: wherever a figure cannot be computed (bad inputs, no parameters in force, a
non-finite forecast) the asset/side gets the conservative margin and a flag instead of an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from volmargin_serving.outputs import SIDES, Forecasts

FULL = 1.0  # rate of a fully collateralised position: an unknown asset's margin and haircut
DEFAULT_MIN_RATE = 0.01  # policy `min_rate` of calibration sets that do not set one: no margin below 1%
# EMIR RTS 153/2013 art. 28(1)(a): an APC buffer, where used, of at least 25%; the library's policies
# (single-asset and portfolio) refuse less, serving reads any non-negative buffer (none lowers a margin)
MIN_BUFFER = 0.25
# Add-on on margins priced from repaired doubtful inputs: a learned model is not monotone in its inputs, so
# no repair bounds the margin the true rows would have given; 25% (the size of EMIR's APC buffer) covers
# the worst shortfall measured (5%, bench/faults.py), with room.
DOUBT_ADDON = 0.25


def rate_from_log(x, long) -> np.ndarray:
    """Log-return loss -> simple-return loss of a long (1 - e^-x) or short (e^x - 1) position, uncapped."""
    sign = np.where(long, -1.0, 1.0)
    return sign * np.expm1(sign * np.asarray(x, dtype=float))


def speed_bounds(days, max_up: float | None = None, max_down: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Factors on the previous margin between which today's margin must lie, `days` days after it was set."""
    days = np.asarray(days, dtype=float)
    low = (1 - max_down) ** days if max_down is not None else np.zeros_like(days)
    high = (1 + max_up) ** days if max_up is not None else np.full_like(days, np.inf)
    return low, high


def apc_step(target, previous, buffer: float | None = None, low=0.0, high=np.inf) -> np.ndarray:
    """Today's margin from today's floored, capped target and the previous margin (NaN: none yet): the
    buffer, then the speed-limit band [previous x low, previous x high] (see `speed_bounds`)."""
    calm = np.minimum(target * (1 + (buffer or 0.0)), 1.0)
    held = np.maximum(target, np.minimum(calm, previous))
    held = np.fmin(np.fmax(held, previous * low), previous * high)  # fmin: 0 x inf (NaN) imposes no bound
    return np.where(np.isnan(previous), calm, held)


def margin_rate(risk, side, scale, floor=0.0, previous=None, days=1, buffer: float | None = None,
                max_up: float | None = None, max_down: float | None = None, min_rate: float = 0.0) -> np.ndarray:
    """Initial margin rate from one forecast row.

    `risk` and `floor` are log-return loss measures over the MPOR, `side` 'long'/'short' (or an array of
    them), `previous` the margin in force (None or NaN for a first margin), `days` since it was set,
    `min_rate` the policy's hard minimum rate (the target never goes below it).
    """
    long = np.asarray(side) == "long"
    target = np.minimum(np.maximum(rate_from_log(scale * np.maximum(risk, floor), long), min_rate), 1.0)
    previous = np.full_like(target, np.nan) if previous is None else np.asarray(previous, dtype=float)
    return apc_step(target, previous, buffer, *speed_bounds(days, max_up, max_down))


def floor_rate(side, scale, floor) -> np.ndarray:
    """The rate the APC floor alone implies, `rate(scale x floor)` capped at 1: the least margin allowed.

    A speed limit can hold `margin_rate` below it after a jump in the floor; the served margin is lifted
    to it, so a margin never undercuts the policy floor."""
    return np.minimum(rate_from_log(scale * np.asarray(floor, dtype=float), np.asarray(side) == "long"), 1.0)


def liquidation_threshold(initial, maintenance, side) -> np.ndarray:
    """Adverse price move at which a position opened at initial margin reaches maintenance margin:
    long (m_i - m_m) / (1 - m_m), short (m_i - m_m) / (1 + m_m)."""
    initial, maintenance = np.asarray(initial, dtype=float), np.asarray(maintenance, dtype=float)
    long = np.asarray(side) == "long"
    return (initial - maintenance) / np.where(long, 1 - maintenance, 1 + maintenance)


def haircut(risk_long, scale, horizon_ratio: float = 1.0) -> np.ndarray:
    """Collateral haircut in [0, 1): the long-side loss 1 - e^-x of the calibrated measure, square-root-of-
    time scaled from the MPOR to the liquidation horizon (`horizon_ratio` = liquidation days / MPOR)."""
    return -np.expm1(-scale * np.asarray(risk_long, dtype=float) * np.sqrt(horizon_ratio))


def haircut_of_margin(initial_long, horizon_ratio: float = 1.0) -> np.ndarray:
    """The haircut a long initial margin rate implies: its log loss, square-root-of-time scaled like `haircut`
    (the rate itself at a ratio of 1). A haircut is at least this: the collateral loses what a long position
    loses, and the scale was calibrated with the floors, buffer and minimum rate of the margin, so the bare
    rule alone was breached 3-8x the target (session 31's red team: BTC 4.2% against a 99% day's loss of 9.2%)."""
    with np.errstate(divide="ignore"):
        log_loss = -np.log1p(-np.minimum(np.asarray(initial_long, dtype=float), 1.0))
    return -np.expm1(-log_loss * np.sqrt(horizon_ratio))


@dataclass(frozen=True)
class Terms:
    """Calibrated parameters of a batch of assets, (assets, 2) arrays with sides long/short.

    `known` is False where the calibration set has no record of the asset and side (other arrays NaN
    there); `issue` says why a known record cannot be used as is ('' when it is in force)."""

    scale: np.ndarray
    floor: np.ndarray
    initial: np.ndarray  # published initial margin rate
    haircut: np.ndarray  # published haircut
    known: np.ndarray
    issue: np.ndarray


@dataclass(frozen=True)
class Margins:
    """Margin figures of a batch of assets: (assets, 2) arrays, sides long/short.

    `fail_safe` marks the figures that are the conservative fallback rather than the rule applied to
    today's forecast, `reason` says why ('' where not). `forecasts` holds the served forecasts (NaN rows
    for assets whose inputs were refused or not needed)."""

    assets: tuple[str, ...]
    initial: np.ndarray
    maintenance: np.ndarray
    liquidation: np.ndarray
    haircut: np.ndarray
    fail_safe: np.ndarray
    reason: np.ndarray
    forecasts: Forecasts
    calibration: str  # version of the calibration set that priced them

    def rows(self) -> list[dict]:
        """One JSON-ready dict per asset and side, for publishing."""
        return [{"asset": asset, "side": side, "initial_margin": float(self.initial[k, i]),
                 "maintenance_margin": float(self.maintenance[k, i]),
                 "liquidation_threshold": float(self.liquidation[k, i]), "haircut": float(self.haircut[k, i]),
                 "fail_safe": bool(self.fail_safe[k, i]), "reason": str(self.reason[k, i]),
                 "calibration": self.calibration}
                for k, asset in enumerate(self.assets) for i, side in enumerate(SIDES)]


def _first_reason(*pairs: tuple[np.ndarray, np.ndarray | str]) -> np.ndarray:
    """Per element, the message of the first (condition, message) pair that holds; '' if none."""
    shape = np.broadcast_shapes(*(np.shape(c) for c, _ in pairs))
    reason = np.full(shape, "", dtype=object)
    for condition, message in reversed(pairs):
        reason = np.where(condition, np.broadcast_to(np.asarray(message, dtype=object), shape), reason)
    return reason


def mpor_factor(mpor_hours: int | None, horizon: int) -> float:
    """Square-root-of-time factor from the forecast horizon (days) to an intraday margin period of risk;
    1 when the MPOR is the horizon. The calibrated scale absorbs what the square-root rule gets wrong,
    because it is fitted on realised moves over the intraday MPOR itself."""
    return 1.0 if mpor_hours is None else float(np.sqrt(mpor_hours / (24 * horizon)))


def min_rate(policy: Mapping) -> float:
    """The policy's minimum margin rate (`DEFAULT_MIN_RATE` for sets written before it existed)."""
    value = policy.get("min_rate")
    return DEFAULT_MIN_RATE if value is None else float(value)


def _rule(forecasts: Forecasts, terms: Terms, policy: Mapping, horizon: int, previous: np.ndarray) -> np.ndarray:
    """(assets, 2) initial margins of the rule on `forecasts`, lifted to the floor rate and minimum rate; NaN
    where the forecast's risk measure is not finite (the speed limit around `previous` would otherwise turn
    a missing forecast into a number that looks priced)."""
    columns = forecasts.columns()
    side = np.broadcast_to(np.array(SIDES), terms.scale.shape)
    risk = np.stack([columns[f"{policy['risk']}_{s}"] for s in SIDES], axis=1) * mpor_factor(
        policy.get("mpor_hours"), horizon)
    lowest = np.maximum(floor_rate(side, terms.scale, terms.floor), min_rate(policy))
    with np.errstate(invalid="ignore", over="ignore"):
        rule = np.maximum(margin_rate(risk, side, terms.scale, terms.floor, previous, 1, policy["buffer"],
                                      policy["max_up"], policy["max_down"], min_rate(policy)), lowest)
    return np.where(np.isfinite(risk), rule, np.nan)


def price(assets: tuple[str, ...], terms: Terms, forecasts: Forecasts, errors: np.ndarray, policy: Mapping,
          horizon: int, previous: np.ndarray | None = None, calibration: str = "",
          doubtful: list[Forecasts] | None = None, last_good: tuple[np.ndarray, np.ndarray] | None = None,
          priced_today: np.ndarray | None = None) -> Margins:
    """Margins of a batch from its forecasts, the calibrated terms and the policy of the calibration set.

    Rule per asset and side: `margin_rate(risk, side, scale, floor, previous, days=1, buffer, max_up,
    max_down)` lifted to `floor_rate`; maintenance = maintenance_fraction x initial; the haircut of the
    asset from its long-side measure and long-side scale, as `volmargin.calibration.parameter_set` does.
    `errors` (assets,) holds each asset's input error ('' if none); `previous` (assets, 2) yesterday's
    initial margins (NaN: none).

    Fail safe, never a lower margin: an unknown asset/side gets `FULL` margin and haircut; a known one
    whose inputs, parameters or forecast are unusable or doubtful gets the largest of its published
    margin, the floor rate, the minimum rate, `previous`, `last_good` (the last margins priced normally,
    (assets, 2) initial and (assets,) haircuts), the rule on `forecasts` where it gives a number (inputs
    doubtful but possible, as given) and, with `DOUBT_ADDON`, the rule on each of `doubtful` (forecasts
    under each reading of the bad rows, `repairs.READINGS`, NaN where none); its haircut is the largest
    of the published one, the last good one and those from `forecasts` and `doubtful`.

    A call that reads nothing of today's market (no forecast of its rows as given, no reading of them, and
    no good margin priced for this same day: `priced_today` (assets,)) cannot know today's volatility, so
    nothing it holds bounds the rule's margin but the up speed limit on `previous`: it is priced at
    previous x (1 + max_up) where the policy has one and `previous` is given, else at `FULL`, and its haircut
    (which no speed limit bounds) at `FULL`. A calm published, previous or remembered margin would fall
    below the clean rows' margin after a spike (session 29's red team: 0.74-0.80x on a first call).
    """
    columns = forecasts.columns()
    side = np.broadcast_to(np.array(SIDES), terms.scale.shape)
    previous = np.full(terms.scale.shape, np.nan) if previous is None else previous
    computed = _rule(forecasts, terms, policy, horizon, previous)
    errors = np.asarray(errors, dtype=object)[:, None]
    reason = _first_reason(
        (~terms.known, "not in the calibration set; fully collateralised"),
        (terms.issue != "", terms.issue),
        (errors != "", errors),
        (~(computed > 0) | ~np.isfinite(computed), "the forecast gives no usable margin"),
    )
    fail = reason != ""
    good_initial, good_haircut = last_good if last_good is not None else (np.full(side.shape, np.nan),
                                                                         np.full(len(side), np.nan))
    candidates = [terms.initial, floor_rate(side, terms.scale, terms.floor), previous, good_initial,
                  np.full(side.shape, min_rate(policy)), np.where(np.isfinite(computed), computed, np.nan)]
    readings = [(1 + DOUBT_ADDON) * _rule(d, terms, policy, horizon, previous) for d in doubtful or ()]
    candidates += readings
    today = np.isfinite(np.fmax.reduce(np.stack([computed, *readings]), axis=0))
    if priced_today is not None:
        today |= np.asarray(priced_today, dtype=bool)[:, None]
    candidates.append(np.where(today, np.nan, _unread_bound(previous, policy)))
    fallback = np.minimum(np.fmax.reduce(np.stack(candidates), axis=0), FULL)
    initial = np.where(fail, np.where(terms.known, fallback, FULL), computed)
    maintenance = float(policy["maintenance_fraction"]) * initial
    cuts = _haircuts(terms, columns, policy, horizon, fail, good_haircut, [d.columns() for d in doubtful or ()],
                     today.any(axis=1))
    implied = haircut_of_margin(initial[:, :1], (policy["liquidation_days"] or horizon) / horizon)
    cuts = np.maximum(cuts, np.minimum(implied, np.nextafter(1.0, 0)))  # FULL stays the fail-safe cuts' alone
    return Margins(tuple(assets), initial, maintenance, liquidation_threshold(initial, maintenance, side),
                   cuts, fail, reason, forecasts, calibration)


def larger(first: Margins, second: Margins, policy: Mapping) -> Margins:
    """The larger of two pricings of the same batch (the same forecasts and flags): the larger initial margin and
    haircut per asset and side, maintenance and liquidation threshold from it."""
    initial = np.maximum(first.initial, second.initial)
    maintenance = float(policy["maintenance_fraction"]) * initial
    side = np.broadcast_to(np.array(SIDES), initial.shape)
    return dataclasses.replace(first, initial=initial, maintenance=maintenance,
                               liquidation=liquidation_threshold(initial, maintenance, side),
                               haircut=np.maximum(first.haircut, second.haircut))


def _unread_bound(previous: np.ndarray, policy: Mapping) -> np.ndarray:
    """The most the rule can give a side whose rows were not read: `previous` x (1 + max_up) (`_rule` prices
    one day on), FULL where there is no `previous` or no up speed limit."""
    max_up = policy.get("max_up")
    with np.errstate(invalid="ignore"):
        bound = previous * (1 + max_up) if max_up is not None else np.full(previous.shape, np.nan)
    return np.where(np.isfinite(bound), np.minimum(bound, FULL), FULL)


def _fresh_haircut(columns: Mapping[str, np.ndarray], terms: Terms, policy: Mapping, horizon: int) -> np.ndarray:
    ratio = (policy["liquidation_days"] or horizon) / horizon
    with np.errstate(invalid="ignore", over="ignore"):
        fresh = haircut(columns[f"{policy['haircut_risk'] or policy['risk']}_long"], terms.scale[:, 0], ratio)
    fresh = np.minimum(fresh, np.nextafter(1.0, 0))  # a loss that rounds to 100% is all but the whole value
    return np.where(np.isfinite(fresh) & (fresh >= 0), fresh, np.nan)


def _haircuts(terms: Terms, columns: Mapping[str, np.ndarray], policy: Mapping, horizon: int,
              fail: np.ndarray, last_good: np.ndarray, doubtful: list[Mapping[str, np.ndarray]],
              today: np.ndarray) -> np.ndarray:
    """(assets, 2) haircut of each asset (the same on both sides): from today's long-side forecast where
    the long side is priced normally, else the largest of the asset's published haircuts, its last good
    haircut and the doubtful forecast's; FULL if the asset is unknown or nothing of today was read (`today`
    (assets,), see `price`)."""
    fresh = _fresh_haircut(columns, terms, policy, horizon)
    published = np.fmax.reduce(np.where(terms.known, terms.haircut, np.nan), axis=1)
    readings = [np.minimum((1 + DOUBT_ADDON) * _fresh_haircut(columns_d, terms, policy, horizon), np.nextafter(1.0, 0))
                for columns_d in doubtful]
    fallback = np.fmax.reduce([published, last_good, fresh, *readings])  # fresh: the doubtful rows as given
    fallback = np.where(np.isnan(published) | ~today, FULL, fallback)
    usable = ~fail[:, 0] & np.isfinite(fresh)
    return np.repeat(np.where(usable, fresh, fallback)[:, None], len(SIDES), axis=1)
