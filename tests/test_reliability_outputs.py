"""Unsafe writes, hangs and late validation: outputs replace only regular files and whole folders, two
writers cannot interleave, services are checked within seconds, special files and bombs are refused,
and every mistake below ends in one line (`volmargin: error: ...`, exit code 2), never a traceback."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import volmargin.data.loader as loader
import volmargin.io as vio
from volmargin.cli import main
from volmargin.config import RunConfig, load_config
from volmargin.data import load_bars, load_panel
from volmargin.errors import ConfigError, DataError, OutputError
from volmargin.training import MODEL_FORMAT


def _bars(path: Path, n: int = 48, freq: str = "h") -> Path:
    stamps = pd.date_range("2023-01-01", periods=n, freq=freq, tz="UTC")
    pd.DataFrame({"timestamp": [t.isoformat() for t in stamps], "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0,
                  "volume": 1.0}).to_csv(path, index=False)
    return path


def _one_line_error(capsys, argv: list[str], match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("volmargin: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert match in err, err


# ------------------------------------------------------------------ class 3: unsafe writes


def test_only_regular_files_are_ever_replaced(tmp_path, monkeypatch):
    """(session 27: a regression of `check_target`, run as root, replaced the machine's /dev/full with a CSV;
    every rename outside tmp_path now fails the test before it happens)"""
    renames = {name: getattr(os, name) for name in ("replace", "rename")}

    def inside_tmp_only(name):
        def rename(source, destination, *args, **kwargs):
            assert Path(destination).resolve().is_relative_to(tmp_path.resolve()), f"{name} onto {destination}"
            return renames[name](source, destination, *args, **kwargs)
        return rename

    for name in renames:
        monkeypatch.setattr(vio.os, name, inside_tmp_only(name))
    frame = pd.DataFrame({"a": [1]})
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)
    for target in (Path("/dev/full"), Path("/dev/null"), fifo, tmp_path):
        with pytest.raises(OutputError, match="volmargin writes only regular files"):
            vio.write_frame(frame, target)
    assert Path("/dev/full").is_char_device() and fifo.is_fifo()
    real = tmp_path / "real.csv"
    real.write_text("old")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    vio.write_frame(frame, link)  # a link to a regular file is written through
    assert link.is_symlink() and real.read_text().startswith("a")
    (tmp_path / "dev.csv").symlink_to("/dev/full")
    with pytest.raises(OutputError):
        vio.write_frame(frame, tmp_path / "dev.csv")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    with pytest.raises(OutputError, match="not writable|Permission denied"):
        vio.preflight(folder / "x.csv")


def test_a_folder_output_is_replaced_whole_or_not_at_all(tmp_path):
    out = tmp_path / "out"
    with vio.staged_folder(out) as staging:
        (staging / "a.csv").write_text("old")
    with pytest.raises(RuntimeError):
        with vio.staged_folder(out) as staging:
            (staging / "a.csv").write_text("new")
            (staging / "b.csv").write_text("new")
            raise RuntimeError("killed half-way")
    assert sorted(p.name for p in out.iterdir()) == [vio.MARKER, "a.csv"] and (out / "a.csv").read_text() == "old"
    with vio.staged_folder(out) as staging:
        (staging / "b.csv").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [vio.MARKER, "b.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]  # no staging left


def test_a_folder_of_the_users_own_files_is_never_replaced(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(OutputError, match="holds files volmargin did not write"):
        with vio.staged_folder(mine):
            pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        vio.preflight(tmp_path / "file", folder=True)
    assert (mine / "thesis.tex").read_text() == "years of work"


def test_two_writers_of_one_output_cannot_interleave(tmp_path):
    out = tmp_path / "out"
    with vio.output_lock(out):
        with pytest.raises(OutputError, match=f"being written by volmargin process {os.getpid()}"):
            with vio.staged_folder(out):
                pass
    with vio.staged_folder(out):  # released
        pass


def test_a_staging_folder_removed_during_the_write_replaces_nothing(tmp_path):
    """(session 24's interruption campaign) a staging folder deleted mid-write was remade by the next file
    written into it and swapped into place with part of the output, exit 0."""
    out = tmp_path / "out"
    with vio.staged_folder(out) as staging:
        vio.write_frame(pd.DataFrame({"a": [1]}), staging / "old.csv")
    with pytest.raises(OutputError, match="staging folder .* was removed during the write; nothing was replaced"):
        with vio.staged_folder(out) as staging:
            vio.write_frame(pd.DataFrame({"a": [2]}), staging / "first.csv")
            shutil.rmtree(staging)  # e.g. a clean-up job, or the parent folder removed and remade
            vio.write_frame(pd.DataFrame({"a": [3]}), staging / "second.csv")  # remakes the folder
    assert sorted(p.name for p in out.iterdir()) == [vio.MARKER, "old.csv"]
    assert not list(tmp_path.glob(".out.*.staging"))


def test_temporary_files_of_killed_writers_are_removed_by_the_next_writer(tmp_path):
    """A SIGKILL runs no clean-up: the next writer of the file removes the temporary files of dead processes of
    this host (named with host and process), never those of a process still writing."""
    target = tmp_path / "scores.parquet"
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = socket.gethostname().replace(".", "-")
    stale = tmp_path / f".scores.parquet.{host}-{dead.pid}.abc123.tmp"
    live = tmp_path / f".scores.parquet.{host}-{os.getpid()}.def456.tmp"
    for path in (stale, live):
        path.write_text("partial")
    vio.write_frame(pd.DataFrame({"a": [1]}), target)
    assert not stale.exists() and live.exists() and pd.read_parquet(target)["a"].tolist() == [1]


def test_a_full_disk_while_taking_the_lock_is_one_line(tmp_path):
    """The lock's note written to a full disk was an internal OSError (`--out` on a filesystem with 0 bytes free)."""
    (tmp_path / ".out.csv.lock").symlink_to("/dev/full")  # its note fails there (truncate EINVAL, write ENOSPC)
    with pytest.raises(OutputError, match="cannot write .*out.csv: "):
        with vio.output_lock(tmp_path / "out.csv"):
            pass


def test_an_interrupted_run_folder_is_refused_by_readers(tmp_path):
    out = tmp_path / "run"
    vio.mark_incomplete(out, {"command": "run"})
    with pytest.raises(OutputError, match="incomplete"):
        vio.check_complete(out)
    (out / "run.json").write_text(json.dumps({"complete": True}))
    vio.check_complete(out)


def test_a_job_writing_in_place_refuses_a_user_folder_or_a_link_to_one(tmp_path):
    """`mark_incomplete` (the in-place `run` job) writes only into an empty or volmargin folder, and never
    through a symlink: a link to the user's folder would put run.json and the outputs among their files."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own file")
    with pytest.raises(OutputError, match="did not write"):
        vio.mark_incomplete(mine, {"command": "run"})
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "empty", target_is_directory=True)
    (tmp_path / "empty").mkdir()
    for folder in (link, mine):
        with pytest.raises(OutputError):
            vio.mark_incomplete(folder, {"command": "run"})
        with pytest.raises(OutputError):
            with vio.staged_folder(folder):
                pass
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and not any((tmp_path / "empty").iterdir())


def test_export_names_cannot_leave_the_root(tmp_path):
    from volmargin.export import write_bundle

    for name in ("../../x", "a/b", "..", ".hidden"):
        with pytest.raises(ConfigError, match="plain name"):
            write_bundle(object(), {}, tmp_path / "models", name=name)
    with pytest.raises(ConfigError, match="plain name"):
        write_bundle(object(), {}, tmp_path / "models", name="nn", version="../1")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("version", ["01", " 7", "-1", "1.5", "0", "1\n"])
def test_an_export_version_is_a_positive_integer_without_leading_zeros(capsys, tmp_path, version):
    """Session 31's red team: any text was a version ('01' beside '1' two "immutable" bundles of one number);
    refused before the run is read."""
    _one_line_error(capsys, ["export", "--run", str(tmp_path / "no-run"), "--root", str(tmp_path / "models"),
                             "--version", version, "--no-tracking"], f"--version {version!r}: a bundle version is a "
                    "positive whole number without leading zeros")
    assert not (tmp_path / "models").exists()


def test_scoring_leaves_no_bundle_copies_in_tmp(tmp_path, monkeypatch):
    import tempfile

    from reliability_fixtures import build

    from volmargin.batch import score_panel

    served = build(tmp_path / "b")
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    scored = score_panel(served.bundle, served.panel, latest=True, progress=False)
    assert len(scored) == len(served.panel) and not list(scratch.iterdir())


# ------------------------------------------------------------------ class 4: hangs and slow failures


def test_fifos_links_loops_and_bombs_are_refused_by_the_loader(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "pipe.csv")
    started = time.monotonic()
    with pytest.raises(DataError, match="not a regular file"):
        load_bars(tmp_path / "pipe.csv")
    with pytest.raises(DataError, match="FIFO"):
        load_panel([tmp_path])
    assert time.monotonic() - started < 5
    (tmp_path / "loop.csv").symlink_to(tmp_path / "loop.csv")
    with pytest.raises(DataError, match="cannot resolve"):
        load_panel([tmp_path / "loop.csv"])
    bomb = tmp_path / "bomb.csv.gz"
    bomb.write_bytes(gzip.compress(b"0" * (8 << 20)))
    monkeypatch.setattr(loader, "MAX_DECOMPRESSED", 1 << 20)
    with pytest.raises(DataError, match="decompression bomb"):
        load_bars(bomb)


def test_a_minority_of_finer_rows_is_an_error_on_the_files_own_grid(tmp_path):
    hours = pd.date_range("2023-01-01", periods=400, freq="h", tz="UTC")
    finer = [t + pd.Timedelta(minutes=m) for t in hours[100:200] for m in (15, 30, 45)]  # 43% of the rows
    stamps = sorted([*hours, *finer])
    path = tmp_path / "x_1h.csv"
    pd.DataFrame({"timestamp": [t.isoformat() for t in stamps], "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0,
                  "volume": 1.0}).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"row 102 \(2023-01-05T04:15:00Z\): off the 1h bar grid"):
        load_bars(path)
    assert load_bars(_bars(tmp_path / "y.csv", freq="15min")).attrs["freq"] == pd.Timedelta("15min")


class _Silent:
    """A TCP port that accepts connections and never answers."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(8)
        self.port = self.server.getsockname()[1]
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.held.append(self.server.accept()[0])
            except OSError:
                return


def test_silent_and_unreachable_services_fail_within_their_timeout():
    from volmargin.distributed import _probe_scheduler
    from volmargin.tracking import check_tracking_uri

    silent = _Silent()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    dead = closed.getsockname()[1]
    closed.close()
    for probe, address in ((lambda a: check_tracking_uri(a, timeout=1), f"http://127.0.0.1:{silent.port}"),
                           (lambda a: check_tracking_uri(a, timeout=1), f"http://127.0.0.1:{dead}"),
                           (lambda a: _probe_scheduler(a, 1), f"tcp://127.0.0.1:{silent.port}"),
                           (lambda a: _probe_scheduler(a, 1), f"tcp://127.0.0.1:{dead}")):
        started = time.monotonic()
        with pytest.raises(ConfigError, match="127.0.0.1"):
            probe(address)
        assert time.monotonic() - started < 4, address


def test_backtest_checks_the_tracking_server_before_any_work(capsys, tmp_path):
    silent = _Silent()
    started = time.monotonic()
    _one_line_error(capsys, ["backtest", "--data", str(_bars(tmp_path / "a.csv")), "--tracking-uri",
                             f"http://127.0.0.1:{silent.port}", "--out", str(tmp_path / "bt")], "does not answer within")
    assert time.monotonic() - started < 15 and not (tmp_path / "bt").exists()


@pytest.mark.parametrize("uri", ["garbage://x", "FOLDER", "file://FOLDER"])
def test_a_tracking_uri_mlflow_cannot_open_is_refused_before_any_work(capsys, tmp_path, uri):
    """Session 31's red team: an unknown scheme, or a folder store (refused by MLflow 3), passed the check and
    `backtest` failed on MLflow after all its work and outputs."""
    (tmp_path / "store").mkdir()
    uri = uri.replace("FOLDER", str(tmp_path / "store"))
    _one_line_error(capsys, ["backtest", "--data", str(_bars(tmp_path / "a.csv")), "--tracking-uri", uri,
                             "--out", str(tmp_path / "bt")], f"MLflow tracking URI {uri!r}: not a store MLflow opens")
    assert not (tmp_path / "bt").exists()


def test_a_folder_store_passes_where_the_user_lets_mlflow_open_one(monkeypatch, tmp_path):
    """MLflow opens a folder store under its own opt-out, MLFLOW_ALLOW_FILE_STORE (the second red team of
    session 31: the check refused what MLflow would open)."""
    from volmargin.errors import ConfigError
    from volmargin.tracking import check_tracking_uri

    uri = f"file://{tmp_path}"
    with pytest.raises(ConfigError, match="not a store MLflow opens"):
        check_tracking_uri(uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert check_tracking_uri(uri) == uri and check_tracking_uri(str(tmp_path)) == str(tmp_path)
    with pytest.raises(ConfigError, match="not a store MLflow opens"):
        check_tracking_uri("garbage://x")


# ------------------------------------------------------------------ class 5: one line, and early


def test_cli_mistakes_end_in_one_line(capsys, tmp_path):
    bars = str(_bars(tmp_path / "a.csv"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    (tmp_path / "loop.csv").symlink_to(tmp_path / "loop.csv")
    cases = [
        (["score", "--bundle", str(tmp_path), "--data", bars, "--out", "/dev/full"], "not a regular file"),
        (["score", "--bundle", str(tmp_path), "--data", bars, "--out", str(tmp_path / "mine")], "is a folder"),
        (["backtest", "--data", bars, "--no-tracking", "--out", str(tmp_path / "mine")], "did not write"),
        (["backtest", "--data", str(tmp_path / "loop.csv"), "--no-tracking", "--out", str(tmp_path / "bt")],
         "cannot resolve"),
        (["evaluate", "--run", str(tmp_path / "nothing")], "nothing: no such folder"),
    ]
    for argv, match in cases:
        _one_line_error(capsys, argv, match)


def test_damaged_outputs_read_back_in_one_line(capsys, tmp_path):
    run = tmp_path / "bt"
    run.mkdir()
    (run / "forecasts.parquet").write_bytes(b"PAR1" + b"\0" * 50)
    (run / "run.json").write_text(json.dumps({"complete": True}))
    _one_line_error(capsys, ["evaluate", "--run", str(run)], "truncated or damaged")
    train = tmp_path / "train"
    train.mkdir()
    (train / "model.pkl").write_bytes(b"\x80\x04\x95")  # a truncated pickle
    (train / "train.json").write_text(json.dumps({"config": {}, "data": {}, "model_format": MODEL_FORMAT}))
    (train / "eval_scores.csv").write_text("asset,model,qlike\nALL,gbm,0.5\n")
    _one_line_error(capsys, ["export", "--run", str(train), "--no-tracking"], "model.pkl: cannot be loaded")
    (train / "train.json").write_text(json.dumps({"config": {}, "data": {}, "model_sha256": "0" * 64,
                                                  "model_format": MODEL_FORMAT}))
    _one_line_error(capsys, ["export", "--run", str(train), "--no-tracking"], "SHA-256 differs")
    # a run of an older volmargin (no format, or another one) is refused before its pickle is read
    (train / "train.json").write_text(json.dumps({"config": {}, "data": {}}))
    _one_line_error(capsys, ["export", "--run", str(train), "--no-tracking"], "model format unrecorded")
    (train / "train.json").write_text(json.dumps({"config": {}, "data": {}, "model_format": MODEL_FORMAT - 1}))
    _one_line_error(capsys, ["export", "--run", str(train), "--no-tracking"], "train again")


def _config(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "run.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_configs_are_checked_whole_at_load(tmp_path):
    with pytest.raises(ConfigError, match="calibration.policy.bufer: unknown key"):
        load_config(_config(tmp_path, "calibration: {policy: {bufer: 0.25}}"), RunConfig)
    with pytest.raises(ConfigError, match="calibration.policy.min_rate: invalid value"):
        load_config(_config(tmp_path, "calibration: {policy: {min_rate: 0.0001}}"), RunConfig)
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(_config(tmp_path, b"output: caf\xe9\n"), RunConfig)


def test_wrong_model_parameters_and_windows_are_refused_before_training(capsys, tmp_path):
    from volmargin.training import check_learned_params, check_window

    with pytest.raises(ConfigError, match="learned.gbm.n_estimators: expected int, got str"):
        check_learned_params("gbm", {"n_estimators": "many"}, "learned.gbm")
    with pytest.raises(ConfigError, match="unexpected keyword"):
        check_learned_params("gbm", {"n_estimatorz": 3}, "learned.gbm")
    config = _config(tmp_path, "learned: {gbm: {num_leaves: 2.5}}\n")
    _one_line_error(capsys, ["run", "--config", str(config), "--out", str(tmp_path / "run")], "num_leaves: expected int")
    from volmargin.config import TrainConfig, WindowConfig
    from volmargin.data import synthetic_market
    from volmargin.evaluation.backtest import daily_panel

    panel = daily_panel(synthetic_market(n_assets=1, days=400, seed=0))  # from 2021-01-01
    with pytest.raises(ConfigError, match="window.train_end 2020-06-30 is before the data starts"):
        check_window(TrainConfig(window=WindowConfig(train_end="2020-06-30")), panel)


def test_calibrating_on_data_that_ends_before_the_training_end_is_refused_before_scoring(tmp_path):
    from reliability_fixtures import TINY

    from volmargin.calibration.bundle import check_calibration_data
    from volmargin.data import synthetic_market
    from volmargin.evaluation.backtest import daily_panel
    from volmargin.export import write_bundle
    from volmargin.models import make_forecaster

    panel = daily_panel(synthetic_market(n_assets=2, days=400, seed=0))  # 2021-01-01 .. 2022-02-04
    model = make_forecaster("gbm", **TINY).fit_panel(panel)
    bundle = write_bundle(model, panel, tmp_path / "models", provenance={"training": {"train_end": "2022-01-31"}})
    with pytest.raises(DataError, match="before 180 days after the bundle's training end 2022-01-31"):
        check_calibration_data(bundle, panel)


# --- session 27's mutation audit of io.py: what no test held

def _forecasts(**change) -> pd.DataFrame:
    frame = pd.DataFrame({"asset": "a", "model": "m", "origin": pd.date_range("2024-01-01", periods=3, tz="UTC"),
                          "variance": 1e-4, "realized_rv": 1e-4, "realized_ret": 0.0, "var99_long": 0.03,
                          "es975_short": 0.035})
    for column, value in change.items():
        frame.loc[1, column] = value
    return frame


@pytest.mark.parametrize("change, message", [
    ({"variance": 0.0}, "with a variance that is not a positive number"),  # a zero margin downstream
    ({"variance": np.inf}, "with a variance that is not a positive number"),
    ({"es975_short": np.nan}, "with a VaR or ES that is not a finite number"),
    ({"es975_short": -np.inf}, "with a VaR or ES that is not a finite number"),
])
def test_a_forecast_table_with_a_zero_or_infinite_variance_or_a_bad_es_is_refused(tmp_path, change, message):
    _forecasts().to_parquet(tmp_path / "forecasts.parquet")
    assert len(vio.read_forecasts(tmp_path)) == 3
    _forecasts(**change).to_parquet(tmp_path / "forecasts.parquet")
    with pytest.raises(OutputError, match=f"the forecast of m for a at 2024-01-02 is there {message}"):
        vio.read_forecasts(tmp_path)


def test_a_forecast_table_whose_origins_are_not_utc_timestamps_is_refused(tmp_path):
    frame = _forecasts()
    frame.assign(origin=frame["origin"].dt.strftime("%Y-%m-%d")).to_parquet(tmp_path / "forecasts.parquet")
    with pytest.raises(OutputError, match="column origin holds .*, not UTC timestamps"):
        vio.read_forecasts(tmp_path)


# ------------------------------------------------------------------ io: temporary files and dead writers


def test_a_write_stopped_by_an_error_or_interrupt_leaves_no_temporary_file(tmp_path):
    target = tmp_path / "t.csv"

    def interrupted(path):
        path.write_text("half")
        raise KeyboardInterrupt

    def disk_full(path):
        path.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(KeyboardInterrupt):
        vio.write_atomic(target, interrupted)
    with pytest.raises(OutputError, match="No space left on device"):
        vio.write_atomic(target, disk_full)
    assert list(tmp_path.iterdir()) == []


def test_a_target_that_became_a_fifo_during_the_write_is_not_replaced(tmp_path):
    target = tmp_path / "t.csv"
    with pytest.raises(OutputError, match="not a regular file"):
        with vio.atomic_path(target) as tmp:
            tmp.write_text("a\n1\n")
            os.mkfifo(target)
    assert target.is_fifo() and [p.name for p in tmp_path.iterdir()] == ["t.csv"]


def test_temporary_files_of_another_users_live_process_are_kept(tmp_path, monkeypatch):
    """os.kill(pid, 0) on another user's live process raises PermissionError: that writer is alive."""
    host = socket.gethostname().replace(".", "-")
    theirs = tmp_path / f".t.csv.{host}-4242.abc.tmp"
    theirs.write_text("partial")

    def kill(pid, sig):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(vio.os, "kill", kill)
    vio.write_frame(pd.DataFrame({"a": [1]}), tmp_path / "t.csv")
    assert theirs.exists()


# ------------------------------------------------------------------ io: locks and folder swaps


def _lock_holder(target, seconds: float) -> subprocess.Popen:
    """Another process holding `target`'s output lock for `seconds`, once it has printed 'held'."""
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, volmargin.io as v\n"
        f"with v.output_lock({str(target)!r}):\n"
        f"    print('held', flush=True); time.sleep({seconds})\n")], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_lock_held_by_another_process_excludes_this_one(tmp_path):
    out = tmp_path / "out.csv"
    holder = _lock_holder(out, 30)
    try:
        with pytest.raises(OutputError, match=f"being written by volmargin process {holder.pid}"):
            with vio.output_lock(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    with vio.output_lock(out):  # released with its process
        pass


def test_an_export_waits_its_turn_for_the_models_folder(tmp_path):
    """Session 30's red team: two runs sharing a models folder could fail at the export, after all their work,
    because the other held its lock; an export now waits (`export.EXPORT_WAIT`), another output does not."""
    from volmargin.export import EXPORT_WAIT

    out = tmp_path / "models" / "gbm"
    holder = _lock_holder(out, 1.5)
    try:
        with pytest.raises(OutputError, match="being written by"):
            with vio.output_lock(out, wait=0.2):
                pass
        with vio.output_lock(out, wait=30):  # granted once the holder is done
            assert holder.poll() is not None or holder.wait(timeout=5) == 0
    finally:
        holder.kill()
        holder.wait()
    assert EXPORT_WAIT >= 60


def test_a_swap_killed_between_its_two_renames_is_undone_by_the_next_writer(tmp_path):
    out = tmp_path / "out"
    with vio.staged_folder(out) as staging:
        (staging / "a.csv").write_text("old")
    os.rename(out, tmp_path / ".out.k1ll3d.old")  # what a SIGKILL after `os.replace(target, old)` leaves
    with pytest.raises(RuntimeError):
        with vio.staged_folder(out):
            raise RuntimeError("the next writer fails too")
    assert (out / "a.csv").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_a_folder_is_replaced_by_two_renames_where_the_kernel_cannot_exchange(tmp_path, monkeypatch):
    out = tmp_path / "out"
    with vio.staged_folder(out) as staging:
        (staging / "a.csv").write_text("old")
    monkeypatch.setattr(vio, "_exchange", lambda a, b: False)  # no renameat2 (old kernel, some filesystems)
    with vio.staged_folder(out) as staging:
        (staging / "b.csv").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == [vio.MARKER, "b.csv"] and (out / "b.csv").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "out"]


def test_a_damaged_run_record_is_not_taken_for_a_complete_run(tmp_path):
    (tmp_path / "run.json").write_text('{"complete": fal')  # cut short: it may have said false
    with pytest.raises(OutputError, match="run.json: unreadable or damaged"):
        vio.check_complete(tmp_path)


# session 29's red team: the lock file, glob characters in a name, a user's run.json

def test_a_lock_file_planted_as_a_link_is_refused_and_its_target_untouched(tmp_path):
    """The lock's note was written through a symbolic link: a link planted beside an output had volmargin (run as
    root on a shared folder) empty and overwrite the file it points to."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".out.csv.lock").symlink_to(victim)
    with pytest.raises(OutputError, match="its lock file is a symbolic link"):
        with vio.output_lock(tmp_path / "out.csv"):
            pass
    assert victim.read_text() == "precious"
    os.mkfifo(tmp_path / ".other.csv.lock")
    with pytest.raises(OutputError, match="is not a regular file"):
        with vio.output_lock(tmp_path / "other.csv"):
            pass


def test_an_output_name_with_glob_characters_leaves_other_outputs_staging_alone(tmp_path):
    """`exp[1]`'s recovery matched `exp1`'s staging and `.old` folders as a glob pattern and removed them; `exp`'s
    would match `exp.1`'s. Each output's recovery now touches only its own."""
    others = [tmp_path / ".exp1.abcd1234.staging", tmp_path / ".exp.1.abcd1234.old"]
    for folder in others:
        folder.mkdir()
    for name in ("exp[1]", "exp"):
        with vio.staged_folder(tmp_path / name) as staging:
            (staging / "a.txt").write_text("x")
    assert all(folder.is_dir() for folder in others)
    stale = tmp_path / ".exp.abcd1234.staging"  # exp's own: removed by its next writer
    stale.mkdir()
    with vio.staged_folder(tmp_path / "exp") as staging:
        (staging / "a.txt").write_text("y")
    assert not stale.exists() and all(folder.is_dir() for folder in others)


def test_a_users_folder_holding_a_run_json_is_not_replaced(tmp_path):
    """Only volmargin's marker proves a folder is its output: a file the user named run.json (or train.json) made
    `backtest --out` replace the folder and delete the user's other files."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "run.json").write_text("{}")
    (mine / "notes.txt").write_text("the user's own file")
    with pytest.raises(OutputError, match="holds files volmargin did not write"):
        vio.check_folder(mine)
    assert (mine / "notes.txt").read_text() == "the user's own file"


@pytest.mark.parametrize("command", ["simulate", "portfolio"])
def test_an_interrupted_run_is_refused_by_simulate_and_portfolio(tmp_path, capsys, command):
    """Session 30's red team: both read the forecasts of a run killed (or still being written) in silence."""
    from volmargin.cli import main

    out = tmp_path / "run"
    vio.mark_incomplete(out, {"command": "run"})
    pd.DataFrame({"a": [1]}).to_parquet(out / "forecasts.parquet")  # an earlier run's, left in the folder
    assert main([command, "--run", str(out), "--out", str(tmp_path / "o")]) == 2
    assert "is incomplete (the job that writes it was interrupted or is still running)" in capsys.readouterr().err


def test_a_stage_left_off_removes_an_earlier_runs_outputs_of_it(tmp_path, capsys):
    """Session 30's red team: a run with the simulation off kept the last run's simulation/ and portfolio/, and
    its report showed them as its own."""
    from types import SimpleNamespace

    from volmargin.pipeline import stage_portfolio, stage_simulate

    off = SimpleNamespace(enabled=False)
    run = SimpleNamespace(out=tmp_path, cfg=SimpleNamespace(portfolio=off, simulation=off))
    for folder in ("portfolio", "simulation"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "summary.csv").write_text("old")
    keep = tmp_path / "calibration"
    keep.mkdir()
    stage_portfolio(run)
    stage_simulate(run)
    assert not (tmp_path / "portfolio").exists() and not (tmp_path / "simulation").exists() and keep.is_dir()
    assert "an earlier run's simulation/ removed" in capsys.readouterr().out
    stage_simulate(run)  # nothing left to remove: no note
    assert "removed" not in capsys.readouterr().out


def test_a_stage_that_runs_starts_from_an_empty_folder(tmp_path, monkeypatch, capsys):
    """Session 30's second red team: an earlier champion's scenarios-<model>.npz stayed in portfolio/ beside this
    run's files, loadable by name as this run's calibration."""
    from types import SimpleNamespace

    import volmargin.risk.job as job

    section = SimpleNamespace(enabled=True, models=("har",), validation_start="2022-01-01", scenarios={}, policy={},
                              concentrations=None, correlation_weights=None, population={})
    run = SimpleNamespace(out=tmp_path, cfg=SimpleNamespace(portfolio=section), progress=False, panel={},
                          forecasts=pd.DataFrame({"model": ["har"]}), record={"champion": "har"})
    (tmp_path / "portfolio").mkdir()
    (tmp_path / "portfolio" / "scenarios-ewma.npz").write_text("an earlier run's")
    seen = []

    def portfolio(forecasts, panel, job_, out, progress=False):
        seen.append(sorted(p.name for p in out.iterdir()) if out.exists() else [])
        return {"summary": pd.DataFrame({"portfolio_class": ["ALL"], "model": ["har"], "breach_rate": [0.01],
                                         "avg_margin": [0.1], "avg_isolated_margin": [0.2]})}

    monkeypatch.setattr(job, "run_portfolio", portfolio)
    from volmargin.pipeline import stage_portfolio

    stage_portfolio(run)
    assert seen == [[]] and not (tmp_path / "portfolio" / "scenarios-ewma.npz").exists()


def test_a_failed_re_run_leaves_no_earlier_runs_published_files(tmp_path):
    """A re-run into the same folder that failed left the earlier run's report.html, latest.parquet and
    latest_margins.parquet, the files a service reads without run.json: old margins, no warning (session 31's
    red team). They are removed as the run starts."""
    from volmargin.config import RunConfig, from_dict
    from volmargin.errors import VolmarginError
    from volmargin.io import mark_incomplete
    from volmargin.pipeline import PUBLISHED, run_pipeline

    out = tmp_path / "run"
    mark_incomplete(out, {"command": "run"})  # an earlier run's folder
    for name in PUBLISHED:
        (out / name).write_text("an earlier run's")
    for name in ("train-nn", "train-gbm"):  # an earlier run's models; this one trains the GBM alone
        (out / name).mkdir()
    cfg = from_dict(RunConfig, {"data": {"paths": [str(tmp_path / "missing.csv")]}, "output": str(out),
                                "learned": {"gbm": {}}})
    with pytest.raises(VolmarginError, match="stage 'data' failed"):
        run_pipeline(cfg, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", progress=False)
    assert not any((out / name).exists() for name in PUBLISHED)
    assert not (out / "train-nn").exists() and (out / "train-gbm").is_dir()
