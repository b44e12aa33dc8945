"""Candidate GBM features tried on the unseen-asset selection runs (issue 10), without touching the product.

    python bench/unseen_feature_trials.py TRIAL [unseen_assets.py arguments]

TRIAL appends columns to the shared feature core's output for this process only (the GBM reads its
feature list from the frame, so nothing else changes):
- `long_level:DAYS`: mean log RV of the complete days over the last DAYS rows minus level_t, the asset's
  long-run level (what a per-asset HAR's intercept knows and the 66-day level does not);
- `long_all`: long_level:365 plus, over the same 365 rows, the dispersion of log RV, log mean RV minus level_t
  and the log of the largest squared daily return minus level_t;
- `market`: a market factor, BTC's (binance_btcusdt) daily log RV and log 5-day mean RV, each minus BTC's own
  66-day level (is the market hot against its norm?), on every asset's rows, known at the same close;
- `liquidity:DAYS`: log of the mean traded value (volume x close, quote currency) over the last DAYS rows: thin
  markets jump more than their recent RV says.
- `trend:DAYS`: the asset's trailing DAYS-row log return over its own volatility (sqrt(DAYS) x the level's daily
  volatility), and its drawdown from the highest close of the last DAYS rows in the same unit: scale-free trend
  and bear-market state for the tails (a long breach follows a fall more often than a rally).
- `late:HOURS`: intraday recency, the log RV of the day's last HOURS hourly bars scaled to a day (x 24 / HOURS)
  minus level_t (how the day ended; the daily measures weigh its first and last hours alike); the daily
  panel carries it from the hourly bars, so it would be a new serving input.
- `ewm:HOURS`: the same recency smoothly, the log of 24 x the exponentially weighted mean of the squared hourly
  returns (half-life HOURS) at the day's last bar, minus level_t.
- `semi:DAYS`: realized semivariance (Patton & Sheppard 2015): the day's signed jump share (RS+ - RS-) / RV and
  the log of the mean downside semivariance RS- (sum of the negative hourly returns' squares) over the last DAYS
  rows minus level_t (bad volatility predicts more than good); the daily panel carries RS- from the hourly bars,
  so it would be a new serving input.
- `rq:DAYS`: realized quarticity in scale-free form (the HARQ idea of Bollerslev, Patton & Quaedvlieg 2016: RV is
  a noisier measure when a few returns carry it): the log of sum r^4 / (sum r^2)^2 of the day's hourly returns,
  and its mean over the last DAYS rows.
- `har:DAYS`: the one-day forecast of a HAR fitted on the asset's own last DAYS rows (`unseen_har_blend.
  windowed_har`, refitted at every row) minus level_t: stacking, the per-asset model's view as an input.

The selection runs of the README, e.g.
    python bench/unseen_feature_trials.py long_level:365 --train-end 2021-09-30 --score-end 2021-12-31 \\
        --min-train 150 --models '' --variants '{"gbm": ["gbm", {}]}' --out runs/trial-q4-long365
    python bench/unseen_feature_trials.py long_level:365 --train-end 2020-12-31 --score-end 2021-12-31 \\
        --top-only --models '' --variants '{"gbm": ["gbm", {}]}' --out runs/trial-2021-long365
(copy a run's part-baselines.parquet into --out first to skip recomputing the baselines).
"""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
from volmargin_serving import features as core

import unseen_assets
from unseen_har_blend import windowed_har
import volmargin.features.learned as learned
import volmargin.models.gbm as gbm

MARKET_ASSET = "binance_btcusdt"


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, 1e-12))


def long_columns(daily: pd.DataFrame, level: np.ndarray, days: int, all_columns: bool) -> dict[str, np.ndarray]:
    rv = daily["rv"].where(daily["complete"]).to_numpy(dtype=float)
    log_rv = _log(rv)
    means = core.trailing_means(np.stack([log_rv, log_rv ** 2, rv]), (days,) * 3)
    columns = {"x_long_level": means[0] - level}
    if all_columns:
        largest = core._trailing_max(daily["ret"].to_numpy(dtype=float) ** 2, days)
        columns |= {"x_long_disp": np.sqrt(np.maximum(means[1] - means[0] ** 2, 0.0)),
                    "x_long_gap": _log(means[2]) - level, "x_long_max": _log(largest) - level}
    return columns


def market_columns(daily: pd.DataFrame, spec: core.FeatureSpec) -> dict[str, np.ndarray]:
    market = daily["market_rv"].to_numpy(dtype=float)
    log_market = _log(market)
    means = core.trailing_means(np.stack([log_market, market]), (spec.level_days, spec.week_days))
    return {"x_market_d": log_market - means[0], "x_market_w": _log(means[1]) - means[0]}


def liquidity_columns(daily: pd.DataFrame, days: int) -> dict[str, np.ndarray]:
    traded = (daily["volume"] * daily["close"]).to_numpy(dtype=float)
    return {"x_liquidity": _log(core.trailing_means(traded[None], (days,))[0])}


def trend_columns(daily: pd.DataFrame, level: np.ndarray, days: int) -> dict[str, np.ndarray]:
    unit = np.sqrt(days) * np.exp(0.5 * level)
    returns = np.nan_to_num(daily["ret"].to_numpy(dtype=float))
    log_close = np.log(daily["close"].to_numpy(dtype=float))
    high = core._trailing_max(log_close, days)
    return {"x_trend": np.clip(days * core.trailing_means(returns[None], (days,))[0] / unit, -10.0, 10.0),
            "x_drawdown": np.clip((log_close - high) / unit, -10.0, 0.0)}


def har_columns(daily: pd.DataFrame, level: np.ndarray, days: int) -> dict[str, np.ndarray]:
    return {"x_har": _log(windowed_har(daily, days).to_numpy()) - level}


def late_rv(bars: pd.DataFrame, hours: int) -> pd.Series:
    """Per UTC day, the RV of the hourly bars opening in its last `hours` hours, times 24 / hours."""
    squared = np.log(bars["close"]).diff() ** 2
    late = squared.where(bars.index.hour >= 24 - hours)
    return late.groupby(bars.index.floor("D")).sum(min_count=1) * 24 / hours


def ewm_rv(bars: pd.DataFrame, half_life: int) -> pd.Series:
    """Per UTC day, 24 x the exponentially weighted mean of the squared hourly returns at its last bar."""
    squared = np.log(bars["close"]).diff() ** 2
    smooth = squared.ewm(halflife=half_life, ignore_na=True).mean()
    return smooth.groupby(bars.index.floor("D")).last() * 24


def downside_rv(bars: pd.DataFrame) -> pd.Series:
    """Per UTC day, the sum of the squared negative hourly log returns (RS-; the first from the previous close)."""
    r = np.log(bars["close"]).diff()
    return (r.where(r < 0, 0.0) ** 2).where(r.notna()).groupby(bars.index.floor("D")).sum(min_count=1)


def quarticity_ratio(bars: pd.DataFrame) -> pd.Series:
    """Per UTC day, sum r^4 / (sum r^2)^2 of the hourly log returns (1/n when all are alike, 1 for one move)."""
    r = np.log(bars["close"]).diff()
    day = bars.index.floor("D")
    fourth, second = (r**4).groupby(day).sum(min_count=1), (r**2).groupby(day).sum(min_count=1)
    return fourth / second.where(second > 0) ** 2


def semi_columns(daily: pd.DataFrame, level: np.ndarray, days: int) -> dict[str, np.ndarray]:
    rv, down = daily["rv"].to_numpy(dtype=float), daily["rs_neg"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(rv > 0, (rv - 2 * down) / rv, np.nan)
    mean_down = daily["rs_neg"].rolling(days, min_periods=1).mean().to_numpy(dtype=float)
    return {"x_sj": share, "x_semi": _log(mean_down) - level}


def quarticity_columns(daily: pd.DataFrame, days: int) -> dict[str, np.ndarray]:
    log_ratio = np.log(daily["rq_ratio"])
    return {"x_rq": log_ratio.to_numpy(dtype=float),
            "x_rq_w": log_ratio.rolling(days, min_periods=1).mean().to_numpy(dtype=float)}


def install(trial: str) -> None:
    """Wrap the feature frame (and the names the GBM learns from) with the trial's columns."""
    plain_frame, plain_names = learned.feature_frame, learned.feature_names
    kind, _, days = trial.partition(":")
    if kind not in ("long_level", "long_all", "market", "liquidity", "trend", "har", "late", "ewm",
                    "semi", "rq"):
        raise SystemExit(f"unknown trial {trial!r}: long_level:DAYS, long_all, market, liquidity:DAYS, trend:DAYS, "
                         "har:DAYS, late:HOURS, ewm:HOURS, semi:DAYS or rq:DAYS")

    def extra(daily: pd.DataFrame, spec: core.FeatureSpec, level: np.ndarray) -> dict[str, np.ndarray]:
        if kind == "market":
            return market_columns(daily, spec)
        if kind == "liquidity":
            return liquidity_columns(daily, int(days or 30))
        if kind == "trend":
            return trend_columns(daily, level, int(days or 30))
        if kind == "har":
            return har_columns(daily, level, int(days or 365))
        if kind == "semi":
            return semi_columns(daily, level, int(days or 5))
        if kind == "rq":
            return quarticity_columns(daily, int(days or 5))
        if kind in ("late", "ewm"):
            return {f"x_{kind}": _log(daily["late_rv"].to_numpy(dtype=float)) - level}
        return long_columns(daily, level, int(days or 365), kind == "long_all")

    def feature_frame(daily, spec=core.FeatureSpec(), iv_features=False):
        frame = plain_frame(daily, spec, iv_features)
        level = frame.pop("level")
        return frame.assign(**extra(daily, spec, level.to_numpy()), level=level)

    probe = pd.DataFrame({c: [1.0] * 3 for c in ("rv", "ret", "market_rv", "volume", "close", "late_rv",
                                                     "rs_neg", "rq_ratio")}
                         | {"complete": [True] * 3},
                         index=pd.date_range("2020-01-01", periods=3, tz="UTC"))
    names = tuple(extra(probe, core.FeatureSpec(), np.zeros(3)))

    def feature_names(iv_features: bool, liquidity: bool = False) -> tuple[str, ...]:
        return plain_names(iv_features, liquidity) + names

    learned.feature_frame = gbm.feature_frame = feature_frame
    gbm.feature_names = feature_names  # the plain frame keeps the plain names
    if kind == "market":
        plain_panel = unseen_assets.daily_panel

        def daily_panel(*args, **kwargs):
            panel = plain_panel(*args, **kwargs)
            btc = panel[MARKET_ASSET]
            market = btc["rv"].where(btc["complete"])
            return {a: d.assign(market_rv=market.reindex(d.index).to_numpy()) for a, d in panel.items()}
        unseen_assets.daily_panel = daily_panel
    if kind in ("late", "ewm"):
        plain_panel, recent_rv = unseen_assets.daily_panel, late_rv if kind == "late" else ewm_rv

        def daily_panel(bars_panel, *args, **kwargs):  # the column is named late_rv for both kinds
            panel = plain_panel(bars_panel, *args, **kwargs)
            return {a: d.assign(late_rv=recent_rv(bars_panel[a], int(days or 6)).reindex(d.index).to_numpy())
                    for a, d in panel.items()}
        unseen_assets.daily_panel = daily_panel
    if kind in ("semi", "rq"):
        plain_bar_panel = unseen_assets.daily_panel
        column, measure = ("rs_neg", downside_rv) if kind == "semi" else ("rq_ratio", quarticity_ratio)

        def daily_panel(bars_panel, *args, **kwargs):
            panel = plain_bar_panel(bars_panel, *args, **kwargs)
            return {a: d.assign(**{column: measure(bars_panel[a]).reindex(d.index).to_numpy()})
                    for a, d in panel.items()}
        unseen_assets.daily_panel = daily_panel


if __name__ == "__main__":
    install(sys.argv[1])
    sys.argv = [sys.argv[0], *sys.argv[2:]]
    unseen_assets.main()
