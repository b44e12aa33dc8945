"""Markdown tables of a backtest run (as quoted in the README).

Run: .venv/bin/python bench/backtest_tables.py runs/real2021
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

POOLED_COLUMNS = ["model", "n", "qlike", "mse_log", "mz_r2", "var99_long_rate", "var99_short_rate",
                  "kupiec_p_long", "kupiec_p_short", "christoffersen_p_long", "christoffersen_p_short",
                  "basel_zone_long", "basel_zone_short", "es975_z2_long", "es975_z2_short"]


def markdown(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".4f")


def main(run: Path) -> None:
    scores = pd.read_csv(run / "scores.csv")
    dm = pd.read_csv(run / "dm.csv")
    meta = json.loads((run / "run.json").read_text())
    pooled = scores[scores["asset"] == "ALL"].copy()
    pooled["basel_green_share_long"] = pooled["basel_green_windows_long"] / pooled["basel_windows_long"]
    pooled["basel_green_share_short"] = pooled["basel_green_windows_short"] / pooled["basel_windows_short"]
    print(f"Run took {meta['seconds']:.0f} s; {len(meta['assets'])} assets.\n")
    print("Pooled:\n")
    print(markdown(pooled[POOLED_COLUMNS + ["basel_green_share_long", "basel_green_share_short"]].sort_values("qlike")))
    print("\nDiebold-Mariano against the reference on pooled daily QLIKE:\n")
    print(markdown(dm[["model", "reference", "n_dates", "ratio", "dm_stat", "dm_p"]]))
    per_asset = scores[scores["asset"] != "ALL"]
    for value, label in (("qlike", "QLIKE"), ("var99_long_rate", "VaR 99% exception rate, long"),
                         ("var99_short_rate", "VaR 99% exception rate, short")):
        table = per_asset.pivot(index="asset", columns="model", values=value).reset_index()
        print(f"\nPer asset, {label}:\n")
        print(markdown(table))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
