import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from volmargin import training
from volmargin.cli import main
from volmargin.config import load_config
from volmargin.errors import ConfigError

TINY = """
data: {{synthetic_assets: 2, synthetic_days: 700, seed: 3}}
window: {{train_end: 2022-06-30, min_train_days: 200}}
model: {{name: gbm, params: {{n_estimators: {trees}, tail_estimators: 20}}}}
output: {out}
"""


def write_config(folder: Path, trees: int = 30, name: str = "cfg.yaml") -> Path:
    path = folder / name
    path.write_text(TINY.format(trees=trees, out=folder / f"out-{trees}"))
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("modle: {name: nn}", "modle: unknown key; expected one of data, window"),
        ("data: {pathz: [a.csv]}", "data.pathz: unknown key"),
        ("horizon: one", "horizon: expected int, got str"),
        ("levels: [0.99, 1.2]", "levels: each must lie in (0.5, 1)"),
        # session 25: accepted, then scoring failed after the fit (KeyError 'var975_long')
        ("levels: [0.95, 0.99]", "levels: must include 0.99 (VaR backtests) and 0.975 (ES backtest)"),
        ("levels: [0.975, 0.99, 0.99]", "levels: each at most once"),
        ("levels: [0.975, 0.99, 0.9999999]", "levels: at most 4 decimals each"),  # column names: var99, var9995
        ("window: {train_end: 2021-13-45}", "window.train_end: not a date"),
        ("window: {train_start: 2022-01-01, train_end: 2021-01-01}", "must come before window.train_end"),
        ("data: {min_bars: 0}", "data.min_bars: must be >= 1"),
        ("model: [nn]", "model: expected a mapping"),
        ("data: {paths: a.csv}", "data.paths: expected a list"),
        ("horizon: [1", "not valid YAML"),
        # session 23's config campaign: silently wrong, or an internal error after loading
        ("horizon: 1\nhorizon: 5", "key 'horizon' appears twice in one mapping (line 2)"),
        ("window: {train_end: 03/04/2022}", "window.train_end: not a date: '03/04/2022' (use YYYY-MM-DD)"),
        ("window: {min_train_days: 100000}", "window.min_train_days: must lie in 30 .. 36500"),
        ("data: {seed: -1}", "data.seed: must be >= 0"),
        # session 26's mutation audit: the boundaries themselves
        ("levels: [0.975, 0.99, 1.0]", "levels: each must lie in (0.5, 1)"),
        ("window: {min_train_days: 29}", "window.min_train_days: must lie in 30 .. 36500"),
        ("window: {train_end: 2022-06-30, eval_end: 2022-06-30}",
         "window.train_end (2022-06-30) must come before window.eval_end"),
        ("horizon: true", "horizon: expected int, got bool"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as error:
        load_config(path)
    assert message in str(error.value) and str(path) in str(error.value)


def test_shipped_configs_are_valid():
    """Training configs (a `model` key) load as TrainConfig; run configs are checked in test_pipeline."""
    paths = list(Path(__file__).resolve().parents[1].glob("training/configs/*.yaml"))
    train = [p for p in paths if "\nmodel:" in p.read_text()]
    assert len(train) >= 3
    for path in train:
        cfg = load_config(path)
        training.check_learned_params(cfg.model.name, cfg.model.params, "model.params", bool(cfg.data.iv))
    assert any(load_config(p).data.iv for p in train)  # gbm-dvol-hourly.yaml: the index from configs


def test_train_tracks_registers_and_promotes(tmp_path):
    first = training.run(load_config(write_config(tmp_path, trees=40)), progress=False)
    assert first.alias == "champion" and (first.output / "model.pkl").is_file()
    client = MlflowClient()
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["eval_qlike"] == pytest.approx(first.scores.query("asset == 'ALL'")["qlike"].iloc[0])
    assert run.data.params["model.name"] == "gbm" and len(run.data.tags["data.sha256"]) == 64
    recorded = json.loads((first.output / "train.json").read_text())["train_seconds"]
    assert 0 < recorded <= first.seconds and run.data.metrics["train_seconds"] == pytest.approx(recorded, abs=0.05)
    # the logged model's environment names what unpickling it needs (MLflow's own inference missed lightgbm)
    needs = Path(mlflow.pyfunc.get_model_dependencies(f"models:/volmargin-gbm/{first.model_version}")).read_text()
    assert {"volmargin", "lightgbm", "torch", "scikit-learn"} <= {line.split("==")[0] for line in needs.split()}
    artifacts = {a.path for a in client.list_artifacts(first.run_id)}
    assert {"data_fingerprint.json", "eval_scores.csv"} <= artifacts
    # a second, deliberately weak model: it becomes challenger and the champion stays
    weak = training.run(load_config(write_config(tmp_path, trees=1)), progress=False)
    champion = client.get_model_version_by_alias("volmargin-gbm", "champion")
    challenger = client.get_model_version_by_alias("volmargin-gbm", "challenger")
    assert weak.alias == "challenger" and str(challenger.version) == weak.model_version
    assert str(champion.version) == first.model_version
    served = mlflow.pyfunc.load_model("models:/volmargin-gbm@champion")
    assert served.metadata.get_input_schema().input_names()[:2] == ["date", "ret"]


def test_interrupted_training_marks_the_run_killed_and_writes_no_model(tmp_path, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "fit_and_evaluate", interrupt)
    config = load_config(write_config(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        training.run(config, progress=False)
    runs = MlflowClient().search_runs(MlflowClient().get_experiment_by_name("volmargin").experiment_id)
    assert runs[0].info.status == "KILLED"
    assert not (Path(config.output) / "model.pkl").exists()


def test_baseline_names_are_refused_by_train(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text("model: {name: garch}\ndata: {synthetic_assets: 1, synthetic_days: 500}\n"
                    "window: {train_end: 2022-01-31}\n")
    assert main(["train", "--config", str(path), "--quiet"]) == 2
    assert "per-asset baseline" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """A real `mlflow server` on 127.0.0.1 with proxied artifact storage; stopped after the test."""
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail("mlflow server exited at start")
                time.sleep(0.5)
        else:
            pytest.fail("mlflow server did not answer /health within 60 s")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_train_against_a_real_tracking_server(tmp_path, mlflow_server, capsys):
    config = write_config(tmp_path, trees=20)
    assert main(["train", "--config", str(config), "--tracking-uri", mlflow_server, "--quiet"]) == 0
    client = MlflowClient(tracking_uri=mlflow_server)
    runs = client.search_runs(client.get_experiment_by_name("volmargin").experiment_id)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert "eval_qlike" in runs[0].data.metrics
    assert client.get_model_version_by_alias("volmargin-gbm", "champion").run_id == runs[0].info.run_id
    assert (tmp_path / "artifacts").is_dir()  # artifacts went through the server


def test_neural_training_logs_learning_curves(tmp_path):
    path = tmp_path / "nn.yaml"
    path.write_text(f"data: {{synthetic_assets: 2, synthetic_days: 600}}\nwindow: {{train_end: 2022-04-30, "
                    f"min_train_days: 200}}\nmodel: {{name: nn, params: {{max_epochs: 3, patience: 5}}}}\n"
                    f"output: {tmp_path / 'out'}\n")
    result = training.run(load_config(path), progress=False)
    curve = MlflowClient().get_metric_history(result.run_id, "val_loss")
    assert [m.step for m in curve] == [0, 1, 2]
    assert len(MlflowClient().get_metric_history(result.run_id, "train_qlike")) == 3


def test_model_requirements_fall_back_to_mlflows_inference_without_an_installed_volmargin(monkeypatch):
    import importlib.metadata

    from volmargin.tracking import model_requirements

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    assert model_requirements()[0].startswith("volmargin==")
    monkeypatch.setattr(importlib.metadata, "requires", missing)
    assert model_requirements() is None


@pytest.mark.parametrize("params, message", [
    ({"n_estimators": 0}, "gbm.n_estimators: 0; expected a whole number >= 1"),
    ({"learning_rate": float("nan")}, "gbm.learning_rate: nan; expected a number in (0, 1]"),
    ({"subsample": 2.0}, "gbm.subsample: 2.0; expected a number in (0, 1]"),
    ({"num_leaves": 1}, "gbm.num_leaves: 1; expected a whole number >= 2"),
    ({"level_days": 0}, "gbm.level_days: 0; expected a whole number >= 2"),
    # session 25: accepted, then trained on an implied-volatility column no config-driven job fills
    ({"iv_features": True}, "gbm.iv_features: no implied-volatility index is configured"),
    ({"iv_features": "no"}, "gbm.iv_features: expected bool"),
])
def test_learned_parameters_out_of_range_stop_before_any_fit(params, message):
    """(they reached LightGBM or torch: an internal error after the data had loaded)"""
    from volmargin.training import check_learned_params

    with pytest.raises(ConfigError, match=re.escape(message)):
        check_learned_params("gbm", params, "gbm")
    for nn_params, nn_message in (({"max_epochs": 0}, "nn.max_epochs: 0"), ({"lr": float("nan")}, "nn.lr: nan"),
                                  ({"patience": -1}, "nn.patience: -1"), ({"batch_size": 0}, "nn.batch_size: 0")):
        with pytest.raises(ConfigError, match=re.escape(nn_message)):
            check_learned_params("nn", nn_params, "nn")


def test_the_index_needs_data_iv_and_a_gbm_of_its_own():
    """(session 27) iv_features with data.iv configured passes; a blend's gbm member with it stops before the
    data load, where the blend's fit refused it after."""
    from volmargin.training import check_learned_params

    check_learned_params("gbm", {"iv_features": True}, "gbm", iv_index=True)
    with pytest.raises(ConfigError, match=re.escape("learned.blend.gbm.iv_features: a blend's gbm member reads")):
        check_learned_params("blend", {"weight": 1.0, "gbm": {"iv_features": True}}, "learned.blend", iv_index=True)


def test_mlflow_registry_notices_are_dropped_other_stderr_kept(capsys):
    """(session 25: `make demo` printed MLflow's two registry lines per model beside volmargin's own)"""
    import sys

    from volmargin.tracking import _registry_notices_dropped

    with _registry_notices_dropped():
        print("Successfully registered model 'x'.", file=sys.stderr)
        print("Registered model 'x' already exists. Creating a new version of this model...", file=sys.stderr)
        print("Created version '2' of model 'x'.", file=sys.stderr)
        print("a warning worth reading", file=sys.stderr)
    assert capsys.readouterr().err == "a warning worth reading\n"


def test_config_levels_reach_the_learned_model(tmp_path):
    """(session 25's recheck: `levels: [0.975, 0.99, 0.999]` passed the config, then failed after the fit and
    the model's registration, the models keeping their default levels)"""
    from volmargin.config import RunConfig

    path = write_config(tmp_path, trees=20)
    path.write_text(path.read_text() + "levels: [0.99, 0.975, 0.995]\n")
    result = training.run(load_config(path), progress=False)
    model, _, _ = training.load_trained(result.output)
    assert tuple(model.levels_) == (0.975, 0.99, 0.995)
    run = path.parent / "run.yaml"
    run.write_text("levels: [0.975, 0.99, 0.999]\nlearned: {gbm: {}, nn: {levels: [0.99, 0.975]}}")
    with pytest.raises(ConfigError, match=re.escape("learned.nn.levels: [0.99, 0.975] differ from levels")):
        load_config(run, RunConfig)
    run.write_text("levels: [0.975, 0.99, 0.999]\nlearned: {gbm: {}, blend: {weight: 1.0}}")
    assert {k: p["levels"] for k, p in load_config(run, RunConfig).learned.items()} == {
        "gbm": (0.975, 0.99, 0.999), "blend": (0.975, 0.99, 0.999)}
