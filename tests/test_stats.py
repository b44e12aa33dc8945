"""Evaluation statistics vs closed forms, hand computations and published tables."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from volmargin.evaluation import (
    acerbi_szekely_z2,
    basel_zone,
    basel_zones,
    christoffersen,
    default_dm_lags,
    design_effect,
    diebold_mariano,
    kupiec_clustered,
    kupiec_pof,
    mincer_zarnowitz,
    mse_log,
    qlike,
    var_backtest,
    worst_basel_zone,
)

CHI2_1_95 = stats.chi2.ppf(0.95, 1)  # 3.841...


# ----------------------------------------------------------------------------- QLIKE / MSE-log


def test_qlike_zero_at_perfect_forecast_and_positive_otherwise():
    s = np.array([0.5, 1.0, 2.0, 1e-4])
    assert np.allclose(qlike(s, s), 0.0, atol=1e-15)
    rng = np.random.default_rng(1)
    rv = rng.uniform(0.1, 3, 100)
    sig = rv * rng.choice([0.5, 0.9, 1.1, 3.0], 100)
    assert np.all(qlike(sig, rv) > 0)


def test_qlike_hand_values():
    # rv/sigma2 = 0.5: 0.5 - ln 0.5 - 1 ; rv/sigma2 = e: e - 1 - 1
    out = qlike([2.0, 1.0], [1.0, math.e])
    assert out == pytest.approx([0.5 + math.log(2) - 1, math.e - 2], rel=1e-12)
    assert out[0] == pytest.approx(0.1931471805599453, rel=1e-12)


def test_mse_log_hand_values():
    assert mse_log([math.e**2, 1.0, 3.0], [1.0, math.e, 3.0]) == pytest.approx([4.0, 1.0, 0.0])


# ----------------------------------------------------------------------------- Mincer-Zarnowitz


def test_mz_perfect_forecast():
    s = np.random.default_rng(2).lognormal(size=200)
    for log in (True, False):
        r = mincer_zarnowitz(s, s, log=log)
        assert r.alpha == pytest.approx(0, abs=1e-10)
        assert r.beta == pytest.approx(1, rel=1e-10)
        assert r.r2 == pytest.approx(1, rel=1e-10)
        assert r.n == 200


def test_mz_recovers_known_relations():
    s = np.random.default_rng(3).lognormal(-8, 1, size=300)
    r = mincer_zarnowitz(s, math.exp(0.3) * s**0.8)  # log rv = 0.3 + 0.8 log s exactly
    assert (r.alpha, r.beta, r.r2) == pytest.approx((0.3, 0.8, 1.0), rel=1e-9)
    r = mincer_zarnowitz(s, 1e-5 + 2.0 * s, log=False)
    assert (r.alpha, r.beta) == pytest.approx((1e-5, 2.0), rel=1e-8)


def test_mz_noisy_matches_polyfit():
    rng = np.random.default_rng(4)
    s = rng.lognormal(size=500)
    rv = s * rng.lognormal(0, 0.5, size=500)
    r = mincer_zarnowitz(s, rv)
    beta, alpha = np.polyfit(np.log(s), np.log(rv), 1)
    rho = np.corrcoef(np.log(s), np.log(rv))[0, 1]
    assert (r.alpha, r.beta, r.r2) == pytest.approx((alpha, beta, rho**2), rel=1e-9)


def test_mz_constant_forecast_raises():
    with pytest.raises(ValueError, match="constant"):
        mincer_zarnowitz(np.ones(10), np.arange(1, 11.0))


# ----------------------------------------------------------------------------- Diebold-Mariano


def _nw_bartlett_dm(d: np.ndarray, lags: int) -> float:
    """Independent DM statistic with a hand-written Newey-West Bartlett long-run variance."""
    n = len(d)
    u = d - d.mean()
    s = u @ u / n
    for lag in range(1, lags + 1):
        s += 2 * (1 - lag / (lags + 1)) * (u[lag:] @ u[:-lag]) / n
    return d.mean() / math.sqrt(s / n)


@pytest.fixture
def ar_losses():
    rng = np.random.default_rng(5)
    e = rng.normal(size=500)
    d = np.empty(500)
    d[0] = e[0]
    for t in range(1, 500):  # autocorrelated differential so the lags matter
        d[t] = 0.6 * d[t - 1] + e[t]
    b = rng.gamma(2.0, size=500)
    return b + 0.1 + d, b


@pytest.mark.parametrize("lags", [1, 3, 7])
def test_dm_matches_hand_bartlett(ar_losses, lags):
    a, b = ar_losses
    r = diebold_mariano(a, b, lags=lags)
    expected = _nw_bartlett_dm(a - b, lags)
    assert r.statistic == pytest.approx(expected, rel=1e-10)
    assert r.pvalue == pytest.approx(2 * stats.norm.sf(abs(expected)), rel=1e-10)
    assert r.mean_diff == pytest.approx(np.mean(a - b))
    assert r.n == 500


def test_dm_default_lags(ar_losses):
    assert default_dm_lags(500) == 5  # floor(4 * 5^(2/9)) = floor(5.72)
    assert default_dm_lags(100) == 4
    assert default_dm_lags(500, horizon=3) == 5  # the plug-in's 5 beats 2 (h - 1)
    assert default_dm_lags(500, horizon=20) == 38  # twice the MA(h-1) order of overlapping targets
    a, b = ar_losses
    assert diebold_mariano(a, b).statistic == pytest.approx(_nw_bartlett_dm(a - b, 5), rel=1e-10)
    h10 = diebold_mariano(a, b, horizon=10).statistic
    assert h10 == pytest.approx(_nw_bartlett_dm(a - b, 18), rel=1e-10)


def test_dm_zero_lags_is_plain_t(ar_losses):
    a, b = ar_losses
    d = a - b
    assert diebold_mariano(a, b, lags=0).statistic == pytest.approx(
        d.mean() / (d.std(ddof=0) / math.sqrt(len(d))), rel=1e-10
    )


def test_dm_symmetry_and_sign(ar_losses):
    a, b = ar_losses
    ab, ba = diebold_mariano(a, b), diebold_mariano(b, a)
    assert ab.statistic == pytest.approx(-ba.statistic)
    assert ab.pvalue == pytest.approx(ba.pvalue)
    assert ab.statistic > 0  # a carries +0.1 extra loss on average
    better = diebold_mariano(b, b + 1.0 + np.random.default_rng(6).normal(0, 0.1, 500))
    assert better.statistic < 0 and better.pvalue < 1e-6


def test_dm_identical_losses():
    x = np.random.default_rng(7).gamma(2.0, size=50)
    r = diebold_mariano(x, x.copy())
    assert (r.statistic, r.pvalue, r.mean_diff, r.n) == (0.0, 1.0, 0.0, 50)


def test_dm_constant_nonzero_differential_raises():
    x = np.arange(10.0)
    with pytest.raises(ValueError, match="constant"):
        diebold_mariano(x + 1.0, x)


def test_dm_bad_lags_raise():
    x = np.arange(10.0)
    with pytest.raises(ValueError, match="lags"):
        diebold_mariano(x, x[::-1], lags=10)
    with pytest.raises(ValueError, match="horizon"):
        diebold_mariano(x, x[::-1], horizon=0)


# ----------------------------------------------------------------------------- Kupiec


def _hits(n: int, x: int) -> np.ndarray:
    h = np.zeros(n, dtype=bool)
    h[np.linspace(0, n - 1, x).astype(int)] = True
    assert h.sum() == x
    return h


def test_kupiec_hand_value():
    n, x, p = 250, 8, 0.01
    lr = -2 * (
        (n - x) * math.log(1 - p) + x * math.log(p)
        - (n - x) * math.log(1 - x / n) - x * math.log(x / n)
    )
    r = kupiec_pof(_hits(n, x), p)
    assert r.statistic == pytest.approx(lr, rel=1e-12)
    assert r.pvalue == pytest.approx(stats.chi2.sf(lr, 1), rel=1e-12)
    assert (r.exceptions, r.n, r.rate) == (8, 250, 8 / 250)


def test_kupiec_zero_and_all_exceptions():
    r = kupiec_pof(np.zeros(250, dtype=bool), 0.01)
    assert r.statistic == pytest.approx(-2 * 250 * math.log(0.99), rel=1e-12)
    assert r.statistic == pytest.approx(5.0252, abs=1e-4)
    r = kupiec_pof(np.ones(20, dtype=bool), 0.01)
    assert r.statistic == pytest.approx(-2 * 20 * math.log(0.01), rel=1e-12)


def test_kupiec_jorion_nonrejection_region():
    # T=250, p=1%: Kupiec's 95% non-rejection region is 1 <= x <= 6. Jorion's (Value at Risk)
    # table lists the upper bound N < 7; x = 0 rejects too since LR = 5.03 > 3.84.
    for x in range(0, 12):
        rejects = kupiec_pof(_hits(250, x), 0.01).pvalue < 0.05
        assert rejects == (x == 0 or x >= 7), x


def test_design_effect_of_independent_and_clustered_hits():
    hits = _hits(400, 9)
    assert design_effect(hits, np.arange(400)) == pytest.approx(400 / 399)  # one hit per cluster: binomial
    blocks = np.repeat(np.arange(40), 10)
    together = np.isin(blocks, [3, 17])  # every hit of a cluster at once: ten-fold
    assert design_effect(together, blocks) == pytest.approx(40 / 39 * 10)
    assert design_effect(np.zeros(50, bool), np.arange(50)) == 1.0
    assert kupiec_clustered(together, blocks, 0.01).pvalue > kupiec_pof(together, 0.01).pvalue
    with pytest.raises(ValueError, match="length"):
        design_effect(hits, np.arange(10))


def test_clustered_kupiec_with_hits_spread_evenly_over_clusters():
    """Each cluster holds exactly its share of the hits: design effect 0, the pooled test kept (no division by 0)."""
    hits, clusters = np.tile([True, False], 20), np.repeat(np.arange(20), 2)
    assert design_effect(hits, clusters) == 0.0
    assert kupiec_clustered(hits, clusters, 0.01) == kupiec_pof(hits, 0.01)


def test_clustered_kupiec_keeps_its_size_where_pooled_kupiec_does_not():
    """Books sharing each day's market move (latent correlation 0.5), each breaching 1% of days: pooled
    Kupiec rejects a correct model far more often than 5%, the clustered test about 5%."""
    rng = np.random.default_rng(7)
    days, books, level = 500, 30, stats.norm.ppf(0.99)
    day = np.repeat(np.arange(days), books)
    pooled, clustered = [], []
    for _ in range(300):
        latent = np.sqrt(0.5) * rng.standard_normal((days, 1)) + np.sqrt(0.5) * rng.standard_normal((days, books))
        hits = (latent > level).ravel()
        pooled.append(kupiec_pof(hits, 0.01).pvalue < 0.05)
        clustered.append(kupiec_clustered(hits, day, 0.01).pvalue < 0.05)
    assert np.mean(pooled) > 0.3
    assert np.mean(clustered) < 0.1


def test_kupiec_accepts_01_ints_and_rejects_other_values():
    assert kupiec_pof([0, 1, 0, 0], 0.25).exceptions == 1
    with pytest.raises(ValueError):
        kupiec_pof([0, 2, 0], 0.01)
    with pytest.raises(ValueError):
        kupiec_pof([0, 1, 0], 1.5)


# ----------------------------------------------------------------------------- Christoffersen


def test_christoffersen_hand_value():
    h = np.array([0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 0, 0], dtype=bool)
    # transitions: 00,01,11,11,10,00,00,00,01,10,00 -> n00=5, n01=2, n10=2, n11=2
    n00, n01, n10, n11 = 5, 2, 2, 2
    pi01, pi11, pi = n01 / (n00 + n01), n11 / (n10 + n11), (n01 + n11) / 11
    ll0 = (n00 + n10) * math.log(1 - pi) + (n01 + n11) * math.log(pi)
    ll1 = (n00 * math.log(1 - pi01) + n01 * math.log(pi01)
           + n10 * math.log(1 - pi11) + n11 * math.log(pi11))
    lr_ind = -2 * (ll0 - ll1)
    p = 0.1
    r = christoffersen(h, p)
    assert r.lr_ind == pytest.approx(lr_ind, rel=1e-12)
    assert r.p_ind == pytest.approx(stats.chi2.sf(lr_ind, 1), rel=1e-12)
    x, n = 4, 12  # hits at positions 2, 3, 4, 9
    lr_pof = -2 * ((n - x) * math.log(1 - p) + x * math.log(p)
                   - (n - x) * math.log(1 - x / n) - x * math.log(x / n))
    assert r.lr_cc == pytest.approx(lr_pof + lr_ind, rel=1e-12)
    assert r.p_cc == pytest.approx(stats.chi2.sf(lr_pof + lr_ind, 2), rel=1e-12)


def test_christoffersen_cc_is_pof_plus_ind():
    h = np.random.default_rng(8).random(1000) < 0.02
    r = christoffersen(h, 0.01)
    assert r.lr_cc == pytest.approx(kupiec_pof(h, 0.01).statistic + r.lr_ind, rel=1e-12)


def test_christoffersen_clustered_hits_reject():
    h = np.zeros(1000, dtype=bool)
    h[500:510] = True  # 10 hits (the expected number at 1%) all in a row
    r = christoffersen(h, 0.01)
    assert r.p_ind < 1e-6 and r.p_cc < 1e-6
    assert kupiec_pof(h, 0.01).pvalue == pytest.approx(1.0)  # coverage alone looks perfect


def test_christoffersen_zero_counts_are_finite():
    for h in (np.zeros(50, bool), np.ones(50, bool), np.r_[np.zeros(49, bool), True]):
        r = christoffersen(h, 0.01)
        assert np.isfinite([r.lr_ind, r.p_ind, r.lr_cc, r.p_cc]).all()
    assert christoffersen(np.zeros(50, bool), 0.01).lr_ind == 0.0
    with pytest.raises(ValueError):
        christoffersen([True], 0.01)


# ----------------------------------------------------------------------------- Basel


@pytest.mark.parametrize("k", range(16))
def test_basel_zone_table(k):
    expected = "green" if k <= 4 else "yellow" if k <= 9 else "red"
    assert basel_zone(k) == expected
    assert basel_zone(k, window=250, p=0.01) == expected


def test_basel_cumulative_probabilities_match_published_table():
    # BCBS (1996) table 2: cumulative probability 89.22% (4), 95.88% (5), 99.97% (9), 99.99% (10)
    cdf = stats.binom.cdf([4, 5, 9, 10], 250, 0.01)
    assert np.round(cdf * 100, 2) == pytest.approx([89.22, 95.88, 99.97, 99.99])


def test_basel_zones_rolling_counts():
    h = np.zeros(300, dtype=bool)
    h[[0, 10, 260, 299]] = True
    z = basel_zones(h)
    assert list(z.columns) == ["end_index", "exceptions", "zone"]
    assert len(z) == 51 and z["end_index"].tolist() == list(range(249, 300))
    brute = [int(h[e - 249 : e + 1].sum()) for e in range(249, 300)]
    assert z["exceptions"].tolist() == brute
    e = z.set_index("end_index")["exceptions"]
    assert (e[249], e[250], e[260], e[299]) == (2, 1, 1, 2)
    assert set(z["zone"]) == {"green"}


def test_basel_zones_zone_column_and_worst():
    h = np.zeros(260, dtype=bool)
    h[:10] = True
    z = basel_zones(h)
    assert z["zone"].iloc[0] == "red" and z["zone"].iloc[-1] == "green"
    assert z["zone"].tolist() == [basel_zone(k) for k in z["exceptions"]]
    assert worst_basel_zone(h) == "red"
    h[:5] = False  # at most 5 in any window
    assert worst_basel_zone(h) == "yellow"


def test_basel_short_sample():
    assert basel_zones(np.zeros(100, bool)).empty
    assert worst_basel_zone(np.zeros(100, bool)) == "green"
    assert worst_basel_zone(_hits(100, 5)) == "yellow"  # raw count vs the 250-day table
    assert worst_basel_zone(_hits(100, 10)) == "red"


def test_basel_zone_other_level():
    # p = 2.5%, 250 days: green while P(X<=k) < 95%, red from 99.99%, computed independently
    for k in range(30):
        c = stats.binom.cdf(k, 250, 0.025)
        expected = "green" if c < 0.95 else "red" if c >= 0.9999 else "yellow"
        assert basel_zone(k, 250, 0.025) == expected


# ----------------------------------------------------------------------------- Acerbi-Szekely Z2


def test_z2_hand_example():
    loss = [1.0, 3.0, 0.5, -1.0]
    var, es = [2.0] * 4, [4.0] * 4
    # only loss 3 > 2: Z2 = 1 - 3 / (T alpha ES) = 1 - 3 / (4 * 0.25 * 4)
    assert acerbi_szekely_z2(loss, var, es, alpha=0.25) == pytest.approx(0.25)
    # equivalent P&L form: sum X I / (T alpha ES) + 1 with X = -loss
    assert acerbi_szekely_z2(loss, var, es, alpha=0.25) == pytest.approx(-3.0 / (4 * 0.25 * 4) + 1)


def test_z2_increases_with_es():
    rng = np.random.default_rng(9)
    loss = rng.standard_t(4, 1000)
    var, es = np.full(1000, 2.0), np.full(1000, 3.0)
    z = [acerbi_szekely_z2(loss, var, es * s) for s in (0.5, 1.0, 2.0)]
    assert z[0] < z[1] < z[2]


def test_z2_correct_model_near_zero_and_underestimate_negative():
    df, alpha, n = 5, 0.025, 200_000
    q = stats.t.ppf(1 - alpha, df)
    es = stats.t.expect(lambda x: x, args=(df,), lb=q, conditional=True)
    # closed form for Student-t ES as an independent check of the reference value
    assert es == pytest.approx(stats.t.pdf(q, df) / alpha * (df + q**2) / (df - 1), rel=1e-6)
    loss = stats.t.rvs(df, size=n, random_state=np.random.default_rng(10))
    var_, es_ = np.full(n, q), np.full(n, es)
    assert abs(acerbi_szekely_z2(loss, var_, es_, alpha)) < 0.05
    assert acerbi_szekely_z2(loss, var_, 0.8 * es_, alpha) < -0.2  # ES too small -> negative


# ----------------------------------------------------------------------------- var_backtest


def test_var_backtest_consistent_with_parts():
    rng = np.random.default_rng(11)
    loss = rng.normal(size=600)
    var = np.full(600, stats.norm.ppf(0.99))
    out = var_backtest(loss, var, 0.99)
    hits = loss > var
    assert set(out) == {"exceptions", "rate", "kupiec_p", "christoffersen_p", "basel_zone",
                        "basel_windows", "basel_green_windows"}
    assert out["exceptions"] == hits.sum() and out["rate"] == pytest.approx(hits.mean())
    assert out["kupiec_p"] == pytest.approx(kupiec_pof(hits, 0.01).pvalue)
    assert out["christoffersen_p"] == pytest.approx(christoffersen(hits, 0.01).p_cc)
    assert out["basel_zone"] == worst_basel_zone(hits, 250, 0.01)
    zones = basel_zones(hits, 250, 0.01)["zone"]
    assert out["basel_windows"] == 351 == len(zones)
    assert out["basel_green_windows"] == (zones == "green").sum()


def test_var_backtest_exception_is_strict_inequality():
    out = var_backtest([1.0, 2.0, 3.0], [1.0, 1.0, 3.0], 0.99)
    assert out["exceptions"] == 1


# ----------------------------------------------------------------------------- input errors

_CALLS = {
    "qlike": lambda a, b: qlike(a, b),
    "mse_log": lambda a, b: mse_log(a, b),
    "mz": lambda a, b: mincer_zarnowitz(a, b),
    "mz_levels": lambda a, b: mincer_zarnowitz(a, b, log=False),
    "dm": lambda a, b: diebold_mariano(a, b),
    "z2": lambda a, b: acerbi_szekely_z2(a, b, np.ones(len(b))),
    "var_backtest": lambda a, b: var_backtest(a, b, 0.99),
}


@pytest.mark.parametrize("name", _CALLS)
def test_length_mismatch_raises(name):
    with pytest.raises(ValueError, match="length"):
        _CALLS[name]([1.0, 2.0, 3.0], [1.0, 2.0])


@pytest.mark.parametrize("name", _CALLS)
def test_nan_raises(name):
    with pytest.raises(ValueError, match="NaN"):
        _CALLS[name]([1.0, np.nan, 3.0], [1.0, 2.0, 3.0])


@pytest.mark.parametrize("name", _CALLS)
def test_empty_raises(name):
    with pytest.raises(ValueError, match="empty"):
        _CALLS[name]([], [])


@pytest.mark.parametrize("fn", [kupiec_pof, christoffersen, basel_zones, worst_basel_zone])
def test_hit_input_errors(fn):
    args = (0.01,) if fn in (kupiec_pof, christoffersen) else ()
    with pytest.raises(ValueError, match="empty"):
        fn(np.array([], dtype=bool), *args)
    with pytest.raises(ValueError, match="NaN"):
        fn([0.0, np.nan, 1.0], *args)


def test_nonpositive_variance_raises():
    for fn in (qlike, mse_log, mincer_zarnowitz):
        with pytest.raises(ValueError, match="> 0"):
            fn([1.0, 0.0, 2.0], [1.0, 1.0, 2.0])
        with pytest.raises(ValueError, match="> 0"):
            fn([1.0, 1.0, 2.0], [1.0, -1.0, 2.0])
    with pytest.raises(ValueError, match="> 0"):
        acerbi_szekely_z2([1.0], [0.5], [0.0])


def test_pandas_series_accepted():
    s = pd.Series([1.0, 2.0, 3.0])
    assert qlike(s, s).tolist() == [0.0, 0.0, 0.0]


def test_max_rise_counts_calendar_days_not_rows():
    """(session 25: the portfolio counted 5 margined rows, across a gap weeks apart; the calibration 5 days)"""
    from volmargin.evaluation.stats import max_rise

    dates = pd.DatetimeIndex(["2024-01-01", "2024-01-02", "2024-01-06", "2024-01-07", "2024-03-01", "2024-03-06"])
    margin = np.array([1.0, 1.0, 1.1, 1.3, 5.0, 6.0])
    assert max_rise(margin, dates, 5) == pytest.approx(0.3)  # 01-02 -> 01-07 (five rows on: 01-01 -> 03-06, 5.0)
    assert max_rise(margin, dates, 1) == pytest.approx(0.2 / 1.1)  # 01-07 -> 03-01, a row apart, is not a day
    paths = np.column_stack([margin, [1.0, 1.0, 1.0, 2.0, 1.0, np.nan]])
    assert max_rise(paths, dates, 5) == pytest.approx(1.0)  # the worst path; a NaN day is not margined
    assert np.isnan(max_rise(margin, dates, 30))
    with pytest.raises(ValueError, match="unique"):
        max_rise(margin, dates[[0, 0, 1, 2, 3, 4]], 1)


def test_clustered_kupiec_is_never_stricter_than_the_pooled():
    """(session 25's recheck: an estimated design effect just under 1 made the clustered p smaller)"""
    from volmargin.evaluation.stats import design_effect, kupiec_clustered

    hits = np.zeros(1000, dtype=bool)
    hits[::50] = True  # one hit in each of 20 clusters of 50: less dispersed than independent hits
    clusters = np.arange(1000) // 50
    assert design_effect(hits, clusters) < 1
    assert kupiec_clustered(hits, clusters, 0.01).pvalue == kupiec_pof(hits, 0.01).pvalue


# ----------------------------------------------------------------------------- session 26's mutation audit

def test_clustered_kupiec_keeps_the_pooled_test_for_a_design_effect_between_0_and_1():
    """Clusters of 50 holding 1 or 2 hits alternately (d about 0.18): dividing by d would make the clustered
    test stricter than the pooled one; it equals the pooled test."""
    clusters = np.repeat(np.arange(20), 50)
    hits = np.zeros(1000, dtype=bool)
    for c in range(20):
        hits[c * 50: c * 50 + (1 if c % 2 else 2)] = True
    assert 0 < design_effect(hits, clusters) < 1
    assert kupiec_clustered(hits, clusters, 0.01).pvalue == kupiec_pof(hits, 0.01).pvalue


def test_christoffersen_hand_value_with_unequal_transitions():
    """A series that starts with a hit: n01 != n10."""
    h = np.array([1, 0, 0, 0, 1, 1, 0, 0, 0, 0], dtype=bool)
    n00, n01, n10, n11 = 5, 1, 2, 1
    pi01, pi11, pi = n01 / (n00 + n01), n11 / (n10 + n11), (n01 + n11) / 9
    ll0 = (n00 + n10) * math.log(1 - pi) + (n01 + n11) * math.log(pi)
    ll1 = n00 * math.log(1 - pi01) + n01 * math.log(pi01) + n10 * math.log(1 - pi11) + n11 * math.log(pi11)
    assert christoffersen(h, 0.1).lr_ind == pytest.approx(-2 * (ll0 - ll1), rel=1e-12)


def test_max_rise_counts_a_rise_from_the_first_day():
    from volmargin.evaluation.stats import max_rise

    assert max_rise(np.array([1.0, 2.0, 2.0]), pd.date_range("2024-01-01", periods=3, tz="UTC"), 1) == pytest.approx(1.0)


def test_fractional_hits_are_refused():
    """0.5 is not a hit indicator (it would be read as a hit)."""
    with pytest.raises(ValueError, match="0/1"):
        kupiec_pof([0.0, 0.5, 1.0], 0.01)
