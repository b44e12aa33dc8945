"""The volmargin command line (`volmargin COMMAND --help` for each command). Errors in the user's input end in
one line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import re
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from volmargin_serving.errors import ServingError

from volmargin.errors import ConfigError, VolmarginError

if TYPE_CHECKING:  # imported where used: a Ctrl-C while pandas loads is then one line, not a traceback
    import pandas as pd

DEFAULT_MODELS = "hist,ewma,garch,gjr,har,fhs"


QUIET_HELP = "no progress output (a bar on a terminal, a line a minute in a log file)"


def show_progress(args: argparse.Namespace) -> bool:
    """Progress unless --quiet: a bar on a terminal, a line a minute in a log file (`volmargin.progress`)."""
    return not args.quiet


def _date(text: str) -> pd.Timestamp:
    """A YYYY-MM-DD date, UTC midnight; strictly that form (15/01/2022 would read as a guess)."""
    import pandas as pd

    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()):
            raise ValueError(text)
        return pd.Timestamp(text.strip(), tz="UTC")
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (use YYYY-MM-DD)") from exc


def _levels(text: str) -> tuple[float, ...]:
    try:
        levels = tuple(float(x) for x in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a list of levels: {text!r} (e.g. 0.99,0.975)") from exc
    if not all(0.5 < x < 1 for x in levels):
        raise argparse.ArgumentTypeError(f"levels must lie in (0.5, 1): {text!r}")
    return levels


def _model_days(text: str) -> dict[str, int]:
    try:
        pairs = dict(item.split("=") for item in text.split(",") if item)
        return {model.strip(): int(days) for model, days in pairs.items()}
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected MODEL=DAYS[,MODEL=DAYS...], got {text!r}") from exc


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


SET_HELP = ("config values by dotted key, over the config's, e.g. window.train_end=2024-06-30,"
            "backtest.start=2024-01-01,calibration.end=2024-12-31 to fit its dates to other data")
SYNTHETIC_DEFAULT = "default: the built-in synthetic market"
BUNDLE_DATA_DEFAULT = ("required unless the bundle learned from the built-in synthetic market; bars finer than the "
                       "bundle's are aggregated to them")


def _add_data_args(parser: argparse.ArgumentParser, default: str = SYNTHETIC_DEFAULT, min_bars: bool = True,
                   iv: bool = False) -> None:
    """--data, and --min-bars (where the command builds daily measures; else hidden and refused with a reason);
    --iv where a bundle reads the daily measures (for bundles trained with an implied-volatility index)."""
    parser.add_argument("--data", nargs="+", metavar="FILE", help="bar files, folders or globs "
                        f"(CSV, CSV.gz, Parquet, Binance kline dumps); {default}")
    parser.add_argument("--min-bars", type=_positive_int, default=None,
                        help="bars a day needs to count as complete (default: 20 of 24 hourly bars)" if min_bars
                        else argparse.SUPPRESS)
    if iv:
        parser.add_argument("--iv", nargs="+", type=_pattern_file, default=[], metavar="PATTERN=FILE",
                            help="implied-volatility index files for bundles trained with one (data.iv), by asset-name "
                            "pattern, e.g. '*btc*=iv/deribit_btc_dvol_1d.csv.gz'; other bundles ignore them")


def _pattern_file(text: str) -> tuple[str, str]:
    """PATTERN=FILE of --iv."""
    pattern, equals, path = text.partition("=")
    if not equals or not pattern or not path:
        raise argparse.ArgumentTypeError(f"{text!r}: expected PATTERN=FILE, e.g. '*btc*=deribit_btc_dvol_1d.csv.gz'")
    return pattern, path


def _policy_items(text: str) -> dict:
    """KEY=VALUE pairs read as `--set` reads them (`config.parse_overrides`: YAML scalars such as 0.25, true,
    null, es975, flow lists such as [0, 0.5]; a key given twice refused)."""
    from volmargin.config import parse_overrides

    try:
        return parse_overrides(text, option=None) if text.strip() else {}
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _MergeItems(argparse.Action):
    """KEY=VALUE options given more than once add up, as `--set` does; a key given twice is refused (the last
    would have won silently)."""

    def __call__(self, parser, namespace, values: dict, option_string=None) -> None:
        merged = dict(getattr(namespace, self.dest) or {})
        twice = [key for key in values if key in merged]
        if twice:
            parser.error(f"argument {option_string}: {twice[0]} is given twice")
        setattr(namespace, self.dest, {**merged, **values})


def _known_keys(option: str, values: dict, keys) -> None:
    """ConfigError naming the first key of `values` that is not one of `keys`, and the keys there are."""
    unknown = [key for key in values if key not in keys]
    if unknown:
        raise ConfigError(f"{option}: unknown key {unknown[0]!r}; expected one of {', '.join(keys)}")


def _grid_values(text: str, auto: str, valid, expected: str) -> tuple[float, ...]:
    """Comma-separated numbers that pass `valid`, or 'auto': the grid `auto` of volmargin.risk.portfolio."""
    if text.strip() == "auto":
        from volmargin.risk import portfolio

        return getattr(portfolio, auto)
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values or not all(valid(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected {expected} or auto, got {text!r}")
    return values


def _weights(text: str) -> tuple[float, ...]:
    """Correlation weights in [0, 1], comma-separated, or 'auto' (CORRELATION_GRID)."""
    return _grid_values(text, "CORRELATION_GRID", lambda v: 0 <= v <= 1, "weights W1,W2,... in [0, 1]")


def _coefficients(text: str) -> tuple[float, ...]:
    """Non-negative numbers, comma-separated, or 'auto' (CONCENTRATION_GRID)."""
    return _grid_values(text, "CONCENTRATION_GRID", lambda v: math.isfinite(v) and v >= 0,
                        "non-negative numbers C1,C2,...")


def _add_dask_args(parser: argparse.ArgumentParser, unit: str) -> None:
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help=f"split the {unit} over an existing Dask cluster, e.g. tcp://HEAD:8786")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help=f"or split the {unit} over a local Dask cluster of N single-threaded processes on 127.0.0.1")


DESCRIPTION = ("Learn volatility and tail forecasts, backtest them against the baselines, calibrate margins, export "
               "the champion to an ONNX bundle and serve margins from it. Start with `volmargin run` (the main "
               "job); `volmargin COMMAND --help` describes each command.")


class _HelpFormatter(argparse.HelpFormatter):
    """Help wrapped at spaces only: an example such as window.train_end=2023-12-31 stays whole to copy."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_long_words=False, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(" ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent,
                             break_long_words=False, break_on_hyphens=False)


def _command(commands, name: str, summary: str) -> argparse.ArgumentParser:
    """A subcommand whose `--help` opens with its one-line summary (the list of commands shows it too)."""
    return commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".",
                               formatter_class=_HelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="volmargin", description=DESCRIPTION, formatter_class=_HelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    backtest = _command(commands, "backtest", "walk-forward forecasts and scores of several models")
    _add_data_args(backtest)
    backtest.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated (default {DEFAULT_MODELS})")
    backtest.add_argument("--start", type=_date, default=None, help="first target date (default: as early as "
                          "--min-train allows)")
    backtest.add_argument("--end", type=_date, default=None, help="last forecast origin (default: end of data)")
    backtest.add_argument("--refit-every", type=int, default=20, metavar="DAYS", help="refit cadence (default 20)")
    backtest.add_argument("--model-refit", type=_model_days, default={}, metavar="MODEL=DAYS,...",
                          help="per-model refit cadence, e.g. nn=60,gbm=60 (learned models refit slower)")
    backtest.add_argument("--window", type=int, default=None, metavar="DAYS",
                          help="rolling training window (default: expanding)")
    backtest.add_argument("--min-train", type=int, default=365, metavar="DAYS",
                          help="history an asset needs before its first forecast (default 365)")
    backtest.add_argument("--horizon", type=int, default=1, metavar="DAYS", help="forecast horizon (default 1)")
    backtest.add_argument("--levels", type=_levels, default=(0.975, 0.99),
                          help="VaR/ES confidence levels (default 0.975,0.99)")
    backtest.add_argument("--out", type=Path, default=Path("runs/backtest"),
                          help="output folder (default runs/backtest)")
    backtest.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    backtest.add_argument("--scheduler", default=None, metavar="ADDRESS",
                          help="run the per-asset models on an existing Dask cluster, e.g. tcp://HEAD:8786 "
                          "(global models nn, gbm train on all assets at once and stay in this process)")
    backtest.add_argument("--workers", type=int, default=None, metavar="N",
                          help="or start a local Dask cluster of N single-threaded worker processes on 127.0.0.1 "
                          "for the per-asset models (global models stay in this process)")

    backtest.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, "
                          "else sqlite mlflow.db in this folder)")
    backtest.add_argument("--no-tracking", action="store_true", help="do not log the run to MLflow")

    train = _command(commands, "train", "train a learned model from a YAML config, evaluate it, track it")
    train.add_argument("--config", type=Path, required=True, help="a YAML file (see training/configs/)")
    train.add_argument("--data", nargs="+", metavar="FILE", default=None,
                       help="bar files, folders or globs instead of the config's data.paths")
    train.add_argument("--out", type=Path, default=None, help="output folder instead of the config's output")
    train.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (overrides the config)")
    train.add_argument("--set", action="append", default=None, metavar="KEY=VALUE,...",
                       help="config values by dotted key, over the config's, e.g. window.train_end=2024-06-30,"
                            "model.params.n_estimators=300")
    train.add_argument("--quiet", action="store_true", help=QUIET_HELP)

    evaluate = _command(commands, "evaluate", "re-score a backtest's saved forecasts (no refit)")
    evaluate.add_argument("--run", type=Path, required=True, help="a backtest output folder")
    evaluate.add_argument("--reference", default="har", help="model the Diebold-Mariano tests compare against")

    run = _command(commands, "run", "the main job: data, training, backtest, calibration, portfolio, "
                   "simulation (where enabled), export, scoring, report")
    run.add_argument("--config", type=Path, default=None,
                     help="a run config (see training/configs/); default: the built-in synthetic-market job")
    run.add_argument("--data", nargs="+", metavar="FILE", default=None,
                     help="bar files, folders or globs instead of the config's data.paths")
    run.add_argument("--out", type=Path, default=None, help="output folder instead of the config's output")
    run.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (overrides the config)")
    run.add_argument("--set", action="append", default=None, metavar="KEY=VALUE,...", help=SET_HELP)
    run.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    _add_dask_args(run, "backtest's per-asset models (the learned models train meanwhile in this process)")

    export = _command(commands, "export", "export a trained model to an ONNX bundle in models/ and register it")
    export.add_argument("--run", type=Path, required=True, help="a `volmargin train` output folder (model.pkl, train.json)")
    _add_data_args(export, "default: the training run's own data (its config's files)")
    export.set_defaults(data=None)
    export.add_argument("--root", type=Path, default=Path("models"), help="bundle root folder (default models/)")
    export.add_argument("--name", default=None, help="bundle name (default: the model's name, e.g. nn)")
    export.add_argument("--version", default=None, help="bundle version (default: the next integer)")
    export.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the training run's)")
    export.add_argument("--no-tracking", action="store_true", help="do not log or register the bundle in MLflow")

    calibrate = _command(commands, "calibrate", "calibrate margin parameters of a bundle on bar files")
    calibrate.add_argument("--bundle", type=Path, required=True,
                           help="a bundle folder, e.g. models/volmargin-demo-gbm/1")
    _add_data_args(calibrate, BUNDLE_DATA_DEFAULT, iv=True)
    calibrate.add_argument("--out", type=Path, required=True, help="the calibration set (.json)")
    calibrate.add_argument("--validation-start", type=_date, default=None,
                           help="first validation day (default: half-way through the data after the training end)")
    calibrate.add_argument("--policy", type=_policy_items, action=_MergeItems, default={}, metavar="KEY=VALUE,...",
                           help="margin policy settings, e.g. risk=es975,buffer=0.25,max_up=0.5 or mpor_hours=8 "
                           "for an intraday margin period of risk (see volmargin.calibration.PolicyConfig; default: "
                           "var99 at a 1%% breach target with no anti-procyclicality tool, where the main job's "
                           "configs turn on buffer=0.25,stressed_floor=true,lookback_floor=true,max_up=0.5,"
                           "max_down=0.1)")
    calibrate.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the bundle's training run's)")
    calibrate.add_argument("--no-tracking", action="store_true", help="do not log the calibration set to MLflow")
    _add_dask_args(calibrate, "assets (scoring)")

    report = _command(commands, "report", "write the model-comparison report of a run as one HTML file")
    report.add_argument("--run", type=Path, required=True, help="a `volmargin run` or `backtest` output folder")
    report.add_argument("--out", type=Path, default=None, help="HTML file (default: RUN/report.html)")

    simulate = _command(commands, "simulate", "liquidation and bad-debt simulation of the breach-rate, "
                                   "solvency-calibrated and static margin policies on a run's forecasts")
    simulate.add_argument("--run", type=Path, required=True, help="a `volmargin run` or `backtest` output folder")
    _add_data_args(simulate, "the run's bars; default: the built-in synthetic market (a run on it)", min_bars=False)
    simulate.add_argument("--out", type=Path, required=True,
                          help="output folder (summary.csv, stress.csv, solvency.csv, simulate.json)")
    simulate.add_argument("--set", type=_policy_items, action=_MergeItems, default={}, metavar="KEY=VALUE,...",
                          help="simulation settings, e.g. model=har,accounts=1000,bootstrap_paths=4,"
                          "max_bad_debt_fund=0.01,liquidation=partial (see volmargin.config.SimulationSection)")
    simulate.add_argument("--policy", type=_policy_items, action=_MergeItems, default=None, metavar="KEY=VALUE,...",
                          help="today's breach-rate policy (default: the run's, else the `volmargin run` default)")

    score = _command(commands, "score", "batch-score bar files through a bundle (ONNX Runtime)")
    score.add_argument("--bundle", type=Path, required=True, help="a bundle folder, e.g. models/nn/1")
    _add_data_args(score, BUNDLE_DATA_DEFAULT, iv=True)
    score.add_argument("--out", type=Path, required=True, help="output table (.parquet or .csv)")
    score.add_argument("--latest", action="store_true", help="only the newest origin of each asset")
    score.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    _add_dask_args(score, "assets")

    margins = _command(commands, "margins", "the margins a service would publish: bar files through a bundle "
                                  "and its calibration set, day by day, fail-safe flags included")
    margins.add_argument("--bundle", type=Path, required=True, help="a bundle folder, e.g. models/volmargin-demo-gbm/1")
    margins.add_argument("--calibration", type=Path, default=None,
                         help="its calibration set (default: BUNDLE.calibration.json beside the bundle folder)")
    _add_data_args(margins, BUNDLE_DATA_DEFAULT, iv=True)
    margins.add_argument("--out", type=Path, required=True, help="output table (.parquet or .csv)")
    margins.add_argument("--latest", action="store_true", help="only the newest day of each asset")
    margins.add_argument("--start", type=_date, default=None, metavar="DATE",
                         help="first day to price (default: the first with enough history)")
    margins.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    _add_dask_args(margins, "assets")

    portfolio = _command(commands, "portfolio", "portfolio margin across assets: FHS scenarios filtered by "
                                    "each model's forecasts, calibrated and backtested on test books")
    portfolio.add_argument("--run", type=Path, nargs="+", required=True, help="backtest run folder(s) (forecasts.parquet)")
    portfolio.add_argument("--data", nargs="+", metavar="FILE", default=None,
                           help="the bars of the run's assets: the ewma97 filter and traded volumes (concentration)")
    portfolio.add_argument("--min-bars", type=int, default=None,
                           help="bars a day needs to count as complete (default: 20 of 24 hourly bars)")
    portfolio.add_argument("--out", type=Path, required=True, help="output folder (summary.csv, ...)")
    portfolio.add_argument("--quiet", action="store_true", help=QUIET_HELP)
    portfolio.add_argument("--models", default=None, help="comma-separated (default: every model of the run, and "
                           "ewma97, the PAIRS filter, from the bars)")
    portfolio.add_argument("--portfolios", type=Path, default=None, metavar="SPEC.csv",
                           help="books (portfolio,asset,notional[,portfolio_class]) instead of the generated population")
    portfolio.add_argument("--validation-start", type=_date, default=None,
                           help="first validation margin date (default: the middle margin date's month)")
    portfolio.add_argument("--target", type=float, default=0.01, help="breach-rate target per class (default 0.01)")
    portfolio.add_argument("--policy", type=_policy_items, action=_MergeItems, default={}, metavar="KEY=VALUE,...",
                           help="margin rule, e.g. measure=es975,stress_mode=weight,concentration=0.5,buffer=0.25 "
                           "(see volmargin_serving.portfolio.PortfolioPolicy)")
    portfolio.add_argument("--concentration-grid", type=_coefficients, default=None, metavar="C1,C2,...|auto",
                           help="calibrate the concentration add-on's coefficient jointly with the scale and the "
                           "correlation weight, over these values (auto: 0,0.25,0.5,1,2,4,8); default: the "
                           "policy's concentration, fixed")
    portfolio.add_argument("--correlation-grid", type=_weights, default=None, metavar="W1,W2,...|auto",
                           help="calibrate the correlation weight with the scale over these values, the cheapest "
                           "feasible pair (auto: 0,0.1,0.25,0.5,0.75,1, the rule before session 9c); default: "
                           "w fixed at 0.1, chosen on a hold-out (volmargin.risk.portfolio.CALIBRATION_WEIGHTS)")
    portfolio.add_argument("--scenarios", type=_policy_items, action=_MergeItems, default={}, metavar="KEY=VALUE,...",
                           help="e.g. lookback=2500 (null: all history),proxy=median|peer:ASSET,stress_days=60")
    portfolio.add_argument("--population", type=_policy_items, action=_MergeItems, default={}, metavar="KEY=VALUE,...",
                           help="generated books: n_random, n_baskets, n_alts, n_candidates, n_adversarial, gross, seed")

    options = _command(commands, "options", "option books on real chains: static Deribit grid vs autocalibrated grids")
    options.add_argument("--chains", nargs="+", required=True, metavar="FILE", help="option-chain files, folders or globs")
    options.add_argument("--iv", nargs="+", required=True, metavar="FILE", help="DVOL files (daily or hourly)")
    options.add_argument("--data", nargs="+", required=True, metavar="FILE", help="bar files of the underlying")
    options.add_argument("--calibrate-until", type=_date, required=True, metavar="DATE",
                         help="calibrate on the snapshots before DATE, validate on the later ones")
    options.add_argument("--out", type=Path, required=True, help="output folder (summary.csv, grids.csv, ...)")
    options.add_argument("--models", default="ewma,gjr,har",
                         help="price models whose VaR sets the price range (default ewma,gjr,har)")
    options.add_argument("--iv-models", default="hist,qreg", help="IV-move forecasters (default hist,qreg)")
    options.add_argument("--target", type=float, default=0.01, help="breach-rate target per class (default 0.01)")
    options.add_argument("--stress", type=float, default=0.0, metavar="FRACTION",
                         help="stressed-period component: each grid parameter at least FRACTION x what the worst "
                         "realised 1-day moves of the look-back set, on top of the calibrated scale (default 0: off)")
    options.add_argument("--stress-days", type=int, default=365, metavar="DAYS",
                         help="look-back of the stressed component in calendar days (default 365)")
    options.add_argument("--peak", type=float, default=0.0, metavar="FRACTION",
                         help="peak memory: each grid parameter at least FRACTION x its largest value over the "
                         "last 365 snapshot days, on top of the calibrated scale (default 0: off)")
    options.add_argument("--buffer", type=float, default=None, metavar="FRACTION",
                         help="APC buffer on the daily grid parameters: held up to (1 + FRACTION) x the target "
                         "while it falls (e.g. 0.25)")
    options.add_argument("--fall-cap", type=float, default=None, metavar="FRACTION",
                         help="each grid parameter falls by at most FRACTION a day (e.g. 0.03)")
    options.add_argument("--steps", type=int, default=8, metavar="N",
                         help="price steps of the autocalibrated grids, even (default 8: Deribit's 9 points; "
                         "wider forecast ranges leave fewer losses between points with more)")
    options.add_argument("--spacing", type=float, default=None, metavar="FRACTION",
                         help="lattice autocalibrated grids: a price point every FRACTION (e.g. 0.04, Deribit's) out "
                         "to each range rounded up, so a wider range never lowers a margin (the scales are still "
                         "bisected on the even grid of --steps; the lattice adds points on top)")
    options.add_argument("--keep-vol", action="store_true",
                         help="keep the static grid's vol shocks (up 50%%, down 25%%) as extra vol states of the "
                         "autocalibrated grids: with --spacing 0.04 and ranges >= 16%% no margin is below static's")
    options.add_argument("--scales-on", choices=("even", "grid"), default="even",
                         help="grid the scales are bisected on: even (the 9 even points of --steps, the lattice "
                         "and kept vol states added on top) or grid (the grid the methods run, lattice and kept "
                         "states included; default even)")
    options.add_argument("--calibrate-on", choices=("synthetic", "chains"), default="synthetic",
                         help="books the scales are calibrated on: synthetic (default: DVOL-priced books of the "
                         "--synthetic-days before --calibrate-until, on the smile of the chains before it, so a "
                         "calm month of real books does not set them) or chains (the real books before it)")
    options.add_argument("--synthetic-days", type=int, default=365, metavar="DAYS",
                         help="days of synthetic books before --calibrate-until (default 365)")
    return parser


def _check_tracking(cli_uri: str | None, config_uri: str | None = None) -> None:
    """Before any work: the MLflow store the command will log to answers (one line within 10 s if not)."""
    from volmargin.tracking import check_tracking_uri, resolve_tracking_uri

    check_tracking_uri(resolve_tracking_uri(cli_uri, config_uri))


def load_data(paths: Sequence[str] | None):
    """Bars per asset from the user's files, or the synthetic market when none are given."""
    from volmargin.data import load_panel, synthetic_market

    if paths:
        return load_panel(paths)
    print("No --data given: using the built-in synthetic market (4 assets, 3 years of hourly bars, seed 0).")
    return synthetic_market()


def cmd_backtest(args: argparse.Namespace) -> int:
    import pandas as pd

    from volmargin.config import MAX_HORIZON, levels_problem
    from volmargin.distributed import check_options, executor
    from volmargin.evaluation.backtest import BacktestConfig, daily_panel, run_backtest
    from volmargin.evaluation.scoring import write_scores
    from volmargin.evaluation.walkforward import WalkForwardSplit
    from volmargin.io import preflight, staged_folder, write_atomic, write_frame

    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if not models:
        raise ConfigError("--models is empty")
    if not 1 <= args.horizon <= MAX_HORIZON:
        raise ConfigError(f"--horizon must lie in 1 .. {MAX_HORIZON} days (a margin period of risk), got {args.horizon}")
    if args.start is not None and args.end is not None and args.end < args.start - pd.Timedelta(days=1):
        raise ConfigError(f"--end {args.end.date()} (last origin) is before --start {args.start.date()} (first target "
                          "day): no forecast lies between them")
    if problem := levels_problem(args.levels):
        raise ConfigError(f"--levels {problem}")
    check_options(args.scheduler, args.workers)  # before loading any data
    preflight(args.out, folder=True)
    if not args.no_tracking:
        _check_tracking(args.tracking_uri)
    began = time.perf_counter()
    bars = load_data(args.data)
    for asset, frame in bars.items():
        gaps = frame.attrs.get("gaps")
        if gaps is not None and gaps.count:
            logging.info("%s: %s", asset, gaps)
    panel = daily_panel(bars, args.min_bars)
    incomplete = {a: d.attrs.get("incomplete_days", 0) for a, d in panel.items()}
    print(f"{len(panel)} assets; {sum(incomplete.values())} incomplete days excluded from targets")
    split = WalkForwardSplit(
        start=args.start, end=args.end, refit_every=args.refit_every, window=args.window, min_train=args.min_train,
    )
    unknown = set(args.model_refit) - set(models)
    if unknown:
        raise ConfigError(f"--model-refit names models not in --models: {', '.join(sorted(unknown))}")
    config = BacktestConfig(models=models, split=split, levels=tuple(sorted(args.levels)), horizon=args.horizon,
                            model_refit_every=args.model_refit)
    with executor(args.scheduler, args.workers) as runner:
        if runner.distributed:
            print(f"per-asset models on {runner.description}; global models in this process")
        forecasts, timings = run_backtest(panel, config, progress=show_progress(args), executor=runner)
    with staged_folder(args.out) as staging:  # the whole folder appears at once, or the old one stays
        write_frame(forecasts, staging / "forecasts.parquet")
        write_frame(timings, staging / "timings.csv")
        scores, dm = write_scores(forecasts, staging, "har" if "har" in models else models[0])
        meta = {"command": "backtest", "args": {k: str(v) for k, v in vars(args).items()},
                "assets": {a: [str(d.index[0].date()), str(d.index[-1].date())] for a, d in panel.items()},
                "incomplete_days": incomplete, "seconds": round(time.perf_counter() - began, 1), "complete": True}
        write_atomic(staging / "run.json", lambda p: p.write_text(json.dumps(meta, indent=2)))
    print_summary(scores, dm)
    print(f"wrote {args.out}/forecasts.parquet, scores.csv, dm.csv in {meta['seconds']:.0f} s")
    if not args.no_tracking:
        run_id = log_backtest(args, bars, scores, meta)
        print(f"MLflow run {run_id}")
    return 0


def log_backtest(args: argparse.Namespace, bars, scores: pd.DataFrame, meta: dict) -> str:
    """One MLflow run per backtest: arguments, data fingerprint, pooled and per-asset scores, outputs."""
    import pandas as pd

    import mlflow

    from volmargin.evaluation.scoring import POOLED
    from volmargin.tracking import data_fingerprint, resolve_tracking_uri, start_experiment, tracked_run

    mlflow.set_experiment(experiment_id=start_experiment(resolve_tracking_uri(args.tracking_uri), "volmargin"))
    fingerprint = data_fingerprint(bars)
    with tracked_run("backtest", tags={"volmargin.command": "backtest", "data.sha256": fingerprint["sha256"]}) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in meta["args"].items()})
        mlflow.log_dict(fingerprint, "data_fingerprint.json")
        for row in scores.to_dict("records"):
            prefix = row["model"] if row["asset"] == POOLED else f"{row['model']}.{row['asset']}"
            mlflow.log_metrics({f"{prefix}.{k}": float(v) for k, v in row.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool) and pd.notna(v)})
        for name in ("scores.csv", "dm.csv", "run.json"):
            mlflow.log_artifact(str(args.out / name))
        return run.info.run_id


def _data_and_out(cfg, args: argparse.Namespace):
    """A train or run config with the command line's `--set`, then `--data` (replacing data.paths and the
    exclude patterns written for them) and `--out` over it."""
    from volmargin.config import parse_overrides, with_overrides

    if args.set:
        cfg = with_overrides(cfg, parse_overrides(args.set))
    if args.data:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, paths=tuple(args.data), exclude=()))
    if args.out:
        cfg = dataclasses.replace(cfg, output=str(args.out))
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    import pandas as pd

    from volmargin.config import load_config
    from volmargin.io import preflight
    from volmargin.training import check_learned_params, run

    cfg = _data_and_out(load_config(args.config), args)
    check_learned_params(cfg.model.name, cfg.model.params, "model.params", bool(cfg.data.iv))
    preflight(cfg.output, folder=True)
    _check_tracking(args.tracking_uri, cfg.tracking.uri)
    result = run(cfg, tracking_uri=args.tracking_uri, progress=show_progress(args))
    print_summary(result.scores, pd.DataFrame())
    registered = f"; registered version {result.model_version} as {result.alias}" if result.model_version else ""
    print(f"wrote {result.output}/model.pkl in {result.seconds:.0f} s; MLflow run {result.run_id}{registered}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from volmargin.evaluation.scoring import write_scores
    from volmargin.io import check_complete, read_forecasts

    check_complete(args.run)
    forecasts = read_forecasts(args.run)
    if args.reference not in set(forecasts["model"]):
        raise ConfigError(f"--reference {args.reference!r} is not among the models {sorted(set(forecasts['model']))}")
    scores, dm = write_scores(forecasts, args.run, args.reference)
    print_summary(scores, dm)
    print(f"wrote {args.run}/scores.csv, dm.csv")
    return 0


def print_summary(scores: pd.DataFrame, dm: pd.DataFrame) -> None:
    from volmargin.evaluation.scoring import POOLED

    pooled = scores[scores["asset"] == POOLED]
    columns = ["model", "n", "qlike", "mse_log", "mz_r2", "var99_long_rate", "var99_short_rate",
               "kupiec_p_long", "kupiec_p_short", "basel_zone_long", "basel_zone_short",
               "es975_z2_long", "es975_z2_short"]
    table = pooled[[c for c in columns if c in pooled]].sort_values("qlike")
    print("\nPooled scores (all assets), best QLIKE first:" if len(table) > 1 else "\nPooled scores (all assets):")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    if not dm.empty:
        print(f"\nDiebold-Mariano on pooled daily QLIKE against {dm['reference'].iloc[0]} (negative: beats it):")
        print(dm[["model", "ratio", "dm_stat", "dm_p"]].to_string(index=False, float_format=lambda x: f"{x:.4f}"))


def cmd_run(args: argparse.Namespace) -> int:
    from volmargin.config import RunConfig, load_config
    from volmargin.distributed import check_options, executor
    from volmargin.pipeline import run_pipeline

    from volmargin.io import preflight
    from volmargin.training import check_learned_params

    cfg = _data_and_out(load_config(args.config, RunConfig) if args.config else RunConfig(), args)
    for name, params in cfg.learned.items():
        check_learned_params(name, params, f"learned.{name}", bool(cfg.data.iv))
    check_options(args.scheduler, args.workers)
    preflight(cfg.output, folder=True)
    _check_tracking(args.tracking_uri, cfg.tracking.uri)
    with executor(args.scheduler, args.workers) as runner:
        if runner.distributed:
            print(f"cluster: the backtest's per-asset models on {runner.description}, the learned models here")
        run = run_pipeline(cfg, args.tracking_uri, progress=show_progress(args), executor=runner)
    print_run_summary(run.out)
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in run.record["timings"].items())
    print(f"\ndone in {sum(run.record['timings'].values()):.0f} s ({timings})")
    print(f"report: {run.out / 'report.html'}; bundle: {run.record['bundle']['path']}; "
          f"MLflow parent run {run.record['mlflow']['parent_run_id']}")
    return 0


def print_run_summary(out: Path) -> None:
    """The two tables a risk committee asks for first: forecast accuracy and the calibrated margins."""
    import pandas as pd

    from volmargin.evaluation.scoring import POOLED
    from volmargin.reports.report import target_breach_rate

    scores = pd.read_csv(out / "scores.csv")
    pooled = scores[scores["asset"] == POOLED].sort_values("qlike")
    print("\nForecast accuracy (pooled over assets, best QLIKE first):")
    print(pooled[["model", "n", "qlike", "var99_long_rate", "var99_short_rate"]].to_string(
        index=False, float_format=lambda x: f"{x:.4f}"))
    margins = pd.read_csv(out / "calibration" / "margin_summary.csv")
    table = margins[margins["asset"] == POOLED].pivot(index="model", columns="side", values=["breach_rate", "avg_margin"])
    table.columns = [f"{kind}_{side}" for kind, side in table.columns]
    target = target_breach_rate(json.loads((out / "run.json").read_text()))
    table["within_target"] = (table[["breach_rate_long", "breach_rate_short"]] <= target).all(axis=1)
    order = table.assign(outside=~table["within_target"], mean=table[["avg_margin_long", "avg_margin_short"]].mean(1))
    print(f"\nCalibrated initial margin, out of sample (breach rate and average margin rate per side; models "
          f"within the {target:.1%} breach target on both sides first, each group cheapest first):")
    rates = {c: (lambda x: f"{x:.3%}") for c in ("breach_rate_long", "breach_rate_short")}  # 1.005% is not 1%
    print(table.loc[order.sort_values(["outside", "mean"]).index].to_string(
        formatters=rates, float_format=lambda x: f"{x:.2%}"))


def cmd_export(args: argparse.Namespace) -> int:
    from volmargin.config import TrainConfig, from_dict
    from volmargin.evaluation.backtest import daily_panel
    from volmargin.export import write_bundle
    from volmargin.training import load_bars, load_trained, provenance, with_iv_index

    from volmargin.export import check_names

    check_names(args.name, args.version, args.root)  # before anything is read
    model, meta, scores = load_trained(args.run)
    if not args.no_tracking:
        _check_tracking(args.tracking_uri, meta.get("tracking_uri"))
    try:
        cfg = from_dict(TrainConfig, meta["config"])
    except (KeyError, TypeError, ConfigError) as exc:
        raise ConfigError(f"{args.run}/train.json: no valid config ({exc})") from None
    bars = load_data(args.data) if args.data else load_bars(cfg)
    panel = with_iv_index(daily_panel(bars, args.min_bars or cfg.data.min_bars), cfg.data.iv)
    bundle = write_bundle(model, panel, args.root, args.name, args.version, provenance(meta, scores))
    print(f"wrote bundle {bundle} (parity and golden self-test passed)")
    if not args.no_tracking:
        import mlflow

        from volmargin.tracking import log_bundle, resolve_tracking_uri, start_experiment

        name = f"{cfg.tracking.registered_model or f'volmargin-{model.name}'}-onnx"
        try:
            uri = resolve_tracking_uri(args.tracking_uri, meta.get("tracking_uri"))
            mlflow.set_experiment(experiment_id=start_experiment(uri, cfg.tracking.experiment))
            version = log_bundle(bundle, meta.get("run_id"), name)
        except KeyboardInterrupt:  # the bundle is whole; only its registration is missing
            print(f"volmargin: interrupted after writing {bundle}: the bundle is complete and usable, but not "
                  f"registered in MLflow as {name}", file=sys.stderr)
            return 130
        print(f"MLflow: logged with the ONNX flavor and registered as {name} version {version}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from volmargin.batch import score_panel
    from volmargin.calibration import PolicyConfig
    from volmargin.calibration.bundle import calibrate_bundle
    from volmargin.calibration.parameters import write_parameter_set
    from volmargin.distributed import check_options, executor
    from volmargin.evaluation.scoring import POOLED

    from volmargin.calibration.bundle import check_calibration_data
    from volmargin.io import output_lock, preflight

    check_options(args.scheduler, args.workers)
    _known_keys("--policy", args.policy, [f.name for f in dataclasses.fields(PolicyConfig)])
    try:
        policy = PolicyConfig(**args.policy)
    except TypeError as exc:
        raise ConfigError(f"--policy: {exc}") from None
    preflight(args.out, suffixes=(".json",))
    with output_lock(args.out):  # a second writer of this output stops at once
        if not args.no_tracking:
            manifest = _bundle_manifest(args.bundle)
            _check_tracking(args.tracking_uri, manifest.get("mlflow", {}).get("tracking_uri"))
        bars, panel = _bundle_data(args)
        check_calibration_data(args.bundle, panel)
        with executor(args.scheduler, args.workers) as runner:
            scored = score_panel(args.bundle, panel, runner, progress=False)
        parameters, table, summary = calibrate_bundle(args.bundle, scored, panel, policy, args.validation_start, bars)
        path = write_parameter_set(parameters, args.bundle, args.out)
        pooled = summary[summary["asset"] == POOLED].set_index("side")
        print(f"calibrated {policy.risk} x scale per asset and side to a {policy.target_breach_rate:.1%} breach "
              f"target; validation from {table['valid_from'].iloc[0].date()}:")
        for side, row in pooled.iterrows():
            print(f"  {side:>5}: breach rate {row['breach_rate']:.2%} over {int(row['days'])} days, "
                  f"average initial margin {row['avg_margin']:.2%}, Basel zone {row['basel_zone']}")
        infeasible = [f"{r['asset']}/{r['side']}" for r in parameters["records"] if not r["feasible"]]
        if infeasible:
            print(f"  target infeasible (flagged in the set, see 'reason'): {', '.join(infeasible)}")
        print(f"wrote {path}")
        if not args.no_tracking:
            import mlflow

            from volmargin.tracking import log_calibration_set, resolve_tracking_uri, start_experiment

            logged = _bundle_manifest(args.bundle).get("mlflow", {})
            mlflow.set_experiment(experiment_id=start_experiment(
                resolve_tracking_uri(args.tracking_uri, logged.get("tracking_uri")), "volmargin"))
            log_calibration_set(path, logged.get("run_id"))
        return 0


def _bundle_manifest(bundle: Path) -> dict:
    """The bundle's verified manifest (a BundleError names what is wrong)."""
    from volmargin_serving.bundle import read_manifest

    manifest = read_manifest(bundle)
    return manifest if isinstance(manifest.get("mlflow"), dict) else {**manifest, "mlflow": {}}


def cmd_report(args: argparse.Namespace) -> int:
    from volmargin.io import check_complete, output_lock, preflight
    from volmargin.reports import write_report

    check_complete(args.run)
    preflight(args.out or args.run / "report.html")
    with output_lock(args.out or args.run / "report.html"):  # a second writer of this output stops at once
        out = write_report(args.run, args.out or args.run / "report.html")
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, self-contained; open it in any browser)")
        return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    import pandas as pd

    from volmargin.config import APC_POLICY, SimulationSection, from_dict
    from volmargin.io import preflight, read_forecasts, staged_folder
    from volmargin.simulation.study import headline, run_study, study_config, write_study

    if args.min_bars is not None:  # refused, not ignored: nothing here builds daily measures
        raise ConfigError("--min-bars: simulate does not use it (the --run's forecasts were made with its own "
                          "min_bars, and every simulated path needs all its hourly bars); leave it out")
    preflight(args.out, folder=True)
    import datetime

    values = {k: str(v) if isinstance(v, datetime.date) else v for k, v in args.set.items()}  # YAML reads dates
    section = from_dict(SimulationSection, values, "--set")
    record = _run_record(args.run)
    calibration = record.get("calibration", {})
    forecasts = read_forecasts(args.run)
    default_start = calibration.get("validation_start") or str(
        (forecasts["origin"].min() + pd.Timedelta(days=365)).date())
    models = set(forecasts["model"])
    cfg = study_config(section, default_start, args.policy if args.policy is not None
                       else calibration.get("policy", APC_POLICY),
                       default_model="har" if "har" in models else record.get("champion") or sorted(models)[0])
    bars = load_data(args.data)
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


def cmd_score(args: argparse.Namespace) -> int:
    from volmargin.batch import score_panel
    from volmargin.distributed import check_options, executor
    from volmargin.io import TABLE_SUFFIXES, output_lock, preflight, write_frame

    check_options(args.scheduler, args.workers)
    preflight(args.out, suffixes=TABLE_SUFFIXES)
    with output_lock(args.out):  # a second writer of this output stops at once
        began = time.perf_counter()
        _, panel = _bundle_data(args)
        with executor(args.scheduler, args.workers) as runner:
            scored = score_panel(args.bundle, panel, runner, latest=args.latest, progress=show_progress(args))
        write_frame(scored, args.out)
        flagged = int((scored["doubt"] != "").sum())
        print(f"scored {scored['asset'].nunique()} assets, {len(scored)} forecasts in "
              f"{time.perf_counter() - began:.1f} s "
              f"({flagged} on a window a margin service would flag as doubtful: column `doubt`); wrote {args.out}")
        _print_uncovered(panel, scored, args.bundle, "forecast")
        return 0


def _bundle_data(args: argparse.Namespace) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """The bars of `--data` for `--bundle` and their daily measures, with the `--iv` index where the bundle
    reads one."""
    from volmargin.evaluation.backtest import daily_panel
    from volmargin.training import with_iv_index
    from volmargin_serving.features import IV_FEATURE_NAMES

    bars = _bars_for_bundle(args.bundle, args.data)
    panel = daily_panel(bars, args.min_bars)
    if IV_FEATURE_NAMES[0] not in _bundle_manifest(args.bundle).get("features", {}).get("names", ()):
        return bars, panel
    if not args.iv:
        print(f"{args.bundle} reads an implied-volatility index; without --iv every asset is read as having none")
    return bars, with_iv_index(panel, dict(args.iv), "--iv")


def _bars_for_bundle(bundle: Path, data: list[str]) -> dict[str, pd.DataFrame]:
    """The `--data` bars at the interval `bundle` learned from (finer bars aggregated to it, said in a line)."""
    from volmargin.batch import bars_as_learned
    from volmargin.data.loader import bar_seconds
    from volmargin_serving.bars import interval_text

    if not data:  # the synthetic market only stands in for the bars of a bundle that learned from it
        learned = sorted(_bundle_manifest(bundle).get("training", {}).get("assets", {}))
        real = [a for a in learned if not a.startswith("syn_")]
        if real:
            raise ConfigError(f"--data: give the bars to read; {bundle} learned from real bars ({len(learned)} assets: "
                              f"{', '.join(real[:3])}{' ...' * (len(real) > 3)}), not the built-in synthetic market")
    bars = bars_as_learned(bundle, load_data(data))
    aggregated = {a: f.attrs["aggregated_from"] for a, f in bars.items() if "aggregated_from" in f.attrs}
    if aggregated:
        intervals = ", ".join(sorted({interval_text(s) for s in aggregated.values()}))
        target = interval_text(bar_seconds(bars[next(iter(aggregated))]))
        print(f"{len(aggregated)} asset(s) of {intervals} bars aggregated to the {target} bars the bundle learned from")
    return bars


def _print_uncovered(panel: dict, table: pd.DataFrame, bundle: Path, what: str) -> None:
    """A line naming the assets of `panel` that got no row for too little history for the bundle's window, and
    one for the others (a `--start` after their last day)."""
    from volmargin_serving import load

    history = load(bundle).history_days
    missing = sorted(set(panel) - set(table["asset"]))
    short = [a for a in missing if len(panel[a]) < history]
    for names, why in ((short, f"with less history than {bundle} needs"), (sorted(set(missing) - set(short)),
                                                                            "with no day from --start")):
        if names:
            print(f"no {what} for {len(names)} asset(s) {why}: {', '.join(names[:10])}{' ...' * (len(names) > 10)}")


def cmd_margins(args: argparse.Namespace) -> int:
    from volmargin.batch import serve_panel
    from volmargin.distributed import check_options, executor
    from volmargin.io import TABLE_SUFFIXES, output_lock, preflight, write_frame

    check_options(args.scheduler, args.workers)
    preflight(args.out, suffixes=TABLE_SUFFIXES)
    with output_lock(args.out):  # a second writer of this output stops at once
        _bundle_manifest(args.bundle)  # a mistyped bundle is named before its calibration set
        calibration = args.calibration or args.bundle.with_name(args.bundle.name + ".calibration.json")
        if calibration.is_dir():
            raise ConfigError(f"--calibration: {calibration} is a folder; give the calibration set's .json file")
        if not calibration.is_file():
            raise ConfigError(f"--calibration: no calibration set at {calibration} (run `volmargin calibrate --out "
                              f"{calibration}` first, or give the set's file with --calibration FILE)")
        began = time.perf_counter()
        _, panel = _bundle_data(args)
        with executor(args.scheduler, args.workers) as runner:
            served = serve_panel(args.bundle, calibration, panel, runner, latest=args.latest, start=args.start,
                                 progress=show_progress(args))
        write_frame(served, args.out)
        safe = served["fail_safe"]
        print(f"margins of {served['asset'].nunique()} assets on {served['origin'].nunique()} days from "
              f"{served['origin'].min():%Y-%m-%d} in {time.perf_counter() - began:.1f} s; {int(safe.sum())} of "
              f"{len(served)} "
              f"fail-safe (column `reason`); wrote {args.out}")
        if args.start is None and not args.latest:
            print("  (from the day before the calibration set's parameters come into force; --start DATE to change)")
        _print_fail_safe_causes(served, calibration)
        _print_uncovered(panel, served, args.bundle, "margin")
        for side, rows in served[~safe].groupby("side"):
            print(f"  {side:>5}, not fail-safe: average initial margin {rows['initial_margin'].mean():.2%}, "
                  f"maintenance {rows['maintenance_margin'].mean():.2%}")
        return 0


def _print_fail_safe_causes(served: pd.DataFrame, calibration: Path) -> None:
    """Lines for the two fail-safe causes a user fixes in the call: days before the set is in force, and assets
    the set does not cover (named after their files)."""
    early = served["reason"].str.contains("no parameters in force", regex=False)
    if early.any():
        print(f"  {int(early.sum())} of them before the calibration set's parameters are in force")
    unknown = sorted(served.loc[served["reason"].str.startswith("not in the calibration set"), "asset"].unique())
    if unknown:
        covered = sorted({r["asset"] for r in json.loads(calibration.read_text())["parameters"]["records"]})
        print(f"  {len(unknown)} asset(s) not in the calibration set, fully collateralised: {', '.join(unknown[:10])}"
              f"{' ...' * (len(unknown) > 10)}; the set covers {len(covered)}: {', '.join(covered[:10])}"
              f"{' ...' * (len(covered) > 10)} (an asset is named after its file: binance_btcusdt_1h.csv.gz -> "
              "binance_btcusdt)")


def cmd_portfolio(args: argparse.Namespace) -> int:
    import pandas as pd

    from volmargin.evaluation.scoring import POOLED
    from volmargin.io import preflight, read_forecasts, staged_folder
    from volmargin.risk.job import POPULATION_KEYS, PortfolioJob, run_portfolio
    from volmargin.risk.portfolio import CALIBRATION_WEIGHTS, read_population
    from volmargin.risk.scenarios import ScenarioConfig
    from volmargin_serving.portfolio import PortfolioPolicy

    models = None if args.models is None else tuple(m.strip() for m in args.models.split(",") if m.strip())
    if models == ():
        raise ConfigError("--models is empty")
    preflight(args.out, folder=True)  # before any work
    frames = [read_forecasts(folder) for folder in args.run]
    forecasts = pd.concat(frames, ignore_index=True).drop_duplicates(["model", "asset", "origin"], keep="last")
    daily = None
    if args.data:
        from volmargin.evaluation.backtest import daily_panel

        daily = daily_panel(load_data(args.data), args.min_bars)
    _known_keys("--scenarios", args.scenarios, [f.name for f in dataclasses.fields(ScenarioConfig)])
    _known_keys("--policy", args.policy, [f.name for f in dataclasses.fields(PortfolioPolicy)])
    _known_keys("--population", args.population, POPULATION_KEYS)
    try:
        job = PortfolioJob(models=models, scenarios=ScenarioConfig(**args.scenarios),
                           policy=PortfolioPolicy(**args.policy), validation_start=args.validation_start,
                           target=args.target, concentrations=args.concentration_grid,
                           correlation_weights=args.correlation_grid or CALIBRATION_WEIGHTS, **args.population)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"portfolio options: {exc}") from exc
    population = None
    if args.portfolios is not None:
        population = read_population(args.portfolios, tuple(sorted(forecasts["asset"].unique())))
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
    if missing := result["record"]["missing_class_days"]:
        print(f"classes left out of some of the {result['record']['book_days']} snapshot days (too few listed "
              f"legs), days missed: {', '.join(f'{cls} {days}' for cls, days in missing.items())} (run.json: "
              "missing_class_days; summary.csv has no row where a class has no book)")
    print(f"wrote {args.out}/summary.csv, grids.csv, iv_scores.csv, run.json, report.html in "
          f"{result['record']['seconds']:.0f} s")
    return 0


COMMANDS = {"run": cmd_run, "backtest": cmd_backtest, "evaluate": cmd_evaluate, "train": cmd_train,
            "export": cmd_export, "calibrate": cmd_calibrate, "score": cmd_score, "margins": cmd_margins,
            "report": cmd_report, "portfolio": cmd_portfolio, "options": cmd_options, "simulate": cmd_simulate}


def _interrupt(signum, frame) -> None:
    """SIGTERM as Ctrl-C: temporary files and staging folders are removed on the way out."""
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:  # also while the arguments are parsed or a command's libraries load
        print("volmargin: interrupted; nothing half-written was left behind", file=sys.stderr)
        return 130
    finally:
        logging.captureWarnings(False)  # as it was, for a caller in the same process (tests, notebooks)


def _main(argv: Sequence[str] | None) -> int:
    import signal

    args = build_parser().parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no download bars in our output
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:  # a new SQLite store's schema set-up is not news: keep errors on one line
        for name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
            logging.getLogger(name).setLevel(logging.WARNING)
        logging.captureWarnings(True)  # library warnings (a GARCH fit that did not converge, ...) only with -v:
        logging.getLogger("py.warnings").setLevel(logging.ERROR)  # the fit's result is used and scored as is
    if threading_is_main():
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        return COMMANDS[args.command](args)
    except (VolmarginError, ServingError) as exc:
        print(f"volmargin: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except Exception as exc:  # noqa: BLE001 - a last resort: a bug or an unforeseen failure, still one line
        if type(exc).__module__.split(".")[0] == "mlflow":
            print(f"volmargin: error: MLflow: {' '.join(str(exc).split())[:500]}", file=sys.stderr)
            return 2
        if args.verbose:
            raise
        print(f"volmargin: internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:500]} "
              "(rerun with -v for the traceback, and report it)", file=sys.stderr)
        return 1


def threading_is_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
