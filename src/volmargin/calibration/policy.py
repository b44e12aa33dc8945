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
  `max_up` / `max_down` per day, relative to the previous margin; never below the floors' own rate: where a
  floor jumps past the limit (a crash realised), the margin is lifted to it.
Floors (b), (c) are in log-return units like the risk, so `target = rate(scale x max(risk, floor))`: the
margin is monotone in the scale, which is what lets the calibrator bisect on it.

The rule itself (`margin_rate`, `apc_step`, `speed_bounds`, `rate_from_log`, `liquidation_threshold`,
`haircut`) lives once, numpy only, in `volmargin_serving.margins` and is re-exported here: the calibrator,
the backtest and the serving runtime all apply the same code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from numbers import Integral

from volmargin_serving.bundle import real_number
from volmargin_serving.calibration import HARD_MIN_RATE, HARD_MIN_SCALE
from volmargin_serving.margins import (
    DEFAULT_MIN_RATE, MIN_BUFFER, apc_step, haircut, haircut_of_margin, liquidation_threshold, margin_rate,
    rate_from_log, speed_bounds,
)

from volmargin.config import holds
from volmargin.errors import ConfigError

__all__ = ["MIN_BUFFER", "PolicyConfig", "apc_step", "haircut", "haircut_of_margin", "liquidation_threshold", "margin_rate",
           "rate_from_log", "speed_bounds"]


def _whole(value) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


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
        num, whole = real_number, _whole  # finite numbers only: an inf passed every comparison below
        checks = {  # each field's rule; a value of the wrong type (a string, a number for a pair) fails it too
            "risk": lambda v: isinstance(v, str) and re.fullmatch(r"(var|es)\d+", v) is not None,
            "haircut_risk": lambda v: v is None or (isinstance(v, str) and re.fullmatch(r"(var|es)\d+", v)),
            "target_breach_rate": lambda v: num(v) and 0 <= v < 0.5,  # 30% breaches at 0.5 read as "green"
            "maintenance_fraction": lambda v: num(v) and 0 < v < 1,
            "buffer": lambda v: v is None or (num(v) and v >= MIN_BUFFER),
            "stressed_floor": lambda v: isinstance(v, bool),
            "stress_quantile": lambda v: num(v) and 0 < v < 1,
            "stress_window": lambda v: whole(v) and v >= 30,
            "lookback_floor": lambda v: isinstance(v, bool),
            "lookback_days": lambda v: whole(v) and v >= 30,
            "lookback_z": lambda v: num(v) and v > 0,
            "floor_min_obs": lambda v: whole(v) and v >= 1,
            "max_up": lambda v: v is None or (num(v) and v > 0),
            "max_down": lambda v: v is None or (num(v) and 0 < v < 1),
            "pooled": lambda v: isinstance(v, bool),
            "scale_bounds": lambda v: len(v) == 2 and all(map(num, v)) and HARD_MIN_SCALE <= v[0] < v[1],
            "liquidation_days": lambda v: v is None or (whole(v) and v >= 1),
            "mpor_hours": lambda v: v is None or (whole(v) and 1 <= v < 24),
            "min_rate": lambda v: num(v) and HARD_MIN_RATE <= v < 1,
        }
        checks = {key: holds(rule, getattr(self, key)) for key, rule in checks.items()}
        bad = [key for key, ok in checks.items() if not ok]
        if bad:
            value = getattr(self, bad[0])
            hint = f" (EMIR RTS art. 28(1)(a) asks >= {MIN_BUFFER})" if bad[0] == "buffer" else ""
            hint = f" (the runtime refuses sets below {HARD_MIN_RATE})" if bad[0] == "min_rate" else hint
            hint = (f" (the runtime refuses sets that scale below {HARD_MIN_SCALE})" if bad[0] == "scale_bounds"
                    else hint)
            raise ConfigError(f"policy.{bad[0]}: invalid value {value!r}{hint}")
        for on, window, name in ((self.stressed_floor, self.stress_window, "stress_window"),
                                 (self.lookback_floor, self.lookback_days, "lookback_days")):
            if on and self.floor_min_obs > window:  # a rolling window of fewer rows than that never fills
                raise ConfigError(f"policy.floor_min_obs: {self.floor_min_obs} is more than {name} {window} (the "
                                  "floor would never apply)")

    @property
    def path_dependent(self) -> bool:
        return self.buffer is not None or self.max_up is not None or self.max_down is not None
