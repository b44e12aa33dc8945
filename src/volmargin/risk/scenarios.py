"""Filtered historical simulation (FHS) across assets, filtered by any model's volatility forecasts.

A model's forecasts become a `FilterPanel`: on a daily grid of origins, each asset's forecast volatility of
the MPOR return made at origin t (`sigma`) and the MPOR log return realised after it (`realized`, over days
t+1..t+h). The standardised return of origin s is z = realized / sigma. On margin date t the scenarios
are the z of the look-back origins, the same dates for every asset (so cross-asset dependence is kept),
rescaled by today's forecast: r[s, a] = z[s, a] x sigma[t, a] (Barone-Adesi et al. 1999; LCH PAIRS,
CME SPAN 2, Eurex Prisma), clipped at the largest move realised in the look-back (`move_cap`). Any model works: every baseline and learned model of a backtest run folder's
forecasts.parquet, and `ewma_panel` builds the PAIRS filter (EWMA, lambda 0.97) from daily returns.

No look-ahead: at margin date t only origins s with s + horizon <= t are used (their MPOR is realised
by the end of day t), and only today's forecast sigma[t] (made from data up to t). Tested by corrupting
every later row.

Short histories are handled explicitly, never dropped: where an asset has no z on a scenario date
(not yet listed, or an incomplete day), a proxy stands in, `median` (the cross-sectional median z of
that date) or `peer:<asset>` (that asset's z, the median where the peer has none); `ScenarioSet.proxied`
marks each one and `proxy_share` states the share per asset.

Stressed scenarios (APC): the raw realised MPOR returns of the worst `stress_days`-day window seen up to
the margin date (largest cross-sectional mean squared return, the running worst: a crash stays in),
proxied the same way; `volmargin_serving.portfolio` uses them as a weight or a floor.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from volmargin_serving.portfolio import MIN_SCENARIOS, scenario_returns
from volmargin_serving.risk import ScenarioSet

from volmargin.errors import ConfigError, DataError


@dataclass(frozen=True)
class ScenarioConfig:
    lookback: int | None = 2500  # scenario origins per margin date (days); None = all history
    proxy: str = "median"  # 'median' or 'peer:<asset>'
    stress_days: int = 60  # length of the stressed window
    min_scenarios: int = 100  # a margin date needs at least this many scenario dates
    move_cap: bool = True  # clip scenario moves at the largest realised |MPOR return| in the look-back

    def __post_init__(self) -> None:
        whole = lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool)  # noqa: E731
        if self.lookback is not None and not (whole(self.lookback) and self.lookback >= 30):
            raise ConfigError(f"portfolio.lookback: at least 30 days, got {self.lookback!r}")
        if not (isinstance(self.proxy, str) and (self.proxy == "median" or self.proxy.startswith("peer:"))):
            raise ConfigError(f"portfolio.proxy: 'median' or 'peer:<asset>', got {self.proxy!r}")
        for key, least in (("stress_days", 5), ("min_scenarios", MIN_SCENARIOS)):
            if not (whole(getattr(self, key)) and getattr(self, key) >= least):
                raise ConfigError(f"portfolio.{key}: an integer >= {least} expected, got {getattr(self, key)!r}")
        if not isinstance(self.move_cap, bool):
            raise ConfigError(f"portfolio.move_cap: true or false expected, got {self.move_cap!r}")


@dataclass(frozen=True)
class FilterPanel:
    """One model's forecasts on a daily grid: (T, A) arrays, NaN where absent."""

    model: str
    assets: tuple[str, ...]
    origins: pd.DatetimeIndex
    horizon: int
    sigma: np.ndarray  # forecast volatility of the MPOR log return, made at the origin
    realized: np.ndarray  # realised MPOR log return after the origin (NaN: not realised / incomplete)

    @property
    def z(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.sigma > 0, self.realized / self.sigma, np.nan)


def filter_panel(forecasts: pd.DataFrame, model: str, assets: tuple[str, ...] | None = None,
                 origins: pd.DatetimeIndex | None = None) -> FilterPanel:
    """The `FilterPanel` of `model` from a long forecast table (columns model, asset, origin, horizon,
    variance, realized_ret), on the given assets / daily grid (default: the model's own)."""
    rows = forecasts[forecasts["model"] == model]
    if rows.empty:
        raise DataError(f"forecasts: no rows for model {model!r}; models: {sorted(forecasts['model'].unique())}")
    horizons = rows["horizon"].unique()
    if len(horizons) != 1:
        raise DataError(f"forecasts: model {model!r} has several horizons {sorted(horizons)}; one MPOR expected")
    assets = tuple(sorted(rows["asset"].unique())) if assets is None else tuple(assets)
    if origins is None:
        origins = pd.date_range(rows["origin"].min(), rows["origin"].max(), freq="D")
    wide = rows.pivot_table(index="origin", columns="asset", values=["variance", "realized_ret"], aggfunc="first")
    take = lambda col: wide[col].reindex(index=origins, columns=list(assets)).to_numpy(dtype=float)  # noqa: E731
    variance = take("variance")
    sigma = np.sqrt(np.where(variance > 0, variance, np.nan))
    return FilterPanel(model, assets, origins, int(horizons[0]), sigma, take("realized_ret"))


def ewma_panel(daily: Mapping[str, pd.DataFrame], lam: float = 0.97, horizon: int = 1,
               origins: pd.DatetimeIndex | None = None, name: str = "ewma97") -> FilterPanel:
    """The PAIRS filter: EWMA variance (lambda `lam`, `volmargin.models.EWMA`) of each asset's daily
    returns, square-root-of-time to the horizon; realised MPOR returns from the complete days only."""
    from volmargin.features.realized import horizon_targets
    from volmargin.models import EWMA

    assets = tuple(sorted(daily))
    if origins is None:
        origins = pd.date_range(min(d.index[0] for d in daily.values()), max(d.index[-1] for d in daily.values()),
                                freq="D")
    sigma, realized = (np.full((len(origins), len(assets)), np.nan) for _ in range(2))
    for k, asset in enumerate(assets):
        frame = daily[asset]
        variance = EWMA(lam=lam).one_day_variance(frame) * horizon
        sigma[:, k] = np.sqrt(variance.reindex(origins).to_numpy())
        realized[:, k] = horizon_targets(frame, horizon)["target_ret"].reindex(origins).to_numpy()
    return FilterPanel(name, assets, origins, horizon, sigma, realized)


def proxied_returns(values: np.ndarray, assets: tuple[str, ...], proxy: str) -> tuple[np.ndarray, np.ndarray]:
    """Fill each missing (row, asset) of `values` (T, A) from the same row only: the row's median or a peer's
    value (the median where the peer has none). Rows where no asset has a value stay NaN. Returns the
    filled values and the (T, A) mask of proxies."""
    missing = np.isnan(values)
    fill = np.full(len(values), np.nan)
    some = ~missing.all(1)
    fill[some] = np.nanmedian(values[some], axis=1)
    if proxy.startswith("peer:"):
        peer = proxy.split(":", 1)[1]
        if peer not in assets:
            raise ConfigError(f"portfolio.proxy: peer {peer!r} is not one of the assets")
        own = values[:, assets.index(peer)]
        fill = np.where(np.isnan(own), fill, own)
    filled = np.where(missing, fill[:, None], values)
    return filled, missing & ~np.isnan(filled)


class FHS:
    """Scenario sets of one `FilterPanel` for any margin date (index into its grid): standardised returns
    and their proxies are computed once, each date takes its look-back rows."""

    def __init__(self, panel: FilterPanel, config: ScenarioConfig = ScenarioConfig()):
        self.panel, self.config = panel, config
        self.z, self.z_proxied = proxied_returns(panel.z, panel.assets, config.proxy)
        self.raw, self.raw_proxied = proxied_returns(panel.realized, panel.assets, config.proxy)
        self.usable = ~np.isnan(self.z).any(axis=1)  # a row with no asset at all is no scenario date
        squared = panel.realized ** 2
        counts = (~np.isnan(squared)).sum(1)
        score = pd.Series(np.where(counts > 0, np.nansum(squared, 1) / np.maximum(counts, 1), np.nan))
        self.window_score = score.rolling(config.stress_days, min_periods=config.stress_days // 2).mean().to_numpy()

    def rows(self, t: int) -> np.ndarray:
        """Scenario origins of margin date t: usable rows s with t - h - lookback < s <= t - h."""
        last = t - self.panel.horizon
        first = 0 if self.config.lookback is None else max(0, last - self.config.lookback + 1)
        if last < 0:
            return np.array([], dtype=int)
        return first + np.flatnonzero(self.usable[first:last + 1])

    def stress_rows(self, t: int) -> np.ndarray:
        """Origins of the worst stress window whose MPORs are all realised by t (running worst)."""
        last = t - self.panel.horizon
        if last < 0 or np.isnan(self.window_score[: last + 1]).all():
            return np.array([], dtype=int)
        end = int(np.nanargmax(self.window_score[: last + 1]))
        start = max(0, end - self.config.stress_days + 1)
        return start + np.flatnonzero(self.usable[start:end + 1] & ~np.isnan(self.raw[start:end + 1]).any(1))

    def move_cap(self, t: int) -> float:
        """The largest absolute realised MPOR log return of any asset over the look-back of t (inf when
        off): a scenario never moves an asset further than the market has moved. Without it a large
        standardised move (a pump on a quiet day, z ~ 25) times a crash-day volatility becomes a
        hundred-fold short loss."""
        rows = self.rows(t)
        values = self.panel.realized[rows]
        if not self.config.move_cap or not np.isfinite(values).any():
            return float("inf")
        return float(np.nanmax(np.abs(values)))

    def standardized(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(z, proxied) of margin date t: (n_scenarios, A)."""
        rows = self.rows(t)
        return self.z[rows], self.z_proxied[rows]

    def scenarios(self, t: int) -> ScenarioSet:
        """The FHS scenario set of margin date t: look-back z x today's forecast volatility. Assets without
        a forecast today get NaN returns (a margin needs their conservative treatment, see serving)."""
        rows = self.rows(t)
        dates = day_array(self.panel.origins[rows])
        cap = self.move_cap(t)
        return ScenarioSet(self.panel.assets, scenario_returns(self.z[rows], self.panel.sigma[t], cap), dates, None,
                           self.z_proxied[rows])

    def stress(self, t: int) -> ScenarioSet:
        rows = self.stress_rows(t)
        dates = day_array(self.panel.origins[rows])
        return ScenarioSet(self.panel.assets, self.raw[rows], dates, None, self.raw_proxied[rows])

    def enough(self, t: int) -> bool:
        return len(self.rows(t)) >= self.config.min_scenarios


def day_array(index: pd.DatetimeIndex) -> np.ndarray:
    """UTC dates as numpy datetime64[D] (what the scenario sets and serving hold)."""
    return index.tz_localize(None).to_numpy().astype("datetime64[D]") if index.tz else index.to_numpy().astype("datetime64[D]")


def proxy_share(scenarios: ScenarioSet) -> dict[str, float]:
    """Share of each asset's scenarios that are proxies (0 = all its own history)."""
    if scenarios.proxied is None or not scenarios.n_scenarios:
        return {a: 0.0 for a in scenarios.assets}
    return dict(zip(scenarios.assets, scenarios.proxied.mean(axis=0).round(4).tolist()))
