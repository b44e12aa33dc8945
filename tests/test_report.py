"""The model-comparison report: required files, leaderboard content, and a real headless-browser render."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from volmargin.data import synthetic_market
from volmargin.errors import ConfigError
from volmargin.evaluation import stats
from volmargin.evaluation.backtest import BacktestConfig, daily_panel, run_backtest
from volmargin.evaluation.scoring import POOLED, diebold_mariano_table, pooled_losses, score_forecasts
from volmargin.evaluation.walkforward import WalkForwardSplit
from volmargin.reports import build_report, figures, write_report
from volmargin.reports.html import FOLD_ROWS, fmt, folded, table
from volmargin.reports.report import Ranking, load_run, rank_models

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
        assert f"{side.capitalize()}: {ranking.champion} breaches {100 * own['breach_rate']:.3f}% of days" in section
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
    assert "gbm breaches 2.000% of days" in items["Long"] and "within the target, <b>har</b>" in items["Long"]
    assert "gbm breaches 0.800% of days" in items["Short"] and "within the target, <b>ewma</b>" in items["Short"]
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


# session 29's mutation audit: the numbers a reader acts on (each test fails on a change the suite let through)
# ------------------------------------------------------------------ leaderboard: ratio, common QLIKE, champion
def test_ratio_is_each_models_common_qlike_over_the_best_baselines(run_dir):
    run = load_run(run_dir)
    ranking = rank_models(run)
    daily = pooled_losses(run.forecasts)
    t = ranking.table.set_index("model")
    for model in t.index:
        assert t.loc[model, "qlike_common"] == pytest.approx(daily[model].mean())
        assert t.loc[model, "ratio"] == pytest.approx(daily[model].mean() / daily[ranking.best_baseline].mean())
    worse = t[t["qlike_common"] > t.loc[ranking.best_baseline, "qlike_common"]]
    assert len(worse) and (worse["ratio"] > 1).all()  # a model worse than the best baseline reads > 1


def test_without_a_recorded_champion_the_best_qlike_is_named_and_flagged(forecasts, tmp_path):
    bare = write_run(tmp_path / "bare", forecasts, {}, calibration=False)
    scores = pd.read_csv(bare / "scores.csv")
    learned = (scores["asset"] == POOLED) & (scores["model"] == "gbm")
    scores.loc[learned, "qlike"] = -9.0  # the learned model ranks first
    scores.to_csv(bare / "scores.csv", index=False)
    ranking = rank_models(load_run(bare))
    assert ranking.champion == "gbm" != ranking.best_baseline  # the best QLIKE, learned or not
    t = ranking.table.set_index("model")
    assert t.loc[ranking.champion, "role"].startswith("champion")
    assert "DM reference" in t.loc[ranking.best_baseline, "role"]
    html = build_report(bare)
    assert f"champion <b>{ranking.champion}</b> (not recorded: best QLIKE)" in html


def test_recorded_champion_is_not_flagged_as_unrecorded(run_dir):
    assert "(not recorded: best QLIKE)" not in build_report(run_dir).split("<nav>")[0]


def test_forecast_finding_states_the_champions_mcs_membership():
    from volmargin.reports.report import _forecast_finding

    def finding(in_mcs):
        table = pd.DataFrame({"model": ["gbm", "har"], "ratio": [0.95, 1.0], "dm_p": [0.02, np.nan],
                              "in_mcs": [in_mcs, True]})
        return _forecast_finding(Ranking(table, "har", "gbm", "gbm", 300))

    assert "; in the 90% model confidence set" in finding(True)
    assert "; not in the 90% model confidence set" in finding(False)
    assert "0.950× the QLIKE of the best baseline <b>har</b>" in finding(True)


# ------------------------------------------------------------------ VaR tables and the Basel zone grid, per side
def test_var_tables_and_zone_grid_keep_long_and_short_apart():
    from volmargin.reports.report import var_section

    pooled = pd.DataFrame({"model": ["m"], "n": [500],
                           "kupiec_p_long": [0.0123], "kupiec_p_short": [0.456],
                           "basel_zone_long": ["red"], "basel_zone_short": ["green"],
                           "christoffersen_p_long": [0.0234], "christoffersen_p_short": [0.789]})
    scores = pd.DataFrame({"asset": ["a", POOLED], "model": ["m", "m"],
                           "basel_zone_long": ["red", "red"], "basel_zone_short": ["green", "green"]})
    html = var_section(SimpleNamespace(scores=scores), SimpleNamespace(table=pooled))
    long, rest = html.split("<h3>Short tail")
    short, grid = rest.split("<h3>Basel zone per asset")
    assert "0.0123" in long and "0.456" in short and "0.0234" in long and "0.789" in short
    assert 'class="zone-red"' in long and 'class="zone-green"' in short
    assert 'zone-red" title="red">L<' in grid and 'zone-green" title="green">S<' in grid


# ------------------------------------------------------------------ annualised volatility
def test_annualised_volatility_is_sqrt_365_variance_per_day():
    dates = pd.date_range("2022-01-03", periods=14, tz="UTC")  # two whole weeks, Monday to Sunday
    var = np.r_[np.full(7, 0.0004), np.full(7, 0.0016)]
    frame = pd.DataFrame({"date": dates, "variance": 5 * var, "horizon": 5})  # a 5-day variance
    daily = figures.annualised(frame, "variance", weekly=False)
    assert daily.to_numpy() == pytest.approx(np.sqrt(365 * var))
    weekly = figures.annualised(frame, "variance", weekly=True)
    assert weekly.to_numpy() == pytest.approx(np.sqrt(365 * np.array([0.0004, 0.0016])))


@pytest.mark.parametrize("days, weekly", [(300, False), (402, True)])
def test_volatility_panel_uses_weekly_means_only_for_long_spans(days, weekly, monkeypatch):
    from volmargin.reports import report

    seen = []
    monkeypatch.setattr(report.figures, "volatility", lambda groups, models, w: seen.append(w) or figures.Figure())
    f = pd.DataFrame({"date": pd.date_range("2021-01-01", periods=days, tz="UTC"), "asset": "a", "model": "ewma",
                      "variance": 1e-3, "realized_rv": 1e-3, "horizon": 1})
    ranking = SimpleNamespace(best_baseline="ewma", best_learned=None, champion="ewma",
                              table=pd.DataFrame({"model": ["ewma"]}))
    section = report.volatility_section(SimpleNamespace(forecasts=f), ranking)
    assert seen == [weekly] and ("weekly means" in section) == weekly


# ------------------------------------------------------------------ stress panel and stress findings
def _stress_run(out_of_sample):
    eve = pd.Timestamp("2022-03-09", tz="UTC")
    moves = {("a", "long"): 0.02, ("a", "short"): -0.02, ("b", "long"): -0.10, ("b", "short"): 0.10,
             ("c", "long"): 0.09, ("c", "short"): -0.09, ("d", "long"): 0.30, ("d", "short"): -0.30}
    stress = pd.DataFrame([{"event": "crash", "asset": a, "model": "m", "side": s, "eve": eve, "margin": 0.08,
                            "move": mv, "breach": mv > 0.08, "shortfall": max(mv - 0.08, 0.0),
                            "out_of_sample": out_of_sample.get(a, True)} for (a, s), mv in moves.items()])
    calm = stress.assign(event="calm", move=0.01, breach=False, shortfall=0.0, out_of_sample=True)
    dates = pd.date_range(eve - pd.Timedelta(days=5), periods=10, tz="UTC")
    paths = pd.DataFrame([{"model": "m", "asset": a, "side": s, "date": d, "initial_margin": 0.08, "loss": 0.0,
                           "breach": False} for a in "abcd" for s in ("long", "short") for d in dates])
    return SimpleNamespace(stress=pd.concat([stress, calm], ignore_index=True), paths=paths, summary=None,
                           meta={})


def test_stress_panels_show_the_largest_moves_on_the_side_they_hurt():
    from volmargin.reports.report import _event_panels

    run = _stress_run({})
    titles = [t for t, _, _ in _event_panels(run.paths, run.stress[run.stress["event"] == "crash"])]
    assert titles == ["crash · d · long", "crash · b · short", "crash · c · long"]


def test_stress_findings_name_the_worst_event_and_whether_it_was_in_sample():
    from volmargin.reports.report import _caveats, _stress_finding, stress_section

    run = _stress_run({"b": False})  # one asset of the crash inside the calibration window
    text = _stress_finding(run, "m")
    assert "worst listed event is <b>crash</b>" in text and "inside the calibration window" in text
    assert "3 of 8 asset-sides breached" in text and "22.00% of notional" in text
    ranking = SimpleNamespace(champion="m", table=pd.DataFrame({"model": ["m"], "n": [1]}))
    assert any("(crash) were seen by the calibration" in c for c in _caveats(run, ranking, 0.01))
    section = stress_section(run, ranking=SimpleNamespace(champion="m", best_baseline="m"))
    rows = section.split("<h3>Stress events</h3>")[1].split("</table>")[0].split("<tr>")
    crash = [r for r in rows if r.startswith("<td>crash</td>")]
    assert len(crash) == 2 and all("✗" in r for r in crash)  # out of sample only when every asset is
    long = next(r for r in crash if "<td>long</td>" in r)
    assert ">2</td>" in long and ">22.00%</td>" in long  # breaches (c and d: a count) and the max shortfall (d)
    clean = _stress_run({})
    assert "(after the calibration window)" in _stress_finding(clean, "m")
    assert not any("seen by the calibration" in c for c in _caveats(clean, ranking, 0.01))


# ------------------------------------------------------------------ margin findings and caveats
def _margin_run(rows):
    summary = pd.DataFrame([{"model": m, "asset": POOLED, "side": s, "breach_rate": b, "kupiec_p": 0.5,
                             "basel_zone": "green", "avg_margin": a} for (m, s), (b, a) in rows.items()])
    table = pd.DataFrame({"model": list(dict.fromkeys(m for m, _ in rows)), "n": 1})
    return SimpleNamespace(summary=summary, stress=None, meta={}), SimpleNamespace(champion="gbm", table=table)


def test_margin_finding_says_less_or_more_than_the_cheapest_baseline():
    from volmargin.reports.report import _margin_findings

    run, ranking = _margin_run({("gbm", "long"): (0.009, 0.08), ("gbm", "short"): (0.009, 0.15),
                                ("har", "long"): (0.009, 0.10), ("har", "short"): (0.010, 0.12)})
    long, short = _margin_findings(run, ranking, 0.01)
    assert "20.0% less than the cheapest baseline within the target, <b>har</b>" in long
    assert "25.0% more than the cheapest baseline within the target, <b>har</b>" in short  # a baseline at the target


def test_caveats_flag_over_cover_only_under_half_the_target():
    from volmargin.reports.report import _caveats

    run, ranking = _margin_run({("gbm", "long"): (0.006, 0.1), ("gbm", "short"): (0.004, 0.1)})
    caveats = " ".join(_caveats(run, ranking, 0.01))
    assert "short margin over-covers" in caveats and "long margin over-covers" not in caveats


# ------------------------------------------------------------------ number formats
def test_number_formats_of_rates_p_values_and_checks():
    assert fmt(0.0123, "pct") == "1.23%"
    assert fmt(0.0, "p") == "&lt;0.001" and fmt(0.0004, "p") == "&lt;0.001" and fmt(0.0123, "p") == "0.0123"
    assert fmt(True, "check") == "✓" and fmt(False, "check") == "✗"


# ------------------------------------------------------------------ option, simulation and portfolio reports
def test_option_report_per_class_section_shows_the_validation_period(tmp_path):
    from volmargin.reports.options import write_options_report

    summary = pd.DataFrame([{"portfolio_class": c, "method": "auto", "period": p, "breach_rate": r}
                            for c in (POOLED, "calls") for p, r in (("calibration", 0.0411), ("validation", 0.0622))])
    grids = pd.DataFrame({"method": "auto", "day": ["2022-01-01"], "range_down": 0.1, "range_up": 0.1,
                          "vol_up": 0.2, "vol_down": 0.2})
    record = {"books": 10, "snapshots": 5, "calibrate_until": "2022-01-01", "target": 0.005}
    html = write_options_report(summary, grids, record, tmp_path / "r.html").read_text()
    classes = html.split('id="classes"')[1].split("</section>")[0]
    assert "6.22%" in classes and "4.11%" not in classes
    assert "to a 0.5% breach target per class" in html


def test_simulation_section_shows_the_validation_period(tmp_path):
    from volmargin.reports.simulation import simulation_sections

    folder = tmp_path / "simulation"
    folder.mkdir()
    pd.DataFrame([{"asset": "a", "policy": "p", "period": p, "kind": k, "bad_debt_p99": v}
                  for p, v in (("calibration", 0.0311), ("validation", 0.0522)) for k in ("all", "real")]
                 ).to_csv(folder / "summary.csv", index=False)
    pd.DataFrame([{"event": "e", "asset": "a", "policy": "p", "initial_long": 0.1, "initial_short": 0.3}]
                 ).to_csv(folder / "stress.csv", index=False)
    (_, _, body), = simulation_sections(tmp_path)
    assert "5.22%" in body and "3.11%" not in body
    assert "20.00%" in body  # the eve margin: the mean of the long and short initial margins


def test_portfolio_comparison_shows_the_pooled_rows(tmp_path):
    from volmargin.reports.portfolio import portfolio_section

    pd.DataFrame([{"portfolio_class": POOLED, "model": "gbm", "breach_rate": 0.01}]).to_csv(tmp_path / "summary.csv",
                                                                                           index=False)
    pd.DataFrame([{"portfolio_class": c, "model": "gbm", "reference": "ewma", "margin_ratio": r}
                  for c, r in ((POOLED, 0.811), ("calls", 0.977))]).to_csv(tmp_path / "compare.csv", index=False)
    html = portfolio_section(tmp_path)
    assert "0.811" in html and "0.977" not in html


# ------------------------------------------------------------------ model confidence set
def test_mcs_excludes_a_clearly_worse_model_and_twins_share_the_result():
    from volmargin.reports.report import model_confidence_set

    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 0.1, 200)
    daily = pd.DataFrame({"a": a, "twin": a, "worse": a + 0.5, "close": a + rng.normal(0, 0.1, 200)})
    mcs = model_confidence_set(daily).set_index("model")
    assert bool(mcs.loc["a", "in_mcs"]) and bool(mcs.loc["twin", "in_mcs"])
    assert not bool(mcs.loc["worse", "in_mcs"]) and mcs.loc["worse", "mcs_p"] < 0.1
    assert mcs.loc["twin", "mcs_p"] == mcs.loc["a", "mcs_p"]
    short = model_confidence_set(daily.head(19)).set_index("model")  # under 2 blocks of 10: no result
    assert short["mcs_p"].isna().all()


def test_a_dm_csv_missing_a_model_or_of_another_loss_is_recomputed(run_dir, tmp_path):
    import shutil

    from volmargin.evaluation.scoring import diebold_mariano_table

    folder = tmp_path / "run"
    shutil.copytree(run_dir, folder)
    run = load_run(run_dir)
    best = rank_models(run).best_baseline
    fresh = diebold_mariano_table(run.forecasts, best)
    expected = fresh.set_index("model")["dm_p"]
    for stale in (fresh[fresh["model"] != "gbm"], diebold_mariano_table(run.forecasts, best, loss="mse_log")):
        stale.to_csv(folder / "dm.csv", index=False)
        got = rank_models(load_run(folder)).table.set_index("model")["dm_p"]
        assert got[expected.index].to_numpy() == pytest.approx(expected.to_numpy())


def test_calibration_zone_counts_are_green_yellow_red_per_side():
    from volmargin.reports.report import pooled_margins

    rows = [("a", "long", "green"), ("b", "long", "green"), ("c", "long", "red"), ("a", "short", "yellow"),
            ("b", "short", "red"), ("c", "short", "red"), (POOLED, "long", "red"), (POOLED, "short", "red")]
    summary = pd.DataFrame([{"model": "m", "asset": a, "side": s, "basel_zone": z} for a, s, z in rows])
    out = pooled_margins(SimpleNamespace(summary=summary), SimpleNamespace(table=pd.DataFrame({"model": ["m"]})))
    assert out.set_index("side")["zone_counts"].to_dict() == {"long": "2 / 0 / 1", "short": "0 / 1 / 2"}


def test_an_out_of_range_breach_target_falls_back_to_one_percent():
    from volmargin.reports.report import target_breach_rate

    for bad in (1, 5, 0, -0.01):  # e.g. a target written in percent
        assert target_breach_rate({"config": {"calibration": {"policy": {"target_breach_rate": bad}}}}) == 0.01


def test_a_champion_baseline_other_than_the_best_is_compared_with_it():
    from volmargin.reports.report import _forecast_finding

    table = pd.DataFrame({"model": ["har", "ewma"], "ratio": [1.0, 1.042], "dm_p": [np.nan, 0.3],
                          "in_mcs": [True, True]})
    text = _forecast_finding(Ranking(table, "har", None, "ewma", 300))
    assert "1.042× the QLIKE of the best baseline <b>har</b>" in text


def test_a_breach_rate_just_over_its_target_does_not_print_as_the_target():
    """Session 30's red team: 22 breaches in 2,190 days (1.0046%) read "1.00% (target 1.00%)" beside a caveat
    saying the target was missed."""
    from volmargin.reports.html import fmt

    assert fmt(22 / 2190, "rate") == "1.005%" and fmt(0.01, "rate") == "1.000%" and fmt(-0.0, "rate") == "0.000%"


def test_the_exceedance_plot_names_the_h_day_return_it_plots():
    """Session 30's red team: at a horizon of 5 days the axis read 'daily log return' over 5-day returns."""
    from volmargin.reports import figures

    dates = pd.date_range("2022-01-01", periods=40, tz="UTC")
    rows = pd.DataFrame({"model": "har", "date": dates, "horizon": 5, "realized_ret": np.linspace(-0.1, 0.1, 40),
                         "var99_long": 0.08, "var99_short": 0.08})
    for horizon, label in ((5, "5-day log return"), (1, "daily log return")):
        fig = figures.exceedances({"syn_a": rows.assign(horizon=horizon)}, ["har"])
        assert fig.axes[0].get_ylabel() == label
