"""The liquidation simulator on cases with known answers, its ledger, and its inputs."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from volmargin.errors import ConfigError, DataError
from volmargin.simulation import (Accounts, EngineConfig, MarginTerms, Market, PopulationConfig, SquareRootImpact,
                                  draw_accounts, read_accounts, simulate)

NO_IMPACT = SquareRootImpact(0.0)


def one(side: float, notional: float = 1000.0, leverage: float = 10.0, entry: int = 0) -> Accounts:
    return Accounts(np.array([side]), np.array([notional]), np.array([leverage]), np.array([entry]))


def market(log_price, volume=1e6, sigma=0.01, funding=None) -> Market:
    log_price = np.atleast_2d(np.asarray(log_price, dtype=float))
    return Market(log_price, volume, sigma, funding)


def crash_paths(paths: int = 50, steps: int = 24, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    moves = rng.normal(-0.004, 0.02, (paths, steps))
    moves[:, 5] -= 0.08  # a crash hour on every path
    return np.hstack([np.zeros((paths, 1)), np.cumsum(moves, axis=1)])


def population(n: int = 2000, seed: int = 0, entry_window: int = 1) -> Accounts:
    return draw_accounts(PopulationConfig(accounts=n, seed=seed, entry_window=entry_window), open_interest=5e6)


def test_no_move_no_liquidation():
    flat = market(np.zeros((3, 25)))
    result = simulate(population(), flat, MarginTerms.constant(0.1, 0.05, 0.01, 3), SquareRootImpact(1.0))
    assert result.liquidated.sum() == 0 and result.bad_debt.sum() == 0 and result.penalties.sum() == 0
    np.testing.assert_allclose(result.fund[:, -1], result.fund_start)
    np.testing.assert_allclose(result.log_price, 0.0)


@pytest.mark.parametrize("side, price, shortfall", [(1.0, 0.8, 1000 * (0.9 - 0.8)), (-1.0, 1.25, 1000 * (1.25 - 1.1))])
def test_gap_past_maintenance_bad_debt_is_the_shortfall(side, price, shortfall):
    # 10x leverage: collateral 100 on 1000 notional; bankruptcy at 0.9 (long) / 1.1 (short)
    path = market([[0.0, np.log(price), np.log(price)]])
    result = simulate(one(side), path, MarginTerms.constant(0.1, 0.05, 0.01), NO_IMPACT)
    assert result.liquidations.sum() == 1
    assert result.bad_debt.sum() == pytest.approx(shortfall)
    assert result.bad_debt[0, 0] == pytest.approx(shortfall)  # in the step of the gap
    assert result.penalties.sum() == 0  # nothing left to pay a penalty from
    assert result.fund[0, -1] == pytest.approx(result.fund_start[0] - shortfall)


def test_liquidation_above_bankruptcy_pays_penalty_and_returns_the_rest():
    # long 10x, maintenance 5%: liquidation price 0.9 / 0.95 = 0.947; at 0.94 the equity is 40 on 940 notional
    result = simulate(one(1.0), market([[0.0, np.log(0.94)]]), MarginTerms.constant(0.1, 0.05, 0.01), NO_IMPACT)
    assert result.bad_debt.sum() == 0
    assert result.penalties.sum() == pytest.approx(0.01 * 940)
    assert result.account_cash[0] == pytest.approx(40 - 9.4)


def test_initial_margin_caps_leverage():
    # wants 50x, the venue allows 1 / 0.2 = 5x: a 15% fall does not reach its bankruptcy price 0.8
    result = simulate(one(1.0, leverage=50.0), market([[0.0, np.log(0.85)]]), MarginTerms.constant(0.2, 0.1, 0.0),
                      NO_IMPACT)
    assert result.deposits[0] == pytest.approx(200.0)
    assert result.liquidations.sum() == 1 and result.bad_debt.sum() == 0


def in_asset(side: float, notional: float = 1000.0, leverage: float = 5.0) -> Accounts:
    return Accounts(np.array([side]), np.array([notional]), np.array([leverage]), np.array([0]), np.array([True]))


def test_asset_collateral_is_haircut_and_falls_with_a_long():
    # long 1000 at 5x on 200 of collateral in the asset (200 units at price 1), IM 10%, MM 5%, haircut 20%:
    # margin equity -1000 + (1000 + 0.8 x 200) O < 0.05 x 1000 O  <=>  O < 1000 / 1110 = 0.9009
    terms = MarginTerms.constant(0.1, 0.05, 0.0).with_haircut(0.2)
    held = simulate(in_asset(1.0), market([[0.0, np.log(0.905)]]), terms, NO_IMPACT)
    assert held.liquidations.sum() == 0 and held.collateral_deposited[0] == pytest.approx(200.0)
    cash = simulate(one(1.0, leverage=5.0), market([[0.0, np.log(0.8)]]), terms, NO_IMPACT)
    assert cash.bad_debt.sum() == 0  # cash collateral: bankruptcy at 0.8 exactly
    gap = simulate(in_asset(1.0), market([[0.0, np.log(0.8)]]), terms, NO_IMPACT)
    # the collateral fell too: equity -1000 + 1200 x 0.8 = -40, the bad debt
    assert gap.liquidations.sum() == 1 and gap.bad_debt.sum() == pytest.approx(40.0)
    assert gap.account_collateral[0] == 0 and gap.market_qty[0] == pytest.approx(200.0)  # the market bought it


def test_haircut_caps_leverage_and_collateral_hedges_a_short():
    # wants 10x at IM 10%: in the asset with a 20% haircut the venue allows (1 - 0.2) / 0.1 = 8x
    terms = MarginTerms.constant(0.1, 0.05, 0.0).with_haircut(0.2)
    capped = simulate(in_asset(1.0, leverage=10.0), market([[0.0, 0.0]]), terms, NO_IMPACT)
    assert capped.collateral_deposited[0] == pytest.approx(1000 / 8)
    # a short of 1000 on 1000 of collateral in the asset is hedged: no rise liquidates it
    hedged = simulate(in_asset(-1.0, leverage=1.0), market([[0.0, np.log(3.0)]]), terms, NO_IMPACT)
    assert hedged.liquidations.sum() == 0 and hedged.open_equity[0] == pytest.approx(1000.0)


def test_money_and_units_are_conserved_with_asset_collateral():
    accounts = draw_accounts(PopulationConfig(accounts=1500, seed=2, asset_collateral=0.3, entry_window=6), 5e6)
    assert 0.2 < accounts.asset_collateral.mean() < 0.4
    result = simulate(accounts, market(crash_paths(20), volume=1e6, sigma=0.02),
                      MarginTerms(np.array([[0.08, 0.1]]), np.array([[0.04, 0.06]]), 0.01, np.full(20, 0.1)),
                      SquareRootImpact(0.8), EngineConfig(liquidation="partial", max_rounds=50))
    assert result.bad_debt.sum() > 0
    np.testing.assert_allclose(result.account_cash + result.fund[:, -1] + result.market_cash,
                               result.deposits + result.fund_start, rtol=1e-10)
    np.testing.assert_allclose(result.account_qty + result.account_collateral + result.market_qty,
                               result.collateral_deposited, atol=1e-6)


def test_zero_impact_no_cascade():
    accounts, paths = population(), market(crash_paths(), volume=2e6, sigma=0.02)
    terms = MarginTerms.constant(0.1, 0.05, 0.01, 50)
    calm = simulate(accounts, paths, terms, NO_IMPACT)
    assert calm.liquidated.sum() > 0  # liquidations happen ...
    np.testing.assert_array_equal(calm.impact, 0.0)  # ... but never move the price
    np.testing.assert_allclose(calm.log_price, paths.log_price)
    assert calm.rounds.max() == 1  # and never trigger a second round
    cascading = simulate(accounts, paths, terms, SquareRootImpact(1.0))
    assert cascading.rounds.max() > 1 and cascading.impact.min() < 0
    assert cascading.liquidated.sum() > calm.liquidated.sum()
    assert cascading.bad_debt.sum() >= calm.bad_debt.sum()


@pytest.mark.parametrize("mode", ["full", "partial"])
def test_money_is_conserved(mode):
    paths = crash_paths(20)
    rng = np.random.default_rng(5)
    funding = rng.normal(0, 3e-4, (20, 24))
    accounts = population(1500, seed=3, entry_window=12)
    result = simulate(accounts, market(paths, volume=1e6, sigma=0.02, funding=funding),
                      MarginTerms(np.array([[0.08, 0.1]]), np.array([[0.04, 0.06]]), 0.015), SquareRootImpact(0.8),
                      EngineConfig(liquidation=mode, oracle_delay=0.5, max_rounds=50))
    assert result.liquidated.sum() > 0 and result.bad_debt.sum() > 0
    before = result.deposits + result.fund_start
    after = result.account_cash + result.fund[:, -1] + result.market_cash
    np.testing.assert_allclose(after, before, rtol=1e-10)
    np.testing.assert_allclose(result.account_qty + result.market_qty, 0.0, atol=1e-6)
    assert not result.unconverged.any()


def test_partial_liquidation_restores_initial_margin():
    # long 10x at IM 10% / MM 5%, penalty 0: at 0.94 equity 40 on 940 notional (4.26%) -> close just enough
    # that the rest holds 10% again: 40 >= 0.1 x (1 - f) x 940  ->  f = 1 - 40 / 94
    result = simulate(one(1.0), market([[0.0, np.log(0.94)]]), MarginTerms.constant(0.1, 0.05, 0.0), NO_IMPACT,
                      EngineConfig(liquidation="partial"))
    assert result.liquidated.sum() == pytest.approx((1 - 40 / 94) * 940)
    assert result.open_equity[0] == pytest.approx(40.0)
    assert result.bad_debt.sum() == 0


def test_oracle_delay_liquidates_a_step_late():
    path = market([[0.0, np.log(0.8), np.log(0.8), np.log(0.8)]])
    terms = MarginTerms.constant(0.1, 0.05, 0.0)
    late = simulate(one(1.0), path, terms, NO_IMPACT, EngineConfig(oracle_delay=1))
    assert late.liquidations[0].tolist() == [0, 1, 0]
    slow = simulate(one(1.0), path, terms, NO_IMPACT, EngineConfig(oracle_cadence=2))
    assert slow.liquidations[0].tolist() == [0, 1, 0]


def test_determinism_with_a_seed():
    paths = market(crash_paths(10), volume=1e6, sigma=0.02)
    terms = MarginTerms.constant(0.1, 0.05, 0.01, 10)
    first = simulate(population(seed=7), paths, terms, SquareRootImpact(1.0))
    again = simulate(population(seed=7), paths, terms, SquareRootImpact(1.0))
    other = simulate(population(seed=8), paths, terms, SquareRootImpact(1.0))
    np.testing.assert_array_equal(first.bad_debt, again.bad_debt)
    np.testing.assert_array_equal(first.log_price, again.log_price)
    assert not np.array_equal(first.liquidated, other.liquidated)


def test_bad_terms_and_inputs_are_refused():
    with pytest.raises(ConfigError, match="maintenance < initial"):
        simulate(one(1.0), market([[0.0, 0.0]]), MarginTerms.constant(0.05, 0.05, 0.0), NO_IMPACT)
    with pytest.raises(ConfigError, match="log_price"):
        simulate(one(1.0), market([[0.1, 0.0]]), MarginTerms.constant(0.1, 0.05, 0.0), NO_IMPACT)
    with pytest.raises(ConfigError, match="liquidation"):
        EngineConfig(liquidation="some")
    with pytest.raises(ConfigError, match="volume"):
        simulate(one(1.0), market([[0.0, 0.0]], volume=0.0), MarginTerms.constant(0.1, 0.05, 0.0), SquareRootImpact(1.0))


def test_read_accounts(tmp_path):
    good = tmp_path / "accounts.csv"
    good.write_text("side,notional,leverage,entry_step\nlong,100,5,0\nshort,50,20,3\n")
    accounts = read_accounts(good)
    assert accounts.side.tolist() == [1.0, -1.0] and accounts.entry_step.tolist() == [0, 3]
    bad = tmp_path / "bad.csv"
    bad.write_text("side,notional,leverage\nlong,100,5\nshort,-3,2\n")
    with pytest.raises(DataError, match=r"bad.csv: row 3: notional = '-3'"):
        read_accounts(bad)
    bad.write_text("side,notional,leverage\nsideways,100,5\n")
    with pytest.raises(DataError, match=r"row 2: side"):
        read_accounts(bad)
    bad.write_text("side,notional\nlong,100\n")
    with pytest.raises(DataError, match="missing columns"):
        read_accounts(bad)


# --- paths, solvency calibration, command and stage ---------------------------------------------------------

import pandas as pd  # noqa: E402

from volmargin.calibration import PolicyConfig  # noqa: E402
from volmargin.cli import main  # noqa: E402
from volmargin.data import synthetic_market  # noqa: E402
from volmargin.data.synthetic import write_synthetic_csv  # noqa: E402
from volmargin.evaluation.backtest import daily_panel  # noqa: E402
from volmargin.simulation.paths import bootstrap_paths, event_paths, replay_paths  # noqa: E402
from volmargin.simulation.scenarios import SimulationSettings  # noqa: E402
from volmargin.simulation.solvency import SolvencyTarget, calibrate_solvency, solvency_terms  # noqa: E402
from volmargin.simulation.study import SUMMARY_COLUMNS, StudyConfig, asset_case  # noqa: E402


@pytest.fixture(scope="module")
def market_bars() -> dict[str, pd.DataFrame]:
    return synthetic_market(n_assets=2, days=600, seed=4)


def simple_forecasts(bars: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """A causal 20-day realised-variance forecast with normal VaR, in the backtest's table layout."""
    frames = []
    for asset, daily in daily_panel(bars).items():
        variance = daily["rv"].rolling(20).mean()
        vol = np.sqrt(variance)
        frames.append(pd.DataFrame({
            "asset": asset, "model": "rv20", "origin": daily.index, "date": daily.index + pd.Timedelta(days=1),
            "horizon": 1, "variance": variance.to_numpy(), "var99_long": 2.326 * vol, "var99_short": 2.326 * vol,
            "realized_ret": daily["ret"].shift(-1).to_numpy(), "realized_rv": daily["rv"].shift(-1).to_numpy()}))
    table = pd.concat(frames, ignore_index=True)
    return table[table["variance"].notna()].reset_index(drop=True)


def test_replay_is_the_real_path_and_skips_gaps(market_bars):
    bars = market_bars["syn_a"]
    origins = pd.DatetimeIndex(["2021-03-01", "2021-03-02"], tz="UTC")
    paths = replay_paths("syn_a", bars, origins)
    closes = np.log(bars["close"])
    start = closes.index.get_loc(pd.Timestamp("2021-03-01 23:00", tz="UTC"))
    np.testing.assert_allclose(paths.log_price[0], closes.iloc[start:start + 25].to_numpy() - closes.iloc[start])
    gapped = bars.drop(pd.Timestamp("2021-03-02 05:00", tz="UTC"))
    assert replay_paths("syn_a", gapped, origins).day.tolist() == [1]


def test_bootstrap_reads_only_the_past_and_takes_the_forecast_scale(market_bars):
    bars = market_bars["syn_a"]
    origins = pd.DatetimeIndex(["2021-09-01"], tz="UTC")
    paths = bootstrap_paths("syn_a", bars, origins, [0.03**2], 4000, seed=1)
    corrupt = bars.copy()
    after = corrupt.index > pd.Timestamp("2021-09-01 23:00", tz="UTC")
    corrupt.loc[after, ["open", "high", "low", "close"]] *= np.linspace(1, 5, after.sum())[:, None]
    again = bootstrap_paths("syn_a", corrupt, origins, [0.03**2], 4000, seed=1)
    np.testing.assert_array_equal(paths.log_price, again.log_price)
    assert np.std(paths.log_price[:, -1]) == pytest.approx(0.03, rel=0.2)


def test_event_paths_start_on_the_eve(market_bars):
    events = event_paths("syn_a", market_bars["syn_a"], {"test": ("2021-05-19", "2021-05-20"), "late": ("2030-01-01", "2030-01-01")})
    assert events.kind.tolist() == ["test"] and events.log_price.shape == (1, 49)
    assert events.origins[0] == pd.Timestamp("2021-05-18", tz="UTC")


SMALL = SimulationSettings(population=PopulationConfig(accounts=200, seed=0), bootstrap_paths=2)


def test_solvency_calibration_respects_the_speed_limit_and_the_target(market_bars):
    forecasts = simple_forecasts(market_bars)
    rule = PolicyConfig()
    case = asset_case(forecasts, market_bars["syn_a"], "syn_a", StudyConfig(model="rv20", settings=SMALL), rule)
    strict = SolvencyTarget(max_bad_debt_fund=0.0, maintenance_fractions=(0.6,), every="QS", max_change=0.05,
                            window_days=120)
    table = calibrate_solvency(case, rule, SMALL, strict, "2021-10-01")
    assert len(table) >= 3
    steps = table["scale"].to_numpy()[1:] / table["scale"].to_numpy()[:-1]
    assert np.all(np.abs(steps - 1) <= 0.05 + 1e-9)
    assert table.loc[table["feasible"], "calibration_bad_debt_fund"].le(0.0).all()
    loose = calibrate_solvency(case, rule, SMALL, SolvencyTarget(max_bad_debt_fund=5.0, maintenance_fractions=(0.6,),
                                                               window_days=120), "2021-10-01")
    assert loose["scale"].iloc[0] <= table["scale"].iloc[0]


def test_simulate_command_writes_the_summary(market_bars, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    simple_forecasts(market_bars).to_parquet(run / "forecasts.parquet")
    files = write_synthetic_csv(tmp_path / "bars", n_assets=2, days=600, seed=4)
    out = tmp_path / "sim"
    argv = ["simulate", "--run", str(run), "--data", *map(str, files), "--out", str(out),
            "--set", "accounts=150,bootstrap_paths=1,every=YS,validation_start=2021-10-01"]
    assert main(argv) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary.columns) == SUMMARY_COLUMNS
    assert set(summary["policy"]) == {"breach", "breach_plain", "solvency", "static", "static_solvent"} and set(summary["asset"]) == {"syn_a", "syn_b"}
    assert summary[["bad_debt_p95", "bad_debt_p99", "liquidations_p95", "avg_margin"]].notna().all().all()
    assert (out / "stress.csv").is_file() and (out / "solvency.csv").is_file()
    assert (out / ".volmargin-output").is_file()  # written as one staged folder
    assert main([*argv[:-1], "accounts=0"]) == 2
    assert "--set.accounts: invalid value 0" in capsys.readouterr().err  # at load, named as written
    assert main([*argv[:-1], "acounts=5"]) == 2
    assert "--set.acounts: unknown key" in capsys.readouterr().err
    # session 25's recheck: an infinite oracle delay gave no bad debt at all, 2e6 accounts no end
    assert main([*argv[:-1], "accounts=150,oracle_delay=.inf"]) == 2
    assert "--set.oracle_delay: invalid value inf (a finite number)" in capsys.readouterr().err
    assert main([*argv[:-1], "accounts=2000000"]) == 2
    assert "--set.accounts: at most 1,000,000 here" in capsys.readouterr().err
    assert main([*argv[:-1], "accounts=150,validation_start=2099-01-01"]) == 2  # was an empty table, exit 0
    assert "simulation.validation_start 2099-01-01 is after the forecasts' last origin" in capsys.readouterr().err


def test_funding_is_paid_on_settlement_steps(tmp_path):
    from volmargin.simulation.funding import asset_rates, funding_matrix, read_funding

    path = tmp_path / "funding.csv"
    path.write_text("timestamp,venue,symbol,funding_rate\n2022-01-01T08:00:00Z,binance,BTCUSDT,0.001\n"
                    "2022-01-01T16:00:00Z,binance,BTCUSDT,-0.002\n2022-01-01T08:00:00Z,binance,ETHUSDT,0.5\n")
    rates = asset_rates(read_funding(path), "binance_btcusdt_perp")
    matrix = funding_matrix(rates, pd.DatetimeIndex(["2022-01-01"], tz="UTC"), 24)
    assert np.flatnonzero(matrix[0]).tolist() == [7, 15] and matrix[0, 7] == 0.001 and matrix[0, 15] == -0.002
    assert asset_rates(read_funding(path), "binance_solusdt") is None
    # a long of 1000 notional pays 0.1% at step 8 on a flat path: its cash falls by 1, the market's rises by 1
    result = simulate(one(1.0), market(np.zeros((1, 25)), funding=matrix), MarginTerms.constant(0.1, 0.05, 0.0),
                      NO_IMPACT)
    assert result.market_cash[0] == pytest.approx(1000 + 1 - 2)
    path.write_text("timestamp,venue,symbol,funding_rate\nnot-a-time,binance,BTCUSDT,0.001\n")
    with pytest.raises(DataError, match="row 2"):
        read_funding(path)


def test_study_pays_funding_where_the_file_covers_the_asset(market_bars, tmp_path):
    from volmargin.simulation.study import run_study

    times = pd.date_range("2021-01-01", "2022-08-01", freq="8h", tz="UTC")
    path = tmp_path / "funding.csv"
    pd.DataFrame({"timestamp": times.strftime("%Y-%m-%dT%H:%M:%SZ"), "venue": "syn", "symbol": "a",
                  "funding_rate": 0.002}).to_csv(path, index=False)
    forecasts = simple_forecasts(market_bars)
    bars = {"syn_a": market_bars["syn_a"]}
    target = SolvencyTarget(every="YS", maintenance_fractions=(0.6,))
    base = StudyConfig(model="rv20", validation_start="2022-01-01", settings=SMALL, target=target)
    said = []
    plain = run_study(forecasts, bars, base, log=said.append)
    assert said[0] == "simulate: no bars given for syn_b (--data): left out"  # not dropped in silence
    funded = run_study(forecasts, bars, dataclasses.replace(base, funding=str(path)))
    key = ["asset", "policy", "period", "kind"]
    a, b = (r.summary.set_index(key)["liquidations_p95"] for r in (plain, funded))
    assert (a != b).any()  # longs pay 0.2% three times a day: liquidations change


def test_settings_read_the_population_from_a_file(tmp_path):
    path = tmp_path / "book.csv"
    path.write_text("side,notional,leverage,entry_step\nlong,300,5,0\nshort,100,20,2\n")
    accounts = SimulationSettings(accounts_file=str(path)).accounts()
    assert accounts.notional.tolist() == [0.75, 0.25] and accounts.entry_step.tolist() == [0, 2]
    path.write_text("side,notional,leverage\nlong,300,0.5\n")
    with pytest.raises(DataError, match="row 2: leverage"):
        SimulationSettings(accounts_file=str(path)).accounts()


def test_simulate_stage_is_off_by_default(tmp_path, capsys):
    from volmargin.config import RunConfig
    from volmargin.pipeline import Run, stage_simulate

    run = Run(RunConfig(), tmp_path)
    stage_simulate(run)
    assert "simulate: off" in capsys.readouterr().out and not (tmp_path / "simulation").exists()
    assert "simulation" not in run.record


def test_liquidations_at_risk_limit_stops_the_largest_maintenance_fraction(market_bars):
    forecasts = simple_forecasts(market_bars)
    rule = PolicyConfig()
    case = asset_case(forecasts, market_bars["syn_a"], "syn_a", StudyConfig(model="rv20", settings=SMALL), rule)
    grid = dict(max_bad_debt_fund=0.01, maintenance_fractions=(0.5, 0.9), every="YS", window_days=120)
    free = calibrate_solvency(case, rule, SMALL, SolvencyTarget(max_liquidations=None, **grid), "2021-10-01")
    assert free["maintenance_fraction"].iloc[0] == 0.9  # liquidating earlier is free without the limit
    limit = 0.5 * free["calibration_liquidations"].iloc[0]
    capped = calibrate_solvency(case, rule, SMALL, SolvencyTarget(max_liquidations=limit, **grid), "2021-10-01")
    assert capped["maintenance_fraction"].iloc[0] == 0.5
    ok = capped["feasible"]
    assert ok.iloc[0] and capped.loc[ok, "calibration_liquidations"].le(limit).all()
    assert capped.loc[ok, "calibration_bad_debt_fund"].le(0.01).all()


def test_solvency_haircut_is_the_factor_times_the_long_margin(market_bars):
    forecasts = simple_forecasts(market_bars)
    rule = PolicyConfig()
    settings = dataclasses.replace(SMALL, population=PopulationConfig(accounts=200, seed=0, asset_collateral=0.5))
    case = asset_case(forecasts, market_bars["syn_a"], "syn_a", StudyConfig(model="rv20", settings=settings), rule)
    target = SolvencyTarget(maintenance_fractions=(0.75,), haircut_factors=(1.5,), every="YS", window_days=120)
    table = calibrate_solvency(case, rule, settings, target, "2021-10-01")
    terms = solvency_terms(case, rule, table)
    rows = np.isfinite(terms.initial[:, 0])
    np.testing.assert_allclose(terms.haircut[rows], np.minimum(1.5 * terms.initial[rows, 0], 0.95))


def test_worst_quantile_takes_the_worst_period_with_enough_paths():
    from volmargin.simulation.solvency import worst_quantile

    calm = pd.Series(np.zeros(300), index=pd.date_range("2021-01-01", periods=300, freq="6h", tz="UTC"))  # Q1
    stressed = pd.Series(np.r_[np.zeros(196), np.ones(4)],  # Q2: 2% of paths lose the whole fund
                         index=pd.date_range("2021-04-01", periods=200, freq="8h", tz="UTC"))
    values = pd.concat([calm, stressed])
    assert worst_quantile(values, 0.99, None) == pytest.approx(np.quantile(values, 0.99))
    assert worst_quantile(values, 0.99, None) == 0.0  # 4 of 500 paths: the pooled p99 is below them
    assert worst_quantile(values, 0.99, "QS") == 1.0  # in Q2 alone they are 2%
    # a period with fewer than 1 / (1 - q) = 100 paths is left to the pooled quantile
    short = pd.concat([calm, stressed.iloc[-50:]])
    assert worst_quantile(short, 0.99, "QS") == pytest.approx(np.quantile(short, 0.99))
    assert np.quantile(short, 0.99) < 1.0


def test_worst_period_calibration_is_at_least_as_strict(market_bars):
    forecasts = simple_forecasts(market_bars)
    rule = PolicyConfig()
    case = asset_case(forecasts, market_bars["syn_a"], "syn_a", StudyConfig(model="rv20", settings=SMALL), rule)
    grid = dict(max_bad_debt_fund=0.01, maintenance_fractions=(0.6,), every="YS", window_days=240)
    pooled = calibrate_solvency(case, rule, SMALL, SolvencyTarget(worst_period=None, **grid), "2021-10-01")
    worst = calibrate_solvency(case, rule, SMALL, SolvencyTarget(worst_period="QS", **grid), "2021-10-01")
    assert worst["scale"].iloc[0] >= pooled["scale"].iloc[0]
    assert worst["feasible"].iloc[0] and worst["calibration_bad_debt_fund"].iloc[0] <= 0.01
    with pytest.raises(ConfigError, match="worst_period"):
        SolvencyTarget(worst_period="quarterly")


def test_infeasible_change_raises_faster_only_when_the_band_is_infeasible(market_bars):
    forecasts = simple_forecasts(market_bars)
    rule = PolicyConfig()
    case = asset_case(forecasts, market_bars["syn_a"], "syn_a", StudyConfig(model="rv20", settings=SMALL), rule)
    strict = dict(max_bad_debt_fund=0.0, maintenance_fractions=(0.6,), every="QS", max_change=0.05, window_days=120)
    held = calibrate_solvency(case, rule, SMALL, SolvencyTarget(**strict), "2021-04-01")
    fast = calibrate_solvency(case, rule, SMALL, SolvencyTarget(infeasible_change=0.5, **strict), "2021-04-01")
    assert (~held["feasible"]).any()  # the case needs the faster rise
    steps = fast["scale"].to_numpy()[1:] / fast["scale"].to_numpy()[:-1] - 1
    assert np.all(steps <= 0.5 + 1e-9) and np.all(steps >= -0.05 - 1e-9)
    assert (steps > 0.05 + 1e-9).any() and (~fast["feasible"]).sum() < (~held["feasible"]).sum()
    assert fast.loc[fast["feasible"], "calibration_bad_debt_fund"].le(0.0).all()
    with pytest.raises(ConfigError, match="infeasible_change"):
        SolvencyTarget(max_change=0.15, infeasible_change=0.1)


def test_bisection_follows_bad_debt_and_checks_rising_liquidations_at_the_result():
    from volmargin.simulation.solvency import _bisect, _meets

    # bad debt falls with the scale and meets the target from 0.75 on; liquidations rise with the scale
    # (accounts under the leverage cap are liquidated sooner): the answer is the smallest solvent scale
    target = SolvencyTarget(max_bad_debt_fund=0.01, max_liquidations=0.3, tolerance=0.001)
    evaluate = lambda s: (0.04 * max(0.0, 1.0 - s), 0.25 * s)  # noqa: E731
    scale, figures, limited = _bisect(evaluate, 0.5, 1.5, target)
    assert scale == pytest.approx(0.75, rel=0.002) and not limited
    assert figures == evaluate(scale) and _meets(figures, target)
    strict = dataclasses.replace(target, max_liquidations=0.1)  # no scale meets both: raising it would not help
    scale, figures, limited = _bisect(evaluate, 0.5, 1.5, strict)
    assert scale == pytest.approx(0.75, rel=0.002) and figures[0] <= 0.01 and not _meets(figures, strict)
    # liquidations that fall only past 1.0 (a hump): the scan finds the first grid point past it (0.5 x 1.1^8 =
    # 1.07), the bisection between it and the point before brings the scale back to 1.0 within the tolerance
    from volmargin.simulation.solvency import _lift

    hump = lambda s: (0.0, 0.4 if s < 1.0 else 0.2)  # noqa: E731
    scale, figures = _lift(hump, 0.5, hump(0.5), 10.0, target)
    assert 1.0 <= scale <= 1.0 * (1 + target.tolerance) and figures == (0.0, 0.2)
    assert _lift(hump, 0.5, hump(0.5), 0.9, target) == (0.5, (0.0, 0.4))  # none within the band: kept, flagged


def test_static_solvent_is_the_smallest_multiple_of_the_schedule_meeting_the_target(market_bars):
    from volmargin.simulation.scenarios import run_paths
    from volmargin.simulation.solvency import calibrate_static, calibration_window, static_terms, worst_quantile

    forecasts = simple_forecasts(market_bars)
    cfg = StudyConfig(model="rv20", settings=SMALL)
    case = asset_case(forecasts, market_bars["syn_a"], "syn_a", cfg, PolicyConfig())
    target = SolvencyTarget(max_bad_debt_fund=0.0, window_days=120, max_liquidations=None)
    row = calibrate_static(case, ("btc",), SMALL, target, "2021-10-01")
    paths = calibration_window(case, pd.Timestamp("2021-10-01", tz="UTC"), target)

    def bad_debt(multiplier: float) -> float:
        terms = static_terms(case, ("btc",), SMALL.penalty, multiplier)
        metrics = run_paths(paths, terms.initial, terms.maintenance, terms.penalty, case.variance, SMALL)
        return worst_quantile(pd.Series(metrics["bad_debt_fund"].to_numpy(), index=pd.DatetimeIndex(metrics["origin"])),
                              target.quantile, target.worst_period)

    multiplier = row["scale"]
    assert row["policy"] == "static_solvent" and row["feasible"] and not row["limited"]
    assert bad_debt(multiplier) <= 0.0 < bad_debt(multiplier / (1 + 2 * target.tolerance))  # met, and only just
    terms = static_terms(case, ("btc",), SMALL.penalty, multiplier)  # a small cap: the 10% / 5% shape, scaled
    np.testing.assert_allclose(terms.initial, 0.10 * multiplier)
    np.testing.assert_allclose(terms.maintenance, 0.05 * multiplier)
    assert row["calibration_avg_margin"] == pytest.approx(0.10 * multiplier)
    loose = calibrate_static(case, ("btc",), SMALL, dataclasses.replace(target, max_bad_debt_fund=5.0), "2021-10-01")
    assert loose["scale"] == target.scale_bounds[0] < multiplier


def test_set_items_keep_flow_lists_whole():
    import argparse

    from volmargin.cli import _policy_items

    assert _policy_items("accounts=10,haircut_factors=[0, 0.5,1],worst_period=null") == {
        "accounts": 10, "haircut_factors": [0, 0.5, 1], "worst_period": None}
    with pytest.raises(argparse.ArgumentTypeError):
        _policy_items("accounts")


# --- input validation: one-line errors naming the file, row or key ----------------------------------------------

def test_simulation_keys_are_checked_at_load_and_named_as_written(tmp_path):
    from volmargin.config import RunConfig, SimulationSection, from_dict, load_config

    for key, value, message in (("validation_start", "garbage", "not a date"), ("every", "XYZ", "frequency"),
                                ("worst_period", "XYZ", "frequency"), ("seed", -1, ">= 0"),
                                ("insurance_fund", 0.0, "> 0")):
        with pytest.raises(ConfigError, match=rf"^--set\.{key}: .*{message}"):
            from_dict(SimulationSection, {key: value}, "--set")
    config = tmp_path / "run.yaml"
    config.write_text("simulation: {enabled: true, every: XYZ}\n")
    with pytest.raises(ConfigError, match=r"run.yaml: simulation\.every: not a pandas frequency"):
        load_config(config, RunConfig)
    assert from_dict(SimulationSection, {"validation_start": "2022-03-01", "every": "YS", "seed": 3}, "--set").seed == 3


def test_read_accounts_refuses_damaged_files_absurd_notionals_and_late_entries(tmp_path):
    import gzip

    whole = gzip.compress(b"side,notional,leverage\n" + b"long,100,5\n" * 200)
    damaged = tmp_path / "accounts.csv.gz"
    damaged.write_bytes(whole[:20])
    with pytest.raises(DataError, match=r"accounts.csv.gz: unreadable gzip file"):
        read_accounts(damaged)
    path = tmp_path / "accounts.csv"
    path.write_text("side,notional,leverage\nlong,100,5\nshort,1e308,5\n")  # the total overflows: NaN figures
    with pytest.raises(DataError, match=r"accounts.csv: row 3: notional = '1e\+308'"):
        read_accounts(path)
    path.write_text("side,notional,leverage,entry_step\nlong,100,5,0\nshort,100,5,100000\n")
    assert read_accounts(path).entry_step.tolist() == [0, 100000]  # the reader alone knows no path length
    with pytest.raises(DataError, match=r"accounts.csv: row 3: entry_step = '100000': must be < 24"):
        SimulationSettings(accounts_file=str(path)).accounts()


def test_read_funding_refuses_damaged_empty_and_conflicting_files(tmp_path):
    import gzip

    from volmargin.simulation.funding import read_funding, study_rates

    header = "timestamp,venue,symbol,funding_rate\n"
    damaged = tmp_path / "funding.csv.gz"
    damaged.write_bytes(gzip.compress((header + "2022-01-01T00:00:00Z,binance,BTCUSDT,0.0001\n" * 500).encode())[:-10])
    with pytest.raises(DataError, match=r"funding.csv.gz: unreadable gzip file"):
        read_funding(damaged)
    path = tmp_path / "funding.csv"
    path.write_text(header)
    with pytest.raises(DataError, match=r"funding.csv: no funding rows"):
        read_funding(path)
    path.write_text(header + "2022-01-01T00:00:00Z,binance,BTCUSDT,0.0001\n"
                    "2022-01-01T08:00:00Z,binance,BTCUSDT,0.0002\n2022-01-01T00:00:00Z,binance,ETHUSDT,0.0003\n"
                    "2022-01-01T00:00:00Z,binance,BTCUSDT,0.0001\n")
    assert len(study_rates(path, ["binance_btcusdt"])["binance_btcusdt"]) == 2  # an exact repeat is kept once
    with pytest.raises(DataError, match=r"funding.csv: no funding rows of binance_solusdt"):
        study_rates(path, ["binance_btcusdt", "binance_solusdt"])
    path.write_text(path.read_text() + "2022-01-01T08:00:00Z,binance,BTCUSDT,0.009\n")
    with pytest.raises(DataError, match=r"funding.csv: rows 3 and 6: binance btcusdt at 2022-01-01T08:00:00Z has two"):
        read_funding(path)


def test_study_refuses_a_funding_file_without_the_asset(market_bars, tmp_path):
    from volmargin.simulation.study import run_study

    path = tmp_path / "funding.csv"
    path.write_text("timestamp,venue,symbol,funding_rate\n2021-06-01T08:00:00Z,syn,b,0.001\n")
    cfg = StudyConfig(model="rv20", validation_start="2022-01-01", settings=SMALL, funding=str(path))
    with pytest.raises(DataError, match=r"funding.csv: no funding rows of syn_a"):
        run_study(simple_forecasts(market_bars), {"syn_a": market_bars["syn_a"]}, cfg)


def test_no_nan_figure_reaches_the_summary():
    from volmargin.simulation.study import _check_figures

    row = {c: 0.0 for c in SUMMARY_COLUMNS} | {"asset": "syn_a", "policy": "static", "period": "validation",
                                               "kind": "all", "meets_target": True}
    _check_figures(pd.DataFrame([row], columns=SUMMARY_COLUMNS))
    with pytest.raises(DataError, match=r"syn_a static \(validation, all paths\): bad_debt_p99 is NaN"):
        _check_figures(pd.DataFrame([row | {"bad_debt_p99": np.nan}], columns=SUMMARY_COLUMNS))


def test_simulate_refuses_min_bars_and_an_unusable_out_before_any_work(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "forecasts.parquet").write_bytes(b"")  # never read: both are refused first
    taken = tmp_path / "taken"
    taken.write_text("")
    argv = ["simulate", "--run", str(run), "--out", str(tmp_path / "sim")]
    assert main([*argv, "--min-bars", "30"]) == 2
    assert "--min-bars: simulate does not use it" in capsys.readouterr().err
    assert main([*argv[:-1], str(taken)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert not (tmp_path / "sim").exists()


# ----------------------------------------------------------------------------- session 26's mutation audit

def test_partial_liquidation_counts_the_penalty():
    """Long 10x, IM 10%, MM 5%, penalty 1%: at 0.94 the equity is 40 on 940. Closing f of it with
    40 - 0.01 f 940 = 0.1 (1 - f) 940 leaves exactly 10% after the penalty."""
    result = simulate(one(1.0), market([[0.0, np.log(0.94)]]), MarginTerms.constant(0.1, 0.05, 0.01), NO_IMPACT,
                      EngineConfig(liquidation="partial"))
    f = (0.1 - 40 / 940) / 0.09
    assert result.liquidated.sum() == pytest.approx(f * 940)
    assert result.penalties.sum() == pytest.approx(0.01 * f * 940)
    assert result.open_equity[0] == pytest.approx(0.1 * (1 - f) * 940)


def test_partial_mode_closes_an_asset_collateral_account_in_full():
    """The gap of test_asset_collateral_is_haircut_and_falls_with_a_long in partial mode: the account whose
    collateral falls with its long is closed in full, the 40 of negative equity bad debt."""
    terms = MarginTerms.constant(0.1, 0.05, 0.0).with_haircut(0.2)
    gap = simulate(in_asset(1.0), market([[0.0, np.log(0.8)]]), terms, NO_IMPACT, EngineConfig(liquidation="partial"))
    assert gap.liquidations.sum() == 1 and gap.bad_debt.sum() == pytest.approx(40.0)
    assert gap.account_qty[0] == 0 and gap.account_collateral[0] == 0 and not gap.unconverged.any()


def test_a_fractional_oracle_delay_interpolates_the_log_price():
    """Price 1 -> 0.8 at step 1: with a delay of 0.25 the oracle reads 0.8^0.75 = 0.846 there (a long's trigger
    is 0.9 / 0.95 = 0.947: liquidated at once), with 0.9 it reads 0.8^0.1 = 0.978 (a step later)."""
    path, terms = market([[0.0, np.log(0.8), np.log(0.8)]]), MarginTerms.constant(0.1, 0.05, 0.0)
    early = simulate(one(1.0), path, terms, NO_IMPACT, EngineConfig(oracle_delay=0.25))
    late = simulate(one(1.0), path, terms, NO_IMPACT, EngineConfig(oracle_delay=0.9))
    assert early.liquidations[0].tolist() == [1, 0] and late.liquidations[0].tolist() == [0, 1]


def test_the_price_is_the_exogenous_path_plus_the_cumulative_impact():
    """Impact persists: every later step's price carries the impact of the earlier liquidation flow."""
    paths = crash_paths(10)
    accounts = draw_accounts(PopulationConfig(accounts=1000, seed=0, entry_window=1), open_interest=5e6)
    result = simulate(accounts, market(paths, volume=2e6, sigma=0.02), MarginTerms.constant(0.1, 0.05, 0.01, 10),
                      SquareRootImpact(1.0))
    assert result.impact.min() < 0
    np.testing.assert_allclose(result.log_price, paths + result.impact, atol=1e-12)


def test_the_insurance_fund_starts_at_its_share_of_open_interest():
    accounts = draw_accounts(PopulationConfig(accounts=200, seed=0), open_interest=5e6)
    result = simulate(accounts, market(np.zeros((2, 5))), MarginTerms.constant(0.1, 0.05, 0.01, 2), NO_IMPACT,
                      EngineConfig(insurance_fund=0.03))
    np.testing.assert_allclose(result.open_interest, 5e6)
    np.testing.assert_allclose(result.fund_start, 0.03 * 5e6)
    np.testing.assert_allclose(result.fund[:, 0], 0.03 * 5e6)


# ------------------------------------------------------------------ session 28's mutation audit
# Each test below fails on a change to the simulator that the suite let through: a short liquidated past
# bankruptcy, funding that never liquidates, an unflagged cut cascade, linear impact, run_paths' liquidity,
# volatility or haircut, a look-ahead in the solvency window, the headline statistics' levels, the haircut
# factor, the bootstrap's standardisation, a block's start date, bad inputs accepted, the long share.

def test_short_is_liquidated_at_maintenance_before_bankruptcy():
    # short 1000 at 10x: cash 1100, liquidation price 1100 / (1000 x 1.05) = 1.0476, bankruptcy 1.1
    terms = MarginTerms.constant(0.1, 0.05, 0.01)
    hit = simulate(one(-1.0), Market(np.array([[0.0, np.log(1.05)]]), 1e6, 0.01), terms, NO_IMPACT)
    assert hit.liquidations.sum() == 1 and hit.bad_debt.sum() == 0  # equity 50 on 1050: 4.8% < 5%
    assert hit.penalties.sum() == pytest.approx(10.5) and hit.account_cash[0] == pytest.approx(50 - 10.5)
    held = simulate(one(-1.0), Market(np.array([[0.0, np.log(1.04)]]), 1e6, 0.01), terms, NO_IMPACT)
    assert held.liquidations.sum() == 0  # equity 60 on 1040: 5.8%


def test_funding_that_eats_the_margin_liquidates():
    # long 1000 at 10x on a flat path: a 6% funding payment at step 1 leaves equity 40 < maintenance 50
    result = simulate(one(1.0), Market(np.zeros((1, 3)), 1e6, 0.01, np.array([[0.06, 0.0]])),
                      MarginTerms.constant(0.1, 0.05, 0.0), NO_IMPACT)
    assert result.liquidations[0].tolist() == [1, 0]


def test_a_cascade_cut_at_max_rounds_is_flagged():
    accounts = draw_accounts(PopulationConfig(accounts=1000, seed=0), open_interest=5e6)
    crash, terms = Market(crash_paths(10), 2e6, 0.02), MarginTerms.constant(0.1, 0.05, 0.01, 10)
    full = simulate(accounts, crash, terms, SquareRootImpact(1.0), EngineConfig(max_rounds=50))
    assert full.rounds.max() > 1 and not full.unconverged.any()
    cut = simulate(accounts, crash, terms, SquareRootImpact(1.0), EngineConfig(max_rounds=1))
    assert cut.unconverged.any()


def test_impact_is_the_square_root_law():
    impact = SquareRootImpact(1.5)
    # a sell of a quarter of the step's volume at 2% volatility: -1.5 x 0.02 x sqrt(0.25)
    np.testing.assert_allclose(impact.log_impact([-2.5e5, 1e6, 0.0], 1e6, 0.02), [-0.015, 0.03, 0.0])
    # in the engine: one long of 1000 liquidated at 0.94 sells 940 against a step volume of 4000
    result = simulate(one(1.0), Market(np.array([[0.0, np.log(0.94)]]), 4000.0, 0.02),
                      MarginTerms.constant(0.1, 0.05, 0.0), SquareRootImpact(1.0))
    assert result.impact[0, 1] == pytest.approx(-0.02 * np.sqrt(940 / 4000))


def test_run_paths_is_simulate_with_the_documented_liquidity_and_haircut():
    from volmargin.simulation.metrics import path_metrics
    from volmargin.simulation.paths import PathSet
    from volmargin.simulation.scenarios import SimulationSettings, run_paths

    accounts = draw_accounts(PopulationConfig(accounts=300, seed=1, asset_collateral=0.5), open_interest=1.0)
    log_price = crash_paths(6)
    origins = pd.date_range("2021-01-01", periods=3, tz="UTC")
    paths = PathSet("x", np.full(6, "replay", dtype=object), np.repeat(np.arange(3), 2), origins, log_price)
    initial = np.array([[0.08, 0.1], [0.1, 0.12], [0.06, 0.08]])
    variance, haircut = np.array([0.03, 0.05, 0.04]) ** 2, np.array([0.1, 0.3, 0.2])
    settings = SimulationSettings(open_interest=0.5)
    got = run_paths(paths, initial, 0.6 * initial, 0.01, variance, settings, accounts, haircut)
    day = paths.day
    market = Market(log_price, 1.0 / (24 * 0.5), np.sqrt(variance[day] / 24))
    terms = MarginTerms(initial[day], 0.6 * initial[day], np.full(6, 0.01), haircut[day])
    want = path_metrics(simulate(accounts, market, terms, SquareRootImpact(settings.impact), settings.engine))
    assert want["cascade"].max() > 0 and want["bad_debt"].max() > 0
    pd.testing.assert_frame_equal(got.drop(columns=["kind", "origin"]), want)


def test_calibration_window_reads_only_realised_paths_of_the_window():
    from volmargin.simulation.paths import PathSet
    from volmargin.simulation.solvency import AssetCase, SolvencyTarget, calibration_window

    origins = pd.date_range("2020-01-01", "2021-12-31", tz="UTC")
    paths = PathSet("x", np.full(len(origins), "replay", dtype=object), np.arange(len(origins)), origins,
                    np.zeros((len(origins), 25)))
    panel = type("P", (), {"horizon": 1, "origins": origins})()
    case = AssetCase("x", panel, np.ones(len(origins)), paths)
    start = pd.Timestamp("2021-06-01", tz="UTC")
    window = calibration_window(case, start, SolvencyTarget(window_days=120))
    ends = window.starts + pd.Timedelta(hours=24)
    assert ends.max() == start  # the last path used ends at the block start, none after it
    assert window.origins[window.day].min() == start - pd.Timedelta(days=120)


def test_path_metrics_and_summary_levels():
    from volmargin.simulation.engine import SimulationResult
    from volmargin.simulation.metrics import path_metrics, summarize

    z2, z = np.zeros((2, 4)), np.zeros(2)
    result = SimulationResult(
        open_interest=np.array([100.0, 100.0]), deposits=z, fund_start=np.array([10.0, 0.0]),
        bad_debt=np.array([[0, 0, 5.0, 0], [1.0, 0, 0, 0]]), penalties=np.array([[3.0, 0, 0, 0], [0, 0, 0, 0]]),
        liquidated=z2, liquidations=z2, log_price=np.zeros((2, 5)),
        impact=np.array([[0, -0.05, -0.02, -0.03, -0.03], [0, 0, 0, 0, 0]]), rounds=z2.astype(int),
        unconverged=np.zeros(2, bool), account_cash=z, account_qty=z, account_collateral=z,
        collateral_deposited=z, market_cash=z, market_qty=z, open_equity=z, open_shortfall=z)
    m = path_metrics(result)
    assert m["fund_drawdown"][0] == pytest.approx(0.5)  # from the peak 13 to 8, over the starting fund 10
    assert m["cascade"][0] == pytest.approx(0.05)  # the largest move, not the last
    assert m["bad_debt_fund"][1] == np.inf  # bad debt without a fund is never solvent
    frame = pd.DataFrame({c: np.linspace(0, 1, 101) for c in ["bad_debt", "bad_debt_fund", "liquidated",
                                                                "fund_drawdown", "cascade"]})
    stats = summarize(frame.assign(unconverged=False))
    for key, level in (("bad_debt_p95", .95), ("bad_debt_p99", .99), ("bad_debt_fund_p95", .95),
                       ("bad_debt_fund_p99", .99), ("liquidations_p95", .95), ("liquidations_p99", .99),
                       ("fund_drawdown_p99", .99), ("cascade_p99", .99)):
        assert stats[key] == pytest.approx(level), key


def test_collateral_haircut_is_the_factor_times_the_long_margin():
    from volmargin.simulation.scenarios import collateral_haircut

    np.testing.assert_allclose(collateral_haircut(np.array([[0.1, 0.2], [0.8, 0.1]]), 1.5), [0.15, 0.95])


def test_standardised_returns_use_only_the_variance_before_the_hour():
    from volmargin.simulation.paths import standardised_returns

    ret = np.r_[0.0, np.tile([0.001, -0.001], 100), 0.1]  # a 100-sigma hour after 200 calm ones
    z = standardised_returns(pd.Series(np.cumsum(ret)))
    assert z[-1] == pytest.approx(100.0, rel=0.01)


def test_solvency_terms_switch_on_the_block_start():
    from volmargin.simulation.scenarios import SimulationSettings
    from volmargin.simulation.solvency import rule_margin, solvency_terms
    from volmargin.simulation.study import StudyConfig, asset_case

    bars = synthetic_market(n_assets=1, days=200, seed=4)
    asset = next(iter(bars))
    settings = SimulationSettings(population=PopulationConfig(accounts=50), bootstrap_paths=0)
    rule = PolicyConfig()
    case = asset_case(simple_forecasts(bars), bars[asset], asset, StudyConfig(model="rv20", settings=settings), rule)
    switch = case.origins[100]
    blocks = pd.DataFrame({"valid_from": [case.origins[50], switch], "scale": [1.0, 2.0],
                           "maintenance_fraction": [0.5, 0.5], "penalty": [0.01, 0.01], "haircut_factor": [1.0, 1.0]})
    terms = solvency_terms(case, rule, blocks)
    np.testing.assert_allclose(terms.initial[100], rule_margin(case, rule, 2.0)[100])
    np.testing.assert_allclose(terms.initial[99], rule_margin(case, rule, 1.0)[99])


def test_more_bad_inputs_are_refused(tmp_path):
    from volmargin.simulation.funding import read_funding

    flat = Market(np.zeros((1, 3)), 1e6, 0.01)
    with pytest.raises(ConfigError, match="penalty"):
        simulate(one(1.0), flat, MarginTerms.constant(0.1, 0.05, 1.0), NO_IMPACT)
    with pytest.raises(ConfigError, match="haircut"):
        simulate(one(1.0), flat, MarginTerms.constant(0.1, 0.05, 0.0).with_haircut(1.0), NO_IMPACT)
    for volume, sigma in ((-1e6, 0.01), (1e6, -0.01)):
        with pytest.raises(ConfigError, match="market"):
            simulate(one(1.0), Market(np.zeros((1, 3)), volume, sigma), MarginTerms.constant(0.1, 0.05, 0.0),
                     SquareRootImpact(1.0))
    late = Accounts(np.array([1.0]), np.array([1000.0]), np.array([5.0]), np.array([2]))
    with pytest.raises(ConfigError, match="entry_step"):
        simulate(late, flat, MarginTerms.constant(0.1, 0.05, 0.0), NO_IMPACT)
    path = tmp_path / "funding.csv"
    path.write_text("timestamp,venue,symbol,funding_rate\n2022-01-01T08:00:00Z,binance,BTCUSDT,1.5\n")
    with pytest.raises(DataError, match="row 2"):
        read_funding(path)
    book = tmp_path / "book.csv"
    book.write_text("side,notional,leverage,entry_step\nlong,100,5,1.5\n")
    with pytest.raises(DataError, match="row 2: entry_step"):
        read_accounts(book)
    book.write_text("side,notional,leverage,collateral\nlong,100,5,gold\n")
    with pytest.raises(DataError, match="row 2: collateral"):
        read_accounts(book)


def test_long_share_is_the_share_of_longs():
    accounts = draw_accounts(PopulationConfig(accounts=20000, long_share=0.8, seed=0))
    assert np.mean(accounts.side > 0) == pytest.approx(0.8, abs=0.01)


@pytest.mark.parametrize("rate", ["1.5", "-1"])
def test_read_funding_refuses_a_rate_of_a_whole_position_or_more(tmp_path, rate):
    from volmargin.simulation.funding import read_funding

    path = tmp_path / "funding.csv"
    path.write_text("timestamp,venue,symbol,funding_rate\n2022-01-01T00:00:00Z,binance,BTCUSDT,0.0001\n"
                    f"2022-01-01T08:00:00Z,binance,BTCUSDT,{rate}\n")
    with pytest.raises(DataError, match=rf"funding.csv: row 3: funding_rate {float(rate)} is not a fraction"):
        read_funding(path)


def test_funding_times_in_epoch_and_rates_in_percent_are_read_or_refused(tmp_path):
    """Session 29's red team: epoch times were read as nanoseconds since 1970 (no path funded, rc 0) and rates
    sent in percent (0.01 for 0.01%) were taken as 1% of the position a settlement."""
    from volmargin.simulation.funding import read_funding

    path = tmp_path / "funding.csv"
    seconds = [1640995200, 1641024000]  # 2022-01-01T00:00Z and 08:00Z
    path.write_text("timestamp,venue,symbol,funding_rate\n" + "".join(
        f"{s},binance,BTCUSDT,0.0001\n" for s in seconds))
    table = read_funding(path)
    assert list(table["timestamp"]) == [pd.Timestamp("2022-01-01T00:00Z"), pd.Timestamp("2022-01-01T08:00Z")]
    path.write_text("timestamp,venue,symbol,funding_rate\n" + "".join(
        f"{s},binance,BTCUSDT,0.01\n" for s in seconds))
    with pytest.raises(DataError, match="median .funding_rate. is 0.01, above 0.002 .*in percent"):
        read_funding(path)


def test_a_damaged_portfolio_spec_is_one_line_naming_it(tmp_path):
    """A truncated or corrupt .csv.gz spec ended in 'internal error: EOFError' without the file's name."""
    import gzip

    from volmargin.risk.portfolio import read_population

    spec = tmp_path / "spec.csv.gz"
    spec.write_bytes(gzip.compress(b"portfolio,asset,notional\n" + b"a,binance_btcusdt,1000\n" * 200)[:-12])
    with pytest.raises(DataError, match="spec.csv.gz: unreadable gzip file"):
        read_population(spec, ("binance_btcusdt",))


@pytest.mark.parametrize("config", [EngineConfig(oracle_delay=1), EngineConfig(oracle_cadence=5)])
def test_an_account_left_underwater_by_a_lagging_oracle_is_bad_debt(config):
    from volmargin.simulation.metrics import path_metrics

    # a 10x long, a 50% fall in the last hour: the oracle has not shown it yet, the loss is owed all the same
    crash = market(np.r_[np.zeros(24), np.log(0.5)][None, :])
    terms = MarginTerms.constant(0.1, 0.05, 0.01)
    late = simulate(one(1.0), crash, terms, NO_IMPACT, config)
    prompt = simulate(one(1.0), crash, terms, NO_IMPACT)
    assert late.liquidations.sum() == 0 and prompt.liquidations.sum() == 1
    assert late.open_shortfall[0] == pytest.approx(400.0) and prompt.open_shortfall[0] == 0
    metrics, owed = path_metrics(late), path_metrics(prompt)
    assert metrics["bad_debt"][0] == pytest.approx(owed["bad_debt"][0]) == pytest.approx(0.4)
    assert metrics["fund_drawdown"][0] == pytest.approx(owed["fund_drawdown"][0])


def test_a_lagging_oracle_never_checks_an_account_on_a_price_from_before_it_opened():
    # a 20x long opened after a 10% rise, the price flat after: a stale oracle must not liquidate it
    rise = market(np.r_[np.zeros(10), np.full(15, np.log(1.1))][None, :])
    terms = MarginTerms.constant(0.05, 0.03, 0.01)
    for config in (EngineConfig(oracle_delay=2), EngineConfig(oracle_delay=1.5), EngineConfig(oracle_cadence=6)):
        assert simulate(one(1.0, leverage=20.0, entry=10), rise, terms, NO_IMPACT, config).liquidations.sum() == 0
    # once the oracle has read its entry, a fall below maintenance liquidates it, two steps late as before
    fall = market(np.r_[np.zeros(10), np.full(5, np.log(1.1)), np.full(10, np.log(1.0))][None, :])
    prompt = simulate(one(1.0, leverage=20.0, entry=10), fall, terms, NO_IMPACT)
    late = simulate(one(1.0, leverage=20.0, entry=10), fall, terms, NO_IMPACT, EngineConfig(oracle_delay=2))
    assert np.flatnonzero(prompt.liquidations[0]).tolist() == [14]
    assert np.flatnonzero(late.liquidations[0]).tolist() == [16]


def test_funding_does_not_wake_an_account_the_oracle_has_not_read():
    rise = np.r_[np.zeros(10), np.full(15, np.log(1.1))][None, :]
    paid = market(rise, funding=np.full((1, 24), 1e-4))
    terms = MarginTerms.constant(0.05, 0.03, 0.01)
    result = simulate(one(1.0, leverage=20.0, entry=10), paid, terms, NO_IMPACT, EngineConfig(oracle_delay=2))
    assert result.liquidations.sum() == 0


def test_read_accounts_refuses_notionals_too_small_to_rescale(tmp_path):
    """Session 30's red team: relative notionals of 1e-320 overflowed when rescaled; a notional below 1e-9 of the
    file's largest (or 1e-12) is refused naming file, row and field."""
    path = tmp_path / "accounts.csv"
    for rows, row in (("long,100,5\nshort,1e-320,2\n", 3), ("long,1e-320,5\n", 2), ("long,1,5\nshort,1e-10,2\n", 3)):
        path.write_text("side,notional,leverage\n" + rows)
        with pytest.raises(DataError, match=re.escape(f"{path}: row {row}: notional = ") + ".*at least 1e-09"):
            read_accounts(path)
    path.write_text("side,notional,leverage\nlong,1,5\nshort,1e-6,2\n")
    assert read_accounts(path).notional.tolist() == [1, 1e-6]

def test_simulate_without_data_refuses_a_run_of_another_synthetic_market(market_bars, tmp_path, capsys):
    """A run of another synthetic market (seed 7) was simulated on seed 0's prices under the same asset names, in
    silence (session 31's red team): without --data its run.json's data fingerprint must be the built-in one's."""
    import json

    run = tmp_path / "run"
    run.mkdir()
    simple_forecasts(market_bars).to_parquet(run / "forecasts.parquet")
    (run / "run.json").write_text(json.dumps({"command": "run", "complete": True, "data": {"fingerprint": "0" * 64}}))
    assert main(["simulate", "--run", str(run), "--out", str(tmp_path / "sim")]) == 2
    err = capsys.readouterr().err
    assert "was made from another market than the built-in synthetic one" in err and err.count("\n") == 1
    assert not (tmp_path / "sim").exists()
