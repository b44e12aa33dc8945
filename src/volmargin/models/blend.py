"""The GBM and the GRU ensemble combined: one global forecaster, one ONNX graph.

The two learned models err differently (trees on one day's features, a recurrent network on a window),
and on assets neither saw their average beats either (`bench/unseen_learned_blend.py`, rule fixed before
its run; README "Learned models on assets they never saw"). The blend forecasts the variance
w f_gbm + (1 - w) f_gru and keeps the GBM's standardized tails (VaR and ES scale with the blended
volatility), whose calibration on unseen assets the GRU's lack.

Both members read the same feature core with the same `FeatureSpec`; the GBM reads one more column
(liquidity) after the GRU's, so the blend takes the GBM's standardized window (window, GBM features) and
hands the GRU its columns re-standardized to its own statistics (an affine map, inside the graph too).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from volmargin.errors import ConfigError
from volmargin.features.learned import FEATURE_NAMES, check_levels, require_levels
from volmargin.models.base import Forecast, GlobalForecaster


class BlendForecaster(GlobalForecaster):
    """w x the GBM's variance + (1 - w) x the GRU's, with the GBM's standardized tails.

    `gbm` and `nn` are the members' parameters (as in a config's `learned.gbm` / `learned.nn`); `levels`
    is passed to both. Refits refit both (the GRU warm-starts as on its own).
    """

    name = "blend"

    def __init__(self, weight: float = 0.7, gbm: dict | None = None, nn: dict | None = None,
                 levels: tuple[float, ...] = (0.975, 0.99)):
        self.weight = weight
        self.gbm = gbm
        self.nn = nn
        self.levels = levels

    @classmethod
    def from_members(cls, gbm, nn, weight: float = 0.7) -> "BlendForecaster":
        """A blend of two fitted members (e.g. the ones a run has already trained): no further fitting."""
        params = [{k: v for k, v in m.get_params().items() if k != "levels"} for m in (gbm, nn)]
        blend = cls(weight, *params, gbm.levels_)
        blend.gbm_, blend.nn_ = gbm, nn
        blend._check_members()
        return blend

    def _check_members(self) -> None:
        if not 0 <= self.weight <= 1:
            raise ConfigError(f"blend.weight: {self.weight!r}; a number in [0, 1]")
        gbm, nn = self.gbm_, self.nn_
        if gbm.feature_spec_ != nn.feature_spec_ or gbm.horizon_ != nn.horizon_ or gbm.levels_ != nn.levels_:
            raise ConfigError("blend: the gbm and nn members must share level_days, horizon and levels")
        if tuple(gbm.feature_names_[:len(FEATURE_NAMES)]) != FEATURE_NAMES or gbm.iv_features:
            raise ConfigError("blend: the gbm member must read the core features (no iv_features)")

    def fit_panel(self, trains: dict[str, pd.DataFrame], horizon: int = 1) -> "BlendForecaster":
        from volmargin.models.gbm import GBMForecaster
        from volmargin.models.neural import NeuralForecaster

        levels = check_levels(self.levels)
        for key in ("gbm", "nn"):
            if "levels" in (getattr(self, key) or {}):
                raise ConfigError(f"blend.{key}.levels: set the blend's own levels; its members share them")
        if not hasattr(self, "nn_"):  # later fits refit the same members (the GRU warm-starts)
            self.gbm_ = GBMForecaster(levels=levels, **(self.gbm or {}))
            self.nn_ = NeuralForecaster(levels=levels, **(self.nn or {}))
        self.gbm_.fit_panel(trains, horizon)
        self.nn_.fit_panel(trains, horizon)
        self._check_members()
        return self

    # what export and serving read: the GBM's feature columns and statistics, the GRU's window
    @property
    def levels_(self) -> tuple[float, ...]:
        return self.gbm_.levels_

    @property
    def horizon_(self) -> int:
        return self.gbm_.horizon_

    @property
    def feature_spec_(self):
        return self.gbm_.feature_spec_

    @property
    def feature_names_(self) -> tuple[str, ...]:
        return self.gbm_.feature_names_

    @property
    def scaler_(self):
        return self.gbm_.scaler_

    @property
    def window(self) -> int:
        return self.nn_.window

    def network_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(a, b) with the GRU's standardized features = a x the GBM's first columns + b."""
        g, n = self.gbm_.scaler_, self.nn_.scaler_
        k = len(FEATURE_NAMES)
        return g.scale_[:k] / n.scale_, (g.mean_[:k] - n.mean_) / n.scale_

    def blended_log_variance(self, gbm_raw: np.ndarray, nn_raw: np.ndarray) -> np.ndarray:
        """log(w exp(g) + (1 - w) exp(n)) of the members' log variances relative to the level."""
        w = self.weight
        if w in (0, 1):
            return np.asarray(gbm_raw if w == 1 else nn_raw, dtype=np.float64)
        return np.logaddexp(np.log(w) + gbm_raw, np.log1p(-w) + nn_raw)

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        """Outputs (`volmargin.models.neural.output_columns`) for windows (n, window, GBM features)
        standardized with the GBM's statistics: what the exported graph computes."""
        a, b = self.network_affine()
        gbm = np.asarray(self.gbm_.predict_raw(x[:, -1]), dtype=np.float64)
        nn = self.nn_.predict_raw((x[:, :, :len(FEATURE_NAMES)] * a + b).astype(np.float32)).astype(np.float64)
        gbm[:, 0] = self.blended_log_variance(gbm[:, 0], nn[:, 0])
        return gbm

    def forecast(self, history: pd.DataFrame, origins: pd.DatetimeIndex, levels: tuple[float, ...]) -> Forecast:
        require_levels(self.levels_, levels)
        gbm = self.gbm_.forecast(history, origins, levels)
        nn = self.nn_.forecast(history, origins, levels)
        level = np.log(gbm.variance)  # the relative log variances share the level, so blend the absolute ones
        variance = np.exp(self.blended_log_variance(level, np.log(nn.variance)))
        scale = np.sqrt(variance / gbm.variance)[:, None]
        return Forecast(origins, gbm.horizon, variance, gbm.levels, {s: v * scale for s, v in gbm.var.items()},
                        {s: v * scale for s, v in gbm.es.items()})

