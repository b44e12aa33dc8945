"""A seeded synthetic crypto market with the stylised facts the models must handle.

Per asset: log-volatility = fast AR(1) (half-life 2 weeks) + slow AR(1) (half-life 4 months), stepped
per bar with half-lives set in days and partly driven by a common market factor; Student-t return shocks with a common factor; a leverage
effect (return shocks feed next-hour log-vol with negative sign); compound-Poisson jumps, mostly
down, that also lift volatility; intraday volatility seasonality. Each bar is a 12-step path, so
high/low are the path's extremes and open = the previous close exactly.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from volmargin.data.loader import validate_bars
from volmargin.errors import ConfigError

HOURS_PER_YEAR = 24 * 365.25
SUBSTEPS = 12
DOF = 4.5                      # Student-t degrees of freedom of return shocks
FAST_HALF_LIFE_DAYS = 14
SLOW_HALF_LIFE_DAYS = 120
FAST_STD, SLOW_STD = 0.45, 0.25  # stationary std of each log-vol component
VOL_COMMON = 0.6               # share of the fast log-vol variance from the market factor
LEVERAGE = -0.5                # corr(return shock, next log-vol shock)
JUMPS_PER_YEAR = (2.0, 3.0)    # market-wide, idiosyncratic
JUMP_MEAN = 0.04               # mean absolute jump at 60% annual vol
JUMP_DOWN_PROB = 0.75
JUMP_VOL_KICK = 0.3            # log-vol increase after a jump, decaying with the fast component


def synthetic_market(n_assets: int = 4, days: int = 1095, freq: str = "1h", start: str = "2021-01-01",
                     seed: int = 0) -> dict[str, pd.DataFrame]:
    """Bars for assets syn_a, syn_b, ... in the loader's validated format (attrs source='synthetic')."""
    bar, n_bars = _grid(n_assets, days, freq)
    rng = np.random.default_rng(seed)
    index = pd.date_range(pd.Timestamp(start, tz="UTC"), periods=n_bars, freq=bar, name="timestamp").as_unit("ns")
    params = _asset_params(rng, n_assets)
    market, own = _std_t(rng, (n_bars, 1)), _std_t(rng, (n_bars, n_assets))
    beta = params["beta"]
    shocks = np.sqrt(beta) * market + np.sqrt(1 - beta) * own                 # unit variance, correlated
    jumps, jump_step = _jumps(rng, n_bars, n_assets, bar, params["vol"])
    sigma = _bar_vol(rng, market, own, jumps != 0, index, bar, params["vol"])  # per-bar diffusive std
    frames = {}
    for i, asset in enumerate(_names(n_assets)):
        ohlc = _ohlc(rng, sigma[:, i], shocks[:, i], jumps[:, i], jump_step[:, i], params["price"][i])
        volume = _volume(rng, sigma[:, i], shocks[:, i], params["price"][i])
        frame = pd.DataFrame({**ohlc, "volume": volume}, index=index)
        frames[asset] = validate_bars(frame, source="synthetic", freq=bar)
    return frames


def write_synthetic_csv(directory: str | Path, **kwargs) -> list[Path]:
    """Write synthetic_market(**kwargs) as canonical <asset>_<freq>.csv.gz files; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for asset, frame in synthetic_market(**kwargs).items():
        path = directory / f"{asset}_{_freq_token(frame.attrs['freq'])}.csv.gz"
        out = frame.set_axis(frame.index.strftime("%Y-%m-%dT%H:%M:%SZ").rename("timestamp"))
        out.to_csv(path, compression={"method": "gzip", "mtime": 0})  # mtime 0: identical bytes per seed
        paths.append(path)
    return paths


def _grid(n_assets: int, days: int, freq: str) -> tuple[pd.Timedelta, int]:
    if not 1 <= n_assets <= 26:
        raise ConfigError(f"n_assets must be in 1..26, got {n_assets}")
    if days < 1:
        raise ConfigError(f"days must be >= 1, got {days}")
    try:
        bar = pd.Timedelta(freq)
    except ValueError:
        raise ConfigError(f"freq must be a bar length such as '1h', got {freq!r}") from None
    day = pd.Timedelta("1D")
    if bar <= pd.Timedelta(0) or day % bar != pd.Timedelta(0):
        raise ConfigError(f"freq must be a bar length that divides one day, got {freq!r}")
    return bar, days * (day // bar)


def _names(n_assets: int) -> list[str]:
    return [f"syn_{letter}" for letter in string.ascii_lowercase[:n_assets]]


def _freq_token(bar: pd.Timedelta) -> str:
    seconds = int(bar.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _asset_params(rng: np.random.Generator, n_assets: int) -> dict[str, np.ndarray]:
    return {
        "vol": np.linspace(0.5, 0.85, n_assets),       # annualised long-run level
        "beta": rng.uniform(0.55, 0.8, n_assets),      # share of return variance from the market factor
        "price": 10 ** rng.uniform(-0.5, 4.5, n_assets),
    }


def _bar_years(bar: pd.Timedelta) -> float:
    return bar / pd.Timedelta(hours=HOURS_PER_YEAR)


def _std_t(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_t(DOF, shape) / np.sqrt(DOF / (DOF - 2))


def _ar1(innovations: np.ndarray, half_life_bars: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance AR(1) along axis 0, started from its stationary distribution."""
    phi = 0.5 ** (1 / half_life_bars)
    start = rng.standard_normal(innovations.shape[1:])
    zi = (phi * start)[np.newaxis]
    return lfilter([np.sqrt(1 - phi**2)], [1, -phi], innovations, axis=0, zi=zi)[0]


def _bar_vol(rng: np.random.Generator, market: np.ndarray, own: np.ndarray, jumped: np.ndarray,
             index: pd.DatetimeIndex, bar: pd.Timedelta, vol: np.ndarray) -> np.ndarray:
    """Per-bar diffusive std: annual vol x exp(log-vol state known at the bar's open) x intraday pattern."""
    n_bars, n_assets = own.shape
    bars_per_day = pd.Timedelta("1D") / bar
    fast_bars = FAST_HALF_LIFE_DAYS * bars_per_day

    def vol_shocks(returns: np.ndarray) -> np.ndarray:
        # Leverage: return shocks move log-vol with a negative sign (clipped: one outlier must not explode it).
        noise = rng.standard_normal(returns.shape)
        return LEVERAGE * np.clip(returns, -4, 4) + np.sqrt(1 - LEVERAGE**2) * noise

    fast_common = _ar1(vol_shocks(market), fast_bars, rng)
    fast_own = _ar1(vol_shocks(own), fast_bars, rng)
    slow = _ar1(rng.standard_normal((n_bars, 1)), SLOW_HALF_LIFE_DAYS * bars_per_day, rng)
    phi_fast = 0.5 ** (1 / fast_bars)
    kick = lfilter([JUMP_VOL_KICK], [1, -phi_fast], jumped.astype(float), axis=0)
    kick -= JUMP_VOL_KICK * sum(JUMPS_PER_YEAR) * _bar_years(bar) / (1 - phi_fast)  # centred: level unchanged
    log_vol = (FAST_STD * (np.sqrt(VOL_COMMON) * fast_common + np.sqrt(1 - VOL_COMMON) * fast_own)
               + SLOW_STD * slow + kick - (FAST_STD**2 + SLOW_STD**2))  # mean shift: E[exp(2 x)] ~ 1
    log_vol = np.vstack([np.zeros((1, n_assets)), log_vol[:-1]])       # known before the bar starts
    return vol * np.sqrt(_bar_years(bar)) * np.exp(log_vol) * _seasonality(index, bars_per_day)[:, np.newaxis]


def _seasonality(index: pd.DatetimeIndex, bars_per_day: float) -> np.ndarray:
    """Intraday volatility pattern peaking around the US open (~14-15 UTC), mean square 1."""
    if bars_per_day <= 1:
        return np.ones(len(index))
    hour = index.hour.to_numpy() + index.minute.to_numpy() / 60
    pattern = 1 + 0.25 * np.cos(2 * np.pi * (hour - 14.5) / 24)
    return pattern / np.sqrt(np.mean(pattern**2))


def _jumps(rng: np.random.Generator, n_bars: int, n_assets: int, bar: pd.Timedelta,
           vol: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-price jumps (n_bars, n_assets) and the sub-step (1..SUBSTEPS) at which each happens."""
    bar_years = _bar_years(bar)
    scale = JUMP_MEAN * vol / 0.6

    def draw(rate: float, width: int) -> tuple[np.ndarray, np.ndarray]:
        hit = rng.random((n_bars, width)) < rate * bar_years
        sign = np.where(rng.random((n_bars, width)) < JUMP_DOWN_PROB, -1.0, 1.0)
        size = hit * sign * rng.exponential(1.0, (n_bars, width))
        return size, rng.integers(1, SUBSTEPS + 1, (n_bars, width))

    market, market_step = draw(JUMPS_PER_YEAR[0], 1)
    own, own_step = draw(JUMPS_PER_YEAR[1], n_assets)
    step = np.where(market != 0, market_step, own_step)
    return (market + own) * scale, step


def _ohlc(rng: np.random.Generator, sigma: np.ndarray, shock: np.ndarray, jump: np.ndarray,
          jump_step: np.ndarray, price0: float) -> dict[str, np.ndarray]:
    """Bars from a Brownian bridge between the open and the fat-tailed close, plus a jump at one sub-step."""
    diffusive = sigma * shock  # zero-drift log price apart from the (mostly negative) jumps
    log_close = np.log(price0) + np.cumsum(diffusive + jump)
    log_open = np.concatenate([[np.log(price0)], log_close[:-1]])
    steps = np.arange(SUBSTEPS + 1) / SUBSTEPS
    walk = np.cumsum(rng.standard_normal((sigma.size, SUBSTEPS)), axis=1) * (sigma / np.sqrt(SUBSTEPS))[:, None]
    walk = np.hstack([np.zeros((sigma.size, 1)), walk])
    bridge = walk - steps * walk[:, -1:] + steps * diffusive[:, None]
    path = log_open[:, None] + bridge + jump[:, None] * (np.arange(SUBSTEPS + 1) >= jump_step[:, None])
    path[:, 0], path[:, -1] = log_open, log_close  # exact ends: open equals the previous close
    prices = np.exp(path)
    return {"open": prices[:, 0], "high": prices.max(axis=1), "low": prices.min(axis=1), "close": prices[:, -1]}


def _volume(rng: np.random.Generator, sigma: np.ndarray, shock: np.ndarray, price0: float) -> np.ndarray:
    """Lognormal base-asset volume, higher in volatile periods and on large moves."""
    log_sigma = np.log(sigma)
    log_v = (np.log(5e7 / price0) + (log_sigma - log_sigma.mean()) + 0.3 * np.abs(shock)
             + 0.5 * rng.standard_normal(sigma.size))
    return np.exp(log_v)
