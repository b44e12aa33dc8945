"""The model-comparison report: required files, leaderboard content, and a real headless-browser render."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from volmargin.data import synthetic_market
from volmargin.errors import ConfigError
from volmargin.evaluation import stats
from volmargin.evaluation.backtest import BacktestConfig, daily_panel, run_backtest
from volmargin.evaluation.scoring import POOLED, diebold_mariano_table, score_forecasts
from volmargin.evaluation.walkforward import WalkForwardSplit
from volmargin.reports import build_report, write_report
from volmargin.reports.html import FOLD_ROWS, folded, table
from volmargin.reports.report import load_run, rank_models

SECTION_IDS = ["summary", "data", "leaderboard", "var-backtest", "volatility", "exceedances", "stress", "calibration",
               "portfolio", "provenance"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def fake_calibration(forecasts: pd.DataFrame, folder: Path, events: dict[str, str]) -> None:
    """Hand-made calibration outputs with the pipeline's schemas: initial margin = 1.5 x VaR99."""
    f = forecasts.dropna(subset=["realized_ret"])
    sides = []
    for side in ("long", "short"):
        loss = -f["realized_ret"] if side == "long" else f["realized_ret"]
        margin = 1.5 * f[f"var99_{side}"]
        sides.append(pd.DataFrame({
            "model": f["model"], "asset": f["asset"], "side": side, "origin": f["origin"], "date": f["date"],
            "initial_margin": margin, "maintenance_margin": 0.75 * margin, "liquidation_threshold": 0.5 * margin,
            "loss": loss, "breach": loss > margin, "shortfall": (loss - margin).clip(lower=0), "calibrated": True}))
    paths = pd.concat(sides, ignore_index=True)
    rows = [_summary_row(g, m, asset, side) for (m, asset, side), g in paths.groupby(["model", "asset", "side"])]
    rows += [_summary_row(g, model, POOLED, side) for (model, side), g in paths.groupby(["model", "side"])]
    stress = []
    for event, eve in events.items():
        day = paths[paths["date"] == pd.Timestamp(eve, tz="UTC") + pd.Timedelta(days=1)]
        stress.append(day.assign(event=event, eve=eve, margin=day["initial_margin"], move=day["loss"])[
            ["event", "asset", "model", "side", "eve", "margin", "move", "breach", "shortfall"]])
    (folder / "calibration").mkdir(parents=True, exist_ok=True)
    paths.to_parquet(folder / "calibration" / "margin_paths.parquet", index=False)
    pd.DataFrame(rows).to_csv(folder / "calibration" / "margin_summary.csv", index=False)
    pd.concat(stress).to_csv(folder / "calibration" / "stress.csv", index=False)


def _summary_row(group: pd.DataFrame, model: str, asset: str, side: str) -> dict:
    margin = group["initial_margin"]
    test = stats.var_backtest(group["loss"].to_numpy(), margin.to_numpy(), 0.99)
    return {"model": model, "asset": asset, "side": side, "days": len(group), "breaches": test["exceptions"],
            "breach_rate": test["rate"], "kupiec_p": test["kupiec_p"], "basel_zone": test["basel_zone"],
            "basel_green_windows": test["basel_green_windows"], "basel_windows": test["basel_windows"],
            "avg_margin": margin.mean(), "median_margin": margin.median(), "mean_shortfall": group["shortfall"].mean(),
            "max_shortfall": group["shortfall"].max(), "peak_to_trough": margin.max() / margin.min() - 1,
            "max_increase_1d": margin.pct_change().max(), "max_increase_5d": margin.pct_change(5).max()}


@pytest.fixture(scope="module")
def forecasts() -> pd.DataFrame:
    panel = daily_panel(synthetic_market(n_assets=2, days=500))
    config = BacktestConfig(models=("ewma", "har", "hist"), split=WalkForwardSplit(min_train=200, refit_every=50))
    frame, _ = run_backtest(panel, config, progress=False)
    learned = frame[frame["model"] == "har"].assign(model="gbm", variance=lambda d: d["variance"] * 0.97)
    return pd.concat([frame, learned], ignore_index=True)  # a stand-in "learned" model


def write_run(folder: Path, forecasts: pd.DataFrame, meta: dict, calibration: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    forecasts.to_parquet(folder / "forecasts.parquet", index=False)
    score_forecasts(forecasts).to_csv(folder / "scores.csv", index=False)
    diebold_mariano_table(forecasts, "hist").to_csv(folder / "dm.csv", index=False)  # not the best baseline
    (folder / "run.json").write_text(json.dumps(meta))
    if calibration:
        fake_calibration(forecasts[forecasts["model"].isin(["har", "gbm"])], folder,
                         {"crash": "2022-03-10", "squeeze": "2022-04-20"})
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, forecasts) -> Path:
    meta = {"config": {"models": ["ewma", "har", "hist", "gbm"], "refit_every": 50},
            "data": {"source": "synthetic", "synthetic": True, "fingerprint": "f" * 64,
                     "assets": {"syn_a": {"first": "2021-01-01", "last": "2022-05-15", "bars": 12000, "gaps": 0,
                                          "missing_bars": 0, "incomplete_days": 0}}},
            "mlflow": {"parent_run_id": "parent123", "stages": {"backtest": "run456"}},
            "bundle": {"name": "volmargin-champion", "version": "3", "path": "models/bundle"},
            "timings": {"backtest": 1.5, "calibrate": 0.4}, "champion": "gbm"}
    return write_run(tmp_path_factory.mktemp("run"), forecasts, meta)


@pytest.mark.parametrize("name", ["forecasts.parquet", "scores.csv", "run.json"])
def test_missing_required_file_names_it_and_the_command(run_dir, tmp_path, name):
    shutil.copytree(run_dir, tmp_path / "run")
    (tmp_path / "run" / name).unlink()
    with pytest.raises(ConfigError, match=rf"{re.escape(name)}.*volmargin backtest"):
        build_report(tmp_path / "run")


def test_a_scores_table_of_other_columns_is_named(run_dir, tmp_path):
    shutil.copytree(run_dir, tmp_path / "run")
    (tmp_path / "run" / "scores.csv").write_text("garbage,,,\n")  # was an internal KeyError: 'asset'
    with pytest.raises(ConfigError, match=r"scores.csv: not a volmargin scores table \(no column asset, model"):
        build_report(tmp_path / "run")


def test_leaderboard_orders_by_qlike_with_dm_against_best_baseline_and_mcs(run_dir):
    ranking = rank_models(load_run(run_dir))
    table = ranking.table
    assert list(table["qlike"]) == sorted(table["qlike"])
    baselines = table[table["kind"] == "baseline"]
    assert ranking.best_baseline == baselines["model"].iloc[0] != "hist"  # dm.csv's reference was stale
    assert ranking.champion == "gbm" and ranking.best_learned == "gbm"
    reference = table.set_index("model").loc[ranking.best_baseline]
    assert np.isnan(reference["dm_p"]) and reference["ratio"] == 1.0
    others = table[table["model"] != ranking.best_baseline]
    assert others["dm_p"].between(0, 1).all()
    assert table["mcs_p"].between(0, 1).all() and table["in_mcs"].any()
    assert bool(table["in_mcs"].iloc[0])  # the best model is always in the confidence set
    section = build_report(run_dir).split('id="leaderboard"')[1].split("</section>")[0]
    assert "MCS p" in section and "DM p" in section
    positions = [section.index(f"<td>{m}</td>") for m in table["model"]]
    assert positions == sorted(positions)


def test_report_is_self_contained_and_tolerates_missing_metadata(run_dir, forecasts, tmp_path):
    html = build_report(run_dir)
    assert all(f'<section id="{sid}">' in html for sid in SECTION_IDS)
    assert "Synthetic data" in html and "parent123" in html and "volmargin-champion 3" in html
    assert html.count('<img src="data:image/png;base64,') == 3
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from outside
    bare = write_run(tmp_path / "bare", forecasts, {}, calibration=False)
    out = write_report(bare, tmp_path / "out" / "report.html")
    text = out.read_text()
    assert "not recorded" in text and text.count("Not run") == 3  # stress, calibration, portfolio
    assert not list(out.parent.glob(".*.tmp"))


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary (chromium, chromium-browser or google-chrome) on PATH")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    out = write_report(run_dir, tmp_path / "report.html")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", out.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    status = re.search(r'<div id="report-status"([^>]*)>', dom)
    assert status, "the self-check did not run (no report-status element in the dumped DOM)"
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', status.group(1)))
    images = out.read_text().count("<img ")
    assert attrs["data-errors"] == "0"
    assert attrs["data-images-ok"] == f"{images}/{images}" and images > 0
    assert attrs["data-sections"].split() == SECTION_IDS
    shot = tmp_path / "page.png"
    subprocess.run([CHROMIUM, *flags, "--window-size=1300,2000", f"--screenshot={shot}", out.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000


def test_long_per_asset_tables_start_folded_and_short_ones_do_not():
    short = table(pd.DataFrame({"asset": ["a", "b"]}))
    assert folded("Per asset", short, 2) == short
    rows = FOLD_ROWS + 1
    long = table(pd.DataFrame({"asset": [f"a{i}" for i in range(rows)]}))
    html = folded("Per asset", long, rows)
    assert html.startswith("<details><summary>Per asset") and f"({rows:,} rows" in html and long in html


def test_data_section_totals_the_recorded_assets(run_dir):
    section = build_report(run_dir).split('id="data"')[1].split("</section>")[0]
    assert "In all: 12,000 bars, 0 gaps, 0 incomplete days." in section
    assert "<details>" not in section  # one asset: the table stays open


def test_summary_answers_the_committee_from_the_tables_below(run_dir):
    """Summary: the champion against the best baseline (the leaderboard's ratio and DM p), each side's breach rate
    and mean margin against the cheapest baseline within the target (the calibration table's rows), caveats."""
    run = load_run(run_dir)
    ranking = rank_models(run)
    html = build_report(run_dir)
    section = html.split('id="summary"')[1].split("</section>")[0]
    row = ranking.table.set_index("model").loc[ranking.champion]
    assert f"with {row['ratio']:.3f}× the QLIKE of the best baseline <b>{ranking.best_baseline}</b>" in section
    pooled = run.summary[run.summary["asset"] == POOLED].set_index(["model", "side"])
    for side in ("long", "short"):
        own = pooled.loc[(ranking.champion, side)]
        assert f"{side.capitalize()}: {ranking.champion} breaches {100 * own['breach_rate']:.2f}% of days" in section
        within = pooled.xs(side, level="side")
        within = within[within.index.isin(["ewma", "har", "hist"]) & (within["breach_rate"] <= 0.01)]
        if len(within):
            cheapest = within["avg_margin"].idxmin()
            assert f"the cheapest baseline within the target, <b>{cheapest}</b>" in section
    assert "<h3>Caveats</h3>" in section and "The data are synthetic" in section  # the run's data kind


def test_exceedance_panels_show_the_champions_worst_assets_beside_the_longest():
    """(session 25: a 129-asset report showed the four assets with most forecast days, alphabetical among ties)"""
    from types import SimpleNamespace

    from volmargin.reports.report import _exceedance_assets

    days = {"a": 400, "b": 400, "c": 300, "d": 300, "e": 200, "f": 100}
    forecasts = pd.DataFrame([(a, 0.1) for a, n in days.items() for _ in range(n)], columns=["asset", "realized_rv"])
    breaches = {"a": 1, "b": 2, "c": 0, "d": 9, "e": 8, "f": 1}  # per side, so the rate is 2 x this / n
    scores = pd.DataFrame([{"asset": a, "model": "gbm", "n": days[a], "var99_long_exceptions": k,
                            "var99_short_exceptions": k} for a, k in breaches.items()]
                          + [{"asset": POOLED, "model": "gbm", "n": 1700, "var99_long_exceptions": 21,
                              "var99_short_exceptions": 21}])
    run = SimpleNamespace(forecasts=forecasts, scores=scores)
    shown, how = _exceedance_assets(run, "gbm", 4)
    assert shown == ["a", "b", "e", "d"]  # e: 16 of 200, d: 18 of 300
    assert "where gbm's VaR was exceeded most often" in how
    assert _exceedance_assets(run, "other", 4)[0] == ["a", "b", "c", "d"]  # no scores of its own: the longest
    calm = SimpleNamespace(forecasts=forecasts, scores=scores.assign(var99_long_exceptions=0, var99_short_exceptions=0))
    assert _exceedance_assets(calm, "gbm", 4) == (["a", "b", "c", "d"], "most forecast days")  # none exceeded


# ------------------------------------------------------------------ session 28's mutation audit
# Each test below fails on a change the suite let through.


# ----------------------------------------------------------------------------- report
def test_the_report_reads_the_runs_own_breach_target():
    from volmargin.reports.report import target_breach_rate

    assert target_breach_rate({"config": {"calibration": {"policy": {"target_breach_rate": 0.005}}}}) == 0.005
    assert target_breach_rate({}) == 0.01


def test_exceedance_panels_count_long_losses_and_short_gains():
    from volmargin.reports import figures

    frame = pd.DataFrame({"date": pd.date_range("2022-01-01", periods=4, tz="UTC"), "model": "m",
                          "realized_ret": [-0.05, 0.05, 0.06, 0.0], "var99_long": 0.04, "var99_short": 0.055})
    title = figures.exceedances({"a": frame}, ["m"]).axes[0].get_title()
    assert "1 long / 1 short exceedances in 4 days" in title


@pytest.fixture(scope="module")
def controlled_run(tmp_path_factory):
    """test_report's run folder with a hand-made pooled margin summary: the champion gbm over the target long,
    a different cheapest in-target baseline per side, and gbm cheapest of all on the short side."""
    from volmargin.data import synthetic_market
    from volmargin.evaluation.backtest import BacktestConfig, daily_panel, run_backtest
    from volmargin.evaluation.walkforward import WalkForwardSplit

    panel = daily_panel(synthetic_market(n_assets=2, days=500))
    config = BacktestConfig(models=("ewma", "har", "hist"), split=WalkForwardSplit(min_train=200, refit_every=50))
    frame, _ = run_backtest(panel, config, progress=False)
    forecasts = pd.concat([frame, frame[frame["model"] == "har"].assign(model="gbm")], ignore_index=True)
    folder = write_run(tmp_path_factory.mktemp("controlled"), forecasts, {"champion": "gbm"})
    rows = {("gbm", "long"): (0.020, 0.10), ("gbm", "short"): (0.008, 0.05),
            ("har", "long"): (0.009, 0.12), ("har", "short"): (0.012, 0.08),
            ("ewma", "long"): (0.010, 0.15), ("ewma", "short"): (0.007, 0.11),
            ("hist", "long"): (0.011, 0.05), ("hist", "short"): (0.004, 0.13)}
    summary = pd.DataFrame([{"model": m, "asset": POOLED, "side": s, "days": 1000, "breaches": round(1000 * b),
                             "breach_rate": b, "kupiec_p": 0.5, "basel_zone": "green", "avg_margin": a}
                            for (m, s), (b, a) in rows.items()])
    summary.to_csv(folder / "calibration" / "margin_summary.csv", index=False)
    return folder


def test_summary_compares_each_side_with_that_sides_cheapest_baseline_within_target(controlled_run):
    from volmargin.reports import build_report

    html = build_report(controlled_run)
    summary = html.split('id="summary"')[1].split("</section>")[0]
    items = {li.split(":")[0]: li for li in summary.split("<li>")[1:]}
    assert "gbm breaches 2.00% of days" in items["Long"] and "within the target, <b>har</b>" in items["Long"]
    assert "gbm breaches 0.80% of days" in items["Short"] and "within the target, <b>ewma</b>" in items["Short"]
    assert "The champion's long margin breaches more often than the target." in summary
    calibration = html.split('id="calibration"')[1].split("</section>")[0]
    assert "<b>1 of 8 rows breach less than half the 1% target</b>" in calibration


def test_var_tables_show_each_sides_own_columns(controlled_run):
    from volmargin.reports import build_report
    from volmargin.reports.html import fmt

    scores = pd.read_csv(controlled_run / "scores.csv")
    pooled = scores[scores["asset"] == POOLED].set_index("model")
    section = build_report(controlled_run).split('id="var-backtest"')[1].split("</section>")[0]
    long, short = section.split("<h3>Short tail")[0], section.split("<h3>Short tail")[1].split("<h3>Basel zone")[0]
    for model, row in pooled.iterrows():
        for column in ("var99_{}_rate", "var99_{}_exceptions"):
            lv, sv = row[column.format("long")], row[column.format("short")]
            if lv != sv:
                kind = "pct" if "rate" in column else "int"
                assert f">{fmt(lv, kind)}</td>" in long and f">{fmt(sv, kind)}</td>" in short, (model, column)
