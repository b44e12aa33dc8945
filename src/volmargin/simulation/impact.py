"""Market impact of liquidation flow: the square-root law, and its check against real liquidation minutes.

Model: a net signed flow Q (quote currency, > 0 buys) traded within one step moves the log price by
`sign(Q) x Y x sigma x sqrt(|Q| / V)`, sigma the log-return volatility of the step and V the traded
volume of the step (quote currency). Why this one: the square-root law is the best-documented regularity
of metaorder impact across markets and sizes (Toth et al. 2011, Bouchaud et al. 2018, "Trades, Quotes and
Prices"), it needs only volatility and volume, which every hourly bar file has (the liquidity proxy),
and it is scale-free: sigma_h sqrt(Q / V_h) = sigma_d sqrt(Q / V_d), so the same Y holds on any step
length. A constant-product curve needs a depth per asset and date, which the data has for two
Hyperliquid perps only. Impact is permanent within the simulated horizon (conservative for a crash:
the book does not refill between steps) and cumulative within a step: the step's whole liquidation flow
so far sets the price, so cascade rounds walk down one concave curve.

`fit_liquidation_impact` estimates Y from minutes of real forced liquidations (Binance ETHUSDT perp,
January 2021): minute mid log return regressed on `-sign(net) sigma_m sqrt(|net| / V_m)`, net the
minute's long minus short liquidations, V_m the hour's traded volume / 60 and sigma_m the hour's
realised volatility / sqrt(60) (from the hourly perp bars). Liquidations are also caused by the move
(a falling price liquidates longs), so the contemporaneous slope is an upper bound of the causal Y; the
next minute's return on this minute's liquidations is reported beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from volmargin.errors import ConfigError, DataError

# Y of the square-root law, against spot-bar volume: the next-minute slope fitted on the January 2021
# liquidation minutes (1.1; the contemporaneous slope, 3.8, is an upper bound: moves cause liquidations
# too); metaorder studies find 0.5-1. bench/simulation.py re-measures both (docs/simulation.md "Impact model").
DEFAULT_IMPACT = 1.1


@dataclass(frozen=True)
class SquareRootImpact:
    coefficient: float = DEFAULT_IMPACT  # Y; 0 = no impact (liquidations never move the price)

    def __post_init__(self) -> None:
        if not (np.isfinite(self.coefficient) and self.coefficient >= 0):
            raise ConfigError(f"simulation.impact: must be >= 0, got {self.coefficient!r}")

    def log_impact(self, flow, volume, sigma) -> np.ndarray:
        """Log-price move of a net signed flow `flow` (quote currency) against `volume` and `sigma`."""
        flow = np.asarray(flow, dtype=float)
        if self.coefficient == 0:
            return np.zeros_like(flow)
        volume = np.asarray(volume, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(flow == 0, 0.0, np.abs(flow) / volume)
        share = np.where(np.isnan(share), np.inf, share)  # flow against zero volume: no price bound
        return np.sign(flow) * self.coefficient * np.asarray(sigma, dtype=float) * np.sqrt(share)


LIQUIDATION_COLUMNS = ["timestamp", "bid_price", "ask_price", "long_liquidations_eth", "short_liquidations_eth"]


def read_liquidation_minutes(path: str | Path) -> pd.DataFrame:
    """The 1-minute liquidation file (README `liquidity/`), indexed by minute, with `mid` and `net`
    (long minus short liquidations, base units: > 0 means forced sells)."""
    path = Path(path)
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    missing = [c for c in LIQUIDATION_COLUMNS if c not in frame]
    if missing:
        raise DataError(f"{path}: missing columns {missing}")
    index = pd.to_datetime(frame["timestamp"], utc=True, errors="coerce")
    if index.isna().any():
        raise DataError(f"{path}: row {int(np.flatnonzero(index.isna())[0]) + 2}: unparsable timestamp")
    values = frame[LIQUIDATION_COLUMNS[1:]].to_numpy(dtype=float)
    bad = ~np.isfinite(values).all(1) | (values[:, :2] <= 0).any(1) | (values[:, 2:] < 0).any(1)
    if bad.any():
        raise DataError(f"{path}: row {int(np.flatnonzero(bad)[0]) + 2}: non-finite, non-positive price "
                        f"or negative liquidation volume")
    out = pd.DataFrame({"mid": values[:, :2].mean(1), "net": values[:, 2] - values[:, 3]},
                       index=pd.DatetimeIndex(index, name="timestamp"))
    return out


@dataclass(frozen=True)
class ImpactFit:
    coefficient: float  # contemporaneous slope: Y estimate (upper bound of the causal impact)
    stderr: float  # HAC (Newey-West) standard error
    lagged_coefficient: float  # next minute's return on this minute's liquidations
    lagged_stderr: float
    minutes: int  # minutes with liquidations used
    r2: float


def fit_liquidation_impact(minutes: pd.DataFrame, bars: pd.DataFrame) -> ImpactFit:
    """Y of the square-root law from liquidation minutes and the same market's hourly bars (see module)."""
    import statsmodels.api as sm

    hour = minutes.index.floor("h")
    hourly_ret = np.log(bars["close"]).diff()
    sigma_h = np.sqrt((hourly_ret**2).rolling(24, min_periods=12).mean()).shift(1)  # trailing, causal
    volume_quote = (bars["volume"] * bars["close"]).rolling(24, min_periods=12).mean().shift(1)
    sigma_m = sigma_h.reindex(hour).to_numpy() / np.sqrt(60)
    volume_m = volume_quote.reindex(hour).to_numpy() / 60
    consecutive = np.r_[False, np.diff(minutes.index.as_unit("s").asi8) == 60]
    ret = np.log(minutes["mid"]).diff().to_numpy(copy=True)
    ret[~consecutive] = np.nan
    net_quote = minutes["net"].to_numpy() * minutes["mid"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        x = -np.sign(net_quote) * sigma_m * np.sqrt(np.abs(net_quote) / volume_m)
    nxt = np.r_[ret[1:], np.nan]
    nxt[np.r_[~consecutive[1:], True]] = np.nan

    def ols(y: np.ndarray) -> tuple[float, float, int, float]:
        use = np.isfinite(x) & np.isfinite(y) & (x != 0)
        if use.sum() < 30:
            raise DataError("liquidation minutes: fewer than 30 usable minutes overlap the hourly bars")
        fit = sm.OLS(y[use], x[use]).fit(cov_type="HAC", cov_kwds={"maxlags": 10})
        return float(fit.params[0]), float(fit.bse[0]), int(use.sum()), float(fit.rsquared)

    b, se, n, r2 = ols(ret)
    lb, lse, _, _ = ols(nxt)
    return ImpactFit(b, se, lb, lse, n, r2)
