"""Margin policies to simulate, and calibration to solvency.

Three policies per asset, each a per-origin-day set of terms (initial and maintenance margin per side,
liquidation penalty):
- `breach`: today's calibration (`volmargin.calibration.walk_forward_calibration` + `margin_paths`): the
  smallest scale of the model's risk whose initial margin is breached on at most the target share of
  days; maintenance = the policy's maintenance fraction of it; the reference penalty. `breach_plain` is
  the same calibration with every APC tool off (the study adds it when the policy has any), i.e. the
  solvency policy's own margin rule calibrated to the breach rate instead;
- `static`: a large venue's schedule: IM 5% / MM 3% for large caps, 10% / 5% for the others (asset
  names containing one of `large_caps`); `static_solvent`, the same schedule times one multiplier per asset,
  the smallest meeting the solvency target on the solvency calibration's first window, then fixed
  (`calibrate_static`): a static schedule at equal solvency.
- `solvency`: the same margin rule (`volmargin_serving.margins` through `calibration.panel.initial_margin`,
  scale x the model's risk), its scale, maintenance fraction and penalty chosen to minimise the
  average initial margin subject to a bad-debt target: the `quantile` (99th) of 24 h bad debt over the
  calibration paths (each day's real replay and its bootstrapped, forecast-scaled paths) at most
  `max_bad_debt_fund` (1%) of the insurance fund.

Calibration to solvency is walk-forward: at each block start (every `every`, from the validation start)
only paths realised before it, from the last `window_days`, are simulated. The first block searches
every (maintenance fraction, penalty, haircut factor) of the grid and bisects the scale on the bad-debt
target (bad debt falls as the scale rises: lower leverage, earlier liquidation); later blocks keep the
maintenance fraction, penalty and haircut factor and move the scale by at most `max_change` relative per
block (the speed limit of the APC tools that parameter-risk providers apply), bisecting within that band.
A block whose target cannot be met within its band takes the band's top (`limited`), or, with
`infeasible_change`, bisects again up to that larger rise (solvency before the speed limit, still
bounded). `worst_period` (e.g. "QS") makes the target hold in each quarter of the window, not only pooled
over it: a safety margin sized by the window's own block-to-block variability. Parameters of a block
apply to the origins from its start to the next block's; origins before the first block take the first
block's (in sample).

Liquidations at risk: the `liquidations_quantile` (95th) of 24 h liquidated notional must stay at most
`max_liquidations` of open interest. It is not monotone in the scale (a higher margin caps leverage, but
it also raises the maintenance level of every account under the cap, which is then liquidated sooner),
so it is not bisected: from the bad-debt scale a scan in steps of 10% looks for the first scale that
also keeps within the limit (up to the band's top), else keeps the bad-debt scale and flags the block
(`feasible` False: raising the margin further may only liquidate more). A larger maintenance fraction
(less bad debt per liquidation, more liquidations) wins only when it keeps within the limit.

Haircuts: collateral posted in the asset itself (the population's `asset_collateral` share) counts at
(1 - haircut), haircut = factor x the long side's initial margin; the first block also searches the
factor (`haircut_factors`), whose cost in the objective is the share of such accounts x factor x the
average long initial margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from volmargin.calibration.autocalibrate import utc, walk_forward_calibration
from volmargin.calibration.backtest import margin_paths
from volmargin.calibration.panel import Panel, build_panel, initial_margin
from volmargin.calibration.policy import PolicyConfig
from volmargin.errors import ConfigError
from volmargin.simulation.accounts import Accounts
from volmargin.simulation.paths import PathSet
from volmargin.simulation.scenarios import MAX_HAIRCUT, SimulationSettings, collateral_haircut, run_paths

POLICIES = ("breach", "breach_plain", "solvency", "static", "static_solvent")
SOLVENCY_COLUMNS = ["asset", "policy", "valid_from", "valid_to", "scale", "maintenance_fraction", "penalty",
                    "haircut_factor", "feasible", "limited", "calibration_paths", "calibration_bad_debt_fund",
                    "calibration_liquidations", "calibration_avg_margin"]


@dataclass(frozen=True)
class SolvencyTarget:
    quantile: float = 0.99
    max_bad_debt_fund: float = 0.01  # the quantile of 24 h bad debt, as a fraction of the insurance fund
    maintenance_fractions: tuple[float, ...] = (0.5, 0.6, 0.75, 0.9)
    penalties: tuple[float, ...] = (0.01,)
    haircut_factors: tuple[float, ...] = (1.0,)  # haircut of collateral in the asset = factor x long initial margin
    # liquidations at risk: the `liquidations_quantile` of 24 h liquidated notional / open interest at most
    # this (None: no limit); without it liquidating earlier is free and the largest maintenance fraction wins
    max_liquidations: float | None = 0.3
    liquidations_quantile: float = 0.95
    max_change: float = 0.15  # relative move of the scale per re-calibration block (quarterly: ~5% a month)
    # safety margin from the window's own variability: the bad-debt quantile must meet the target in every
    # `worst_period` of the window (each quarter), not only pooled over it; None: pooled only. Chosen on the
    # calibration period alone (bench/solvency_selection.py): pooled, the target was missed out of sample
    worst_period: str | None = "QS"
    # a block whose target is infeasible within the speed limit may raise the scale by this much instead
    # (None: the speed limit holds and the block is flagged)
    infeasible_change: float | None = None
    every: str = "QS"
    window_days: int = 365
    scale_bounds: tuple[float, float] = (0.1, 10.0)
    tolerance: float = 0.02  # relative width at which the bisection stops

    def __post_init__(self) -> None:
        checks = {"quantile": 0.5 <= self.quantile < 1, "max_bad_debt_fund": self.max_bad_debt_fund >= 0,
                  "maintenance_fractions": bool(self.maintenance_fractions) and all(
                      0 < f < 1 for f in self.maintenance_fractions),
                  "penalties": bool(self.penalties) and all(0 <= p < 1 for p in self.penalties),
                  "haircut_factors": bool(self.haircut_factors) and all(f >= 0 for f in self.haircut_factors),
                  "max_liquidations": self.max_liquidations is None or self.max_liquidations > 0,
                  "liquidations_quantile": 0.5 <= self.liquidations_quantile < 1,
                  "max_change": self.max_change > 0, "window_days": self.window_days >= 30,
                  "infeasible_change": self.infeasible_change is None or self.infeasible_change > self.max_change,
                  "worst_period": self.worst_period is None or _is_frequency(self.worst_period),
                  "scale_bounds": 0 < self.scale_bounds[0] < self.scale_bounds[1], "tolerance": self.tolerance > 0}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"simulation.solvency.{bad[0]}: invalid value {getattr(self, bad[0])!r}")


def _is_frequency(text: str) -> bool:
    try:
        pd.tseries.frequencies.to_offset(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Terms:
    """Per-origin terms of one policy for one asset, on `origins` (the asset's daily forecast grid)."""

    origins: pd.DatetimeIndex
    initial: np.ndarray  # (D, 2) long, short
    maintenance: np.ndarray  # (D, 2)
    penalty: np.ndarray  # (D,)
    haircut: np.ndarray | None = None  # (D,) of collateral in the asset; None: the long initial margin

    def avg_margin(self, mask: np.ndarray | None = None) -> float:
        rows = self.initial if mask is None else self.initial[mask]
        return float(np.nanmean(rows))


@dataclass(frozen=True)
class AssetCase:
    """One asset under one model: its margin-rule panel (2 columns: long, short), forecast variance per
    origin and the simulated paths over those origins."""

    asset: str
    panel: Panel
    variance: np.ndarray  # (D,)
    paths: PathSet

    @property
    def origins(self) -> pd.DatetimeIndex:
        return self.panel.origins


def asset_panel(forecasts: pd.DataFrame, model: str, asset: str, rule: PolicyConfig) -> tuple[Panel, np.ndarray]:
    rows = forecasts[(forecasts["model"] == model) & (forecasts["asset"] == asset)]
    if rows.empty:
        raise ConfigError(f"forecasts: no rows of model {model!r} for asset {asset!r}")
    panel = build_panel(rows, rule)
    variance = rows.set_index("origin")["variance"].reindex(panel.origins).to_numpy()
    return panel, variance


# --- the reference policies ---------------------------------------------------------------------------

def breach_paths(forecasts: pd.DataFrame, model: str, policy: PolicyConfig, first_validation_start,
                 every: str) -> pd.DataFrame:
    """Today's breach-rate calibration of `model` on every asset of the table and its margin paths."""
    rows = forecasts[forecasts["model"] == model]
    calibration = walk_forward_calibration(rows, policy, first_validation_start, every=every)
    return margin_paths(rows, policy, calibration)


def breach_terms(paths: pd.DataFrame, case: AssetCase, policy: PolicyConfig, penalty: float) -> Terms:
    """The breach-rate policy's terms of one asset from `breach_paths`."""
    rows = paths[paths["asset"] == case.asset]
    wide = rows.pivot(index="origin", columns="side", values="initial_margin").reindex(case.origins)
    initial = wide[["long", "short"]].to_numpy()
    return Terms(case.origins, initial, policy.maintenance_fraction * initial, np.full(len(case.origins), penalty))


LARGE_CAP_SCHEDULE = (0.05, 0.03)  # (initial, maintenance) margin of a large venue's large caps
SMALL_CAP_SCHEDULE = (0.10, 0.05)  # and of the others


def static_schedule(asset: str, large_caps: tuple[str, ...]) -> tuple[float, float]:
    """(initial, maintenance) margin of the static schedule's tier of `asset` (names containing a `large_caps` tag)."""
    return LARGE_CAP_SCHEDULE if any(tag in asset.lower() for tag in large_caps) else SMALL_CAP_SCHEDULE


def static_terms(case: AssetCase, large_caps: tuple[str, ...], penalty: float, multiplier: float = 1.0) -> Terms:
    """The static schedule of the asset's tier, both margins times `multiplier` (the same IM / MM shape)."""
    im, mm = (multiplier * m for m in static_schedule(case.asset, large_caps))
    d = len(case.origins)
    return Terms(case.origins, np.full((d, 2), im), np.full((d, 2), mm), np.full(d, penalty))


def rule_margin(case: AssetCase, rule: PolicyConfig, scale: float) -> np.ndarray:
    return initial_margin(case.panel, rule, np.full(len(case.panel.columns), scale))


# --- calibration to solvency ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    fraction: float
    penalty: float
    haircut_factor: float


def _evaluate(case: AssetCase, rule: PolicyConfig, paths: PathSet, scale: float, cand: Candidate,
              settings: SimulationSettings, accounts: Accounts, target: SolvencyTarget) -> tuple[float, float]:
    """(bad-debt quantile / fund, liquidations-at-risk quantile / open interest) over `paths` at `scale`."""
    return _evaluate_margin(case, rule_margin(case, rule, scale), paths, cand, settings, accounts, target)


def _evaluate_margin(case: AssetCase, im: np.ndarray, paths: PathSet, cand: Candidate, settings: SimulationSettings,
                     accounts: Accounts, target: SolvencyTarget) -> tuple[float, float]:
    """`_evaluate`'s figures for the initial margin `im` (D, 2) per origin day of the case."""
    metrics = run_paths(paths, im, cand.fraction * im, cand.penalty, case.variance, settings, accounts,
                        collateral_haircut(im, cand.haircut_factor))
    bad_debt = pd.Series(metrics["bad_debt_fund"].to_numpy(), index=pd.DatetimeIndex(metrics["origin"]))
    return (worst_quantile(bad_debt, target.quantile, target.worst_period),
            float(np.quantile(metrics["liquidated"], target.liquidations_quantile)))


def worst_quantile(values: pd.Series, quantile: float, period: str | None) -> float:
    """The `quantile` of `values` (indexed by origin) pooled, or, with a `period`, the largest of the pooled one
    and each period's own (periods with too few values for the quantile to differ from their maximum,
    fewer than 1 / (1 - quantile), are left to the pooled one)."""
    pooled = float(np.quantile(values, quantile))
    if period is None:
        return pooled
    groups = values.groupby(pd.Grouper(freq=period))
    enough = groups.size() >= np.ceil(1 / (1 - quantile))
    per_period = groups.quantile(quantile)[enough]
    return max(pooled, float(per_period.max())) if len(per_period) else pooled


def _solvent(figures: tuple[float, float], target: SolvencyTarget) -> bool:
    return figures[0] <= target.max_bad_debt_fund


def _meets(figures: tuple[float, float], target: SolvencyTarget) -> bool:
    """Both limits: the bad-debt target and liquidations at risk."""
    return _solvent(figures, target) and (target.max_liquidations is None or figures[1] <= target.max_liquidations)


def _bisect(evaluate, lo: float, hi: float, target: SolvencyTarget) -> tuple[float, tuple[float, float], bool]:
    """Smallest scale in [lo, hi] meeting the bad-debt target (bad debt falls as the scale rises: lower
    leverage, earlier liquidation), the figures at it and whether the band limited it. Liquidations at risk
    are not monotone in the scale (a higher margin caps leverage but also raises the maintenance level of the
    accounts under the cap, which are then liquidated sooner), so they are checked at the result, not bisected."""
    at_hi = evaluate(hi)
    if not _solvent(at_hi, target):
        return hi, at_hi, True
    at_lo = evaluate(lo)
    if _solvent(at_lo, target):
        return lo, at_lo, lo > target.scale_bounds[0]
    hi, at_hi = _narrow(evaluate, lo, hi, at_hi, lambda f: _solvent(f, target), target.tolerance)
    return hi, at_hi, False


def _narrow(evaluate, lo: float, hi: float, at_hi: tuple[float, float], ok, tolerance: float):
    """Geometric bisection of [lo, hi], `ok` at hi and not at lo, to the relative width `tolerance`:
    the smallest scale found where `ok(figures)` holds, and its figures."""
    while hi > lo * (1 + tolerance):
        mid = np.sqrt(lo * hi)
        figures = evaluate(mid)
        if ok(figures):
            hi, at_hi = mid, figures
        else:
            lo = mid
    return hi, at_hi


LIFT_STEP = 0.1  # relative step of the scan for a scale that also keeps liquidations at risk within the limit


def _lift(evaluate, scale: float, figures: tuple[float, float], top: float,
          target: SolvencyTarget) -> tuple[float, tuple[float, float]]:
    """From a solvent scale, the first scale up to `top` (geometric steps of LIFT_STEP) that also keeps
    liquidations at risk within the limit, refined by a bisection between that scan point and the one
    before it (the scan alone overshoots by up to a step); the solvent scale itself when none does (the
    block is then not `feasible`). A scan, not a bisection over the whole band: liquidations at risk need
    not fall as the scale rises."""
    if _meets(figures, target) or not _solvent(figures, target):
        return scale, figures
    s = scale
    while s < top:
        below, s = s, min(s * (1 + LIFT_STEP), top)
        lifted = evaluate(s)
        if _meets(lifted, target):
            return _narrow(evaluate, below, s, lifted, lambda f: _meets(f, target), target.tolerance)
    return scale, figures


CANDIDATE_COLUMNS = ["maintenance_fraction", "penalty", "haircut_factor", "scale", "feasible", "limited", "cost",
                     "bad_debt_fund", "liquidations"]


def search_candidates(case: AssetCase, rule: PolicyConfig, paths: PathSet, settings: SimulationSettings,
                      accounts: Accounts, target: SolvencyTarget) -> pd.DataFrame:
    """The first block's search: for every (maintenance fraction, penalty, haircut factor) of the grid, the
    smallest scale meeting the limits on `paths` and its cost (average initial margin plus what the haircut
    costs), with the bad-debt quantile and liquidations at risk at that scale; sorted best first (both limits
    met, else the bad-debt target met, then cheapest). Columns CANDIDATE_COLUMNS."""
    share = float(np.mean(accounts.asset_collateral))
    rows = []
    for cand in (Candidate(f, p, h) for f in target.maintenance_fractions for p in target.penalties
                 for h in target.haircut_factors):
        def evaluate(s, c=cand):
            return _evaluate(case, rule, paths, s, c, settings, accounts, target)
        scale, figures, limited = _bisect(evaluate, *target.scale_bounds, target)
        scale, figures = _lift(evaluate, scale, figures, target.scale_bounds[1], target)
        rows.append({"maintenance_fraction": cand.fraction, "penalty": cand.penalty,
                     "haircut_factor": cand.haircut_factor, "scale": scale, "feasible": _meets(figures, target),
                     "limited": limited, "cost": _avg(case, rule, scale, paths, cand.haircut_factor * share),
                     "bad_debt_fund": figures[0], "liquidations": figures[1]})
    table = pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)
    order = table.assign(solvent=table["bad_debt_fund"] <= target.max_bad_debt_fund)  # then: bad debt at least
    order = order.sort_values(["feasible", "solvent", "cost"], ascending=[False, False, True], kind="stable")
    return table.loc[order.index].reset_index(drop=True)


def calibration_window(case: AssetCase, start: pd.Timestamp, target: SolvencyTarget) -> PathSet:
    """The paths realised before `start` whose origin lies in the `window_days` before it."""
    origin = case.paths.origins[case.paths.day]
    known = origin + pd.Timedelta(days=case.panel.horizon)
    paths = case.paths.select(np.asarray((known < start) & (origin >= start - pd.Timedelta(days=target.window_days))))
    if not len(paths):
        raise ConfigError(f"{case.asset}: no realised path before {start.date()} to calibrate on")
    return paths


def calibrate_solvency(case: AssetCase, rule: PolicyConfig, settings: SimulationSettings, target: SolvencyTarget,
                       first_validation_start, progress=None) -> pd.DataFrame:
    """Walk-forward solvency calibration of one asset; one row per block, columns SOLVENCY_COLUMNS."""
    first = utc(first_validation_start)
    end = case.origins.max()
    starts = pd.DatetimeIndex([first]).union(pd.date_range(first, end, freq=target.every)) if first <= end \
        else pd.DatetimeIndex([first])
    accounts = settings.accounts()
    rows, previous = [], None
    for b, start in enumerate(starts):
        paths = calibration_window(case, start, target)
        if previous is None:
            best = search_candidates(case, rule, paths, settings, accounts, target).iloc[0]
            cand = Candidate(best["maintenance_fraction"], best["penalty"], best["haircut_factor"])
            scale, figures, limited = float(best["scale"]), (best["bad_debt_fund"], best["liquidations"]), best["limited"]
        else:
            cand = Candidate(previous["maintenance_fraction"], previous["penalty"], previous["haircut_factor"])
            band = (max(previous["scale"] * (1 - target.max_change), target.scale_bounds[0]),
                    min(previous["scale"] * (1 + target.max_change), target.scale_bounds[1]))

            def evaluate(s):
                return _evaluate(case, rule, paths, s, cand, settings, accounts, target)
            scale, figures, limited = _bisect(evaluate, *band, target)
            if not _solvent(figures, target) and target.infeasible_change is not None:  # solvency first
                top = min(previous["scale"] * (1 + target.infeasible_change), target.scale_bounds[1])
                scale, figures, limited = _bisect(evaluate, band[1], top, target)
            scale, figures = _lift(evaluate, scale, figures, band[1], target)
        achieved, liquidations = figures
        previous = {"asset": case.asset, "policy": "solvency", "valid_from": start,
                    "valid_to": starts[b + 1] if b + 1 < len(starts) else pd.NaT, "scale": scale,
                    "maintenance_fraction": cand.fraction, "penalty": cand.penalty,
                    "haircut_factor": cand.haircut_factor, "feasible": _meets(figures, target), "limited": bool(limited),
                    "calibration_paths": len(paths), "calibration_bad_debt_fund": achieved,
                    "calibration_liquidations": liquidations,
                    "calibration_avg_margin": _avg(case, rule, scale, paths)}
        rows.append(previous)
        if progress:
            progress(previous)
    table = pd.DataFrame(rows, columns=SOLVENCY_COLUMNS)
    return table.assign(valid_to=pd.to_datetime(table["valid_to"], utc=True))


def calibrate_static(case: AssetCase, large_caps: tuple[str, ...], settings: SimulationSettings,
                     target: SolvencyTarget, first_validation_start) -> dict:
    """The `static_solvent` policy: the static schedule of the asset's tier (its IM / MM shape, penalty and
    haircut) times the smallest multiplier meeting the solvency target (bad debt, then liquidations at risk, as
    `calibrate_solvency`) on the paths of the solvency calibration's first window, then held fixed out of
    sample (it is static). Per asset, as the solvency calibration: one multiplier per tier would make the
    calmer asset of a tier carry the other's margin. One row of SOLVENCY_COLUMNS; `scale` is the multiplier."""
    start = utc(first_validation_start)
    paths = calibration_window(case, start, target)
    im, mm = static_schedule(case.asset, large_caps)
    cand, accounts, days = Candidate(mm / im, settings.penalty, 1.0), settings.accounts(), len(case.origins)

    def evaluate(multiplier):
        return _evaluate_margin(case, np.full((days, 2), multiplier * im), paths, cand, settings, accounts, target)
    top = min(target.scale_bounds[1], 1.0 / im)  # an initial margin of at most 100%
    multiplier, figures, limited = _bisect(evaluate, target.scale_bounds[0], top, target)
    multiplier, figures = _lift(evaluate, multiplier, figures, top, target)
    return {"asset": case.asset, "policy": "static_solvent", "valid_from": start, "valid_to": pd.NaT,
            "scale": multiplier, "maintenance_fraction": mm / im, "penalty": settings.penalty, "haircut_factor": 1.0,
            "feasible": _meets(figures, target), "limited": bool(limited), "calibration_paths": len(paths),
            "calibration_bad_debt_fund": figures[0], "calibration_liquidations": figures[1],
            "calibration_avg_margin": multiplier * im}


def _avg(case: AssetCase, rule: PolicyConfig, scale: float, paths: PathSet, haircut_weight: float = 0.0) -> float:
    """Average initial margin over the paths' days and sides, plus `haircut_weight` (share of accounts
    with collateral in the asset x haircut factor) x the average long initial margin (what the haircut costs)."""
    days = np.unique(paths.day)
    im = rule_margin(case, rule, scale)[days]
    return float(np.nanmean(im) + haircut_weight * np.nanmean(im[:, 0]))


def solvency_terms(case: AssetCase, rule: PolicyConfig, blocks: pd.DataFrame) -> Terms:
    """Per-origin terms of the solvency calibration: each origin takes the block in force at it."""
    starts = pd.DatetimeIndex(blocks["valid_from"])
    which = np.clip(starts.searchsorted(case.origins, side="right") - 1, 0, None)
    scale = blocks["scale"].to_numpy()[which]
    fraction = blocks["maintenance_fraction"].to_numpy()[which]
    initial = initial_margin(case.panel, rule, np.repeat(scale[:, None], len(case.panel.columns), axis=1))
    haircut = np.clip(blocks["haircut_factor"].to_numpy()[which] * np.nan_to_num(initial[:, 0], nan=MAX_HAIRCUT),
                      0.0, MAX_HAIRCUT)
    return Terms(case.origins, initial, fraction[:, None] * initial, blocks["penalty"].to_numpy()[which], haircut)


__all__ = ["CANDIDATE_COLUMNS", "POLICIES", "SOLVENCY_COLUMNS", "AssetCase", "SolvencyTarget", "Terms", "asset_panel",
           "breach_paths", "breach_terms", "calibrate_solvency", "calibrate_static", "calibration_window",
           "rule_margin", "search_candidates", "solvency_terms", "static_schedule", "static_terms"]
