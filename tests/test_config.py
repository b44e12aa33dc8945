"""Config checks at load: ranges, dates, patterns, levels and simulation limits (session 29's mutation audit: each
test fails on a change the suite let through)."""

import pytest

from volmargin.config import (
    SIMULATION_LIMITS, DataConfig, RunConfig, SimulationSection, TrainConfig, from_dict, load_config,
)
from volmargin.errors import ConfigError


@pytest.mark.parametrize("text, message", [
    ("horizon: 31", "horizon: must lie in 1 .. 30"),                       # C02: the upper bound
    ("backtest: {refit_every: 0}", "must lie in 1 .. 36500 days"),        # C03: the lower bound
    ("backtest: {start: 03/04/2022}", "backtest.start: not a date"),      # C04
    ("calibration: {end: 2022-13-45}", "calibration.end: not a date"),    # C05
    ("data: {iv: {'*btc*': 5}}", "data.iv: expected asset-name patterns"),  # C06
    ("learned: {}", "learned: expected a mapping with nn, gbm and/or blend"),  # C11: no model at all
    ("backtest: {baselines: [ewma, garh]}", "backtest.baselines: unknown ['garh']"),  # C10
])
def test_run_config_ranges_and_dates_stop_at_load(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path, RunConfig)
    assert message in str(error.value)


def test_a_whole_number_for_a_float_key_is_read_as_a_float(tmp_path):
    """C01: `leverage_median: 4` (YAML int) for a float key is 4.0, not 'expected float, got int'."""
    path = tmp_path / "run.yaml"
    path.write_text("simulation: {leverage_median: 4, insurance_fund: 1}\n")
    cfg = load_config(path, RunConfig)
    assert cfg.simulation.leverage_median == 4.0 and isinstance(cfg.simulation.leverage_median, float)
    assert cfg.simulation.insurance_fund == 1.0


def test_an_infinite_simulation_setting_is_refused_at_load():
    """C07: insurance_fund = inf passes `> 0` and makes every bad-debt ratio 0 (the solvency target always met)."""
    from volmargin.config import SimulationSection, from_dict

    for key in ("insurance_fund", "max_bad_debt_fund", "impact"):
        with pytest.raises(ConfigError, match=rf"^--set\.{key}: invalid value inf \(a finite number\)"):
            from_dict(SimulationSection, {key: float("inf")}, "--set")


@pytest.mark.parametrize("key, most", [("accounts", 1_000_000), ("bootstrap_paths", 1_000)])
def test_simulation_sizes_stop_one_past_their_limit(key, most):
    """C08: the limits themselves (at the limit: accepted; one past: refused)."""
    from volmargin.config import SimulationSection, from_dict

    assert getattr(from_dict(SimulationSection, {key: most}, "--set"), key) == most
    with pytest.raises(ConfigError, match=rf"--set\.{key}: at most"):
        from_dict(SimulationSection, {key: most + 1}, "--set")


def test_a_learned_models_own_levels_that_differ_from_the_configs_are_refused(tmp_path):
    """C09: the config's levels would silently replace them."""
    path = tmp_path / "run.yaml"
    path.write_text("learned: {gbm: {levels: [0.95, 0.99]}}\n")
    with pytest.raises(ConfigError, match=r"learned.gbm.levels: \[0.95, 0.99\] differ from levels \[0.975, 0.99\]"):
        load_config(path, RunConfig)
    path.write_text("learned: {gbm: {levels: [0.99, 0.975]}}\n")  # the same levels in another order: accepted
    assert load_config(path, RunConfig).learned["gbm"]["levels"] == (0.975, 0.99)


def test_set_levels_moves_every_learned_models_levels_with_it():
    """Session 29's red team: `--set levels=...` was always refused, naming learned.nn.levels, a key the user never
    set (the config's levels had been passed into each model's parameters); a model's own differing levels are
    still refused."""
    from volmargin.config import with_overrides

    cfg = with_overrides(RunConfig(), {"levels": [0.975, 0.99, 0.995]})
    assert cfg.levels == (0.975, 0.99, 0.995)
    assert all(params["levels"] == (0.975, 0.99, 0.995) for params in cfg.learned.values())
    with pytest.raises(ConfigError, match="learned.gbm.levels"):
        with_overrides(RunConfig(), {"levels": [0.975, 0.99, 0.995], "learned.gbm.levels": [0.95, 0.99]})


@pytest.mark.parametrize("overrides, message", [
    ({"calibration.recalibrate": "0D"}, "calibration.recalibrate: '0D' does not move forward"),
    ({"calibration.recalibrate": "nonsense"}, "calibration.recalibrate: not a pandas frequency"),
    ({"portfolio.concentrations": [-1.0]}, "portfolio concentrations"),
    ({"portfolio.correlation_weights": [float("nan")]}, "portfolio correlation weights"),
    ({"calibration.policy.stressed_floor": True, "calibration.policy.floor_min_obs": 1000},
     "policy.floor_min_obs: 1000 is more than stress_window 250"),
    ({"calibration.policy.target_breach_rate": 0.5}, "policy.target_breach_rate: invalid value 0.5"),
])
def test_run_settings_that_failed_after_training_stop_at_load(overrides, message):
    """Session 29's red team: each was accepted at load and failed (or ran meaningless) after training and the
    backtest."""
    from volmargin.config import with_overrides

    with pytest.raises(ConfigError, match=message):
        with_overrides(RunConfig(), overrides)


# session 30's mutation audit of the load checks

@pytest.mark.parametrize("key", ["oracle_delay", "oracle_cadence", "entry_window"])
def test_every_simulation_limit_stops_one_past_it(key):
    """test_config.py's C08 pins accounts and bootstrap_paths only: the other limits could be dropped (an oracle
    cadence or entry window of days, silently; an oracle delay refused only at the simulate stage, after training)."""
    most = SIMULATION_LIMITS[key]
    assert getattr(from_dict(SimulationSection, {key: most}, "--set"), key) == most
    with pytest.raises(ConfigError, match=rf"--set\.{key}: at most"):
        from_dict(SimulationSection, {key: most + 1}, "--set")


@pytest.mark.parametrize("levels", [[0.3, 0.975, 0.99], [0.5, 0.975, 0.99]])
def test_a_level_at_or_below_one_half_is_refused(levels):
    """The lower bound of (0.5, 1): a 30% 'VaR' (a gain on most days) was accepted when it was dropped."""
    with pytest.raises(ConfigError, match=r"levels: each must lie in \(0.5, 1\)"):
        TrainConfig(levels=tuple(levels))
    TrainConfig(levels=(0.95, 0.975, 0.99))  # the check keeps real levels


@pytest.mark.parametrize("iv", [{"": "iv/btc.csv.gz"}, {"*btc*": ""}])
def test_an_empty_iv_pattern_or_file_is_refused(iv):
    """An empty pattern matches no asset (the index silently never joined); an empty file name is the folder '.'."""
    with pytest.raises(ConfigError, match="data.iv: expected asset-name patterns mapped to DVOL files"):
        from_dict(DataConfig, {"iv": iv}, "data")


@pytest.mark.parametrize("value", [True, False])
def test_a_boolean_for_a_number_key_is_refused(value):
    """`long_share: yes` (YAML's true) was read as 1.0 (every account long) once the bool guard was dropped."""
    with pytest.raises(ConfigError, match=r"--set\.long_share: expected float, got bool"):
        from_dict(SimulationSection, {"long_share": value}, "--set")


def test_a_mapping_set_on_the_command_line_overlays_its_section_key_by_key():
    """`--set 'calibration.policy={buffer: 0.5}'` replaced the whole policy: its floors and speed limits were gone
    and the margins fell 30% (session 31's red team). A mapping overlays a mapping; other keys stay."""
    from volmargin.config import APC_POLICY, parse_overrides, with_overrides

    cfg = with_overrides(RunConfig(), parse_overrides("calibration.policy={buffer: 0.5}"))
    assert cfg.calibration.policy["buffer"] == 0.5
    assert {k: v for k, v in cfg.calibration.policy.items() if k != "buffer"} == {
        k: v for k, v in RunConfig().calibration.policy.items() if k != "buffer"}
    assert cfg.calibration.policy["max_up"] == APC_POLICY["max_up"] is not None  # the speed limits kept
    assert with_overrides(RunConfig(), {"calibration.policy.buffer": 0.5}).calibration.policy == cfg.calibration.policy
    # sections of named entries are replaced (`learned={gbm: {}}` runs the GBM alone), an empty mapping empties
    assert sorted(with_overrides(RunConfig(), parse_overrides("learned={gbm: {}}")).learned) == ["gbm"]
    assert with_overrides(RunConfig(), parse_overrides("calibration.policy={}")).calibration.policy == {}
    # a key given twice, once dotted and once in a mapping, is refused as two dotted ones are
    for texts in (["calibration.policy.buffer=0.5", "calibration.policy={buffer: 0.3}"],
                  ["calibration.policy={buffer: 0.3}", "calibration.policy.buffer=0.5"]):
        with pytest.raises(ConfigError, match=r"^--set: calibration.policy.buffer is given twice"):
            parse_overrides(texts)


# session 31's red team: values accepted at load that a stage read wrongly, or refused only after the work

@pytest.mark.parametrize("value", ["05/06/2022", "garbage"])
def test_a_portfolio_validation_start_that_is_not_a_date_is_refused_at_load(value):
    """05/06/2022 was read month first by the portfolio stage (and recorded as given); 'garbage' failed there,
    after training and backtest, in pandas' words."""
    from volmargin.config import with_overrides

    with pytest.raises(ConfigError, match=r"portfolio.validation_start: not a date: .* \(use YYYY-MM-DD\)"):
        with_overrides(RunConfig(), {"portfolio.validation_start": value})
    assert with_overrides(RunConfig(), {"portfolio.validation_start": "2022-05-06"}).portfolio.validation_start


@pytest.mark.parametrize("key, value", [("calibration.recalibrate", "h"), ("calibration.recalibrate", "30min"),
                                        ("simulation.every", "12h"), ("simulation.worst_period", "bh")])
def test_a_frequency_shorter_than_a_day_is_refused_at_load(key, value):
    """Daily forecasts re-calibrated every hour: the calibrate stage never ended ('D' already took 24 s on two
    assets and nine months)."""
    from volmargin.config import with_overrides

    with pytest.raises(ConfigError, match=rf"{key}: '{value}' is shorter than a day"):
        with_overrides(RunConfig(), {key: value})
    assert with_overrides(RunConfig(), {key: "D"})  # a day is the shortest accepted


@pytest.mark.parametrize("overrides, message", [
    ({"calibration.policy.risk": "var95"}, r"calibration.policy.risk: 'var95' is not forecast at the levels"),
    ({"calibration.policy.haircut_risk": "var95"},  # the calibrate stage named policy.risk for it
     r"calibration.policy.haircut_risk: 'var95' is not forecast at the levels"),
    ({"simulation.quantile": 1.5}, r"simulation.quantile: invalid value 1.5"),
    ({"simulation.max_change": 0}, r"simulation.max_change: invalid value 0.0"),
    ({"simulation.impact": -1}, r"simulation.impact: invalid value -1.0"),
    ({"simulation.open_interest": 0}, r"simulation.open_interest: invalid value 0.0"),
    ({"simulation.penalty": 1}, r"simulation.penalty: invalid value 1.0"),
    ({"simulation.maintenance_fractions": []}, r"simulation.maintenance_fractions: invalid value \(\)"),
    ({"simulation.haircut_factors": [-1.0]}, r"simulation.haircut_factors: invalid value \(-1.0,\)"),
    ({"simulation.model": "nosuch"}, r"simulation.model: 'nosuch' is not a model of the run"),
    ({"portfolio.models": ["gbm", "nosuch"]}, r"portfolio.models: 'nosuch' is not a model of the run"),  # "--models"
])
def test_run_values_refused_after_training_and_backtest_stop_at_load(overrides, message):
    """Each passed the loader and was refused by its stage only after training and backtest (~20 min on
    crypto-hourly.yaml); the message names the run config's key."""
    from volmargin.config import with_overrides

    with pytest.raises(ConfigError, match=rf"^--set: {message}"):
        with_overrides(RunConfig(), overrides)


def test_the_run_accepts_the_measures_models_and_simulation_values_it_forecasts():
    """The load checks keep what the stages take: a measure at a configured level, a baseline or learned model,
    ewma97 (built from the bars), a key of the simulation under its `volmargin simulate --set` name."""
    from volmargin.config import with_overrides

    cfg = with_overrides(RunConfig(), {"levels": [0.95, 0.975, 0.99], "calibration.policy.risk": "var95",
                                       "calibration.policy.haircut_risk": "es975", "simulation.model": "gbm",
                                       "portfolio.models": ["har", "ewma97", "blend"], "simulation.quantile": 0.95})
    assert cfg.calibration.policy["risk"] == "var95" and cfg.simulation.model == "gbm"
    with pytest.raises(ConfigError, match=r"^--set\.max_change: invalid value 0.0"):
        from_dict(SimulationSection, {"max_change": 0}, "--set")
