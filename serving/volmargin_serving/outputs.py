"""Model outputs in return units: the post-processing shared by training (`volmargin`) and serving."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SIDES = ("long", "short")


def measure_name(measure: str, level: float) -> str:
    """Column stem of a tail measure at a level, as in volmargin's forecast tables: var99, es975, ..."""
    return f"{measure}{level * 100:g}".replace(".", "")


@dataclass(frozen=True)
class Forecasts:
    """Forecasts for a batch of assets: `variance` (batch,) of the h-day log return; `var` and `es`
    (batch, side, level): positive loss fractions of the log return, sides long/short, levels ascending."""

    variance: np.ndarray
    var: np.ndarray
    es: np.ndarray
    levels: tuple[float, ...]
    horizon: int

    @property
    def volatility(self) -> np.ndarray:
        return np.sqrt(self.variance)

    def columns(self) -> dict[str, np.ndarray]:
        """Flat columns named as in volmargin's forecast tables: variance, var99_long, es975_short, ..."""
        out = {"variance": self.variance, "volatility": self.volatility}
        for i, side in enumerate(SIDES):
            for j, level in enumerate(self.levels):
                out[f"{measure_name('var', level)}_{side}"] = self.var[:, i, j]
                out[f"{measure_name('es', level)}_{side}"] = self.es[:, i, j]
        return out


def postprocess(raw: np.ndarray, log_level: np.ndarray, n_levels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Model outputs (batch, 1 + 4 n_levels) -> variance, VaR, ES in return units.

    Column 0 is the log variance relative to the level (variance = exp(level_t + log h + m)); the rest
    are the standardized VaR then ES per side and level, scaled by the forecast volatility.
    """
    raw = raw.astype(np.float64)
    variance = np.exp(log_level + raw[:, 0])
    tails = raw[:, 1:].reshape(-1, 2, 2, n_levels) * np.sqrt(variance)[:, None, None, None]
    return variance, tails[:, :, 0], tails[:, :, 1]


def postprocess_one(raw: np.ndarray, log_level: float, n_levels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`postprocess` of one asset's outputs (1, 1 + 4 n_levels) and log level, in plain floats but for the
    arrays returned: the same arithmetic in a fraction of the numpy calls (math.exp may differ from
    numpy's in the last bit; sqrt and products are correctly rounded in both)."""
    first, *rest = raw[0].tolist()
    try:
        variance = math.exp(log_level + first)
    except OverflowError:  # numpy's exp gives inf there: keep the two forms equal, never raise
        variance = math.inf
    volatility = math.sqrt(variance)
    tails = np.array([x * volatility for x in rest]).reshape(1, 2, 2, n_levels)
    return np.array([variance]), tails[:, :, 0], tails[:, :, 1]
