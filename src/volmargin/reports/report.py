"""The model-comparison report of one run folder, as a single self-contained HTML file.

Required in the folder: forecasts.parquet, scores.csv, run.json; optional: dm.csv and the margin
calibration outputs under calibration/ and the portfolio margin outputs under portfolio/. Sections
(stable ids): summary, data, leaderboard, var-backtest, volatility, exceedances, stress, calibration,
portfolio, provenance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
from arch.bootstrap import MCS

from volmargin.data.events import STRESS_EVENTS
from volmargin.errors import ConfigError
from volmargin.evaluation.scoring import POOLED, diebold_mariano_table, pooled_losses
from volmargin.io import read_forecasts, write_atomic
from volmargin.models import BASELINES
from volmargin.reports import figures
from volmargin.reports.html import NOT_RECORDED, fmt, folded, img, key_values, note, page, table
from volmargin.reports.portfolio import portfolio_section
from volmargin.reports.simulation import simulation_sections

REQUIRED = {"forecasts.parquet": "`volmargin backtest`", "scores.csv": "`volmargin backtest` (or `volmargin evaluate`)",
            "run.json": "`volmargin backtest`"}
SCORE_COLUMNS = ("asset", "model", "n", "qlike")  # what the leaderboard reads first
OPTIONAL = {"dm": "dm.csv", "summary": "calibration/margin_summary.csv",
            "paths": "calibration/margin_paths.parquet", "stress": "calibration/stress.csv"}
CALIBRATION_HINT = "written by the margin calibration (`volmargin calibrate`)"
MCS_SIZE, MCS_REPS, MCS_BLOCK, MCS_SEED = 0.1, 1000, 10, 12345
MAX_VOL_ASSETS, MAX_EXCEEDANCE_ASSETS, MAX_EVENTS, ASSETS_PER_EVENT, EVENT_DAYS = 12, 4, 4, 3, 30
WEEKLY_AFTER_DAYS = 400  # longer plotted spans show weekly means
SIDES = ("long", "short")


@dataclass(frozen=True)
class Run:
    folder: Path
    forecasts: pd.DataFrame
    scores: pd.DataFrame
    meta: dict
    dm: pd.DataFrame | None = None
    summary: pd.DataFrame | None = None
    paths: pd.DataFrame | None = None
    stress: pd.DataFrame | None = None


@dataclass(frozen=True)
class Ranking:
    table: pd.DataFrame  # pooled scores, best QLIKE first, with DM and MCS columns
    best_baseline: str
    best_learned: str | None
    champion: str
    common_dates: int  # dates of the common sample behind DM, MCS and QLIKE (common)


def _read(path: Path) -> pd.DataFrame:
    from volmargin.io import read_table  # a truncated or damaged table: one line naming it

    return read_table(path)


def load_run(run_dir: Path) -> Run:
    run_dir = Path(run_dir)
    for name, writer in REQUIRED.items():
        if not (run_dir / name).is_file():
            raise ConfigError(f"{run_dir / name} not found: the report needs {name}, which {writer} writes")
    try:
        meta = json.loads((run_dir / "run.json").read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{run_dir / 'run.json'} is not valid JSON ({exc})") from exc
    optional = {key: _read(run_dir / name) for key, name in OPTIONAL.items() if (run_dir / name).is_file()}
    scores = _read(run_dir / "scores.csv")
    missing = [column for column in SCORE_COLUMNS if column not in scores]
    if missing:
        raise ConfigError(f"{run_dir / 'scores.csv'}: not a volmargin scores table (no column {', '.join(missing)}); "
                          f"write it again with `volmargin evaluate --run {run_dir}`")
    return Run(run_dir, read_forecasts(run_dir), scores,
               meta if isinstance(meta, dict) else {}, **optional)


# --------------------------------------------------------------------------- leaderboard statistics


def dm_against(run: Run, reference: str) -> pd.DataFrame:
    """dm.csv when it tests QLIKE against `reference` for every model, else recomputed."""
    others = set(run.scores["model"]) - {reference}
    dm = run.dm
    if dm is None or dm.empty or set(dm["reference"]) != {reference} or set(dm.get("loss", ["qlike"])) != {"qlike"} \
            or not others <= set(dm["model"]):
        dm = diebold_mariano_table(run.forecasts, reference)
    return dm if not dm.empty else pd.DataFrame(columns=["model", "dm_stat", "dm_p"])


def model_confidence_set(daily: pd.DataFrame) -> pd.DataFrame:
    """MCS p-value and membership per model (Hansen-Lunde-Nason, range statistic, stationary bootstrap).
    Models with identical losses (e.g. the same variance forecasts) share their twin's result; too short a
    common sample gives no result."""
    if len(daily) < 2 * MCS_BLOCK:
        return pd.DataFrame({"model": daily.columns, "mcs_p": np.nan, "in_mcs": None})
    unique = daily.T.drop_duplicates().T
    twin = {m: next(u for u in unique if daily[u].equals(daily[m])) for m in daily}
    if unique.shape[1] < 2:
        pvalues, included = pd.Series(1.0, index=unique.columns), set(unique.columns)
    else:
        mcs = MCS(unique, size=MCS_SIZE, reps=MCS_REPS, block_size=MCS_BLOCK, seed=MCS_SEED)
        mcs.compute()
        pvalues, included = mcs.pvalues["Pvalue"], set(mcs.included)
    return pd.DataFrame({"model": list(twin), "mcs_p": [float(pvalues[twin[m]]) for m in twin],
                         "in_mcs": [twin[m] in included for m in twin]})


def rank_models(run: Run) -> Ranking:
    """Pooled leaderboard by QLIKE with DM tests against the best baseline and MCS membership."""
    pooled = run.scores[run.scores["asset"] == POOLED].sort_values("qlike", ignore_index=True)
    if pooled.empty:
        raise ConfigError(f"{run.folder / 'scores.csv'} has no pooled rows (asset {POOLED!r}): "
                          "rewrite it with `volmargin evaluate`")
    models = list(pooled["model"])
    baselines = [m for m in models if m in BASELINES] or models
    learned = [m for m in models if m not in BASELINES]
    best = baselines[0]
    daily = pooled_losses(run.forecasts)
    table = (pooled.merge(dm_against(run, best)[["model", "dm_stat", "dm_p"]], on="model", how="left")
             .merge(model_confidence_set(daily), on="model", how="left"))
    table.insert(1, "kind", ["baseline" if m in BASELINES else "learned" for m in models])
    common = daily.mean()
    table["qlike_common"] = table["model"].map(common)
    table["ratio"] = table["qlike_common"] / common.get(best, np.nan)
    champion = run.meta.get("champion") if run.meta.get("champion") in models else models[0]
    table["role"] = [", ".join(r for r, name in (("champion", champion), ("DM reference", best)) if name == m)
                     for m in models]
    return Ranking(table, best, learned[0] if learned else None, champion, len(daily))


# --------------------------------------------------------------------------- sections


def data_kind(meta: dict) -> tuple[str, str]:
    """("synthetic" | "real" | "unknown", a sentence saying so)."""
    data = meta.get("data") or {}
    kinds = {True: ("synthetic", "Synthetic data: the built-in simulated market, not real prices."),
             False: ("real", f"Real market data from {data.get('source') or 'an unrecorded source'}.")}
    return kinds.get(data.get("synthetic"), ("unknown", "Whether the data are real or synthetic was not recorded."))


def data_section(run: Run) -> str:
    data = run.meta.get("data") or {}
    cls, text = data_kind(run.meta)
    f = run.forecasts
    coverage = f.groupby("asset").agg(forecast_first=("date", "min"), forecast_last=("date", "max"),
                                      forecast_days=("date", "nunique"))
    for column in ("forecast_first", "forecast_last"):
        coverage[column] = coverage[column].dt.strftime("%Y-%m-%d")
    recorded = pd.DataFrame.from_dict(data.get("assets") or {}, orient="index")
    merged = recorded.join(coverage, how="outer").rename_axis("asset").reset_index()
    kinds = {c: "int" for c in ("bars", "gaps", "missing_bars", "incomplete_days", "forecast_days")}
    totals = ", ".join(f"{merged[c].sum():,.0f} {c.replace('_', ' ')}" for c in ("bars", "gaps", "incomplete_days")
                       if c in merged)
    per_asset = table(merged, kinds, {"first": "data from", "last": "data to", "missing_bars": "missing bars",
                                      "incomplete_days": "incomplete days", "forecast_first": "forecasts from",
                                      "forecast_last": "forecasts to", "forecast_days": "forecast days"})
    return (f'<div class="banner {cls}">{escape(text)}</div>'
            + note(f"{len(merged)} assets; {len(f):,} forecast rows of {f['model'].nunique()} models."
                   + (f" In all: {totals}." if totals else "")
                   + ("" if len(recorded) else " Per-asset data details (bars, gaps, incomplete days): "
                      + NOT_RECORDED + "."))
            + folded("Per asset: data, gaps and forecast days", per_asset, len(merged)))


LEADERBOARD = {  # column: (label, format)
    "rank": ("rank", "int"), "model": ("model", None), "kind": ("kind", None), "role": ("role", None),
    "n": ("n", "int"), "qlike": ("QLIKE", "f4"), "mse_log": ("MSE log", "f4"), "mz_r2": ("MZ R²", "f3"),
    "qlike_common": ("QLIKE (common)", "f4"), "ratio": ("÷ best baseline", "f3"), "dm_stat": ("DM stat", "f2"),
    "dm_p": ("DM p", "p"), "mcs_p": ("MCS p", "p"), "in_mcs": (f"in {1 - MCS_SIZE:.0%} MCS", "check"),
}


def leaderboard_section(ranking: Ranking) -> str:
    t = ranking.table.copy()
    t.insert(0, "rank", range(1, len(t) + 1))
    t = t[[c for c in LEADERBOARD if c in t]]
    samples = note("<b>The models were scored on different samples</b> (n differs): compare them on the "
                   "common-sample columns.") if t["n"].nunique() > 1 else ""
    twins = t[t.duplicated("qlike", keep=False)]["model"].tolist()
    if twins:  # e.g. fhs takes its variance from ewma: not a duplicated row
        samples += note(f"{', '.join(twins)} have the same QLIKE: they share one variance forecast by construction "
                        "(filtered historical simulation takes EWMA's; its VaR and ES differ).")
    best = ranking.best_baseline
    return (table(t, {c: k for c, (_, k) in LEADERBOARD.items() if k}, {c: lab for c, (lab, _) in LEADERBOARD.items()})
            + samples
            + note(f"QLIKE, MSE log and MZ R² are pooled over every scored row of a model; lower QLIKE is better. "
                   f"QLIKE (common) averages the daily cross-sectional mean QLIKE over the common sample (below), "
                   f"÷ best baseline divides it by that of <b>{best}</b>. Diebold-Mariano tests (pooled daily QLIKE, "
                   f"HAC variance) compare every model with {best}; a negative statistic means the model beats it. "
                   f"The model confidence set (range statistic, stationary bootstrap, block {MCS_BLOCK}, "
                   f"{MCS_REPS} replications, seed {MCS_SEED}) keeps the models not significantly worse than the "
                   f"best at size {MCS_SIZE:g}. DM and MCS use the {ranking.common_dates:,} dates on which every "
                   f"model forecast the same assets."))


def _zone_grid(scores: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    per_asset = scores[scores["asset"] != POOLED].copy()
    per_asset["zones"] = per_asset["basel_zone_long"].astype(str) + "|" + per_asset["basel_zone_short"].astype(str)
    grid = per_asset.pivot(index="asset", columns="model", values="zones")
    return grid[[m for m in order if m in grid]].reset_index()


def var_section(run: Run, ranking: Ranking) -> str:
    pooled = ranking.table
    parts = []
    for side in SIDES:
        columns = {"model": "model", "n": "days", f"var99_{side}_exceptions": "exceptions",
                   f"var99_{side}_rate": "rate", f"kupiec_p_{side}": "Kupiec p",
                   f"kupiec_p_clustered_{side}": "Kupiec p, by date", f"design_effect_{side}": "design effect",
                   f"christoffersen_p_{side}": "Christoffersen p", f"basel_zone_{side}": "Basel zone",
                   f"basel_green_windows_{side}": "green windows", f"basel_windows_{side}": "windows",
                   f"es975_z2_{side}": "ES97.5 Z2"}
        kinds = dict(zip(columns, [None, "int", "int", "pct", "p", "p", "f2", "p", "zone", "int", "int", "f3"]))
        present = [c for c in columns if c in pooled]
        parts.append(f"<h3>{side.capitalize()} tail (VaR 99%, ES 97.5%)</h3>" + table(pooled[present], kinds, columns))
    grid = _zone_grid(run.scores, list(pooled["model"]))
    zones = folded("Each asset's zones", table(grid, {m: "zones" for m in grid if m != "asset"}), len(grid))
    return (note("Pooled over assets; expected exception rate 1%. Kupiec p treats every asset-day as independent; "
                 "exceptions fall on the same days across assets, so \"by date\" divides its statistic by the "
                 "design effect of that clustering (Rao-Scott). Christoffersen p: the median asset's. Basel zone: "
                 "worst rolling 250-day window, or the whole sample judged on its own length where shorter "
                 "(at a horizon of h days, of origins h days apart; pooled: worst asset). ES Z2 (Acerbi-Szekely) is about 0 for a correct ES, negative when the "
                 "tail is underestimated.") + "".join(parts)
            + "<h3>Basel zone per asset (L = long, S = short)</h3>" + zones)


def _largest_assets(forecasts: pd.DataFrame, limit: int) -> list[str]:
    rows = forecasts.dropna(subset=["realized_rv"]).groupby("asset").size()
    return sorted(rows.index, key=lambda a: (-rows[a], a))[:limit]


def _exceedance_assets(run: Run, champion: str, limit: int) -> tuple[list[str], str]:
    """Half the panels for the assets with most forecast days, half for those where the champion's 99% VaR was
    exceeded most often (its worst, what a risk committee asks about); the note's words for the choice."""
    longest = _largest_assets(run.forecasts, limit)
    own = run.scores[(run.scores["model"] == champion) & (run.scores["asset"] != POOLED) & (run.scores["n"] > 0)]
    if len(run.forecasts["asset"].unique()) <= limit or own.empty:
        return longest, "most forecast days"
    rate = (own["var99_long_exceptions"] + own["var99_short_exceptions"]) / own["n"]
    if not (rate > 0).any():  # no exception anywhere: no worst asset to show
        return longest, "most forecast days"
    worst = list(own.assign(rate=rate).sort_values(["rate", "asset"], ascending=[False, True])["asset"])
    shown = longest[: limit - limit // 2]
    shown += [a for a in worst if a not in shown][: limit - len(shown)]
    return shown, (f"{limit - limit // 2} with most forecast days, then those where {champion}'s VaR was exceeded "
                   "most often")


def _groups(forecasts: pd.DataFrame, assets: list[str], models: list[str]) -> dict[str, pd.DataFrame]:
    rows = forecasts[forecasts["asset"].isin(assets) & forecasts["model"].isin(models)]
    groups = dict(tuple(rows.groupby("asset")))
    return {a: groups[a].sort_values("date") for a in assets if a in groups}


def _shown(assets: list[str], total: int, how: str) -> str:
    return f"Showing {len(assets)} of {total} assets ({how})." if len(assets) < total else f"All {total} assets."


def volatility_section(run: Run, ranking: Ranking) -> str:
    models = list(dict.fromkeys(m for m in (ranking.best_baseline, ranking.best_learned, ranking.champion) if m))
    models += [m for m in ranking.table["model"] if m not in models][: max(0, 2 - len(models))]
    assets = _largest_assets(run.forecasts, MAX_VOL_ASSETS)
    dates = run.forecasts["date"]
    weekly = (dates.max() - dates.min()).days > WEEKLY_AFTER_DAYS
    fig = figures.volatility(_groups(run.forecasts, assets, models), models, weekly)
    how = "weekly means of the daily variance, " if weekly else ""
    return (note(f"Annualised volatility √(365·variance/horizon) ({how}realized in grey) of "
                 f"{', '.join(models)}. {_shown(assets, run.forecasts['asset'].nunique(), 'most forecast days')}")
            + img(figures.png(fig), "forecast vs realized volatility"))


def exceedance_section(run: Run, ranking: Ranking) -> str:
    models = list(dict.fromkeys([ranking.champion, ranking.best_baseline]))
    assets, how = _exceedance_assets(run, ranking.champion, MAX_EXCEEDANCE_ASSETS)
    fig = figures.exceedances(_groups(run.forecasts, assets, models), models)
    horizon = int(run.forecasts["horizon"].max()) if "horizon" in run.forecasts else 1
    span = "daily" if horizon == 1 else f"{horizon}-day"
    return (note(f"Realized {span} return against the 99% VaR of the champion ({ranking.champion}) and the best "
                 f"baseline ({ranking.best_baseline}): a long exceedance is a loss below −VaR long, a short one a "
                 f"gain above +VaR short. The y range covers every return; VaR spikes beyond it are clipped. "
                 f"{_shown(assets, run.forecasts['asset'].nunique(), how)}")
            + img(figures.png(fig), "VaR exceedances"))


def _event_panels(paths: pd.DataFrame, stress: pd.DataFrame) -> list[tuple[str, pd.DataFrame, pd.Timestamp]]:
    panels = []
    for event, rows in list(stress.groupby("event", sort=False))[:MAX_EVENTS]:
        eve = rows["eve"].min()
        worst = rows.assign(size=rows["move"].abs()).groupby("asset")["size"].max().nlargest(ASSETS_PER_EVENT)
        near = paths[(paths["date"] - eve).abs() <= pd.Timedelta(days=EVENT_DAYS)]
        for asset in worst.index:
            window = near[near["asset"] == asset]
            if window.empty:
                continue
            hit = rows[rows["asset"] == asset]
            side = hit.loc[hit["move"].idxmax(), "side"]  # the side the event's own days hurt most
            panels.append((f"{event} · {asset} · {side}", window[window["side"] == side].sort_values("date"), eve))
    return panels


def stress_section(run: Run, ranking: Ranking) -> str:
    if run.stress is None or run.paths is None:
        return note(f"Not run: calibration/stress.csv and calibration/margin_paths.parquet are {CALIBRATION_HINT}.")
    if run.stress.empty:
        dates = pd.to_datetime(run.paths["date"], utc=True)
        events = ", ".join(f"{name} ({first})" for name, (first, _) in STRESS_EVENTS.items())
        return note(f"No listed stress event falls in the forecast window ({dates.min():%Y-%m-%d} to "
                    f"{dates.max():%Y-%m-%d}); the events: {events}.")
    stress = run.stress.assign(eve=pd.to_datetime(run.stress["eve"], utc=True))
    paths = run.paths.assign(date=pd.to_datetime(run.paths["date"], utc=True))
    recorded = {"out_of_sample": ("out_of_sample", "all")} if "out_of_sample" in stress else {}  # older runs: none
    summary = (stress.assign(breach=stress["breach"].astype(bool), size=stress["move"].abs(),
                             **{c: stress[c].astype(bool) for c in recorded})
               .groupby(["event", "model", "side"], sort=False)
               .agg(eve=("eve", "min"), assets=("asset", "nunique"), breaches=("breach", "sum"),
                    median_margin=("margin", "median"), worst_move=("size", "max"), max_shortfall=("shortfall", "max"),
                    **recorded)
               .reset_index())
    summary["eve"] = summary["eve"].dt.strftime("%Y-%m-%d")
    kinds = {"assets": "int", "breaches": "int", "median_margin": "pct", "worst_move": "pct", "max_shortfall": "pct",
             "out_of_sample": "check"}
    labels = {"eve": "first eve", "median_margin": "median margin", "worst_move": "|move| on the worst day",
              "max_shortfall": "max shortfall", "out_of_sample": "out of sample"}
    order = list(dict.fromkeys([ranking.champion, ranking.best_baseline, *sorted(paths["model"].unique())]))
    models = [m for m in order if m in set(paths["model"])][: len(figures.COLORS)]
    panels = _event_panels(paths[paths["model"].isin(models)], stress)
    chart = img(figures.png(figures.stress(panels, models)), "margin paths through stress events") if panels else ""
    return (note(f"Initial margin of {', '.join(models)} against the realised loss ±{EVENT_DAYS} days around each "
                 f"event (dotted: eve), for the {ASSETS_PER_EVENT} assets with the largest move per event; × marks a "
                 "breach on any day of the plotted window, the table counts the event's own days only.") + chart
            + "<h3>Stress events</h3>"
            + note(f"Per event, model ({', '.join(models)}; every model below) and side: the assets' worst day of the event window (its move: the loss of a "
                   "position on that side over the margin period, as a fraction), how many of them breached, and "
                   "whether the event lies after the calibration window (✗: its scale was fitted on that very move).")
            + table(summary[summary["model"].isin(models)], kinds, labels)
            + folded(f"Every model ({summary['model'].nunique()})", table(summary, kinds, labels), len(summary)))


CALIBRATION = {  # column: (label, format)
    "model": ("model", None), "side": ("side", None), "days": ("asset-days", "int"), "breaches": ("breaches", "int"),
    "breach_rate": ("breach rate", "rate"), "kupiec_p": ("Kupiec p", "p"), "basel_zone": ("Basel zone", "zone"),
    "basel_green_windows": ("green windows", "int"), "basel_windows": ("windows", "int"),
    "avg_margin": ("mean margin", "pct"), "median_margin": ("median margin", "pct"),
    "mean_shortfall": ("mean shortfall", "pct"), "max_shortfall": ("max shortfall", "pct"),
    "zone_counts": ("assets green / yellow / red", None),
    "peak_to_trough": ("peak / trough", "f2"), "max_increase_1d": ("max 1-day increase", "pct"),
    "max_increase_5d": ("max 5-day increase", "pct"),
}


def target_breach_rate(meta: dict) -> float:
    """The run's calibration target (the config's policy), 1% where not recorded."""
    policy = ((meta.get("config") or {}).get("calibration") or {}).get("policy") or {}
    value = policy.get("target_breach_rate")
    return float(value) if isinstance(value, (int, float)) and 0 < value < 1 else 0.01


def pooled_margins(run: Run, ranking: Ranking) -> pd.DataFrame:
    """The calibration's pooled rows in leaderboard order, with each model and side's count of assets per
    Basel zone (the pooled zone is the worst asset's: with 129 assets nearly always red)."""
    summary = run.summary
    per_asset = summary[summary["asset"] != POOLED]
    counts = per_asset.groupby(["model", "side"])["basel_zone"].agg(
        lambda zones: " / ".join(str(int((zones == z).sum())) for z in ("green", "yellow", "red")))
    pooled = summary[summary["asset"] == POOLED].copy()
    pooled["zone_counts"] = [counts.get((m, side)) for m, side in zip(pooled["model"], pooled["side"])]
    rank = pooled["model"].map({m: i for i, m in enumerate(ranking.table["model"])}).fillna(len(ranking.table))
    return pooled.assign(rank=rank).sort_values(["rank", "side"]).drop(columns="rank")


def calibration_section(run: Run, ranking: Ranking) -> str:
    if run.summary is None:
        return note(f"Not run: calibration/margin_summary.csv is {CALIBRATION_HINT}.")
    pooled = pooled_margins(run, ranking)
    target = target_breach_rate(run.meta)
    under = pooled[pooled["breach_rate"] < target / 2]
    over_cover = note(
        f"<b>{len(under)} of {len(pooled)} rows breach less than half the {target:.0%} target</b>: the policy's "
        "anti-procyclicality tools (buffer, floors, speed limits) add margin on top of the calibrated scale, and the "
        "mean margin column is what that costs. A largest 1-day increase equal to the policy's max_up is its speed "
        "limit binding.") if len(under) else ""
    return (note(f"Validation (out-of-sample) rows pooled over assets; target breach rate {target:.1%} per side. "
                 "Basel zone: the worst asset's (the counts beside it are per asset). Margins are fractions of the "
                 "position's notional, shown as %; peak / trough is the largest margin over the smallest; increases "
                 "are over calendar days.") + over_cover
            + table(pooled[[c for c in CALIBRATION if c in pooled]], {c: k for c, (_, k) in CALIBRATION.items() if k},
                    {c: label for c, (label, _) in CALIBRATION.items()}))


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _forecast_finding(ranking: Ranking) -> str:
    row = ranking.table.set_index("model").loc[ranking.champion]
    best = ranking.best_baseline
    if ranking.champion == best:
        return f"The champion <b>{escape(best)}</b> is the best baseline itself: no learned model beat it on QLIKE."
    mcs = {True: "in", False: "not in"}.get(row.get("in_mcs"), "not tested for")
    return (f"The champion <b>{escape(ranking.champion)}</b> forecasts the variance with {row['ratio']:.3f}× the "
            f"QLIKE of the best baseline <b>{escape(best)}</b> on the common sample (Diebold-Mariano p "
            f"{fmt(row['dm_p'], 'p')}; {mcs} the {1 - MCS_SIZE:.0%} model confidence set).")


def _margin_findings(run: Run, ranking: Ranking, target: float) -> list[str]:
    """Per side: the champion's validation breach rate and mean margin against the cheapest baseline that
    stays within the target (the capital it saves at the same or better coverage)."""
    pooled = pooled_margins(run, ranking).set_index(["model", "side"])
    found = []
    for side in SIDES:
        if (ranking.champion, side) not in pooled.index:
            continue
        own = pooled.loc[(ranking.champion, side)]
        within = pooled.xs(side, level="side")
        within = within[within.index.isin(BASELINES) & (within["breach_rate"] <= target)]
        text = (f"{side.capitalize()}: {escape(ranking.champion)} breaches {fmt(own['breach_rate'], 'rate')} of days "
                f"(target {_pct(target)}, Kupiec p {fmt(own['kupiec_p'], 'p')}) at a mean margin of "
                f"{_pct(own['avg_margin'])}")
        if len(within):
            cheapest = within["avg_margin"].idxmin()
            ratio = own["avg_margin"] / within.loc[cheapest, "avg_margin"] - 1
            text += (f", {abs(ratio):.1%} {'less' if ratio < 0 else 'more'} than the cheapest baseline within the "
                     f"target, <b>{escape(cheapest)}</b> ({_pct(within.loc[cheapest, 'avg_margin'])} at "
                     f"{fmt(within.loc[cheapest, 'breach_rate'], 'rate')})")
        found.append(text + ".")
    return found


def _stress_finding(run: Run, champion: str) -> str | None:
    if run.stress is None or run.stress.empty or champion not in set(run.stress["model"]):
        return None
    rows = run.stress[run.stress["model"] == champion]
    by_event = rows.groupby("event", sort=False).agg(shortfall=("shortfall", "max"), breaches=("breach", "sum"),
                                                    cases=("asset", "size"))
    if not (by_event["shortfall"] > 0).any():
        return (f"Stress: {escape(champion)}'s margin covered every asset and side in the {len(by_event)} listed "
                f"event(s) of the window ({escape(', '.join(by_event.index))}).")
    event = by_event["shortfall"].idxmax()
    worst = by_event.loc[event]
    sample = ""
    if "out_of_sample" in rows:
        sample = " (after the calibration window)" if rows.loc[rows["event"] == event, "out_of_sample"].astype(
            bool).all() else " (<b>inside the calibration window</b>: its scale saw that move)"
    return (f"Stress: {escape(champion)}'s worst listed event is <b>{escape(event)}</b>{sample}: "
            f"{int(worst['breaches'])} of {int(worst['cases'])} asset-sides breached, the largest shortfall "
            f"{_pct(worst['shortfall'])} of notional.")


def _caveats(run: Run, ranking: Ranking, target: float) -> list[str]:
    caveats = []
    if data_kind(run.meta)[0] == "synthetic":
        caveats.append("The data are synthetic: event names are calendar windows, not what happened in them.")
    if run.summary is not None:
        pooled = pooled_margins(run, ranking)
        champion = pooled[pooled["model"] == ranking.champion]
        for _, row in champion.iterrows():
            if row["breach_rate"] > target:
                caveats.append(f"The champion's {row['side']} margin breaches more often than the target.")
            elif row["breach_rate"] < target / 2:
                caveats.append(f"The champion's {row['side']} margin over-covers (under half the target): the "
                               "anti-procyclicality tools add margin on top of the calibrated scale.")
    if run.stress is not None and "out_of_sample" in run.stress and not run.stress["out_of_sample"].astype(bool).all():
        inside = sorted(set(run.stress.loc[~run.stress["out_of_sample"].astype(bool), "event"]))
        caveats.append(f"Stress events inside the calibration window ({escape(', '.join(inside))}) were seen by "
                       "the calibration.")
    if ranking.table["n"].nunique() > 1:
        caveats.append("The models were scored on different samples: compare them on the common-sample columns.")
    return caveats


def summary_section(run: Run, ranking: Ranking) -> str:
    """What a risk committee asks first, each finding from the tables below."""
    target = target_breach_rate(run.meta)
    findings = [_forecast_finding(ranking)]
    if run.summary is not None:
        findings += _margin_findings(run, ranking, target)
    findings += [f for f in [_stress_finding(run, ranking.champion)] if f]
    caveats = _caveats(run, ranking, target)
    items = "".join(f"<li>{f}</li>" for f in findings)
    notes = "".join(f"<li>{c}</li>" for c in caveats)
    return (f"<ul>{items}</ul>" + (f"<h3>Caveats</h3><ul>{notes}</ul>" if notes else "")
            + note("From the sections below: leaderboard (forecasts), margin calibration (validation rows), "
                   "margins through stress events."))


def provenance_section(run: Run) -> str:
    meta = run.meta
    data, mlflow, bundle = meta.get("data") or {}, meta.get("mlflow") or {}, meta.get("bundle") or {}
    timings = meta.get("timings") or {}
    config = (f"<pre>{escape(json.dumps(meta['config'], indent=2, default=str))}</pre>" if "config" in meta
              else note(NOT_RECORDED))
    ids = {"MLflow parent run": mlflow.get("parent_run_id"),
           **{f"MLflow run: {stage}": rid for stage, rid in (mlflow.get("stages") or {}).items()}}
    stages = pd.DataFrame({"stage": [*timings, "total"], "seconds": [*timings.values(), sum(timings.values())]})
    timing = table(stages, {"seconds": "sec"}) if timings else note(f"Timings: {NOT_RECORDED}")
    bundle_name = " ".join(str(bundle[k]) for k in ("name", "version") if bundle.get(k) is not None)
    return ("<h3>Run</h3>" + key_values({"run folder": str(run.folder.resolve()), "data source": data.get("source"),
                                         "data fingerprint": data.get("fingerprint"), "champion": meta.get("champion"),
                                         "bundle": bundle_name,
                                         "bundle path": bundle.get("path"), **ids})
            + "<h3>Timings per stage</h3>" + timing + "<h3>Configuration</h3>" + config)


def build_report(run_dir: Path) -> str:
    """The report of one run folder as an HTML string."""
    run = load_run(run_dir)
    ranking = rank_models(run)
    recorded = "" if run.meta.get("champion") == ranking.champion else " (not recorded: best QLIKE)"
    kind = data_kind(run.meta)[0]
    header = note(f"Run folder <code>{escape(run.folder.name)}</code> · {run.forecasts['asset'].nunique()} assets"
                  f" · champion <b>{escape(ranking.champion)}</b>{recorded} · best baseline "
                  f"<b>{escape(ranking.best_baseline)}</b> · data: {NOT_RECORDED if kind == 'unknown' else kind}")
    sections = [("summary", "Summary", summary_section(run, ranking)),
                ("data", "Data covered", data_section(run)),
                ("leaderboard", "Leaderboard", leaderboard_section(ranking)),
                ("var-backtest", "VaR / ES backtests", var_section(run, ranking)),
                ("volatility", "Forecast vs realized volatility", volatility_section(run, ranking)),
                ("exceedances", "VaR exceedances", exceedance_section(run, ranking)),
                ("stress", "Margins through stress events", stress_section(run, ranking)),
                ("calibration", "Margin calibration", calibration_section(run, ranking)),
                ("portfolio", "Portfolio margin", portfolio_section(run.folder / "portfolio")),
                ("provenance", "Provenance", provenance_section(run))]
    sections[-1:-1] = simulation_sections(run.folder)  # only when the run has the simulate stage's outputs
    return page("volmargin model comparison", header, sections)


def write_report(run_dir: Path, out: Path) -> Path:
    """Build the report of `run_dir` and write it to `out` atomically."""
    text = build_report(run_dir)
    return write_atomic(out, lambda path: path.write_text(text, encoding="utf-8"))
