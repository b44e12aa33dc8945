"""`volmargin train` -> `export` -> `score` end to end on the synthetic market, tracked in MLflow,
and batch scoring on a local Dask cluster equal to the single-process run."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from volmargin.cli import main
from volmargin.data import write_synthetic_csv

CONFIG = """
data: {{paths: ["{data}/*.csv.gz"]}}
window: {{train_start: 2021-01-15, train_end: 2022-06-30, min_train_days: 200}}
model: {{name: gbm, params: {{n_estimators: 20, tail_estimators: 10}}}}
tracking: {{registered_model: tiny-gbm}}
output: {out}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, Path]:
    folder = tmp_path_factory.mktemp("export")
    data = folder / "data"
    write_synthetic_csv(data, n_assets=3, days=600, seed=5)
    config = folder / "cfg.yaml"
    config.write_text(CONFIG.format(data=folder / "elsewhere", out=folder / "other"))
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    # --data and --out over the config's (session 25: train had neither, where run has both)
    assert main(["train", "--config", str(config), "--data", str(data), "--out", str(folder / "train"), "--quiet",
                 "--tracking-uri", uri]) == 0
    assert not (folder / "other").exists()
    assert main(["export", "--run", str(folder / "train"), "--root", str(folder / "models"), "--tracking-uri", uri]) == 0
    return folder, folder / "models" / "gbm" / "1", data


def test_export_writes_a_registered_bundle(trained):
    folder, bundle, _ = trained
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["mlflow"]["run_id"] and manifest["scores"]["qlike"] > 0
    assert manifest["training"]["train_end"] == "2022-06-30" and len(manifest["training"]["assets"]) == 3
    assert manifest["training"]["train_start"] == "2021-01-15"  # the files' spans alone hid it (session 31)
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'mlflow.db'}")
    version = MlflowClient().get_model_version("tiny-gbm-onnx", "1")
    assert version.run_id == manifest["mlflow"]["run_id"]  # logged beside the training run
    loaded = mlflow.onnx.load_model("models:/tiny-gbm-onnx/1")
    assert loaded.graph.input[0].name == "features"
    needs = Path(mlflow.pyfunc.get_model_dependencies("models:/tiny-gbm-onnx/1")).read_text().split()
    assert {"onnx", "onnxruntime"} <= {line.split("==")[0] for line in needs}


def test_score_in_process_and_on_two_dask_workers_agree(trained, tmp_path, capsys):
    _, bundle, data = trained
    files = sorted(str(p) for p in data.glob("*.csv.gz"))
    assert main(["score", "--bundle", str(bundle), "--data", *files, "--out", str(tmp_path / "one.parquet"), "--quiet"]) == 0
    assert "a margin service would flag as doubtful: column `doubt`" in capsys.readouterr().out
    assert main(["score", "--bundle", str(bundle), "--data", *files, "--out", str(tmp_path / "two.parquet"), "--quiet",
                 "--workers", "2"]) == 0
    one, two = pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "two.parquet")
    pd.testing.assert_frame_equal(one, two)
    assert one["asset"].nunique() == 3 and one.groupby("asset")["origin"].is_monotonic_increasing.all()
    assert one["doubt"].map(type).eq(str).all()  # '' or the one-line doubt a margin service would raise
    assert (one["var99_long"] > one["var975_long"]).all() and (one["es99_short"] >= one["var99_short"]).all()
    assert main(["score", "--bundle", str(bundle), "--data", *files, "--out", str(tmp_path / "last.csv"), "--quiet",
                 "--latest"]) == 0
    latest = pd.read_csv(tmp_path / "last.csv")
    assert len(latest) == 3
    assert latest["variance"].tolist() == pytest.approx(one.groupby("asset")["variance"].last().tolist(), rel=1e-12)


def test_export_and_score_errors_are_one_line(tmp_path, capsys):
    assert main(["export", "--run", str(tmp_path)]) == 2
    assert "--run must be a `volmargin train` output folder" in capsys.readouterr().err
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    (bundle / "model.onnx").write_bytes(b"")
    assert main(["score", "--bundle", str(bundle), "--out", str(tmp_path / "x.parquet"), "--quiet"]) == 2
    assert "missing keys" in capsys.readouterr().err
    # an output inside a bundle folder: refused before its lock file is made there (that file broke the bundle)
    for command, out in (("score", bundle / "x.parquet"), ("calibrate", bundle / "c.json")):
        extra = ["--no-tracking"] if command == "calibrate" else ["--quiet"]
        assert main([command, "--bundle", str(bundle), "--out", str(out), *extra]) == 2
        assert "is a model bundle, which holds only its own files" in capsys.readouterr().err
        assert sorted(p.name for p in bundle.iterdir()) == ["manifest.json", "model.onnx"]


def test_an_export_interrupted_while_registering_says_what_it_left(trained, tmp_path, monkeypatch, capsys):
    """(session 24's interruption campaign) Ctrl-C after the bundle is written claimed nothing was left: the
    bundle is whole and usable, only not registered, and the line says so."""
    import volmargin.tracking

    folder, _, _ = trained

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(volmargin.tracking, "log_bundle", interrupted)
    root = tmp_path / "models"
    assert main(["export", "--run", str(folder / "train"), "--root", str(root),
                 "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"]) == 130
    err = capsys.readouterr().err
    assert f"interrupted after writing {root / 'gbm' / '1'}: the bundle is complete and usable, but not registered" in err
    import volmargin_serving as vs

    vs.load(root / "gbm" / "1")
    assert oct((root / "gbm" / "1").stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # not mkdtemp's 0700


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_export_root_inside_a_bundle_is_refused_before_any_file_is_made(trained, tmp_path, capsys):
    """`export --root models/gbm/1` wrote models/gbm/1/gbm/1 and a lock file there: the bundle was refused for good
    (the second red team of session 31); a folder with a web app's manifest.json is no bundle."""
    folder, bundle, _ = trained
    before = sorted(p.name for p in bundle.iterdir())
    assert main(["export", "--run", str(folder / "train"), "--root", str(bundle), "--no-tracking"]) == 2
    assert "is a model bundle, which holds only its own files" in capsys.readouterr().err
    assert sorted(p.name for p in bundle.iterdir()) == before
    web = tmp_path / "site"
    web.mkdir()
    (web / "manifest.json").write_text("{}")
    from volmargin.io import preflight

    preflight(web / "report.html")
