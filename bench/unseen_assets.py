"""Learned forecasters on assets they never saw: asset-grouped folds, trained once, scored the bundle way.

    python bench/unseen_assets.py [--train-end 2021-12-31] [--folds 5] [--models gbm,nn] [--out runs/bench-unseen]
    python bench/unseen_assets.py --train-end 2020-12-31 --score-end 2021-12-31 ...   # the selection period

Data: every hourly spot file of ../shared/data plus alts/ (129 assets). Each learned model is trained
`--folds` times, each time on the assets outside one group up to `--train-end`, and scores that group's
assets after it with no refit (`volmargin.evaluation.splits.AssetGroupedSplit`); beside it the in-asset
figure (one model trained on every asset to the same date). Reference: log-HAR refit every 30 days on
each scored asset's own history, plus EWMA and GJR-GARCH. Targets from the day after `--train-end`, for
assets with a year of history (HAR needs it too).

Prints, per set (unseen, in-asset): pooled QLIKE and its ratio to HAR on the same rows with a
Diebold-Mariano p-value, the median ratio of the variance forecast to HAR's, the mean QLIKE of the worst 1%
of days (by HAR's loss) against HAR's, 99% VaR exception rates per side and the share of assets whose
Kupiec p > 0.05; QLIKE / HAR by months since the training end (ageing); then the calibration benchmark
(99% VaR per asset and side, 1% breach target, calibrated on the first year of forecasts, validated after
it, re-calibrated yearly) with each model's average initial margin against the best baseline's.
Forecasts are saved in --out, one part per model group (reused by later runs into the same folder);
`--reuse` re-prints the tables from the saved table without refitting.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import validation_table
from common import hourly_spot_files, shared_data_dir
from volmargin.calibration import PolicyConfig, margin_paths, margin_summary, walk_forward_calibration
from volmargin.data import load_panel
from volmargin.evaluation.backtest import BacktestConfig, daily_panel, run_backtest
from volmargin.evaluation.scoring import POOLED, diebold_mariano_table, score_forecasts
from volmargin.evaluation.splits import AssetGroupedSplit, in_asset_forecasts, unseen_asset_forecasts
from volmargin.evaluation.stats import qlike
from volmargin.evaluation.walkforward import WalkForwardSplit
from volmargin.io import write_frame
from volmargin.models import make_forecaster

REFERENCE = "har"
TARGET_MAX_RATE = 0.015


def all_files() -> list[Path]:
    return hourly_spot_files() + sorted((shared_data_dir() / "alts").glob("*_1h.csv.gz"))


def learned_forecasts(panel, label: str, name: str, params: dict, split: AssetGroupedSplit, levels,
                      in_asset: bool) -> pd.DataFrame:
    frames = []
    sets = (("unseen", unseen_asset_forecasts), ("in_asset", in_asset_forecasts))[: 2 if in_asset else 1]
    for kind, produce in sets:
        began = time.perf_counter()
        per_asset = produce(panel, lambda: make_forecaster(name, **params), split, levels)
        frames += [f.assign(asset=a, model=label, set=kind) for a, f in per_asset.items()]
        print(f"  {label} {kind}: {len(per_asset)} assets in {time.perf_counter() - began:.0f} s", flush=True)
    return pd.concat(frames, ignore_index=True)


def baseline_forecasts(panel, models: tuple[str, ...], split: AssetGroupedSplit, levels) -> pd.DataFrame:
    config = BacktestConfig(models=models, levels=levels, split=WalkForwardSplit(
        start=split.train_end + pd.Timedelta(days=1), end=split.score_end, refit_every=30, min_train=split.min_train))
    forecasts, _ = run_backtest(panel, config, progress=False)
    return forecasts


def _paired(forecasts: pd.DataFrame, model: str) -> pd.DataFrame:
    """Rows of `model` beside HAR's on the same (asset, origin), with a finite positive target."""
    keys = ["asset", "origin"]
    ours = forecasts[forecasts["model"] == model]
    ref = forecasts[forecasts["model"] == REFERENCE][[*keys, "variance"]].rename(columns={"variance": "har_variance"})
    rows = ours.merge(ref, on=keys)
    return rows[(rows["realized_rv"] > 0) & np.isfinite(rows["realized_rv"])]


def accuracy(forecasts: pd.DataFrame) -> pd.DataFrame:
    scores = score_forecasts(forecasts)
    dm = diebold_mariano_table(forecasts, REFERENCE).set_index("model")
    table = []
    for model in forecasts["model"].unique():
        rows = _paired(forecasts, model)
        loss, ref_loss = qlike(rows["variance"], rows["realized_rv"]), qlike(rows["har_variance"], rows["realized_rv"])
        worst = ref_loss >= np.quantile(ref_loss, 0.99)
        per_asset = scores[(scores["model"] == model) & (scores["asset"] != POOLED)]
        pooled = scores[(scores["model"] == model) & (scores["asset"] == POOLED)].iloc[0]
        table.append({
            "model": model, "n": len(rows), "qlike": loss.mean(), "ratio_vs_har": loss.mean() / ref_loss.mean(),
            "dm_p_vs_har": dm["dm_p"].get(model, np.nan),
            "median_var_ratio": float(np.median(rows["variance"] / rows["har_variance"])),
            "worst1pct_qlike": loss[worst].mean(), "worst1pct_har": ref_loss[worst].mean(),
            "var99_long_rate": pooled["var99_long_rate"], "var99_short_rate": pooled["var99_short_rate"],
            "kupiec_ok_long": float((per_asset["kupiec_p_long"] > 0.05).mean()),
            "kupiec_ok_short": float((per_asset["kupiec_p_short"] > 0.05).mean()),
        })
    return pd.DataFrame(table).sort_values("ratio_vs_har")


def ageing(forecasts: pd.DataFrame, train_end: pd.Timestamp) -> pd.DataFrame:
    """QLIKE / HAR's by months since the training end, per model."""
    out = {}
    for model in forecasts["model"].unique():
        if model == REFERENCE:
            continue
        rows = _paired(forecasts, model)
        months = ((rows["origin"] - train_end).dt.days // 30.4375).astype(int)
        bucket = pd.cut(months, [-1, 5, 11, 17, 23, 35, 1000], labels=["0-5", "6-11", "12-17", "18-23", "24-35", "36+"])
        grouped = pd.DataFrame({"loss": qlike(rows["variance"], rows["realized_rv"]),
                                "ref": qlike(rows["har_variance"], rows["realized_rv"]), "bucket": bucket})
        sums = grouped.groupby("bucket", observed=True)[["loss", "ref"]].sum()
        out[model] = sums["loss"] / sums["ref"]
    return pd.DataFrame(out)


def margins(forecasts: pd.DataFrame, validation_start: pd.Timestamp, learned: tuple[str, ...],
            pooled: bool = False, risk: str = "var99") -> tuple[pd.DataFrame, str]:
    """The calibration benchmark's validation table and each learned model's margin against the best
    baseline's; `pooled`: one scale per (model, side) over all assets, as the issue measured it, instead of
    one per (model, asset, side) from a year of that asset's days (about 3 breaches allowed)."""
    policy = PolicyConfig(pooled=pooled, risk=risk)
    calibration = walk_forward_calibration(forecasts, policy, validation_start, every="YS")
    table = validation_table(margin_summary(margin_paths(forecasts, policy, calibration), policy.target_breach_rate))
    ok = table[table["worst_breach"] <= TARGET_MAX_RATE]
    base = ok[~ok.index.isin(learned)]
    lines = []
    for model in learned:
        if model not in ok.index or base.empty:
            lines.append(f"{model}: misses the {TARGET_MAX_RATE:.1%} breach limit or no baseline meets it")
            continue
        best = base["avg_im"].idxmin()
        lines.append(f"{model}: avg IM {table.loc[model, 'avg_im']:.2%} vs best baseline {best} "
                     f"{base.loc[best, 'avg_im']:.2%} -> {1 - table.loc[model, 'avg_im'] / base.loc[best, 'avg_im']:+.1%} "
                     f"less margin (worst side breach {table.loc[model, 'worst_breach']:.2%} vs "
                     f"{table.loc[best, 'worst_breach']:.2%})")
    return table.drop(columns=["worst_breach"]), "\n".join(lines)


def _cached(path: Path, produce) -> pd.DataFrame:
    """One part of the forecast table (the baselines, one learned variant), computed once per --out folder:
    a later run with more variants reuses the parts already there (delete the folder to recompute)."""
    if path.is_file():
        print(f"  reusing {path}", flush=True)
        return pd.read_parquet(path)
    frame = produce()
    write_frame(frame, path)
    return frame


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-end", default="2021-12-31")
    parser.add_argument("--score-end", default=None)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--min-train", type=int, default=365, help="history a scored asset needs (days)")
    parser.add_argument("--models", default="gbm,nn")
    parser.add_argument("--params", default="{}", help='JSON per model, e.g. {"gbm": {"variance_loss": "l2"}}')
    parser.add_argument("--variants", default="{}", help='more learned variants, JSON label -> [model, params], '
                        'e.g. {"gbm_l2": ["gbm", {"variance_loss": "l2"}]} (unseen set only)')
    parser.add_argument("--baselines", default="har,ewma,gjr")
    parser.add_argument("--top-only", action="store_true", help="the 29 top-level files only (no alts/)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-unseen"))
    parser.add_argument("--reuse", action="store_true", help="re-print the tables from saved forecasts")
    parser.add_argument("--risk", default="var99", help="the margin's risk measure (var99, es975, es99, ...)")
    parser.add_argument("--validation-start", default=None,
                        help="first margin validation day (default: January 1st after the first target)")
    args = parser.parse_args()
    train_end = pd.Timestamp(args.train_end, tz="UTC")
    split = AssetGroupedSplit(train_end=train_end, n_folds=args.folds, min_train=args.min_train,
                              score_end=pd.Timestamp(args.score_end, tz="UTC") if args.score_end else None)
    variants = {m: (m, json.loads(args.params).get(m, {}), True) for m in args.models.split(",") if m}
    variants.update({k: (m, p, False) for k, (m, p) in json.loads(args.variants).items()})
    learned = tuple(variants)
    levels = (0.975, 0.99)
    path = args.out / "forecasts.parquet"
    began = time.perf_counter()
    if args.reuse:
        forecasts = pd.read_parquet(path)
    else:
        files = hourly_spot_files() if args.top_only else all_files()
        panel = daily_panel(load_panel([str(f) for f in files]))
        print(f"{len(panel)} assets loaded in {time.perf_counter() - began:.0f} s", flush=True)
        parts = {"baselines": lambda: baseline_forecasts(panel, tuple(args.baselines.split(",")), split,
                                                         levels).assign(set="both")}
        parts.update({label: (lambda v=v, label=label: learned_forecasts(panel, label, *v[:2], split, levels, v[2]))
                      for label, v in variants.items()})
        frames = [_cached(args.out / f"part-{key}.parquet", produce) for key, produce in parts.items()]
        # the variants earlier calls left in this folder stay in its table (later benches read them from it)
        earlier = [pd.read_parquet(part) for part in sorted(args.out.glob("part-*.parquet"))
                   if part.stem.removeprefix("part-") not in parts]
        learned += tuple(model for frame in earlier for model in frame["model"].unique())
        forecasts = pd.concat(frames + earlier, ignore_index=True)
        write_frame(forecasts, path)
    pd.set_option("display.width", 250)
    first = forecasts["date"].min()
    validation_start = pd.Timestamp(args.validation_start or f"{first.year + 1}-01-01", tz="UTC")
    for kind in ("unseen", "in_asset"):
        subset = forecasts[forecasts["set"].isin([kind, "both"])].drop(columns="set")
        if not subset["model"].isin(learned).any():
            continue
        print(f"\n## {kind}: {subset['asset'].nunique()} assets, targets {subset['date'].min().date()} .. "
              f"{subset['date'].max().date()}\n")
        print(accuracy(subset).to_markdown(index=False, floatfmt=".4f"))
        print("\nQLIKE / HAR by months since the training end:\n")
        print(ageing(subset, train_end).to_markdown(floatfmt=".3f"))
        if subset["origin"].max() > validation_start + pd.Timedelta(days=180):
            for pooled, unit in ((False, "per asset and side"), (True, "per side, pooled over the assets")):
                table, verdict = margins(subset, validation_start, learned, pooled, args.risk)
                print(f"\nmargins ({args.risk} x scale {unit}, calibrated before {validation_start.date()}, "
                      f"validated after, re-calibrated yearly):\n")
                print(table.to_markdown(floatfmt=".4f"))
                print(verdict)
    print(f"\nwall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
