"""Bad input, tampering and faults, tried as a user and an attacker would; prints the counts.

    .venv/bin/python bench/faults.py [--trials 3] [--kills 3]
    .venv/bin/python bench/faults.py --bundle BUNDLE     # section 1 alone, on an exported bundle

1. Margins from bad data, on real data: a small boosting bundle trained on six hourly spot files up to
   2021-12-31 and calibrated with `volmargin calibrate`'s code on the rest; for each asset, on its 20
   largest-move days after 2022 and 20 others, the 150 daily rows up to that day (the bundle's `history_days`
   and 30 more where that is longer) are corrupted at random (bad values, stale prices, re-sent rows,
   outages, volumes in the wrong unit, gaps, repeated and future dates) and priced by a fresh runtime (no
   memory); the served margin and haircut are compared with those of the same rows uncorrupted. Inputs
   unusable as a whole (integers, too few rows) are priced by a runtime that priced the clean rows earlier
   that day.
   Beside it, how often clean real data is flagged doubtful: the served window of every 5th day of all
   hourly spot files (the 29 top-level ones and alts/) checked by `validation.doubtful_values`.
2. The CLI on one bad-input or fault case per row (in process): exit code, one line, or a traceback.
3. Half-written outputs: `volmargin backtest` stopped at every write, and `backtest` and `export`
   SIGKILLed at random moments of their write phase (subprocesses): the folder must be the old one or
   the complete new one, the bundle version absent or complete.
4. Seconds to a clear error for a silent (accepts, never answers) and a refused MLflow / Dask address.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import hourly_spot_files, rows_to_send, shared_data_dir  # noqa: E402
from volmargin.training import MODEL_FORMAT  # noqa: E402
from volmargin_serving.features import INPUT_COLUMNS  # noqa: E402

ASSETS = ("btcusdt", "ethusdt", "solusdt", "dogeusdt", "xrpusdt", "linkusdt")
BAD = [np.nan, np.inf, -np.inf, -1.0, -1e-9, 0.5, 1e300]
STALE_COLUMNS = [INPUT_COLUMNS.index(c) for c in ("ret", "rv", "bv", "parkinson", "rogers_satchell")]
COMPLETE_COLUMN = INPUT_COLUMNS.index("complete")
UNIT_COLUMNS = [INPUT_COLUMNS.index(c) for c in ("volume", "traded_value")]


# ------------------------------------------------------------------ 1. margins from bad data


def real_bundle(folder: Path, given: Path | None = None, assets: tuple[str, ...] = ASSETS):
    """A bundle, its calibration set and the assets' daily panel: the bench's own small bundle (trained on the
    assets to 2021-12-31; also tests/test_reliability_real.py's), or `given` (an exported bundle: its
    calibration set beside it, BUNDLE.calibration.json, or one calibrated here)."""
    from volmargin.batch import score_panel
    from volmargin.calibration import PolicyConfig
    from volmargin.calibration.bundle import calibrate_bundle
    from volmargin.calibration.parameters import write_parameter_set
    from volmargin.config import APC_POLICY
    from volmargin.data import load_panel
    from volmargin.evaluation.backtest import daily_panel
    from volmargin.export import write_bundle
    from volmargin.models import make_forecaster

    files = [f for f in hourly_spot_files() if any(f"binance_{a}_" in f.name for a in assets)]
    bars = load_panel(files)
    panel = daily_panel(bars)
    if given is not None and Path(f"{given}.calibration.json").is_file():
        return given, Path(f"{given}.calibration.json"), panel
    if given is None:
        train = {a: d.loc[:"2021-12-31"] for a, d in panel.items()}
        model = make_forecaster("gbm", n_estimators=60, tail_estimators=30).fit_panel(train)
        bundle = write_bundle(model, train, folder, provenance={"training": {"train_end": "2021-12-31"}})
    else:
        bundle = given
    policy = PolicyConfig(**APC_POLICY)  # the default policy of `volmargin run`
    scored = score_panel(bundle, panel, progress=False)
    parameters, _, _ = calibrate_bundle(bundle, scored, panel, policy, None, bars)
    calibration = write_parameter_set(parameters, bundle, folder / "set.calibration.json")
    return bundle, calibration, panel


def corrupt(rng, inputs, dates, as_of, whole: bool):
    inputs, dates = inputs.copy(), dates.copy()
    if whole:
        return (inputs.astype(np.int64), dates) if rng.random() < 0.5 else (inputs[-40:], dates[-40:]), False, []
    newest = False  # whether the newest row (the day of the move) is among the bad ones
    applied = []  # (kind, days back) of each corruption, for the report of a lowered margin
    for _ in range(rng.integers(1, 5)):
        kind = rng.choice(["value", "value", "value", "gap", "repeat", "future", "stale", "resent", "outage", "unit"])
        row = len(inputs) - 1 - rng.integers(0, 88)
        applied.append((str(kind), int(len(inputs) - 1 - row)))
        newest |= kind == "future" or (row == len(inputs) - 1 and kind != "gap")
        if kind == "value":
            inputs[row, rng.integers(0, inputs.shape[1])] = rng.choice(BAD)
        elif kind == "gap" and row < len(inputs) - 1:
            inputs, dates = np.delete(inputs, row, axis=0), np.delete(dates, row)
        elif kind == "repeat" and row > 0:
            dates[row] = dates[row - 1]
        elif kind == "stale":  # a stale price: the day's moves all zero, its volume still reported
            inputs[row, STALE_COLUMNS] = 0.0
        elif kind == "resent" and row > 0:  # the feed sends the day before's row again under this day's date
            inputs[row] = inputs[row - 1]
        elif kind == "outage":  # bars missing: an incomplete day that saw part of its moves
            inputs[row, STALE_COLUMNS[1:]] *= rng.uniform(0.05, 0.8)
            inputs[row, COMPLETE_COLUMN] = 0.0
        elif kind == "unit":  # a volume or traded value in the wrong unit (thousands, or a thousandth)
            inputs[row, rng.choice(UNIT_COLUMNS)] *= rng.choice([1e-3, 1e3])
        elif kind == "future":
            dates[-1] = as_of + np.timedelta64(int(rng.integers(1, 5)), "D")
    if rng.random() < 0.15:  # a feed that sends text: one cell that is not a number
        row = len(inputs) - 1 - rng.integers(0, 88)
        newest |= row == len(inputs) - 1
        inputs = inputs.astype(object)
        inputs[row, rng.integers(0, inputs.shape[1])] = rng.choice(["n/a", "", "null"])
    if rng.random() < 0.15:  # dates sent as ISO text
        dates = dates.astype("datetime64[D]").astype(str)
    return (inputs, dates), newest, applied


def margins_from_bad_data(trials: int, addon: float | None = None, given: Path | None = None, seed: int = 11,
                          scratch: Path | None = None) -> dict:
    import volmargin_serving as vs
    from volmargin.features.learned import daily_inputs
    from volmargin_serving import margins as serving_margins

    if addon is not None:
        serving_margins.DOUBT_ADDON = addon
    folder = Path(tempfile.mkdtemp(prefix="faults-bundle-", dir=scratch))
    bundle, calibration, panel = real_bundle(folder, given)
    length = rows_to_send(bundle)
    rng = np.random.default_rng(seed)
    counts = {"cases": 0, "fail_safe": 0, "lowered": 0, "worst_shortfall": 0.0, "whole_cases": 0, "whole_lowered": 0,
              "newest_cases": 0, "newest_lowered": 0, "lowered_cases": []}
    assets = sorted(panel)
    for asset in assets:
        daily = panel[asset].loc["2022-04-01":]
        moves = daily["ret"].abs().sort_values(ascending=False).index
        days = list(moves[:20]) + list(rng.choice(moves[20:], 20, replace=False))
        for day in days:
            rows = panel[asset].loc[:day].iloc[-length:]
            columns = daily_inputs(rows)
            inputs = np.column_stack([columns[c].astype(float) for c in INPUT_COLUMNS])
            dates = rows.index.tz_convert(None).to_numpy().astype("datetime64[D]")
            as_of = dates[-1]
            clean = vs.load(bundle, calibration=calibration).margins([asset], [inputs], [dates], as_of=as_of)
            if clean.fail_safe.any():
                continue  # the clean rows themselves are refused (e.g. a real gap): no reference
            for trial in range(trials):
                whole = trial == trials - 1 and rng.random() < 0.5
                runtime = vs.load(bundle, calibration=calibration)
                if whole:
                    runtime.margins([asset], [inputs], [dates], as_of=as_of)  # priced earlier that day
                (bad_inputs, bad_dates), newest, applied = corrupt(rng, inputs, dates, as_of, whole)
                got = runtime.margins([asset], [bad_inputs], [bad_dates], as_of=as_of)
                key = "whole_" if whole else ""
                counts[f"{key}cases"] += 1
                counts["fail_safe"] += int(got.fail_safe.any())
                shortfall = max(float(np.max(1 - got.initial / clean.initial)),
                                float(1 - got.haircut[0, 0] / clean.haircut[0, 0]))
                counts["newest_cases"] += int(newest)
                if shortfall > 1e-12:
                    counts[f"{key}lowered"] += 1
                    counts["newest_lowered"] += int(newest)
                    counts["worst_shortfall"] = max(counts["worst_shortfall"], shortfall)
                    what = applied or "unusable as a whole"
                    counts["lowered_cases"].append(f"{asset} {as_of} {what} {shortfall:.2%}")
    return counts


def doubt_flags_on_clean_data(every: int = 5) -> dict:
    """Share of sampled asset-days whose served window of clean real rows holds a doubtful value."""
    from volmargin.data import load_panel
    from volmargin.evaluation.backtest import daily_panel
    from volmargin.features.learned import daily_inputs
    from volmargin_serving.validation import doubtful_values

    files = hourly_spot_files() + sorted((shared_data_dir() / "alts").glob("*_1h.csv.gz"))
    length = 150  # the rows a default bundle reads (its history_days), as in section 1
    flagged, days, assets = 0, 0, set()
    for asset, daily in daily_panel(load_panel(files)).items():
        columns = daily_inputs(daily)
        rows = np.column_stack([columns[c].astype(float) for c in INPUT_COLUMNS])
        starts = np.arange(0, len(rows) - length + 1, every)
        doubt = doubtful_values(rows[starts[:, None] + np.arange(length)]).any(axis=(-1, -2))
        flagged, days = flagged + int(doubt.sum()), days + len(starts)
        assets |= {asset} if doubt.any() else set()
    return {"flagged": flagged, "days": days, "assets": sorted(assets), "files": len(files)}


# ------------------------------------------------------------------ 2. the CLI on bad input


class Silent:
    """A TCP port that accepts connections and never answers."""

    def __init__(self):
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(16)
        self.port = self.server.getsockname()[1]
        self.held = []
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            self.held.append(self.server.accept()[0])


def refused_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def run_cli(argv: list[str]) -> tuple[int | str, str, float]:
    from volmargin.cli import main

    err = io.StringIO()
    began = time.perf_counter()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except BaseException as exc:  # noqa: BLE001 - what escapes main is a traceback for the user
        return "traceback", f"{type(exc).__name__}: {exc}", time.perf_counter() - began
    return code, err.getvalue(), time.perf_counter() - began


def cli_cases(work: Path, bundle: Path, good_bars: list[str]) -> list[tuple[str, str, list[str]]]:
    """(class, case, argv) rows."""
    bars = good_bars[:1]
    (work / "fifo.csv").exists() or os.mkfifo(work / "fifo.csv")
    loop = work / "loop.csv"
    loop.exists() or loop.is_symlink() or loop.symlink_to(loop)
    (work / "mine").mkdir(exist_ok=True)
    (work / "mine" / "notes.txt").write_text("mine")
    (work / "latin1.yaml").write_bytes(b"output: caf\xe9\n")
    (work / "typo.yaml").write_text("calibration: {policy: {bufer: 0.25}}\n")
    (work / "badparam.yaml").write_text("learned: {gbm: {n_estimators: many}}\n")
    (work / "early.yaml").write_text("window: {train_end: 2019-01-01}\nlearned: {gbm: {n_estimators: 5}}\n"
                                     f"output: {work / 'early-run'}\n")
    hours = pd.date_range("2023-01-01", periods=400, freq="h", tz="UTC")
    mixed = sorted([*hours, *[t + pd.Timedelta(minutes=m) for t in hours[100:200] for m in (15, 30, 45)]])
    pd.DataFrame({"timestamp": [t.isoformat() for t in mixed], "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0,
                  "volume": 1.0}).to_csv(work / "mixed_1h.csv", index=False)
    (work / "trunc").mkdir(exist_ok=True)
    (work / "trunc" / "forecasts.parquet").write_bytes(b"PAR1" + b"\0" * 64)
    (work / "trunc" / "run.json").write_text('{"complete": true}')
    (work / "pkl").mkdir(exist_ok=True)
    (work / "pkl" / "model.pkl").write_bytes(b"\x80\x04\x95")
    (work / "pkl" / "train.json").write_text(json.dumps({"config": {}, "data": {}, "model_format": MODEL_FORMAT}))
    (work / "pkl" / "eval_scores.csv").write_text("asset,model,qlike\nALL,gbm,0.5\n")
    tampered = work / "tampered"
    if not tampered.exists():
        tampered.mkdir()
        for p in bundle.iterdir():
            (tampered / p.name).write_bytes(p.read_bytes())
        manifest = json.loads((tampered / "manifest.json").read_text())
        manifest["onnx"]["file"] = "../model.onnx"
        (tampered / "manifest.json").write_text(json.dumps(manifest))
    wrongtype = work / "wrongtype"
    if not wrongtype.exists():
        wrongtype.mkdir()
        for p in bundle.iterdir():
            (wrongtype / p.name).write_bytes(p.read_bytes())
        manifest = json.loads((wrongtype / "manifest.json").read_text())
        manifest["horizon"] = "1"
        (wrongtype / "manifest.json").write_text(json.dumps(manifest))
    silent, dead = Silent(), refused_port()
    score = ["score", "--bundle", str(bundle), "--data", *bars, "--latest", "--quiet"]
    return [
        ("unsafe write", "--out /dev/full", [*score, "--out", "/dev/full"]),
        ("unsafe write", "--out onto an existing folder", [*score, "--out", str(work / "mine")]),
        ("unsafe write", "backtest --out a folder of the user's files",
         ["backtest", "--data", *bars, "--models", "hist", "--no-tracking", "--out", str(work / "mine")]),
        ("unsafe write", "export --name ../../x", ["export", "--run", str(work / "pkl"), "--name", "../../x",
                                                   "--no-tracking", "--root", str(work / "models")]),
        ("special file", "FIFO as --data", [*score, "--data", str(work / "fifo.csv"), "--out", str(work / "s.csv")]),
        ("special file", "symlink loop as --data", [*score, "--data", str(loop), "--out", str(work / "s.csv")]),
        ("bad data", "1h file with a minority of 15m rows",
         [*score, "--data", str(work / "mixed_1h.csv"), "--out", str(work / "s.csv")]),
        ("late validation", "typo in calibration.policy", ["run", "--config", str(work / "typo.yaml")]),
        ("late validation", "wrong parameter type", ["run", "--config", str(work / "badparam.yaml")]),
        ("late validation", "train_end before the data", ["run", "--config", str(work / "early.yaml"),
                                                          "--tracking-uri", f"sqlite:///{work / 'm.db'}"]),
        ("bad config", "config not UTF-8", ["run", "--config", str(work / "latin1.yaml")]),
        ("damaged output", "truncated forecasts.parquet", ["evaluate", "--run", str(work / "trunc")]),
        ("damaged output", "truncated model.pkl", ["export", "--run", str(work / "pkl"), "--no-tracking"]),
        ("tampered bundle", "onnx.file outside the bundle", [*score, "--bundle", str(tampered), "--out",
                                                             str(work / "s.csv")]),
        ("tampered bundle", "wrong manifest value type", [*score, "--bundle", str(wrongtype), "--out",
                                                          str(work / "s.csv")]),
        ("bad data", "calibrate on data ending before training end",
         ["calibrate", "--bundle", str(bundle), "--data", *bars, "--no-tracking", "--out", str(work / "c.json")]),
        ("service", "MLflow server that never answers",
         ["backtest", "--data", *bars, "--tracking-uri", f"http://127.0.0.1:{silent.port}", "--out", str(work / "b")]),
        ("service", "MLflow server refused",
         ["backtest", "--data", *bars, "--tracking-uri", f"http://127.0.0.1:{dead}", "--out", str(work / "b")]),
        ("service", "Dask scheduler that never answers",
         [*score, "--scheduler", f"tcp://127.0.0.1:{silent.port}", "--out", str(work / "s.csv")]),
        ("service", "Dask scheduler refused", [*score, "--scheduler", f"tcp://127.0.0.1:{dead}", "--out",
                                               str(work / "s.csv")]),
    ]


# ------------------------------------------------------------------ 3. half-written outputs


def snapshot(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())} if folder.exists() else {}


def complete_backtest(out: Path) -> bool:
    try:
        record = json.loads((out / "run.json").read_text())
        models = set(record["args"]["models"].split(","))
        return (record.get("complete") is True and set(pd.read_parquet(out / "forecasts.parquet")["model"]) == models
                and set(pd.read_csv(out / "scores.csv")["model"]) == models)
    except Exception:  # noqa: BLE001 - anything unreadable is half-written
        return False


def kill_in_writes(command: list[str], parent: Path, pattern: str, delay: float) -> int:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while process.poll() is None and not list(parent.glob(pattern)):
        time.sleep(0.002)
    time.sleep(delay)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    return process.wait()


def half_written(work: Path, bars: list[str], kills: int) -> dict:
    import volmargin.evaluation.backtest as backtest_module
    import volmargin.io as vio
    import volmargin_serving as vs
    from volmargin.cli import main

    out = work / "bt"
    argv = ["backtest", "--data", *bars, "--models", "hist", "--min-train", "300", "--no-tracking", "--quiet",
            "--out", str(out)]
    with contextlib.redirect_stdout(io.StringIO()):
        main(argv)
    old = snapshot(out)
    counts = {"outputs": 0, "half_written": 0, "leftovers": 0}
    real_write, real_run = vio.write_atomic, backtest_module.run_backtest
    cache = {}
    backtest_module.run_backtest = lambda panel, config, **kw: cache.setdefault(config.models, real_run(panel, config, **kw))
    new_argv = [*argv[:4], "hist,ewma", *argv[5:]]
    for stop_at in range(1, 12):
        calls = {"n": 0}

        def failing(target, writer, stop_at=stop_at, calls=calls):
            calls["n"] += 1
            if calls["n"] == stop_at:
                raise KeyboardInterrupt
            return real_write(target, writer)

        vio.write_atomic = failing
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = main(new_argv)
        counts["outputs"] += 1
        counts["half_written"] += int(not (snapshot(out) == old or complete_backtest(out)))
        counts["leftovers"] += len([p for p in work.iterdir() if p.name.endswith((".staging", ".old", ".tmp"))])
        if code == 0:
            break
    vio.write_atomic, backtest_module.run_backtest = real_write, real_run
    cli = [sys.executable, "-m", "volmargin.cli"]
    for k in range(kills):
        before = snapshot(out)
        kill_in_writes([*cli, *(new_argv if k % 2 == 0 else argv)], work, ".bt.*.staging", 0.15 * k)
        counts["outputs"] += 1
        counts["half_written"] += int(not (snapshot(out) == before or complete_backtest(out)))
    # export: a bundle version absent or complete
    train = work / "train"
    if train.exists():
        root = work / "models"
        for k in range(kills):
            kill_in_writes([*cli, "export", "--run", str(train), "--root", str(root), "--no-tracking", "--data", *bars],
                           root / "gbm", ".*.staging", 0.1 * k)
            counts["outputs"] += 1
            for version in (root / "gbm").iterdir():
                if version.name.isdigit():
                    try:
                        vs.load(version)
                    except vs.ServingError:
                        counts["half_written"] += 1
    with contextlib.redirect_stdout(io.StringIO()):
        main(argv)  # the next writer cleans up after the kills
    counts["leftovers"] += len([p for p in work.iterdir() if p.name.endswith((".staging", ".old", ".tmp"))])
    return counts


def train_folder(folder: Path, bars: list[str]) -> None:
    import dataclasses
    import pickle

    from volmargin.config import DataConfig, ModelConfig, TrainConfig
    from volmargin.data import load_panel
    from volmargin.evaluation.backtest import daily_panel
    from volmargin.models import make_forecaster
    from volmargin.tracking import data_fingerprint

    loaded = load_panel(bars)
    model = make_forecaster("gbm", n_estimators=20, tail_estimators=10).fit_panel(daily_panel(loaded))
    cfg = TrainConfig(data=DataConfig(paths=tuple(bars)), model=ModelConfig("gbm", {}), output=str(folder))
    folder.mkdir(parents=True, exist_ok=True)
    pickled = pickle.dumps(model)
    (folder / "model.pkl").write_bytes(pickled)
    (folder / "train.json").write_text(json.dumps({"config": dataclasses.asdict(cfg), "data": data_fingerprint(loaded),
                                                   "model_sha256": hashlib.sha256(pickled).hexdigest(),
                                                   "model_format": MODEL_FORMAT}, default=str))
    pd.DataFrame([{"asset": "ALL", "model": "gbm", "qlike": 0.5}]).to_csv(folder / "eval_scores.csv", index=False)


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="corruptions per asset and day (default 3)")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per command (default 3)")
    parser.add_argument("--bundle", type=Path, help="section 1 only, on this exported bundle (calibrated here "
                        "unless BUNDLE.calibration.json is beside it)")
    parser.add_argument("--seed", type=int, default=11, help="the draw of section 1's corruptions (default 11)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="faults-") as scratch:  # bundles, MLflow store, CLI cases: removed after
        run(args, Path(scratch))


def run(args: argparse.Namespace, scratch: Path) -> None:
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{scratch}/mlflow.db"
    work = scratch / "work"
    work.mkdir()

    began = time.perf_counter()
    margins = margins_from_bad_data(args.trials, given=args.bundle, seed=args.seed, scratch=scratch)
    without_addon = margins_from_bad_data(args.trials, addon=0.0, given=args.bundle, seed=args.seed, scratch=scratch)
    print(f"1. margins from bad data ({time.perf_counter() - began:.0f} s): {margins['cases']} corrupted windows of "
          f"real data, {margins['fail_safe']} priced fail-safe, lowered {margins['lowered']} "
          f"(worst shortfall {margins['worst_shortfall']:.2%}; {margins['newest_lowered']} of them with the newest row "
          f"bad, of {margins['newest_cases']} such cases); inputs unusable as a whole: "
          f"{margins['whole_cases']}, lowered {margins['whole_lowered']}")
    for case in margins["lowered_cases"]:  # asset, day, the corruptions (kind, days back), shortfall
        print(f"   lowered: {case}")
    print(f"   without the 25% doubt add-on: lowered {without_addon['lowered']} of {without_addon['cases']} "
          f"(worst shortfall {without_addon['worst_shortfall']:.2%})")
    if args.bundle is not None:
        return
    flags = doubt_flags_on_clean_data()
    print(f"   clean real data flagged doubtful: {flags['flagged']} of {flags['days']} sampled asset-days "
          f"({flags['flagged'] / max(flags['days'], 1):.2%}) of {flags['files']} files; assets: "
          f"{', '.join(flags['assets']) or 'none'}")

    from volmargin.data import synthetic_market
    from volmargin_serving import margins as serving_margins

    serving_margins.DOUBT_ADDON = 0.25
    bars = []
    for asset, frame in synthetic_market(n_assets=2, days=420, seed=1).items():
        path = work / f"{asset}.csv"
        frame.rename_axis("timestamp").reset_index().to_csv(path, index=False)
        bars.append(str(path))
    train_folder(work / "train", bars)
    from volmargin.export import write_bundle
    from volmargin.training import load_trained

    bundle = write_bundle(load_trained(work / "train")[0], __import__("volmargin.evaluation.backtest", fromlist=["x"])
                          .daily_panel(__import__("volmargin.data", fromlist=["x"]).load_panel(bars)), work / "cli-models",
                          provenance={"training": {"train_end": "2030-01-01"}})
    rows = []
    for kind, case, argv in cli_cases(work, bundle, bars):
        code, err, seconds = run_cli(argv)
        one_line = code == 2 and err.startswith("volmargin: error: ") and err.count("\n") == 1
        rows.append({"class": kind, "case": case, "exit": code, "one line": one_line,
                     "traceback": code == "traceback" or code == 1 or "Traceback" in err, "seconds": round(seconds, 1),
                     "message": err.strip()[:110]})
    table = pd.DataFrame(rows)
    print("\n2. the CLI on bad input and faults:")
    print(table.to_markdown(index=False))

    began = time.perf_counter()
    written = half_written(work, bars, args.kills)
    print(f"\n3. half-written outputs ({time.perf_counter() - began:.0f} s): {written['half_written']} of "
          f"{written['outputs']} interrupted or killed outputs; {written['leftovers']} temporary files or staging "
          "folders left after the next writer")

    services = table[table["class"] == "service"]
    classes = {"bad values (NaN/inf/negative/flag/absurd return)",
               "doubtful values (10^4 off the window, stale prices, re-sent rows, a recent day cut short, an rv its "
               "range cannot make, an average price that jumps: volumes in the wrong unit)",
               "gaps, repeated, future dates", "unusable inputs as a whole", "wrong types (text cells, text dates)",
               "resealed calibration set", *table["class"].unique(), "interrupted write (SIGINT/SIGTERM)",
               "killed write (SIGKILL)"}
    print("\nSummary:")
    print(f"- bad-input and fault classes covered by tests: {len(classes)} ({', '.join(sorted(classes))})")
    print(f"- tracebacks: {int(table['traceback'].sum())} (target 0); one-line errors: {int(table['one line'].sum())} "
          f"of {len(table)}")
    print(f"- margins lowered by bad data: {margins['lowered'] + margins['whole_lowered']} of "
          f"{margins['cases'] + margins['whole_cases']} (target 0)")
    print(f"- half-written outputs: {written['half_written']} of {written['outputs']} (target 0)")
    print(f"- time to a clear error for an unreachable or silent service: max {services['seconds'].max():.1f} s "
          "(target <= 15 s)")


if __name__ == "__main__":
    main()
