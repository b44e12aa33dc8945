"""The forecaster contract and the typed forecast container every model returns.

Conventions (used across volmargin):
- returns are daily log returns; variances are of the h-day log return (sum of the next h days);
- VaR and ES are *loss* quantiles, positive numbers in log-return units, for both sides:
  long loses when the price falls (loss = -r), short loses when it rises (loss = +r);
- a forecast made at origin t uses data up to the end of day t only and targets days t+1..t+h.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from volmargin_serving.outputs import postprocess

SIDES = ("long", "short")


def level_tag(level: float) -> str:
    """0.99 -> '99', 0.975 -> '975' (used in column names such as var99_long)."""
    return f"{level * 100:g}".replace(".", "")


def forecast_levels(columns) -> tuple[float, ...]:
    """Levels present in a forecast table, from its var{tag}_long columns ('975' -> 0.975)."""
    tags = [c[3:-5] for c in columns if c.startswith("var") and c.endswith("_long")]
    return tuple(sorted(float(f"0.{tag}") for tag in tags))


@dataclass(frozen=True)
class Forecast:
    """Forecasts from one model for one asset at a sequence of origins.

    `var` and `es` map side -> array of shape (n_origins, n_levels), aligned with `levels`.
    """

    origins: pd.DatetimeIndex
    horizon: int
    variance: np.ndarray
    levels: tuple[float, ...]
    var: dict[str, np.ndarray] = field(default_factory=dict)
    es: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n, k = len(self.origins), len(self.levels)
        if self.variance.shape != (n,):
            raise ValueError(f"variance has shape {self.variance.shape}, expected ({n},)")
        for table in (self.var, self.es):
            if set(table) != set(SIDES):
                raise ValueError(f"VaR/ES must be given for both sides {SIDES}, got {sorted(table)}")
            for side, values in table.items():
                if values.shape != (n, k):
                    raise ValueError(f"{side} VaR/ES has shape {values.shape}, expected ({n}, {k})")

    @property
    def volatility(self) -> np.ndarray:
        return np.sqrt(self.variance)

    @property
    def target_dates(self) -> pd.DatetimeIndex:
        """First day each forecast covers (origin + 1 day)."""
        return self.origins + pd.Timedelta(days=1)

    def to_frame(self) -> pd.DataFrame:
        """One row per origin: variance, then var{L}_{side} and es{L}_{side} per level and side."""
        columns: dict[str, np.ndarray] = {"variance": self.variance}
        for j, level in enumerate(self.levels):
            tag = level_tag(level)
            for side in SIDES:
                columns[f"var{tag}_{side}"] = self.var[side][:, j]
                columns[f"es{tag}_{side}"] = self.es[side][:, j]
        frame = pd.DataFrame(columns, index=self.origins)
        frame.index.name = "origin"
        return frame

    @classmethod
    def from_scale(
        cls,
        origins: pd.DatetimeIndex,
        horizon: int,
        variance: np.ndarray,
        levels: tuple[float, ...],
        std_var: dict[str, np.ndarray],
        std_es: dict[str, np.ndarray],
    ) -> "Forecast":
        """Location-scale forecast: VaR/ES = volatility x standardized loss quantiles.

        `std_var[side]` / `std_es[side]` have shape (n_levels,) (one distribution for all origins) or
        (n_origins, n_levels).
        """
        vol = np.sqrt(np.asarray(variance, dtype=float))[:, None]
        shape = (len(origins), len(levels))
        var = {s: np.broadcast_to(vol * std_var[s], shape).copy() for s in SIDES}
        es = {s: np.broadcast_to(vol * std_es[s], shape).copy() for s in SIDES}
        return cls(origins, horizon, np.asarray(variance, dtype=float), tuple(levels), var, es)

    @classmethod
    def from_raw(cls, origins: pd.DatetimeIndex, horizon: int, raw: np.ndarray, log_level: np.ndarray,
                 levels: tuple[float, ...]) -> "Forecast":
        """A learned model's outputs (layout of `volmargin.models.neural.output_columns`) turned into
        return units by the serving runtime's post-processing, so training and serving share it."""
        variance, var, es = postprocess(np.asarray(raw), np.asarray(log_level), len(levels))
        return cls(origins, horizon, variance, tuple(levels), {s: var[:, i] for i, s in enumerate(SIDES)},
                   {s: es[:, i] for i, s in enumerate(SIDES)})


class Forecaster(ABC):
    """scikit-learn style: __init__ stores parameters only, fit returns self, learned attributes end in _.

    `daily` frames are the per-asset daily table of `volmargin.features.realized.daily_measures`
    (columns include `ret`, `rv`, `complete`), indexed by UTC day, ascending.
    """

    name: str = "forecaster"

    @abstractmethod
    def fit(self, train: pd.DataFrame, horizon: int = 1) -> "Forecaster":
        """Learn parameters from `train` (all rows are at or before the first forecast origin)."""

    @abstractmethod
    def forecast(
        self, history: pd.DataFrame, origins: pd.DatetimeIndex, levels: tuple[float, ...]
    ) -> Forecast:
        """Forecasts made at each of `origins` (rows of `history`) with fitted parameters.

        Contract: the forecast at origin t depends only on rows of `history` up to t; the
        walk-forward engine passes history up to the last origin and a test corrupts later rows.
        """

    def get_params(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


class GlobalForecaster(Forecaster):
    """A model learned across assets: at each refit it sees every asset's rows up to the refit origin.

    `forecast` stays per asset (history of one asset up to its origins), so serving and scoring treat
    global and per-asset models alike.
    """

    @abstractmethod
    def fit_panel(self, trains: dict[str, pd.DataFrame], horizon: int = 1) -> "GlobalForecaster":
        """Learn from every asset's training rows (each frame ends at or before the refit origin)."""

    def fit(self, train: pd.DataFrame, horizon: int = 1) -> "GlobalForecaster":
        return self.fit_panel({"asset": train}, horizon)
