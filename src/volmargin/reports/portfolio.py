"""The report's portfolio-margin section: the `portfolio/` outputs of a run (`volmargin portfolio` or the
`portfolio` stage of `volmargin run`): validation summary per class and model, the model comparison with
each model calibrated to the breach target, and the stress events replayed per class."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from volmargin.evaluation.scoring import POOLED
from volmargin.reports.html import note, table

SUMMARY = {"portfolio_class": ("class", None), "model": ("model", None), "portfolios": ("books", "int"),
           "book_days": ("book-days", "int"), "breach_rate": ("breach rate", "rate"), "kupiec_p": ("Kupiec p (pooled)", "p"),
           "kupiec_p_clustered": ("Kupiec p (clustered by date)", "p"), "design_effect": ("design effect", "f2"),
           "kupiec_p_book_median": ("Kupiec p (median book)", "p"),
           "christoffersen_p": ("Christoffersen p (median)", "p"), "avg_margin": ("margin", "pct"),
           "avg_isolated_margin": ("isolated margins", "pct"), "offset": ("offset", "pct"),
           "max_increase_5d": ("max 5-day rise", "pct"), "peak_to_trough": ("peak / trough", "f2"),
           "scale": ("scale", "f3"), "correlation_weight": ("corr. weight", "f2"),
           "concentration": ("concentration", "f2")}
STRESS = {"event": ("event", None), "portfolio_class": ("class", None), "model": ("model", None),
          "portfolios": ("books", "int"), "breaches": ("breaches", "int"), "avg_margin": ("margin", "pct"),
          "avg_loss": ("mean loss", "pct"), "max_shortfall": ("max shortfall", "pct"),
          "margin_vs_largest_isolated": ("margin / largest leg", "f2"), "out_of_sample": ("out of sample", "check")}


def _table(frame: pd.DataFrame, spec: dict) -> str:
    cols = [c for c in spec if c in frame]
    return table(frame[cols], {c: spec[c][1] for c in cols if spec[c][1]}, {c: spec[c][0] for c in cols})


def portfolio_section(folder: Path) -> str:
    folder = Path(folder)
    if not (folder / "summary.csv").is_file():
        return note("Not run: the portfolio margin outputs (portfolio/summary.csv) are written by "
                    "`volmargin portfolio` or the portfolio stage of `volmargin run`.")
    summary = pd.read_csv(folder / "summary.csv")
    parts = [note("Initial margin of test books across assets (FHS scenarios filtered by each model's forecasts, "
                  "scale and correlation-stress weight calibrated to the breach target on the calibration period); "
                  "figures on the validation period, as fractions of gross notional. Offset: the capital "
                  "cross-margining gives back against margining each position alone."),
             _table(summary, SUMMARY)]
    if (folder / "compare.csv").is_file():
        compare = pd.read_csv(folder / "compare.csv")
        compare = compare[compare["portfolio_class"] == POOLED]
        if len(compare):
            parts += ["<h3>Average margin against the references, each calibrated to the breach target</h3>",
                      note("Not at equal realised coverage: each model's validation breach rate is beside its "
                           "reference's; a ratio below 1 with a breach rate no higher than the reference's is a "
                           "saving at the same or better coverage. Not on identical books either: the adversary "
                           "picks each model's own worst books, and a book-day counts only where the model has a "
                           "forecast for every leg (the summary's book-days column)."),
                      table(compare, {"margin_ratio": "f3", "breach_rate": "pct", "reference_breach_rate": "pct"},
                            {"portfolio_class": "class", "margin_ratio": "margin ÷ reference's",
                             "breach_rate": "breach rate", "reference_breach_rate": "reference's breach rate"})]
    if (folder / "stress.csv").is_file():
        stress = pd.read_csv(folder / "stress.csv")
        if len(stress):
            parts += ["<h3>Stress events replayed per class</h3>", _table(stress, STRESS)]
    return "".join(parts)
