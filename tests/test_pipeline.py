"""`volmargin run` end to end on a tiny synthetic config, stage failure handling, the shipped configs,
and the README's serving example (run as written against the bundle the pipeline exported)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from volmargin.cli import main
from volmargin.config import RunConfig, load_config
from volmargin.errors import ConfigError
from volmargin.evaluation.scoring import POOLED
from volmargin.pipeline import STAGES

REPO = Path(__file__).resolve().parents[1]
TINY = """
data: {{synthetic_assets: 2, synthetic_days: 760, seed: 2}}
window: {{train_end: 2022-03-31, min_train_days: 200}}
learned:
  nn: {{window: 8, hidden: 8, max_epochs: 2, patience: 1, refit_epochs: 1, batch_size: 256}}
  gbm: {{n_estimators: 20, tail_estimators: 10}}
  blend: {{weight: 0.7}}
backtest: {{baselines: [ewma, har], learned_refit_every: 150}}
calibration: {{end: 2022-06-30, recalibrate: null}}
simulation: {{enabled: true, accounts: 100, bootstrap_paths: 1, every: YS}}
portfolio: {{concentrations: [0, 0.5], correlation_weights: [0, 0.25]}}
tracking: {{registered_model: tiny}}
models_root: {root}/models
output: {root}/run
"""


def _config(folder: Path) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(TINY.format(root=folder))
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, dict, str]:
    folder = tmp_path_factory.mktemp("pipeline")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    assert main(["run", "--config", str(_config(folder)), "--quiet", "--tracking-uri", uri]) == 0
    return folder, json.loads((folder / "run" / "run.json").read_text()), uri


def test_run_writes_every_output_and_records_every_stage(finished):
    folder, record, _ = finished
    out = folder / "run"
    assert list(record["timings"]) == list(STAGES) and "failed_stage" not in record
    for name in ("forecasts.parquet", "scores.csv", "dm.csv", "latest.parquet", "report.html",
                 "calibration/margin_summary.csv", "calibration/margin_paths.parquet", "calibration/stress.csv",
                 "portfolio/summary.csv", "simulation/summary.csv", "simulation/stress.csv"):
        assert (out / name).is_file(), name
    assert set(pd.read_parquet(out / "forecasts.parquet")["model"]) == {"ewma", "har", "nn", "gbm", "blend"}
    calibration = pd.read_csv(out / "portfolio" / "calibration.csv")
    assert set(calibration["concentration"]) == {0.0, 0.5} and set(calibration["correlation_weight"]) == {0.0, 0.25}
    bundle = Path(record["bundle"]["path"])
    assert bundle.parent.name == f"tiny-{record['champion']}" and (bundle / "model.onnx").is_file()
    assert Path(record["bundle"]["calibration_set"]).is_file()
    latest = pd.read_parquet(out / "latest.parquet")
    assert len(latest) == 2 and latest["variance"].gt(0).all()
    margins = pd.read_parquet(out / "latest_margins.parquet")  # what the service publishes with the exported set
    assert len(margins) == 4 and margins["initial_margin"].between(0, 1).all()
    assert set(margins["calibration"]) == {json.loads(Path(record["bundle"]["calibration_set"]).read_text())["version"]}
    assert 'id="simulation"' in (out / "report.html").read_text()  # the simulate stage's section
    assert record["data"]["synthetic"] and len(record["data"]["assets"]) == 2


def test_run_is_one_mlflow_parent_with_a_child_per_stage(finished):
    _, record, uri = finished
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    parent = client.get_run(record["mlflow"]["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.params["horizon"] == str(record["config"]["horizon"])  # its settings (session 31: none)
    assert parent.data.params["backtest.baselines"] == str(tuple(record["config"]["backtest"]["baselines"]))
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert {run.info.run_name for run in children} == set(STAGES)
    version = client.get_model_version(record["bundle"]["registered_model"], record["bundle"]["registered_version"])
    assert version.status == "READY"
    bundle = Path(record["bundle"]["path"])  # the folder it is: the two version numbers can differ
    assert version.tags["volmargin.bundle"] == f"{bundle.parent.name}/{bundle.name}"


def test_a_failed_stage_is_named_when_its_record_cannot_be_written(tmp_path, monkeypatch, capsys):
    """(session 24's interruption campaign) a run folder made read-only mid-run: the error of writing run.json
    replaced the stage's, which was then named nowhere."""
    import volmargin.pipeline as pipeline
    from volmargin.errors import OutputError

    def broken(run) -> None:
        raise RuntimeError("disk on fire")

    save = pipeline.Run.save

    def failing_save(run) -> None:
        if "failed_stage" in run.record:
            raise OutputError("cannot write run.json: Permission denied")
        save(run)

    monkeypatch.setitem(STAGES, "calibrate", broken)
    monkeypatch.setattr(pipeline.Run, "save", failing_save)
    assert main(["run", "--config", str(_config(tmp_path)), "--quiet",
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 2
    err = capsys.readouterr().err
    assert "stage 'calibrate' failed: disk on fire" in err and "run.json could not record it" in err
    assert sum(line.startswith("volmargin: error: ") for line in err.splitlines()) == 1 and "Traceback" not in err


def test_a_failed_stage_fails_the_command_and_keeps_earlier_outputs(tmp_path, monkeypatch, capsys):
    def broken(run) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(STAGES, "calibrate", broken)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["run", "--config", str(_config(tmp_path)), "--quiet", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert "stage 'calibrate' failed: disk on fire" in err and "Traceback" not in err
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["failed_stage"]["stage"] == "calibrate" and "backtest" in record["timings"]
    assert (tmp_path / "run" / "forecasts.parquet").is_file() and not (tmp_path / "models").exists()
    mlflow.set_tracking_uri(uri)
    parent = MlflowClient().get_run(record["mlflow"]["parent_run_id"])
    assert parent.info.status == "FAILED"


def test_shipped_run_configs_are_valid_and_default_is_the_built_in_job():
    assert load_config(REPO / "training/configs/default.yaml", RunConfig) == RunConfig()
    real = load_config(REPO / "training/configs/crypto-hourly.yaml", RunConfig)
    assert real.calibration.end == "2021-12-31" and real.backtest.start == "2021-01-01"


def _readme_block(name: str) -> str:
    import textwrap

    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]  # the README or the docs it links
    block = re.search(rf"<!-- {name} -->\s*```python\n(.*?)```", "\n".join(p.read_text() for p in docs), re.S)
    assert block, f"README and docs/ have no {name} block"
    return textwrap.dedent(block.group(1))


@pytest.mark.parametrize("name, assets", [("serving-example", 1), ("stream-example", 2)])
def test_readme_serving_examples_run_as_written(finished, monkeypatch, name, assets):
    """The README's code blocks marked `serving-example` and `stream-example` are executed against the
    exported bundle."""
    folder, record, _ = finished
    code = _readme_block(name).replace("models/volmargin-demo-gbm/1", record["bundle"]["path"])
    monkeypatch.chdir(folder)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    margins = namespace["margins"]
    assert margins.initial.shape == (assets, 2) and not margins.fail_safe.any(), margins.reason


def test_readme_bars_example_gives_the_margins_of_the_cli(finished, monkeypatch, tmp_path):
    """The README's `bars-example` (a service's own hourly bars -> daily rows -> margins) on the run's
    synthetic market written to files, against `volmargin margins --latest` on the same files."""
    from volmargin.data import write_synthetic_csv

    folder, record, _ = finished
    monkeypatch.chdir(tmp_path)
    write_synthetic_csv(tmp_path / "my" / "bars", n_assets=2, days=760, seed=2, freq="1h")
    bundle = record["bundle"]["path"]
    code = _readme_block("bars-example").replace("models/volmargin-crypto-blend/1", bundle)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    margins = namespace["margins"]
    assert margins.initial.shape == (2, 2) and not margins.fail_safe.any(), margins.reason
    assert main(["margins", "--bundle", bundle, "--data", "my/bars", "--latest", "--out", "cli.csv"]) == 0
    cli = pd.read_csv("cli.csv").pivot(index="asset", columns="side", values="initial_margin")
    np.testing.assert_allclose(margins.initial, cli.loc[namespace["names"], ["long", "short"]].to_numpy(), rtol=1e-9)


def test_readme_portfolio_and_option_examples_run_as_written(finished, monkeypatch):
    folder, record, _ = finished
    scenarios = sorted((folder / "run" / "portfolio").glob("scenarios-*.npz"))[0]
    namespace: dict = {}
    exec(compile(_readme_block("portfolio-example").replace("runs/main/portfolio/scenarios-gbm.npz", str(scenarios)),
                 "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    book = namespace["book"]
    assert 0 < book.initial <= book.isolated and book.flagged == ()
    exec(compile(_readme_block("options-example"), "README.md", "exec"), namespace)  # noqa: S102
    assert 0 < namespace["auto"].initial < namespace["static"].initial


def test_the_blend_is_mixed_from_the_runs_members_only_when_they_are_its_own(tmp_path):
    from types import SimpleNamespace

    from volmargin.pipeline import blend_reuses_members

    cfg = load_config(_config(tmp_path), RunConfig)
    both = {"gbm": pd.DataFrame(), "nn": pd.DataFrame()}
    assert blend_reuses_members(SimpleNamespace(cfg=cfg), both)
    assert not blend_reuses_members(SimpleNamespace(cfg=cfg), {"gbm": pd.DataFrame()})  # its nn not trained here
    cfg.learned["blend"] = {**cfg.learned["blend"], "gbm": {"n_estimators": 5}}  # a member of its own
    assert not blend_reuses_members(SimpleNamespace(cfg=cfg), both)


def test_a_bundle_refuses_bars_of_another_interval_than_it_learned_from(finished, tmp_path, capsys):
    from volmargin.data import write_synthetic_csv

    _, record, _ = finished
    bundle = Path(record["bundle"]["path"])
    assert json.loads((bundle / "manifest.json").read_text())["training"]["bar_seconds"] == [3600]
    hourly = write_synthetic_csv(tmp_path / "1h", n_assets=1, days=400, seed=3)
    coarse = tmp_path / "4h" / "syn_a_4h.csv"
    coarse.parent.mkdir()
    bars = pd.read_csv(hourly[0], parse_dates=["timestamp"], index_col="timestamp")
    bars.resample("4h").agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}).dropna(
    ).reset_index().to_csv(coarse, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    assert main(["score", "--bundle", str(bundle), "--data", str(hourly[0]), "--out", str(tmp_path / "1h.csv")]) == 0
    assert main(["score", "--bundle", str(bundle), "--data", str(coarse), "--out", str(tmp_path / "4h.csv")]) == 2
    err = capsys.readouterr().err
    assert "syn_a: 4 h bars, but the bundle learned from 1 h bars" in err and err.count("\n") == 1


def test_finer_bars_are_scored_as_the_hourly_bars_they_make(finished, tmp_path, capsys):
    """`score`, `margins` and `calibrate` aggregate 5-minute bars to the bundle's hourly bars (the runtime's
    own aggregation): the same forecasts and margins as the hourly file pandas resamples from them."""
    from volmargin.data import write_synthetic_csv

    _, record, _ = finished
    bundle = Path(record["bundle"]["path"])
    [fine] = write_synthetic_csv(tmp_path / "5m", n_assets=1, days=400, freq="5min", seed=3)
    hourly = tmp_path / "1h" / "syn_a_1h.csv"
    hourly.parent.mkdir()
    bars = pd.read_csv(fine, parse_dates=["timestamp"], index_col="timestamp")
    bars.resample("1h").agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}).dropna(
    ).reset_index().to_csv(hourly, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    tables = {}
    for name, data in (("fine", fine), ("hourly", hourly)):
        assert main(["score", "--bundle", str(bundle), "--data", str(data), "--out", str(tmp_path / f"{name}.csv")]) == 0
        assert main(["margins", "--bundle", str(bundle), "--data", str(data), "--latest",
                     "--out", str(tmp_path / f"{name}_margins.csv")]) == 0
        tables[name] = (pd.read_csv(tmp_path / f"{name}.csv"), pd.read_csv(tmp_path / f"{name}_margins.csv"))
    assert "1 asset(s) of 5 min bars aggregated to the 1 h bars the bundle learned from" in capsys.readouterr().out
    for fine_table, hourly_table in zip(tables["fine"], tables["hourly"]):
        numbers = hourly_table.select_dtypes("number").columns
        assert len(fine_table) == len(hourly_table) > 0
        np.testing.assert_allclose(fine_table[numbers].to_numpy(float), hourly_table[numbers].to_numpy(float), rtol=1e-9)


@pytest.mark.parametrize("change, message", [
    ("learned: {gbm: fast}", "learned.gbm: expected a mapping of its parameters"),
    ("learned: {gbm: {}, blend: {weight: x}}", "blend.weight: 'x'; a number in [0, 1]"),
    ("portfolio: {policy: {foo: 1}}", "portfolio.policy.foo: unknown key; expected one of measure"),
    ("backtest: {refit_every: 100000}", "must lie in 1 .. 36500 days"),
    ("simulation: {enabled: true, long_share: .nan}", "simulation.long_share: invalid value nan"),
    ("levels: [0.95, 0.99]", "levels: must include 0.99 (VaR backtests) and 0.975 (ES backtest)"),  # session 25
    ("portfolio: {policy: {buffer: 0.1}}", "portfolio policy.buffer: invalid value 0.1 (EMIR"),  # after the backtest
    ("portfolio: {population: {n_random: -3}}", "population.n_random"),
])
def test_run_config_mistakes_stop_at_load_naming_the_key(tmp_path, change, message):
    """(session 23's config campaign: internal errors at load, or failures after training and backtest)"""
    path = tmp_path / "bad.yaml"
    path.write_text(change)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, RunConfig)


def test_a_data_pattern_matching_nothing_names_the_folder_and_the_way_out(tmp_path, capsys, monkeypatch):
    """(session 25's new-user walk: a shipped config run from a clone not beside ../shared/data)"""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "cfg.yaml"
    path.write_text("data: {paths: [../nowhere/*_1h.csv.gz]}")
    assert main(["run", "--config", str(path), "--quiet", "--out", str(tmp_path / "o"),
                 "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    err = capsys.readouterr().err
    assert f"no files match this pattern (relative to {tmp_path})" in err and err.count("\n") == 1
    assert "--data FILES replaces the config's data.paths. Nothing else ran in" in err


def test_a_calibration_end_at_or_after_the_data_stops_at_the_data_stage(tmp_path, capsys):
    path = _config(tmp_path)
    path.write_text(path.read_text().replace("calibration: {end: 2022-06-30", "calibration: {end: 2030-01-01"))
    assert main(["run", "--config", str(path), "--quiet", "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]) == 2
    err = capsys.readouterr().err  # it exported and registered a bundle validated on nothing, then crashed
    assert "stage 'data' failed: calibration.end 2030-01-01 is not before the data ends" in err
    assert not list((tmp_path / "models").glob("*/*"))


def test_margins_start_where_the_set_is_in_force_and_name_the_assets_it_does_not_cover(finished, tmp_path, capsys):
    """Without --start, `margins` replays from the day before the set's parameters come into force (earlier days
    were all fail safe, their margins ratcheting up through `previous`); an asset the set does not cover is
    named with the assets it does."""
    import shutil

    from volmargin.data import write_synthetic_csv

    _, record, _ = finished
    bundle = Path(record["bundle"]["path"])
    syn_a, syn_b = write_synthetic_csv(tmp_path / "bars", n_assets=2, days=760, seed=2)
    other = shutil.copy(syn_b, tmp_path / "bars" / "binance_xyzusdt_1h.csv.gz")
    records = json.loads(Path(record["bundle"]["calibration_set"]).read_text())["parameters"]["records"]
    in_force = pd.Timestamp(min(r["valid_from"] for r in records))
    assert main(["margins", "--bundle", str(bundle), "--data", str(syn_a), str(other),
                 "--out", str(tmp_path / "m.csv")]) == 0
    out = capsys.readouterr().out
    table = pd.read_csv(tmp_path / "m.csv", parse_dates=["origin"], keep_default_na=False)
    assert table["origin"].min() == in_force.ceil("D") - pd.Timedelta(days=1)
    assert not table["reason"].str.contains("no parameters in force").any()
    assert "1 asset(s) not in the calibration set, fully collateralised: binance_xyzusdt; the set covers 2: syn_a, " \
           "syn_b" in out
    early = in_force - pd.Timedelta(days=30)
    assert main(["margins", "--bundle", str(bundle), "--data", str(syn_a), "--start", f"{early:%Y-%m-%d}",
                 "--out", str(tmp_path / "early.csv")]) == 0
    before = 2 * ((in_force.ceil("D") - pd.Timedelta(days=1)) - early).days  # origins priced before it, two sides
    assert f"{before} of them before the calibration set's parameters are in force" in capsys.readouterr().out


def test_set_moves_a_shipped_configs_values_checked_as_in_a_file(tmp_path, capsys):
    """`run --set` / `train --set`: dotted keys over the config (dates stay text), every value checked as the
    config file's are, a mistake one line naming the key."""
    from volmargin.config import parse_overrides, with_overrides

    real = load_config(REPO / "training/configs/crypto-hourly.yaml", RunConfig)
    moved = with_overrides(real, parse_overrides(
        "window.train_end=2024-06-30,backtest.start=2024-01-01,learned.gbm.n_estimators=300,calibration.policy.max_up=null"))
    assert (moved.window.train_end, moved.backtest.start, moved.learned["gbm"]) == ("2024-06-30", "2024-01-01",
                                                                                 {"n_estimators": 300,
                                                                                  "levels": (0.975, 0.99)})
    assert moved.calibration.policy["max_up"] is None and moved.calibration.end == real.calibration.end
    assert with_overrides(RunConfig(), {}) == RunConfig()
    # --set given twice adds up (the first was dropped); a key given twice is refused, as in a file
    twice = with_overrides(real, parse_overrides(["window.train_end=2024-06-30", "horizon=2"]))
    assert (twice.window.train_end, twice.horizon) == ("2024-06-30", 2)
    assert with_overrides(RunConfig(), parse_overrides("learned.gbm=null")).learned["gbm"] == {"levels": (0.975, 0.99)}
    # session 25's recheck: YAML 1.1 read 1e-3 and 1e9 as text ("invalid value '1e9'")
    assert parse_overrides("a=1e-3,b=1e9,c=1.5e3,d=.5e2,e=es975") == {"a": 0.001, "b": 1e9, "c": 1500.0, "d": 50.0,
                                                                       "e": "es975"}
    # session 26: YAML 1.1 read 1:30 as 90 (base 60) and 0365 as 245 (octal); both stay text, the key says so
    assert parse_overrides("a=1:30,b=0365,c=-.5,d=1_000,e=0") == {"a": "1:30", "b": "0365", "c": -0.5, "d": 1000, "e": 0}
    for text, message in (("horizon=2,horizon=1", "horizon is given twice"), ("a..b=1", "expected KEY=VALUE"),
                          ("window.train_en=2024-01-01", "window.train_en: unknown key"),
                          ("window.train_end=03/04/2022", "not a date: '03/04/2022'"),
                          ("horizon=0", "horizon: must lie in 1 .. 30"), ("x", "expected KEY=VALUE"),
                          ("horizon=1:30", "horizon: expected int, got str '1:30'")):
        with pytest.raises(ConfigError, match=re.escape(message)):
            with_overrides(real, parse_overrides(text))
    assert main(["train", "--config", str(REPO / "training/configs/gbm-crypto-hourly.yaml"), "--set",
                 "model.params.gbm.n_estimators=0"]) == 2
    err = capsys.readouterr().err
    assert "n_estimators" in err and err.count("\n") == 1


# ------------------------------------------------------------------ session 28's mutation audit
# Each test below fails on a change the suite let through.


def test_the_exported_champion_is_the_best_learned_model_on_pooled_qlike(finished):
    """run.json's champion, the bundle, its manifest and its calibration set all name the learned model with the
    lowest pooled QLIKE on the forecasts realised before the margins' validation (calibration.end 2022-06-30);
    the bundle was refitted up to the last day; validation starts after calibration.end."""
    from volmargin.evaluation.scoring import score_forecasts

    folder, record, _ = finished
    out = folder / "run"
    forecasts = pd.read_parquet(out / "forecasts.parquet")
    early = forecasts[forecasts["model"].isin(["nn", "gbm", "blend"])
                      & (forecasts["origin"] + pd.Timedelta(days=1) < pd.Timestamp("2022-07-01", tz="UTC"))]
    pooled = score_forecasts(early).query(f"asset == '{POOLED}'")
    best = pooled.loc[pooled["qlike"].idxmin(), "model"]
    assert record["champion"] == best and record["champion_selected_on"].startswith("pooled QLIKE on origins before")
    bundle = Path(record["bundle"]["path"])
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["kind"] == best
    last = max(v["last"] for v in record["data"]["assets"].values())
    assert manifest["training"]["train_end"] == last and manifest["training"]["refit_on_all_data"]
    assert manifest["training"]["evaluated_model_train_end"] == "2022-03-31"
    parameters = json.loads(Path(record["bundle"]["calibration_set"]).read_text())["parameters"]
    assert parameters["model"] == best and {r["model"] for r in parameters["records"]} == {best}
    assert record["calibration"]["validation_start"] == "2022-07-01"  # calibration.end 2022-06-30, not train_end
    assert record["portfolio"]["validation_start"] == "2022-07-01" and record["portfolio"]["models"][0] == best


def test_the_export_refit_learns_from_every_day_of_every_asset(monkeypatch):
    import volmargin.models as models
    from volmargin.pipeline import refit_on_all_data

    seen = {}

    class Spy:
        def fit_panel(self, panel, horizon):
            seen.update(last=max(d.index[-1] for d in panel.values()), rows=sum(map(len, panel.values())), h=horizon)

    monkeypatch.setattr(models, "make_forecaster", lambda name, **params: Spy())
    days = pd.date_range("2022-01-01", periods=10, tz="UTC")
    panel = {"a": pd.DataFrame({"ret": 0.0}, index=days), "b": pd.DataFrame({"ret": 0.0}, index=days[:7])}
    cfg = SimpleNamespace(learned={"gbm": {}}, horizon=2, window=SimpleNamespace(train_end="2022-01-05"))
    _, end = refit_on_all_data(SimpleNamespace(cfg=cfg, panel=panel, progress=False), "gbm")
    assert end == "2022-01-10" and seen == {"last": days[-1], "rows": 17, "h": 2}


def _scored_table(factors: dict[str, tuple[float, float]], cut: str = "2022-12-31") -> pd.DataFrame:
    """Two assets' forecasts, every model's variance `factor` x the realized one: the first factor on origins up
    to `cut`, the second after it (QLIKE is least where the factor is 1)."""
    rng = np.random.default_rng(0)
    origins = pd.date_range("2022-01-01", "2023-12-31", tz="UTC")
    frames = []
    for asset in ("a", "b"):
        rv = 4e-4 * np.exp(rng.normal(0, 0.5, len(origins)))
        ret = np.sqrt(rv) * rng.standard_normal(len(origins))
        for model, (before, after) in factors.items():
            variance = rv * np.where(origins <= pd.Timestamp(cut, tz="UTC"), before, after)
            sigma = np.sqrt(variance)
            frames.append(pd.DataFrame({
                "asset": asset, "model": model, "origin": origins, "date": origins + pd.Timedelta(days=1), "horizon": 1,
                "variance": variance, "realized_rv": rv, "realized_ret": ret,
                **{f"var99_{s}": 2.33 * sigma for s in ("long", "short")},
                **{f"var975_{s}": 1.96 * sigma for s in ("long", "short")},
                **{f"es975_{s}": 2.34 * sigma for s in ("long", "short")}}))
    return pd.concat(frames, ignore_index=True)


def test_the_champion_is_chosen_before_the_margins_validation_starts_among_the_learned_models():
    """nn is best on the calibration year, gbm on the validation year and on the whole: the champion is nn,
    chosen on no day its margins are reported on; har (a baseline, best of all) never is."""
    from volmargin.pipeline import select_champion

    table = _scored_table({"har": (1.0, 1.0), "nn": (1.1, 3.0), "gbm": (2.0, 1.0)})
    cfg = RunConfig()
    cfg = dataclasses.replace(cfg, calibration=dataclasses.replace(cfg.calibration, end="2022-12-31"))
    champion, chosen_on = select_champion(SimpleNamespace(cfg=cfg, forecasts=table), ("nn", "gbm"))
    assert champion == "nn" and "origins before 2022-12-31" in chosen_on
    late = dataclasses.replace(cfg, calibration=dataclasses.replace(cfg.calibration, end="2021-06-30"))
    champion, chosen_on = select_champion(SimpleNamespace(cfg=late, forecasts=table), ("nn", "gbm"))
    assert champion == "gbm" and "every forecast" in chosen_on  # no learned forecast before: said so


# ----------------------------------------------------------------------------- run summary printed after `run`
def test_run_summary_flags_within_target_on_both_sides_and_lists_those_first_cheapest_first(tmp_path, capsys):
    from volmargin.cli.learning import print_run_summary

    (tmp_path / "calibration").mkdir()
    pd.DataFrame({"asset": POOLED, "model": ["a", "b"], "n": 100, "qlike": [0.5, 0.4],
                  "var99_long_rate": 0.01, "var99_short_rate": 0.01}).to_csv(tmp_path / "scores.csv", index=False)
    rows = {"at_target": (0.010, 0.009, 0.10, 0.10),  # exactly at the target counts as within
            "one_side_over": (0.011, 0.005, 0.01, 0.01),  # cheapest, but the long side breaches too often
            "costly": (0.004, 0.004, 0.20, 0.20)}
    per_asset = [{"model": "at_target", "asset": a, "side": "long", "breach_rate": rate, "kupiec_p": p}
                 for a, rate, p in (("x", 0.030, 0.001), ("y", 0.012, 0.6), ("z", 0.002, 0.001))]  # x: over, rejected
    pd.DataFrame([{"model": m, "asset": POOLED, "side": side, "breach_rate": r[i], "avg_margin": r[i + 2]}
                  for m, r in rows.items() for i, side in enumerate(("long", "short"))] + per_asset
                 ).to_csv(tmp_path / "calibration" / "margin_summary.csv", index=False)
    record = {"config": {"calibration": {"policy": {"target_breach_rate": 0.01}}}}
    (tmp_path / "run.json").write_text(json.dumps(record))
    print_run_summary(tmp_path)
    text = capsys.readouterr().out.split("Calibrated initial margin")[1]
    lines = [line.split() for line in text.splitlines() if line.split() and line.split()[0] in rows]
    assert [(line[0], line[-1]) for line in lines] == [("at_target", "True"), ("costly", "True"),
                                                       ("one_side_over", "False")]
    assert lines[0][-4:-1] == ["1", "of", "3"]  # a pooled rate within the target beside one asset far over it


def test_a_runs_window_train_start_bounds_every_stage_and_eval_end_is_refused(tmp_path):
    """`window.train_start` reached only the train stage: the backtest, calibration and the exported refit read
    every day, and the manifest said train_start (session 31's red teams). The run's data starts there now;
    `window.eval_end`, which meant nothing to a run, is refused at load."""
    from volmargin.config import RunConfig, from_dict
    from volmargin.errors import ConfigError
    from volmargin.pipeline import Run, stage_data

    cfg = from_dict(RunConfig, {"window": {"train_start": "2021-07-01", "train_end": "2022-06-30",
                                           "min_train_days": 120}})
    run = Run(cfg, tmp_path, progress=False)
    stage_data(run)
    start = pd.Timestamp("2021-07-01", tz="UTC")
    assert all(d.index[0] >= start for d in run.panel.values()) and all(b.index[0] < start for b in run.bars.values())
    # the bars stay whole: their fingerprint tells the market (a bundle of it is read without --data)
    from volmargin.data import synthetic_market
    from volmargin.tracking import data_fingerprint

    assert run.record["data"]["fingerprint"] == data_fingerprint(synthetic_market())["sha256"]
    late = from_dict(RunConfig, {"window": {"train_start": "2030-01-01", "train_end": "2031-06-30"}})
    with pytest.raises(ConfigError, match=r"window.train_start 2030-01-01: syn_a, syn_b, syn_c has no day after it"):
        stage_data(Run(late, tmp_path, progress=False))
    assert all(d.attrs.get("bar_seconds") == 3600 for d in run.panel.values())
    with pytest.raises(ConfigError, match="window.eval_end: `volmargin run` reads its data to the end"):
        from_dict(RunConfig, {"window": {"eval_end": "2023-06-30"}})
