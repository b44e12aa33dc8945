"""What Deribit DVOL adds to the learned variance forecast: QLIKE of the GBM with / without the IV features.

One global GBM on the 29 hourly spot files at the top of ../shared/data; BTC (binance_btcusdt,
bitstamp_btcusd) and ETH (binance_ethusdt) rows carry their DVOL daily close, every other asset has no
index (iv_present = 0, the rest missing), so one model serves both. Walk-forward: targets from --start,
refit every --refit days on every asset's history up to the refit day only; DVOL of day t is its close at
the end of UTC day t, the instant the realized measures of row t end (see `attach_iv`). Horizons 1 and 7
days. The tail models are cut to a few trees (QLIKE reads the variance forecast only).

Prints, per horizon and asset: QLIKE with / without, their ratio, and the Diebold-Mariano p-value
(HAC, on the daily QLIKE differences).

Run: nice -n 10 .venv/bin/python bench/dvol_features.py [--start 2022-01-01] [--refit 90]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from common import hourly_spot_files, shared_data_dir
from volmargin.evaluation import stats
from volmargin.data import load_panel
from volmargin.data.options import load_dvol
from volmargin.evaluation.backtest import BacktestConfig, daily_panel, run_backtest
from volmargin.evaluation.scoring import POOLED, pooled_losses, score_forecasts
from volmargin.evaluation.walkforward import WalkForwardSplit
from volmargin.features.learned import attach_iv

UNDERLYINGS = {"btc": ("binance_btcusdt", "bitstamp_btcusd"), "eth": ("binance_ethusdt",)}
FAST_TAILS = {"tail_estimators": 10, "tail_folds": 0}


def with_dvol(panel: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    folder = shared_data_dir() / "iv"
    out = dict(panel)
    for underlying, assets in UNDERLYINGS.items():
        dvol = load_dvol(folder / f"deribit_{underlying}_dvol_1d.csv.gz")
        for asset in assets:
            if asset in out:
                out[asset] = attach_iv(out[asset], dvol)
    return out


def compare(panel: dict[str, pd.DataFrame], horizon: int, start: str, refit: int) -> pd.DataFrame:
    frames = []
    for label, iv in (("gbm", False), ("gbm_dvol", True)):
        config = BacktestConfig(models=("gbm",), horizon=horizon,
                                split=WalkForwardSplit(start=pd.Timestamp(start, tz="UTC"), refit_every=refit),
                                model_params={"gbm": {**FAST_TAILS, "iv_features": iv}})
        forecasts, _ = run_backtest(panel, config, progress=False)
        frames.append(forecasts.assign(model=label))
    forecasts = pd.concat(frames, ignore_index=True)
    scores = score_forecasts(forecasts)
    rows = []
    for asset in [a for assets in UNDERLYINGS.values() for a in assets] + [POOLED]:
        mine = forecasts if asset == POOLED else forecasts[forecasts["asset"] == asset]
        if mine.empty:
            continue
        daily = pooled_losses(mine, "qlike").dropna()
        test = stats.diebold_mariano(daily["gbm_dvol"].to_numpy(), daily["gbm"].to_numpy(), horizon=horizon)
        qlike = scores[scores["asset"] == asset].set_index("model")["qlike"]
        rows.append({"horizon": horizon, "asset": asset, "days": test.n, "qlike_without": qlike["gbm"],
                     "qlike_with_dvol": qlike["gbm_dvol"], "ratio": qlike["gbm_dvol"] / qlike["gbm"],
                     "dm_p": test.pvalue})
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--start", default="2022-01-01")
    parser.add_argument("--refit", type=int, default=90)
    parser.add_argument("--horizons", default="1,7")
    args = parser.parse_args()
    began = time.perf_counter()
    panel = with_dvol(daily_panel(load_panel([str(p) for p in hourly_spot_files()])))
    table = pd.concat([compare(panel, int(h), args.start, args.refit) for h in args.horizons.split(",")])
    print(f"\n{len(panel)} assets, targets from {args.start}, refit every {args.refit} days; "
          f"{time.perf_counter() - began:.0f} s\n")
    print(table.to_markdown(index=False, floatfmt=".4f"))


if __name__ == "__main__":
    main()
