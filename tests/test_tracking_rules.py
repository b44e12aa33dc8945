"""The MLflow rules: a champion only on a strictly better finite score, never on a registry error; a data
fingerprint that changes with any bar."""
import math

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from volmargin.data import synthetic_market
from volmargin.evaluation.scoring import POOLED
from volmargin.tracking import CHALLENGER, CHAMPION, data_fingerprint, promote


def _version(client, name, qlike):
    """A registered version whose run logged eval_qlike (None: no metric), without logging a real model."""
    with mlflow.start_run(experiment_id=mlflow.set_experiment("promotion").experiment_id) as run:
        if qlike is not None:
            mlflow.log_metric("eval_qlike", qlike)
    try:
        client.create_registered_model(name)
    except Exception:
        pass
    return client.create_model_version(name, f"runs:/{run.info.run_id}/model", run.info.run_id).version


@pytest.mark.parametrize("score, alias", [(0.90, CHAMPION), (1.00, CHALLENGER), (1.10, CHALLENGER),
                                          (math.nan, CHALLENGER), (math.inf, CHALLENGER)])
def test_promotion_needs_a_strictly_better_finite_score(score, alias):
    client = MlflowClient()
    first = _version(client, "m", 1.0)
    assert promote("m", first, 1.0) == CHAMPION
    second = _version(client, "m", score)
    assert promote("m", second, score) == alias
    assert client.get_model_version_by_alias("m", CHAMPION).version == (second if alias == CHAMPION else first)
    assert client.get_model_version_by_alias("m", CHALLENGER).version == second


def test_a_champion_is_compared_only_with_versions_scored_on_the_same_horizon_and_assets():
    """Session 30's red team: a 5-day model's naturally lower QLIKE took the 1-day model's champion alias (and a
    synthetic market's model a real one's): scores of another horizon or market are not compared."""
    client = MlflowClient()
    name = "m-compared"
    daily = "horizon=1; assets=a,b"
    assert promote(name, _version(client, name, 1.0), 1.0, compared=daily) == CHAMPION
    five_days = _version(client, name, 0.5)
    assert promote(name, five_days, 0.5, compared="horizon=5; assets=a,b") == CHALLENGER
    better = _version(client, name, 0.9)
    assert promote(name, better, 0.9, compared=daily) == CHAMPION
    assert client.get_model_version(name, five_days).tags["volmargin.compared_on"] == "horizon=5; assets=a,b"


def test_a_failing_registry_lookup_promotes_nothing(monkeypatch):
    """Only 'no champion alias' makes a new version champion; any other registry error (a server that
    times out, a permission error) must not hand the champion alias to an untested model."""
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    first = _version(client, "m", 1.0)
    assert promote("m", first, 1.0) == CHAMPION
    second = _version(client, "m", 2.0)

    def unavailable(self, name, alias):
        raise MlflowException("registry unavailable", error_code="TEMPORARILY_UNAVAILABLE")

    monkeypatch.setattr(MlflowClient, "get_model_version_by_alias", unavailable)
    with pytest.raises(MlflowException):
        promote("m", second, 2.0)
    monkeypatch.undo()
    assert client.get_model_version_by_alias("m", CHAMPION).version == first


def test_the_data_fingerprint_changes_with_any_bar():
    bars = synthetic_market(n_assets=2, days=60, seed=0)
    before = data_fingerprint(bars)["sha256"]
    asset = sorted(bars)[-1]
    changed = {**bars, asset: bars[asset].copy()}
    changed[asset].iloc[-1, changed[asset].columns.get_loc("close")] *= 1.001  # the last bar of the last asset
    assert data_fingerprint(changed)["sha256"] != before


# ------------------------------------------------------------------ session 28's mutation audit
# Each test below fails on a change the suite let through.


# ----------------------------------------------------------------------------- MLflow promotion input
def test_a_trained_model_is_promoted_on_its_pooled_eval_qlike(tmp_path, monkeypatch):
    import volmargin.tracking as tracking
    from mlflow import MlflowClient
    from test_training import write_config
    from volmargin import training
    from volmargin.config import load_config

    given = []
    promote = tracking.promote
    monkeypatch.setattr(tracking, "promote", lambda name, version, score, *a, **k: given.append((score, k)) or promote(
        name, version, score, *a, **k))
    result = training.run(load_config(write_config(tmp_path, trees=10)), progress=False)
    metric = MlflowClient().get_run(result.run_id).data.metrics["eval_qlike"]
    assert [score for score, _ in given] == [pytest.approx(metric)]
    assert given[0][1]["compared"].startswith("horizon=1; assets=")  # compared on its horizon and assets only
    assert metric == pytest.approx(result.scores.query(f"asset == '{POOLED}'")["qlike"].iloc[0])
    # and on its held-out rows: the data and the evaluation window (session 31: a shorter window's QLIKE took the
    # alias); every numeric score logged, numpy's ints too (the exception counts were dropped)
    cfg = load_config(write_config(tmp_path, trees=10))
    fingerprint = mlflow.artifacts.load_dict(f"runs:/{result.run_id}/data_fingerprint.json")["sha256"]
    assert f"evaluated={cfg.window.train_end}..{cfg.window.eval_end or 'end'}" in given[0][1]["compared"]
    assert f"data={fingerprint[:16]}" in given[0][1]["compared"]
    metrics = MlflowClient().get_run(result.run_id).data.metrics
    assert metrics["eval_n"] > 0 and "eval_var99_long_exceptions" in metrics


def test_the_data_fingerprint_changes_with_the_timestamps_and_the_asset_names():
    from volmargin.data import synthetic_market
    from volmargin.tracking import data_fingerprint

    bars = synthetic_market(n_assets=2, days=60, seed=0)
    before = data_fingerprint(bars)["sha256"]
    first = sorted(bars)[0]
    shifted = {**bars, first: bars[first].set_axis(bars[first].index + pd.Timedelta(hours=1))}
    renamed = {(a + "x" if a == first else a): f for a, f in bars.items()}
    assert data_fingerprint(shifted)["sha256"] != before
    assert data_fingerprint(renamed)["sha256"] != before


def test_a_new_sqlite_store_is_made_whole_once_by_two_first_commands_at_once(tmp_path):
    """Session 30's red team: two commands starting on a new store both migrated it (duplicate column, or a
    store broken for good)."""
    import subprocess
    import sys

    db = tmp_path / "mlflow.db"
    code = ("import sys; from volmargin.tracking import start_experiment; "
            f"print(start_experiment('sqlite:///{db}', 'e'))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-300:] for _, err in outs]
    assert {out.strip().splitlines()[-1] for out, _ in outs} == {"1"}  # one experiment, made once
    assert not list(tmp_path.glob(".mlflow.db.*.new"))


def test_a_store_creation_stopped_midway_leaves_no_store_and_a_damaged_one_is_one_line(tmp_path, monkeypatch):
    """Ctrl-C while MLflow migrated a new store left a half-made mlflow.db every later command failed on."""
    import mlflow.store.tracking.sqlalchemy_store as store_module

    from volmargin.errors import ConfigError
    from volmargin.tracking import start_experiment

    db = tmp_path / "mlflow.db"

    def interrupted(uri, artifacts):
        (tmp_path / uri.removeprefix("sqlite:///")).write_bytes(b"half a schema")
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(store_module, "SqlAlchemyStore", interrupted)
        with pytest.raises(KeyboardInterrupt):
            start_experiment(f"sqlite:///{db}", "e")
    assert not db.exists() and not list(tmp_path.glob(".mlflow.db.*.new"))
    (tmp_path / ".mlflow.db.999999.new").write_bytes(b"a killed creator's")
    db.touch()  # an empty file is no store either
    assert start_experiment(f"sqlite:///{db}", "e") == "1"  # the next command makes it whole
    assert db.stat().st_size > 0 and not list(tmp_path.glob(".mlflow.db.*.new"))
    (tmp_path / "folder.db").mkdir()
    with pytest.raises(ConfigError, match=r"folder.db: a folder; give a database file"):
        start_experiment(f"sqlite:///{tmp_path / 'folder.db'}", "e")
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match=r"MLflow tracking store sqlite:///.*broken.db is damaged \(.*move the file"):
        start_experiment(f"sqlite:///{broken}", "e")


# session 30's second mutation audit (s30m2)
def test_an_untagged_champion_from_before_the_tag_is_still_compared():
    """A store made before session 30 holds a champion without the tag: a strictly better new version takes the
    alias (a worse one does not); treating the missing tag as another horizon froze the legacy champion for good."""
    client = MlflowClient()
    name = "m-legacy"
    legacy = _version(client, name, 1.0)
    client.set_registered_model_alias(name, CHAMPION, legacy)  # as an older volmargin left it: no tag
    daily = "horizon=1; assets=a,b"
    assert promote(name, _version(client, name, 1.1), 1.1, compared=daily) == CHALLENGER
    better = _version(client, name, 0.9)
    assert promote(name, better, 0.9, compared=daily) == CHAMPION
    assert client.get_model_version_by_alias(name, CHAMPION).version == better


def test_an_experiment_made_by_another_command_meanwhile_is_used_not_an_error(tmp_path, monkeypatch):
    """Two first commands at once: the other one creates the experiment between this one's lookup and its create
    (MLflow raises RESOURCE_ALREADY_EXISTS); this command gets the experiment the other made."""
    from volmargin.tracking import start_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    real = mlflow.create_experiment
    made = []

    def raced(name, artifact_location=None):
        made.append(real(name, artifact_location=artifact_location))  # the other command, first
        return real(name, artifact_location=artifact_location)  # ours: already exists

    monkeypatch.setattr(mlflow, "create_experiment", raced)
    assert start_experiment(uri, "raced") == made[0]
