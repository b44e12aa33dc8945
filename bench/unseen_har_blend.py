"""The learned variance blended with a HAR fitted on the scored asset's own last N days, on saved forecasts.

    python bench/unseen_har_blend.py --select runs/s11-q4 runs/s11-2021 --report runs/s11-report [--model gbm]

A frozen global model does not know a new asset's own level and dynamics; a HAR fitted on that asset's
history does, and a serving runtime can fit one on the rows it is given. So the HAR here is refitted at
every origin on the asset's last N daily rows only, exactly what `HAR().fit(history[-N:])` then its one-day
forecast give (checked against the library's class at start), for N in --days; `all` is the reference's
own HAR (the asset's whole history, refit every 30 days). Blend: variance w f + (1 - w) h, the model's
VaR and ES scaled by sqrt(blend / f) (its standardized tails kept).

Rule, written before the run (session 11): among the (N, w) of --days x --weights, the one with the least
mean QLIKE / HAR over the selection runs (`bench/unseen_assets.py` output folders: 129 assets trained to
2021-09-30 scored over 2021-Q4; 29 large caps trained to 2020-12-31 scored over 2021) is chosen, and
reported with every figure of `bench/unseen_assets.py` (accuracy, tails, margins) on the report run
(trained to 2021-12-31, scored 2022-2025). The input folders need the model's part and HAR's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common import hourly_spot_files
from unseen_assets import accuracy, all_files, margins
from volmargin.data import load_panel
from volmargin.evaluation.backtest import daily_panel
from volmargin.evaluation.stats import qlike
from volmargin.features.realized import horizon_targets
from volmargin.models.har import RV_FLOOR, HAR

LAGS = (1, 5, 22)
BASELINES = ("har", "ewma", "gjr")  # what `bench/unseen_assets.py` runs beside the learned models
TAILS = [f"{kind}{level}_{side}" for kind in ("var", "es") for level in ("975", "99") for side in ("long", "short")]


def windowed_har(daily: pd.DataFrame, days: int) -> pd.Series:
    """At every origin t, the one-day variance forecast of `HAR().fit(daily[t - days + 1 : t + 1])`: the OLS
    of log rv_(s+1) on 1, log rv_s, log mean rv over 5 and 22 days, on the rows whose regressors and target
    lie inside those `days` rows, from cumulative sums (one pass per asset)."""
    rv = daily["rv"].clip(lower=RV_FLOOR)
    x = np.column_stack([np.ones(len(rv))] + [np.log(rv.rolling(lag, min_periods=lag).mean()) for lag in LAGS])
    y = np.log(horizon_targets(daily, 1)["target_rv"].reindex(daily.index).clip(lower=RV_FLOOR)).to_numpy()
    ok = np.isfinite(x).all(axis=1) & np.isfinite(y)
    xo, yo = np.where(ok[:, None], x, 0.0), np.where(ok, y, 0.0)

    def window_sums(terms: np.ndarray) -> np.ndarray:
        # rows s in [t - days + LAGS[-1], t - 1]: regressors need LAGS[-1] rows, the target is row s + 1 <= t
        total = np.concatenate([np.zeros((1, *terms.shape[1:])), np.cumsum(terms, axis=0)])
        t = np.arange(len(terms))
        return total[t] - total[np.clip(t - days + LAGS[-1], 0, None)]

    n = window_sums(ok.astype(float))
    sxx = window_sums(xo[:, :, None] * xo[:, None, :])
    sxy = window_sums(xo * yo[:, None])
    syy = window_sums(yo * yo)
    fit = (n > len(LAGS) + 2) & np.isfinite(x).all(axis=1)
    beta = np.full(x.shape, np.nan)
    beta[fit] = np.linalg.solve(sxx[fit], sxy[fit][:, :, None])[:, :, 0]
    residual_ss = syy - 2 * np.einsum("ti,ti->t", beta, sxy) + np.einsum("ti,tij,tj->t", beta, sxx, beta)
    resid_var = residual_ss / (n - 1)  # pandas' var (ddof 1) of residuals with zero mean, as HAR fits it
    return pd.Series(np.exp(np.einsum("ti,ti->t", x, beta) + 0.5 * resid_var), index=daily.index)


def check_against_library(daily: pd.DataFrame, days: int, origins: int = 3) -> None:
    """The cumulative-sum fit equals the library's HAR refitted on the window (a guard on this bench)."""
    path = windowed_har(daily, days)
    for t in np.linspace(days + 30, len(daily) - 1, origins).astype(int):
        window = daily.iloc[t - days + 1:t + 1]
        expected = HAR().fit(window).one_day_variance(window).iloc[-1]
        if not np.isclose(path.iloc[t], expected, rtol=1e-6):
            raise SystemExit(f"windowed HAR differs from HAR().fit at {daily.index[t]}: {path.iloc[t]} vs {expected}")


def blended(rows: pd.DataFrame, har: np.ndarray, weight: float, label: str) -> pd.DataFrame:
    """`rows` (one model's forecasts) with variance w f + (1 - w) har and tails scaled by sqrt(blend / f)."""
    out = rows.assign(model=label)
    variance = weight * rows["variance"].to_numpy() + (1 - weight) * har
    scale = np.sqrt(variance / rows["variance"].to_numpy())
    out[TAILS] = rows[TAILS].to_numpy() * scale[:, None]
    out["variance"] = variance
    return out


def with_blends(forecasts: pd.DataFrame, model: str, hars: dict[str, pd.DataFrame],
                weights: list[float]) -> pd.DataFrame:
    """The forecast table plus one model per (N, w): `{model}_har{N}_w{w}` (unseen rows), on the rows where
    every HAR exists."""
    keys = ["asset", "origin"]
    rows = forecasts[(forecasts["model"] == model) & (forecasts["horizon"] == 1) & (forecasts["set"] == "unseen")]
    ref = forecasts[forecasts["model"] == "har"][[*keys, "variance"]].rename(columns={"variance": "all"})
    rows = rows.merge(ref, on=keys)
    for days, table in hars.items():
        rows = rows.merge(table.rename(columns={"har": days}), on=keys)
    rows = rows.dropna(subset=["all", *hars])
    blends = [blended(rows.drop(columns=["all", *hars]), rows[days].to_numpy(), w, f"{model}_har{days}_w{w:g}")
              for days in ["all", *hars] for w in weights if w < 1]
    kept = forecasts.merge(rows[keys], on=keys)  # every model on the same rows
    return pd.concat([kept, *blends], ignore_index=True)


def ratio_to_har(forecasts: pd.DataFrame) -> pd.Series:
    """Pooled QLIKE / HAR's per model, unseen rows."""
    ref = forecasts[forecasts["model"] == "har"].set_index(["asset", "origin"])
    out = {}
    for model, rows in forecasts[forecasts["model"] != "har"].groupby("model"):
        rows = rows[rows["set"].isin(["unseen", "both"])].set_index(["asset", "origin"])
        rows = rows[rows["realized_rv"] > 0]
        har = ref.loc[rows.index, "variance"]
        out[model] = qlike(rows["variance"], rows["realized_rv"]).mean() / qlike(har, rows["realized_rv"]).mean()
    return pd.Series(out)


def by_group_and_year(forecasts: pd.DataFrame, models: list[str]) -> pd.DataFrame:
    """QLIKE / HAR's per (group, year) of the origin: the 29 large caps (top-level files) and the alts."""
    rows = forecasts[forecasts["model"].isin([*models, "har"]) & (forecasts["realized_rv"] > 0)]
    large = {p.name.removesuffix("_1h.csv.gz") for p in hourly_spot_files()}
    rows = rows.assign(group=np.where(rows["asset"].isin(large), "large caps", "alts"), year=rows["origin"].dt.year,
                       loss=qlike(rows["variance"], rows["realized_rv"]))
    table = rows.pivot_table(index=["group", "year"], columns="model", values="loss", aggfunc="mean")
    return table[models].div(table["har"], axis=0)


def chosen_on(ratios: pd.DataFrame) -> str:
    """Print QLIKE / HAR per candidate (rows) and selection run (columns) with their mean; return the
    candidate with the least mean (the baselines are no candidates)."""
    ratios = ratios.drop(index=[m for m in BASELINES if m in ratios.index])
    table = pd.concat([ratios, ratios.mean(axis=1).rename("selection mean")], axis=1).sort_values("selection mean")
    print("QLIKE / HAR, unseen rows, selection runs:\n")
    print(table.to_markdown(floatfmt=".4f"))
    chosen = table["selection mean"].idxmin()
    print(f"\nchosen: {chosen}\n")
    return chosen


def combination_args(doc: str, weights: str, more=None) -> tuple[argparse.Namespace, list[float]]:
    """The command line of a combination script: two selection runs, a report run and the weight grid;
    `more(parser)` adds a script's own options."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--select", nargs=2, type=Path, required=True, help="the two selection runs")
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--weights", default=weights)
    if more is not None:
        more(parser)
    args = parser.parse_args()
    return args, [float(w) for w in args.weights.split(",")]


def select_and_report(select: list[Path], report: Path, combine, learned: str) -> None:
    """`combine(run)` (a forecast table with the candidates added) on each selection run, the candidate with
    the least mean QLIKE / HAR chosen (`chosen_on`), then the report run read with it (`print_report`)."""
    chosen = chosen_on(pd.DataFrame({str(run): ratio_to_har(combine(run)) for run in select}))
    print("report run (read after the choice):\n")
    print_report(combine(report), [learned, chosen])


def print_report(report: pd.DataFrame, models: list[str], pooled: tuple[bool, ...] = (True,)) -> None:
    """A report run's unseen rows, read after a choice: accuracy, tails, QLIKE / HAR by group and year and
    margins (per asset and side and / or one pooled scale per side) of `models` beside the baselines (not the
    run's other learned models)."""
    models = sorted(set(models))
    report = report[report["model"].isin([*models, *BASELINES])]
    unseen = report[report["set"].isin(["unseen", "both"])].drop(columns="set")
    print(accuracy(unseen).to_markdown(index=False, floatfmt=".4f"))
    print("\nQLIKE / HAR by group and year:\n")
    print(by_group_and_year(unseen, models).to_markdown(floatfmt=".3f"))
    validation_start = pd.Timestamp(f"{unseen['date'].min().year + 1}-01-01", tz="UTC")
    for one_scale in pooled:
        frame, verdict = margins(unseen, validation_start, tuple(models), one_scale)
        print(f"\nmargins ({'one scale per side, pooled' if one_scale else 'per asset and side'}):\n")
        print(frame.to_markdown(floatfmt=".4f"))
        print(verdict)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--select", nargs="+", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--model", default="gbm")
    parser.add_argument("--days", default="180,365,730")
    parser.add_argument("--weights", default="0.5,0.6,0.7,0.8,0.9,1")
    args = parser.parse_args()
    began = time.perf_counter()
    weights = [float(w) for w in args.weights.split(",")]
    panel = daily_panel(load_panel([str(f) for f in all_files()]))
    days_list = [int(d) for d in args.days.split(",")]
    for days in days_list:
        check_against_library(panel["binance_btcusdt"], days)
    hars = {str(d): pd.concat([pd.DataFrame({"asset": a, "origin": f.index, "har": windowed_har(f, d).to_numpy()})
                               for a, f in panel.items()], ignore_index=True) for d in days_list}
    print(f"{len(panel)} assets, windowed HAR fitted in {time.perf_counter() - began:.0f} s", flush=True)
    runs = {path: with_blends(pd.read_parquet(path / "forecasts.parquet"), args.model, hars, weights)
            for path in [*args.select, args.report]}
    ratios = pd.DataFrame({str(path): ratio_to_har(runs[path]) for path in runs})
    selection = ratios[[str(p) for p in args.select]].mean(axis=1).rename("selection mean")
    table = pd.concat([ratios, selection], axis=1).sort_values("selection mean")
    chosen = selection.idxmin()
    print("\nQLIKE / HAR, unseen rows (the report column is read after the choice):\n")
    print(table.to_markdown(floatfmt=".4f"))
    print(f"\nchosen on the selection runs: {chosen}\n")
    print_report(runs[args.report], [args.model, chosen], pooled=(False, True))
    print(f"\nwall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
