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

The rule itself (`margin_rate`, `apc_step`, `speed_bounds`, `rate_from_log`, `liquidation_threshold`,
`haircut`) lives once, numpy only, in `volmargin_serving.margins` and is re-exported here: the calibrator,
the backtest and the serving runtime all apply the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

from volmargin_serving.calibration import HARD_MIN_RATE
from volmargin_serving.margins import (
    DEFAULT_MIN_RATE, apc_step, haircut, liquidation_threshold, margin_rate, rate_from_log, speed_bounds,
)

from volmargin.errors import ConfigError

__all__ = ["MIN_BUFFER", "PolicyConfig", "apc_step", "haircut", "liquidation_threshold", "margin_rate",
           "rate_from_log", "speed_bounds"]

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
    mpor_hours: int | None = None  # an intraday MPOR (hours after the origin day's close); None = the horizon
    min_rate: float = DEFAULT_MIN_RATE  # hard floor: no initial margin below this rate, checked again at load

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
            "mpor_hours": self.mpor_hours is None or 1 <= self.mpor_hours < 24,
            "min_rate": HARD_MIN_RATE <= self.min_rate < 1,
        }
        bad = [key for key, ok in checks.items() if not ok]
        if bad:
            value = getattr(self, bad[0])
            hint = f" (EMIR RTS art. 28(1)(a) asks >= {MIN_BUFFER})" if bad[0] == "buffer" else ""
            hint = f" (the runtime refuses sets below {HARD_MIN_RATE})" if bad[0] == "min_rate" else hint
            raise ConfigError(f"policy.{bad[0]}: invalid value {value!r}{hint}")

    @property
    def path_dependent(self) -> bool:
        return self.buffer is not None or self.max_up is not None or self.max_down is not None
