"""Training pipeline configs: small dataclasses loaded from YAML, every key checked.

A wrong key name, type or range ends in one ConfigError naming the file and the dotted key, e.g.
`training/configs/x.yaml: data.pathz: unknown key; expected one of paths, exclude, min_bars`.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from volmargin.errors import ConfigError
from volmargin.simulation.engine import MAX_ORACLE_DELAY


MAX_HORIZON = 30  # days: a margin period of risk; longer leaves the models too few training targets

@dataclass(frozen=True)
class DataConfig:
    paths: tuple[str, ...] = ()  # files, folders or globs; empty = the built-in synthetic market
    exclude: tuple[str, ...] = ()  # glob patterns of file names to leave out (e.g. "*_perp_*")
    min_bars: int | None = None
    synthetic_assets: int = 4
    synthetic_days: int = 1095
    seed: int = 0
    # asset-name pattern -> implied-volatility index file (Deribit DVOL), e.g. {"*btc*": iv/deribit_btc_dvol_1d.csv.gz}:
    # the daily frames of the assets a pattern matches carry the index, for models with `iv_features: true`
    iv: dict[str, str] = field(default_factory=dict)

    def validate(self, prefix: str = "data") -> None:
        for pattern, path in self.iv.items():
            if not isinstance(pattern, str) or not isinstance(path, str) or not pattern or not path:
                raise ConfigError(f"{prefix}.iv: expected asset-name patterns mapped to DVOL files, got "
                                  f"{pattern!r}: {path!r}")


@dataclass(frozen=True)
class WindowConfig:
    train_start: str | None = None
    train_end: str = "2021-12-31"  # last day the model learns from; evaluation targets start the day after
    eval_end: str | None = None  # last evaluation origin; default: end of data
    min_train_days: int = 365  # history an asset needs before it is evaluated (it is trained on regardless)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "nn"
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrackingConfig:
    uri: str | None = None  # default: sqlite:///mlflow.db in the working folder, artifacts in mlruns/
    experiment: str = "volmargin"
    registered_model: str | None = None  # default: volmargin-<model name>


SCORED_LEVELS = (0.975, 0.99)  # every run scores the 99% VaR and the 97.5% ES (volmargin.evaluation.scoring)


def levels_problem(levels: tuple[float, ...]) -> str | None:
    """Why `levels` cannot be forecast and scored, or None."""
    if not levels or not all(0.5 < x < 1 for x in levels):
        return f"each must lie in (0.5, 1), got {list(levels)}"
    if any(x not in levels for x in SCORED_LEVELS):
        return f"must include 0.99 (VaR backtests) and 0.975 (ES backtest), got {list(levels)}"
    if len(set(levels)) != len(levels):
        return f"each at most once, got {list(levels)}"
    if any(round(x, 4) != x for x in levels):  # column names carry a level in 4 digits (var99, var9995)
        return f"at most 4 decimals each, got {list(levels)}"
    return None


LEARNED_MODELS = ("nn", "gbm", "blend")  # the models with tail outputs per level (`volmargin.models._LEARNED`)


def with_levels(params: dict, levels: tuple[float, ...], key: str) -> dict:
    """A copy of a learned model's parameters with the config's `levels` (a model forecasts the levels it was
    trained on; with other levels than its default it failed after the fit); its own, if given, must agree."""
    wanted = tuple(sorted(float(x) for x in levels))
    given = params.get("levels")
    if given is not None and (not isinstance(given, (list, tuple)) or tuple(sorted(given)) != wanted):
        raise ConfigError(f"{key}.levels: {given!r} differ from levels {list(wanted)}; leave it out (the config's "
                          "levels are passed on)")
    return {**params, "levels": wanted}


@dataclass(frozen=True)
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    horizon: int = 1
    levels: tuple[float, ...] = (0.975, 0.99)
    output: str = "runs/train"

    def __post_init__(self) -> None:
        if not 1 <= self.horizon <= MAX_HORIZON:
            raise ConfigError(f"horizon: must lie in 1 .. {MAX_HORIZON} days (a margin period of risk), got {self.horizon}")
        if problem := levels_problem(self.levels):
            raise ConfigError(f"levels: {problem}")
        if self.model.name in LEARNED_MODELS and isinstance(self.model.params, dict):
            params = with_levels(self.model.params, self.levels, "model.params")
            object.__setattr__(self, "model", dataclasses.replace(self.model, params=params))
        if self.data.min_bars is not None and self.data.min_bars < 1:
            raise ConfigError(f"data.min_bars: must be >= 1, got {self.data.min_bars}")
        dates = {k: self.timestamp(k) for k in ("train_start", "train_end", "eval_end")}
        if not 30 <= self.window.min_train_days <= 36_500:
            raise ConfigError(f"window.min_train_days: must lie in 30 .. 36500, got {self.window.min_train_days}")
        if self.data.seed < 0:
            raise ConfigError(f"data.seed: must be >= 0, got {self.data.seed}")
        for earlier, later in (("train_start", "train_end"), ("train_end", "eval_end")):
            if dates[earlier] is not None and dates[later] is not None and dates[earlier] >= dates[later]:
                raise ConfigError(f"window.{earlier} ({dates[earlier].date()}) must come before window.{later}")

    def timestamp(self, key: str) -> pd.Timestamp | None:
        return _date(f"window.{key}", getattr(self.window, key))


BASELINE_MODELS = ("hist", "ewma", "garch", "gjr", "har", "fhs")
# arch starts a variance recursion from a backcast of the first 75 returns it is given: a GARCH forecast needs that
# much history before its first origin, or the backcast reads days after it
ARCH_BACKCAST_DAYS = 75


@dataclass(frozen=True)
class BacktestSection:
    start: str | None = None  # first forecast origin of the walk-forward backtest (default: min_train_days in)
    baselines: tuple[str, ...] = BASELINE_MODELS
    refit_every: int = 20  # days between baseline refits
    learned_refit_every: int = 90  # days between learned-model refits (each is a full training)


@dataclass(frozen=True)
class CalibrationSection:
    end: str | None = None  # last day of the first calibration window (default: window.train_end)
    recalibrate: str | None = "YS"  # pandas frequency of rolling re-calibration, or null for one calibration
    policy: dict[str, Any] = field(default_factory=dict)  # volmargin.calibration.PolicyConfig fields


@dataclass(frozen=True)
class PortfolioSection:
    """The `portfolio` stage of `volmargin run` (see `volmargin.risk.job.PortfolioJob`)."""

    enabled: bool = True
    models: tuple[str, ...] | None = None  # default: the champion and the references ewma97, gjr
    validation_start: str | None = None  # default: the day after calibration.end
    policy: dict[str, Any] = field(default_factory=dict)  # volmargin_serving.portfolio.PortfolioPolicy fields
    concentrations: tuple[float, ...] | None = None  # concentration coefficients to calibrate (None: policy's)
    correlation_weights: tuple[float, ...] | None = None  # weights w to calibrate (None: portfolio.CALIBRATION_WEIGHTS)
    scenarios: dict[str, Any] = field(default_factory=dict)  # volmargin.risk.scenarios.ScenarioConfig fields
    population: dict[str, Any] = field(default_factory=lambda: {"n_random": 20, "n_baskets": 5, "n_alts": 4,
                                                                "n_candidates": 50, "n_adversarial": 10})


# sizes past which a simulation would not end (or not fit in memory) on one machine
SIMULATION_LIMITS = {"accounts": 1_000_000, "bootstrap_paths": 1_000, "oracle_delay": MAX_ORACLE_DELAY,
                     "oracle_cadence": 24, "entry_window": 24}


@dataclass(frozen=True)
class SimulationSection:
    """The optional simulate stage (volmargin.simulation.study): liquidations and bad debt of the breach-rate,
    solvency-calibrated and static policies; the same keys as `volmargin simulate --set`."""

    enabled: bool = False
    model: str | None = None  # forecasts that drive margins and paths; default har, else the champion
    validation_start: str | None = None  # default: the day after calibration.end
    accounts: int = 1000
    accounts_file: str | None = None  # CSV/Parquet: side, notional, leverage[, entry_step] (instead of drawing)
    long_share: float = 0.5
    leverage_median: float = 4.0
    leverage_sigma: float = 0.5
    at_max_leverage: float = 0.05  # share of accounts at the most leverage the initial margin allows
    entry_window: int = 1  # accounts open uniformly over the first this many hours
    bootstrap_paths: int = 4  # per origin day, beside its real replay
    impact: float | None = None  # Y of the square-root impact law; None: volmargin.simulation.DEFAULT_IMPACT
    open_interest: float = 0.5  # open interest / daily traded volume
    liquidation: str = "full"  # or partial
    oracle_delay: float = 0.0  # steps (hours)
    oracle_cadence: int = 1
    insurance_fund: float = 0.02  # fraction of open interest
    penalty: float = 0.01  # of the breach-rate and static policies
    quantile: float = 0.99
    max_bad_debt_fund: float = 0.01  # solvency target: quantile of 24 h bad debt / insurance fund
    every: str = "QS"  # solvency re-calibration blocks
    max_change: float = 0.15  # speed limit per block (quarterly blocks: about 5% a month)
    worst_period: str | None = "QS"  # the bad-debt target must hold in each quarter of the window (None: pooled)
    infeasible_change: float | None = None  # faster rise allowed when the target is infeasible within max_change
    maintenance_fractions: tuple[float, ...] = (0.5, 0.6, 0.75, 0.9)  # searched by the solvency calibration
    max_liquidations: float | None = 0.3  # p95 of 24 h liquidations / open interest (liquidations at risk) limit
    asset_collateral: float = 0.0  # share of accounts posting collateral in the asset itself (haircut applies)
    haircut_factors: tuple[float, ...] = (1.0,)  # haircut = factor x long initial margin; searched
    large_caps: tuple[str, ...] = ("btc", "eth")
    funding: str | None = None  # a funding file, e.g. ../shared/data/funding/funding_rates_8h.csv.gz
    seed: int = 0

    def validate(self, prefix: str = "simulation") -> None:
        """The values the simulation would only reject deep inside pandas or numpy, named by the key as
        written (`simulation.every` in a config, `--set.every` on the command line); `from_dict` calls it."""
        key = (lambda name: f"{prefix}.{name}" if prefix else name)
        _date(key("validation_start"), self.validation_start)
        for name in ("every", "worst_period"):
            _frequency(key(name), getattr(self, name))
        if self.seed < 0:
            raise ConfigError(f"{key('seed')}: must be >= 0, got {self.seed}")
        for name, value in vars(self).items():  # an inf passes every range check below (oracle_delay=inf: no bad debt)
            values = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v) for v in values):
                raise ConfigError(f"{key(name)}: invalid value {value!r} (a finite number)")
        for name, most in SIMULATION_LIMITS.items():
            if getattr(self, name) > most:
                raise ConfigError(f"{key(name)}: at most {most:,} here, got {getattr(self, name)!r}")
        from volmargin.simulation.accounts import first_invalid

        bad = first_invalid(vars(self))  # the population's ranges at load, not after training and backtest
        if bad:
            raise ConfigError(f"{key(bad)}: invalid value {getattr(self, bad)!r}")
        if self.insurance_fund <= 0:  # the figures and the target are fractions of the fund
            raise ConfigError(f"{key('insurance_fund')}: must be > 0 (bad debt is measured against the fund), "
                              f"got {self.insurance_fund}")
        from volmargin.simulation.study import study_config

        try:  # the simulation's own checks (impact, open_interest, penalty, quantile, max_change, the grids) at load
            study_config(self, "2000-01-01", {})
        except ConfigError as exc:  # they name simulation[.solvency].KEY; the key as written is this section's
            raise ConfigError(re.sub(r"^simulation\.(solvency\.)?", key(""), str(exc))) from None


# the default margin policy of `volmargin run`: 99% VaR with every EMIR art. 28 tool and speed limits
APC_POLICY = {"risk": "var99", "target_breach_rate": 0.01, "maintenance_fraction": 0.75, "buffer": 0.25,
              "stressed_floor": True, "lookback_floor": True, "max_up": 0.5, "max_down": 0.1}


@dataclass(frozen=True)
class RunConfig:
    """`volmargin run`: data, the learned models and their training window, the walk-forward backtest,
    margin calibration, tracking, and where bundles and outputs go."""

    # defaults: the built-in job on the synthetic market (2021-01-01 .. 2023-12-31), = training/configs/default.yaml
    data: DataConfig = field(default_factory=DataConfig)
    window: WindowConfig = field(default_factory=lambda: WindowConfig(train_end="2022-06-30"))
    learned: dict[str, dict[str, Any]] = field(default_factory=lambda: {"nn": {"max_epochs": 10}, "gbm": {},
                                                                              "blend": {"weight": 0.7}})
    backtest: BacktestSection = field(default_factory=BacktestSection)
    calibration: CalibrationSection = field(default_factory=lambda: CalibrationSection(end="2022-12-31", policy=APC_POLICY))
    portfolio: PortfolioSection = field(default_factory=PortfolioSection)
    tracking: TrackingConfig = field(default_factory=lambda: TrackingConfig(registered_model="volmargin-demo"))
    simulation: SimulationSection = field(default_factory=SimulationSection)
    horizon: int = 1
    levels: tuple[float, ...] = (0.975, 0.99)
    models_root: str = "models"
    output: str = "runs/main"

    def __post_init__(self) -> None:
        if self.window.eval_end is not None:  # the run's backtest, calibration and export read every day after it
            raise ConfigError("window.eval_end: `volmargin run` reads its data to the end (it was ignored but by the "
                              "train stage); end the data there instead, or use `volmargin train`")
        unknown = set(self.learned) - {"nn", "gbm", "blend"}
        if not self.learned or unknown:
            raise ConfigError(f"learned: expected a mapping with nn, gbm and/or blend, got {sorted(self.learned)}")
        for name, params in list(self.learned.items()):
            if params is not None and not isinstance(params, dict):
                raise ConfigError(f"learned.{name}: expected a mapping of its parameters (or nothing), got {params!r}")
            self.learned[name] = params or {}  # nothing: the model's defaults
        if "blend" in self.learned:  # members not given: the run's own gbm and nn (last, so it can reuse them)
            from volmargin.models.blend import BlendForecaster

            blend = dict(self.learned["blend"] or {})
            for member in BlendForecaster.members(blend):
                if member not in blend:
                    if member not in self.learned:
                        raise ConfigError(f"learned.blend: give its {member} member's parameters (blend: {{{member}: "
                                          f"{{...}}}}) or configure learned.{member}")
                    blend[member] = {k: v for k, v in (self.learned[member] or {}).items() if k != "levels"}
            learned = {k: v for k, v in self.learned.items() if k != "blend"} | {"blend": blend}
            object.__setattr__(self, "learned", learned)
        if not levels_problem(self.levels):
            object.__setattr__(self, "learned", {name: with_levels(params, self.levels, f"learned.{name}")
                                                 for name, params in self.learned.items()})
        if set(self.backtest.baselines) - set(BASELINE_MODELS):
            raise ConfigError(f"backtest.baselines: unknown {sorted(set(self.backtest.baselines) - set(BASELINE_MODELS))}; "
                              f"expected some of {', '.join(BASELINE_MODELS)}")
        if {"garch", "gjr"} & set(self.backtest.baselines) and self.window.min_train_days < ARCH_BACKCAST_DAYS:
            raise ConfigError(f"window.min_train_days {self.window.min_train_days}: the garch and gjr baselines need at "
                              f"least {ARCH_BACKCAST_DAYS} days (arch's backcast reads the first {ARCH_BACKCAST_DAYS} "
                              "days of a forecast's history)")
        if not 1 <= min(self.backtest.refit_every, self.backtest.learned_refit_every) <= max(
                self.backtest.refit_every, self.backtest.learned_refit_every) <= 36_500:
            raise ConfigError("backtest.refit_every and backtest.learned_refit_every must lie in 1 .. 36500 days")
        for key in ("start",):
            _date(f"backtest.{key}", getattr(self.backtest, key))
        _date("calibration.end", self.calibration.end)
        _frequency("calibration.recalibrate", self.calibration.recalibrate)
        TrainConfig(data=self.data, window=self.window, horizon=self.horizon, levels=self.levels)  # same checks
        _check_policy(self.calibration.policy, self.levels)
        _check_portfolio_keys(self.portfolio)
        _check_model_names(self)


    def train_config(self, name: str) -> TrainConfig:
        """The `volmargin train` config of one learned model of this run."""
        registered = f"{self.tracking.registered_model or 'volmargin'}-{name}"  # e.g. volmargin-gbm
        return TrainConfig(data=self.data, window=self.window, model=ModelConfig(name, dict(self.learned[name])),
                           tracking=dataclasses.replace(self.tracking, registered_model=registered),
                           horizon=self.horizon, levels=self.levels, output=str(Path(self.output) / f"train-{name}"))


def _check_policy(policy: dict[str, Any], levels: tuple[float, ...]) -> None:
    """calibration.policy at load, not after training and backtest: known keys, types, ranges, and measures
    (risk, haircut_risk) among the columns the run forecasts at its levels."""
    from volmargin.calibration.panel import missing_risk
    from volmargin.calibration.policy import PolicyConfig
    from volmargin.models.base import SIDES, level_tag

    try:
        config = from_dict(PolicyConfig, policy, "calibration.policy")
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith("calibration.") else f"calibration.{message}") from None
    stems = [f"{kind}{level_tag(level)}" for kind in ("var", "es") for level in sorted(levels)]
    if found := missing_risk(config, [f"{stem}_{side}" for stem in stems for side in SIDES]):
        raise ConfigError(f"calibration.policy.{found[0]}: {getattr(config, found[0])!r} is not forecast at the "
                          f"levels {list(levels)}; expected one of {', '.join(stems)}")


def _check_model_names(cfg: RunConfig) -> None:
    """simulation.model and portfolio.models at load: a name the run does not forecast failed their stages after
    training and backtest (ewma97, the PAIRS filter, is built from the bars by the portfolio stage)."""
    models = (*cfg.backtest.baselines, *cfg.learned)
    if cfg.simulation.model is not None and cfg.simulation.model not in models:
        raise ConfigError(f"simulation.model: {cfg.simulation.model!r} is not a model of the run; expected one of "
                          f"{', '.join(models)}")
    unknown = [m for m in cfg.portfolio.models or () if m not in (*models, "ewma97")]
    if unknown:
        raise ConfigError(f"portfolio.models: {unknown[0]!r} is not a model of the run; expected some of "
                          f"{', '.join(models)}, ewma97")

def holds(rule, value) -> bool:
    """`rule(value)`, False where the value is of a type the rule cannot read (NaN fails every comparison):
    the range checks of settings (`PolicyConfig`, the learned models' `training.PARAMETER_RANGES`)."""
    try:
        return bool(rule(value))
    except (TypeError, ValueError, IndexError):
        return False


def _check_portfolio_keys(section: PortfolioSection) -> None:
    """portfolio.policy / scenarios / population at load: only the keys their classes take, with values
    they accept (either failed the portfolio stage after training and backtest)."""
    from volmargin_serving.portfolio import PortfolioPolicy

    from volmargin.risk.job import POPULATION_KEYS, PortfolioJob
    from volmargin.risk.scenarios import ScenarioConfig

    for name, keys in (("policy", [f.name for f in dataclasses.fields(PortfolioPolicy)]),
                       ("scenarios", [f.name for f in dataclasses.fields(ScenarioConfig)]),
                       ("population", list(POPULATION_KEYS))):
        unknown = [key for key in getattr(section, name) if key not in keys]
        if unknown:
            raise ConfigError(f"portfolio.{name}.{unknown[0]}: unknown key; expected one of {', '.join(keys)}")
    _date("portfolio.validation_start", section.validation_start)  # the stage read 05/06/2022 month first
    grids = {"concentrations": section.concentrations}
    if section.correlation_weights is not None:
        grids["correlation_weights"] = section.correlation_weights
    try:  # the values, as the stage will build them
        PortfolioJob(policy=PortfolioPolicy(**section.policy), scenarios=ScenarioConfig(**section.scenarios),
                     **section.population, **grids)
    except (TypeError, ValueError, OverflowError) as exc:
        message = str(exc)
        raise ConfigError(message if message.startswith("portfolio") else f"portfolio: {message}") from None


def _date(key: str, value: str | None) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(value).strip()):  # 03/04/2022 would be read month first
            raise ValueError(value)
        return pd.Timestamp(str(value).strip(), tz="UTC")
    except (ValueError, TypeError):
        raise ConfigError(f"{key}: not a date: {value!r} (use YYYY-MM-DD)") from None


def _frequency(key: str, value: str | None) -> None:
    if value is None:
        return
    try:
        offset = pd.tseries.frequencies.to_offset(value)
    except ValueError:
        raise ConfigError(f"{key}: not a pandas frequency: {value!r} (e.g. QS, MS, YS)") from None
    if offset.n <= 0:  # 0D divided by zero; -1D calibrated once, in silence
        raise ConfigError(f"{key}: {value!r} does not move forward; give a positive frequency (e.g. QS, MS, 90D)")
    monday = pd.Timestamp("2024-01-01")  # a step from a Monday midnight: business hours (bh) step within the day
    if monday + offset - monday < pd.Timedelta(days=1):  # hourly re-calibration of daily forecasts never ended
        raise ConfigError(f"{key}: {value!r} is shorter than a day; give a daily or longer one (e.g. QS, MS, 90D)")


def _convert(key: str, hint: Any, value: Any) -> Any:
    """Check `value` against a type hint of the config dataclasses and convert lists to tuples."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        return _convert(key, next(a for a in args if a is not type(None)), value)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_convert(f"{key}[{i}]", args[0], v) for i, v in enumerate(value))
    if origin is dict or hint is Any:
        if origin is dict and not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls: type, values: Any, prefix: str = "") -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in known:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"{where}: unknown key; expected one of {', '.join(known)}")
    kwargs = {k: _convert(f"{prefix}.{k}" if prefix else k, hints[k], v) for k, v in values.items()}
    result = cls(**kwargs)
    if hasattr(result, "validate"):  # checks whose messages need the key's prefix (the class cannot know it)
        result.validate(prefix)
    return result


class _Loader(yaml.SafeLoader):
    """Safe YAML that keeps dates as text, so a bad date is reported with its key, not by PyYAML, and refuses
    a key given twice in one mapping (PyYAML keeps the last silently: a second `horizon:` trained another model)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {key!r} appears twice in one mapping "
                                                        f"(line {key_node.start_mark.line + 1})", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_NUMBERS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
_Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] not in ("tag:yaml.org,2002:timestamp", *_NUMBERS)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# numbers as anyone means them, not as YAML 1.1 reads them: 1:30 (base 60: 90) and 0365 (octal: 245) stay text,
# so the key that wants a number says so; 1e-3 and 1e9 (no dot; text in YAML 1.1) are floats
_Loader.add_implicit_resolver(
    _NUMBERS[0], re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
_Loader.add_implicit_resolver(_NUMBERS[1], re.compile(r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+][0-9]+)?
                                                      |[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?
                                                      |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X),
                              list("-+.0123456789"))
_Loader.add_implicit_resolver(_NUMBERS[1], re.compile(r"^[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
                              list("-+.0123456789"))


def parse_overrides(texts: str | list[str], option: str | None = "--set") -> dict[str, Any]:
    """`KEY=VALUE[,KEY=VALUE...]` with dotted keys (`window.train_end=2024-06-30,learned.gbm.n_estimators=300`),
    values read as YAML scalars or flow lists the way a config file reads them (dates stay text; a list is
    `data.paths=[my/bars/]`); several texts (`--set` given more than once) add up, and a key given twice is
    refused, as in a config file. Errors start with `option` (None: argparse names it)."""
    lead = f"{option}: " if option else ""
    values: dict[str, Any] = {}
    for text in [texts] if isinstance(texts, str) else texts:
        pairs = [item.split("=", 1) for item in re.split(r",(?![^\[]*\])", text) if item.strip()]  # not in [...]
        if not pairs or any(len(pair) != 2 or not all(part for part in pair[0].strip().split(".")) for pair in pairs):
            raise ConfigError(f"{lead}expected KEY=VALUE[,KEY=VALUE...] (keys dotted as window.train_end where "
                              f"they name a config's; no comma inside a value but in [...]), got {text!r}")
        for key, value in pairs:
            try:
                parsed = yaml.load(value, Loader=_Loader)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{option or ''} {key.strip()}: not a value: {str(exc).splitlines()[0]}".strip()
                                  ) from None
            # a key given twice, also once dotted and once inside a mapping (the later one won in silence)
            leaves = set(_leaves(key.strip(), parsed))
            if twice := sorted(leaves & {leaf for k, v in values.items() for leaf in _leaves(k, v)}):
                raise ConfigError(f"{lead}{twice[0]} is given twice")
            values[key.strip()] = parsed
    return values


def _leaves(key: str, value: Any) -> list[str]:
    """The dotted keys a `--set` value sets: a mapping's keys under `key` (an empty mapping: `key` itself)."""
    if isinstance(value, dict) and value and key not in REPLACED_SECTIONS:
        return [leaf for sub, item in value.items() for leaf in _leaves(f"{key}.{sub}", item)]
    return [key]


def with_overrides(cfg: Any, overrides: dict[str, Any]) -> Any:
    """`cfg` (a config dataclass) with each dotted key set, checked as a config file's keys are (errors name
    the dotted key): the command line's `--set`, e.g. to move a shipped config's dates onto other data."""
    values = dataclasses.asdict(cfg)
    if "levels" in overrides:  # the config's levels, passed into each model's parameters, follow the new ones
        models = [*values.get("learned", {}).values(), values.get("model", {}).get("params", {})]
        for params in models:
            if tuple(params.get("levels") or ()) == tuple(getattr(cfg, "levels", ())):
                params.pop("levels")
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        node = values
        for depth, key in enumerate(parents):
            child = node.get(key) if isinstance(node, dict) else None
            if child is None and isinstance(node, dict):
                child = node[key] = {}  # an optional section given for the first time
            if not isinstance(child, dict):
                raise ConfigError(f"--set {dotted}: {'.'.join(parents[:depth + 1])} is not a section")
            node = child
        node[last] = _merged(node.get(last), value, dotted)
    try:
        return from_dict(type(cfg), values)
    except ConfigError as exc:
        hint = " (a list on the command line: KEY=[a,b])" if "expected a list" in str(exc) else ""
        raise ConfigError(f"--set: {exc}{hint}") from None


# sections that map names to entries, which a `--set` mapping replaces as a whole (`learned={gbm: {}}` runs the
# GBM alone); any other mapping (a policy, a model's parameters) it overlays key by key
REPLACED_SECTIONS = ("learned", "data.iv")


def _merged(current: Any, value: Any, key: str = "") -> Any:
    """`value` over `current` at dotted `key`: a mapping over a mapping key by key (but `REPLACED_SECTIONS` and an
    empty mapping), anything else replacing it. A mapping replaced a whole section: `--set 'calibration.policy={buffer: 0.5}'`
    dropped the floors and speed limits, and the margins fell 30% (session 31's red team)."""
    if isinstance(current, dict) and isinstance(value, dict) and value and key not in REPLACED_SECTIONS:
        return {**current, **{sub: _merged(current.get(sub), item, f"{key}.{sub}") for sub, item in value.items()}}
    return value  # an empty mapping empties the section


def load_config(path: str | Path, kind: type = None) -> Any:
    """A `TrainConfig` (default) or `RunConfig` from YAML; errors name the file and the dotted key."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        values = yaml.load(path.read_bytes().decode("utf-8"), Loader=_Loader) or {}
        return from_dict(kind or TrainConfig, values)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the config as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
