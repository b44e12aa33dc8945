"""Margin policy: a forecaster's log-return risk over the MPOR becomes margin rates.

Rates are on simple returns, what a position really loses: long loss 1 - e^r, short loss e^r - 1, so a
log-return risk x becomes the rate 1 - e^-x (long) or e^x - 1 (short), capped at 1 (fully collateralised).
The base margin is `scale x risk`; the scale is the one free parameter the autocalibrator sets.

Anti-procyclicality (APC) tools, each switchable, as EMIR RTS 153/2013 art. 28(1) asks of CCPs:
- (a) a buffer of at least 25% on the base margin, exhausted while margins rise: the margin is
  `max(target, min(target x (1 + buffer), previous margin))`: in calm it is target x (1 + buffer); a rise
  in the target is absorbed by the previous margin until the target exceeds it; once consumed, the buffer
  comes back as the target falls (the margin holds flat until target x (1 + buffer) drops below it);
- (b) stressed observations: a floor of `scale x q`, q the `stress_quantile` of realised MPOR losses of
  that side in the worst `stress_window`-day window seen so far (the running maximum of the rolling
  quantile, as Basel's stressed VaR takes its worst 12 months): a crash stays in the floor for good;
- (c) a long look-back floor: `scale x z x sqrt(mean realised MPOR variance over lookback_days)`;
- speed limits (not an art. 28 option, a common CCP practice): the margin may rise / fall by at most
  `max_up` / `max_down` per day, relative to the previous margin.
Floors (b), (c) are in log-return units like the risk, so `target = rate(scale x max(risk, floor))`: the
margin is monotone in the scale, which is what lets the calibrator bisect on it.

This module holds the numpy-only rule the serving runtime reuses (`margin_rate`, `apc_step`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from volmargin.errors import ConfigError

MIN_BUFFER = 0.25  # EMIR RTS 153/2013 art. 28(1)(a)


@dataclass(frozen=True)
class PolicyConfig:
    risk: str = "var99"  # forecast column stem: var99, es975, ... (columns {risk}_long, {risk}_short)
    target_breach_rate: float = 0.01  # initial margin breached on at most this share of days, per side
    maintenance_fraction: float = 0.75  # maintenance margin = fraction x initial margin
    buffer: float | None = None  # art. 28(1)(a); None = off, else >= 0.25
    stressed_floor: bool = False  # art. 28(1)(b)
    stress_quantile: float = 0.99
    stress_window: int = 250  # days
    lookback_floor: bool = False  # art. 28(1)(c)
    lookback_days: int = 3650
    lookback_z: float = 2.326  # N(0,1) 99% quantile
    floor_min_obs: int = 100  # realised rows a floor needs before it applies
    max_up: float | None = None  # speed limits: max relative change per day; None = off
    max_down: float | None = None
    pooled: bool = False  # one scale per (model, side) instead of per (model, asset, side)
    scale_bounds: tuple[float, float] = (0.1, 10.0)
    haircut_risk: str | None = None  # stem of the haircut's long-side measure; None = `risk`
    liquidation_days: int | None = None  # haircut horizon; None = the MPOR

    def __post_init__(self) -> None:
        checks = {
            "target_breach_rate": 0 <= self.target_breach_rate < 1,
            "maintenance_fraction": 0 < self.maintenance_fraction < 1,
            "buffer": self.buffer is None or self.buffer >= MIN_BUFFER,
            "stress_quantile": 0 < self.stress_quantile < 1,
            "stress_window": self.stress_window >= 30,
            "lookback_days": self.lookback_days >= 30,
            "lookback_z": self.lookback_z > 0,
            "floor_min_obs": self.floor_min_obs >= 1,
            "max_up": self.max_up is None or self.max_up > 0,
            "max_down": self.max_down is None or 0 < self.max_down < 1,
            "scale_bounds": 0 < self.scale_bounds[0] < self.scale_bounds[1],
            "liquidation_days": self.liquidation_days is None or self.liquidation_days >= 1,
        }
        bad = [key for key, ok in checks.items() if not ok]
        if bad:
            value = getattr(self, bad[0])
            hint = f" (EMIR RTS art. 28(1)(a) asks >= {MIN_BUFFER})" if bad[0] == "buffer" else ""
            raise ConfigError(f"policy.{bad[0]}: invalid value {value!r}{hint}")

    @property
    def path_dependent(self) -> bool:
        return self.buffer is not None or self.max_up is not None or self.max_down is not None


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
                max_up: float | None = None, max_down: float | None = None) -> np.ndarray:
    """Initial margin rate from one forecast row (numpy only; the serving runtime calls this).

    `risk` and `floor` are log-return loss measures over the MPOR, `side` 'long'/'short' (or an array of
    them), `previous` the margin in force (None for a first margin), `days` since it was set.
    """
    long = np.asarray(side) == "long"
    target = np.minimum(rate_from_log(scale * np.maximum(risk, floor), long), 1.0)
    previous = np.full_like(target, np.nan) if previous is None else np.asarray(previous, dtype=float)
    return apc_step(target, previous, buffer, *speed_bounds(days, max_up, max_down))


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
