"""How much margin a better variance forecast can buy at equal coverage: the learned model mixed with the
realized variance it forecasts (an oracle share), read as a curve of QLIKE / HAR against margin.

    python bench/margin_headroom.py [--forecasts runs/unseen-s26/forecasts.parquet] [--model gbmcfg]

Reads a forecasts table of `bench/unseen_assets.py` (the unseen-asset rows of `--model`, or a baseline's own
refits with `--model har`, beside the baselines). For each oracle share w the model's variance becomes
var^(1 - w) rv^w, with rv the realized variance of the day it forecasts (look-ahead, on purpose: w = 1 knows
each day's variance exactly), and every VaR / ES is scaled by the same volatility ratio (the model's
standardized tails kept). Each mix then goes through the
issue's margin benchmark (`unseen_assets.margins`: 99% VaR, one pooled scale per side, 1% breach target,
calibrated on the first year, validated after it): QLIKE / HAR on the same rows, and the average initial
margin against the best baseline's. A diagnostic of the target, not a model: nothing here can serve.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from unseen_assets import REFERENCE, TARGET_MAX_RATE, margins
from volmargin.evaluation.stats import qlike

SHARES = (0.0, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
BASELINES = ("har", "ewma", "gjr")


def tail_columns(forecasts: pd.DataFrame) -> list[str]:
    return [c for c in forecasts.columns if c.startswith(("var", "es")) and c.endswith(("_long", "_short"))
            and c != "variance"]


def with_oracle(rows: pd.DataFrame, share: float, label: str) -> pd.DataFrame:
    """`rows` with variance var^(1 - share) rv^share and tails scaled by the volatility ratio."""
    mixed = rows.copy()
    mixed["variance"] = rows["variance"] ** (1 - share) * rows["realized_rv"] ** share
    ratio = np.sqrt(mixed["variance"] / rows["variance"])
    for column in tail_columns(rows):
        mixed[column] = rows[column] * ratio
    return mixed.assign(model=label)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forecasts", type=Path, default=Path("runs/unseen-s26/forecasts.parquet"))
    parser.add_argument("--model", default="gbmcfg")
    parser.add_argument("--validation-start", default=None, help="default: a year after the first target day")
    args = parser.parse_args()
    table = pd.read_parquet(args.forecasts)
    own = table["model"] == args.model  # a baseline's own refits, or a learned model's unseen-asset rows
    learned = table[own if args.model in BASELINES else own & (table["set"] == "unseen")]
    base = table[table["model"].isin(BASELINES)]
    keys = ["asset", "origin"]
    common = learned[keys].merge(base[base["model"] == REFERENCE][keys])  # rows every model has
    usable = (table["realized_rv"] > 0) & np.isfinite(table["realized_rv"])
    learned = learned[usable.loc[learned.index]].merge(common)
    base = base[usable.loc[base.index]].merge(common)
    mixes = {f"{args.model}+oracle{w:g}": with_oracle(learned, w, f"{args.model}+oracle{w:g}") for w in SHARES}
    forecasts = pd.concat([base, *mixes.values()], ignore_index=True)
    start = pd.Timestamp(args.validation_start) if args.validation_start else \
        (forecasts["origin"].min() + pd.DateOffset(years=1)).normalize()
    har = base[base["model"] == REFERENCE].set_index(keys)
    har_loss = qlike(har["variance"], har["realized_rv"]).mean()
    result, _ = margins(forecasts, start, tuple(mixes), pooled=True)
    feasible = result.loc[[m for m in BASELINES if m in result.index]]
    feasible = feasible[feasible[["breach_long", "breach_short"]].max(axis=1) <= TARGET_MAX_RATE]
    best = feasible["avg_im"].idxmin()
    rows = []
    for label, mixed in mixes.items():
        loss = qlike(mixed["variance"], mixed["realized_rv"]).mean()
        rows.append({"model": label, "qlike_vs_har": loss / har_loss, "avg_im": result.loc[label, "avg_im"],
                     "breach_long": result.loc[label, "breach_long"], "breach_short": result.loc[label, "breach_short"],
                     f"less_than_{best}": 1 - result.loc[label, "avg_im"] / feasible.loc[best, "avg_im"]})
    print(f"{len(common):,} asset-days ({common['asset'].nunique()} assets), validated from {start.date()}; "
          f"best baseline within {TARGET_MAX_RATE:.1%}: {best} {feasible.loc[best, 'avg_im']:.2%}")
    print(result[["avg_im", "breach_long", "breach_short"]].loc[[*BASELINES]].to_markdown(floatfmt=".4f"))
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4f"))


if __name__ == "__main__":
    main()
