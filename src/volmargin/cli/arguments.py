"""The command line's parser: every command's options, their value types and help."""

from __future__ import annotations

import argparse
import math
import re
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

from volmargin.errors import ConfigError

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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


MAX_DAYS = 36_500  # as the run config's day counts: more overflowed pandas' dates ("internal error: OutOfBounds")


def _days(text: str) -> int:
    """A whole number of days, at most MAX_DAYS (the lower bounds are the walk-forward split's, in its words)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of days, got {text!r}") from None
    if value > MAX_DAYS:
        raise argparse.ArgumentTypeError(f"at most {MAX_DAYS} days, got {value}")
    return value


def _model_days(text: str) -> dict[str, int]:
    """MODEL=DAYS[,MODEL=DAYS...] of --model-refit: each model once, each count of days as `_days` reads it."""
    try:
        pairs = [(model.strip(), int(days)) for model, days in (item.split("=") for item in text.split(",") if item)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected MODEL=DAYS[,MODEL=DAYS...], got {text!r}") from exc
    names = [model for model, _ in pairs]
    if len(set(names)) < len(names):  # the last would have won silently
        raise argparse.ArgumentTypeError(f"{next(m for m in names if names.count(m) > 1)} is given twice")
    if bad := next((f"{model}={days}" for model, days in pairs if days < 1), None):  # failed after the data loaded
        raise argparse.ArgumentTypeError(f"{bad}: a model refits every 1 day or more")
    return {model: _days(str(days)) for model, days in pairs}


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


def check_known_keys(option: str, values: dict, keys) -> None:
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
    backtest.add_argument("--refit-every", type=_days, default=20, metavar="DAYS", help="refit cadence (default 20)")
    backtest.add_argument("--model-refit", type=_model_days, default={}, metavar="MODEL=DAYS,...",
                          help="per-model refit cadence, e.g. nn=60,gbm=60 (learned models refit slower)")
    backtest.add_argument("--window", type=_days, default=None, metavar="DAYS",
                          help="rolling training window (default: expanding)")
    backtest.add_argument("--min-train", type=_days, default=365, metavar="DAYS",
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
    portfolio.add_argument("--min-bars", type=_positive_int, default=None,
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
    options.add_argument("--stress-days", type=_days, default=365, metavar="DAYS",
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
