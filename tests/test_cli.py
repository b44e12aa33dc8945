import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from volmargin import progress
from volmargin.cli import main
from volmargin.data import write_synthetic_csv

REQUIRED_SCORE_COLUMNS = [
    "asset", "model", "n", "qlike", "mse_log", "mz_r2", "var99_long_exceptions", "var99_short_exceptions",
    "kupiec_p_long", "kupiec_p_short", "christoffersen_p_long", "christoffersen_p_short",
    "basel_zone_long", "basel_zone_short", "es975_z2_long", "es975_z2_short",
]


@pytest.fixture(scope="module")
def synthetic_files(tmp_path_factory):
    return write_synthetic_csv(tmp_path_factory.mktemp("bars"), n_assets=2, days=600, seed=5)


def test_backtest_on_files_writes_forecasts_and_scores(synthetic_files, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["backtest", "--data", *map(str, synthetic_files), "--models", "ewma,har,gjr",
                 "--start", "2022-03-01", "--refit-every", "30", "--out", str(out), "--quiet"])  # tracked
    assert code == 0
    scores = pd.read_csv(out / "scores.csv")
    assert list(scores.columns[: len(REQUIRED_SCORE_COLUMNS)]) == REQUIRED_SCORE_COLUMNS  # required ones lead
    assert set(scores["asset"]) == {"syn_a", "syn_b", "ALL"}
    forecasts = pd.read_parquet(out / "forecasts.parquet")
    assert {"asset", "model", "origin", "date", "variance", "var99_long", "es975_short",
            "realized_rv", "realized_ret"} <= set(forecasts.columns)
    assert forecasts["date"].min() == pd.Timestamp("2022-03-01", tz="UTC")
    assert len(forecasts) == 3 * 2 * forecasts.groupby(["asset", "model"]).size().iloc[0]
    printed = capsys.readouterr().out
    assert "Pooled scores" in printed and "Diebold-Mariano" in printed
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporary files
    run = MlflowClient().search_runs(MlflowClient().get_experiment_by_name("volmargin").experiment_id)[0]
    assert run.info.status == "FINISHED" and run.data.tags["volmargin.command"] == "backtest"
    assert run.data.metrics["har.qlike"] == pytest.approx(scores.query("asset == 'ALL' and model == 'har'")["qlike"].iloc[0])
    assert len(run.data.tags["data.sha256"]) == 64


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "no/such/file.csv"], "no/such/file.csv"),
        (["--models", "ewma,lstm"], "unknown model 'lstm'"),
        (["--refit-every", "0"], "refit_every"),
        (["--levels", "0.95"], "0.99"),
        (["--start", "2021-10-01", "--end", "2021-06-01"], "--end 2021-06-01 (last origin) is before --start"),
        (["--horizon", "400"], "--horizon must lie in 1 .. 30 days"),
        (["--models", "ewma,gjr", "--window", "30"], "--window / --min-train 30: garch and gjr need at least 75 days"),
        (["--models", "garch", "--min-train", "60"], "--window / --min-train 60: garch and gjr need at least 75 days"),
    ],
)
def test_bad_input_ends_in_one_line_error(argv, message, capsys, tmp_path):
    code = main(["backtest", *argv, "--out", str(tmp_path), "--quiet", "--no-tracking"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_file_via_console_entry_point_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,open,high,low,close,volume\n2024-01-01T00:00:00Z,1,0.5,0.9,1,1\n")
    result = subprocess.run([sys.executable, "-m", "volmargin.cli", "backtest", "--data", str(bad), "--quiet", "--no-tracking"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "bad.csv" in result.stderr and "Traceback" not in result.stderr


def test_evaluate_rescores_saved_forecasts_without_refit(synthetic_files, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["backtest", "--data", *map(str, synthetic_files), "--models", "ewma,hist",
                 "--out", str(out), "--quiet", "--no-tracking"]) == 0
    first = pd.read_csv(out / "scores.csv")
    (out / "scores.csv").unlink()
    assert main(["evaluate", "--run", str(out), "--reference", "hist"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(out / "scores.csv"), first)
    assert pd.read_csv(out / "dm.csv")["reference"].iloc[0] == "hist"
    assert main(["evaluate", "--run", str(tmp_path / "nothing")]) == 2


def test_no_progress_bars_in_a_log_file(synthetic_files, tmp_path, capsys):
    """Without --quiet, stderr that is not a terminal (a log file, a pipe, CI) gets no progress bars."""
    out = tmp_path / "run"
    code = main(["backtest", "--data", *map(str, synthetic_files), "--models", "ewma,hist",
                 "--start", "2022-06-01", "--refit-every", "60", "--out", str(out), "--no-tracking"])
    assert code == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "refit/s" not in err and "refits:" not in err


def test_long_work_logs_a_progress_line_a_minute(synthetic_files, tmp_path, capsys, monkeypatch):
    """In a log file, long work says how far it is as plain lines (here one per step: the minute set to 0)."""
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    out = tmp_path / "run"
    code = main(["backtest", "--data", *map(str, synthetic_files), "--models", "ewma,hist",
                 "--start", "2022-06-01", "--refit-every", "60", "--out", str(out), "--no-tracking"])
    assert code == 0
    lines = capsys.readouterr().err.splitlines()
    assert "\r" not in "".join(lines)
    assert any(line.endswith("(done)") for line in lines), lines
    assert any(line.endswith(" left") for line in lines), lines
    code = main(["backtest", "--data", *map(str, synthetic_files), "--models", "ewma", "--start", "2022-06-01",
                 "--out", str(tmp_path / "quiet"), "--no-tracking", "--quiet"])
    assert code == 0 and "left" not in capsys.readouterr().err


def test_log_lines_count_and_estimate(capsys):
    counter = progress.LogLines(total=4, desc="refits", unit="refit", every_s=0.0)
    with counter:
        for _ in range(4):
            counter.update()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("  refits: 1/4 refits, ") and "left" in lines[0]
    assert lines[-1].startswith("  refits: 4/4 refits, ") and lines[-1].endswith("(done)")
    quiet = progress.LogLines(total=4, desc="refits", unit="refit", every_s=3600.0)
    quiet.update()
    quiet.close()
    assert capsys.readouterr().err == ""  # short work prints nothing at all


@pytest.fixture(scope="module")
def damaged_runs(tmp_path_factory, synthetic_files) -> dict:
    """Run folders whose forecasts.parquet is not a forecast table: text, a table without `variance`, no rows."""
    root = tmp_path_factory.mktemp("damaged")
    good = root / "good"
    assert main(["backtest", "--data", *map(str, synthetic_files), "--models", "ewma", "--start", "2022-06-01",
                 "--out", str(good), "--quiet", "--no-tracking"]) == 0
    forecasts = pd.read_parquet(good / "forecasts.parquet")
    folders = {}
    for name, write in {"text": lambda p: p.write_text("not parquet"),
                        "no_variance": lambda p: forecasts.drop(columns="variance").to_parquet(p),
                        "empty": lambda p: forecasts.iloc[:0].to_parquet(p),
                        "twice": lambda p: pd.concat([forecasts, forecasts.iloc[[3]]]).to_parquet(p),
                        "nan": lambda p: forecasts.assign(variance=forecasts["variance"].mask(
                            forecasts.index == 5)).to_parquet(p),
                        "negative": lambda p: forecasts.assign(variance=-forecasts["variance"]).to_parquet(p),
                        "nan_var": lambda p: forecasts.assign(var99_long=forecasts["var99_long"].mask(
                            forecasts.index % 3 == 0)).to_parquet(p)}.items():
        folder = root / name
        folder.mkdir()
        for other in ("scores.csv", "run.json"):
            (folder / other).write_bytes((good / other).read_bytes())
        write(folder / "forecasts.parquet")
        folders[name] = folder
    return folders


@pytest.mark.parametrize("damage, message", [("text", "unreadable"), ("no_variance", "no column variance"),
                                             ("empty", "holds no forecasts"), ("twice", "is there twice"),
                                             ("nan", "with a variance that is not a positive number"),
                                             ("negative", "with a variance that is not a positive number"),
                                             # session 25's recheck: `evaluate` ended in an internal error
                                             ("nan_var", "with a VaR or ES that is not a finite number")])
@pytest.mark.parametrize("command", ["evaluate", "report", "simulate", "portfolio"])
def test_a_damaged_run_folder_is_one_line_naming_its_forecasts(damaged_runs, synthetic_files, tmp_path, capsys,
                                                               command, damage, message):
    run = damaged_runs[damage]
    extra = {"report": ["--out", str(tmp_path / "r.html")],
             "simulate": ["--data", str(synthetic_files[0]), "--out", str(tmp_path / "sim")],
             "portfolio": ["--out", str(tmp_path / "pf"), "--quiet"]}.get(command, [])
    assert main([command, "--run", str(run), *extra]) == 2
    err = capsys.readouterr().err
    assert f"{run / 'forecasts.parquet'}" in err and message in err
    assert err.count("\n") == 1 and "Traceback" not in err and "internal error" not in err


@pytest.mark.parametrize("command", ["evaluate", "report", "simulate", "portfolio"])
def test_a_run_folder_that_does_not_exist_is_one_line_saying_so(synthetic_files, tmp_path, capsys, command):
    """Not a 'forecasts.parquet not found' about a folder the user mistyped: the folder itself is named, and
    the command does not create it (`report` wrote its lock file into a new folder of that name)."""
    run = tmp_path / "nope"
    extra = {"simulate": ["--data", str(synthetic_files[0]), "--out", str(tmp_path / "sim")],
             "portfolio": ["--out", str(tmp_path / "pf"), "--quiet"]}.get(command, [])
    assert main([command, "--run", str(run), *extra]) == 2
    err = capsys.readouterr().err
    assert str(run) in err and ("no such folder" in err or "no forecasts.parquet" in err) and err.count("\n") == 1
    assert not run.exists()


def test_simulate_names_a_damaged_run_json(damaged_runs, synthetic_files, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "forecasts.parquet").write_bytes((damaged_runs["text"].parent / "good" / "forecasts.parquet").read_bytes())
    (run / "run.json").write_text("{truncated")
    assert main(["simulate", "--run", str(run), "--data", str(synthetic_files[0]), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert str(run / "run.json") in err and err.count("\n") == 1


def _tiny_bundle(files, root: Path, provenance: dict | None = None) -> Path:
    """A bundle of a small GBM on `files` (`score` reads the bundle before the bars)."""
    from serving_fixtures import TINY

    from volmargin.data import load_panel
    from volmargin.evaluation.backtest import daily_panel
    from volmargin.export import write_bundle
    from volmargin.models import make_forecaster

    panel = daily_panel(load_panel([str(f) for f in files]))
    return write_bundle(make_forecaster("gbm", **TINY["gbm"]).fit_panel(panel), panel, root / "models",
                        provenance=provenance)


def test_a_second_writer_of_one_output_file_stops_at_once(synthetic_files, tmp_path, capsys):
    """(session 24's interruption campaign) two `score`s to one --out both ran and both said `wrote`."""
    import volmargin.io as vio

    bundle = _tiny_bundle(synthetic_files, tmp_path)
    out = tmp_path / "s.csv"
    argv = ["score", "--bundle", str(bundle), "--data", str(synthetic_files[0]), "--out", str(out)]
    with vio.output_lock(out):
        assert main(argv) == 2
    assert "is being written by volmargin process" in capsys.readouterr().err and not out.exists()
    assert main(argv) == 0 and out.is_file()


def test_a_calibration_folder_is_named_as_a_folder(synthetic_files, tmp_path, capsys):
    bundle = _tiny_bundle(synthetic_files, tmp_path)
    assert main(["margins", "--bundle", str(bundle), "--calibration", str(tmp_path), "--data",
                 str(synthetic_files[0]), "--out", str(tmp_path / "m.csv")]) == 2
    assert "is a folder; give the calibration set's .json file" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["score", "margins", "calibrate"])
def test_a_bundle_of_real_bars_is_never_read_on_the_synthetic_market(synthetic_files, tmp_path, capsys, command):
    """Without --data the built-in synthetic market stands in only for a bundle that learned from it (calibrating
    a real-data bundle on it wrote a set for syn_a .. syn_d, exit 0)."""
    real = {"training": {"assets": {"binance_btcusdt": ["2020-01-01", "2021-12-31"]}}}
    bundle = _tiny_bundle(synthetic_files, tmp_path, provenance=real)
    bundle.with_name(bundle.name + ".calibration.json").write_text("{}")
    out = tmp_path / ("c.json" if command == "calibrate" else "o.csv")
    assert main([command, "--bundle", str(bundle), "--out", str(out),
                 *(["--no-tracking"] if command == "calibrate" else [])]) == 2
    err = capsys.readouterr().err
    assert "--data: give the bars to read" in err and "binance_btcusdt" in err and err.count("\n") == 1


def test_a_bundle_of_another_synthetic_market_is_never_read_on_the_built_in_one(synthetic_files, tmp_path, capsys):
    """A bundle that learned from another synthetic market (seed 7, two assets) was calibrated on seed 0's prices
    under the same asset names, in silence: its manifest's data fingerprint must be the built-in market's."""
    other = {"training": {"assets": {"syn_a": ["2021-01-01", "2023-12-31"]}, "data_sha256": "0" * 64}}
    bundle = _tiny_bundle(synthetic_files, tmp_path, provenance=other)
    assert main(["calibrate", "--bundle", str(bundle), "--out", str(tmp_path / "c.json"), "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert "was made from another market than the built-in synthetic one (its data fingerprint differs)" in err
    assert err.count("\n") == 1 and not (tmp_path / "c.json").exists()


@pytest.mark.parametrize("command", ["backtest", "score"])
def test_min_bars_outside_a_day_of_bars_is_one_line(synthetic_files, tmp_path, capsys, command):
    extra = ["--bundle", str(_tiny_bundle(synthetic_files, tmp_path))] if command == "score" else ["--no-tracking"]
    assert main([command, "--data", str(synthetic_files[0]), "--min-bars", "25", "--out", str(tmp_path / "o.csv"),
                 *extra]) == 2
    err = capsys.readouterr().err
    assert "min bars 25: must lie in 1 .. 24" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):  # argparse: not a count of bars at all
        main([command, "--data", str(synthetic_files[0]), "--min-bars", "0", *extra])
    assert "--min-bars: must be at least 1, got 0" in capsys.readouterr().err


@pytest.mark.parametrize("command, name, formats", [("score", "s.txt", ".parquet or .csv"),
                                                    ("margins", "m.xlsx", ".parquet or .csv"),
                                                    ("calibrate", "c.yaml", ".json")])
def test_an_output_named_for_another_format_is_refused_before_any_work(tmp_path, capsys, command, name, formats):
    bundle = tmp_path / "bundle"
    (tmp_path / "bundle.calibration.json").write_text("{}")
    assert main([command, "--bundle", str(bundle), "--out", str(tmp_path / name), "--no-tracking"]
                if command == "calibrate" else [command, "--bundle", str(bundle), "--out", str(tmp_path / name)]) == 2
    err = capsys.readouterr().err
    assert f"name it {formats}" in err and err.count("\n") == 1 and not (tmp_path / name).exists()


def test_a_backtest_whose_targets_all_lie_past_the_data_is_one_line(synthetic_files, tmp_path, capsys):
    last = pd.read_csv(synthetic_files[0])["timestamp"].iloc[-1][:10]
    start = (pd.Timestamp(last) - pd.Timedelta(days=3)).date()  # origins from 4 days before the end, 10-day targets
    assert main(["backtest", "--data", str(synthetic_files[0]), "--models", "ewma", "--start", str(start),
                 "--horizon", "10", "--out", str(tmp_path / "bt"), "--quiet", "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert "no forecast has a realized target: the 10-day horizon" in err and err.count("\n") == 1
    assert not (tmp_path / "bt").exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, which takes no new file")
def test_an_output_where_no_file_can_be_created_is_refused_before_any_work():
    from volmargin.errors import OutputError
    from volmargin.io import preflight

    with pytest.raises(OutputError, match="cannot write /proc/volmargin-out: /proc takes no new file"):
        preflight("/proc/volmargin-out", folder=True)  # even root, whom access() calls writable there


def test_calibrate_names_an_unknown_policy_key_and_the_known_ones(tmp_path, capsys):
    assert main(["calibrate", "--bundle", str(tmp_path), "--out", str(tmp_path / "c.json"), "--policy", "bufer=0.25",
                 "--no-tracking"]) == 2
    err = capsys.readouterr().err
    assert "--policy: unknown key 'bufer'; expected one of risk, target_breach_rate" in err and err.count("\n") == 1


def test_help_keeps_examples_whole_and_describes_every_command(capsys):
    """(session 25's new-user walk: argparse broke copy-paste examples mid-word; commands had no description)"""
    from volmargin.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # noqa: SLF001 - argparse keeps them nowhere public
    for name, command in commands.items():
        text = command.format_help()
        assert command.description and command.description.rstrip(".").lower() in " ".join(text.split()).lower()
        long_words = [w for action in command._actions for w in (action.help or "").split() if len(w) > 30]
        assert all(word in text for word in long_words), name
    assert "window.train_end=2024-06-30,backtest.start=2024-01-01,calibration.end=2024-12-31" in commands[
        "run"].format_help()
