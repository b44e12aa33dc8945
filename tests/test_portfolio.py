"""Portfolio margin: FHS scenarios (no look-ahead, proxies), the margin rule, calibration, serving parity, CLI."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest
import volmargin_serving.portfolio as vp
from volmargin_serving.errors import CalibrationError
from volmargin_serving.portfolio import (
    PortfolioEngine, PortfolioPolicy, book_components, comonotone_risk, comonotone_tails, initial_margin, isolated_risk,
    load_scenarios, scenario_matrix, unit_risks, write_scenarios,
)

from volmargin import progress
from volmargin.cli import main
from volmargin.errors import ConfigError, DataError
from volmargin.risk import BadPositionError, UnknownAssetError
from volmargin.risk import portfolio as pf
from volmargin.risk.job import PortfolioJob, scenario_file
from volmargin.risk.scenarios import FHS, ScenarioConfig, filter_panel

ASSETS = ("alt_a", "alt_late", "binance_btcusdt", "binance_ethusdt")


def _forecasts(days: int = 700, seed: int = 0) -> pd.DataFrame:
    """A long forecast table of two models on four correlated assets; alt_late lists on day 400."""
    rng = np.random.default_rng(seed)
    origins = pd.date_range("2021-01-01", periods=days, freq="D", tz="UTC")
    vol = 0.03 * np.exp(np.cumsum(rng.normal(0, 0.05, (days, 1)), axis=0) * 0.5) * np.array([1.6, 2.0, 1.0, 1.2])
    market = rng.standard_t(4, (days, 1))
    shocks = 0.8 * market + 0.6 * rng.standard_t(4, (days, len(ASSETS)))
    realized = vol * shocks / np.sqrt(2.0)
    frames = []
    for model, bias in (("ewma", 1.0), ("gjr", 1.15)):
        for k, asset in enumerate(ASSETS):
            first = 400 if asset == "alt_late" else 0
            frames.append(pd.DataFrame({
                "model": model, "asset": asset, "origin": origins[first:], "date": origins[first:] + pd.Timedelta(days=1),
                "horizon": 1, "variance": (bias * vol[first:, k]) ** 2, "realized_ret": realized[first:, k],
                "realized_rv": realized[first:, k] ** 2}))
    table = pd.concat(frames, ignore_index=True)
    table.loc[table.sample(frac=0.01, random_state=1).index, "realized_ret"] = np.nan  # incomplete days
    return table


@pytest.fixture(scope="module")
def forecasts() -> pd.DataFrame:
    return _forecasts()


def _fhs(table: pd.DataFrame, **config) -> FHS:
    return FHS(filter_panel(table, "ewma"), ScenarioConfig(**{"lookback": 250, "min_scenarios": 50, **config}))


def test_scenarios_use_only_data_up_to_the_margin_date(forecasts):
    t_date = pd.Timestamp("2022-06-01", tz="UTC")
    before = _fhs(forecasts)
    t = int(before.panel.origins.get_loc(t_date))
    corrupted = forecasts.copy()
    later = corrupted["origin"] > t_date
    corrupted.loc[corrupted["origin"] >= t_date, "realized_ret"] = 9.0  # the MPOR of origin t ends after t
    corrupted.loc[later, "variance"] = 1e-12
    after = _fhs(corrupted)
    for a, b in ((before.scenarios(t), after.scenarios(t)), (before.stress(t), after.stress(t))):
        np.testing.assert_array_equal(a.returns, b.returns)
        np.testing.assert_array_equal(a.dates, b.dates)
    assert before.scenarios(t).dates.max() < np.datetime64(t_date.date())
    assert not np.array_equal(before.scenarios(t + 30).returns, after.scenarios(t + 30).returns)


def test_short_history_is_proxied_and_stated_never_dropped(forecasts):
    fhs = _fhs(forecasts)
    t = 450  # alt_late has 50 days of its own
    s = fhs.scenarios(t)
    late = ASSETS.index("alt_late")
    assert np.isfinite(s.returns[:, late]).all()
    share = s.proxied[:, late].mean()
    assert 0.7 < share < 0.85  # about 200 of 250 scenario dates
    peer = _fhs(forecasts, proxy="peer:binance_btcusdt")
    z, proxied = peer.standardized(t)
    btc = ASSETS.index("binance_btcusdt")
    rows = proxied[:, late] & ~proxied[:, btc]
    np.testing.assert_array_equal(z[rows, late], z[rows, btc])
    with pytest.raises(Exception, match="peer 'doge'"):
        _fhs(forecasts, proxy="peer:doge")


def _population() -> pf.Population:
    return pf.make_population(ASSETS, n_random=6, n_baskets=2, basket_size=3, n_alts=2)


def test_hedges_get_offsets_and_margins_scale(forecasts):
    fhs = _fhs(forecasts)
    pop = _population()
    bp = pf.book_panel(fhs, pop, PortfolioPolicy(), days=np.arange(300, 360))
    hedged = pop.classes == "hedged_btc_eth"
    ratio = np.nanmean(bp.joint[:, hedged]) / np.nanmean(bp.isolated[:, hedged])
    assert ratio < 0.8  # correlated legs offset
    single = pop.classes == "concentrated_alt"
    np.testing.assert_allclose(bp.joint[:, single], bp.isolated[:, single], rtol=1e-6)  # one position: no offset
    policy = PortfolioPolicy(scale=2.0, correlation_weight=0.5)
    np.testing.assert_allclose(pf.margin_path(bp, policy)[:, hedged],
                               2.0 * (0.5 * bp.joint + 0.5 * bp.isolated)[:, hedged])


def test_hedge_ratio_is_the_trailing_beta_without_look_ahead():
    rng = np.random.default_rng(4)
    hedge = rng.normal(0, 0.03, 400)
    realized = np.column_stack([1.5 * hedge + rng.normal(0, 0.01, 400), hedge])
    realized[[50, 300], 0] = np.nan  # a missing day is left out, not filled
    t, horizon = 300, 2
    ratio = pf.hedge_ratio(realized, t, horizon, 0, 1)
    assert ratio == pytest.approx(1.5, abs=0.1)
    later = realized.copy()
    later[t - horizon + 1:] = rng.normal(0, 1, later[t - horizon + 1:].shape)  # not realised by the margin date
    assert pf.hedge_ratio(later, t, horizon, 0, 1) == ratio
    known = realized.copy()
    known[t - horizon] = [0.2, -0.2]  # realised by then: it moves the ratio
    assert pf.hedge_ratio(known, t, horizon, 0, 1) != ratio
    assert np.isnan(pf.hedge_ratio(realized, pf.HEDGE_MIN_DAYS + horizon - 1, horizon, 0, 1))  # too short
    assert pf.hedge_ratio(np.column_stack([-hedge, hedge]), t, horizon, 0, 1) == pf.HEDGE_BOUNDS[0]


def test_hedged_pairs_are_sized_by_the_ratio_and_equal_pairs_kept(forecasts):
    fhs = _fhs(forecasts)
    pop = _population()
    t = 500
    books = pf.dated_notional(pop, fhs.panel.realized, t, fhs.panel.horizon)
    np.testing.assert_allclose(np.abs(books).sum(1), 1e6)
    fixed = pop.hedge_legs() < 0
    np.testing.assert_array_equal(books[fixed], pop.notional[fixed])
    assert set(pop.classes[fixed]) >= {"equal_btc_eth", "equal_alt_btc"}
    for k in np.flatnonzero(~fixed):
        hedge = pop.hedge_leg[k]
        position = int(np.flatnonzero((pop.notional[k] != 0) & (np.arange(len(ASSETS)) != hedge))[0])
        np.testing.assert_array_equal(np.sign(books[k]), np.sign(pop.notional[k]))  # same legs, same sides
        ratio = pf.hedge_ratio(fhs.panel.realized, t, fhs.panel.horizon, position, hedge)
        assert abs(books[k, hedge] / books[k, position]) == pytest.approx(ratio)
    early = pf.book_panel(_fhs(forecasts, min_scenarios=20), pop, PortfolioPolicy(), days=np.arange(30, 40))  # no ratio yet
    hedged = np.char.startswith(pop.classes.astype(str), "hedged")
    assert not early.alive[:, hedged].any() and early.alive[:, pop.classes == "equal_btc_eth"].all()


@pytest.mark.parametrize("measure", [PortfolioPolicy().measure, "var99"])
def test_calibration_meets_the_target_on_its_period(forecasts, measure):
    fhs = _fhs(forecasts)
    pop = _population()
    policy = PortfolioPolicy(measure=measure)
    bp = pf.book_panel(fhs, pop, policy)
    rows = np.asarray(bp.dates < pd.Timestamp("2022-06-01", tz="UTC"))
    cal = pf.calibrate_books(bp, pop.classes, rows, policy, target=0.01)
    assert cal.feasible
    margin = pf.margin_path(bp, cal.policy)
    counted = bp.alive & ~np.isnan(bp.loss) & rows[:, None]
    hits = counted & (bp.loss > margin)
    assert hits.sum() <= np.floor(0.01 * counted.sum())
    lower = pf.margin_path(bp, dataclasses.replace(cal.policy, scale=cal.policy.scale * 0.95))
    assert (counted & (bp.loss > lower)).sum() > hits.sum() or not np.isfinite(lower).any()
    summary = pf.summarise(bp, pop.classes, ~rows, cal.policy)
    assert set(summary["portfolio_class"]) >= {"random_ls", "hedged_btc_eth", "ALL"}
    assert (summary["avg_margin"] <= summary["avg_isolated_margin"] * (1 + 1e-6)).all()


@pytest.mark.parametrize("policy", [
    PortfolioPolicy(scale=1.3, correlation_weight=0.25),
    PortfolioPolicy(scale=0.9, stress_mode="weight", stress_weight=0.1, concentration=0.5),
    PortfolioPolicy(scale=1.1, measure="worst6", stress_mode="floor", correlation_weight=0.1),
    PortfolioPolicy(scale=1.2, correlation_weight=0.6, correlation_stress="comonotone", concentration=0.5),
])
def test_serving_computes_the_library_margin(forecasts, tmp_path, policy):
    fhs = _fhs(forecasts, lookback=300)
    pop = _population()
    t = len(fhs.panel.origins) - 1
    adv = np.full((len(fhs.panel.origins), len(ASSETS)), 5e7)
    bp = pf.book_panel(fhs, pop, policy, adv, days=np.array([t]))
    library = pf.margin_path(bp, policy)[0]
    path = write_scenarios(tmp_path / "s.npz", scenario_file(fhs, t, policy, "ewma"))
    engine = PortfolioEngine(load_scenarios(path), fhs.panel.sigma[t] ** 2, adv[t])
    served = engine.margin_batch(pf.dated_notional(pop, fhs.panel.realized, t, fhs.panel.horizon))
    np.testing.assert_allclose(served.initial, library, rtol=1e-6)
    np.testing.assert_allclose(served.isolated, pf.isolated_path(bp, policy)[0], rtol=1e-6)
    k = int(np.flatnonzero(pop.classes == "random_ls")[0])
    names = [ASSETS[i] for i in np.flatnonzero(pop.notional[k])]
    one = engine.margin(names=names, notionals=pop.notional[k][pop.notional[k] != 0])
    assert one.initial == pytest.approx(library[k], rel=1e-6)
    assert one.maintenance == pytest.approx(policy.maintenance_fraction * library[k], rel=1e-6)


@pytest.mark.parametrize("mode", ["weight", "floor"])
def test_serving_and_library_assemble_the_day_scenarios_alike(forecasts, mode):
    """One assembly (`day_scenarios`) in book_panel and PortfolioEngine: an empty stressed window is no
    stress in both (serving's floor mode raised on it), the stress weights are the library's bits."""
    fhs = _fhs(forecasts, lookback=300)
    t = len(fhs.panel.origins) - 1
    policy = PortfolioPolicy(measure="worst6", stress_mode=mode, stress_weight=0.3)
    scenarios = scenario_file(fhs, t, policy, "ewma")
    variance = fhs.panel.sigma[t] ** 2
    engine = PortfolioEngine(scenarios, variance)
    returns = vp.scenario_returns(scenarios.z, engine.sigma, scenarios.max_move)
    simple_t, weights, stress_t = vp.day_scenarios(returns, scenarios.stress, policy)
    np.testing.assert_array_equal(engine.simple_t, simple_t)
    if mode == "weight":
        n, m = len(scenarios.z), len(scenarios.stress)
        expected = np.r_[np.full(n, (1 - 0.3) / n), np.full(m, 0.3 / m)]  # book_panel's weights, to the bit
        np.testing.assert_array_equal(engine.weights, expected)
        np.testing.assert_array_equal(weights, expected)
        assert stress_t is None and engine.stress_t is None
    else:
        np.testing.assert_array_equal(engine.stress_t, stress_t)
    book = np.random.default_rng(0).normal(0, 1e6, (20, len(ASSETS)))
    empty = PortfolioEngine(dataclasses.replace(scenarios, stress=scenarios.stress[:0]), variance)
    plain = PortfolioEngine(dataclasses.replace(scenarios, policy=PortfolioPolicy(measure="worst6")), variance)
    np.testing.assert_array_equal(empty.margin_batch(book).initial, plain.margin_batch(book).initial)


def test_serving_bad_positions_and_missing_forecasts(forecasts, tmp_path):
    fhs = _fhs(forecasts)
    t = len(fhs.panel.origins) - 1
    scenarios = scenario_file(fhs, t, PortfolioPolicy(), "ewma")
    variance = fhs.panel.sigma[t] ** 2
    engine = PortfolioEngine(scenarios, variance)
    with pytest.raises(UnknownAssetError, match="'doge'"):
        engine.margin(names=["doge"], notionals=[1.0])
    with pytest.raises(BadPositionError, match="not finite"):
        engine.margin(names=["alt_a"], notionals=[np.nan])
    with pytest.raises(BadPositionError, match="not finite"):
        engine.margin_batch(np.array([[np.nan, 0, 0, 0]]))
    for huge in (1e40, -1e16):  # float32 P&L overflowed to an inf or NaN margin (session 23's campaign)
        with pytest.raises(BadPositionError, match="beyond"):
            engine.margin(names=["alt_a"], notionals=[huge])
        with pytest.raises(BadPositionError, match="beyond"):
            engine.margin_batch(np.array([[huge, 0, 0, 0]]))
    empty = engine.margin_batch(np.zeros((1, 4)))  # no position: no margin, a rate of 0 (was NaN or 1/0)
    assert empty.initial[0] == 0 and empty.rate[0] == 0
    book = dict(names=["alt_a", "binance_btcusdt"], notionals=[1e6, -1e6])
    normal = engine.margin(**book)
    missing = variance.copy()
    missing[ASSETS.index("alt_a")] = np.nan
    flagged = PortfolioEngine(scenarios, missing).margin(**book)
    assert flagged.flagged == ("alt_a",) and normal.flagged == ()
    assert flagged.initial >= normal.initial  # the fallback is the look-back's largest volatility
    slipped = variance.copy()
    slipped[ASSETS.index("alt_a")] *= 1e-4  # a variance in basis points: read as given, the margin collapses
    slip = PortfolioEngine(scenarios, slipped).margin(**book)
    assert slip.flagged == ("alt_a",) and slip.initial == flagged.initial
    adv = np.full(len(ASSETS), 1e9)
    concentrated = dataclasses.replace(scenarios, policy=PortfolioPolicy(concentration=1.0))
    with_adv = PortfolioEngine(concentrated, variance, adv).margin(**book).initial
    adv[ASSETS.index("alt_a")] = np.inf  # an infinite volume dropped the add-on: now charged as no volume
    assert PortfolioEngine(concentrated, variance, adv).margin(**book).initial > with_adv
    for bad in (adv[:2], adv[None], ["x"] * len(ASSETS)):  # numpy's ValueError / IndexError before
        with pytest.raises(BadPositionError, match="adv: expected"):
            PortfolioEngine(concentrated, variance, bad)
    no_fallback = dataclasses.replace(scenarios, fallback_sigma=np.full(len(ASSETS), np.nan))
    full = PortfolioEngine(no_fallback, missing).margin(**book)
    assert full.initial >= 1e6  # fully collateralised leg
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CalibrationError, match="not a portfolio scenario file"):
        load_scenarios(bad)


def test_cli_portfolio_writes_summary_and_rejects_bad_specs(forecasts, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    forecasts.to_parquet(run / "forecasts.parquet")
    out = tmp_path / "out"
    args = ["portfolio", "--run", str(run), "--out", str(out), "--validation-start", "2022-06-01",
            "--scenarios", "lookback=250,min_scenarios=50",
            "--population", "n_random=4,n_baskets=2,n_alts=2,n_candidates=20,n_adversarial=3"]
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)  # a progress line per margin date in a log file ...
    assert main([*args, "--quiet"]) == 0
    assert "margins:" not in capsys.readouterr().err  # ... but none with --quiet
    # by default w is fixed at the weight chosen on the hold-out, only the scale is calibrated
    assert set(pd.read_csv(out / "calibration.csv")["correlation_weight"]) == set(pf.CALIBRATION_WEIGHTS)
    assert set(pd.read_csv(out / "summary.csv")["correlation_weight"]) == set(pf.CALIBRATION_WEIGHTS)
    # without bars there are no traded volumes: a concentration add-on would add nothing (session 29's red team)
    assert main([*args, "--concentration-grid", "0,1", "--correlation-grid", "auto"]) == 2
    assert "a concentration add-on reads the assets' traded volumes" in capsys.readouterr().err
    assert main([*args, "--concentration-grid", "0", "--correlation-grid", "auto"]) == 0
    assert "gjr margins:" in capsys.readouterr().err
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["concentration"]) == {0.0}
    calibration = pd.read_csv(out / "calibration.csv")
    assert set(calibration["concentration"]) == {0.0} and calibration["chosen"].sum() == 2  # one per model
    assert set(calibration["correlation_weight"]) == set(pf.CORRELATION_GRID)
    required = ["portfolio_class", "model", "portfolios", "days", "breach_rate", "avg_margin", "avg_isolated_margin"]
    assert set(required) <= set(summary.columns)
    assert {"adversarial", "hedged_btc_eth", "hedged_alt_btc"} <= set(summary["portfolio_class"])
    assert set(summary["model"]) == {"ewma", "gjr"}
    assert (out / "scenarios-gjr.npz").is_file() and (out / "compare.csv").is_file()
    spec = tmp_path / "books.csv"
    spec.write_text("portfolio,asset,notional\npair,binance_btcusdt,1000\npair,binance_ethusdt,-1000\n")
    assert main([*args[:5], "--portfolios", str(spec), *args[5:9]]) == 0
    assert set(pd.read_csv(out / "summary.csv")["portfolio_class"]) == {"custom", "ALL"}
    spec.write_text("portfolio,asset,notional\npair,binance_btcusdt,1000\npair,doge,-1000\n")
    capsys.readouterr()
    assert main([*args[:5], "--portfolios", str(spec)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("volmargin: error:") and "row 3" in err and "'doge'" in err and "\n" not in err
    # a book whose legs never have forecasts on one validation day: said, not left as a row of NaN
    spec.write_text("portfolio,asset,notional\npair,binance_btcusdt,1000\npair,binance_ethusdt,-1000\n")
    delisted = (forecasts["asset"] == "binance_ethusdt") & (forecasts["origin"] >= "2022-05-01")
    forecasts[~delisted].to_parquet(run / "forecasts.parquet")
    assert main([*args[:5], "--portfolios", str(spec), *args[5:9]]) == 0
    assert "no book-day for custom: no validation day on which all of a book's assets" in capsys.readouterr().out


@pytest.mark.parametrize("extra, text", [
    (["--models", "ewma,lstm"], "'lstm' has no forecasts"),
    (["--policy", "scale=-1"], "policy.scale"),
    (["--scenarios", "lookback=5"], "lookback"),
    (["--validation-start", "2030-01-01"], "both periods need dates"),
])
def test_cli_portfolio_bad_options_are_one_line_errors(forecasts, tmp_path, capsys, extra, text):
    run = tmp_path / "run"
    run.mkdir()
    forecasts.to_parquet(run / "forecasts.parquet")
    assert main(["portfolio", "--run", str(run), "--out", str(tmp_path / "out"),
                 "--scenarios", "min_scenarios=50", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("volmargin: error:") and text in err and "\n" not in err
    assert main(["portfolio", "--run", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")]) == 2
    assert "nowhere: no such folder (one written by a volmargin job)" in capsys.readouterr().err


HEADER = "portfolio,asset,notional,portfolio_class\n"


@pytest.mark.parametrize("text, message", [
    ("portfolio,asset,notional\n", "no positions (a header only)"),
    ("portfolio,asset,notional,portf", "unknown column(s) portf"),  # a header cut mid-name
    ("portfolio,asset,notional,extra\np1,binance_btcusdt,1000,5\n", "unknown column(s) extra"),
    (HEADER + "p1,binance_btcusdt,1000,a\np1,binance_btcusdt,1000,a\n", "rows 2, 3 hold the same position"),
    (HEADER + "p1,binance_btcusdt,1000,a\np1,binance_btcusdt,-1000,a\n", "rows 2, 3 hold the same position"),
    (HEADER + "p1,binance_btcusdt,1000,a\np1,binance_ethusdt,10,b\n", "book 'p1' has several classes (a, b)"),
    (HEADER + "p1,binance_btcusdt,1000,ALL\n", "row 2: portfolio_class 'ALL' is reserved"),
    (HEADER + "p1,binance_btcusdt,1000,a\np2,binance_ethusdt,10,\n", "row 3: portfolio_class is empty"),
    (HEADER + ",binance_btcusdt,1000,a\n", "row 2: portfolio is empty"),
    (HEADER + "p1,binance_btcusdt,,a\n", "row 2: notional is empty"),
    (HEADER + "p1,binance_btcusdt,nan,a\n", "row 2: notional 'nan' is not a finite number"),
    (HEADER + "p1,binance_btcusdt,1000,a\np1,binance_ethusdt,-1e300,a\n", "row 3: notional -1e300 is beyond"),
    (HEADER + "p1,binance_btcusdt,1000,a\np2,binance_btcusdt,0,a\np2,binance_ethusdt,0,a\n",
     "book 'p2' has zero gross notional"),
])
def test_read_population_rejects_bad_specs_naming_the_row(tmp_path, text, message):
    spec = tmp_path / "books.csv"
    spec.write_text(text)
    with pytest.raises(DataError) as error:
        pf.read_population(spec, ASSETS)
    assert str(error.value).startswith(f"{spec}: ") and message in str(error.value), error.value


def test_read_population_reads_books_as_before(tmp_path):
    spec = tmp_path / "books.csv"
    spec.write_text("portfolio,asset,notional\n7,binance_btcusdt,1000\n7,binance_ethusdt,-800.5\nb,alt_a,5e5\n")
    population = pf.read_population(spec, ASSETS)
    assert population.names == ("7", "b") and list(population.classes) == ["custom", "custom"]
    np.testing.assert_array_equal(population.notional, [[0, 0, 1000, -800.5], [5e5, 0, 0, 0]])


@pytest.mark.parametrize("make, key", [
    (lambda: PortfolioPolicy(measure="foo"), "policy.measure"),
    (lambda: PortfolioPolicy(buffer=-1.0), "policy.buffer"),  # would lower margins below the rule's
    (lambda: PortfolioPolicy(max_down=1.5), "policy.max_down"),
    (lambda: PortfolioPolicy(scale=np.float64(-0.5)), "policy.scale: invalid value -0.5"),
    (lambda: PortfolioPolicy(concentration=float("inf")), "policy.concentration"),
    (lambda: ScenarioConfig(lookback="abc"), "portfolio.lookback"),
    (lambda: ScenarioConfig(min_scenarios=None), "portfolio.min_scenarios"),
    (lambda: PortfolioJob(target=2.0), "portfolio target"),
    (lambda: PortfolioJob(target=float("nan")), "portfolio target"),
    (lambda: PortfolioJob(gross=-1.0), "population.gross"),
    (lambda: PortfolioJob(gross="nan"), "population.gross"),
    (lambda: PortfolioJob(seed="abc"), "population.seed"),
    (lambda: PortfolioJob(n_random=-1), "population.n_random"),
    (lambda: PortfolioJob(n_candidates=0), "population.n_candidates"),
    # session 26: the counts had no upper bound
    (lambda: PortfolioJob(n_random=10**9), "population.n_random: an integer in [0, 10,000] expected, got 1000000000"),
    # session 25: the single-asset policy refused a buffer under EMIR's 25%, the portfolio's took it
    (lambda: PortfolioJob(policy=PortfolioPolicy(buffer=0.1)), "portfolio policy.buffer: invalid value 0.1 (EMIR"),
])
def test_portfolio_settings_name_the_bad_key(make, key):
    with pytest.raises(ValueError, match=re.escape(key)):
        make()


def test_a_generated_population_without_books_is_an_error(forecasts):
    from volmargin.risk.job import model_panels

    alts = forecasts[forecasts["asset"].str.startswith("alt")]  # no BTC/ETH pair, and every count 0: no book
    job = PortfolioJob(n_random=0, n_baskets=0, n_alts=0, n_adversarial=0, scenarios=ScenarioConfig(min_scenarios=50))
    with pytest.raises(ConfigError, match="portfolio population: no books on alt_a, alt_late"):
        next(model_panels(alts, None, job))
    assert pf.make_population(("alt_a",), n_random=0, n_baskets=0, n_alts=0).notional.shape == (0, 1)


def _cli_run(forecasts: pd.DataFrame, tmp_path) -> list[str]:
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    forecasts.to_parquet(run / "forecasts.parquet")
    return ["portfolio", "--run", str(run), "--quiet", "--validation-start", "2022-06-01",
            "--scenarios", "lookback=250,min_scenarios=50",
            "--population", "n_random=2,n_baskets=1,n_alts=1,n_candidates=10,n_adversarial=2"]


@pytest.mark.parametrize("extra, text", [
    (["--target", "-0.1"], "portfolio target"),
    (["--policy", "measure=foo"], "policy.measure"),
    (["--policy", "buffer=-1"], "policy.buffer"),
    (["--population", "seed=abc"], "population.seed"),
    (["--population", "gross=.nan"], "population.gross"),
    (["--population", "n_random=0,n_baskets=0,n_alts=0,n_candidates=0,n_adversarial=0"], "population.n_candidates"),
    (["--models", ",,,"], "--models is empty"),
    (["--population", "foo=1"], "--population: unknown key 'foo'; expected one of gross, seed"),
    (["--scenarios", "foo=1"], "--scenarios: unknown key 'foo'; expected one of lookback"),
    (["--policy", "foo=1"], "--policy: unknown key 'foo'; expected one of measure"),
])
def test_cli_portfolio_bad_values_are_one_line_errors_and_write_nothing(forecasts, tmp_path, capsys, extra, text):
    out = tmp_path / "out"
    base = _cli_run(forecasts, tmp_path)
    if extra[0] == "--population" and "n_random" in extra[1]:  # in place of the base's population, not beside it
        base = base[:base.index("--population")]
    assert main([*base, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("volmargin: error:") and text in err and "\n" not in err, err
    assert not out.exists()


def test_a_key_given_twice_in_policy_is_refused_as_in_set(forecasts, tmp_path, capsys):
    """(session 25: the last of a repeated key won silently, where `--set` refused it; one parser now)"""
    with pytest.raises(SystemExit) as stop:
        main([*_cli_run(forecasts, tmp_path), "--out", str(tmp_path / "out"), "--policy", "scale=1.2,scale=1.5"])
    assert stop.value.code == 2 and "argument --policy: scale is given twice" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # across two --policy options too (the last one won silently)
        main([*_cli_run(forecasts, tmp_path), "--out", str(tmp_path / "out"), "--policy", "scale=1.2",
              "--policy", "max_up=0.5,scale=1.5"])
    assert "argument --policy: scale is given twice" in capsys.readouterr().err
    from volmargin.cli import build_parser

    args = build_parser().parse_args(["portfolio", "--run", "r", "--out", "o", "--policy", "buffer=0.25",
                                      "--policy", "max_up=0.5"])
    assert args.policy == {"buffer": 0.25, "max_up": 0.5}  # they add up


def test_cli_portfolio_output_appears_whole_or_not_at_all(forecasts, tmp_path, capsys):
    args = _cli_run(forecasts, tmp_path)
    out = tmp_path / "out"
    assert main([*args, "--out", str(out), "--validation-start", "2030-01-01"]) == 2  # fails before any model
    assert not out.exists()
    # gjr has too short a history: it fails after ewma's scenario file was written, which must not stay
    late = forecasts[(forecasts["model"] == "ewma") | (forecasts["origin"] >= "2022-11-01")]
    assert main([*_cli_run(late, tmp_path), "--out", str(out)]) == 2
    assert "model gjr: no margin date has 50 scenario dates" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out.*.staging"))
    (tmp_path / "afile").write_text("x")
    for target in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        assert main([*args, "--out", str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("volmargin: error:") and str(tmp_path / "afile") in err and "\n" not in err, err


def test_cli_portfolio_of_one_asset_is_one_line(forecasts, tmp_path, capsys):
    one = forecasts[forecasts["asset"] == forecasts["asset"].iloc[0]]
    assert main([*_cli_run(one, tmp_path), "--out", str(tmp_path / "out")]) == 2  # crashed in the adversary
    err = capsys.readouterr().err.strip()
    assert "portfolio margin needs two assets or more" in err and "\n" not in err


def test_cli_concentration_grid_must_be_non_negative_numbers(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["portfolio", "--run", str(tmp_path), "--out", str(tmp_path / "out"), "--concentration-grid", "0,-1"])
    assert exit_.value.code == 2 and "non-negative numbers" in capsys.readouterr().err
    from volmargin.risk.job import PortfolioJob

    with pytest.raises(ConfigError, match="non-negative numbers"):  # the `volmargin run` config path
        PortfolioJob(concentrations=(0.5, -1.0))


@pytest.mark.parametrize("weights", ["0,1.5", "-0.1", "nan", "x"])
def test_cli_correlation_grid_must_be_weights_in_0_1(tmp_path, capsys, weights):
    with pytest.raises(SystemExit) as exit_:
        main(["portfolio", "--run", str(tmp_path), "--out", str(tmp_path / "out"), "--correlation-grid", weights])
    assert exit_.value.code == 2 and "in [0, 1]" in capsys.readouterr().err
    from volmargin.risk.job import PortfolioJob

    with pytest.raises(ConfigError, match=r"in \[0, 1\]"):  # the `volmargin run` config path
        PortfolioJob(correlation_weights=(0.1, 1.5))


def test_portfolio_serving_needs_no_training_stack(forecasts, tmp_path):
    import subprocess
    import sys

    fhs = _fhs(forecasts)
    t = len(fhs.panel.origins) - 1
    path = write_scenarios(tmp_path / "s.npz", scenario_file(fhs, t, PortfolioPolicy(stress_mode="floor"), "ewma"))
    np.save(tmp_path / "variance.npy", fhs.panel.sigma[t] ** 2)
    code = (
        "import sys, numpy as np\n"
        "from volmargin_serving.portfolio import PortfolioEngine, align, load_scenarios\n"
        f"s = load_scenarios({str(path)!r})\n"
        f"v = align(s.assets, s.assets[::-1], np.load({str(tmp_path / 'variance.npy')!r})[::-1])\n"
        "m = PortfolioEngine(s, v).margin(names=['alt_a', 'binance_btcusdt'], notionals=[1e6, -1e6])\n"
        "assert m.initial > 0 and m.flagged == ()\n"
        "heavy = {'torch', 'pandas', 'mlflow', 'arch', 'sklearn', 'lightning', 'scipy', 'volmargin'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_scenario_moves_are_capped_at_the_largest_realised_move(forecasts):
    table = forecasts.copy()
    quiet = (table["asset"] == "alt_a") & (table["origin"] == pd.Timestamp("2022-01-10", tz="UTC"))
    table.loc[quiet, "variance"] = 1e-8  # a near-zero forecast: its realised move becomes a z of hundreds
    fhs = _fhs(table)
    t = int(fhs.panel.origins.get_loc(pd.Timestamp("2022-03-01", tz="UTC")))
    cap = fhs.move_cap(t)
    rows = fhs.rows(t)
    assert cap == pytest.approx(np.nanmax(np.abs(fhs.panel.realized[rows])))
    assert np.abs(fhs.z[rows]).max() > 100
    assert np.abs(fhs.scenarios(t).returns).max() <= cap
    assert _fhs(table, move_cap=False).move_cap(t) == np.inf


@pytest.mark.parametrize("stress", ["isolated", "comonotone"])
@pytest.mark.parametrize("measure", ["es975", "var99", "worst6"])
def test_one_book_kernel_matches_the_batch_path(forecasts, measure, stress):
    """`margin` (the serving hot path) prices like `margin_batch` (the library's components), duplicate
    positions netted, add-on and correlation blend included."""
    fhs = _fhs(forecasts, lookback=300)
    t = len(fhs.panel.origins) - 1
    policy = PortfolioPolicy(measure=measure, scale=1.2, correlation_weight=0.3, concentration=0.5,
                             correlation_stress=stress)
    adv = np.array([5e6, np.nan, 1e9, 3e8])  # alt_late without a usable volume: charged in full
    engine = PortfolioEngine(scenario_file(fhs, t, policy, "ewma"), fhs.panel.sigma[t] ** 2, adv)
    books = [(["alt_a", "binance_btcusdt"], [1e6, -1e6]), (["binance_ethusdt"], [-3e5]),
             (["alt_a", "binance_ethusdt", "alt_a", "alt_late"], [2e5, 4e5, -5e5, 1e3])]
    for names, notionals in books:
        dense = np.zeros(len(ASSETS))
        np.add.at(dense, [ASSETS.index(n) for n in names], notionals)
        batch = engine.margin_batch(dense[None])
        one = engine.margin(names=names, notionals=notionals)
        assert one.initial == pytest.approx(batch.initial[0], rel=1e-6)
        assert one.isolated == pytest.approx(batch.isolated[0], rel=1e-6)
        assert one.gross == pytest.approx(np.abs(notionals).sum())


@pytest.mark.parametrize("policy", [
    PortfolioPolicy(scale=1.2, correlation_weight=0.3, concentration=0.5),
    PortfolioPolicy(scale=1.2, correlation_weight=0.6, correlation_stress="comonotone", measure="var99"),
    PortfolioPolicy(scale=0.9, stress_mode="weight", stress_weight=0.1),
    PortfolioPolicy(scale=1.1, measure="worst6", stress_mode="floor", correlation_weight=0.1),
])
def test_batch_in_blocks_is_one_by_one_and_the_library(forecasts, policy, monkeypatch):
    """`margin_batch` prices blocks of books in a reused buffer (a last block shorter than the others):
    the same margins as one call per book and as the library's panel of the same date."""
    monkeypatch.setattr(vp, "BATCH_BLOCK", 6)
    fhs = _fhs(forecasts, lookback=300)
    t = len(fhs.panel.origins) - 1
    adv = np.full((len(fhs.panel.origins), len(ASSETS)), 5e7)
    pop = _population()
    assert len(pop.names) % 6 and len(pop.names) > 12, len(pop.names)
    bp = pf.book_panel(fhs, pop, policy, adv, days=np.array([t]))
    engine = PortfolioEngine(scenario_file(fhs, t, policy, "ewma"), fhs.panel.sigma[t] ** 2, adv[t])
    books = pf.dated_notional(pop, fhs.panel.realized, t, fhs.panel.horizon)  # hedged pairs at that date's ratio
    batch = engine.margin_batch(books)
    one = [engine.margin(names=[ASSETS[i] for i in np.flatnonzero(row)], notionals=row[row != 0]) for row in books]
    np.testing.assert_allclose(batch.initial, [m.initial for m in one], rtol=1e-6)
    np.testing.assert_allclose(batch.isolated, [m.isolated for m in one], rtol=1e-6)
    np.testing.assert_allclose(batch.initial, pf.margin_path(bp, policy)[0], rtol=1e-6)
    np.testing.assert_allclose(batch.isolated, pf.isolated_path(bp, policy)[0], rtol=1e-6)


def test_comonotone_stress_charges_baskets_in_full_and_keeps_hedge_offsets():
    """Perfect correlation: a long basket's comonotone ES is its isolated sum (comonotonic additivity);
    a hedge of two assets with the same distribution loses nothing; one asset alone is its own ES."""
    rng = np.random.default_rng(5)
    market = rng.standard_t(4, (2500, 1))
    returns = 0.03 * (0.8 * market + 0.6 * rng.standard_t(4, (2500, 3)))
    returns[:, 2] = rng.permutation(returns[:, 1])  # same distribution as asset 1, other dates
    simple_t = scenario_matrix(returns)
    unit = unit_risks(simple_t.T, "es975")
    tails = comonotone_tails(simple_t)
    basket = np.array([4e5, 6e5, 0.0])
    assert comonotone_risk(basket, tails, "es975", 2500) == pytest.approx(isolated_risk(basket, unit), rel=1e-5)
    # float32 scenarios: a BLAS product with fused multiply-adds (AVX-512) leaves a rounding residue of
    # a few 1e-9 of the notional where the two legs cancel
    assert comonotone_risk(np.array([0.0, 1e6, -1e6]), tails, "es975", 2500) == pytest.approx(0.0, abs=1e-6 * 1e6)
    joint = book_components(np.array([0.0, 1e6, -1e6]), simple_t, unit, "es975")[0]
    assert joint > 0.02 * 1e6  # on the joint dates the two legs are decorrelated: the hedge still has risk
    hedge = dict(joint=joint, isolated=isolated_risk(np.array([0.0, 1e6, -1e6]), unit), addon=0.0)
    policy = PortfolioPolicy(correlation_weight=1.0, correlation_stress="comonotone")
    assert initial_margin(**hedge, policy=policy, comonotone=0.0) == pytest.approx(joint)  # never below joint
    assert initial_margin(**hedge, policy=dataclasses.replace(policy, correlation_stress="isolated")) > 1.5 * joint


def _panel(joint: np.ndarray, loss: np.ndarray, addon_per_unit: np.ndarray, grid: tuple[float, ...]) -> pf.BookPanel:
    """A hand-made panel: joint risks and losses (T, P), the add-on linear in the coefficient."""
    t, p = joint.shape
    addons = addon_per_unit[None, :, None] * np.asarray(grid)[None, None, :] * np.ones((t, 1, 1))
    zeros = np.zeros((t, p))
    return pf.BookPanel("m", pd.date_range("2021-01-01", periods=t, tz="UTC"), joint=joint, isolated=joint.copy(),
                        floor=zeros, comonotone=np.full((t, p), np.nan), addon=addons[..., 0], largest=joint.copy(),
                        largest_addon=addons[..., 0], loss=loss, alive=np.ones((t, p), bool), gross=np.ones(p),
                        addon_grid=addons, largest_addon_grid=addons.copy(), concentrations=grid)


def test_concentration_is_calibrated_when_it_carries_the_binding_class():
    """Concentrated books have fatter tails than their joint risk says and a large add-on per unit of
    coefficient; diversified books a small one. Scale alone must cover the concentrated class (the binding
    one); with the coefficient calibrated too the add-on covers it and the scale falls for the rest."""
    rng = np.random.default_rng(3)
    t, p = 2000, 20
    classes = np.array(["diversified"] * 10 + ["concentrated"] * 10, dtype=object)
    joint = np.full((t, p), 0.05)
    loss = rng.standard_normal((t, p)) * 0.02
    loss[:, 10:] = rng.standard_t(3, (t, 10)) * 0.02
    per_unit = np.where(classes == "concentrated", 0.02, 0.0005)
    grid = (0.0, 0.5, 1.0, 2.0)
    bp = _panel(joint, loss, per_unit, grid)
    rows = np.arange(t) < 1000
    fixed = pf.calibrate_books(bp, classes, rows, PortfolioPolicy(), target=0.01)
    joint_cal = pf.calibrate_books(bp, classes, rows, PortfolioPolicy(), target=0.01, concentrations=grid,
                                   grid=pf.CORRELATION_GRID)
    assert fixed.feasible and joint_cal.feasible
    assert set(zip(joint_cal.table["concentration"], joint_cal.table["correlation_weight"])) == \
        {(c, w) for c in grid for w in pf.CORRELATION_GRID}
    assert joint_cal.policy.concentration > 0 and joint_cal.policy.scale < 0.95 * fixed.policy.scale
    counted = rows[:, None] & np.ones((1, p), bool)
    margin = pf.margin_path(bp, joint_cal.policy)
    hits = counted & (loss > margin)
    assert hits.sum() <= np.floor(0.01 * counted.sum())
    for cls in ("diversified", "concentrated"):
        assert hits[:, classes == cls].sum() <= np.floor(0.015 * counted[:, classes == cls].sum())
    average = lambda policy: np.mean(pf.margin_path(bp, policy)[rows])  # noqa: E731
    assert average(joint_cal.policy) < average(fixed.policy)
    feasible = joint_cal.table[joint_cal.table["feasible"]]
    assert average(joint_cal.policy) == pytest.approx(feasible["calibration_avg_margin"].min())
    # the add-on is the policy's: a margin under another coefficient differs by exactly its add-on
    other = dataclasses.replace(joint_cal.policy, concentration=0.0)
    np.testing.assert_allclose(margin - pf.margin_path(bp, other), bp.addon_grid[..., grid.index(joint_cal.policy.concentration)])
    with pytest.raises(ConfigError, match="concentration 3.0 was not computed"):
        pf.margin_path(bp, dataclasses.replace(joint_cal.policy, concentration=3.0))


def test_concentration_stays_off_when_it_misses_the_binding_class():
    """The add-on falls on the books that do not bind (the diversified ones) and not on the fat-tailed
    concentrated ones: it only adds margin, so the joint calibration keeps the coefficient at 0, with the
    scale of the fixed calibration."""
    rng = np.random.default_rng(3)
    t, p = 2000, 20
    classes = np.array(["diversified"] * 10 + ["concentrated"] * 10, dtype=object)
    loss = rng.standard_normal((t, p)) * 0.02
    loss[:, 10:] = rng.standard_t(3, (t, 10)) * 0.02
    grid = (0.0, 0.5, 1.0, 2.0)
    bp = _panel(np.full((t, p), 0.05), loss, np.where(classes == "concentrated", 0.0, 0.02), grid)
    rows = np.arange(t) < 1000
    joint_cal = pf.calibrate_books(bp, classes, rows, PortfolioPolicy(), concentrations=grid)
    fixed = pf.calibrate_books(bp, classes, rows, PortfolioPolicy())
    assert joint_cal.policy.concentration == 0.0 and joint_cal.policy.scale == pytest.approx(fixed.policy.scale)


def test_book_panel_grid_add_ons_are_those_of_each_coefficient(forecasts):
    fhs = _fhs(forecasts)
    pop = _population()
    adv = np.full((len(fhs.panel.origins), len(ASSETS)), 5e7)
    adv[:, 0] = 2e6
    days = np.arange(450, 460)
    bp = pf.book_panel(fhs, pop, PortfolioPolicy(concentration=0.5), adv, days, concentrations=(0.0, 2.0))
    assert bp.concentrations == (0.0, 0.5, 2.0)
    np.testing.assert_array_equal(bp.addon, bp.addon_grid[..., 1])
    for c in (0.0, 2.0):
        one = pf.book_panel(fhs, pop, PortfolioPolicy(concentration=c), adv, days)
        np.testing.assert_allclose(bp.with_concentration(c).addon, one.addon)
        np.testing.assert_allclose(bp.with_concentration(c).largest_addon, one.largest_addon)
    assert (bp.with_concentration(2.0).addon[bp.alive] > bp.addon[bp.alive]).any()


def _adversary_holdings(table: pd.DataFrame, job) -> tuple:
    """The adversarial books held on each margin date (a (date, book) frame of booleans) and the panel."""
    from volmargin.risk.job import model_panels

    mp = next(model_panels(table, None, job, progress=False))
    adversarial = mp.classes == "adversarial"
    held = pd.DataFrame(mp.bp.alive[:, adversarial], index=mp.bp.dates, columns=np.asarray(mp.names)[adversarial])
    return mp, held


def _held_pairs(held: pd.DataFrame, before: pd.Timestamp) -> set:
    rows = held[held.index < before]
    return {(date, name) for name in rows for date in rows.index[rows[name].to_numpy()]}


def test_adversarial_books_are_chosen_before_the_dates_they_are_scored_on(forecasts):
    """Corrupt every forecast and realised return from a block start (less the MPOR) on: the books the
    adversary holds up to the end of that block must not change, in calibration and in validation."""
    from volmargin.risk.job import PortfolioJob

    job = PortfolioJob(models=("ewma",), scenarios=ScenarioConfig(lookback=250, min_scenarios=50),
                       validation_start="2022-06-01", n_random=4, n_baskets=2, n_alts=2, n_candidates=40,
                       n_adversarial=5)
    mp, held = _adversary_holdings(forecasts, job)
    blocks = pf.adversary_blocks(mp.bp.dates, [mp.start])
    assert mp.start in blocks and held.to_numpy().any()
    scored = [b for b in blocks if held[held.index >= b].to_numpy().any()]
    cuts = [scored[1], mp.start]  # a block of the calibration period and the validation start
    assert cuts[0] < mp.start and held[(held.index >= cuts[0]) & (held.index < mp.start)].to_numpy().any()
    rng = np.random.default_rng(7)
    for cut in cuts:
        end = blocks[blocks > cut][0] if (blocks > cut).any() else mp.bp.dates[-1] + pd.Timedelta(days=1)
        corrupted = forecasts.copy()
        late = (corrupted["origin"] >= cut - pd.Timedelta(days=1)).to_numpy()  # horizon 1
        corrupted.loc[late, "realized_ret"] *= rng.choice([-5.0, 5.0], late.sum())
        corrupted.loc[late, "variance"] *= rng.lognormal(0, 1, late.sum())
        mp2, held2 = _adversary_holdings(corrupted, job)
        base = mp.classes != "adversarial"
        assert not np.allclose(mp2.bp.loss[:, mp2.classes != "adversarial"], mp.bp.loss[:, base], equal_nan=True)
        assert _held_pairs(held2, end) == _held_pairs(held, end)


def test_adversary_picks_the_smallest_margin_against_the_realised_tail_on_the_window_only():
    """Two candidates, one margined at a third of the other's level for the same tail: the adversary holds it
    on the blocks after the windows where it was so; a reversal is seen only by blocks chosen after it."""
    dates = pd.date_range("2021-01-01", periods=600, tz="UTC")
    loss = np.random.default_rng(0).standard_normal((len(dates), 2))
    joint = np.ones((len(dates), 2)) * 3.0
    joint[:, 0] = 1.0  # book 0 looks cheap against its tail ...
    turn = np.asarray(dates >= pd.Timestamp("2021-07-01", tz="UTC"))
    joint[turn, 0], joint[turn, 1] = 3.0, 1.0  # ... until July 2021, then book 1 does
    bp = dataclasses.replace(_panel(joint, loss, np.zeros(2), (0.0,)), dates=dates)
    held = pf.adversarial_schedule(bp, 1, pf.adversary_blocks(dates), n=1, min_days=30)

    def block(first: str, last: str) -> np.ndarray:
        return np.asarray((dates >= pd.Timestamp(first, tz="UTC")) & (dates < pd.Timestamp(last, tz="UTC")))

    assert not held[block("2021-01-01", "2021-04-01")].any()  # no realised history before the first block
    assert held[block("2021-04-01", "2021-10-01"), 0].all()  # Q3 2021 is chosen on data before the turn
    assert not held[block("2021-04-01", "2021-10-01"), 1].any()
    assert held[block("2022-07-01", "2023-01-01"), 1].all()  # chosen on the year after the turn
    assert not held[block("2022-07-01", "2023-01-01"), 0].any()


def test_the_printed_digest_is_one_line_per_model_with_its_worst_class():
    """(session 25: `portfolio` printed every class x model, 100 rows on a 10-model run)"""
    from volmargin.cli import portfolio_digest

    rows = [("ALL", "m", 0.010), ("a", "m", 0.012), ("b", "m", 0.008), ("c", "m", float("nan")),
            ("ALL", "k", 0.020), ("a", "k", 0.015), ("b", "k", 0.030)]
    summary = pd.DataFrame(rows, columns=["portfolio_class", "model", "breach_rate"]).assign(
        portfolios=5, book_days=100, kupiec_p_clustered=0.5, avg_margin=0.05, avg_isolated_margin=0.07)
    digest = portfolio_digest(summary).set_index("model")
    assert list(digest.index) == ["m", "k"] and digest.loc["m", "breach_rate"] == 0.010
    assert (digest.loc["m", "worst_class"], digest.loc["k", "worst_class"]) == ("a", "b")


# ----------------------------------------------------------------------------- session 26's mutation audit

def _engine_scenarios(policy=PortfolioPolicy(), stress=None, z=None) -> vp.PortfolioScenarios:
    z = np.random.default_rng(0).standard_normal((1000, 2)) if z is None else z
    return vp.PortfolioScenarios(("a", "b"), z, np.arange(len(z)).astype("datetime64[D]"), None, stress,
                                 np.array([0.05, 0.05]), policy)


def test_an_asset_without_a_forecast_is_priced_at_its_fallback_not_at_zero():
    """A missing forecast (NaN) prices the position at the fallback volatility, flagged, exactly as if that
    were the forecast; never at zero volatility."""
    scenarios = _engine_scenarios()
    missing = PortfolioEngine(scenarios, np.array([np.nan, 1e-4])).margin(names=["a"], notionals=[1e6])
    at_fallback = PortfolioEngine(scenarios, np.array([0.05 ** 2, 1e-4])).margin(names=["a"], notionals=[1e6])
    assert missing.flagged == ("a",) and missing.initial > 0
    assert missing.initial == pytest.approx(at_fallback.initial, rel=1e-6)


def test_the_stress_floor_binds_when_the_stressed_loss_exceeds_the_joint():
    """stress_mode='floor': IM = scale x max(blend, the stressed scenarios' measure), one book and a batch."""
    policy = PortfolioPolicy(scale=1.5, stress_mode="floor")
    engine = PortfolioEngine(_engine_scenarios(policy, np.full((40, 2), -0.5)), np.array([1e-4, 1e-4]))
    floor = 1e6 * -np.expm1(-0.5)
    assert engine.margin(names=["a"], notionals=[1e6]).initial == pytest.approx(1.5 * floor, rel=1e-5)
    assert engine.margin_batch(np.array([[1e6, 0.0]])).initial[0] == pytest.approx(1.5 * floor, rel=1e-5)


@pytest.mark.parametrize("stress_mode", ["none", "floor"])
def test_a_book_that_gains_in_every_scenario_has_zero_margin(stress_mode):
    """A long position in an asset that rises in every scenario: IM 0, never negative (before session 26
    the floor mode gave -1,119.86: a stressed floor that is itself a gain was not clamped)."""
    z = np.abs(np.random.default_rng(1).standard_normal((1000, 2))) + 0.1
    stress = np.full((10, 2), 0.05) if stress_mode == "floor" else None
    engine = PortfolioEngine(_engine_scenarios(PortfolioPolicy(stress_mode=stress_mode), stress, z),
                             np.array([1e-4, 1e-4]))
    single = engine.margin(names=["a"], notionals=[1e6])
    assert single.initial == 0.0 and single.maintenance == 0.0
    assert engine.margin_batch(np.array([[1e6, 0.0]])).initial[0] == 0.0


def test_the_concentration_addon_is_at_most_the_position():
    """A thin asset, or one without a usable volume (NaN ADV: charged in full), costs the position itself."""
    addon = vp.position_addons(np.array([1e6, -2e6, 1e3]), np.array([0.05] * 3), np.array([1.0, np.nan, 1e12]), 1.0)
    assert addon[0] == pytest.approx(1e6) and addon[1] == pytest.approx(2e6)
    assert addon[2] == pytest.approx(0.05 * 1e3 * np.sqrt(1e3 / 1e12))


def test_the_realised_loss_is_the_fall_of_the_book_value(forecasts):
    """bp.loss = -(n @ (e^r - 1)) of the realised MPOR log returns, NaN where a held asset's return is not
    realised (never filled with 0); a book holding an asset before its first forecast is not margined."""
    fhs = _fhs(forecasts)
    notional = np.zeros((2, len(ASSETS)))
    notional[0, 0] = 1e6  # long alt_a
    notional[1, 0], notional[1, 1] = -5e5, 5e5  # short alt_a, long alt_late
    population = pf.Population(ASSETS, ("long", "ls"), np.array(["x", "x"], dtype=object), notional)
    days = np.arange(300, 500)
    bp = pf.book_panel(fhs, population, PortfolioPolicy(), days=days)
    realised = fhs.panel.realized[days]
    listed = np.isfinite(fhs.panel.sigma[days, 1])
    assert not bp.alive[~listed, 1].any() and bp.alive[listed, 1].any()
    expected = -(notional @ np.expm1(np.nan_to_num(realised)).T).T
    expected[np.isnan(realised[:, 0])] = np.nan
    expected[np.isnan(realised[:, 1]), 1] = np.nan
    assert np.isnan(expected[bp.alive]).any()  # an unrealised day of a held asset is in the window
    np.testing.assert_allclose(bp.loss[bp.alive], expected[bp.alive], rtol=1e-12)


def test_the_calibration_allows_the_floor_of_target_times_book_days():
    """150 book-days at a 1% target allow floor(1.5) = 1 breach: the scale sits at the 2nd largest loss per
    unit of joint risk, not the 3rd."""
    loss = np.linspace(0.1, 1.0, 150)[:, None]
    bp = _panel(np.ones((150, 1)), loss, np.zeros(1), (0.0,))
    cal = pf.calibrate_books(bp, np.array(["only"], dtype=object), np.ones(150, bool), PortfolioPolicy(),
                             target=0.01, tolerance=1e-6)
    second, third = np.sort(loss[:, 0])[-2], np.sort(loss[:, 0])[-3]
    assert cal.feasible and cal.policy.scale == pytest.approx(second, rel=1e-5) and cal.policy.scale > third * 1.001


def test_each_books_coverage_tests_read_margin_dates_a_horizon_apart(forecasts):
    """(session 27) A book's Kupiec and Christoffersen p-values at an MPOR of h days read its margin dates h apart:
    overlapping MPORs share days, so their breaches come in runs that the tests would read as clustering."""
    from volmargin.evaluation import stats

    fhs, pop, policy = _fhs(forecasts), _population(), PortfolioPolicy(scale=0.6)  # breaches to test
    bp = pf.book_panel(fhs, pop, policy)
    rows = np.ones(len(bp.dates), bool)
    counted, hits = pf._breaches(bp, pf.margin_path(bp, policy), rows)
    for horizon in (1, 3):
        summary = pf.summarise(bp, pop.classes, rows, policy, horizon=horizon).set_index("portfolio_class")
        spaced = np.arange(len(bp.dates)) % horizon == 0
        series = [hits[counted[:, k] & spaced, k] for k in range(hits.shape[1])]
        series = [s for s in series if len(s) >= 50]
        assert len(series) >= 5 and sum(s.sum() for s in series) > 0
        assert summary.loc["ALL", "christoffersen_p"] == pytest.approx(
            np.median([stats.christoffersen(s, 0.01).p_cc for s in series]))
        assert summary.loc["ALL", "kupiec_p_book_median"] == pytest.approx(
            np.median([stats.kupiec_pof(s, 0.01).pvalue for s in series]))


# ------------------------------------------------------------------ session 28's mutation audit: FHS scenarios, the job
# Each test below fails on a change the suite let through (yesterday's sigma, a look-back one row longer, a move
# cap blind to crashes, a stress window of 61 days, a mean proxy, no square-root-of-time, a calibration MPOR
# reaching into validation, a fallback reading tomorrow's forecast).

def _toy_fhs(realized, sigma, **cfg):
    from volmargin.risk.scenarios import FHS, FilterPanel, ScenarioConfig
    origins = pd.date_range("2021-01-01", periods=len(realized), freq="D", tz="UTC")
    panel = FilterPanel("m", ("a", "b"), origins, 1, np.asarray(sigma, float), np.asarray(realized, float))
    return FHS(panel, ScenarioConfig(**{"lookback": 50, "min_scenarios": 20, "stress_days": 10, **cfg}))


def _toy(n=120, seed=0):
    rng = np.random.default_rng(seed)
    sigma = np.full((n, 2), 0.02) * rng.uniform(0.5, 2.0, (n, 1))
    return rng.normal(0, 0.01, (n, 2)), sigma


def test_scenarios_are_lookback_z_times_todays_sigma_over_exactly_lookback_dates():
    realized, sigma = _toy()
    fhs = _toy_fhs(realized, sigma, move_cap=False)
    t = 100
    rows = fhs.rows(t)
    np.testing.assert_array_equal(rows, np.arange(t - 1 - 50 + 1, t - 1 + 1))  # s + h <= t, exactly `lookback`
    np.testing.assert_allclose(fhs.scenarios(t).returns, realized[rows] / sigma[rows] * sigma[t], rtol=1e-12)
    assert len(fhs.rows(20)) == 20 and fhs.enough(20) and not fhs.enough(19)  # exactly min_scenarios is enough


def test_the_move_cap_is_the_largest_fall_when_a_crash_is_the_largest_move():
    realized, sigma = _toy()
    realized[80, 0] = -0.30  # a crash, larger than any rise
    fhs = _toy_fhs(realized, sigma)
    assert fhs.move_cap(100) == pytest.approx(0.30)


def test_the_stress_window_is_stress_days_long_and_needs_half_of_them():
    realized, sigma = _toy()
    realized[60:63] = -0.2  # the worst stretch, mid-history
    fhs = _toy_fhs(realized, sigma)
    rows = fhs.stress_rows(110)
    assert len(rows) == 10 and {60, 61, 62} <= set(rows)
    early = realized.copy()
    early[60:63] = realized[0:3]
    early[1] = -0.2  # a crash on day 1: the first window scored has stress_days // 2 days
    rows = _toy_fhs(early, sigma).stress_rows(110)
    assert 1 in rows and len(rows) >= 5


def test_a_median_proxy_is_the_rows_median_and_an_empty_row_is_no_proxy():
    from volmargin.risk.scenarios import proxied_returns
    values = np.array([[0.01, 0.02, 0.09, np.nan], [np.nan] * 4])
    filled, proxied = proxied_returns(values, ("a", "b", "c", "d"), "median")
    assert filled[0, 3] == pytest.approx(0.02) and np.isnan(filled[1]).all()
    np.testing.assert_array_equal(proxied, [[False, False, False, True], [False] * 4])


def test_the_ewma_filter_scales_to_the_horizon_by_the_square_root_of_time(garch_daily):
    from volmargin.risk.scenarios import ewma_panel
    one = ewma_panel({"a": garch_daily, "b": garch_daily}, horizon=1)
    two = ewma_panel({"a": garch_daily, "b": garch_daily}, horizon=2)
    ok = np.isfinite(one.sigma)
    assert ok.sum() > 1000
    np.testing.assert_allclose(two.sigma[ok], np.sqrt(2) * one.sigma[ok], rtol=1e-12)


def test_calibration_mpors_end_before_the_validation_start_and_the_fallback_reads_no_later_sigma():
    from volmargin.risk.job import model_panels
    from volmargin_serving.portfolio import PortfolioPolicy

    table = _forecasts()
    job = PortfolioJob(models=("ewma",), scenarios=ScenarioConfig(lookback=250, min_scenarios=50),
                       validation_start="2022-06-01", n_random=4, n_baskets=2, n_alts=2, n_candidates=40,
                       n_adversarial=5)
    mp = next(model_panels(table, None, job, progress=False))
    cal_dates = mp.bp.dates[mp.cal_rows]
    assert (cal_dates + pd.Timedelta(days=mp.fhs.panel.horizon) < mp.start).all()
    assert cal_dates.max() == mp.start - pd.Timedelta(days=2)  # the day before the start: its MPOR crosses it
    fhs = FHS(filter_panel(table, "ewma"), ScenarioConfig(lookback=250, min_scenarios=50))
    t = 500
    before = scenario_file(fhs, t, PortfolioPolicy(), "ewma").fallback_sigma
    fhs.panel.sigma[t + 1:] = 10.0  # a later forecast, however large, is not today's fallback
    np.testing.assert_array_equal(scenario_file(fhs, t, PortfolioPolicy(), "ewma").fallback_sigma, before)


def test_compare_divides_each_models_margin_by_the_references():
    """A model needing twice the reference's margin at equal coverage reads 2, never 0.5."""
    from volmargin.risk.job import compare

    summary = pd.DataFrame({"portfolio_class": ["random", "random", "random"], "model": ["ewma97", "gjr", "gbm"],
                            "avg_margin": [0.10, 0.05, 0.20], "breach_rate": [0.01, 0.02, 0.005]})
    got = compare(summary).set_index(["model", "reference"])
    assert got.loc[("gbm", "ewma97"), "margin_ratio"] == pytest.approx(2.0)
    assert got.loc[("gbm", "gjr"), "margin_ratio"] == pytest.approx(4.0)
    assert got.loc[("gbm", "gjr"), "reference_breach_rate"] == 0.02 and got.loc[("gbm", "gjr"), "breach_rate"] == 0.005


def test_the_models_are_compared_on_the_assets_every_one_forecasts():
    """An asset one model lacks leaves the job: each model's books hold the same assets."""
    from volmargin.risk.job import _panels

    table = _forecasts()
    table = table[~((table["model"] == "gjr") & (table["asset"] == ASSETS[0]))]
    panels = _panels(table, None, PortfolioJob(models=("ewma", "gjr")))
    assert [p.assets for p in panels] == [tuple(sorted(ASSETS[1:]))] * 2


def test_cli_portfolio_names_the_assets_of_data_that_the_run_lacks(forecasts, tmp_path, capsys):
    """Bars alone cannot bring an asset into the books (they are priced from the run's forecasts): an asset of
    --data that the run has no forecast of is named, not dropped in silence."""
    from volmargin.data.synthetic import write_synthetic_csv

    bars = tmp_path / "bars"
    for path, asset in zip(write_synthetic_csv(bars, n_assets=5, days=700), [*ASSETS, "extra_coin"]):
        path.rename(bars / f"{asset}_1h.csv.gz")
    args = _cli_run(forecasts, tmp_path)
    assert main([*args, "--out", str(tmp_path / "out"), "--models", "ewma", "--data", str(bars)]) == 0
    assert "--data: 1 asset(s) not in the run's forecasts, left out: extra_coin" in capsys.readouterr().out


@pytest.mark.parametrize("rows, row", [
    ("b,binance_btcusdt,1e6,big\nb,binance_ethusdt,-4e5,big\nc,binance_btcusdt,1e-320,tiny\n", 4),
    ("b,binance_btcusdt,1e6,big\nb,binance_ethusdt,-4e-5,big\n", 3),
    ("c,binance_btcusdt,1e-320,tiny\nc,binance_ethusdt,-4e-321,tiny\n", 2),
])
def test_read_population_refuses_notionals_too_small_to_price(tmp_path, rows, row):
    """Session 30's red team: a subnormal book beside a normal one priced at ~0 in float32 and "breached" on every
    loss day (the calibrated scale rose 1.22 -> 5.79). A nonzero notional below 1e-9 of the file's largest, or
    1e-12, is refused naming file and row; 0 stays a position of none."""
    spec = tmp_path / "books.csv"
    spec.write_text(HEADER + rows)
    with pytest.raises(DataError, match=re.escape(f"{spec}: row {row}: notional ") + ".* is below 1e-09 of the file"):
        pf.read_population(spec, ASSETS)
    spec.write_text(HEADER + "b,binance_btcusdt,1e6,big\nb,binance_ethusdt,0,big\nc,alt_a,1e-3,small\n")
    assert pf.read_population(spec, ASSETS).notional[1, 0] == 1e-3


def test_cli_portfolio_reads_a_spec_on_the_assets_every_model_covers(forecasts, tmp_path, capsys):
    """Session 30's red team: one model lacking an asset that a valid spec does not even hold made the job refuse
    it ("population and filter panel must share the same assets, in order", naming neither). The spec is read
    against the assets every model covers; one holding the missing asset is refused naming file, row, asset."""
    table = forecasts[~((forecasts["model"] == "gjr") & (forecasts["asset"] == "alt_a"))]
    spec = tmp_path / "books.csv"
    spec.write_text(HEADER + "b,binance_btcusdt,1e6,pair\nb,binance_ethusdt,-4e5,pair\n")
    args = [*_cli_run(table, tmp_path), "--out", str(tmp_path / "out"), "--portfolios", str(spec)]
    assert main(args) == 0
    assert set(pd.read_csv(tmp_path / "out" / "summary.csv")["model"]) == {"ewma", "gjr"}
    spec.write_text(HEADER + "b,binance_btcusdt,1e6,pair\nb,alt_a,-4e5,pair\n")
    assert main([*args[:-4], "--out", str(tmp_path / "out2"), "--portfolios", str(spec)]) == 2
    err = capsys.readouterr().err
    assert f"{spec}: row 3: asset 'alt_a' has no forecasts in the run from every model compared" in err, err


@pytest.mark.parametrize("policy", [
    PortfolioPolicy(scale=1.1, correlation_weight=0.1, buffer=0.25),
    PortfolioPolicy(scale=1.1, correlation_weight=0.1, buffer=0.25, max_up=0.05, max_down=0.02),
])
def test_serving_given_the_previous_rate_follows_the_library_margin_path(forecasts, policy):
    """Session 30's red team: the scale calibrated with the APC buffer / speed limits was served without them
    (the engine kept no path). Given each day's rate in force (`previous`, NaN on the first), one book and a
    batch reproduce the library's `margin_path` day by day; without it a policy with tools is a typed error."""
    fhs = _fhs(forecasts, lookback=300)
    pop = _population()
    days = np.arange(len(fhs.panel.origins) - 30, len(fhs.panel.origins))
    bp = pf.book_panel(fhs, pop, policy, days=days)
    assert bp.alive.all()
    library = pf.margin_path(bp, policy)
    assert (library > pf.margin_path(bp, dataclasses.replace(policy, buffer=None, max_up=None, max_down=None))).any()
    previous = np.full(len(pop.names), np.nan)
    k = int(np.flatnonzero(pop.classes == "random_ls")[0])
    for i, t in enumerate(days):
        engine = PortfolioEngine(scenario_file(fhs, t, policy, "ewma"), fhs.panel.sigma[t] ** 2)
        books = pf.dated_notional(pop, fhs.panel.realized, t, fhs.panel.horizon)
        served = engine.margin_batch(books, previous)
        np.testing.assert_allclose(served.initial, library[i], rtol=1e-6)
        one = engine.margin(names=[ASSETS[j] for j in np.flatnonzero(books[k])], notionals=books[k][books[k] != 0],
                            previous=previous[k])
        assert one.initial == pytest.approx(library[i, k], rel=1e-6)
        previous = served.rate
    with pytest.raises(BadPositionError, match="previous: the scenario file's policy has APC tools"):
        engine.margin_batch(books)
    with pytest.raises(BadPositionError, match="previous: a margin rate in force"):
        engine.margin(names=["alt_a"], notionals=[1e6], previous=-0.1)
    with pytest.raises(BadPositionError, match=r"previous: a margin rate in force is a number in \[0, 1\]"):
        engine.margin(names=["alt_a"], notionals=[1e6], previous=1.5)
    # session 30's second red team: an empty book's rate of 0, passed back, capped every later margin at 0
    first = engine.margin(names=["alt_a"], notionals=[1e6], previous=np.nan).initial
    assert first > 0 and engine.margin(names=["alt_a"], notionals=[1e6], previous=0.0).initial == pytest.approx(first)


def test_book_days_charged_in_full_for_a_missing_volume_do_not_count_as_covered(forecasts):
    """Session 30's red team: --data bars covering the assets unevenly (one asset without volumes for months)
    charged its positions in full through the add-on; counted as covered, those book-days lowered the calibrated
    scale (0.949 -> 0.743), under target once served with volumes. The calibration leaves them out: it is that of
    the same panel with those book-days not margined at all."""
    fhs = _fhs(forecasts)
    pop = _population()
    days = np.arange(300, len(fhs.panel.origins))
    adv = np.full((len(fhs.panel.origins), len(ASSETS)), 5e8)
    adv[300:500, ASSETS.index("binance_ethusdt")] = np.nan  # the bars of one asset start late
    policy = PortfolioPolicy(concentration=0.5)
    bp = pf.book_panel(fhs, pop, policy, adv, days, concentrations=(0.0, 0.5))
    rows = np.asarray(bp.dates < pd.Timestamp("2022-09-01", tz="UTC"))
    assert (bp.no_volume & bp.alive & rows[:, None]).sum() > 500
    got = pf.calibrate_books(bp, pop.classes, rows, policy, concentrations=(0.0, 0.5))
    left_out = dataclasses.replace(bp, alive=bp.alive & ~bp.no_volume)
    expected = pf.calibrate_books(left_out, pop.classes, rows, policy, concentrations=(0.0, 0.5))
    pd.testing.assert_frame_equal(got.table, expected.table)
    assert got.policy == expected.policy
    # without an add-on to choose, a missing volume costs nothing: every book-day counts as before
    fixed = pf.calibrate_books(bp, pop.classes, rows, PortfolioPolicy())
    assert fixed.policy == pf.calibrate_books(dataclasses.replace(bp, no_volume=None), pop.classes, rows,
                                              PortfolioPolicy()).policy


# session 30's second mutation audit (s30m2)
def test_a_zero_or_infinite_volume_is_no_volume_in_the_panel(forecasts):
    fhs = _fhs(forecasts)
    pop = _population()
    days = np.arange(300, 340)
    eth = ASSETS.index("binance_ethusdt")
    seen = {}
    for bad in (np.nan, 0.0, np.inf, 5e8):
        adv = np.full((len(fhs.panel.origins), len(ASSETS)), 5e8)
        adv[:, eth] = bad
        seen[bad] = pf.book_panel(fhs, pop, PortfolioPolicy(concentration=0.5), adv, days).no_volume
    assert seen[np.nan].any() and not seen[np.nan].all() and not seen[5e8].any()
    np.testing.assert_array_equal(seen[0.0], seen[np.nan])  # a zero volume: the add-on charges it in full
    np.testing.assert_array_equal(seen[np.inf], seen[np.nan])
