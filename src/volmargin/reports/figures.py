"""Figures of the report, drawn on bare Agg figures (no pyplot state, so nothing is left open)
and returned as base64 PNG text ready to embed."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

DPI = 90
COLORS = ("#1f6fb4", "#d9480f", "#2b8a3e", "#7048e8")
GREY = "#9aa0a6"


def png(fig: Figure) -> str:
    buffer = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buffer)  # the figure was made at DPI
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _panels(n: int, cols: int, width: float, height: float) -> tuple[Figure, list]:
    cols = max(1, min(cols, n))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows + 0.4), dpi=DPI, layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax in axes[:n]:
        locator = AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator, show_offset=False))  # years: in ticks or titles
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, lw=0.5)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    return fig, list(axes[:n])


def _legend(fig: Figure, axes: list) -> None:
    handles: dict = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    columns = min(len(handles), max(2, int(fig.get_figwidth() / 1.9)))  # about 1.9 inches per legend entry
    fig.legend(list(handles.values()), list(handles), loc="outside upper center", ncol=columns, fontsize=8,
               frameon=False)


def annualised(frame: pd.DataFrame, column: str, weekly: bool) -> pd.Series:
    """sqrt(365 * variance / horizon) by date; with `weekly`, of the weekly mean daily variance."""
    daily = (frame[column] / frame["horizon"]).set_axis(frame["date"]).dropna()
    if weekly:
        daily = daily.resample("W").mean().dropna()
    return np.sqrt(365.0 * daily)


def volatility(groups: dict[str, pd.DataFrame], models: list[str], weekly: bool) -> Figure:
    """Forecast vs realized annualised volatility, one panel per asset."""
    fig, axes = _panels(len(groups), 3, 4.3, 2.3)
    for ax, (asset, frame) in zip(axes, groups.items()):
        real = annualised(frame.drop_duplicates("date"), "realized_rv", weekly)
        ax.plot(real.index, real, color=GREY, lw=0.6, alpha=0.8, label="realized")
        top = real.quantile(0.995) if len(real) else 0.0
        for model, color in zip(models, COLORS):
            vol = annualised(frame[frame["model"] == model], "variance", weekly)
            ax.plot(vol.index, vol, color=color, lw=0.9, alpha=0.85, label=model)
            top = max(top, vol.max())
        ax.set_ylim(0, 1.08 * top if top > 0 else 1.0)
        ax.set_title(asset, fontsize=9)
        ax.set_ylabel("annualised volatility", fontsize=7)
    _legend(fig, axes)
    return fig


def _return_limit(frame: pd.DataFrame) -> float:
    """Symmetric y range of an asset's row: every return, VaR spikes beyond them clipped."""
    var = pd.concat([frame["var99_long"], frame["var99_short"]])
    return 1.12 * max(frame["realized_ret"].abs().max(), var.quantile(0.99), 1e-4)


def exceedances(groups: dict[str, pd.DataFrame], models: list[str]) -> Figure:
    """Realized return against -VaR99 long and +VaR99 short, exceedances marked; one row per asset."""
    panels = [(asset, model) for asset in groups for model in models]
    fig, axes = _panels(len(panels), len(models) if len(models) > 1 else 2, 6.2, 2.3)
    limits = {asset: _return_limit(frame) for asset, frame in groups.items()}
    for ax, (asset, model) in zip(axes, panels):
        rows = groups[asset]
        rows = rows[(rows["model"] == model) & rows["realized_ret"].notna()]
        ret, date = rows["realized_ret"], rows["date"]
        long_hit, short_hit = -ret > rows["var99_long"], ret > rows["var99_short"]
        ax.plot(date, ret, color=GREY, lw=0.5, label="realized return")
        ax.plot(date, rows["var99_short"], color=COLORS[1], lw=0.8, label="+VaR99 short")
        ax.plot(date, -rows["var99_long"], color=COLORS[0], lw=0.8, label="−VaR99 long")
        ax.scatter(date[long_hit], ret[long_hit], marker="v", s=16, color=COLORS[0], zorder=3, label="long exceedance")
        ax.scatter(date[short_hit], ret[short_hit], marker="^", s=16, color=COLORS[1], zorder=3,
                   label="short exceedance")
        ax.set_ylim(-limits[asset], limits[asset])
        horizon = int(rows["horizon"].max()) if "horizon" in rows and len(rows) else 1
        ax.set_ylabel("daily log return" if horizon == 1 else f"{horizon}-day log return", fontsize=7)
        ax.set_title(f"{asset} · {model}: {int(long_hit.sum())} long / {int(short_hit.sum())} short "
                     f"exceedances in {len(rows):,} days", fontsize=8.5)
    _legend(fig, axes)
    return fig


def stress(panels: list[tuple[str, pd.DataFrame, pd.Timestamp]], models: list[str]) -> Figure:
    """Initial margin per model against the realised loss around each stress event (eve dotted)."""
    fig, axes = _panels(len(panels), 3, 4.3, 2.4)
    for ax, (title, window, eve) in zip(axes, panels):
        days = window.drop_duplicates("date")
        ax.bar(days["date"], days["loss"].clip(lower=0), width=0.8, color=GREY, label="realised loss")
        for model, color in zip(models, COLORS):
            rows = window[window["model"] == model]
            ax.plot(rows["date"], rows["initial_margin"], color=color, lw=1.1, label=f"{model} initial margin")
        for model, color in zip(models, COLORS):  # markers after every line keeps the legend in order
            hits = window[(window["model"] == model) & window["breach"].astype(bool)]
            ax.scatter(hits["date"], hits["loss"], marker="x", s=22, color=color, zorder=3,
                       label="breach (× in the model's colour)")
        ax.axvline(eve, color="#333", lw=0.7, ls=":")
        ax.set_ylabel("fraction of notional", fontsize=7)
        ax.set_title(title, fontsize=8.5)
    _legend(fig, axes)
    return fig
