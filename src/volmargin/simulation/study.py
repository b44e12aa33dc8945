"""The simulation stage: every asset of a backtest run through the policies (`volmargin.simulation.solvency`;
plus `breach_plain`, the breach-rate calibration without its APC tools, when the policy has any), on real replays,
bootstrapped paths and the stress events, with the solvency calibration (and the static schedule's multiplier
at equal solvency, `static_solvent`) in between.

Periods: forecasts realised before `validation_start` calibrate (the breach-rate and the solvency
calibration both; each re-calibrates walk-forward after it); `summary` scores the origins from
`validation_start` on (out of sample) and, separately, those before it; `stress` replays every event the
bars cover with the terms each policy set on its eve (`out_of_sample` False for events before
`validation_start`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from volmargin.calibration.autocalibrate import utc
from volmargin.calibration.policy import PolicyConfig
from volmargin.errors import ConfigError, DataError
from volmargin.simulation.funding import study_rates
from volmargin.simulation.metrics import summarize
from volmargin.simulation.paths import PathSet, bootstrap_paths, event_paths, replay_paths
from volmargin.simulation.scenarios import SimulationSettings, run_paths
from volmargin.simulation.solvency import (AssetCase, SolvencyTarget, Terms, asset_panel, breach_paths, breach_terms,
                                           calibrate_solvency, calibrate_static, solvency_terms, static_terms)

SUMMARY_COLUMNS = ["asset", "policy", "period", "kind", "paths", "bad_debt_mean", "bad_debt_p95", "bad_debt_p99",
                   "bad_debt_fund_p95", "bad_debt_fund_p99", "meets_target", "liquidations_p95",
                   "liquidations_p99", "fund_drawdown_p99", "cascade_mean", "cascade_p99", "unconverged",
                   "avg_margin"]
STRESS_COLUMNS = ["event", "asset", "policy", "eve", "out_of_sample", "initial_long", "initial_short",
                  "bad_debt", "bad_debt_fund", "liquidated", "cascade", "move", "cascade_share", "cascade_free_bad_debt"]


@dataclass(frozen=True)
class StudyConfig:
    model: str = "har"  # the forecasts whose risk and variance drive the margin rule and the paths
    validation_start: str = "2022-01-01"
    breach_policy: dict = field(default_factory=dict)  # volmargin.calibration.PolicyConfig fields (today's)
    recalibrate: str = "YS"  # breach-rate re-calibration cadence
    large_caps: tuple[str, ...] = ("btc", "eth")  # name tags of the static schedule's large caps
    funding: str | None = None  # a funding file (volmargin.simulation.funding); None: no funding
    settings: SimulationSettings = field(default_factory=SimulationSettings)
    target: SolvencyTarget = field(default_factory=SolvencyTarget)


@dataclass
class StudyResult:
    summary: pd.DataFrame
    stress: pd.DataFrame
    solvency: pd.DataFrame  # the solvency calibration's blocks and the static_solvent multiplier (column policy)
    seconds: float = 0.0


def asset_case(forecasts: pd.DataFrame, bars: pd.DataFrame, asset: str, cfg: StudyConfig,
               rule: PolicyConfig) -> AssetCase:
    panel, variance = asset_panel(forecasts, cfg.model, asset, rule)
    s = cfg.settings
    replays = replay_paths(asset, bars, panel.origins)
    boot = bootstrap_paths(asset, bars, panel.origins, variance, s.bootstrap_paths, block_hours=s.block_hours,
                           lookback_days=s.lookback_days, seed=s.seed)
    both = PathSet(asset, np.r_[replays.kind, boot.kind], np.r_[replays.day, boot.day], panel.origins,
                   np.vstack([replays.log_price, boot.log_price]))
    usable = np.isfinite(variance[both.day]) & np.isfinite(panel.risk[both.day]).all(1)
    return AssetCase(asset, panel, variance, both.select(usable))


def run_study(forecasts: pd.DataFrame, bars: dict[str, pd.DataFrame], cfg: StudyConfig,
              log: Callable[[str], None] = lambda _: None) -> StudyResult:
    import time

    began = time.perf_counter()
    if cfg.model not in set(forecasts["model"]):
        raise ConfigError(f"simulation.model: {cfg.model!r} is not among the forecasts' models "
                          f"{sorted(set(forecasts['model']))}")
    without_bars = sorted(set(forecasts["asset"]) - set(bars))
    if without_bars:
        log(f"simulate: no bars given for {', '.join(without_bars)} (--data): left out")
    forecasts = forecasts[forecasts["asset"].isin(list(bars))]
    if forecasts.empty:
        raise ConfigError(f"simulation: no forecast asset has bars (bars of {sorted(bars)}); give the run's bars "
                          "with --data")
    breach_policy = PolicyConfig(**cfg.breach_policy)
    rule = PolicyConfig(risk=breach_policy.risk, mpor_hours=breach_policy.mpor_hours)  # the bare margin rule
    start = utc(cfg.validation_start)
    last = forecasts["origin"].max()
    if start > last:  # nothing out of sample: the summary's validation rows would be empty
        raise ConfigError(f"simulation.validation_start {start.date()} is after the forecasts' last origin "
                          f"{last.date()}; give an earlier one (--set validation_start=YYYY-MM-DD)")
    summaries, stresses, blocks = [], [], []
    assets = sorted(set(forecasts["asset"]))
    cfg.settings.accounts()  # an accounts file is read (and refused) before any path is simulated
    funding = study_rates(cfg.funding, assets) if cfg.funding else {}
    plain = dataclasses.replace(breach_policy, buffer=None, stressed_floor=False, lookback_floor=False,
                                max_up=None, max_down=None)
    breach = {"breach": (breach_policy, breach_paths(forecasts, cfg.model, breach_policy, start, cfg.recalibrate))}
    if plain != breach_policy:  # the same breach-rate calibration without the APC tools: same rule as `solvency`
        breach["breach_plain"] = (plain, breach_paths(forecasts, cfg.model, plain, start, cfg.recalibrate))
    for asset in assets:
        case = asset_case(forecasts, bars[asset], asset, cfg, rule)
        rates = funding.get(asset)
        case = dataclasses.replace(case, paths=case.paths.with_funding(rates))
        if not len(case.paths) or not np.any(case.paths.origins[case.paths.day] < start):
            log(f"simulate: {asset}: no path before {start.date()}, left out")
            continue
        table = calibrate_solvency(case, rule, cfg.settings, cfg.target, start)
        static = calibrate_static(case, cfg.large_caps, cfg.settings, cfg.target, start)
        both = pd.concat([table, pd.DataFrame([static], columns=table.columns)], ignore_index=True)
        blocks.append(both.assign(valid_to=pd.to_datetime(both["valid_to"], utc=True)))
        terms = {name: breach_terms(paths, case, policy, cfg.settings.penalty)
                 for name, (policy, paths) in breach.items()}
        terms |= {"solvency": solvency_terms(case, rule, table),
                 "static": static_terms(case, cfg.large_caps, cfg.settings.penalty),
                 "static_solvent": static_terms(case, cfg.large_caps, cfg.settings.penalty, static["scale"])}
        for policy, t in terms.items():
            summaries.extend(_summaries(case, policy, t, cfg, start))
            stresses.append(_stress(case, bars[asset], policy, t, cfg, start, rates))
        paid = "" if case.paths.funding is None else f", funding on {np.mean(case.paths.funding.any(1)):.0%} of paths"
        log(f"simulate: {asset}: {len(case.paths):,} paths{paid}, solvency scale {table['scale'].iloc[-1]:.2f} "
            f"(maintenance {table['maintenance_fraction'].iloc[0]:.0%} of initial), static_solvent: the schedule x "
            f"{static['scale']:.2f}")
    if not summaries:
        raise ConfigError(f"simulation: no asset has forecasts and bars with paths before {start.date()}")
    stress = pd.concat(stresses, ignore_index=True) if stresses else pd.DataFrame(columns=STRESS_COLUMNS)
    summary = pd.DataFrame(summaries, columns=SUMMARY_COLUMNS)
    _check_figures(summary)
    return StudyResult(summary, stress[STRESS_COLUMNS],
                       pd.concat(blocks, ignore_index=True), time.perf_counter() - began)


def _check_figures(summary: pd.DataFrame) -> None:
    """No NaN figure reaches summary.csv: NaN means an input or setting broke the simulation somewhere."""
    figures = summary.select_dtypes("number")
    if figures.isna().any().any():
        row = summary.loc[figures.isna().any(axis=1)].iloc[0]
        column = figures.columns[figures.loc[row.name].isna()][0]
        raise DataError(f"simulation: {row['asset']} {row['policy']} ({row['period']}, {row['kind']} paths): "
                        f"{column} is NaN, refused rather than written; check the settings and the accounts, funding "
                        "and forecasts given")


def _summaries(case: AssetCase, policy: str, terms: Terms, cfg: StudyConfig, start: pd.Timestamp) -> list[dict]:
    usable = np.isfinite(terms.initial[case.paths.day]).all(1)
    paths = case.paths.select(usable)
    metrics = run_paths(paths, terms.initial, terms.maintenance, terms.penalty, case.variance, cfg.settings,
                        haircut=terms.haircut)
    origin = pd.DatetimeIndex(metrics["origin"])
    rows = []
    for period, in_period in (("calibration", origin < start), ("validation", origin >= start)):
        for kind in ("all", "replay", "bootstrap"):
            mask = np.asarray(in_period) & ((metrics["kind"] == kind).to_numpy() if kind != "all" else True)
            if not mask.any():
                continue
            stats = summarize(metrics[mask])
            days = np.isin(np.arange(len(case.origins)), np.unique(paths.day[mask]))
            rows.append({"asset": case.asset, "policy": policy, "period": period, "kind": kind, **stats,
                         "meets_target": bool(np.quantile(metrics.loc[mask, "bad_debt_fund"], cfg.target.quantile)
                                              <= cfg.target.max_bad_debt_fund),
                         "avg_margin": terms.avg_margin(days)})
    return rows


def _stress(case: AssetCase, bars: pd.DataFrame, policy: str, terms: Terms, cfg: StudyConfig,
            start: pd.Timestamp, rates: pd.Series | None = None) -> pd.DataFrame:
    events = event_paths(case.asset, bars)
    on_grid = case.origins.get_indexer(events.origins)
    keep = on_grid >= 0
    keep[keep] &= np.isfinite(terms.initial[on_grid[keep]]).all(1)
    if not keep.any():
        return pd.DataFrame(columns=STRESS_COLUMNS)
    events = PathSet(case.asset, events.kind[keep], np.arange(keep.sum()), events.origins[keep],
                     events.log_price[keep]).with_funding(rates)
    day = on_grid[keep]
    args = (terms.initial[day], terms.maintenance[day], terms.penalty[day], case.variance[day])
    haircut = None if terms.haircut is None else terms.haircut[day]
    with_feedback = run_paths(events, *args, cfg.settings, haircut=haircut)
    without = run_paths(events, *args, _no_impact(cfg.settings), haircut=haircut)
    return pd.DataFrame({
        "event": events.kind, "asset": case.asset, "policy": policy, "eve": events.origins,
        "out_of_sample": events.origins >= start, "initial_long": terms.initial[day, 0],
        "initial_short": terms.initial[day, 1], "bad_debt": with_feedback["bad_debt"],
        "bad_debt_fund": with_feedback["bad_debt_fund"], "liquidated": with_feedback["liquidated"],
        "cascade": with_feedback["cascade"], "move": with_feedback["move"],
        "cascade_share": with_feedback["cascade"] / with_feedback["move"].where(with_feedback["move"] > 0),
        "cascade_free_bad_debt": without["bad_debt"]})


def _no_impact(settings: SimulationSettings) -> SimulationSettings:
    return dataclasses.replace(settings, impact=0.0)


def study_config(section, validation_start, breach_policy: dict, recalibrate: str = "YS",
                 default_model: str = "har") -> StudyConfig:
    """A StudyConfig from a `volmargin.config.SimulationSection` (the run config's `simulation` keys)."""
    from volmargin.simulation.accounts import PopulationConfig
    from volmargin.simulation.engine import EngineConfig
    from volmargin.simulation.impact import DEFAULT_IMPACT

    settings = SimulationSettings(
        population=PopulationConfig(accounts=section.accounts, long_share=section.long_share,
                                    leverage_median=section.leverage_median, leverage_sigma=section.leverage_sigma,
                                    at_max_leverage=section.at_max_leverage, entry_window=section.entry_window,
                                    asset_collateral=section.asset_collateral, seed=section.seed),
        accounts_file=section.accounts_file,
        engine=EngineConfig(oracle_delay=section.oracle_delay, oracle_cadence=section.oracle_cadence,
                            liquidation=section.liquidation, insurance_fund=section.insurance_fund),
        impact=DEFAULT_IMPACT if section.impact is None else section.impact, open_interest=section.open_interest,
        penalty=section.penalty, bootstrap_paths=section.bootstrap_paths, seed=section.seed)
    target = SolvencyTarget(quantile=section.quantile, max_bad_debt_fund=section.max_bad_debt_fund,
                            every=section.every, max_change=section.max_change,
                            worst_period=section.worst_period, infeasible_change=section.infeasible_change,
                            maintenance_fractions=tuple(section.maintenance_fractions),
                            haircut_factors=tuple(section.haircut_factors), max_liquidations=section.max_liquidations)
    return StudyConfig(model=section.model or default_model,
                       validation_start=str(section.validation_start or validation_start),
                       breach_policy=dict(breach_policy), recalibrate=recalibrate or "YS",
                       large_caps=tuple(section.large_caps), funding=section.funding, settings=settings,
                       target=target)


def write_study(result: StudyResult, out, meta: dict | None = None) -> None:
    """OUT/summary.csv, stress.csv, solvency.csv (and simulate.json with `meta`), each written atomically."""
    import json
    from pathlib import Path

    from volmargin.io import write_atomic, write_frame

    out = Path(out)
    write_frame(result.summary, out / "summary.csv")
    write_frame(result.stress, out / "stress.csv")
    write_frame(result.solvency, out / "solvency.csv")
    if meta is not None:
        write_atomic(out / "simulate.json", lambda p: p.write_text(json.dumps(meta, indent=2, default=str)))


def headline(result: StudyResult, target: float) -> pd.DataFrame:
    """Out-of-sample figures per asset and policy, all path kinds pooled (the table a committee reads first)."""
    rows = result.summary[(result.summary["period"] == "validation") & (result.summary["kind"] == "all")]
    return rows[["asset", "policy", "paths", "bad_debt_p99", "bad_debt_fund_p99", "meets_target",
                 "liquidations_p95", "avg_margin"]].reset_index(drop=True)
