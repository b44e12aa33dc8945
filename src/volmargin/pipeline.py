"""`volmargin run`: the whole mission in one command, stage by stage, tracked as one MLflow run.

Stages (each an MLflow child run under one parent run, each timed):
1. data: load bars (the synthetic market when no paths are configured), daily measures, coverage;
2. train: fit every learned model on the training window, evaluate after it, register it (`volmargin train`);
3. backtest: walk-forward forecasts of the learned models and the baselines, scores, Diebold-Mariano;
4. calibrate: margin policy calibrated on the calibration window, validated walk-forward after it,
   margin backtest and stress events for every model;
   then portfolio: margins of test books across assets (FHS filtered by the champion and the references),
   calibrated and validated like the single-asset margins (`volmargin.risk.job`);
4b. simulate (optional, config `simulation`): liquidation and bad-debt simulation of the policies;
5. export: the champion (the learned model with the best backtest QLIKE before the margins' validation
   starts, `select_champion`), refitted on all data up to the last day, as an ONNX bundle, registered, with
   its calibration set beside it;
6. score: the latest date of every asset through the bundle (what the margin service would publish);
7. report: the self-contained HTML model-comparison report.
`run.json` is rewritten after every stage, so a failed stage leaves the earlier outputs and a readable
record of how far the run got.
"""

from __future__ import annotations

import dataclasses
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from volmargin.config import RunConfig
from volmargin.errors import ConfigError, VolmarginError
from volmargin.evaluation.scoring import POOLED
from volmargin.io import mark_incomplete, output_lock, write_atomic, write_frame
from volmargin.progress import bars_enabled


class StageError(VolmarginError):
    """A stage of `volmargin run` failed; the message names it and says what was kept."""


@dataclass
class Run:
    """What the stages hand each other, and the record written to run.json."""

    cfg: RunConfig
    out: Path
    progress: bool = True
    executor: Any = None  # runs the backtest's per-asset models (volmargin.distributed); None: this process
    bars: dict = field(default_factory=dict)
    panel: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    forecasts: pd.DataFrame | None = None
    scores: pd.DataFrame | None = None
    calibration: pd.DataFrame | None = None
    margin_forecasts: pd.DataFrame | None = None  # the forecasts with realised moves over the MPOR
    record: dict = field(default_factory=dict)

    def save(self) -> None:
        write_atomic(self.out / "run.json", lambda p: p.write_text(json.dumps(self.record, indent=2, default=str)))


def stage_data(run: Run) -> None:
    from volmargin.tracking import data_fingerprint
    from volmargin.training import check_window, daily_data, from_train_start

    run.bars, run.panel = daily_data(run.cfg)
    # every stage's daily rows start at window.train_start, the export's refit's too (it read all the data while its
    # manifest said train_start: session 31); the bars stay whole, their fingerprint the data's as read
    run.panel = from_train_start(run.panel, run.cfg.window.train_start)
    for name in run.cfg.learned:
        check_window(run.cfg.train_config(name), run.panel)
    check_calibration_end(run.cfg, run.panel)
    assets = {}
    for asset, bars in run.bars.items():
        gaps = bars.attrs.get("gaps")
        assets[asset] = {"first": str(bars.index[0].date()), "last": str(bars.index[-1].date()), "bars": len(bars),
                         "gaps": getattr(gaps, "count", 0), "missing_bars": getattr(gaps, "missing_bars", 0),
                         "incomplete_days": int(run.panel[asset].attrs.get("incomplete_days", 0)),
                         "source": str(bars.attrs.get("source", "synthetic"))}
    fingerprint = data_fingerprint(run.bars)
    synthetic = not run.cfg.data.paths
    run.record["data"] = {"source": "built-in synthetic market" if synthetic else ", ".join(run.cfg.data.paths),
                          "synthetic": synthetic, "fingerprint": fingerprint["sha256"], "assets": assets,
                          "iv": dict(run.cfg.data.iv)}
    print(f"data: {len(assets)} assets{' (built-in synthetic market)' if synthetic else ''}, "
          f"{sum(a['bars'] for a in assets.values()):,} bars")


def validation_start(cfg) -> pd.Timestamp:
    """The first day the margins are validated on: the day after calibration.end (default window.train_end)."""
    return pd.Timestamp(cfg.calibration.end or cfg.window.train_end, tz="UTC") + pd.Timedelta(days=1)


def check_calibration_end(cfg, panel: dict[str, pd.DataFrame]) -> None:
    """At data load: calibration.end (default window.train_end) must leave data to validate on after it, else
    the job would export a calibration set validated on nothing and fail at its summary."""
    end = validation_start(cfg) - pd.Timedelta(days=1)
    last = max(d.index[-1] for d in panel.values())
    if end >= last:
        raise ConfigError(f"calibration.end {end.date()} is not before the data ends ({last.date()}); nothing "
                          "would be left to validate the margins on")


def stage_train(run: Run) -> None:
    from volmargin.tracking import tracked_run
    from volmargin.training import fit_and_evaluate, save_trained

    evaluated = {}
    for name in run.cfg.learned:
        cfg = run.cfg.train_config(name)
        with tracked_run(f"train-{name}", tags={"volmargin.command": "train"}, nested=True):
            fitting = time.perf_counter()
            reused = name == "blend" and blend_reuses_members(run, evaluated)
            if reused:
                model, forecasts = reused_blend(run, evaluated)
            else:
                model, forecasts = fit_and_evaluate(cfg, run.panel, run.progress)
            seconds = time.perf_counter() - fitting
            _, version, alias = save_trained(cfg, model, forecasts, run.panel, run.bars, seconds)
        run.models[name], evaluated[name] = model, forecasts
        fitted = (f"mixed from the members above (not refitted), evaluated after {cfg.window.train_end}" if reused
                  else f"fitted on data up to {cfg.window.train_end} and evaluated after it")
        registered = f"; registered as {cfg.tracking.registered_model} version {version} ({alias})" if version else ""
        print(f"train: {name} {fitted} in {seconds:.1f} s; written to {cfg.output}{registered}")


def blend_reuses_members(run: Run, evaluated: dict[str, pd.DataFrame]) -> bool:
    """Whether the blend's members are the gbm and nn this stage has just trained (`learned.blend` without
    members of its own): then it is mixed from them instead of fitted again."""
    from volmargin.models.blend import BlendForecaster

    params = run.cfg.learned["blend"]
    trained = {m: run.cfg.learned[m] for m in evaluated if m in run.cfg.learned}
    return BlendForecaster.made_of(params, trained, run.cfg.levels)


def reused_blend(run: Run, evaluated: dict[str, pd.DataFrame]):
    """The blend of the gbm and nn this stage has just trained, and its evaluation forecasts from theirs."""
    from volmargin.models.blend import BlendForecaster

    params = run.cfg.learned["blend"]
    blend = BlendForecaster(**params)
    model = BlendForecaster.from_members(run.models["gbm"], run.models.get("nn"), blend.weight, blend.long_share,
                                         blend.long_days)
    table = model.combined_table(evaluated["gbm"], evaluated.get("nn"), run.panel, model.horizon_)
    return model, table.assign(model="blend")


def stage_backtest(run: Run) -> None:
    from volmargin.evaluation.backtest import BacktestConfig, run_backtest
    from volmargin.evaluation.scoring import write_scores
    from volmargin.evaluation.walkforward import WalkForwardSplit

    section = run.cfg.backtest
    start = pd.Timestamp(section.start, tz="UTC") if section.start else None
    split = WalkForwardSplit(start=start, refit_every=section.refit_every, min_train=run.cfg.window.min_train_days)
    learned = tuple(run.cfg.learned)
    config = BacktestConfig(models=tuple(section.baselines) + learned, split=split, levels=tuple(sorted(run.cfg.levels)),
                            horizon=run.cfg.horizon, model_params={m: dict(run.cfg.learned[m]) for m in learned},
                            model_refit_every={m: section.learned_refit_every for m in learned})
    run.forecasts, timings = run_backtest(run.panel, config, progress=run.progress, executor=run.executor)
    write_frame(run.forecasts, run.out / "forecasts.parquet")
    write_frame(timings, run.out / "timings.csv")
    reference = "har" if "har" in section.baselines else (section.baselines or learned)[0]
    run.scores, _ = write_scores(run.forecasts, run.out, reference)
    run.record["champion"], run.record["champion_selected_on"] = select_champion(run, learned)
    print(f"backtest: {run.forecasts['model'].nunique()} models, {len(run.forecasts):,} forecasts; "
          f"champion {run.record['champion']} ({run.record['champion_selected_on']})")


def select_champion(run: Run, learned: tuple[str, ...]) -> tuple[str, str]:
    """The learned model with the lowest pooled QLIKE on the forecasts whose targets are realised before the
    margins' validation starts (the day after `calibration.end`), so that the choice reads none of the days its
    margins are then reported on; on every forecast (said so) where no learned forecast lies before it."""
    from volmargin.evaluation.scoring import score_forecasts

    first = validation_start(run.cfg)
    rows = run.forecasts[run.forecasts["model"].isin(learned)]
    early = rows[rows["origin"] + pd.Timedelta(days=run.cfg.horizon) < first]
    chosen_on = f"pooled QLIKE on origins before {(first - pd.Timedelta(days=run.cfg.horizon)).date()}"
    if early.empty or early["model"].nunique() < rows["model"].nunique():
        early, chosen_on = rows, "pooled QLIKE on every forecast: none before the validation start"
    scores = score_forecasts(early)
    pooled = scores[scores["asset"] == POOLED].sort_values("qlike")
    return str(pooled["model"].iloc[0]), chosen_on


def stage_calibrate(run: Run) -> None:
    from volmargin.calibration import (PolicyConfig, margin_paths, margin_summary, stress_report,
                                       walk_forward_calibration)

    from volmargin.calibration.intraday import with_intraday_moves

    section = run.cfg.calibration
    policy = PolicyConfig(**section.policy)
    first = validation_start(run.cfg)
    forecasts = run.forecasts if policy.mpor_hours is None else with_intraday_moves(run.forecasts, run.bars,
                                                                                    policy.mpor_hours)
    if section.recalibrate:
        run.calibration = walk_forward_calibration(forecasts, policy, first, every=section.recalibrate)
    else:
        from volmargin.calibration import calibrate

        run.calibration = calibrate(forecasts, policy, first)
    run.margin_forecasts = forecasts
    paths = margin_paths(forecasts, policy, run.calibration)
    folder = run.out / "calibration"
    write_frame(run.calibration, folder / "calibration.csv")
    write_frame(paths, folder / "margin_paths.parquet")
    horizon = 1 if policy.mpor_hours is not None else run.cfg.horizon  # an intraday MPOR ends within the day
    write_frame(margin_summary(paths, policy.target_breach_rate, horizon=horizon), folder / "margin_summary.csv")
    write_frame(stress_report(paths), folder / "stress.csv")
    run.record["calibration"] = {"policy": dataclasses.asdict(policy), "validation_start": str(first.date())}
    mpor = f"{policy.mpor_hours} h" if policy.mpor_hours else f"{run.cfg.horizon} d"
    print(f"calibrate: {policy.risk} x scale per asset and side, MPOR {mpor}, target breach rate "
          f"{policy.target_breach_rate:.1%}, validated from {first.date()}")


def stage_portfolio(run: Run) -> None:
    from volmargin.risk.job import PortfolioJob, run_portfolio
    from volmargin.risk.portfolio import CALIBRATION_WEIGHTS
    from volmargin.risk.scenarios import ScenarioConfig
    from volmargin_serving.portfolio import PortfolioPolicy

    section = run.cfg.portfolio
    stale = _drop_stale(run, "portfolio")  # an earlier run's files (another model's scenario file) never stay
    if not section.enabled:
        print("portfolio: off (portfolio.enabled: false)" + stale)
        return
    available = set(run.forecasts["model"])
    models = section.models or tuple(dict.fromkeys(m for m in (run.record["champion"], "ewma97", "gjr")
                                                   if m in available or m == "ewma97"))
    start = section.validation_start or str(validation_start(run.cfg).date())
    job = PortfolioJob(models=models, scenarios=ScenarioConfig(**section.scenarios),
                       policy=PortfolioPolicy(**section.policy), validation_start=start,
                       concentrations=section.concentrations,
                       correlation_weights=tuple(section.correlation_weights or CALIBRATION_WEIGHTS),
                       **section.population)
    summary = run_portfolio(run.forecasts, run.panel, job, run.out / "portfolio", progress=run.progress)["summary"]
    pooled = summary[summary["portfolio_class"] == POOLED]
    run.record["portfolio"] = {"models": list(models), "validation_start": start}
    print("portfolio: " + "; ".join(f"{r.model} breach {r.breach_rate:.2%}, margin {r.avg_margin:.2%} "
                                    f"(isolated {r.avg_isolated_margin:.2%})" for r in pooled.itertuples())
          + f"; validated from {start}")


# the files a service or a reader opens without run.json: written by the last stages (score, report)
PUBLISHED = ("latest.parquet", "latest_margins.parquet", "report.html")


def _drop_stale(run: Run, folder: str) -> str:
    """Remove an earlier run's outputs of a stage before it runs, or when this run leaves it off (the report
    showed them as this run's; a scenario file of an earlier champion stayed beside this run's); the folder is
    this run's own, locked and marked incomplete. A note for the stage's line, '' if nothing was there."""
    import shutil

    path = run.out / folder
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    else:
        return ""
    return f"; an earlier run's {folder}/ removed"


def stage_simulate(run: Run) -> None:
    """Optional (config `simulation.enabled`): liquidations and bad debt of the breach-rate, solvency-calibrated
    and static policies, written to simulation/ (volmargin.simulation.study)."""
    section = run.cfg.simulation
    stale = _drop_stale(run, "simulation")  # an earlier run's files never stay beside this run's
    if not section.enabled:
        print("simulate: off (set simulation.enabled: true in the config to run it)" + stale)
        return
    from volmargin.simulation.study import headline, run_study, study_config, write_study

    first = validation_start(run.cfg)
    models = set(run.forecasts["model"])
    cfg = study_config(section, str(first.date()), run.cfg.calibration.policy, run.cfg.calibration.recalibrate,
                       default_model="har" if "har" in models else run.record["champion"])
    result = run_study(run.margin_forecasts if run.margin_forecasts is not None else run.forecasts, run.bars, cfg)
    write_study(result, run.out / "simulation")
    table = headline(result, cfg.target.max_bad_debt_fund)
    met = table.groupby("policy")["meets_target"].mean()
    run.record["simulation"] = {"model": cfg.model, "validation_start": cfg.validation_start,
                                "seconds": round(result.seconds, 1)}
    print(f"simulate: {cfg.model} margins through {len(table['asset'].unique())} assets' liquidations; "
          f"bad-debt target met out of sample by " + ", ".join(f"{p} {v:.0%}" for p, v in met.items()) + " of assets")


def stage_export(run: Run) -> None:
    from volmargin.calibration import PolicyConfig, parameter_set
    from volmargin.export import write_bundle
    from volmargin.tracking import log_bundle, log_calibration_set
    from volmargin.training import load_trained, provenance
    from volmargin_serving.calibration import calibration_beside

    champion = run.record["champion"]
    cfg = run.cfg.train_config(champion)
    _, meta, scores = load_trained(Path(cfg.output))
    model, data_end = refit_on_all_data(run, champion)
    record = provenance(meta, scores)
    record["training"].update(train_end=data_end, refit_on_all_data=True,
                              evaluated_model_train_end=meta["config"]["window"]["train_end"])
    policy = PolicyConfig(**run.cfg.calibration.policy)
    parameters = parameter_set(run.margin_forecasts, policy, run.calibration, champion, assets=sorted(run.panel),
                               allow_infeasible=True)
    bundle = write_bundle(model, run.panel, run.cfg.models_root, cfg.tracking.registered_model, provenance=record,
                          calibration=parameters)  # the set written beside it before the bundle appears
    calibration_file = calibration_beside(bundle)
    version = log_bundle(bundle, meta["run_id"], f"{cfg.tracking.registered_model}-onnx")
    log_calibration_set(calibration_file, meta["run_id"])
    run.record["bundle"] = {"name": bundle.parent.name, "version": bundle.name, "path": str(bundle),
                            "registered_model": f"{cfg.tracking.registered_model}-onnx", "registered_version": version,
                            "calibration_set": str(calibration_file)}
    print(f"export: {bundle} registered as {cfg.tracking.registered_model}-onnx version {version}; "
          f"calibration set {calibration_file}")


def refit_on_all_data(run: Run, name: str):
    """The champion refitted with its configured parameters on every asset's data up to the last day: a
    frozen model ages (docs/unseen-assets.md, "Ageing and retraining"), so what is exported learns from
    everything known at export time. Its held-out scores are those of the train stage's model, fitted to
    window.train_end."""
    from volmargin.models import make_forecaster

    model = make_forecaster(name, **run.cfg.learned[name])
    if hasattr(model, "enable_progress_bar"):
        model.enable_progress_bar = bars_enabled(run.progress)
    model.fit_panel(run.panel, run.cfg.horizon)
    return model, str(max(daily.index[-1] for daily in run.panel.values()).date())


def stage_score(run: Run) -> None:
    from volmargin.batch import score_panel, serve_panel

    bundle = run.record["bundle"]
    scored = score_panel(bundle["path"], run.panel, latest=True, progress=False)
    write_frame(scored, run.out / "latest.parquet")
    served = serve_panel(bundle["path"], bundle["calibration_set"], run.panel, latest=True, progress=False)
    write_frame(served, run.out / "latest_margins.parquet")
    print(f"score: latest forecasts of {len(scored)} assets in {run.out / 'latest.parquet'}; the margins a service "
          f"would publish with the calibration set in {run.out / 'latest_margins.parquet'} "
          f"({int(served['fail_safe'].sum())} of {len(served)} fail-safe)")


def stage_report(run: Run) -> None:
    from volmargin.reports import write_report

    out = write_report(run.out, run.out / "report.html")
    print(f"report: {out}")


STAGES: dict[str, Callable[[Run], None]] = {
    "data": stage_data, "train": stage_train, "backtest": stage_backtest, "calibrate": stage_calibrate,
    "portfolio": stage_portfolio, "simulate": stage_simulate, "export": stage_export, "score": stage_score,
    "report": stage_report,
}


def run_pipeline(cfg: RunConfig, tracking_uri: str | None = None, progress: bool = True, executor: Any = None) -> Run:
    """Every stage in order under one MLflow parent run; a failing stage raises `StageError`. The folder
    is locked for the run, its run.json says `complete: false` until the last stage is done. `executor`
    (`volmargin.distributed.executor`) runs the backtest's per-asset models; the results do not depend on it."""
    run = Run(cfg, Path(cfg.output), progress, executor)
    with output_lock(run.out):  # one writer per run folder
        return _run_all(run, tracking_uri)


def _run_all(run: Run, tracking_uri: str | None) -> Run:
    import mlflow

    from volmargin.tracking import resolve_tracking_uri, start_experiment, tracked_run
    from volmargin.training import flat_params

    cfg = run.cfg
    mark_incomplete(run.out, {"command": "run"})  # readers refuse the folder until the last stage is done
    for published in PUBLISHED:  # a service reads these alone: an earlier run's never stay beside a failed one's
        _drop_stale(run, published)
    for trained in run.out.glob("train-*"):  # an earlier run's learned model this run does not train
        if trained.name.removeprefix("train-") not in cfg.learned:
            _drop_stale(run, trained.name)
    uri = resolve_tracking_uri(tracking_uri, cfg.tracking.uri)
    mlflow.set_experiment(experiment_id=start_experiment(uri, cfg.tracking.experiment))
    run.record.update(config=dataclasses.asdict(cfg), timings={}, mlflow={"tracking_uri": uri, "stages": {}},
                      complete=False)
    with tracked_run("volmargin run", tags={"volmargin.command": "run"}) as parent:
        run.record["mlflow"]["parent_run_id"] = parent.info.run_id
        mlflow.log_dict(run.record["config"], "config.json")
        mlflow.log_params(flat_params(cfg))  # runs told apart by their settings in the UI, not only in an artifact
        for name, stage in STAGES.items():
            _run_stage(run, name, stage)
        mlflow.log_metrics({f"seconds_{k}": v for k, v in run.record["timings"].items()})
        mlflow.log_artifact(str(run.out / "report.html"))
        run.record["complete"] = True
        run.save()  # last: the folder is complete
    return run


def _run_stage(run: Run, name: str, stage: Callable[[Run], None]) -> None:
    import mlflow

    from volmargin.tracking import tracked_run

    began = time.perf_counter()
    try:
        with tracked_run(name, tags={"volmargin.stage": name}, nested=True) as child:
            run.record["mlflow"]["stages"][name] = child.info.run_id
            stage(run)
            run.record["timings"][name] = round(time.perf_counter() - began, 1)
            mlflow.log_metric("seconds", run.record["timings"][name])
    except (KeyboardInterrupt, StageError):
        raise
    except Exception as exc:  # noqa: BLE001 - any failure ends the run with the stage named
        run.record["failed_stage"] = {"stage": name, "error": f"{type(exc).__name__}: {exc}",
                                      "traceback": traceback.format_exc(limit=8)}
        recorded = "run.json records the failure"
        try:
            run.save()
        except VolmarginError as save_error:  # the folder itself failed (read-only, full): still name the stage
            recorded = f"run.json could not record it: {save_error}"
        hint = "; --data FILES replaces the config's data.paths" if name == "data" else ""
        kept = "Outputs of the earlier stages are kept" if run.record["timings"] else "Nothing else ran"
        raise StageError(f"stage '{name}' failed: {exc}{hint}. {kept} in {run.out} ({recorded})") from exc
    run.save()
