"""`volmargin train`: fit a learned model on the training window, evaluate it on the later window,
write it, and track everything in MLflow (config, data fingerprint, scores, learning curves, model)."""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import numbers
import pickle
import re
import time
import typing
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from volmargin.config import TrainConfig, holds
from volmargin.errors import ConfigError, DataError
from volmargin.evaluation.backtest import daily_panel
from volmargin.evaluation.scoring import POOLED, score_forecasts
from volmargin.evaluation.walkforward import WalkForwardSplit, panel_historical_forecasts
from volmargin.features.learned import attach_iv
from volmargin.io import check_complete, read_table, staged_folder, write_atomic, write_frame
from volmargin.models import make_forecaster
from volmargin.models.base import GlobalForecaster
from volmargin.progress import bars_enabled

# The shape of the pickled learned models in a `volmargin train` folder: bump it whenever a model class gains
# or loses state (e.g. the GRU's tail_scale), so that an older run is refused in one line, not mid-export.
MODEL_FORMAT = 2


@dataclass(frozen=True)
class TrainResult:
    output: Path
    run_id: str
    scores: pd.DataFrame
    model_version: str | None
    alias: str | None
    seconds: float


def load_bars(cfg: TrainConfig) -> dict[str, pd.DataFrame]:
    from volmargin.data import load_panel, synthetic_market

    if not cfg.data.paths:
        print(f"No data.paths in the config: using the built-in synthetic market "
              f"({cfg.data.synthetic_assets} assets, {cfg.data.synthetic_days} days, seed {cfg.data.seed}).")
        return synthetic_market(n_assets=cfg.data.synthetic_assets, days=cfg.data.synthetic_days, seed=cfg.data.seed)
    bars = load_panel(list(cfg.data.paths))
    kept = {a: f for a, f in bars.items()
            if not any(fnmatch.fnmatch(Path(str(f.attrs.get("source", a))).name, p) for p in cfg.data.exclude)}
    if not kept:
        raise DataError(f"data.exclude {list(cfg.data.exclude)} leaves no file of {list(cfg.data.paths)}")
    return kept


def daily_data(cfg: TrainConfig) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """The config's bars and their daily measures, with the implied-volatility index of `data.iv`."""
    bars = load_bars(cfg)
    return bars, with_iv_index(daily_panel(bars, cfg.data.min_bars), cfg.data.iv)


def with_iv_index(panel: dict[str, pd.DataFrame], files: dict[str, str], key: str = "data.iv"
                  ) -> dict[str, pd.DataFrame]:
    """Each asset's daily measures with the index of the one pattern of `files` (asset-name glob -> DVOL file,
    read by the validated loader) its name matches (`attach_iv`); assets that match none have no index.
    ConfigError where a pattern matches no asset (a typo would train without the index) or an asset two."""
    from volmargin.data.options import load_dvol

    if not files:
        return panel
    matches = {asset: [p for p in files if fnmatch.fnmatch(asset, p)] for asset in panel}
    for pattern in files:
        if not any(pattern in hits for hits in matches.values()):
            raise ConfigError(f"{key}: {pattern!r} matches no asset of the data (e.g. {', '.join(sorted(panel)[:3])})")
    for asset, hits in matches.items():
        if len(hits) > 1:
            raise ConfigError(f"{key}: asset {asset} matches both {hits[0]!r} and {hits[1]!r}; give it one index")
    indexes = {p: load_dvol(path) for p, path in files.items()}
    return {asset: attach_iv(daily, indexes[matches[asset][0]]) if matches[asset] else daily
            for asset, daily in panel.items()}


# the ranges of the learned models' numeric parameters (same name, same meaning in the GBM and the GRU):
# checked with the types at load, so a bad value stops before any fit, not deep inside LightGBM or torch
_AT_LEAST = {1: "a whole number >= 1", 2: "a whole number >= 2", 0: "a whole number >= 0"}
PARAMETER_RANGES = {
    **{name: (lambda v: v >= 1, _AT_LEAST[1]) for name in (
        "n_estimators", "tail_estimators", "smearing_estimators", "min_samples_leaf", "tail_min_samples_leaf",
        "smearing_min_samples_leaf", "window", "hidden", "layers", "max_epochs", "refit_epochs", "batch_size",
        "members", "num_threads")},
    **{name: (lambda v: v >= 2, _AT_LEAST[2]) for name in ("num_leaves", "variance_num_leaves", "level_days")},
    **{name: (lambda v: v >= 0, _AT_LEAST[0]) for name in ("patience", "random_state", "seed", "tail_folds",
                                                            "tail_calibration_days")},
    **{name: (lambda v: 0 < v <= 1, "a number in (0, 1]") for name in ("learning_rate", "subsample", "max_features")},
    **{name: (lambda v: 0 < v < 1, "a number in (0, 1)") for name in ("val_fraction", "val_assets")},
    "lr": (lambda v: 0 < v < 1, "a number in (0, 1)"),
    "weight_decay": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "tail_weight": (lambda v: 0 <= v < 1e3, "a number in [0, 1000)"),
}


def check_learned_params(name: str, params: dict, key: str, iv_index: bool = False) -> None:
    """Before any work: every constructor parameter of learned model `name` exists and has the type its
    annotation asks (ConfigError naming `key`.parameter), so a wrong type never reaches a fit; `iv_features`
    only where the config maps assets to an implied-volatility index (`iv_index`, data.iv)."""
    from volmargin.config import _convert
    from volmargin.models import _LEARNED
    from volmargin.models import make_forecaster

    if name not in _LEARNED:
        make_forecaster(name)  # the ConfigError naming the known models
        return
    module, cls = _LEARNED[name].split(":")
    from importlib import import_module

    init = getattr(import_module(module), cls).__init__
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # noqa: BLE001 - unresolvable annotations: only the names are checked
        hints = {}
    if (params or {}).get("iv_features") is True and not iv_index:  # other values: the type check names them
        raise ConfigError(f"{key}.iv_features: no implied-volatility index is configured, so the model would learn "
                          "from a missing column; map assets to DVOL files in data.iv (e.g. data.iv: "
                          "{'*btc*': iv/deribit_btc_dvol_1d.csv.gz})")
    for param, value in (params or {}).items():
        if param in hints:
            _convert(f"{key}.{param}", hints[param], value)
        rule = PARAMETER_RANGES.get(param)
        if rule is not None and value is not None and not holds(rule[0], value):
            raise ConfigError(f"{key}.{param}: {value!r}; expected {rule[1]}")
    make_forecaster(name, **(params or {}))  # unknown names: ConfigError
    if name == "blend":  # its members' parameters, as if configured on their own
        if ((params or {}).get("gbm") or {}).get("iv_features") is True:  # else refused by the fit, after the data
            raise ConfigError(f"{key}.gbm.iv_features: a blend's gbm member reads the core features only; train "
                              "the gbm alone with iv_features")
        for member in ("gbm", "nn"):
            check_learned_params(member, (params or {}).get(member), f"{key}.{member}", iv_index)


def flat_params(cfg: TrainConfig) -> dict[str, str]:
    """Config as dotted MLflow params (values as short strings)."""
    def walk(prefix: str, value) -> dict:
        # a mapping keyed by names becomes dotted params; one keyed by patterns (data.iv's '*btc*') is one param
        if isinstance(value, dict) and all(re.fullmatch(r"[\w\-. :/]+", str(key)) for key in value):
            return {k: v for key, sub in value.items() for k, v in walk(f"{prefix}.{key}" if prefix else key, sub).items()}
        return {prefix: str(value)[:500]}
    return walk("", dataclasses.asdict(cfg))


def check_window(cfg: TrainConfig, panel: dict[str, pd.DataFrame]) -> None:
    """At data load: the training window must lie in the data, else the model would learn from another
    window than the one its bundle will claim (ConfigError naming window.train_end)."""
    end = cfg.timestamp("train_end")
    first = min(d.index[0] for d in panel.values())
    last = max(d.index[-1] for d in panel.values())
    if end < first:
        raise ConfigError(f"window.train_end {end.date()} is before the data starts ({first.date()}); "
                          "set it inside the data")
    if end >= last:
        raise ConfigError(f"window.train_end {end.date()} is not before the data ends ({last.date()}); "
                          "nothing would be left to evaluate on")
    need = pd.Timedelta(days=cfg.window.min_train_days)
    if not any(d.index[0] + need <= end for d in panel.values()):
        raise ConfigError(f"window.train_end {end.date()}: no asset has window.min_train_days "
                          f"({cfg.window.min_train_days}) of data before it (the data starts {first.date()})")


def from_train_start(panel: dict[str, pd.DataFrame], train_start: str | None) -> dict[str, pd.DataFrame]:
    """Each asset's daily rows from `window.train_start` on (all where None); ConfigError naming an asset with
    none (it was an internal IndexError)."""
    if train_start is None:
        return panel
    start = pd.Timestamp(train_start, tz="UTC")
    ended = sorted(a for a, d in panel.items() if not len(d.loc[start:]))
    if ended:
        raise ConfigError(f"window.train_start {start.date()}: {', '.join(ended[:3])} has no day after it (ends "
                          f"{panel[ended[0]].index[-1].date()}); leave it out or start earlier")
    return {a: d.loc[start:] for a, d in panel.items()}  # (slices keep the loader's attrs)


def fit_and_evaluate(cfg: TrainConfig, panel: dict[str, pd.DataFrame], progress: bool) -> tuple[GlobalForecaster, pd.DataFrame]:
    model = make_forecaster(cfg.model.name, **cfg.model.params)
    if not isinstance(model, GlobalForecaster):
        raise ConfigError(f"model.name {cfg.model.name!r} is a per-asset baseline; `train` is for learned models "
                          "(nn, gbm). Baselines are fitted inside `volmargin backtest`.")
    trimmed = from_train_start(panel, cfg.window.train_start)
    split = WalkForwardSplit(start=cfg.timestamp("train_end") + pd.Timedelta(days=1), end=cfg.timestamp("eval_end"),
                             refit_every=None, min_train=cfg.window.min_train_days)
    if hasattr(model, "enable_progress_bar"):
        model.enable_progress_bar = bars_enabled(progress)
    per_asset = panel_historical_forecasts(trimmed, lambda: model, split, tuple(sorted(cfg.levels)), cfg.horizon)
    frames = [f.assign(asset=a, model=cfg.model.name) for a, f in per_asset.items() if not f.empty]
    if not frames:
        raise DataError(f"no evaluation forecasts: no asset has data after window.train_end {cfg.window.train_end} "
                        f"with {cfg.window.min_train_days} days of history before it")
    return model, pd.concat(frames, ignore_index=True)


def _log_learning_curves(model) -> None:
    import mlflow

    for step, row in enumerate(getattr(model, "history_", []) or []):
        mlflow.log_metrics({k: float(v) for k, v in row.items() if k != "epoch" and v is not None}, step=step)


def run(cfg: TrainConfig, tracking_uri: str | None = None, progress: bool = True) -> TrainResult:
    import mlflow

    from volmargin.tracking import data_fingerprint, resolve_tracking_uri, start_experiment, tracked_run

    began = time.perf_counter()
    bars, panel = daily_data(cfg)
    check_window(cfg, panel)
    uri = resolve_tracking_uri(tracking_uri, cfg.tracking.uri)
    mlflow.set_experiment(experiment_id=start_experiment(uri, cfg.tracking.experiment))
    tags = {"volmargin.command": "train", "data.sha256": data_fingerprint(bars)["sha256"]}
    with tracked_run(f"train-{cfg.model.name}", tags=tags) as run_:
        fitting = time.perf_counter()
        model, forecasts = fit_and_evaluate(cfg, panel, progress)
        seconds = time.perf_counter() - fitting
        scores, version, alias = save_trained(cfg, model, forecasts, panel, bars, seconds)
    return TrainResult(Path(cfg.output), run_.info.run_id, scores, version, alias, time.perf_counter() - began)


def save_trained(cfg: TrainConfig, model: GlobalForecaster, forecasts: pd.DataFrame, panel: dict[str, pd.DataFrame],
                 bars: dict[str, pd.DataFrame], train_seconds: float) -> tuple[pd.DataFrame, str | None, str | None]:
    """Inside an active MLflow run: log config, data fingerprint, learning curves, scores and `train_seconds`
    (the wall time of the fit and its held-out evaluation), write the output folder (model.pkl, eval scores
    and forecasts, train.json), log and register the model and promote it. Returns the scores, the
    registered version and the alias it got."""
    import mlflow

    from volmargin.tracking import data_fingerprint, log_forecaster, promote

    run_ = mlflow.active_run()
    fingerprint = data_fingerprint(bars)
    mlflow.log_params(flat_params(cfg))
    mlflow.log_dict(fingerprint, "data_fingerprint.json")
    _log_learning_curves(model)
    scores = score_forecasts(forecasts)
    pooled = scores[scores["asset"] == POOLED].iloc[0]
    mlflow.log_metrics({f"eval_{k}": float(v) for k, v in pooled.items() if _number(v) and pd.notna(v)})
    mlflow.log_metrics({f"eval_qlike.{a}": float(q) for a, q in scores.set_index("asset")["qlike"].drop(POOLED).items()})
    mlflow.log_metric("train_seconds", train_seconds)
    out = Path(cfg.output)
    with staged_folder(out) as staging:  # model.pkl and train.json appear together, or not at all
        write_frame(forecasts, staging / "eval_forecasts.parquet")
        write_frame(scores, staging / "eval_scores.csv")
        pickled = pickle.dumps(model)
        write_atomic(staging / "model.pkl", lambda p: p.write_bytes(pickled))
        meta = {"run_id": run_.info.run_id, "tracking_uri": mlflow.get_tracking_uri(),
                "config": dataclasses.asdict(cfg), "data": fingerprint, "eval_qlike": float(pooled["qlike"]),
                "train_seconds": round(train_seconds, 1), "model_sha256": hashlib.sha256(pickled).hexdigest(),
                "model_format": MODEL_FORMAT}
        write_atomic(staging / "train.json", lambda p: p.write_text(json.dumps(meta, indent=2, default=str)))
    mlflow.log_artifact(str(out / "eval_scores.csv"))
    example = next(iter(panel.values())).loc[: cfg.window.train_end].tail(120)
    name = cfg.tracking.registered_model or f"volmargin-{cfg.model.name}"
    info = log_forecaster(model, tuple(sorted(cfg.levels)), example, registered_name=name)
    version = str(info.registered_model_version) if info.registered_model_version is not None else None
    # QLIKEs compare on the same held-out rows only: another evaluation window or market made a model champion
    # for a QLIKE of other days (session 31's red team); a retrain on newer data stays challenger until compared
    compared = (f"horizon={cfg.horizon}; assets={','.join(sorted(panel))}; data={fingerprint['sha256'][:16]}; "
                f"evaluated={cfg.window.train_end}..{cfg.window.eval_end or 'end'}; min_bars={cfg.data.min_bars}")
    alias = promote(name, version, float(pooled["qlike"]), compared=compared) if version else None
    return scores, version, alias


def _number(value) -> bool:
    """A score that is a number, numpy's too (a count of exceptions is a numpy int: it was dropped from MLflow
    and written to the manifest as text)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def load_trained(folder: Path) -> tuple[GlobalForecaster, dict, dict]:
    """The model, train.json and pooled evaluation scores of a `volmargin train` output folder."""
    folder = Path(folder)
    missing = [n for n in ("model.pkl", "train.json", "eval_scores.csv") if not (folder / n).is_file()]
    if missing:
        raise ConfigError(f"{folder}: missing {', '.join(missing)}; --run must be a `volmargin train` output folder")
    check_complete(folder)
    try:
        meta = json.loads((folder / "train.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{folder}/train.json: unreadable or damaged ({exc})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or "data" not in meta:
        raise ConfigError(f"{folder}/train.json: not a `volmargin train` record (no config and data)")
    if meta.get("model_format") != MODEL_FORMAT:
        raise ConfigError(f"{folder}: trained by another volmargin version (model format "
                          f"{meta.get('model_format', 'unrecorded')}, this one reads {MODEL_FORMAT}); train again")
    pickled = (folder / "model.pkl").read_bytes()
    recorded = meta.get("model_sha256")
    if recorded is not None and hashlib.sha256(pickled).hexdigest() != recorded:
        raise ConfigError(f"{folder}/model.pkl: SHA-256 differs from train.json's model_sha256; the file was "
                          "replaced, truncated or damaged. Not unpickled (unpickling runs code)")
    try:
        # pickle runs code from the file: load only model.pkl files you (or your training job) wrote
        model = pickle.loads(pickled)
    except Exception as exc:  # noqa: BLE001 - truncated or foreign pickles raise many types
        raise ConfigError(f"{folder}/model.pkl: cannot be loaded ({type(exc).__name__}: {exc}); train again") from None
    if not isinstance(model, GlobalForecaster):
        raise ConfigError(f"{folder}/model.pkl: holds a {type(model).__name__}, not a learned volmargin model")
    scores = read_table(folder / "eval_scores.csv")
    pooled = scores[scores["asset"] == POOLED]
    if pooled.empty:
        raise ConfigError(f"{folder}/eval_scores.csv: no pooled ({POOLED}) row")
    pooled = pooled.iloc[0].drop(["asset", "model"], errors="ignore")
    return model, meta, {
        k: (float(v) if _number(v) else str(v)) for k, v in pooled.items() if pd.notna(v)}


def provenance(meta: dict, scores: dict) -> dict:
    """The manifest keys a bundle takes from its training run (train.json and the held-out scores)."""
    return {
        # `assets` spans each file; the model learned from train_start (None: the file's start) to train_end
        "training": {"data_sha256": meta["data"]["sha256"], "train_start": meta["config"]["window"].get("train_start"),
                     "train_end": meta["config"]["window"]["train_end"],
                     "assets": {a: [v["first"], v["last"]] for a, v in meta["data"]["assets"].items()},
                     **_bar_seconds(meta)},
        "scores": scores,
        "mlflow": {"run_id": meta.get("run_id"), "tracking_uri": meta.get("tracking_uri")},
    }


def _bar_seconds(meta: dict) -> dict:
    """{"bar_seconds": the training bars' intervals} where train.json records them (since session 23): the
    daily measures sum those bars' returns, so scoring checks that its bars are alike (`batch`)."""
    seconds = sorted({v["bar_seconds"] for v in meta["data"]["assets"].values() if "bar_seconds" in v})
    return {"bar_seconds": seconds} if seconds else {}
