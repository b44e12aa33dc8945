"""Standardized loss quantiles (VaR) and tail means (ES) for both sides, from arch's distributions.

A long position loses -z, a short position loses +z, where z is the standardized return. Levels are
confidence levels (0.99 -> the 1% tail).
"""

from __future__ import annotations

import numpy as np
from arch.univariate import Normal, StudentsT
from arch.univariate.distribution import Distribution
from scipy.integrate import quad
from scipy.optimize import minimize_scalar

from volmargin.errors import ConfigError, DataError

TailTable = dict[str, np.ndarray]
_NU_BOUNDS = (2.1, 100.0)


def make_distribution(name: str) -> Distribution:
    if name == "normal":
        return Normal()
    if name == "t":
        return StudentsT()
    raise ConfigError(f"unknown distribution {name!r}; expected 'normal' or 't'")


def fit_params(dist: Distribution, z: np.ndarray) -> np.ndarray:
    """Shape parameters of a unit-variance distribution fitted to standardized residuals by MLE."""
    if isinstance(dist, Normal):
        return np.array([])
    z = z[np.isfinite(z)]
    ones = np.ones_like(z)

    def neg_loglik(nu: float) -> float:
        return -float(dist.loglikelihood(np.array([nu]), z, ones))

    result = minimize_scalar(neg_loglik, bounds=_NU_BOUNDS, method="bounded")
    return np.array([result.x])


def parametric_tail(dist: Distribution, params: np.ndarray, levels: tuple[float, ...]) -> tuple[TailTable, TailTable]:
    """VaR and ES of standardized losses per side, shape (n_levels,). Symmetric distributions give
    equal sides; ES comes from the distribution's first partial moment."""
    var, es = np.empty(len(levels)), np.empty(len(levels))
    for j, level in enumerate(levels):
        tail = 1.0 - level
        q = float(np.squeeze(dist.ppf(tail, params)))
        var[j] = -q
        with np.errstate(over="ignore", invalid="ignore"):
            es[j] = -dist.partial_moment(1, q, params) / tail
        if not np.isfinite(es[j]):  # arch's Student-t moment overflows gamma() past ~342 degrees of freedom (its
            # GARCH fits reach 500: a NaN ES stopped a BTC backtest; session 31): the mean of the tail's quantiles
            es[j] = -quad(lambda u: float(np.squeeze(dist.ppf(u, params))), 0.0, tail, limit=200)[0] / tail
    # lower tail of z hits longs; by symmetry the upper tail (shorts) is the mirror image
    return {"long": var, "short": var.copy()}, {"long": es, "short": es.copy()}


def empirical_tail(z: np.ndarray, levels: tuple[float, ...]) -> tuple[TailTable, TailTable]:
    """VaR and ES of standardized losses per side from a sample (filtered historical simulation); a
    `DataError` where it holds no finite value (a price that never moved: every residual 0 / 0)."""
    z = z[np.isfinite(z)]
    if not len(z):
        raise DataError("no finite standardized residual to simulate from: the training returns never moved "
                        "(a pegged or halted price?)")
    var: TailTable = {}
    es: TailTable = {}
    for side, losses in (("long", -z), ("short", z)):
        q = np.quantile(losses, levels)
        var[side] = q
        es[side] = np.array([losses[losses >= v].mean() for v in q])
    return var, es


def coverage_factor(losses: np.ndarray, var: np.ndarray, level: float) -> float:
    """The factor c >= 1 that makes c x `var` exceeded by `losses` on a share 1 - `level` of the rows: the
    `level` quantile of losses / var over the rows with a positive, finite VaR (split-conformal; the rows
    must be out of fold, e.g. assets the model never saw). 1 where no row qualifies. Calibration only
    widens the tails: a VaR exceeded less often than its level says is left as it is."""
    usable = np.isfinite(var) & (var > 0) & np.isfinite(losses)
    if not usable.any():
        return 1.0
    return max(float(np.quantile(losses[usable] / var[usable], level)), 1.0)
