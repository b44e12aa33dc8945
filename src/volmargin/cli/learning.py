"""Commands that learn and judge forecasts: `backtest`, `train`, `evaluate`, `run`, `export`, `report`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from volmargin.cli.arguments import show_progress
from volmargin.cli.common import check_tracking, load_data

from volmargin.errors import ConfigError

if TYPE_CHECKING:  # imported where used: a Ctrl-C while pandas loads is then one line, not a traceback
    import pandas as pd


def cmd_backtest(args: argparse.Namespace) -> int:
    import pandas as pd

    from volmargin.config import ARCH_BACKCAST_DAYS, MAX_HORIZON, levels_problem
    from volmargin.distributed import check_options, executor
    from volmargin.evaluation.backtest import BacktestConfig, daily_panel, run_backtest
    from volmargin.evaluation.scoring import write_scores
    from volmargin.evaluation.walkforward import WalkForwardSplit
    from volmargin.io import preflight, staged_folder, write_atomic, write_frame

    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if not models:
        raise ConfigError("--models is empty")
    short = [days for days in (args.window, args.min_train) if days is not None and days < ARCH_BACKCAST_DAYS]
    if short and {"garch", "gjr"} & set(models):
        raise ConfigError(f"--window / --min-train {min(short)}: garch and gjr need at least {ARCH_BACKCAST_DAYS} days "
                          f"(arch's backcast reads the first {ARCH_BACKCAST_DAYS} days of a forecast's history; fewer "
                          "would read the future)")
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
        check_tracking(args.tracking_uri)
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
    import mlflow
    import pandas as pd

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
    check_tracking(args.tracking_uri, cfg.tracking.uri)
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
    from volmargin.io import preflight, refuse_inside_bundle
    from volmargin.pipeline import run_pipeline
    from volmargin.training import check_learned_params

    cfg = _data_and_out(load_config(args.config, RunConfig) if args.config else RunConfig(), args)
    for name, params in cfg.learned.items():
        check_learned_params(name, params, f"learned.{name}", bool(cfg.data.iv))
    check_options(args.scheduler, args.workers)
    preflight(cfg.output, folder=True)
    refuse_inside_bundle(Path(cfg.models_root) / "bundle")  # before the run's work, not at its export
    check_tracking(args.tracking_uri, cfg.tracking.uri)
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
    # the pooled rates can hide one asset far over the target behind the others: count those a test rejects
    per_asset = margins[margins["asset"] != POOLED]
    over = per_asset[(per_asset["breach_rate"] > target) & (per_asset.get("kupiec_p", 1.0) < 0.05)]
    table["assets_over"] = [f"{over.loc[over['model'] == m, 'asset'].nunique()} of "
                            f"{per_asset.loc[per_asset['model'] == m, 'asset'].nunique()}" for m in table.index]
    table["within_target"] = (table[["breach_rate_long", "breach_rate_short"]] <= target).all(axis=1)
    order = table.assign(outside=~table["within_target"], mean=table[["avg_margin_long", "avg_margin_short"]].mean(1))
    print(f"\nCalibrated initial margin, out of sample (breach rate and average margin rate per side; models "
          f"within the {target:.1%} breach target on both sides first, each group cheapest first; assets_over: "
          "assets whose breach rate on a side is over the target with Kupiec p < 0.05):")
    rates = {c: (lambda x: f"{x:.3%}") for c in ("breach_rate_long", "breach_rate_short")}  # 1.005% is not 1%
    print(table.loc[order.sort_values(["outside", "mean"]).index].to_string(
        formatters=rates, float_format=lambda x: f"{x:.2%}"))


def cmd_export(args: argparse.Namespace) -> int:
    from volmargin.config import TrainConfig, from_dict
    from volmargin.evaluation.backtest import daily_panel
    from volmargin.export import check_names, write_bundle
    from volmargin.training import load_bars, load_trained, provenance, with_iv_index

    check_names(args.name, args.version, args.root)  # before anything is read
    model, meta, scores = load_trained(args.run)
    if not args.no_tracking:
        check_tracking(args.tracking_uri, meta.get("tracking_uri"))
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


def cmd_report(args: argparse.Namespace) -> int:
    from volmargin.io import check_complete, output_lock, preflight
    from volmargin.reports import write_report

    check_complete(args.run)
    preflight(args.out or args.run / "report.html")
    with output_lock(args.out or args.run / "report.html"):  # a second writer of this output stops at once
        out = write_report(args.run, args.out or args.run / "report.html")
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, self-contained; open it in any browser)")
        return 0
