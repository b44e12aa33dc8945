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

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        """Outputs (`volmargin.models.neural.output_columns`) for windows (n, window, GBM features)
        standardized with the GBM's statistics: what the exported graph computes."""
        a, b = self.network_affine()
        gbm = np.asarray(self.gbm_.predict_raw(x[:, -1]), dtype=np.float64)
        nn = self.nn_.predict_raw((x[:, :, :len(FEATURE_NAMES)] * a + b).astype(np.float32)).astype(np.float64)
        gbm[:, 0] = np.log(blended(np.exp(gbm[:, 0]), np.exp(nn[:, 0]), self.weight)[0])  # relative to one level
        return gbm

    def forecast(self, history: pd.DataFrame, origins: pd.DatetimeIndex, levels: tuple[float, ...]) -> Forecast:
        require_levels(self.levels_, levels)
        gbm = self.gbm_.forecast(history, origins, levels)
        variance, scale = blended(gbm.variance, self.nn_.forecast(history, origins, levels).variance, self.weight)
        return Forecast(origins, gbm.horizon, variance, gbm.levels, {s: v * scale[:, None] for s, v in gbm.var.items()},
                        {s: v * scale[:, None] for s, v in gbm.es.items()})


def blended(gbm_variance: np.ndarray, nn_variance: np.ndarray, weight: float) -> tuple[np.ndarray, np.ndarray]:
    """The blend's variance w f_gbm + (1 - w) f_nn (in logs, as the graph) and the factor sqrt(blend / f_gbm)
    that scales the GBM's VaR and ES to it."""
    log_gbm = np.log(np.asarray(gbm_variance, dtype=np.float64))
    log_nn = np.log(np.asarray(nn_variance, dtype=np.float64))
    if weight in (0, 1):
        log_blend = log_gbm if weight == 1 else log_nn
    else:
        log_blend = np.logaddexp(np.log(weight) + log_gbm, np.log1p(-weight) + log_nn)
    return np.exp(log_blend), np.exp(0.5 * (log_blend - log_gbm))


def blend_table(gbm: pd.DataFrame, nn: pd.DataFrame, weight: float, keys: list[str]) -> pd.DataFrame:
    """The blend's rows of a forecast table from its members' rows (columns variance, var*, es*): what a
    `BlendForecaster` whose members made these forecasts would give, on the `keys` both have."""
    rows = gbm.merge(nn[[*keys, "variance"]].rename(columns={"variance": "nn_variance"}), on=keys)
    variance, scale = blended(rows["variance"].to_numpy(), rows.pop("nn_variance").to_numpy(), weight)
    tails = [c for c in rows.columns if c.startswith(("var", "es")) and c != "variance"]
    rows[tails] = rows[tails].to_numpy() * scale[:, None]
    rows["variance"] = variance
    return rows
