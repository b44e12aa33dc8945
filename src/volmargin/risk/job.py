"""`volmargin portfolio`: the portfolio margin job on a backtest run's forecasts and the bars.

Per model (every model of the forecasts and, with bars, the PAIRS filter `ewma97`): FHS scenarios, the
daily margin components of the test population (plus adversarial candidates, of which the adversary
holds, on each quarter, the worst on the year before it: `pf.adversarial_schedule`), the scale (with the
correlation weight fixed, or chosen from `correlation_weights`) and (with `concentrations`) the
concentration add-on's coefficient calibrated on the margin dates before `validation_start`, then the
summary per class on the dates from it, the stress events replayed,
and the scenario file of the last margin date for serving. Writes (atomically) in OUT:
summary.csv, calibration.csv, compare.csv, stress.csv, portfolio.json, scenarios-<model>.npz.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from volmargin_serving.bundle import real_number
from volmargin_serving.margins import MIN_BUFFER
from volmargin_serving.portfolio import PortfolioPolicy, PortfolioScenarios, write_scenarios

from volmargin.data.events import STRESS_EVENTS
from volmargin.errors import ConfigError, DataError
from volmargin.io import write_atomic, write_frame
from volmargin.progress import progress_counter
from volmargin.risk import portfolio as pf
from volmargin.risk.scenarios import FHS, FilterPanel, ScenarioConfig, day_array, ewma_panel, filter_panel, proxy_share

REFERENCES = ("ewma97", "gjr")


# the generated books' counts and their least values (the adversary needs candidates to pick from;
# n_adversarial=0 leaves its books out); with `gross`, the keys of `--population`
POPULATION_COUNTS = {"seed": 0, "n_random": 0, "n_baskets": 0, "n_alts": 0, "n_candidates": 1, "n_adversarial": 0}
POPULATION_KEYS = ("gross", *POPULATION_COUNTS)
MAX_BOOKS = 10_000  # books of one kind past which a calibration would not end (each is re-margined every day)


@dataclass(frozen=True)
class PortfolioJob:
    models: tuple[str, ...] | None = None  # None: every model in the forecasts, plus ewma97 with bars
    scenarios: ScenarioConfig = ScenarioConfig()
    policy: PortfolioPolicy = PortfolioPolicy()
    # concentration coefficients to calibrate jointly with the scale and the weight (e.g.
    # `portfolio.CONCENTRATION_GRID`); None: the policy's coefficient, fixed
    concentrations: tuple[float, ...] | None = None
    # correlation weights w to calibrate with the scale (the cheapest feasible pair wins); default: w fixed
    # at the one chosen on a hold-out (`portfolio.CALIBRATION_WEIGHTS`)
    correlation_weights: tuple[float, ...] = pf.CALIBRATION_WEIGHTS
    validation_start: str | None = None  # None: the middle margin date, rounded to a month start
    target: float = 0.01
    gross: float = 1e6
    seed: int = 0
    n_random: int = 60
    n_baskets: int = 20
    n_alts: int = 20
    n_candidates: int = 200
    n_adversarial: int = 20
    events: Mapping[str, tuple[str, str]] = field(default_factory=lambda: dict(STRESS_EVENTS))

    def __post_init__(self) -> None:
        self._check_population()
        if self.policy.buffer is not None and self.policy.buffer < MIN_BUFFER:  # as the single-asset policy
            raise ConfigError(f"portfolio policy.buffer: invalid value {self.policy.buffer!r} (EMIR RTS art. "
                              f"28(1)(a) asks >= {MIN_BUFFER})")
        if not (real_number(self.target) and 0 < self.target < 0.5):
            raise ConfigError(f"portfolio target: a breach rate in (0, 0.5) expected, got {_plain(self.target)!r}")
        if self.concentrations is not None and not (
                self.concentrations and all(np.isfinite(c) and c >= 0 for c in self.concentrations)):
            raise ConfigError(f"portfolio concentrations: expected non-negative numbers, got {self.concentrations!r}")
        if not (self.correlation_weights and all(real_number(w) and 0 <= w <= 1 for w in self.correlation_weights)):
            raise ConfigError(f"portfolio correlation weights: expected numbers in [0, 1], got {self.correlation_weights!r}")

    def _check_population(self) -> None:
        """The generated books' settings (`--population`, config `portfolio.population`), each key named."""
        if not (real_number(self.gross) and 0 < self.gross <= pf.MAX_NOTIONAL):
            raise ConfigError(f"portfolio population.gross: a number in (0, {pf.MAX_NOTIONAL:g}] expected, "
                              f"got {_plain(self.gross)!r}")
        for key, least in POPULATION_COUNTS.items():
            value, most = getattr(self, key), (math.inf if key == "seed" else MAX_BOOKS)
            if not (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and least <= value <= most):
                bounds = f">= {least}" if key == "seed" else f"in [{least}, {most:,}]"
                raise ConfigError(f"portfolio population.{key}: an integer {bounds} expected, got {_plain(value)!r}")


def _plain(value):
    """A numpy scalar as the Python number it holds, so that messages print 0.5, not np.float64(0.5)."""
    return value.item() if isinstance(value, np.generic) else value


def common_assets(forecasts: pd.DataFrame, daily: Mapping[str, pd.DataFrame] | None,
                  job: PortfolioJob) -> tuple[str, ...]:
    """The assets that every chosen model of the forecasts covers (the books' universe, so the models are
    compared on the same books); a `--portfolios` spec is read against them."""
    available = set(forecasts["model"].unique())
    wanted = job.models or (*available, *(["ewma97"] if daily else []))
    covered = [set(forecasts.loc[forecasts["model"] == m, "asset"]) for m in wanted if m in available]
    return tuple(sorted(set.intersection(*covered))) if covered else tuple(sorted(forecasts["asset"].unique()))


def _panels(forecasts: pd.DataFrame, daily: Mapping[str, pd.DataFrame] | None, job: PortfolioJob) -> list[FilterPanel]:
    """One FilterPanel per model, on `common_assets` and one daily grid."""
    available = sorted(forecasts["model"].unique())
    wanted = job.models or (*available, *(["ewma97"] if daily else []))
    assets = common_assets(forecasts, daily, job)
    if not assets:
        raise DataError(f"forecasts: no asset is forecast by every one of {', '.join(wanted)}")
    if len(assets) < 2:  # a portfolio across assets needs two; one asset's margin is `volmargin calibrate`'s
        raise DataError(f"forecasts: portfolio margin needs two assets or more forecast by every one of "
                        f"{', '.join(wanted)}; the run has {', '.join(assets)} only (one asset: `volmargin calibrate`)")
    origins = pd.date_range(forecasts["origin"].min(), forecasts["origin"].max(), freq="D")
    panels = []
    for model in wanted:
        if model == "ewma97":
            if not daily:
                raise ConfigError("model ewma97 (the PAIRS filter) needs the bars (--data)")
            horizon = int(forecasts["horizon"].iloc[0])
            missing = [a for a in assets if a not in daily]
            if missing:
                raise DataError(f"--data: no bars for {', '.join(missing[:5])} (assets of the forecasts)")
            panels.append(ewma_panel({a: daily[a] for a in assets}, 0.97, horizon, origins))
        elif model in available:
            panels.append(filter_panel(forecasts, model, assets, origins))
        else:
            raise ConfigError(f"--models: {model!r} has no forecasts in the run; available: {', '.join(available)}, ewma97")
    return panels


def _validation_start(dates: pd.DatetimeIndex, job: PortfolioJob) -> pd.Timestamp:
    if job.validation_start is not None:
        start = pd.Timestamp(job.validation_start)
        return start.tz_localize("UTC") if start.tzinfo is None else start
    middle = dates[len(dates) // 2]
    return pd.Timestamp(year=middle.year, month=middle.month, day=1, tz="UTC")


def _progress(desc: str, enabled: bool = True):
    bar = progress_counter(None, desc, "day", enabled, leave=False)

    def update(i: int, n: int) -> None:
        bar.total = n
        bar.update(1)
        if i == n - 1:
            bar.close()
    return update


def scenario_file(fhs: FHS, t: int, policy: PortfolioPolicy, model: str) -> PortfolioScenarios:
    """The scenario set of margin date index t as shipped to serving (z, stressed returns, fallbacks)."""
    rows = fhs.rows(t)
    z = fhs.z[rows]
    sigma = fhs.panel.sigma[rows[0]: t + 1]
    with np.errstate(all="ignore"):
        fallback = np.where(np.isfinite(sigma).any(0), np.nanmax(np.where(np.isfinite(sigma), sigma, -np.inf), 0), np.nan)
    stress = fhs.raw[fhs.stress_rows(t)] if policy.stress_mode != "none" else None
    return PortfolioScenarios(fhs.panel.assets, z, day_array(fhs.panel.origins[rows]),
                              None, stress, fallback, policy, model, str(fhs.panel.origins[t].date()),
                              {"proxy_share": proxy_share(fhs.scenarios(t)), "proxy": fhs.config.proxy},
                              fhs.move_cap(t))


@dataclass(frozen=True)
class ModelPanel:
    """One model's margin components of the books over its margin dates (`pf.BookPanel`), the books'
    classes, which rows are the calibration period, its validation start and its scenario generator."""

    fhs: FHS
    bp: pf.BookPanel
    classes: np.ndarray
    cal_rows: np.ndarray
    start: pd.Timestamp
    last_day: int  # the grid index of the last margin date (the served scenario file's)
    names: tuple[str, ...] = ()  # the books' names, in the panel's column order


def model_panels(forecasts: pd.DataFrame, daily: Mapping[str, pd.DataFrame] | None, job: PortfolioJob,
                 population: pf.Population | None = None, progress: bool = True):
    """Per model, its `ModelPanel` (a generator: one model's panel in memory at a time). The generated
    population gets the adversarial books: on each block of margin dates (quarters, cut at the validation
    start) the candidates that were worst on the year before it (`pf.adversarial_schedule`), each scored
    only on the blocks it was picked for, in calibration and validation alike."""
    panels = _panels(forecasts, daily, job)
    assets = panels[0].assets
    generated = population is None
    base = pf.make_population(assets, job.gross, job.seed, job.n_random, job.n_baskets, n_alts=job.n_alts) \
        if generated else population
    candidates = pf.adversarial_candidates(assets, job.n_candidates, job.gross, job.seed + 1) if generated else None
    books = base + candidates if generated else base
    if generated and not (len(base.names) or job.n_adversarial):
        raise ConfigError(f"portfolio population: no books on {', '.join(assets)} (n_random, n_baskets, n_alts "
                          "and n_adversarial give none)")
    adv = pf.rolling_adv(daily, assets, panels[0].origins) if daily else None
    for panel in panels:
        fhs = FHS(panel, job.scenarios)
        days = np.flatnonzero([fhs.enough(t) for t in range(len(panel.origins))])
        if not len(days):
            raise DataError(f"model {panel.model}: no margin date has {job.scenarios.min_scenarios} scenario dates")
        start = _validation_start(panel.origins[days], job)
        dates = panel.origins[days]
        cal_days, val_days = days[dates + pd.Timedelta(days=panel.horizon) < start], days[dates >= start]
        if not len(cal_days) or not len(val_days):
            raise ConfigError(f"validation_start {start.date()}: margin dates run {dates[0].date()} .. "
                              f"{dates[-1].date()} (the first needs {job.scenarios.min_scenarios} scenario dates "
                              "of forecasts before it); both periods need dates")
        counter = lambda: _progress(f"{panel.model} margins", progress)  # noqa: E731 - a fresh bar per pass
        bp = pf.book_panel(fhs, books, job.policy, adv, np.concatenate([cal_days, val_days]), counter(),
                           job.concentrations or ())
        classes, names = base.classes, books.names
        if generated:  # the adversary's books: candidates it held on some block, scored only where held
            first = len(base.names)
            held = pf.adversarial_schedule(bp.columns(np.arange(first, len(books.names))), panel.horizon,
                                           pf.adversary_blocks(bp.dates, [start]), job.n_adversarial)
            picked = np.flatnonzero(held.any(0))
            keep = np.concatenate([np.arange(first), first + picked])
            bp = bp.columns(keep)
            bp = dataclasses.replace(bp, alive=np.hstack([bp.alive[:, :first], held[:, picked]]))
            classes = np.concatenate([base.classes, np.full(len(picked), "adversarial", dtype=object)])
            names = books.subset(keep).names
        yield ModelPanel(fhs, bp, classes, np.arange(len(bp.dates)) < len(cal_days), start, int(days[-1]), names)


def run_portfolio(forecasts: pd.DataFrame, daily: Mapping[str, pd.DataFrame] | None, job: PortfolioJob,
                  out: Path, population: pf.Population | None = None, progress: bool = True) -> dict[str, pd.DataFrame]:
    """Run the job and write its outputs in `out`; returns the tables. `progress`: a bar on a terminal, a
    line a minute in a log file (`volmargin.progress`)."""
    if not daily and (job.policy.concentration > 0 or any(c > 0 for c in job.concentrations or ())):
        raise ConfigError("a concentration add-on reads the assets' traded volumes: give the bars (--data), or "
                          "leave the concentration at 0 (without them it would add nothing, in silence)")
    began = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    summaries, calibrations, stresses, record = [], [], [], {"models": {}}
    for mp in model_panels(forecasts, daily, job, population, progress):
        fhs, bp, classes, cal_rows, start = mp.fhs, mp.bp, mp.classes, mp.cal_rows, mp.start
        panel, assets = fhs.panel, fhs.panel.assets
        # the generated population's base books (the adversarial ones are picked per model), or the spec's
        books = len(population.names) if population is not None else int((classes != "adversarial").sum())
        val_rows = ~cal_rows
        cal = pf.calibrate_books(bp, classes, cal_rows, job.policy, job.target, grid=job.correlation_weights,
                                 concentrations=job.concentrations)
        calibrations.append(cal.table.assign(model=panel.model, chosen=lambda t: (t["scale"] == cal.policy.scale)
                                             & (t["correlation_weight"] == cal.policy.correlation_weight)
                                             & (t["concentration"] == cal.policy.concentration)))
        summaries.append(pf.summarise(bp, classes, val_rows, cal.policy, job.target, panel.horizon).assign(
            feasible=cal.feasible, validation_start=start.date()))
        stresses.append(pf.stress_replay(bp, classes, cal.policy, job.events, start))
        counted = bp.alive & ~np.isnan(bp.loss) & cal_rows[:, None]
        without_volume = int((counted & ~pf.calibration_rows(bp, cal_rows, cal.table["concentration"])).sum())
        latest = write_scenarios(out / f"scenarios-{panel.model}.npz", scenario_file(fhs, mp.last_day, cal.policy,
                                                                                    panel.model))
        record["models"][panel.model] = {
            "scale": cal.policy.scale, "correlation_weight": cal.policy.correlation_weight,
            "concentration": cal.policy.concentration, "feasible": cal.feasible,
            "margin_dates": [str(bp.dates[0].date()), str(bp.dates[-1].date())], "validation_start": str(start.date()),
            "scenario_file": latest.name, "proxy": job.scenarios.proxy,
            # calibration book-days left out: an asset held without a usable traded volume (`pf.calibration_rows`)
            "calibration_book_days_without_volume": without_volume,
            "proxy_share_last_date": proxy_share(fhs.scenarios(mp.last_day))}
    summary = pd.concat(summaries, ignore_index=True)
    tables = {"summary": summary, "calibration": pd.concat(calibrations, ignore_index=True),
              "compare": compare(summary), "stress": pd.concat(stresses, ignore_index=True)}
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        write_frame(table, out / f"{name}.csv")
    record.update(job=json.loads(json.dumps(dataclasses.asdict(job), default=str)), assets=list(assets),
                  books=books, generated_population=population is None, seconds=round(time.perf_counter() - began, 1))
    write_atomic(out / "portfolio.json", lambda p: p.write_text(json.dumps(record, indent=2, default=str)))
    return tables


def compare(summary: pd.DataFrame) -> pd.DataFrame:
    """Average margin of each model over each reference (ewma97, gjr) per class, both calibrated to the
    same breach target (equal coverage), with both breach rates beside it."""
    rows = []
    for ref in REFERENCES:
        base = summary[summary["model"] == ref].set_index("portfolio_class")
        if base.empty:
            continue
        for _, row in summary[summary["model"] != ref].iterrows():
            if row["portfolio_class"] in base.index:
                other = base.loc[row["portfolio_class"]]
                rows.append({"portfolio_class": row["portfolio_class"], "model": row["model"], "reference": ref,
                             "margin_ratio": row["avg_margin"] / other["avg_margin"],
                             "breach_rate": row["breach_rate"], "reference_breach_rate": other["breach_rate"]})
    return pd.DataFrame(rows, columns=["portfolio_class", "model", "reference", "margin_ratio", "breach_rate",
                                       "reference_breach_rate"])
