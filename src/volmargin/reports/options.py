"""The option-margin report of `volmargin options`: one self-contained HTML file with the coverage and
margin of each portfolio class per method and period, and each method's grid parameters over time."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from volmargin.evaluation.scoring import POOLED
from volmargin.io import write_atomic
from volmargin.reports.figures import DPI, png
from volmargin.reports.html import img, key_values, note, page, table

PARAMETERS = (("range_down", "price range down"), ("range_up", "price range up"),
              ("vol_up", "vol shock up (30 days)"), ("vol_down", "vol shock down (30 days)"))


def grid_figure(grids: pd.DataFrame) -> Figure:
    """Four panels: each grid parameter per snapshot day, one line per method (static dashed)."""
    fig = Figure(figsize=(12, 6.4), dpi=DPI, layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    methods = list(dict.fromkeys(grids["method"]))
    for ax, (column, title) in zip(axes, PARAMETERS):
        for method in methods:
            frame = grids[grids["method"] == method].sort_values("day")
            static = method == "deribit_static"
            ax.plot(pd.to_datetime(frame["day"]), frame[column], ".", ms=3, label=method,
                    color="black" if static else None, linestyle="--" if static else "none")
        ax.set_title(title, fontsize=10)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.tick_params(axis="x", labelsize=8, rotation=30)
    axes[0].legend(fontsize=7, ncol=2)
    return fig


# run.json keys of the autocalibrated grid's design and anti-procyclical levers, with their report labels
SETTINGS = (("calibrate_on", "scales calibrated on (synthetic: a year of DVOL-priced books before the cut)"),
            ("synthetic_books", "synthetic calibration books"), ("stress", "stressed component F (0: off)"),
            ("stress_days", "stressed look-back, days"),
            ("buffer", "APC buffer"), ("fall_cap", "fall cap a day"), ("peak", "peak memory (0: off)"),
            ("steps", "price steps (even grid)"), ("spacing", "lattice spacing (none: even grid)"),
            ("keep_vol", "static vol shocks kept as extra states"),
            ("scales_on_grid", "scales bisected on the grid used (lattice, kept states)"))


def settings_table(record: dict) -> str:
    """The grid design and APC levers the run used, as recorded in run.json ("none" where off)."""
    return key_values({label: "none" if record.get(key, None) is None else record[key] for key, label in SETTINGS
                       if key in record})


def write_options_report(summary: pd.DataFrame, grids: pd.DataFrame, record: dict, out: Path) -> Path:
    kinds = {"portfolios": "int", "days": "int", "breaches": "int", "breach_rate": "pct", "avg_margin": "pct",
             "worst_shortfall": "pct", "scale": "f3", "margin_ratio_to_static": "f3"}
    pooled = summary[summary["portfolio_class"] == POOLED].drop(columns="portfolio_class")
    per_class = summary[(summary["portfolio_class"] != POOLED) & (summary["period"] == "validation")]
    sections = [
        ("pooled", "All classes pooled", table(pooled, kinds) + note(
            "Breach: the realised loss to the next snapshot exceeds the initial margin. Margins and shortfalls "
            "are fractions of each book's underlying notional (spot x gross contracts).")),
        ("classes", "Per class, validation period", table(per_class.drop(columns="period"), kinds)),
        ("settings", "Grid design and APC levers of this run", settings_table(record) + note(
            "All but the static floor go on top of the scale calibrated without them; the static grid is always "
            "Deribit's 9 points over +-16%.")),
        ("grids", "Grid parameters over time", img(png(grid_figure(grids)), "grid parameters per day") + note(
            "Vol shocks are the 30-day shocks; each option's shock is scaled by (30 / days)^p.")),
    ]
    header = note(f"{record['books']:,} books over {record['snapshots']} snapshots; calibrated before "
                  f"{record['calibrate_until']} to a {record['target']:.1%} breach target per class."
                  + (f" Out of reach on the calibration books for {', '.join(record['infeasible'])}: some losses "
                     "lie outside any scale of their grid; their scale covers the rest."
                     if record.get("infeasible") else ""))
    html = page("volmargin: option portfolio margins", header, sections)
    return write_atomic(out, lambda p: p.write_text(html, encoding="utf-8"))
