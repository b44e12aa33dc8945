"""The blend's variance combined with the asset's trailing mean squared daily return (or RV), on saved forecasts.

    python bench/unseen_level_blend.py --select runs/s15-q4 runs/s15-2021 --report runs/s15-report
    python bench/unseen_level_blend.py ... --spans 121 --weights 0.8,0.85,0.9,0.95,0.975,1   # session 16
    python bench/unseen_level_blend.py ... --spans 121 --measures ret2,rv --weights 0.85,0.875,0.9,0.925,0.95,1

Why: the combination with the asset's own GJR-GARCH (`bench/unseen_gjr_blend.py`) won on the jump days, and a
GJR whose long-run level comes from the last 121 days only did not help at all (a /tmp check in session 15): its
gain is the asset's long-run variance, which the frozen global model does not know. The plainest estimate of
that level is the mean of the squared daily returns over the last N days (origin included), which a runtime
holding N days of inputs can compute; N = 121 is the blend bundle's own window (`history_days`), servable with
no new input. Combination: variance w f_blend + (1 - w) level_N, the blend's VaR and ES scaled by
sqrt(combination / f_blend); a level needs at least 60 of its N days.

How it was found: in session 15, after the GJR run, N = 365 was looked at on the report run (w = 0.9: QLIKE / HAR
0.965, worst-1% days 16.9 against HAR's 17.8), so the report column is not blind for it. Rule, written here
before any selection run was read with it and before N = 121 was looked at anywhere: among N in (121, 365) and
w in --weights, the pair with the least mean QLIKE / HAR over the two selection runs (129 assets trained to
2021-09-30 scored over 2021-Q4; 29 large caps trained to 2020-12-31 scored over 2021) is chosen; the report run
is then read with every figure of `bench/unseen_assets.py`.

Session 16 put the level in the product (`BlendForecaster.long_share`), with its span fixed at 121 days for
serving's sake (a runtime holds long_days rows of inputs: 365 would keep a listing younger than a year from
the blend) and its weight chosen by the same rule with `--spans 121` on the selection runs; the product's
own figures come from `bench/unseen_assets.py` (README). Then, on the selection runs alone, the mean daily RV
of the complete days (`--measures rv`: less noisy than one squared return a day) against the squared return,
over a finer weight grid: RV at w = 0.925 won (0.9532 against 0.9554), the report run unread for it; the
product took it (`long_share` 0.075).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from unseen_assets import all_files
from unseen_har_blend import BASELINES, blended, combination_args, select_and_report
from volmargin.data import load_panel
from volmargin.evaluation.backtest import daily_panel

KEYS = ["asset", "origin"]
MIN_DAYS = 60


def levels(daily: dict[str, pd.DataFrame], spans: list[int], measures: list[str]) -> pd.DataFrame:
    """(asset, origin) -> `level_{measure}{N}`: the mean over the N days up to the origin of the squared daily
    return (ret2; a day without a return does not count) or the RV of the complete days (rv)."""
    frames = []
    for asset, frame in daily.items():
        series = {"ret2": frame["ret"] ** 2, "rv": frame["rv"].where(frame["complete"].astype(bool))}
        frames.append(pd.DataFrame({"asset": asset, "origin": frame.index, **{
            f"level_{m}{n}": series[m].rolling(n, min_periods=MIN_DAYS).mean().to_numpy()
            for m in measures for n in spans}}))
    return pd.concat(frames, ignore_index=True)


def with_combinations(run: Path, level: pd.DataFrame, weights: list[float], learned: str = "blend") -> pd.DataFrame:
    """The run's unseen one-day forecasts plus `{learned}_{measure}{N}_w{w}` per level column and weight < 1, on
    the same rows (labels `{learned}_l{N}_w{w}` for the squared return, as session 15 printed them)."""
    forecasts = pd.read_parquet(run / "forecasts.parquet")
    forecasts = forecasts[(forecasts["horizon"] == 1) & forecasts["set"].isin(["unseen", "both"])]
    columns = [c for c in level.columns if c.startswith("level_")]
    rows = forecasts[forecasts["model"] == learned].merge(level, on=KEYS).dropna(subset=columns)
    own = rows.drop(columns=columns)
    label = lambda column: column.removeprefix("level_").replace("ret2", "l")  # noqa: E731
    combined = [blended(own, rows[c].to_numpy(), w, f"{learned}_{label(c)}_w{w:g}") for c in columns
                for w in weights if w < 1]
    kept = forecasts[forecasts["model"].isin([learned, *BASELINES])].merge(rows[KEYS], on=KEYS)  # no other candidate
    return pd.concat([kept, *combined], ignore_index=True)


def main() -> None:
    began = time.perf_counter()
    def options(parser) -> None:
        parser.add_argument("--spans", default="121,365", help="days of the level's mean, comma-separated")
        parser.add_argument("--measures", default="ret2", help="ret2 (squared daily return) and / or rv")
        parser.add_argument("--model", default="blend", help="the learned variant combined (blend, gbm, ...)")

    args, weights = combination_args(__doc__, "0.8,0.85,0.9,0.95,1", options)
    level = levels(daily_panel(load_panel([str(f) for f in all_files()])), [int(n) for n in args.spans.split(",")],
                   args.measures.split(","))
    select_and_report(args.select, args.report, lambda run: with_combinations(run, level, weights, args.model),
                      args.model)
    print(f"\nwall time {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
