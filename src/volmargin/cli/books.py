"""Commands on books of positions: `simulate` (liquidation cascades), `portfolio`, `options`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from volmargin.cli.arguments import check_known_keys, show_progress
from volmargin.cli.common import load_data

from volmargin.errors import ConfigError

if TYPE_CHECKING:  # imported where used: a Ctrl-C while pandas loads is then one line, not a traceback
    import pandas as pd


def cmd_simulate(args: argparse.Namespace) -> int:
    import pandas as pd

    from volmargin.calibration import PolicyConfig
    from volmargin.config import APC_POLICY, SimulationSection, from_dict
    from volmargin.io import check_complete, preflight, read_forecasts, staged_folder
    from volmargin.simulation.study import headline, run_study, study_config, write_study

    if args.min_bars is not None:  # refused, not ignored: nothing here builds daily measures
        raise ConfigError("--min-bars: simulate does not use it (the --run's forecasts were made with its own "
                          "min_bars, and every simulated path needs all its hourly bars); leave it out")
    preflight(args.out, folder=True)
    import datetime

    values = {k: str(v) if isinstance(v, datetime.date) else v for k, v in args.set.items()}  # YAML reads dates
    section = from_dict(SimulationSection, values, "--set")
    if args.policy is not None:  # its keys and values checked before any work
        check_known_keys("--policy", args.policy, [f.name for f in dataclasses.fields(PolicyConfig)])
        PolicyConfig(**args.policy)
    record = _run_record(check_complete(args.run))  # not a run interrupted, or being written
    calibration = record.get("calibration", {})
    forecasts = read_forecasts(args.run)
    default_start = calibration.get("validation_start") or str(
        (forecasts["origin"].min() + pd.Timedelta(days=365)).date())
    models = set(forecasts["model"])
    policy = args.policy if args.policy is not None else calibration.get("policy", APC_POLICY)
    cfg = study_config(section, default_start, policy,
                       default_model="har" if "har" in models else record.get("champion") or sorted(models)[0])
    bars = load_data(args.data, record.get("data", {}).get("fingerprint"), f"the run {args.run}")
    result = run_study(forecasts, bars, cfg, log=print)
    with staged_folder(args.out) as staging:  # the whole folder appears at once, or the old one stays
        write_study(result, staging, {"command": "simulate", "run": str(args.run),
                                      "config": dataclasses.asdict(cfg), "seconds": round(result.seconds, 1)})
    table = headline(result, cfg.target.max_bad_debt_fund)
    print(f"\nOut of sample from {cfg.validation_start} ({cfg.model}; bad debt as a fraction of open interest and "
          f"of the insurance fund, target p{cfg.target.quantile * 100:g} <= {cfg.target.max_bad_debt_fund:.1%} of the fund):")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4%}"))
    print(f"wrote {args.out}/summary.csv, stress.csv, solvency.csv, simulate.json in {result.seconds:.0f} s")
    return 0


def _run_record(folder: Path) -> dict:
    """A run folder's run.json ({} where there is none); a one-line error naming it where it is damaged."""
    path = folder / "run.json"
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not readable JSON ({exc}); write the run again") from None
    return record if isinstance(record, dict) else {}


def cmd_portfolio(args: argparse.Namespace) -> int:
    import pandas as pd
    from volmargin_serving.portfolio import PortfolioPolicy

    from volmargin.evaluation.scoring import POOLED
    from volmargin.io import check_complete, preflight, read_forecasts, staged_folder
    from volmargin.risk.job import POPULATION_KEYS, PortfolioJob, common_assets, run_portfolio
    from volmargin.risk.portfolio import CALIBRATION_WEIGHTS, read_population
    from volmargin.risk.scenarios import ScenarioConfig

    models = None if args.models is None else tuple(m.strip() for m in args.models.split(",") if m.strip())
    if models == ():
        raise ConfigError("--models is empty")
    preflight(args.out, folder=True)  # before any work
    frames = [read_forecasts(check_complete(folder)) for folder in args.run]  # no run interrupted or being written
    forecasts = pd.concat(frames, ignore_index=True).drop_duplicates(["model", "asset", "origin"], keep="last")
    daily = None
    if args.data:
        from volmargin.evaluation.backtest import daily_panel

        daily = daily_panel(load_data(args.data), args.min_bars)
        unused = sorted(set(daily) - set(forecasts["asset"]))
        if unused:  # a book is priced from the run's forecasts: bars alone cannot bring an asset in
            print(f"--data: {len(unused)} asset(s) not in the run's forecasts, left out: {', '.join(unused[:10])}"
                  f"{' ...' * (len(unused) > 10)}")
    check_known_keys("--scenarios", args.scenarios, [f.name for f in dataclasses.fields(ScenarioConfig)])
    check_known_keys("--policy", args.policy, [f.name for f in dataclasses.fields(PortfolioPolicy)])
    check_known_keys("--population", args.population, POPULATION_KEYS)
    try:
        job = PortfolioJob(models=models, scenarios=ScenarioConfig(**args.scenarios),
                           policy=PortfolioPolicy(**args.policy), validation_start=args.validation_start,
                           target=args.target, concentrations=args.concentration_grid,
                           correlation_weights=args.correlation_grid or CALIBRATION_WEIGHTS, **args.population)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"portfolio options: {exc}") from exc
    population = None
    if args.portfolios is not None:
        # the books' universe: the assets every model covers (the panels'), not every asset of the forecasts
        population = read_population(args.portfolios, common_assets(forecasts, daily, job))
    with staged_folder(args.out) as staging:  # the whole folder appears at once, or the old one stays
        tables = run_portfolio(forecasts, daily, job, staging, population, progress=show_progress(args))
    summary = tables["summary"]
    print(portfolio_digest(summary).to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    days_by_class = summary[summary["portfolio_class"] != POOLED].groupby("portfolio_class")["book_days"].sum()
    empty = days_by_class.index[days_by_class == 0]
    if len(empty):
        spans = forecasts.groupby("asset")["origin"].agg(["min", "max"])
        print(f"no book-day for {', '.join(empty)}: no validation day on which all of a book's assets have "
              f"forecasts (the run's assets span {spans['min'].max():%Y-%m-%d} .. {spans['max'].min():%Y-%m-%d} "
              "together); give overlapping assets or --portfolios")
    print(f"wrote {args.out}/summary.csv, calibration.csv, compare.csv, stress.csv, portfolio.json, scenarios-*.npz")
    return 0


def portfolio_digest(summary: "pd.DataFrame") -> "pd.DataFrame":
    """One line per model of a portfolio summary: all classes pooled (Kupiec clustered by date, books of one day
    sharing its move) and the worst class's breach rate; summary.csv has every class."""
    from volmargin.evaluation.scoring import POOLED

    pooled = summary[summary["portfolio_class"] == POOLED].set_index("model")
    classes = summary[(summary["portfolio_class"] != POOLED) & summary["breach_rate"].notna()]  # NaN: no book-day
    worst = classes.loc[classes.groupby("model")["breach_rate"].idxmax()].set_index("model")
    columns = ["portfolios", "book_days", "breach_rate", "kupiec_p_clustered", "avg_margin", "avg_isolated_margin"]
    digest = pooled[[c for c in columns if c in pooled]].assign(
        worst_class=worst["portfolio_class"], worst_class_breach_rate=worst["breach_rate"])
    return digest.reset_index()


def _fallback_lines(record: dict) -> list[str]:
    """The days whose autocalibrated grids took a static grid's part, no forecast being known at their origin."""
    lines = []
    for key, books in (("static_fallback_days", "snapshot"), ("synthetic_static_fallback_days", "synthetic")):
        counts = record[key] or {}
        for part, what in (("vol", "vol shocks (no IV-move forecast yet)"), ("range", "price range (no price forecast)")):
            hits = [f"{method} {days[part]}" for method, days in counts.items() if days[part]]
            if hits:
                lines.append(f"the static grid's {what} on some of the {next(iter(counts.values()))['days']} {books} "
                             f"days: {', '.join(hits)} (run.json: {key})")
    return lines


def cmd_options(args: argparse.Namespace) -> int:
    from volmargin.calibration.option_job import OptionJob, run_option_job
    from volmargin.evaluation.scoring import POOLED

    split = lambda text: tuple(x.strip() for x in text.split(",") if x.strip())  # noqa: E731
    job = OptionJob(tuple(args.chains), tuple(args.iv), tuple(args.data), args.calibrate_until, args.out,
                    split(args.models), split(args.iv_models), target=args.target, stress=args.stress,
                    stress_days=args.stress_days, peak=args.peak, buffer=args.buffer, max_down=args.fall_cap,
                    steps=args.steps, spacing=args.spacing, keep_vol=args.keep_vol,
                    scales_on_grid=args.scales_on == "grid", calibrate_on=args.calibrate_on,
                    synthetic_days=args.synthetic_days)
    result = run_option_job(job)
    summary = result["summary"]
    table = summary[summary["portfolio_class"] == POOLED].pivot(index="method", columns="period",
                                                                values=["breach_rate", "avg_margin"])
    table.columns = [f"{kind}_{period}" for kind, period in table.columns]
    print(f"{result['record']['underlying'].upper()} options: {result['record']['books']} books over "
          f"{result['record']['snapshots']} snapshots; all classes pooled "
          "(margin as a fraction of the underlying notional):")
    print(table.to_string(float_format=lambda x: f"{x:.4f}"))
    if result["record"]["infeasible"]:
        print(f"target out of reach on the calibration books for {', '.join(result['record']['infeasible'])}: "
              "some losses lie outside any scale of their grid (flagged in grids.csv, 'feasible'); their scale "
              "covers the rest")
    for line in _fallback_lines(result["record"]):
        print(line)
    fitted, fewest = result["record"]["calibration_book_days"], math.ceil(1 / job.target)
    if fitted < fewest:  # a breach rate of 1 in 1 / target cannot be seen on fewer rows
        print(f"calibrated on {fitted} book-days: at a {job.target:.1%} target fewer than {fewest} cannot show a "
              "breach rate, so the scales rest on too little (move --calibrate-until later, or --calibrate-on "
              "synthetic)")
    if missing := result["record"]["missing_class_days"]:
        print(f"classes left out of some of the {result['record']['book_days']} snapshot days (too few listed "
              f"legs), days missed: {', '.join(f'{cls} {days}' for cls, days in missing.items())} (run.json: "
              "missing_class_days; summary.csv has no row where a class has no book)")
    print(f"wrote {args.out}/summary.csv, grids.csv, iv_scores.csv, run.json, report.html in "
          f"{result['record']['seconds']:.0f} s")
    return 0
