"""Forecast scores and risk-backtest statistics.

Conventions
-----------
* ``sigma2`` is a variance forecast of a (log) return, ``rv`` the realized-variance proxy.
* VaR and ES are LOSS quantiles given as POSITIVE numbers; ``loss`` is the realized loss
  (long: ``-return``, short: ``+return``). An exception (hit) is ``loss > var``.
* Inputs are 1-D array-likes. Nothing is dropped silently: mismatched lengths, empty input,
  NaN/inf and non-positive values where a log or a division needs them raise ``ValueError``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats
from scipy.special import xlogy

ZONES: tuple[str, ...] = ("green", "yellow", "red")
_GREEN_BELOW = 0.95  # Basel: green while P(X <= k) < 95%
_RED_FROM = 0.9999  # Basel: red once P(X <= k) >= 99.99%


# --------------------------------------------------------------------------- result types


@dataclass(frozen=True)
class MZResult:
    """Mincer-Zarnowitz regression ``y = alpha + beta * x + e``."""

    alpha: float
    beta: float
    r2: float
    n: int


@dataclass(frozen=True)
class DMResult:
    """Diebold-Mariano test; ``statistic < 0`` means model a has the lower loss."""

    statistic: float
    pvalue: float
    mean_diff: float
    n: int


@dataclass(frozen=True)
class TestResult:
    """Likelihood-ratio coverage test (Kupiec POF)."""

    __test__ = False  # not a pytest test class despite the name

    statistic: float
    pvalue: float
    exceptions: int
    n: int
    rate: float


@dataclass(frozen=True)
class ChristoffersenResult:
    """Christoffersen independence (chi2(1)) and conditional-coverage (chi2(2)) LR tests."""

    lr_ind: float
    p_ind: float
    lr_cc: float
    p_cc: float


# --------------------------------------------------------------------------- validation


def _as_1d(x, name: str) -> np.ndarray:
    """Float 1-D copy of ``x``; rejects empty, multi-dimensional and non-finite input."""
    try:
        a = np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: cannot convert to a float array ({exc})") from exc
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name}: empty input")
    if not np.all(np.isfinite(a)):
        bad = int(np.flatnonzero(~np.isfinite(a))[0])
        raise ValueError(f"{name}: non-finite value (NaN/inf) at position {bad}; filter NaNs first")
    return a


def _same_length(**arrays: np.ndarray) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"length mismatch: {lengths}")


def _positive(a: np.ndarray, name: str) -> None:
    if np.any(a <= 0):
        bad = int(np.flatnonzero(a <= 0)[0])
        raise ValueError(f"{name}: must be > 0 (value {a[bad]!r} at position {bad})")


def _as_hits(hits) -> np.ndarray:
    """Boolean hit array; accepts bool or 0/1 numbers, rejects anything else (incl. NaN)."""
    h = np.asarray(hits)
    if h.dtype != bool:
        h = _as_1d(h, "hits")
        if not np.all((h == 0) | (h == 1)):
            raise ValueError("hits: values must be boolean or 0/1")
        return h.astype(bool)
    if h.ndim != 1:
        raise ValueError(f"hits: expected a 1-D array, got shape {h.shape}")
    if h.size == 0:
        raise ValueError("hits: empty input")
    return h


def _probability(p: float, name: str = "p") -> float:
    p = float(p)
    if not 0.0 < p < 1.0:
        raise ValueError(f"{name}: must lie strictly between 0 and 1, got {p}")
    return p


def _positive_int(v: int, name: str) -> int:
    if int(v) != v or v < 1:
        raise ValueError(f"{name}: must be a positive integer, got {v!r}")
    return int(v)


# --------------------------------------------------------------------------- forecast scores


def _variance_pair(sigma2, rv) -> tuple[np.ndarray, np.ndarray]:
    s, r = _as_1d(sigma2, "sigma2"), _as_1d(rv, "rv")
    _same_length(sigma2=s, rv=r)
    _positive(s, "sigma2")
    _positive(r, "rv")
    return s, r


def qlike(sigma2, rv) -> np.ndarray:
    """Per-observation QLIKE loss ``rv/sigma2 - log(rv/sigma2) - 1``.

    Non-negative, zero only at ``sigma2 == rv``; robust to noise in the variance proxy
    in the sense of Patton (2011), "Volatility forecast comparison using imperfect
    volatility proxies", J. Econometrics 160(1). Requires ``rv > 0`` and ``sigma2 > 0``.
    """
    s, r = _variance_pair(sigma2, rv)
    ratio = r / s
    return ratio - np.log(ratio) - 1.0


def mse_log(sigma2, rv) -> np.ndarray:
    """Per-observation squared log error ``(log sigma2 - log rv)^2``.

    Not Patton-robust (biased under a noisy proxy) but a common scale-free companion;
    see Patton (2011). Requires ``rv > 0`` and ``sigma2 > 0``.
    """
    s, r = _variance_pair(sigma2, rv)
    return (np.log(s) - np.log(r)) ** 2


def mincer_zarnowitz(sigma2, rv, log: bool = True) -> MZResult:
    """Mincer-Zarnowitz regression ``log rv = alpha + beta log sigma2 + e`` (OLS).

    With ``log=False`` the regression is in levels, ``rv = alpha + beta sigma2 + e``.
    An unbiased, efficient forecast has ``alpha = 0, beta = 1``.
    Mincer & Zarnowitz (1969), "The evaluation of economic forecasts", NBER.
    """
    if log:
        s, r = _variance_pair(sigma2, rv)
        x, y = np.log(s), np.log(r)
    else:
        x, y = _as_1d(sigma2, "sigma2"), _as_1d(rv, "rv")
        _same_length(sigma2=x, rv=y)
    # Constant regressor or regressand leaves beta or R^2 undefined; say so instead of NaN.
    if np.ptp(x) == 0:
        raise ValueError("sigma2 is constant: Mincer-Zarnowitz slope is not identified")
    if np.ptp(y) == 0:
        raise ValueError("rv is constant: Mincer-Zarnowitz R^2 is undefined")
    res = sm.OLS(y, sm.add_constant(x, has_constant="add")).fit()
    alpha, beta = res.params
    return MZResult(alpha=float(alpha), beta=float(beta), r2=float(res.rsquared), n=len(x))


# --------------------------------------------------------------------------- Diebold-Mariano


def default_dm_lags(n: int, horizon: int = 1) -> int:
    """HAC truncation lag used by :func:`diebold_mariano` when ``lags`` is None.

    The Newey-West (1994) plug-in rule ``floor(4 (n/100)^(2/9))``, since realized-loss differentials
    are typically autocorrelated even for one-step forecasts (volatility persistence), where the
    textbook zero lags would overstate significance; for ``horizon > 1`` at least ``2 (horizon - 1)``:
    overlapping h-day targets make the differential MA(h-1) (Diebold & Mariano 1995), and Bartlett
    weights at lag h-1 alone undercount it (a nominal 5% test rejected 13% of MA(19) nulls at n = 1826,
    10% with twice the lags; 25% with the plug-in's 7).
    """
    plug_in = int(np.floor(4.0 * (n / 100.0) ** (2.0 / 9.0)))
    return max(plug_in, 2 * (horizon - 1))


def diebold_mariano(loss_a, loss_b, horizon: int = 1, lags: int | None = None) -> DMResult:
    """Diebold-Mariano test of equal predictive accuracy.

    ``d_t = loss_a_t - loss_b_t``; ``DM = mean(d) / sqrt(S / n)`` with ``S`` the Newey-West
    (Bartlett-kernel) long-run variance ``S = g0 + 2 sum_{l=1}^{L} (1 - l/(L+1)) g_l``,
    ``g_l = (1/n) sum_t u_t u_{t-l}``, ``u = d - mean(d)`` (no small-sample correction).
    Two-sided p-value from N(0, 1). Negative DM: a is better.
    Lags: see :func:`default_dm_lags`. Bartlett weights keep ``S >= 0`` (the original DM
    rectangular kernel can go negative). Identical losses give ``statistic 0, pvalue 1``.
    Diebold & Mariano (1995), J. Business & Economic Statistics 13(3);
    Newey & West (1987), Econometrica 55(3).
    """
    a, b = _as_1d(loss_a, "loss_a"), _as_1d(loss_b, "loss_b")
    _same_length(loss_a=a, loss_b=b)
    horizon = _positive_int(horizon, "horizon")
    d, n = a - b, len(a)
    if np.all(d == 0):
        return DMResult(statistic=0.0, pvalue=1.0, mean_diff=0.0, n=n)
    # constant up to the rounding of a - b (a against a + 0.1 gave DM -8e15, p 0): no variance to test with
    if np.ptp(d) <= 64 * np.finfo(float).eps * max(np.abs(a).max(), np.abs(b).max()):
        raise ValueError(f"loss differential is constant ({d[0]!r}): DM variance is zero")
    if lags is not None and (int(lags) != lags or lags < 0):
        raise ValueError(f"lags: must be a non-negative integer, got {lags!r}")
    lags = default_dm_lags(n, horizon) if lags is None else int(lags)
    if not 0 <= lags < n:
        raise ValueError(f"lags must be in [0, n-1] = [0, {n - 1}], got {lags}")
    # OLS of d on a constant: the HAC standard error of the intercept is sqrt(S / n).
    res = sm.OLS(d, np.ones((n, 1))).fit(
        cov_type="HAC", cov_kwds={"maxlags": lags, "use_correction": False}
    )
    se = float(res.bse[0])
    if not se > 0:
        raise ValueError("HAC long-run variance of the loss differential is zero")
    stat = float(d.mean() / se)
    pvalue = float(2 * stats.norm.sf(abs(stat)))
    return DMResult(statistic=stat, pvalue=pvalue, mean_diff=float(d.mean()), n=n)


# --------------------------------------------------------------------------- VaR coverage tests


def _lr_pof(x: int, n: int, p: float) -> float:
    """``-2 ln[(1-p)^(n-x) p^x / ((1-x/n)^(n-x) (x/n)^x)]``; xlogy makes 0 log 0 = 0."""
    phat = x / n
    ll0 = xlogy(n - x, 1 - p) + xlogy(x, p)
    ll1 = xlogy(n - x, 1 - phat) + xlogy(x, phat)
    return float(max(-2.0 * (ll0 - ll1), 0.0))  # clip tiny negative rounding at x = n p


def kupiec_pof(hits, p: float) -> TestResult:
    """Kupiec proportion-of-failures likelihood-ratio test of unconditional coverage.

    ``LR = -2 ln[(1-p)^(n-x) p^x / ((1-x/n)^(n-x) (x/n)^x)] ~ chi2(1)``,
    x = number of hits, p = expected exception probability (0.01 for 99% VaR).
    Kupiec (1995), "Techniques for verifying the accuracy of risk measurement models",
    J. Derivatives 3(2).
    """
    h = _as_hits(hits)
    p = _probability(p)
    n, x = len(h), int(h.sum())
    lr = _lr_pof(x, n, p)
    pvalue = float(stats.chi2.sf(lr, 1))
    return TestResult(statistic=lr, pvalue=pvalue, exceptions=x, n=n, rate=x / n)


def design_effect(hits, clusters) -> float:
    """Variance of the hit count when hits are dependent within clusters (independent across them) over its
    binomial variance: D / (D - 1) sum_c (x_c - r n_c)^2 / (n r (1 - r)), r = x / n, D clusters; 1 when
    r is 0 or 1 or there is one cluster (nothing to estimate it from). About 1 for independent hits."""
    h = _as_hits(hits)
    ids = _as_1d(np.asarray(clusters), "clusters")
    _same_length(hits=h, clusters=ids)
    n, rate = len(h), float(h.mean())
    _, codes = np.unique(ids, return_inverse=True)
    count, size = np.bincount(codes, weights=h), np.bincount(codes)
    if rate in (0.0, 1.0) or len(size) < 2:
        return 1.0
    return float(len(size) / (len(size) - 1) * np.sum((count - rate * size) ** 2) / (n * rate * (1 - rate)))


def kupiec_clustered(hits, clusters, p: float) -> TestResult:
    """Kupiec POF test for hits dependent within clusters (e.g. the books of one margin date, which share
    that date's market move): the Rao-Scott first-order correction, LR / d ~ chi2(1), d = `design_effect`.
    Pooling dependent hits into Kupiec's binomial likelihood overstates the information in them d-fold.
    Rao and Scott (1981), "The analysis of categorical data from complex sample surveys", JASA 76(374).
    d <= 1 (hits no more clustered than independent ones; 0: every cluster holds exactly its share) keeps the
    pooled test: an estimated d just under 1 would otherwise make the clustered test stricter than the pooled."""
    pooled = kupiec_pof(hits, p)
    effect = design_effect(hits, clusters)
    lr = pooled.statistic / max(effect, 1.0)
    return TestResult(statistic=lr, pvalue=float(stats.chi2.sf(lr, 1)), exceptions=pooled.exceptions, n=pooled.n,
                      rate=pooled.rate)


def _transition_counts(h: np.ndarray) -> tuple[int, int, int, int]:
    prev, cur = h[:-1], h[1:]
    n00 = int(np.sum(~prev & ~cur))
    n01 = int(np.sum(~prev & cur))
    n10 = int(np.sum(prev & ~cur))
    n11 = int(np.sum(prev & cur))
    return n00, n01, n10, n11


def _ratio(num: int, den: int) -> float:
    # An unvisited state contributes count 0, and xlogy(0, .) = 0 whatever the ratio.
    return num / den if den else 0.0


def christoffersen(hits, p: float) -> ChristoffersenResult:
    """Christoffersen independence and conditional-coverage LR tests.

    With transition counts ``n_ij`` (state i at t-1 -> j at t), ``pi01 = n01/(n00+n01)``,
    ``pi11 = n11/(n10+n11)``, ``pi = (n01+n11)/(n00+n01+n10+n11)``:
    ``LR_ind = -2 ln[(1-pi)^(n00+n10) pi^(n01+n11) /
                    ((1-pi01)^n00 pi01^n01 (1-pi11)^n10 pi11^n11)] ~ chi2(1)``,
    ``LR_cc = LR_pof + LR_ind ~ chi2(2)`` (LR_pof from :func:`kupiec_pof` on all n hits, the
    usual practical convention). Zero counts are handled with 0 log 0 = 0.
    Christoffersen (1998), "Evaluating interval forecasts", Int. Economic Review 39(4).
    """
    h = _as_hits(hits)
    p = _probability(p)
    if len(h) < 2:
        raise ValueError("christoffersen: need at least 2 observations for transitions")
    n00, n01, n10, n11 = _transition_counts(h)
    pi01, pi11 = _ratio(n01, n00 + n01), _ratio(n11, n10 + n11)
    pi = _ratio(n01 + n11, n00 + n01 + n10 + n11)
    ll0 = xlogy(n00 + n10, 1 - pi) + xlogy(n01 + n11, pi)
    ll1 = xlogy(n00, 1 - pi01) + xlogy(n01, pi01) + xlogy(n10, 1 - pi11) + xlogy(n11, pi11)
    lr_ind = float(max(-2.0 * (ll0 - ll1), 0.0))
    lr_cc = _lr_pof(int(h.sum()), len(h), p) + lr_ind
    return ChristoffersenResult(
        lr_ind=lr_ind,
        p_ind=float(stats.chi2.sf(lr_ind, 1)),
        lr_cc=lr_cc,
        p_cc=float(stats.chi2.sf(lr_cc, 2)),
    )


# --------------------------------------------------------------------------- Basel traffic light


def _zones_for(counts: np.ndarray, window: int, p: float) -> np.ndarray:
    cdf = stats.binom.cdf(counts, window, p)
    return np.where(cdf >= _RED_FROM, "red", np.where(cdf >= _GREEN_BELOW, "yellow", "green"))


def basel_zone(exceptions: int, window: int = 250, p: float = 0.01) -> str:
    """Basel traffic-light zone for ``exceptions`` in ``window`` days at exception prob. ``p``.

    ``green`` while ``P(X <= k) < 95%``, ``red`` once ``P(X <= k) >= 99.99%``, ``yellow``
    between, X ~ Binomial(window, p). For (250, 0.01): green 0-4, yellow 5-9, red 10+.
    Basel Committee (1996), "Supervisory framework for the use of backtesting in
    conjunction with the internal models approach to market risk capital requirements".
    """
    window = _positive_int(window, "window")
    p = _probability(p)
    if int(exceptions) != exceptions or exceptions < 0:
        raise ValueError(f"exceptions: must be a non-negative integer, got {exceptions!r}")
    return str(_zones_for(np.array([int(exceptions)]), window, p)[0])


def basel_zones(hits, window: int = 250, p: float = 0.01) -> pd.DataFrame:
    """Basel zone of every rolling window of ``window`` consecutive observations.

    Columns: ``end_index`` (0-based position of the window's last observation),
    ``exceptions`` (hits in the window), ``zone`` (see :func:`basel_zone`).
    Empty frame when there are fewer than ``window`` observations.
    """
    h = _as_hits(hits)
    window = _positive_int(window, "window")
    p = _probability(p)
    if len(h) < window:
        empty = {"end_index": [], "exceptions": [], "zone": []}
        return pd.DataFrame(empty).astype({"end_index": int, "exceptions": int, "zone": object})
    csum = np.concatenate([[0], np.cumsum(h, dtype=np.int64)])
    counts = csum[window:] - csum[:-window]
    return pd.DataFrame({
        "end_index": np.arange(window - 1, len(h)),
        "exceptions": counts,
        "zone": _zones_for(counts, window, p).astype(object),
    })


def worst_basel_zone(hits, window: int = 250, p: float = 0.01) -> str:
    """Worst zone (green < yellow < red) over all rolling windows of :func:`basel_zones`.

    With fewer than ``window`` observations, the single window of what there is is judged
    by its exception count against the thresholds of its own length (against the ``window``-day
    ones, the 110 non-overlapping origins of a 10-day VaR breached 4x its target read green).
    """
    h = _as_hits(hits)
    window = _positive_int(window, "window")
    if len(h) < window:
        return basel_zone(int(h.sum()), max(len(h), 1), p)
    zones = basel_zones(h, window, p)["zone"]
    return max(zones, key=ZONES.index)


# --------------------------------------------------------------------------- ES backtest


def acerbi_szekely_z2(loss, var, es, alpha: float = 0.025) -> float:
    """Acerbi-Szekely Z2 ES backtest statistic, written with losses.

    ``Z2 = 1 - sum_t loss_t 1{loss_t > var_t} / (T alpha es_t)``, equivalently
    ``sum_t X_t I_t / (T alpha ES_t) + 1`` with P&L ``X = -loss``. Expected value 0 under a
    correct model; negative when ES (or VaR) underestimates the tail. ``alpha`` is the tail
    probability (0.025 for 97.5% ES); ``es`` must be > 0.
    Acerbi & Szekely (2014), "Backtesting expected shortfall", Risk 27(11).
    """
    lo, v, e = _as_1d(loss, "loss"), _as_1d(var, "var"), _as_1d(es, "es")
    _same_length(loss=lo, var=v, es=e)
    _positive(e, "es")
    alpha = _probability(alpha, "alpha")
    tail = np.where(lo > v, lo, 0.0)
    return float(1.0 - np.sum(tail / e) / (len(lo) * alpha))


# --------------------------------------------------------------------------- procyclicality


def max_rise(margin, dates, days: int) -> float:
    """Largest relative rise of a margin path over `days` calendar days, margin[t] / margin[t - days] - 1 over
    the dates that have both (not rows: across a gap in the data a row apart can be weeks apart); `margin`
    (T,) or (T, K) paths on the T unique `dates`, the largest over them; NaN where no pair lies `days` apart
    (and for NaN margins: a day not margined)."""
    values = np.asarray(margin, dtype=float)
    index = pd.DatetimeIndex(dates)
    if not index.is_unique or len(index) != len(values):
        raise ValueError(f"dates must be unique, one per row of the margin ({len(index)} for {len(values)})")
    earlier_at = index.get_indexer(index - pd.Timedelta(days=days))
    found = earlier_at >= 0
    rises = values[found] / values[earlier_at[found]] - 1
    return float(np.nanmax(rises)) if np.isfinite(rises).any() else np.nan


# --------------------------------------------------------------------------- convenience


def var_backtest(loss, var, level: float, window: int = 250) -> dict:
    """Coverage backtest of one VaR series at confidence ``level`` (e.g. 0.99).

    Returns ``exceptions``, ``rate``, ``kupiec_p``, ``christoffersen_p`` (conditional
    coverage p-value), ``basel_zone`` (worst over rolling ``window``-day windows) and
    ``basel_windows`` / ``basel_green_windows`` (how many rolling windows, how many green),
    all with exception probability ``p = 1 - level``.
    """
    lo, v = _as_1d(loss, "loss"), _as_1d(var, "var")
    _same_length(loss=lo, var=v)
    p = 1.0 - _probability(level, "level")
    hits = lo > v
    pof = kupiec_pof(hits, p)
    zones = basel_zones(hits, window, p)["zone"]
    return {
        "exceptions": pof.exceptions,
        "rate": pof.rate,
        "kupiec_p": pof.pvalue,
        "christoffersen_p": christoffersen(hits, p).p_cc,
        "basel_zone": worst_basel_zone(hits, window, p),
        "basel_windows": len(zones),
        "basel_green_windows": int((zones == "green").sum()),
    }
