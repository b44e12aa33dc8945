"""The solvency study's figures, its calibration search, the bootstrap paths and the simulation settings, on
cases with known answers (from session 28's mutation audit: each test fails on a change the suite let through,
e.g. `meets_target` read at another quantile, a config key dropped, a bootstrap under-scaled or drawing past its
look-back, the haircut left out of a candidate's cost)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from volmargin.errors import ConfigError
from volmargin.simulation import PopulationConfig
from volmargin.simulation.paths import PathSet, bootstrap_paths
from volmargin.simulation.scenarios import SimulationSettings
from volmargin.simulation.solvency import AssetCase, SolvencyTarget, Terms


def _fake_panel(origins: pd.DatetimeIndex):
    return type("P", (), {"horizon": 1, "origins": origins, "columns": ["long", "short"]})()


# --- study.py ----------------------------------------------------------------------------------------------

def test_study_config_carries_every_simulation_key():
    from volmargin.config import SimulationSection
    from volmargin.simulation.study import study_config

    section = SimulationSection(
        model="gbm", validation_start="2022-03-01", accounts=321, accounts_file="book.csv", long_share=0.7,
        leverage_median=6.0, leverage_sigma=0.3, at_max_leverage=0.1, entry_window=3, bootstrap_paths=7, impact=0.4,
        open_interest=0.8, liquidation="partial", oracle_delay=2.0, oracle_cadence=3, insurance_fund=0.05,
        penalty=0.02, quantile=0.975, max_bad_debt_fund=0.05, every="MS", max_change=0.1, worst_period=None,
        infeasible_change=0.3, maintenance_fractions=(0.55, 0.8), max_liquidations=0.2, asset_collateral=0.25,
        haircut_factors=(0.0, 1.5), large_caps=("sol",), funding="funding.csv", seed=9)
    cfg = study_config(section, "2021-01-01", {"risk": "es975"}, "QS", default_model="har")
    s, t = cfg.settings, cfg.target
    assert (cfg.model, cfg.validation_start, cfg.breach_policy, cfg.recalibrate) == ("gbm", "2022-03-01",
                                                                                     {"risk": "es975"}, "QS")
    assert cfg.large_caps == ("sol",) and cfg.funding == "funding.csv"
    p = s.population
    assert (p.accounts, p.long_share, p.leverage_median, p.leverage_sigma, p.at_max_leverage, p.entry_window,
            p.asset_collateral, p.seed) == (321, 0.7, 6.0, 0.3, 0.1, 3, 0.25, 9)
    assert s.accounts_file == "book.csv"
    assert (s.engine.oracle_delay, s.engine.oracle_cadence, s.engine.liquidation, s.engine.insurance_fund) == (
        2.0, 3, "partial", 0.05)
    assert (s.impact, s.open_interest, s.penalty, s.bootstrap_paths, s.seed) == (0.4, 0.8, 0.02, 7, 9)
    assert (t.quantile, t.max_bad_debt_fund, t.every, t.max_change, t.worst_period, t.infeasible_change,
            t.maintenance_fractions, t.haircut_factors, t.max_liquidations) == (
        0.975, 0.05, "MS", 0.1, None, 0.3, (0.55, 0.8), (0.0, 1.5), 0.2)
    # defaults: the run's validation start and model, the default impact
    from volmargin.simulation.impact import DEFAULT_IMPACT

    plain = study_config(SimulationSection(), "2021-06-01", {}, default_model="har")
    assert (plain.model, plain.validation_start, plain.settings.impact) == ("har", "2021-06-01", DEFAULT_IMPACT)


def _summary_case(monkeypatch, values_by_day: dict[int, list[float]], kinds_by_day=None):
    """A case of 10 origin days whose paths carry their bad_debt_fund (and liquidated) in log_price[:, 1];
    `run_paths` is replaced by one that reads them back. Day d's initial margin is (d + 1) / 100 on both sides."""
    import volmargin.simulation.study as study

    origins = pd.date_range("2022-01-01", periods=10, tz="UTC")
    kind, day, value = [], [], []
    for d, values in values_by_day.items():
        for i, v in enumerate(values):
            kind.append((kinds_by_day or {}).get(d, ["replay", "bootstrap"])[i % 2])
            day.append(d)
            value.append(v)
    log_price = np.zeros((len(day), 25))
    log_price[:, 1] = value
    paths = PathSet("x", np.array(kind, dtype=object), np.array(day), origins, log_price)
    case = AssetCase("x", _fake_panel(origins), np.full(10, 1e-4), paths)
    initial = np.repeat(((np.arange(10) + 1) / 100)[:, None], 2, axis=1)
    terms = Terms(origins, initial, initial / 2, np.full(10, 0.01))

    def fake_run_paths(paths, initial, maintenance, penalty, variance, settings, accounts=None, haircut=None):
        v = paths.log_price[:, 1]
        return pd.DataFrame({"kind": paths.kind, "origin": paths.origins[paths.day], "bad_debt": v,
                             "bad_debt_fund": v, "liquidated": v, "fund_drawdown": v, "cascade": v, "move": v,
                             "unconverged": False})

    monkeypatch.setattr(study, "run_paths", fake_run_paths)
    return case, terms, origins


def test_summary_meets_target_at_the_target_quantile_and_inclusive(monkeypatch):
    from volmargin.simulation.study import StudyConfig, _summaries

    # validation (days 5..9): 100 paths, 3 of them lose half the fund: p95 = 0, p99 = 0.5
    values = {d: [0.0] * 20 for d in range(5, 10)}
    values[9][:3] = [0.5, 0.5, 0.5]
    values |= {d: [0.0] * 4 for d in range(5)}  # calibration: no bad debt at all
    case, terms, origins = _summary_case(monkeypatch, values)
    start = origins[5]

    def rows(**target):
        cfg = StudyConfig(target=SolvencyTarget(**target))
        return {(r["period"], r["kind"]): r for r in _summaries(case, "p", terms, cfg, start)}

    at99 = rows(quantile=0.99, max_bad_debt_fund=0.1)
    assert at99["validation", "all"]["bad_debt_fund_p95"] == 0.0 < 0.1 < at99["validation", "all"]["bad_debt_fund_p99"]
    assert not at99["validation", "all"]["meets_target"]  # the p99 is what must meet it, not the p95
    assert rows(quantile=0.95, max_bad_debt_fund=0.1)["validation", "all"]["meets_target"]
    assert rows(quantile=0.99, max_bad_debt_fund=0.5)["validation", "all"]["meets_target"]  # at the limit: met
    exact = rows(quantile=0.99, max_bad_debt_fund=0.0)
    assert exact["calibration", "all"]["meets_target"]  # a zero target met by zero bad debt
    assert not exact["validation", "all"]["meets_target"]


def test_summary_periods_split_at_the_validation_start_and_average_their_own_days(monkeypatch):
    from volmargin.simulation.study import StudyConfig, _summaries

    values = {d: [0.0, 0.0] for d in range(10)}  # one replay and one bootstrap path a day ...
    values[2] = [0.0]  # ... but only a replay on day 2
    values[7] = [0.0]
    case, terms, origins = _summary_case(monkeypatch, values)
    start = origins[5]  # day 5 is the first validation day
    got = {(r["period"], r["kind"]): r for r in _summaries(case, "p", terms, StudyConfig(), start)}
    assert got["calibration", "all"]["paths"] == 9 and got["validation", "all"]["paths"] == 9
    assert got["calibration", "bootstrap"]["paths"] == 4 and got["validation", "replay"]["paths"] == 5
    # day d's margin is (d + 1) / 100: each row averages the days of its own paths only
    assert got["calibration", "all"]["avg_margin"] == pytest.approx(np.mean([1, 2, 3, 4, 5]) / 100)
    assert got["validation", "all"]["avg_margin"] == pytest.approx(np.mean([6, 7, 8, 9, 10]) / 100)
    assert got["calibration", "bootstrap"]["avg_margin"] == pytest.approx(np.mean([1, 2, 4, 5]) / 100)
    assert got["validation", "bootstrap"]["avg_margin"] == pytest.approx(np.mean([6, 7, 9, 10]) / 100)


def test_stress_reports_the_cascade_free_bad_debt_and_the_out_of_sample_flag(monkeypatch):
    import volmargin.simulation.study as study
    from volmargin.simulation.scenarios import run_paths
    from volmargin.simulation.study import StudyConfig

    origins = pd.date_range("2022-01-01", periods=10, tz="UTC")
    case = AssetCase("x", _fake_panel(origins), np.full(10, 0.03**2), PathSet(
        "x", np.array([], dtype=object), np.array([], dtype=int), origins, np.zeros((0, 25))))
    crash = np.r_[0.0, np.linspace(-0.2, -0.4, 24)]  # a gap of 18% and a slide to 33% down
    eves = pd.DatetimeIndex([origins[2], origins[5], origins[7]])
    events = PathSet("x", np.array(["a", "b", "c"], dtype=object), np.arange(3), eves, np.vstack([crash] * 3))
    monkeypatch.setattr(study, "event_paths", lambda asset, bars: events)
    initial = np.tile([0.1, 0.12], (10, 1))
    terms = Terms(origins, initial, initial / 2, np.full(10, 0.01))
    settings = SimulationSettings(population=PopulationConfig(accounts=300, seed=0), impact=1.0, open_interest=2.0)
    cfg = StudyConfig(settings=settings)
    table = study._stress(case, None, "p", terms, cfg, origins[5])
    assert table["out_of_sample"].tolist() == [False, True, True]  # an eve on the validation start is out of sample
    assert table["eve"].tolist() == list(eves)
    assert table["initial_long"].tolist() == [0.1] * 3 and table["initial_short"].tolist() == [0.12] * 3
    args = (initial[[2, 5, 7]], initial[[2, 5, 7]] / 2, np.full(3, 0.01), np.full(3, 0.03**2))
    ev = PathSet("x", events.kind, np.arange(3), eves, events.log_price)
    fed = run_paths(ev, *args, settings)
    free = run_paths(ev, *args, dataclasses.replace(settings, impact=0.0))
    np.testing.assert_allclose(table["bad_debt"], fed["bad_debt"])
    np.testing.assert_allclose(table["cascade_free_bad_debt"], free["bad_debt"])
    assert (fed["bad_debt"] > free["bad_debt"]).all() and (free["bad_debt"] > 0).all()  # the feedback matters here


def test_headline_is_the_out_of_sample_pooled_rows():
    from volmargin.simulation.study import SUMMARY_COLUMNS, StudyResult, headline

    rows = [{c: 0.0 for c in SUMMARY_COLUMNS} | {"asset": "a", "policy": "solvency", "period": period, "kind": kind,
                                                 "paths": n, "meets_target": True}
            for n, (period, kind) in enumerate([(p, k) for p in ("calibration", "validation")
                                                for k in ("all", "replay", "bootstrap")])]
    table = headline(StudyResult(pd.DataFrame(rows, columns=SUMMARY_COLUMNS), pd.DataFrame(), pd.DataFrame()), 0.01)
    assert table["paths"].tolist() == [3]  # validation, all path kinds


# --- solvency.py -------------------------------------------------------------------------------------------

def test_bisect_flags_a_band_that_limits_the_scale():
    from volmargin.simulation.solvency import _bisect

    target = SolvencyTarget(max_bad_debt_fund=0.01, scale_bounds=(0.1, 10.0))
    never = lambda s: (1.0, 0.0)  # noqa: E731  insolvent at every scale: the band's top, limited
    assert _bisect(never, 0.5, 2.0, target) == (2.0, (1.0, 0.0), True)
    always = lambda s: (0.0, 0.0)  # noqa: E731  solvent already at the bottom
    assert _bisect(always, 0.1, 2.0, target) == (0.1, (0.0, 0.0), False)  # the global floor: not limited
    assert _bisect(always, 0.5, 2.0, target) == (0.5, (0.0, 0.0), True)  # a speed-limit floor limited it
    ramp = lambda s: (0.0 if s >= 1.0 else 1.0, 0.0)  # noqa: E731
    scale, _, limited = _bisect(ramp, 0.5, 2.0, target)
    assert 1.0 <= scale <= 1.0 * (1 + target.tolerance) and not limited


def test_static_multiplier_stops_at_an_initial_margin_of_100_percent(monkeypatch):
    import volmargin.simulation.solvency as solvency

    origins = pd.date_range("2021-01-01", periods=60, tz="UTC")
    paths = PathSet("x", np.full(60, "replay", dtype=object), np.arange(60), origins, np.zeros((60, 25)))
    monkeypatch.setattr(solvency, "_evaluate_margin", lambda *a, **k: (1.0, 0.0))  # never solvent
    target = SolvencyTarget(window_days=30, scale_bounds=(0.1, 50.0))
    for asset, top in (("sol", 10.0), ("btc", 20.0)):  # 1 / 10% and 1 / 5%
        case = AssetCase(asset, _fake_panel(origins), np.ones(60), dataclasses.replace(paths, asset=asset))
        row = solvency.calibrate_static(case, ("btc",), SimulationSettings(population=PopulationConfig(accounts=10)),
                                        target, "2021-02-15")
        assert row["scale"] == pytest.approx(top) and row["limited"] and not row["feasible"]


def test_candidate_cost_counts_the_haircut(market_bars_small):
    from volmargin.calibration import PolicyConfig
    from volmargin.simulation.solvency import calibration_window, rule_margin, search_candidates
    from volmargin.simulation.study import StudyConfig, asset_case

    forecasts, bars = market_bars_small
    forecasts = forecasts.assign(var99_short=1.5 * forecasts["var99_short"])  # sides differ: the long one is costed
    settings = SimulationSettings(population=PopulationConfig(accounts=100, seed=0, asset_collateral=0.5),
                                  bootstrap_paths=1)
    rule = PolicyConfig()
    case = asset_case(forecasts, bars, "syn_a", StudyConfig(model="rv20", settings=settings), rule)
    target = SolvencyTarget(maintenance_fractions=(0.6,), haircut_factors=(0.0, 2.0), window_days=60,
                            max_liquidations=None)
    paths = calibration_window(case, pd.Timestamp("2021-10-01", tz="UTC"), target)
    accounts = settings.accounts()
    share = float(np.mean(accounts.asset_collateral))
    table = search_candidates(case, rule, paths, settings, accounts, target)
    for _, row in table.iterrows():
        im = rule_margin(case, rule, row["scale"])[np.unique(paths.day)]
        assert np.nanmean(im[:, 1]) > 1.2 * np.nanmean(im[:, 0])
        want = np.nanmean(im) + row["haircut_factor"] * share * np.nanmean(im[:, 0])
        assert row["cost"] == pytest.approx(want), row["haircut_factor"]
    assert table.loc[table["haircut_factor"] == 2.0, "cost"].iloc[0] > np.nanmean(
        rule_margin(case, rule, table.loc[table["haircut_factor"] == 2.0, "scale"].iloc[0])[np.unique(paths.day)])


@pytest.fixture(scope="module")
def market_bars_small():
    from test_simulation import simple_forecasts

    from volmargin.data import synthetic_market

    bars = synthetic_market(n_assets=1, days=330, seed=4)
    return simple_forecasts(bars), bars["syn_a"]


@pytest.mark.parametrize("key", ["quantile", "liquidations_quantile"])
def test_target_quantiles_lie_in_half_to_one(key):
    SolvencyTarget(**{key: 0.5})
    for bad in (1.0, 0.49, 1.5):
        with pytest.raises(ConfigError, match=key):
            SolvencyTarget(**{key: bad})


def test_evaluate_takes_each_figure_at_its_own_level(monkeypatch):
    import volmargin.simulation.solvency as solvency
    from volmargin.simulation.solvency import Candidate, _evaluate_margin

    origins = pd.date_range("2021-01-01", periods=101, tz="UTC")
    paths = PathSet("x", np.full(101, "replay", dtype=object), np.arange(101), origins, np.zeros((101, 25)))
    case = AssetCase("x", _fake_panel(origins), np.ones(101), paths)
    ramp = np.linspace(0, 1, 101)
    monkeypatch.setattr(solvency, "run_paths", lambda paths, *a, **k: pd.DataFrame(
        {"origin": paths.origins[paths.day], "bad_debt_fund": ramp, "liquidated": 2 * ramp}))
    im = np.full((101, 2), 0.1)
    for q, lq in ((0.99, 0.95), (0.9, 0.8)):
        target = SolvencyTarget(quantile=q, liquidations_quantile=lq, worst_period=None)
        figures = _evaluate_margin(case, im, paths, Candidate(0.5, 0.01, 1.0), SimulationSettings(
            population=PopulationConfig(accounts=10)), None, target)
        assert figures == pytest.approx((q, 2 * lq))


# --- paths.py ----------------------------------------------------------------------------------------------

def _bars(returns: np.ndarray) -> pd.DataFrame:
    index = pd.date_range("2021-01-01", periods=len(returns), freq="h", tz="UTC")
    close = np.exp(np.cumsum(returns))
    return pd.DataFrame({"open": close, "high": close, "low": close, "close": close, "volume": 1.0}, index=index)


def test_bootstrap_of_a_steady_trend_is_the_forecast_sigma_per_hour():
    # every hour moves +0.1%: every standardised return is exactly 1, so every path climbs sqrt(v / 24) an hour
    bars = _bars(np.full(24 * 120, 0.001))
    variance = 0.04**2
    paths = bootstrap_paths("x", bars, pd.DatetimeIndex(["2021-03-15"], tz="UTC"), [variance], 50, seed=3)
    assert len(paths) == 50
    np.testing.assert_allclose(paths.log_price, np.tile(np.arange(25) * np.sqrt(variance / 24), (50, 1)), rtol=1e-9)


def test_bootstrap_draws_only_from_the_lookback_days():
    # 250 days of a steady rise, then alternating hours (+r, -r): the same |return| throughout, so standardised
    # returns are exactly +1 and then +-1; a 6-hour block of the alternation sums to 0
    days = 301
    ret = np.full(24 * days, 0.001)
    ret[24 * 250:] *= np.where(np.arange(24 * (days - 250)) % 2, -1.0, 1.0)
    origin = pd.DatetimeIndex(["2021-10-27"], tz="UTC")  # day 299 of the bars, which end with day 300
    paths = bootstrap_paths("x", _bars(ret), origin, [0.03**2], 200, lookback_days=40, seed=1)
    sigma = 0.03 / np.sqrt(24)
    assert len(paths) == 200
    np.testing.assert_allclose(paths.log_price[:, -1], 0.0, atol=1e-12)  # no block from the rise
    assert np.abs(paths.log_price).max() <= sigma * (1 + 1e-9)
    wide = bootstrap_paths("x", _bars(ret), origin, [0.03**2], 200, lookback_days=730, seed=1)
    assert np.abs(wide.log_price[:, -1]).max() > 3 * sigma  # the rise is drawn from when the lookback covers it


def test_bootstrap_needs_30_days_of_history():
    bars = _bars(np.random.default_rng(0).normal(0, 0.01, 24 * 80))
    origins = pd.date_range("2021-01-01", periods=70, tz="UTC")
    paths = bootstrap_paths("x", bars, origins, np.full(70, 0.03**2), 1)
    kept = np.unique(paths.day)
    assert 30 <= kept.min() <= 32  # no origin with under 30 days of bars before its close; every later one
    assert kept.tolist() == list(range(kept.min(), 70))


# --- scenarios.py ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, bad, good", [
    ("penalty", -0.01, 0.0), ("penalty", 1.0, 0.99), ("impact", -0.1, 0.0), ("open_interest", 0.0, 0.01),
    ("bootstrap_paths", -1, 0), ("block_hours", 0, 1), ("block_hours", 25, 24), ("lookback_days", 29, 30),
    ("chunk", 0, 1)])
def test_simulation_settings_refuse_out_of_range_values(key, bad, good):
    SimulationSettings(**{key: good})
    with pytest.raises(ConfigError, match=rf"simulation\.{key}: invalid value"):
        SimulationSettings(**{key: bad})


def test_worst_quantile_counts_a_period_with_exactly_enough_paths():
    from volmargin.simulation.solvency import worst_quantile

    calm = pd.Series(np.zeros(300), index=pd.date_range("2021-01-01", periods=300, freq="6h", tz="UTC"))
    stressed = pd.Series(np.r_[np.zeros(98), np.ones(2)],  # exactly 1 / (1 - 0.99) = 100 paths in Q2
                         index=pd.date_range("2021-04-01", periods=100, freq="12h", tz="UTC"))
    values = pd.concat([calm, stressed])
    assert worst_quantile(values, 0.99, None) == 0.0 and worst_quantile(values, 0.99, "QS") == 1.0


def test_breach_terms_take_the_policy_maintenance_fraction_and_each_side():
    from volmargin.calibration import PolicyConfig
    from volmargin.simulation.solvency import breach_terms

    origins = pd.date_range("2022-01-01", periods=3, tz="UTC")
    case = AssetCase("a", _fake_panel(origins), np.ones(3), None)
    paths = pd.DataFrame({"asset": ["a", "a", "a", "a", "b"], "origin": origins[[0, 0, 2, 2, 0]],
                          "side": ["long", "short", "long", "short", "long"],
                          "initial_margin": [0.1, 0.2, 0.3, 0.4, 9.0]})
    terms = breach_terms(paths, case, PolicyConfig(maintenance_fraction=0.6), 0.02)
    np.testing.assert_allclose(terms.initial, [[0.1, 0.2], [np.nan, np.nan], [0.3, 0.4]])
    np.testing.assert_allclose(terms.maintenance, 0.6 * terms.initial)
    np.testing.assert_allclose(terms.penalty, 0.02)


def test_bootstrap_leaves_out_origins_without_a_positive_variance():
    bars = _bars(np.random.default_rng(0).normal(0, 0.01, 24 * 80))
    origins = pd.date_range("2021-02-10", periods=4, tz="UTC")
    paths = bootstrap_paths("x", bars, origins, [0.0, 0.03**2, np.nan, -1e-4], 2)
    assert paths.day.tolist() == [1, 1]


@pytest.mark.parametrize("extra, message", [
    (["--policy", "nosuch=1"], "--policy: unknown key 'nosuch'"),
    (["--policy", "stressed_floor=true,floor_min_obs=1000"], "policy.floor_min_obs: 1000 is more than"),
    (["--set", "every=0D"], "every: '0D' does not move forward"),
    (["--set", "every=-1D"], "every: '-1D' does not move forward"),
])
def test_simulate_refuses_a_policy_or_frequency_it_cannot_use_in_one_line(tmp_path, capsys, extra, message):
    """Session 29's red team: internal errors (TypeError, ValueError, ZeroDivisionError), or -1D recalibrating
    once in silence."""
    from volmargin.cli import main

    run = tmp_path / "run"
    run.mkdir()
    assert main(["simulate", "--run", str(run), "--out", str(tmp_path / "s"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
