"""Where the learned long tail breaks: the 99% VaR breaches of each model on the market-wide crash days of a
saved `bench/unseen_assets.py` run, and what set the GBM's long quantile on those days.

    python bench/unseen_tail_days.py runs/mono-q4 [--days 2021-11-26,2021-12-04] [--contributions 2021-09-30]

Per model (unseen set): the median standardized 99% long quantile (VaR / forecast volatility), its Spearman
correlation with the trailing 5-day return, breaches per side, and on each crash day (by default the three
days with most HAR long breaches) the breaches, the median quantile and the median trailing 5-day return.
With `--contributions TRAIN_END`, one GBM (the current default) is fitted on every asset up to TRAIN_END and
LightGBM's per-feature contributions to its 99% long tail booster (before tail calibration's factor, which
scales them all alike) are averaged over the crash days' origins and over the other scored origins: which
features made the tail thinner on the crash days.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from unseen_assets import all_files
from common import hourly_spot_files


def tail_table(forecasts: pd.DataFrame, days: pd.DatetimeIndex | None) -> tuple[pd.DataFrame, pd.DatetimeIndex]:
    rows = forecasts[forecasts["set"] != "in_asset"].sort_values(["model", "asset", "date"]).copy()
    grouped = rows.groupby(["model", "asset"])["realized_ret"]
    rows["ret5"] = grouped.transform(lambda r: r.shift(1).rolling(5).sum())  # known at the origin
    rows["q_long"] = rows["var99_long"] / np.sqrt(rows["variance"])
    rows["breach_long"] = -rows["realized_ret"] > rows["var99_long"]
    rows["breach_short"] = rows["realized_ret"] > rows["var99_short"]
    if days is None:
        har = rows[rows["model"] == "har"].groupby("date")["breach_long"].sum()
        days = har.sort_values().index[-3:].sort_values()
    table = []
    for model, group in rows.groupby("model"):
        known = group.dropna(subset=["ret5"])
        row = {"model": model, "q_long median": group["q_long"].median(),
               "spearman(q_long, ret5)": known[["q_long", "ret5"]].corr(method="spearman").iloc[0, 1],
               "breaches long": int(group["breach_long"].sum()), "breaches short": int(group["breach_short"].sum())}
        for day in days:
            on = group[group["date"] == day]
            row[f"{day.date()} breaches / q / ret5"] = (f"{int(on['breach_long'].sum())} / {on['q_long'].median():.2f}"
                                                        f" / {on['ret5'].median():+.3f}")
        table.append(row)
    return pd.DataFrame(table), days


def contributions(train_end: str, days: pd.DatetimeIndex, top_only: bool, scored: pd.DataFrame) -> pd.DataFrame:
    from volmargin.data import load_panel
    from volmargin.evaluation.backtest import daily_panel
    from volmargin.features.learned import feature_frame
    from volmargin.models import make_forecaster

    panel = daily_panel(load_panel([str(f) for f in (hourly_spot_files() if top_only else all_files())]))
    end = pd.Timestamp(train_end, tz="UTC")
    model = make_forecaster("gbm").fit_panel({a: d.loc[:end] for a, d in panel.items() if len(d.loc[:end])})
    first, last = scored["origin"].min(), scored["origin"].max()
    frames = [feature_frame(panel[a].loc[:last], model.feature_spec_, model.iv_features).loc[first:]
              for a in scored["asset"].unique()]
    frame = pd.concat(frames).dropna(subset=["level"])
    names = list(model.feature_names_)
    booster = model.quantile_models_["long"][list(model.levels_).index(0.99)].booster_
    parts = pd.DataFrame(booster.predict(model._inputs(frame), pred_contrib=True)[:, :-1], columns=names,
                         index=frame.index)
    crash = parts.index.isin(days - pd.Timedelta(days=1))  # the origins whose next day crashed
    return pd.DataFrame({"crash origins": parts[crash].mean(), "other origins": parts[~crash].mean(),
                         "difference": parts[crash].mean() - parts[~crash].mean(),
                         "feature on crash origins (median)": frame.loc[crash, names].median(),
                         "feature elsewhere (median)": frame.loc[~crash, names].median()}).sort_values("difference")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a bench/unseen_assets.py --out folder")
    parser.add_argument("--days", default=None, help="crash days (targets), comma-separated")
    parser.add_argument("--contributions", default=None, metavar="TRAIN_END")
    parser.add_argument("--top-only", action="store_true", help="the 29 top-level files only (as the run)")
    args = parser.parse_args()
    forecasts = pd.read_parquet(args.run / "forecasts.parquet")
    days = pd.DatetimeIndex(pd.to_datetime(args.days.split(",")).tz_localize("UTC")) if args.days else None
    table, days = tail_table(forecasts, days)
    pd.set_option("display.width", 250)
    print(table.to_markdown(index=False, floatfmt=".2f"))
    if args.contributions:
        print(f"\nContributions to the GBM's 99% long tail booster (trained to {args.contributions}), crash origins "
              f"{', '.join(str((d - pd.Timedelta(days=1)).date()) for d in days)}:\n")
        scored = forecasts[forecasts["model"] == "har"]
        print(contributions(args.contributions, days, args.top_only, scored).to_markdown(floatfmt=".3f"))


if __name__ == "__main__":
    main()
