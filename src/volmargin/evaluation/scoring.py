"""Scores of historical forecasts, computed any number of times without refitting.

Input: the long forecast table of `volmargin.evaluation.backtest` (asset, model, origin, variance,
var*/es* per level and side, realized_rv, realized_ret). Rows without a realized target (the newest
origins, incomplete days) or with zero realized variance are left out of the scores and counted.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from volmargin.evaluation import stats
from volmargin.models.base import SIDES, forecast_levels, level_tag

log = logging.getLogger(__name__)

POOLED = "ALL"
LEADING_COLUMNS = [
    "asset", "model", "n", "qlike", "mse_log", "mz_r2", "var99_long_exceptions", "var99_short_exceptions",
    "kupiec_p_long", "kupiec_p_short", "christoffersen_p_long", "christoffersen_p_short",
    "basel_zone_long", "basel_zone_short", "es975_z2_long", "es975_z2_short",
]


def side_losses(frame: pd.DataFrame, side: str) -> np.ndarray:
    ret = frame["realized_ret"].to_numpy()
    return -ret if side == "long" else ret


def scorable(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows that have a realized target and a positive realized variance."""
    ok = frame["realized_rv"].notna() & frame["realized_ret"].notna() & (frame["realized_rv"] > 0)
    return frame[ok & (frame["variance"] > 0)]


def coverage_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows the coverage tests' p-values read: all at horizon 1; at horizon h > 1 the origins h days apart
    (day number divisible by h), whose h-day targets do not overlap. Overlapping targets share days, so their
    exceptions come in runs: Christoffersen's test would reject a model for the overlap itself, and the
    binomial variance of Kupiec's would be too small. Exception counts and rates read every row."""
    horizon = int(frame["horizon"].max()) if "horizon" in frame and len(frame) else 1
    if horizon <= 1 or "origin" not in frame:
        return frame
    return frame[coverage_mask(frame["origin"], horizon)]


def coverage_mask(origins, horizon: int) -> np.ndarray:
    """True at the origins `coverage_rows` keeps: every one at horizon 1, else those of one phase of the day
    number modulo `horizon` (non-overlapping h-day targets): phase 0, the same calendar days for every asset and
    model, unless another phase keeps more than one origin more (origins already h days apart on another phase
    kept none, and every p-value came out NaN; session 31's red team)."""
    origins = pd.DatetimeIndex(origins)
    if horizon <= 1:
        return np.ones(len(origins), dtype=bool)
    days = (origins.tz_convert(None) if origins.tz is not None else origins).to_numpy().astype("datetime64[D]")
    phase = days.astype(np.int64) % horizon
    counts = np.bincount(phase, minlength=horizon)
    return phase == (0 if counts[0] >= counts.max() - 1 else int(np.argmax(counts)))


def score_group(frame: pd.DataFrame, var_levels: tuple[float, ...], es_level: float) -> dict:
    """Every score of one (asset, model) group, or of a pooled group (tests then run on the
    concatenation of the assets' series in asset order). The coverage tests' p-values read
    `coverage_rows`."""
    frame = scorable(frame)
    sparse = coverage_rows(frame)
    sigma2, rv = frame["variance"].to_numpy(), frame["realized_rv"].to_numpy()
    row: dict = {"n": len(frame)}
    if len(frame) < 2:
        return row
    row["qlike"] = stats.qlike(sigma2, rv).mean()
    row["mse_log"] = stats.mse_log(sigma2, rv).mean()
    row["mz_r2"] = _mz_r2(sigma2, rv)
    for level in var_levels:
        tag = level_tag(level)
        for side in SIDES:
            result = stats.var_backtest(side_losses(frame, side), frame[f"var{tag}_{side}"].to_numpy(), level)
            tested = result if sparse is frame else _tests_of(sparse, tag, side, level)
            row[f"var{tag}_{side}_exceptions"] = result["exceptions"]
            row[f"var{tag}_{side}_rate"] = result["rate"]
            suffix = side if level == var_levels[0] else f"{tag}_{side}"
            row[f"kupiec_p_{suffix}"] = tested["kupiec_p"]
            row[f"christoffersen_p_{suffix}"] = tested["christoffersen_p"]
            # the zones count non-overlapping targets too: at h > 1 one move is an exception of up to h rows
            row[f"basel_zone_{suffix}"] = tested["basel_zone"]
            row[f"basel_windows_{suffix}"] = tested["basel_windows"]
            row[f"basel_green_windows_{suffix}"] = tested["basel_green_windows"]
    es_tag = level_tag(es_level)
    for side in SIDES:
        row[f"es{es_tag}_z2_{side}"] = stats.acerbi_szekely_z2(
            side_losses(frame, side),
            frame[f"var{es_tag}_{side}"].to_numpy(),
            frame[f"es{es_tag}_{side}"].to_numpy(),
            alpha=1 - es_level,
        )
    return row


def _tests_of(rows: pd.DataFrame, tag: str, side: str, level: float) -> dict:
    """Kupiec and Christoffersen p-values and Basel zones of `rows` (NaN and no zone where fewer than two)."""
    if len(rows) < 2:
        return {"kupiec_p": np.nan, "christoffersen_p": np.nan, "basel_zone": None, "basel_windows": 0,
                "basel_green_windows": 0}
    return stats.var_backtest(side_losses(rows, side), rows[f"var{tag}_{side}"].to_numpy(), level)


def _mz_r2(sigma2: np.ndarray, rv: np.ndarray) -> float:
    """Mincer-Zarnowitz R^2, NaN where a constant forecast or target leaves it undefined (a model constant on
    one asset stopped every score of the run with an internal error)."""
    if np.ptp(sigma2) == 0 or np.ptp(rv) == 0:
        return np.nan
    return stats.mincer_zarnowitz(sigma2, rv).r2


def score_forecasts(
    forecasts: pd.DataFrame, var_levels: tuple[float, ...] = (0.99,), es_level: float = 0.975
) -> pd.DataFrame:
    """One row per (asset, model) and a pooled row per model (asset == 'ALL').

    The first of `var_levels` gets the plain column names (kupiec_p_long, basel_zone_long, ...);
    others carry their level tag.
    """
    rows = []
    for (model, asset), group in forecasts.groupby(["model", "asset"], sort=True):
        rows.append({"asset": asset, "model": model, **score_group(group, var_levels, es_level)})
    per_asset = pd.DataFrame(rows)
    for model, group in forecasts.groupby("model", sort=True):
        pooled = {"asset": POOLED, "model": model, **score_group(group, var_levels, es_level)}
        own = per_asset[per_asset["model"] == model]
        rows.append({**pooled, **_pooled_basel(own), **_pooled_dependence(group, var_levels, own)})
    scores = pd.DataFrame(rows)
    leading = [c for c in LEADING_COLUMNS if c in scores]
    return scores[leading + [c for c in scores if c not in leading]]


def _pooled_basel(per_asset: pd.DataFrame) -> dict:
    """Basel windows never straddle two assets: the pooled zone is the worst asset's, the window
    counts are sums over assets."""
    pooled = {}
    for column in [c for c in per_asset if c.startswith("basel_zone_")]:
        zones = per_asset[column].dropna()
        pooled[column] = max(zones, key=stats.ZONES.index) if len(zones) else None
    for column in [c for c in per_asset if c.startswith("basel_") and "windows" in c]:
        pooled[column] = int(per_asset[column].sum())
    return pooled


def _pooled_dependence(frame: pd.DataFrame, var_levels: tuple[float, ...], per_asset: pd.DataFrame) -> dict:
    """The pooled row's tests that respect the dependence between assets: crypto exceptions fall on the same
    days (a design effect of 4-5 by date on the large caps), so Kupiec's binomial test of the pooled hits is
    also given with its variance inflated by their clustering on dates (`kupiec_p_clustered_*`,
    `design_effect_*`), and the Christoffersen p-value is the median of the assets' own (their series end
    to end would test transitions from one asset to the next)."""
    frame = coverage_rows(scorable(frame))
    if len(frame) < 2:
        return {}
    pooled, dates = {}, pd.factorize(frame["date" if "date" in frame else "origin"])[0]
    for level in var_levels:
        tag = level_tag(level)
        for side in SIDES:
            suffix = side if level == var_levels[0] else f"{tag}_{side}"
            hits = side_losses(frame, side) > frame[f"var{tag}_{side}"].to_numpy()
            pooled[f"kupiec_p_clustered_{suffix}"] = stats.kupiec_clustered(hits, dates, 1.0 - level).pvalue
            pooled[f"design_effect_{suffix}"] = stats.design_effect(hits, dates)
            if f"christoffersen_p_{suffix}" in per_asset:
                pooled[f"christoffersen_p_{suffix}"] = float(per_asset[f"christoffersen_p_{suffix}"].median())
    return pooled


def pooled_losses(forecasts: pd.DataFrame, loss: str = "qlike") -> pd.DataFrame:
    """Per-date cross-sectional mean loss per model over the (asset, date) pairs all models share,
    so a Diebold-Mariano test compares models on exactly the same targets."""
    frame = scorable(forecasts)
    loss_fn = {"qlike": stats.qlike, "mse_log": stats.mse_log}[loss]
    frame = frame.assign(loss=loss_fn(frame["variance"].to_numpy(), frame["realized_rv"].to_numpy()))
    wide = frame.pivot_table(index=["date", "asset"], columns="model", values="loss").dropna()
    return wide.groupby(level="date").mean()


def diebold_mariano_table(forecasts: pd.DataFrame, reference: str, loss: str = "qlike") -> pd.DataFrame:
    """DM test of every model against `reference` on pooled per-date losses (negative statistic:
    the model beats the reference)."""
    daily = pooled_losses(forecasts, loss)
    if reference not in daily:
        return pd.DataFrame()
    rows = []
    horizon = int(forecasts["horizon"].max()) if "horizon" in forecasts else 1  # overlapping targets: more lags
    for model in daily.columns.drop(reference):
        try:
            result = stats.diebold_mariano(daily[model].to_numpy(), daily[reference].to_numpy(), horizon=horizon)
        except ValueError as exc:  # too few dates for its lags, or a constant differential: no test, said why
            result = stats.DMResult(statistic=np.nan, pvalue=np.nan, mean_diff=np.nan, n=len(daily))
            log.warning("Diebold-Mariano test of %s against %s not computed: %s", model, reference, exc)
        rows.append(
            {
                "model": model,
                "reference": reference,
                "loss": loss,
                "n_dates": result.n,
                "mean_loss": daily[model].mean(),
                "reference_loss": daily[reference].mean(),
                "ratio": daily[model].mean() / daily[reference].mean(),
                "dm_stat": result.statistic,
                "dm_p": result.pvalue,
            }
        )
    return pd.DataFrame(rows)


def write_scores(forecasts: pd.DataFrame, out: Path, reference: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores and Diebold-Mariano tables from forecasts, written beside them."""
    from volmargin.io import write_frame

    levels = forecast_levels(forecasts.columns)
    scores = score_forecasts(forecasts, var_levels=(0.99,) + tuple(x for x in levels if x != 0.99))
    dm = diebold_mariano_table(forecasts, reference)
    write_frame(scores, out / "scores.csv")
    write_frame(dm, out / "dm.csv")
    return scores, dm
