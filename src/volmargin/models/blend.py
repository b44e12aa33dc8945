"""The GBM and the GRU ensemble combined: one global forecaster, one ONNX graph.

The two learned models err differently (trees on one day's features, a recurrent network on a window),
and on assets neither saw their average beats either (`bench/unseen_learned_blend.py`, rule fixed before
its run; docs/unseen-assets.md "The GBM and the GRU blended"). The blend forecasts the variance
w f_gbm + (1 - w) f_gru and keeps the GBM's standardized tails (VaR and ES scale with the blended
volatility), whose calibration on unseen assets the GRU's lack.

Both members read the same feature core with the same `FeatureSpec`; the GBM reads one more column
(liquidity) after the GRU's, so the blend takes the GBM's standardized window (window, GBM features) and
hands the GRU its columns re-standardized to its own statistics (an affine map, inside the graph too).

The long-run level: with `long_share` s > 0 the forecast is (1 - s) x that blend + s x the asset's mean daily
RV over the complete days of its last `long_days` days (times the horizon), the tails scaled with it. A frozen
global model does not know a new asset's own long-run variance and was short of it on the jump days; the mix
puts back some of what an asset's own GJR-GARCH gave there (`bench/unseen_level_blend.py`; s = 0.075 and 121
days chosen on unseen-asset selection folds: docs/unseen-assets.md "The long-run level is in the product since
session 16"). The level is the last core feature column (`features.LONG_LEVEL_FEATURE_NAMES`), read by the graph
but by neither member, with identity statistics (missing -> 0: the asset's level variance).

With `weight` 1 the GRU has no part and is neither fitted nor exported: the GBM alone mixed with the level,
what `training/configs/gbm-crypto-hourly.yaml` trains (s = 0.1, chosen for the GBM the same way).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
from volmargin_serving.features import LIQUIDITY_FEATURE_NAMES, LONG_LEVEL_FEATURE_NAMES, FeatureSpec
from volmargin_serving.features import standardize as core_standardize

from volmargin.errors import ConfigError
from volmargin.features.learned import (
    FEATURE_NAMES, check_levels, feature_frame, fitted_scaler, horizon_level, require_levels,
)
from volmargin.models.base import Forecast, GlobalForecaster


class BlendForecaster(GlobalForecaster):
    """w x the GBM's variance + (1 - w) x the GRU's, with the GBM's standardized tails; mixed with the asset's
    long-run level where `long_share` > 0 (see the module's docstring).

    `gbm` and `nn` are the members' parameters (as in a config's `learned.gbm` / `learned.nn`); `levels`
    is passed to both. Refits refit both (the GRU warm-starts as on its own). With `weight` 1 there is no GRU
    (`nn_` is None).
    """

    name = "blend"

    def __init__(self, weight: float = 0.7, gbm: dict | None = None, nn: dict | None = None,
                 levels: tuple[float, ...] = (0.975, 0.99), long_share: float = 0.075, long_days: int = 121):
        self.weight = weight
        self.gbm = gbm
        self.nn = nn
        self.levels = levels
        self.long_share = long_share
        self.long_days = long_days

    @classmethod
    def from_members(cls, gbm, nn, weight: float = 0.7, long_share: float = 0.075,
                     long_days: int = 121) -> "BlendForecaster":
        """A blend of fitted members (e.g. the ones a run has already trained): no further fitting; with
        weight 1 `nn` is not used (may be None)."""
        params = [{k: v for k, v in m.get_params().items() if k != "levels"} if m is not None else None
                  for m in (gbm, nn)]
        blend = cls(weight, *params, gbm.levels_, long_share, long_days)
        blend.gbm_, blend.nn_ = gbm, (nn if blend._with_nn else None)
        blend._check_members()
        return blend

    def _check_params(self) -> None:
        if not (isinstance(self.weight, (int, float)) and not isinstance(self.weight, bool) and 0 <= self.weight <= 1):
            raise ConfigError(f"blend.weight: {self.weight!r}; a number in [0, 1]")
        if not 0 <= self.long_share < 1:
            raise ConfigError(f"blend.long_share: {self.long_share!r}; a number in [0, 1)")
        if self.long_share and not (isinstance(self.long_days, int) and self.long_days >= 2):
            raise ConfigError(f"blend.long_days: {self.long_days!r}; a whole number of days >= 2")

    @property
    def _with_nn(self) -> bool:
        """Whether the GRU has a part (weight < 1)."""
        return self.weight < 1

    @classmethod
    def members(cls, params: dict) -> tuple[str, ...]:
        """The members a blend of these parameters reads: the GBM, and the GRU unless its weight is 1."""
        blend = cls(weight=params.get("weight", cls().weight))
        blend._check_params()
        return ("gbm", "nn") if blend._with_nn else ("gbm",)

    @classmethod
    def made_of(cls, params: dict, member_params: dict, levels: tuple[float, ...]) -> bool:
        """Whether a blend of `params` is the blend of the models of `member_params` (name -> parameters)
        forecasting `levels`: each member configured alike (the levels a config passes on aside) and every
        one of them, the blend included, at those levels."""
        plain = lambda p: {k: v for k, v in (p or {}).items() if k != "levels"}  # noqa: E731
        at = lambda p: tuple(sorted((p or {}).get("levels") or levels)) == tuple(sorted(levels))  # noqa: E731
        members = cls.members(params)
        return at(params) and all(m in member_params and plain(params.get(m)) == plain(member_params[m])
                                  and at(member_params[m]) for m in members)

    def _check_members(self) -> None:
        self._check_params()
        gbm, nn = self.gbm_, self.nn_
        if (nn is None) == self._with_nn:
            raise ConfigError(f"blend: weight {self.weight} needs {'an' if self._with_nn else 'no'} nn member")
        if nn is not None and (gbm.feature_spec_ != nn.feature_spec_ or gbm.horizon_ != nn.horizon_
                               or gbm.levels_ != nn.levels_):
            raise ConfigError("blend: the gbm and nn members must share level_days, horizon and levels")
        if tuple(gbm.feature_names_[:len(FEATURE_NAMES)]) != FEATURE_NAMES or gbm.iv_features:
            raise ConfigError("blend: the gbm member must read the core features (no iv_features)")
        if self.long_share and LIQUIDITY_FEATURE_NAMES[0] not in gbm.feature_names_:
            raise ConfigError("blend.long_share > 0 needs a gbm member that reads liquidity (gbm: {liquidity: true})")

    def fit_panel(self, trains: dict[str, pd.DataFrame], horizon: int = 1) -> "BlendForecaster":
        from volmargin.models.gbm import GBMForecaster
        from volmargin.models.neural import NeuralForecaster

        levels = check_levels(self.levels)
        self._check_params()
        for key in ("gbm", "nn"):
            if "levels" in (getattr(self, key) or {}):
                raise ConfigError(f"blend.{key}.levels: set the blend's own levels; its members share them")
        if not hasattr(self, "nn_"):  # later fits refit the same members (the GRU warm-starts)
            self.gbm_ = GBMForecaster(levels=levels, **(self.gbm or {}))
            self.nn_ = NeuralForecaster(levels=levels, **(self.nn or {})) if self._with_nn else None
        self.gbm_.fit_panel(trains, horizon)
        if self.nn_ is not None:
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
        spec = self.gbm_.feature_spec_
        return replace(spec, long_days=self.long_days) if self.long_share else spec

    @property
    def feature_names_(self) -> tuple[str, ...]:
        return self.gbm_.feature_names_ + LONG_LEVEL_FEATURE_NAMES * bool(self.long_share)

    @property
    def scaler_(self):
        """The GBM's statistics, and identity ones for the long-run level (missing -> 0: the level variance)."""
        scaler = self.gbm_.scaler_
        if not self.long_share:
            return scaler
        return fitted_scaler(np.append(scaler.mean_, 0.0), np.append(scaler.scale_, 1.0))

    @property
    def window(self) -> int:
        return self.nn_.window if self.nn_ is not None else 1

    def network_affine(self) -> tuple[np.ndarray, np.ndarray]:
        """(a, b) with the GRU's standardized features = a x the GBM's first columns + b."""
        g, n = self.gbm_.scaler_, self.nn_.scaler_
        k = len(FEATURE_NAMES)
        return g.scale_[:k] / n.scale_, (g.mean_[:k] - n.mean_) / n.scale_

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        """Outputs (`volmargin.models.neural.output_columns`) for windows (n, window, `feature_names_`)
        standardized with `scaler_`: what the exported graph computes."""
        gbm = np.asarray(self.gbm_.predict_raw(x[:, -1, :len(self.gbm_.feature_names_)]), dtype=np.float64)
        nn = None
        if self.nn_ is not None:
            a, b = self.network_affine()
            nn = np.exp(self.nn_.predict_raw((x[:, :, :len(FEATURE_NAMES)] * a + b).astype(np.float32))[:, 0]
                        .astype(np.float64))
        long = np.exp(x[:, -1, -1].astype(np.float64)) if self.long_share else None  # relative to the level too
        gbm[:, 0] = np.log(self.mixed(np.exp(gbm[:, 0]), nn, long)[0])
        return gbm

    def mixed(self, gbm_variance: np.ndarray, nn_variance: np.ndarray | None,
              long_variance: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """This blend's variance from its parts (`blended`) and the factor that scales the GBM's tails to it."""
        return blended(gbm_variance, nn_variance, self.weight, long_variance, self.long_share)

    def long_variance(self, history: pd.DataFrame, origins: pd.DatetimeIndex, horizon: int) -> np.ndarray | None:
        """The long-run level's variance over `horizon` days at `origins`, as the graph reads it (the column with
        identity statistics, float32, missing -> 0): h exp(level_t + long_level); None where `long_share` is 0.
        Needs no fitted member: the level window is the gbm member's parameter."""
        if not self.long_share:
            return None
        from volmargin.models.gbm import GBMForecaster

        gbm = getattr(self, "gbm_", None) or GBMForecaster(**(self.gbm or {}))
        spec = FeatureSpec(level_days=gbm.level_days, long_days=self.long_days)
        frame = feature_frame(history, spec).loc[origins]
        column = core_standardize(frame[list(LONG_LEVEL_FEATURE_NAMES)].to_numpy(), 0.0, 1.0)[:, 0]
        return np.exp(horizon_level(frame["level"].to_numpy(), horizon) + column.astype(np.float64))

    def forecast(self, history: pd.DataFrame, origins: pd.DatetimeIndex, levels: tuple[float, ...]) -> Forecast:
        require_levels(self.levels_, levels)
        gbm = self.gbm_.forecast(history, origins, levels)
        nn = self.nn_.forecast(history, origins, levels).variance if self.nn_ is not None else None
        variance, scale = self.mixed(gbm.variance, nn, self.long_variance(history, origins, gbm.horizon))
        return Forecast(origins, gbm.horizon, variance, gbm.levels, {s: v * scale[:, None] for s, v in gbm.var.items()},
                        {s: v * scale[:, None] for s, v in gbm.es.items()})

    def combined_table(self, gbm: pd.DataFrame, nn: pd.DataFrame | None, panel: dict[str, pd.DataFrame],
                       horizon: int) -> pd.DataFrame:
        """The blend's rows of a forecast table (columns asset, origin, variance, var*, es*) from its members'
        `horizon`-day rows (`nn` None with weight 1): what this blend, had its members made these forecasts, would
        give on the rows both have; `panel` (asset -> daily measures) gives the long-run level. Needs no fitted
        member."""
        keys = ["asset", "origin"]
        if self._with_nn and nn is None:
            raise ValueError(f"blend: weight {self.weight} needs the nn member's forecasts")
        nn = nn if self._with_nn else None
        rows = gbm.copy() if nn is None else gbm.merge(nn[[*keys, "variance"]].rename(columns={"variance": "nn_variance"}),
                                                        on=keys)
        long = None
        if self.long_share:
            long = np.concatenate([self.long_variance(panel[asset], pd.DatetimeIndex(part["origin"]), horizon)
                                   for asset, part in rows.groupby("asset", sort=False)])
            rows = pd.concat([part for _, part in rows.groupby("asset", sort=False)], ignore_index=True)
        nn_variance = rows.pop("nn_variance").to_numpy() if nn is not None else None
        variance, scale = self.mixed(rows["variance"].to_numpy(), nn_variance, long)
        tails = [c for c in rows.columns if c.startswith(("var", "es")) and c != "variance"]
        rows[tails] = rows[tails].to_numpy() * scale[:, None]
        rows["variance"] = variance
        return rows


def blended(gbm_variance: np.ndarray, nn_variance: np.ndarray | None, weight: float,
            long_variance: np.ndarray | None = None, long_share: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The blend's variance (1 - s) (w f_gbm + (1 - w) f_nn) + s f_long (in logs, as the graph; s = long_share;
    f_nn unread, may be None, with w = 1) and the factor sqrt(blend / f_gbm) that scales the GBM's VaR and ES."""
    log_gbm = np.log(np.asarray(gbm_variance, dtype=np.float64))
    if weight == 1:
        log_blend = log_gbm
    else:
        log_nn = np.log(np.asarray(nn_variance, dtype=np.float64))
        log_blend = log_nn if weight == 0 else np.logaddexp(np.log(weight) + log_gbm, np.log1p(-weight) + log_nn)
    if long_share:
        log_long = np.log(np.asarray(long_variance, dtype=np.float64))
        log_blend = np.logaddexp(np.log1p(-long_share) + log_blend, np.log(long_share) + log_long)
    return np.exp(log_blend), np.exp(0.5 * (log_blend - log_gbm))
