"""Fault injection: `volmargin backtest` and `volmargin export` stopped at every write (in process) and
killed at a random moment of their write phase (SIGKILL, in a subprocess) leave the old output or the
complete new one, never a mix, and no temporary files or staging folders once the next writer ran."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import pickle
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import volmargin.io as vio
import volmargin_serving as vs
from volmargin.cli import main
from volmargin.config import DataConfig, ModelConfig, TrainConfig, WindowConfig
from volmargin.data import load_panel, synthetic_market
from volmargin.evaluation.backtest import daily_panel
from volmargin.models import make_forecaster
from volmargin.tracking import data_fingerprint
from volmargin.training import MODEL_FORMAT

VOLMARGIN = [sys.executable, "-m", "volmargin.cli"]


@pytest.fixture(scope="module")
def bar_files(tmp_path_factory) -> list[str]:
    folder = tmp_path_factory.mktemp("bars")
    for asset, frame in synthetic_market(n_assets=2, days=420, seed=1).items():
        frame.rename_axis("timestamp").reset_index().to_csv(folder / f"{asset}.csv", index=False)
    return sorted(str(p) for p in folder.glob("*.csv"))


def _backtest(bar_files, out: Path, models: str) -> list[str]:
    return ["backtest", "--data", *bar_files, "--models", models, "--min-train", "300", "--no-tracking", "--quiet",
            "--out", str(out)]


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())} if folder.exists() else {}


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.endswith((".staging", ".old", ".tmp")))


def _assert_complete_backtest(out: Path, models: set[str]) -> None:
    record = json.loads((out / "run.json").read_text())
    assert record["complete"] is True
    assert set(pd.read_parquet(out / "forecasts.parquet")["model"]) == models
    assert set(pd.read_csv(out / "scores.csv")["model"]) == models


@pytest.fixture(scope="module")
def old_backtest(bar_files, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("bt") / "bt"
    assert main(_backtest(bar_files, out, "hist")) == 0
    return out, _snapshot(out)


def test_a_backtest_stopped_at_any_write_leaves_the_old_folder(bar_files, old_backtest, monkeypatch, tmp_path):
    import volmargin.evaluation.backtest as backtest_module

    out, before = old_backtest
    real, run_backtest = vio.write_atomic, backtest_module.run_backtest
    computed = {}

    def once(panel, config, **kwargs):  # the forecasts once: the faults under test are in the writes
        if config.models not in computed:
            computed[config.models] = run_backtest(panel, config, **kwargs)
        return computed[config.models]

    monkeypatch.setattr(backtest_module, "run_backtest", once)
    stopped = 0
    for stop_at in range(1, 20):
        calls = {"n": 0}

        def failing(target, writer, stop_at=stop_at, calls=calls):
            calls["n"] += 1
            if calls["n"] == stop_at:
                raise KeyboardInterrupt  # what Ctrl-C and (now) SIGTERM raise
            return real(target, writer)

        monkeypatch.setattr(vio, "write_atomic", failing)
        code = main(_backtest(bar_files, out, "hist,ewma"))
        if code == 0:  # every write passed: the new folder is in place, complete
            break
        stopped += 1
        assert code == 130 and _snapshot(out) == before, f"stopped at write {stop_at}: old and new mixed"
        assert not _leftovers(out.parent)
    assert stopped >= 4, "the backtest should have several writes to stop at"
    monkeypatch.setattr(vio, "write_atomic", real)
    _assert_complete_backtest(out, {"hist", "ewma"})
    monkeypatch.setattr(vio, "_exchange", lambda a, b: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert main(_backtest(bar_files, out, "hist")) == 130  # stopped at the swap itself
    _assert_complete_backtest(out, {"hist", "ewma"})
    assert not _leftovers(out.parent)


def _kill_during_writes(command: list[str], parent: Path, pattern: str, seed: int) -> int:
    """Start `command`, wait until its staging appears in `parent`, SIGKILL it a random moment later."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    began = time.monotonic()
    while process.poll() is None and not list(parent.glob(pattern)) and time.monotonic() - began < 120:
        time.sleep(0.002)
    time.sleep(random.Random(seed).uniform(0, 0.4))
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    return process.wait()


def _train_folder(folder: Path, bar_files: list[str]) -> Path:
    """What `volmargin train` writes, for a tiny boosting model (no MLflow needed)."""
    bars = load_panel(bar_files)
    model = make_forecaster("gbm", n_estimators=20, tail_estimators=10).fit_panel(daily_panel(bars))
    cfg = TrainConfig(data=DataConfig(paths=tuple(bar_files)), window=WindowConfig(train_end="2021-12-31"),
                      model=ModelConfig("gbm", {"n_estimators": 20, "tail_estimators": 10}), output=str(folder))
    folder.mkdir(parents=True)
    pickled = pickle.dumps(model)
    (folder / "model.pkl").write_bytes(pickled)
    (folder / "train.json").write_text(json.dumps({
        "run_id": None, "tracking_uri": None, "config": dataclasses.asdict(cfg), "data": data_fingerprint(bars),
        "model_sha256": hashlib.sha256(pickled).hexdigest(), "model_format": MODEL_FORMAT}, default=str))
    pd.DataFrame([{"asset": "ALL", "model": "gbm", "qlike": 0.5}]).to_csv(folder / "eval_scores.csv", index=False)
    return folder


def test_killed_backtest_and_export_leave_old_or_complete_outputs(bar_files, old_backtest, tmp_path):
    out, before = old_backtest
    train = _train_folder(tmp_path / "train", bar_files)
    root = tmp_path / "models"
    (root / "gbm").mkdir(parents=True)
    seed = int(time.time())
    export_cmd = [*VOLMARGIN, "export", "--run", str(train), "--root", str(root), "--no-tracking", "--data", *bar_files]
    processes = {
        "backtest": ([*VOLMARGIN, *_backtest(bar_files, out, "hist,ewma")], out.parent, f".{out.name}.*.staging"),
        "export": (export_cmd, root / "gbm", ".*.staging"),
    }
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # both at once: half the wall time on two cores
        codes = dict(zip(processes, pool.map(lambda args: _kill_during_writes(*args, seed), processes.values())))
    # the backtest folder: the old one, or the complete new one
    if _snapshot(out) != before:
        _assert_complete_backtest(out, {"hist", "ewma"})
    # the bundle version: absent, or complete and verified
    version = root / "gbm" / "1"
    if version.exists():
        vs.load(version)
    assert codes["backtest"] in (0, -signal.SIGKILL) and codes["export"] in (0, -signal.SIGKILL)
    # the next writers clean up what the kills left behind
    assert main(_backtest(bar_files, out, "hist")) == 0
    assert not _leftovers(out.parent)
    assert main(["export", "--run", str(train), "--root", str(root), "--no-tracking", "--data", *bar_files]) == 0
    assert not [p for p in (root / "gbm").iterdir() if p.name.endswith(".staging")]
    assert all(vs.load(p) for p in (root / "gbm").iterdir() if p.name.isdigit())
