"""Regime-aware (conditional) margin scales and an intraday MPOR on saved forecasts: margin levers of issue 10.

    python bench/margin_regime.py runs/s15-report [--validation-start 2023-01-01] [--mpor-hours 8]

Input: a `bench/unseen_assets.py` folder (its forecasts.parquet: baselines and learned variants, 129 assets; the
unseen set), or a `bench/forecast_accuracy.py` folder (the training assets' in-asset walk-forward).
The benchmark's pooled policy (initial margin = scale x 99% VaR, one scale per model and side over all assets,
1% breach target, calibrated on rows realised before the validation start, re-calibrated every year on all
earlier rows) against the same with one scale per model, side and **volatility regime**.

Design, fixed in this file before its first run (no alternative is tried and none is chosen on these data;
both regime variables are reported):
- `asset` regime: x = log(mean daily RV of the asset's last 5 days / its last 365 days), days up to and
  including the origin (known when the margin is set); the same for every model.
- `market` regime: the day's median of x over the assets scored that day.
- Buckets: terciles of the regime variable on the forecast rows realised before the validation start (one
  set of cut points for every model, fixed for the rest of the run).
- Why it could pay: a single scale must cover the regime where the model under-covers (often calm weeks
  before a jump), so it over-covers the others; with a scale per regime, the expensive high-volatility days
  can get a smaller scale while the calm days, whose margins are small, get a larger one.
`--mpor-hours H`: the intraday MPOR of `bench/calibration.py` (the margin tested and calibrated against the
first H hours after each origin day's close, the daily risk scaled by the square root of time), another lever
the issue names, measured the same way.
Prints per model and policy the validation breach rates, the average initial margin and each learned model's
margin against the best baseline's under the same policy (the issue's measure: >= 10% less).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import validation_table
from unseen_assets import TARGET_MAX_RATE, all_files
from volmargin.calibration import PolicyConfig, margin_paths, margin_summary, walk_forward_calibration
from volmargin.calibration.intraday import with_intraday_moves
from volmargin.data import load_panel
from volmargin.evaluation.backtest import daily_panel

SHORT_DAYS, LONG_DAYS = 5, 365
BASELINES = ("har", "gjr", "ewma")
SEP = "@"


def asset_regime(daily: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """(asset, origin, x): log of the 5-day over the 365-day mean daily RV, days up to the origin."""
    frames = []
    for asset, frame in daily.items():
        rv = frame["rv"].where(frame["rv"] > 0)
        x = np.log(rv.rolling(SHORT_DAYS, min_periods=3).mean() / rv.rolling(LONG_DAYS, min_periods=180).mean())
        frames.append(pd.DataFrame({"asset": asset, "origin": frame.index, "x": x.to_numpy()}))
    return pd.concat(frames, ignore_index=True).dropna()


def with_regime(forecasts: pd.DataFrame, regime: pd.DataFrame, kind: str) -> pd.DataFrame:
    rows = forecasts.merge(regime, on=["asset", "origin"], how="left")
    if kind == "market":
        rows["x"] = rows.groupby("origin")["x"].transform("median")
    return rows


def bucketed(rows: pd.DataFrame, start: pd.Timestamp) -> pd.DataFrame:
    """Each row's model renamed model@bucket, buckets the terciles of x on rows realised before `start`;
    rows without x (too little history) go to the middle bucket."""
    seen = rows[rows["origin"] + pd.to_timedelta(rows["horizon"], unit="D") < start]
    cuts = np.nanquantile(seen.drop_duplicates(["asset", "origin"])["x"], [1 / 3, 2 / 3])
    bucket = np.where(rows["x"].isna(), 1, np.searchsorted(cuts, rows["x"].to_numpy()))
    print(f"  cut points of x: {cuts[0]:+.3f}, {cuts[1]:+.3f}; rows per bucket "
          f"{np.bincount(bucket, minlength=3).tolist()}", flush=True)
    return rows.assign(model=rows["model"] + SEP + bucket.astype(str))


def policy_table(forecasts: pd.DataFrame, start: pd.Timestamp, mpor_hours: int | None) -> pd.DataFrame:
    """Validation table of the pooled policy; pseudo-models model@bucket are merged back into their model."""
    policy = PolicyConfig(pooled=True, mpor_hours=mpor_hours)
    calibration = walk_forward_calibration(forecasts, policy, start, every="YS")
    paths = margin_paths(forecasts, policy, calibration)
    paths["model"] = paths["model"].str.split(SEP).str[0]
    return validation_table(margin_summary(paths, policy.target_breach_rate))


def verdict(table: pd.DataFrame) -> list[str]:
    ok = table[table["worst_breach"] <= TARGET_MAX_RATE]
    base = ok[ok.index.isin(BASELINES)]
    best = base["avg_im"].idxmin()
    return [f"{m}: avg IM {table.loc[m, 'avg_im']:.2%} vs best baseline {best} {base.loc[best, 'avg_im']:.2%} -> "
            f"{1 - table.loc[m, 'avg_im'] / base.loc[best, 'avg_im']:+.1%} less (worst side "
            f"{table.loc[m, 'worst_breach']:.2%} vs {table.loc[best, 'worst_breach']:.2%})"
            for m in table.index if m not in BASELINES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path)
    parser.add_argument("--validation-start", default="2023-01-01")
    parser.add_argument("--mpor-hours", type=int, default=None, help="an intraday MPOR (hours after the close)")
    args = parser.parse_args()
    began = time.perf_counter()
    start = pd.Timestamp(args.validation_start, tz="UTC")
    forecasts = pd.read_parquet(args.run / "forecasts.parquet")
    if "set" in forecasts:  # an unseen_assets folder: its unseen set; else (forecast_accuracy) every row
        forecasts = forecasts[forecasts["set"].isin(["unseen", "both"])].drop(columns="set")
    bars = load_panel([str(f) for f in all_files()])
    if args.mpor_hours:
        forecasts = with_intraday_moves(forecasts, bars, args.mpor_hours)
    regime = asset_regime(daily_panel(bars))
    pd.set_option("display.width", 250)
    tables = {"one scale per side": policy_table(forecasts, start, args.mpor_hours)}
    for kind in ("asset", "market"):
        print(f"{kind} regime:", flush=True)
        tables[f"a scale per side and {kind} regime"] = policy_table(
            bucketed(with_regime(forecasts, regime, kind), start), start, args.mpor_hours)
    for name, table in tables.items():
        print(f"\n## {name} (validation from {start.date()})\n")
        print(table[["breach_long", "breach_short", "avg_im_long", "avg_im_short", "avg_im", "max_5d_rise"]]
              .to_markdown(floatfmt=".4f"))
        print("\n".join(verdict(table)))
    print(f"\nwall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
