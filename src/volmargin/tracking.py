"""MLflow tracking: where runs go, what identifies the data, how models are logged and promoted.

Default store: SQLite `mlflow.db` in the working folder with artifacts under `mlruns/`; `--tracking-uri`
or MLFLOW_TRACKING_URI point at a real server instead. Models are registered and promoted with
aliases (`challenger`, then `champion` when it beats the current champion), never with stages.
"""

from __future__ import annotations

import glob
import hashlib
import io
import logging
import math
import os
import pickle
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr
from pathlib import Path

import pandas as pd

CHALLENGER, CHAMPION = "challenger", "champion"
BUNDLE_TAG = "volmargin.bundle"  # on a registered ONNX model version: the bundle folder it is, <name>/<version>
COMPARE_TAG = "volmargin.compared_on"  # on a registered model version: what its eval_qlike compares with


def resolve_tracking_uri(cli_uri: str | None = None, config_uri: str | None = None) -> str:
    """--tracking-uri, then MLFLOW_TRACKING_URI, then the config, then SQLite in the working folder."""
    return cli_uri or os.environ.get("MLFLOW_TRACKING_URI") or config_uri or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


# the SQLAlchemy stores MLflow opens beside SQLite (their drivers are the user's to install)
DATABASE_SCHEMES = ("postgresql://", "postgresql+", "mysql://", "mysql+", "mssql://", "mssql+")
SERVICE_TIMEOUT = 10.0  # seconds an MLflow server has to answer before a command gives up (one line)


def check_tracking_uri(uri: str, timeout: float = SERVICE_TIMEOUT) -> str:
    """Before any work: an http(s) tracking server must answer its /health endpoint within `timeout` s,
    a SQLite store's folder must be writable, any other URI but a database's or databricks is refused;
    ConfigError naming the URI otherwise. Also bounds MLflow's own HTTP timeout and retries (unless set), so a server that dies
    mid-run fails in seconds, not minutes."""
    import urllib.error
    import urllib.request

    from volmargin.errors import ConfigError

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(timeout)))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as reply:
                reply.read(64)
        except urllib.error.HTTPError as exc:  # it answers: a server, perhaps behind auth; MLflow will tell
            if exc.code >= 500:
                raise ConfigError(f"MLflow tracking server {uri} answers with HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConfigError(f"MLflow tracking server {uri} does not answer within {timeout:g} s ({reason}); "
                              "start it, point --tracking-uri / MLFLOW_TRACKING_URI / tracking.uri elsewhere "
                              "(none set: the local store sqlite:///mlflow.db), or pass --no-tracking (backtest, "
                              "export, calibrate)") from None
    elif uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        folder = next((p for p in (folder, *folder.parents) if p.exists()), Path("."))
        if not os.access(folder, os.W_OK):
            raise ConfigError(f"MLflow tracking store {uri}: {folder} is not writable; point --tracking-uri "
                              "elsewhere") from None
    elif os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("1", "true") and "://" not in uri.replace(
            "file://", ""):  # MLflow's own opt-out of its refusal of folder stores: as the user asked
        pass
    elif uri != "databricks" and not uri.startswith(("databricks://", *DATABASE_SCHEMES)):  # MLflow's own errors
        # MLflow refuses a folder store (file:, a plain path) and has no store for other schemes: after the work
        raise ConfigError(f"MLflow tracking URI {uri!r}: not a store MLflow opens here (a folder or file: store is "
                          "refused); give sqlite:///PATH/mlflow.db, http(s)://SERVER, a database URI or databricks")
    return uri


def start_experiment(uri: str, experiment: str) -> str:
    """Point MLflow at `uri` and return the experiment id (a local SQLite store keeps its artifacts in
    `mlruns/` beside the database file; a server decides for itself)."""
    import mlflow
    from alembic.util.exc import CommandError
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    from volmargin.errors import ConfigError

    check_tracking_uri(uri)
    artifacts = None
    if uri.startswith("sqlite:///"):
        artifacts = (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlruns").as_uri()
    try:
        if artifacts is not None:
            _create_sqlite_store(Path(uri.removeprefix("sqlite:///")), artifacts)
        mlflow.set_tracking_uri(uri)
        found = mlflow.get_experiment_by_name(experiment)
        if found is not None:
            return found.experiment_id
        try:
            return mlflow.create_experiment(experiment, artifact_location=artifacts)
        except MlflowException:  # a command started at the same time made it first
            if (found := mlflow.get_experiment_by_name(experiment)) is None:
                raise
            return found.experiment_id
    except (SQLAlchemyError, CommandError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"MLflow tracking store {uri} is damaged ({first}); move the file aside to start a new "
                          "store, or point --tracking-uri / MLFLOW_TRACKING_URI elsewhere") from None


def _create_sqlite_store(path: Path, artifacts: str) -> None:
    """A new SQLite store made whole under a lock, then renamed into place: MLflow migrates a new database's
    schema in many steps, and a Ctrl-C between them, or a second command migrating it at the same time,
    left a store every later command failed on (`_alembic_tmp_experiments already exists`)."""
    import fcntl

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    from volmargin.errors import ConfigError

    def made() -> bool:  # an empty file (touched, or left by a tool) is no store: made anew
        if path.is_dir():
            raise ConfigError(f"MLflow tracking store sqlite:///{path}: a folder; give a database file")
        return path.exists() and path.stat().st_size > 0

    if made():
        return
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second first command waits, then finds the store made
        if made():
            return
        for stale in path.parent.glob(f".{glob.escape(path.name)}.*.new"):  # a killed creator's (the lock is ours)
            stale.unlink(missing_ok=True)
        staging = path.with_name(f".{path.name}.{os.getpid()}.new")
        try:
            SqlAlchemyStore(f"sqlite:///{staging}", artifacts).engine.dispose()
            os.replace(staging, path)
        finally:
            staging.unlink(missing_ok=True)


def data_fingerprint(bars: dict[str, pd.DataFrame]) -> dict:
    """Files, date range and row count per asset, and one SHA-256 over every bar's content."""
    from volmargin.data.loader import bar_seconds

    digest = hashlib.sha256()
    assets = {}
    for asset in sorted(bars):
        frame = bars[asset]
        digest.update(asset.encode())
        digest.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
        assets[asset] = {
            "source": str(frame.attrs.get("source", "")),
            "first": str(frame.index[0]),
            "last": str(frame.index[-1]),
            "rows": len(frame),
            "bar_seconds": bar_seconds(frame),
        }
    return {"sha256": digest.hexdigest(), "assets": assets, "rows": sum(a["rows"] for a in assets.values())}


@contextmanager
def tracked_run(name: str, tags: dict | None = None, nested: bool = False) -> Iterator:
    """An MLflow run that ends FINISHED only if the block completes; KILLED on Ctrl-C, FAILED on error."""
    import mlflow

    run = mlflow.start_run(run_name=name, tags=tags, nested=nested)
    try:
        yield run
    except KeyboardInterrupt:
        mlflow.end_run(status="KILLED")
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


def _pyfunc_class():
    import mlflow.pyfunc

    class ForecasterModel(mlflow.pyfunc.PythonModel):
        """A fitted volmargin forecaster as an MLflow pyfunc: input one asset's daily frame, output the
        forecast made at its last row."""

        def load_context(self, context) -> None:
            with open(context.artifacts["forecaster"], "rb") as handle:
                self.forecaster = pickle.load(handle)
            self.levels = tuple(context.model_config["forecast_levels"])

        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            daily = model_input.set_index(pd.DatetimeIndex(model_input["date"]).tz_localize("UTC"))
            origins = daily.index[-1:]
            return self.forecaster.forecast(daily, origins, self.levels).to_frame().reset_index(drop=True)

    return ForecasterModel


def model_requirements() -> list[str] | None:
    """A logged forecaster's pip requirements: volmargin and its own install requirements, pinned to the
    versions installed here. MLflow's inference would load the model in a subprocess per call (about 4 of a
    model's 4.7 s of logging) and missed lightgbm and torch, without which a GBM or GRU cannot be unpickled.
    None (MLflow infers them) where volmargin runs from a source tree that pip never installed."""
    from importlib.metadata import PackageNotFoundError, requires, version

    try:
        names = [re.split(r"[\s;<>=!~\[]", requirement, maxsplit=1)[0] for requirement in requires("volmargin") or []
                 if "extra ==" not in requirement]
        return [f"{name}=={version(name).split('+')[0]}" for name in ["volmargin", *names]]  # 2.13.0+cpu: ==2.13.0
    except PackageNotFoundError:
        return None


def log_forecaster(forecaster, levels: tuple[float, ...], example: pd.DataFrame, registered_name: str | None = None):
    """Log a fitted forecaster with an inferred signature; returns MLflow's ModelInfo."""
    import mlflow
    from mlflow.models import infer_signature

    model_class = _pyfunc_class()
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)  # its CloudPickle notice: we pickle our own class
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "forecaster.pkl"
        path.write_bytes(pickle.dumps(forecaster))
        example_in = example.reset_index()
        example_in["date"] = example_in["date"].dt.tz_localize(None)  # MLflow schemas take naive UTC times
        counts = example_in.select_dtypes("integer").columns  # as doubles, so a missing count cannot break the schema
        example_in[counts] = example_in[counts].astype(float)
        example_out = forecaster.forecast(example, example.index[-1:], levels).to_frame().reset_index(drop=True)
        with _registry_notices_dropped():
            return mlflow.pyfunc.log_model(
                name="model",
                python_model=model_class(),
                artifacts={"forecaster": str(path)},
                model_config={"forecast_levels": list(levels)},
                signature=infer_signature(example_in, example_out),
                input_example=example_in,
                pip_requirements=model_requirements(),
                registered_model_name=registered_name,
            )


REGISTRY_NOTICES = ("Successfully registered model", "Created version", "Registered model ")


@contextmanager
def _registry_notices_dropped() -> Iterator[None]:
    """MLflow prints its own registry notices to stderr ("Successfully registered model ...", "Registered
    model ... already exists ...", "Created version ..."; `eprint`, not logging); volmargin's own output names
    the version, so those are dropped and any other stderr output of the call is passed on."""
    buffer = io.StringIO()
    try:
        with redirect_stderr(buffer):
            yield
    finally:
        lines = buffer.getvalue().splitlines(keepends=True)
        sys.stderr.write("".join(line for line in lines if not line.startswith(REGISTRY_NOTICES)))


# what the registry answers for a missing alias (a SQLite store: INVALID_PARAMETER_VALUE; a server:
# RESOURCE_DOES_NOT_EXIST)
NO_SUCH_ALIAS = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def promote(name: str, version: str | int, score: float, lower_is_better: bool = True, compared: str = "") -> str:
    """Alias the new version `challenger`; make it `champion` when there is none or it scores strictly
    better (a NaN or infinite score never does; a registry error other than a missing alias is raised).

    The score is read from each version's run metric `eval_qlike`. `compared` (tagged on the version,
    `COMPARE_TAG`) says what its score is comparable with, e.g. the horizon and the assets: a champion tagged
    otherwise is not compared, the new version stays challenger (a 5-day model's lower QLIKE took a 1-day
    model's alias, a synthetic market's a real one's). Returns the alias that ended on it.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    client.set_model_version_tag(name, str(version), COMPARE_TAG, compared)
    client.set_registered_model_alias(name, CHALLENGER, str(version))
    if not math.isfinite(score):  # a score that compares with nothing never takes the champion
        return CHALLENGER
    try:
        champion = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:  # no champion yet; any other registry error must not crown an untested model
        if exc.error_code not in NO_SUCH_ALIAS:
            raise
        champion = None
    if champion is not None:
        if champion.tags.get(COMPARE_TAG, compared) != compared:  # scores of another horizon or market
            return CHALLENGER
        best = client.get_run(champion.run_id).data.metrics.get("eval_qlike")
        if best is not None and (score >= best if lower_is_better else score <= best):
            return CHALLENGER
    client.set_registered_model_alias(name, CHAMPION, str(version))
    return CHAMPION


def log_bundle(bundle: Path, run_id: str | None = None, registered_name: str | None = None) -> str | None:
    """Log a model bundle to MLflow with the ONNX flavor (plus every bundle file as artifacts) and
    register it: in the active run if there is one, else beside the training run `run_id` when the
    store has it, else in a new run. Returns the registered version, if any."""
    import mlflow
    import onnx

    with _logging_run(run_id, "export"), _registry_notices_dropped():
        info = mlflow.onnx.log_model(onnx.load(str(bundle / "model.onnx")), name="onnx",
                                     onnx_execution_providers=["CPUExecutionProvider"],
                                     pip_requirements=mlflow.onnx.get_default_pip_requirements(),  # not inferred
                                     registered_model_name=registered_name)
        mlflow.log_artifacts(str(bundle), artifact_path=f"bundle/{bundle.parent.name}-{bundle.name}")
    if info.registered_model_version is None:
        return None
    version = str(info.registered_model_version)
    # the registry counts registrations, the folder counts exports (a killed run's bundle never registered)
    mlflow.MlflowClient().set_model_version_tag(registered_name, version, BUNDLE_TAG,
                                                f"{bundle.parent.name}/{bundle.name}")
    return version


def log_calibration_set(path: Path, run_id: str | None = None) -> None:
    """Log a calibration set beside its model (same run rules as `log_bundle`)."""
    import mlflow

    with _logging_run(run_id, "calibrate"):
        mlflow.log_artifact(str(path), artifact_path="calibration")


@contextmanager
def _logging_run(run_id: str | None, name: str) -> Iterator:
    import mlflow
    from mlflow import MlflowClient

    if mlflow.active_run() is not None:
        yield mlflow.active_run()
        return
    try:
        resume = run_id is not None and MlflowClient().get_run(run_id) is not None
    except Exception:  # noqa: BLE001 - the run lives in another store (or was deleted)
        resume = False
    with (mlflow.start_run(run_id=run_id) if resume else tracked_run(name, tags={"volmargin.command": name})) as run:
        yield run
