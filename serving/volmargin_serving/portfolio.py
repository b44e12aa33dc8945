"""Portfolio margin: one rule for calibration, backtest and serving (numpy only).

    IM = scale x max(blend, floor) + concentration add-on,   MM = maintenance_fraction x IM
    blend = (1 - w) x joint + w x isolated        (the correlation stress, w = `correlation_weight`)
       or   joint + w x max(comonotone - joint, 0)  (correlation_stress = 'comonotone')

- joint: the risk measure (`policy.measure`, default var99) of the book's loss over the filtered scenario
  set: standardised returns z (n_scenarios, n_assets) drawn on common dates, times today's volatility
  forecast of each asset, clipped at +-max_move (the largest move realised in the look-back), valued
  linearly (`volmargin_serving.risk`);
- isolated: the sum of the same measure over each position alone (no offsets at all). For a coherent
  measure (ES) it bounds the book's loss under any dependence, so it is the loss of both correlation
  stresses a venue worries about: perfect correlation (long baskets; ES and VaR are comonotonic-additive)
  and a correlation break (hedges losing their offset). VaR is not subadditive: a book's joint VaR can
  exceed its isolated sum (then so does its margin). The blend weight w is calibrated;
- comonotone: the perfect-correlation stress alone: the risk measure of the book's loss when every asset
  sits at the same rank of its own scenario distribution (each asset's scenario column sorted), over the
  ranks of the two tails (`COMONOTONE_TAIL` of the scenarios at each end; a middle rank moves every asset
  by less than its tail quantile). A long basket's comonotone ES is its isolated sum (ES is comonotonic-
  additive), a hedge's is its legs' volatility mismatch: the stress charges baskets for correlations going
  to one without taking the hedges' offset away (the correlation break of a hedge is left to the joint
  scenarios, which hold the decorrelated days);
- floor: 0, or the joint measure over the stressed scenarios (raw MPOR returns of the worst window)
  when the stress is a floor (APC, EMIR art. 28(1)(b) style); as a weight the stressed scenarios are
  instead part of the weighted set;
- concentration: `sum_a min(|n_a|, concentration x |n_a| sigma_a sqrt(|n_a| / ADV_a))`, the square-root-
  law cost of liquidating a position against the asset's traded volume (quote currency per day), at
  most the position itself (charged in full without a usable volume). Price data carry no liquidation
  cost, so its coefficient is either a policy setting or calibrated with the scale and w to the breach
  target (`volmargin.risk.portfolio.calibrate_books`): then it stands for the extra tail risk of a book of
  few large positions in thin assets, which the scale alone would charge to every book.

The APC path tools (buffer, speed limits) of `volmargin_serving.margins` then act on the margin rate
(IM / gross notional) day by day, exactly as for a single position: in serving from the book's rate in force,
`previous` (NaN for a first margin), which a policy with any of them requires.

`PortfolioEngine` is the serving side: a calibrated scenario file (`write_scenarios` / `load_scenarios`),
today's variance forecasts (`align` puts a runtime's forecasts in the file's asset order) and traded
volumes -> margins of one book (`margin`) or many (`margin_batch`).
An asset without a usable forecast (NaN, <= 0) is priced at its fallback volatility, the largest forecast
of the calibration look-back, and flagged; without one its positions are fully collateralised. A book holding
such a leg is charged at least the joint margin of its other legs plus the flagged legs' own margins (a hedge
leg priced jointly at the larger fallback would offset more and lower the margin).
"""

from __future__ import annotations

import hmac
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from volmargin_serving.bundle import real_number, resolve_key, signature
from volmargin_serving.calibration import HARD_MIN_SCALE, POLICY_RULES
from volmargin_serving.errors import CalibrationError, SignatureError
from volmargin_serving.margins import apc_step, speed_bounds
from volmargin_serving.risk import (
    MAX_NOTIONAL, BadPositionError, Positions, parse_measure, pnl_measure, risk_measure, simple_returns, tail_measure,
)

STRESS_MODES = ("none", "weight", "floor")
CORRELATION_STRESSES = ("isolated", "comonotone")
# an add-on coefficient that charges any position above 1e-100 in full: finite, so a zero position costs
# 0 x FULL_CHARGE = 0 (no NaN) and no |n| below 1e300 overflows
FULL_CHARGE = 1e150
COMONOTONE_TAIL = 0.1  # share of the scenario ranks kept at each end for the comonotone stress
SCENARIO_SCHEMA = 1
# scenario matrices are held in float32 (library and serving alike): half the memory traffic of the one
# big product per book; the P&L is summed in float32 (relative error ~1e-6 of the margin) and the risk
# measure taken in float64
SCENARIO_DTYPE = np.float32
# books priced per block by `PortfolioEngine.margin_batch`: a (128, 2,500) float32 P&L block is 1.3 MB, in
# cache; a whole batch's P&L (10,000 books: 100 MB) was page-faulted in, as much system time as work
BATCH_BLOCK = 128
# a scenario file below these floors prices books near 0 (session 30's red team: a resealed scale of 1e-9, a move
# cap of 1e-9, one scenario all loaded): the least scenario count a calibration may use
# (`volmargin.risk.scenarios.ScenarioConfig.min_scenarios`), a move cap far below any market's largest move in a
# look-back (0.1%), and a fallback volatility below a stablecoin's (1e-5 a day) unless it is none (0 / NaN)
MIN_SCENARIOS, MIN_MOVE_CAP, MIN_FALLBACK_SIGMA = 10, 1e-3, 1e-5
SIGNATURE_ARRAY = "signature"  # hex HMAC-SHA256 of the file's content under the service key (`_content`)


def scenario_matrix(returns) -> np.ndarray:
    """(n_assets, n_scenarios) simple returns of (n_scenarios, n_assets) log returns, in SCENARIO_DTYPE."""
    return np.ascontiguousarray(simple_returns(returns).T, dtype=SCENARIO_DTYPE)


@dataclass(frozen=True)
class PortfolioPolicy:
    # risk measure of the MPOR loss (see volmargin_serving.risk.parse_measure): the 97.5% ES, chosen with the
    # calibration's correlation-weight rule over var99 on a hold-out before the validation period, with the
    # adversarial books picked out of sample (bench/portfolio_weight.py, README "Portfolio margin across assets")
    measure: str = "es975"
    scale: float = 1.0  # calibrated
    correlation_weight: float = 0.0  # w in [0, 1], calibrated: blend towards the no-offset loss
    concentration: float = 0.0  # square-root impact coefficient (policy, 0 = off)
    maintenance_fraction: float = 0.75
    stress_mode: str = "none"  # none | weight | floor
    stress_weight: float = 0.25  # probability mass of the stressed scenarios when stress_mode = weight
    correlation_stress: str = "isolated"  # isolated | comonotone: what the blend weight w moves towards
    buffer: float | None = None  # APC tools on the margin rate path (see volmargin_serving.margins)
    max_up: float | None = None
    max_down: float | None = None

    def __post_init__(self) -> None:
        checks = {"measure": _known_measure(self.measure), "scale": real_number(self.scale) and self.scale > 0,
                  "correlation_weight": real_number(self.correlation_weight) and 0 <= self.correlation_weight <= 1,
                  "concentration": real_number(self.concentration) and self.concentration >= 0,
                  "maintenance_fraction": real_number(self.maintenance_fraction) and 0 < self.maintenance_fraction < 1,
                  "stress_mode": self.stress_mode in STRESS_MODES,
                  "stress_weight": real_number(self.stress_weight) and 0 <= self.stress_weight < 1,
                  "correlation_stress": self.correlation_stress in CORRELATION_STRESSES,
                  # the APC tools: the rules a calibration set's policy must pass (a negative buffer lowers margins)
                  **{k: POLICY_RULES[k](getattr(self, k)) for k in ("buffer", "max_up", "max_down")}}
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            value = getattr(self, bad[0])
            raise ValueError(f"portfolio policy.{bad[0]}: invalid value "
                             f"{value.item() if isinstance(value, np.generic) else value!r}")


def _known_measure(spec) -> bool:
    """A measure of losses a margin can rest on: var/es at a level in (0.5, 1) (below, a quantile of gains: var42
    margined a plain long at 0), worst<k> with k >= 1."""
    try:
        kind, value = parse_measure(spec)
    except ValueError:
        return False
    return value >= 1 if kind == "worst" else 0.5 < value < 1


def unit_risks(simple: np.ndarray, measure: str, weights=None) -> np.ndarray:
    """(n_assets, 2) risk of a unit long (loses -simple) and a unit short (loses +simple) per asset."""
    simple_t = np.asarray(simple, dtype=float).T
    risks = np.stack([risk_measure(-simple_t, measure, weights), risk_measure(simple_t, measure, weights)], axis=1)
    return np.maximum(risks, 0.0)  # a position that gains in the tail margins 0 alone, never a credit to others


def stressed_unit_risks(unit: np.ndarray, stress_t: np.ndarray | None, measure: str) -> np.ndarray:
    """Unit risks `unit` (n_assets, 2) floored by those of the stressed simple returns `stress_t` (n_assets,
    n_stress) when the stress is a floor (None: `unit`): each position's own margin under that floor."""
    return unit if stress_t is None else np.maximum(unit, unit_risks(stress_t.T, measure))


def isolated_risk(notional: np.ndarray, unit: np.ndarray) -> np.ndarray:
    """Sum over positions of each one's own risk: (..., n_assets) notionals, (n_assets, 2) unit risks."""
    return np.maximum(notional, 0) @ unit[:, 0] + np.maximum(-notional, 0) @ unit[:, 1]


def addon_coefficients(sigma: np.ndarray, adv: np.ndarray | None, coefficient: float) -> np.ndarray | None:
    """Per asset, coefficient x sigma / sqrt(ADV): the add-on of a position of size |n| is this x |n|^1.5.
    FULL_CHARGE where the volume is unusable (NaN, 0: the position is charged in full); None when off."""
    if coefficient == 0 or adv is None:
        return None
    adv = np.asarray(adv, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        per = coefficient * np.asarray(sigma, dtype=float) / np.sqrt(adv)
    usable = np.isfinite(per) & (per >= 0) & np.isfinite(adv)  # an infinite volume is no volume: full charge
    return np.where(usable, np.minimum(per, FULL_CHARGE), FULL_CHARGE)


def addons_from_coefficients(notional: np.ndarray, coef: np.ndarray | None) -> np.ndarray:
    """Per position, min(coef x |n|^1.5, |n|)."""
    size = np.abs(notional)
    if coef is None:
        return np.zeros_like(size, dtype=float)
    return np.minimum(coef * size * np.sqrt(size), size)


def position_addons(notional: np.ndarray, sigma: np.ndarray, adv: np.ndarray | None, coefficient: float) -> np.ndarray:
    """Per position, the square-root-law liquidation cost coefficient x |n| sigma sqrt(|n| / ADV), at most
    |n| (the whole position); a held position without a usable volume (NaN, 0) is charged |n|."""
    notional = np.asarray(notional, dtype=float)
    return addons_from_coefficients(notional, addon_coefficients(sigma, adv, coefficient))


def book_components(notional: np.ndarray, simple_t: np.ndarray, unit: np.ndarray, measure: str, weights=None,
                    stress_t: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(joint, isolated, floor) risks of books (..., k) against the scenarios' simple returns `simple_t`
    (k, n_scenarios) with unit risks `unit` (k, 2); with stressed simple returns `stress_t` (k, n_stress)
    the floor is their joint risk and each position's isolated risk is floored by its stressed one, so
    `isolated` stays the sum of the positions' own margins."""
    joint = risk_measure(-(notional.astype(simple_t.dtype) @ simple_t).astype(float), measure, weights)
    if stress_t is None:
        return joint, isolated_risk(notional, unit), np.zeros_like(joint)
    floor = risk_measure(-(notional.astype(stress_t.dtype) @ stress_t).astype(float), measure)
    return joint, isolated_risk(notional, stressed_unit_risks(unit, stress_t, measure)), floor


def comonotone_tails(simple_t: np.ndarray) -> np.ndarray:
    """(n_assets, 2m) comonotone scenarios: each asset's simple returns (row of `simple_t`) sorted, the m
    lowest and m highest ranks, m = ceil(COMONOTONE_TAIL x n_scenarios); column j is one joint scenario."""
    ranked = np.sort(simple_t, axis=1)
    m = int(np.ceil(COMONOTONE_TAIL * ranked.shape[1]))
    if 2 * m >= ranked.shape[1]:
        return np.ascontiguousarray(ranked)
    return np.ascontiguousarray(np.concatenate([ranked[:, :m], ranked[:, -m:]], axis=1))


def comonotone_risk(notional: np.ndarray, tails_t: np.ndarray, measure: str, n_scenarios: int) -> np.ndarray:
    """The measure of books' (..., k) losses over the comonotone tail scenarios `tails_t` (k, 2m), its tail
    mass counted against the full `n_scenarios` (unweighted: ranks carry no dates)."""
    return tail_measure(-(notional.astype(tails_t.dtype) @ tails_t).astype(float), measure, n_scenarios)


def initial_margin(joint, isolated, addon, policy: PortfolioPolicy, floor=0.0, comonotone=None) -> np.ndarray:
    """IM in currency from the components (see the module docstring)."""
    w = policy.correlation_weight
    if policy.correlation_stress == "comonotone":
        joint = np.asarray(joint)
        blend = joint + w * np.maximum(np.asarray(comonotone) - joint, 0.0)
    else:
        blend = (1 - w) * np.asarray(joint) + w * np.asarray(isolated)
    return policy.scale * np.maximum(np.maximum(blend, floor), 0.0) + addon  # a stressed floor may be a gain


def isolated_margin(isolated, addon, policy: PortfolioPolicy) -> np.ndarray:
    """Sum of the positions' margins, each margined alone: no blend matters for one position."""
    return policy.scale * np.asarray(isolated) + addon


# --------------------------------------------------------------------------- one margin date's scenario set
# The assembly below runs in calibration (`volmargin.risk.portfolio.book_panel`) and in serving
# (`PortfolioEngine`) alike, so the stress weighting and the move cap cannot differ between them.


def scenario_returns(z: np.ndarray, sigma: np.ndarray, max_move: float) -> np.ndarray:
    """FHS scenario log returns: standardised returns z (n_scenarios, n_assets) x today's volatility sigma
    (n_assets,), clipped at +-max_move (the largest move realised in the look-back; inf: no cap)."""
    return np.clip(z * sigma, -max_move, max_move)


def scenario_weights(n: int, stress: np.ndarray | None, policy: PortfolioPolicy,
                     weights: np.ndarray | None = None) -> np.ndarray | None:
    """Weights of a date's scenario set: `weights` of its n scenarios (None: equal), unless the policy
    weights the stressed scenarios in; then the n scenarios share 1 - stress_weight (in proportion to
    `weights`) and the stressed rows, appended after them, stress_weight equally."""
    if policy.stress_mode != "weight" or stress is None or not len(stress):
        return weights
    s = policy.stress_weight
    # equal weights as (1 - s) / n, one rounding: serving's former (1 - s) x (1 / n) differed from the
    # library's in the last bit for about a quarter of the n
    base = np.full(n, (1 - s) / n) if weights is None else (1 - s) * weights
    return np.concatenate([base, np.full(len(stress), s / len(stress))])


def day_scenarios(returns: np.ndarray, stress: np.ndarray | None, policy: PortfolioPolicy,
                  weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """The scenario set of one margin date as the margin rule reads it, from its scenario log returns
    (n_scenarios, n_assets) with `weights` (None: equal) and the raw stressed returns (n_stress, n_assets;
    None or empty: no stress): (simple_t, weights, stress_t), the simple returns (n_assets, n) with their
    weights (None: equal), the stressed rows appended when the policy weights them in, and the stressed
    simple returns (n_assets, n_stress) when they are a floor (else None)."""
    stressed = stress is not None and len(stress) > 0
    full_weights = scenario_weights(len(returns), stress, policy, weights)
    if stressed and policy.stress_mode == "weight":
        returns = np.vstack([returns, stress])
    stress_t = scenario_matrix(stress) if stressed and policy.stress_mode == "floor" else None
    return scenario_matrix(returns), full_weights, stress_t


# --------------------------------------------------------------------------- the shipped scenario set


@dataclass(frozen=True)
class PortfolioScenarios:
    """A calibrated scenario set as shipped to serving: standardised returns `z` (n_scenarios, n_assets)
    on `dates` with `weights`, optional raw stressed returns `stress` (n_stress, n_assets), each asset's
    fallback volatility, the policy, the filter model and the as-of date it was built for."""

    assets: tuple[str, ...]
    z: np.ndarray
    dates: np.ndarray
    weights: np.ndarray | None
    stress: np.ndarray | None
    fallback_sigma: np.ndarray
    policy: PortfolioPolicy
    model: str = ""
    as_of: str = ""
    meta: dict = field(default_factory=dict)
    max_move: float = float("inf")  # scenario log moves are clipped at +-max_move

    def full_weights(self) -> np.ndarray | None:
        """Scenario weights including the stressed scenarios when the policy weights them in."""
        return scenario_weights(len(self.z), self.stress, self.policy, self.weights)


def write_scenarios(path: str | Path, scenarios: PortfolioScenarios, key: bytes | str | None = None) -> Path:
    """Write a scenario file (.npz, no pickle); written beside and renamed, so readers never see half. Signed
    with the service key (`key`, else VOLMARGIN_BUNDLE_KEY) when there is one, as calibration sets are."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    header = {"schema": SCENARIO_SCHEMA, "assets": list(scenarios.assets), "policy": asdict(scenarios.policy),
              "model": scenarios.model, "as_of": scenarios.as_of, "meta": scenarios.meta,
              "max_move": None if not np.isfinite(scenarios.max_move) else float(scenarios.max_move)}
    arrays = {"z": scenarios.z, "dates": np.asarray(scenarios.dates, dtype="datetime64[D]"),
              "fallback_sigma": scenarios.fallback_sigma}
    if scenarios.weights is not None:
        arrays["weights"] = scenarios.weights
    if scenarios.stress is not None:
        arrays["stress"] = scenarios.stress
    header_text = json.dumps(header)
    if (secret := resolve_key(key)) is not None:
        arrays[SIGNATURE_ARRAY] = np.array(signature(_content(header_text, arrays), secret))
    np.savez(tmp, header=np.array(header_text), **arrays)
    tmp.replace(path)
    return path


def _content(header: str, arrays: dict[str, np.ndarray]) -> bytes:
    """What a scenario file's signature covers: the header and every array's name, dtype, shape and bytes."""
    parts = [header.encode()]
    for name in sorted(k for k in arrays if k != SIGNATURE_ARRAY):
        a = np.ascontiguousarray(arrays[name])
        parts += [name.encode(), a.dtype.str.encode(), repr(a.shape).encode(), a.tobytes()]
    return b"\0".join(parts)


def load_scenarios(path: str | Path, key: bytes | str | None = None) -> PortfolioScenarios:
    """A scenario file, checked whole (`_scenario_problem`); with a service key (`key`, else
    VOLMARGIN_BUNDLE_KEY) its signature must verify (SignatureError), as a calibration set's."""
    try:
        with np.load(path, allow_pickle=False) as data:
            header_text = str(data["header"])
            header = json.loads(header_text)
            arrays = {k: data[k] for k in data.files if k != "header"}
    except (OSError, ValueError, KeyError) as exc:
        raise CalibrationError(f"{path}: not a portfolio scenario file ({exc})") from exc
    if (secret := resolve_key(key)) is not None:
        recorded = arrays.get(SIGNATURE_ARRAY)
        if recorded is None:
            raise SignatureError(f"{path}: no signature; this service requires signed scenario files (a key is set)")
        if not hmac.compare_digest(str(recorded), signature(_content(header_text, arrays), secret)):
            raise SignatureError(f"{path}: signature does not verify with the service's key; the file was altered "
                                 "or signed with another key")
    if not isinstance(header, dict) or header.get("schema") != SCENARIO_SCHEMA:
        schema = header.get("schema") if isinstance(header, dict) else None
        raise CalibrationError(f"{path}: scenario schema {schema!r}, expected {SCENARIO_SCHEMA}")
    try:
        assets, policy = tuple(header["assets"]), PortfolioPolicy(**header["policy"])
        max_move = float("inf") if header.get("max_move") is None else float(header["max_move"])
        scenarios = PortfolioScenarios(assets, arrays["z"], arrays["dates"], arrays.get("weights"),
                                       arrays.get("stress"), arrays["fallback_sigma"], policy, header["model"],
                                       header["as_of"], header.get("meta", {}), max_move)
    except (KeyError, TypeError, ValueError) as exc:
        raise CalibrationError(f"{path}: not a portfolio scenario file ({type(exc).__name__}: {exc})") from None
    if problem := _scenario_problem(scenarios):
        raise CalibrationError(f"{path}: {problem}")
    return scenarios


def _scenario_problem(s: PortfolioScenarios) -> str | None:
    """What makes a loaded scenario set unusable (a margin from it could be NaN or too low), or None: every
    array the margin rule reads, in the shape and range the library writes."""
    n, m = (s.z.shape if s.z.ndim == 2 else (0, -1))
    kind, k = parse_measure(s.policy.measure)
    fallback = np.asarray(s.fallback_sigma, float)
    checks = (
        (len(set(s.assets)) == len(s.assets) > 0 and all(isinstance(a, str) for a in s.assets),
         "assets must be distinct names"),
        (s.z.ndim == 2 and m == len(s.assets) and n > 0 and np.isfinite(s.z).all(),
         f"z must be a finite (scenarios, {len(s.assets)}) matrix"),
        (n >= MIN_SCENARIOS, f"z holds {n} scenarios; a calibration uses at least {MIN_SCENARIOS}"),
        (n > 0 and (s.z != 0).any(0).all(), "z must move every asset in some scenario (a column of zeros prices 0)"),
        (np.shape(s.dates) == (n,), f"dates must hold one date per scenario ({n})"),
        (s.weights is None or (np.shape(s.weights) == (n,) and np.isfinite(s.weights).all() and (s.weights >= 0).all()
                               and abs(float(np.sum(s.weights)) - 1) < 1e-6),
         f"weights must be {n} non-negative numbers that sum to 1"),
        (s.stress is None or (s.stress.ndim == 2 and s.stress.shape[1] == len(s.assets) and np.isfinite(s.stress).all()),
         f"stress must be a finite (rows, {len(s.assets)}) matrix"),
        (fallback.shape == (len(s.assets),) and not np.isinf(fallback).any()
         and not ((fallback < MIN_FALLBACK_SIGMA) & (fallback != 0)).any(),
         f"fallback_sigma must be one volatility >= 0 per asset: at least {MIN_FALLBACK_SIGMA:g}, or 0 / NaN "
         "(none: fully collateralised)"),
        (s.max_move >= MIN_MOVE_CAP, f"max_move must be > 0, at least {MIN_MOVE_CAP:g}, got {s.max_move:g}"),
        (s.policy.scale >= HARD_MIN_SCALE,
         f"policy.scale {s.policy.scale:g} is below the runtime's least scale {HARD_MIN_SCALE} (as calibration sets)"),
        (kind != "worst" or k <= n, f"policy.measure {s.policy.measure}: worst<k> needs k <= the {n} scenarios"),
    )
    return next((message for ok, message in checks if not ok), None)


# --------------------------------------------------------------------------- serving


@dataclass(frozen=True)
class PortfolioMargin:
    """Margins of books (scalars for one book, (n_books,) arrays for a batch), in currency: initial,
    maintenance, the isolated sum (each position margined alone), gross notional; `flagged` names the
    assets held whose forecast or, under a concentration add-on, traded volume was unusable (priced
    conservatively: the volume's absence charges the position in full), in a batch those any book holds;
    `book_flagged` says which books hold one (a bool for one book, (n_books,) for a batch)."""

    initial: np.ndarray
    maintenance: np.ndarray
    isolated: np.ndarray
    gross: np.ndarray
    flagged: tuple[str, ...]
    book_flagged: np.ndarray | bool = False

    @property
    def rate(self) -> np.ndarray:
        """Initial margin over gross notional; 0 for a book of no position (no margin either)."""
        gross = np.asarray(self.gross, dtype=float)
        rate = np.divide(self.initial, gross, out=np.zeros(np.broadcast(self.initial, gross).shape), where=gross > 0)
        return rate if rate.ndim else float(rate)


def align(scenario_assets, assets, values) -> np.ndarray:
    """Per-asset `values` of `assets` (e.g. the variance of a runtime's `Forecasts` for a batch) in the
    scenario set's asset order; NaN for an asset the batch lacks (then priced conservatively, flagged).
    BadPositionError for an asset given twice (which value is today's?) or one value per asset not given."""
    assets = list(assets)
    if len(set(assets)) < len(assets):
        twice = next(a for i, a in enumerate(assets) if a in assets[:i])
        raise BadPositionError(f"align: asset {twice!r} is listed twice; give one value per asset")
    values = _per_asset_values("align: values", values, len(assets), "asset listed")
    where = {a: i for i, a in enumerate(assets)}
    return np.array([values[where[a]] if a in where else np.nan for a in scenario_assets])


# A forecast volatility below this fraction of the asset's largest in the look-back (`fallback_sigma`) is a
# unit slip (a variance in basis points, a daily figure divided again), not a calm market: the 8 models'
# forecasts of the 129 spot assets never fell below 0.022 of their 250-day largest (GJR on DOGE). It is
# read as no forecast: flagged, priced at the fallback, never at the slip.
IMPLAUSIBLY_CALM = 0.01
# A scenario log move beyond this (a 10^12-fold price) is no price at all: from a variance forecast that large
# the float32 P&L of a short overflows to inf - inf = NaN. Such an asset is fully collateralised, flagged.
WILD_LOG_MOVE = float(np.log(1e12))


def _per_asset_values(name: str, values, n: int, of: str = "asset of the scenario set") -> np.ndarray:
    """(n,) floats, one per `of`; BadPositionError otherwise (numpy's errors before)."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise BadPositionError(f"{name}: expected ({n},) numbers, one per {of}") from None
    if array.shape != (n,):
        raise BadPositionError(f"{name}: expected ({n},) numbers, one per {of}, "
                               f"got shape {array.shape}")
    return array


class PortfolioEngine:
    """Margins from a scenario file and today's per-asset variance forecasts of the MPOR (n_assets,), NaN
    where none is usable, and traded volumes `adv` (quote currency per day; NaN where none) for the add-on,
    required when the policy's concentration is > 0. A forecast volatility below `IMPLAUSIBLY_CALM` x the
    look-back's largest counts as unusable too."""

    def __init__(self, scenarios: PortfolioScenarios, variance, adv=None):
        self.scenarios, policy = scenarios, scenarios.policy
        self.policy = policy
        variance = _per_asset_values("variance", variance, len(scenarios.assets))
        with np.errstate(invalid="ignore"):
            calm = np.sqrt(np.abs(variance)) < IMPLAUSIBLY_CALM * scenarios.fallback_sigma
        usable = np.isfinite(variance) & (variance > 0) & ~calm
        self.unusable = ~usable
        self.full = self.unusable & ~(np.isfinite(scenarios.fallback_sigma) & (scenarios.fallback_sigma > 0))
        self.sigma = np.where(usable, np.sqrt(np.where(usable, variance, 1.0)), scenarios.fallback_sigma)
        self.sigma = np.where(self.full, 0.0, self.sigma)
        self.adv = None if adv is None else _per_asset_values("adv", adv, len(scenarios.assets))
        if self.adv is None and policy.concentration > 0:  # as the library's job: no add-on dropped in silence
            raise BadPositionError(f"adv: the scenario file's policy charges a concentration add-on "
                                   f"({policy.concentration:g}) on traded volumes; give adv, one per asset "
                                   "(NaN where none: that asset's positions are charged in full)")
        returns = scenario_returns(scenarios.z, self.sigma, scenarios.max_move)
        wild = np.abs(returns).max(axis=0, initial=0.0) > WILD_LOG_MOVE
        if wild.any():
            self.unusable, self.full = self.unusable | wild, self.full | wild
            self.sigma = np.where(wild, 0.0, self.sigma)
            returns = scenario_returns(scenarios.z, self.sigma, scenarios.max_move)
        # simple_t (n_assets, n_scenarios); stress_t (n_assets, n_stress) or None: `book_panel`'s assembly
        self.simple_t, self.weights, self.stress_t = day_scenarios(returns, scenarios.stress, policy, scenarios.weights)
        self.unit = unit_risks(self.simple_t.T, policy.measure, self.weights)
        self.index = {a: i for i, a in enumerate(scenarios.assets)}
        self.any_unusable, self.any_full = bool(self.unusable.any()), bool(self.full.any())
        self._es_twin = self._twin_for_var(variance)
        self.coef = addon_coefficients(self.sigma, self.adv, policy.concentration)
        # held there, a position is charged in full for want of a volume: flagged, as a missing forecast is
        self.no_volume = (np.zeros(len(scenarios.assets), dtype=bool) if self.coef is None
                          else ~(np.isfinite(self.adv) & (self.adv > 0)))
        # the one-book kernel's tables: unit risks as [long, short] pairs, the measure of a P&L vector
        self._unit_flat = self.unit.ravel()
        self._joint = pnl_measure(policy.measure, self.simple_t.shape[1], self.weights)
        self.tails_t = comonotone_tails(self.simple_t) if policy.correlation_stress == "comonotone" else None
        self._comonotone = pnl_measure(policy.measure, self.simple_t.shape[1])

    def _price(self, notional: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """IM and isolated-margin sum of books (..., k) in the assets `columns` (k,)."""
        stress_t = None if self.stress_t is None else self.stress_t[columns]
        joint, isolated, floor = book_components(notional, self.simple_t[columns], self.unit[columns],
                                                 self.policy.measure, self.weights, stress_t)
        coef = None if self.coef is None else self.coef[columns]
        addon = addons_from_coefficients(notional, coef).sum(-1)
        como = None if self.tails_t is None else comonotone_risk(notional, self.tails_t[columns], self.policy.measure,
                                                                  self.simple_t.shape[1])
        im = initial_margin(joint, isolated, addon, self.policy, floor, como)
        iso = isolated_margin(isolated, addon, self.policy)
        if self.any_full:  # no forecast and no fallback: those positions are fully collateralised
            full = np.abs(notional) @ self.full[columns].astype(float)
            im, iso = im + full, iso + full
        return im, iso

    def _price_fast(self, notional: np.ndarray, columns: np.ndarray, simple_t: np.ndarray, tails_t: np.ndarray | None,
                    pnl: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """IM and isolated-margin sum of one book (k,) or a block of books (m, k) held in `columns`, whose
        scenario rows are `simple_t` (k, n_scenarios) and comonotone tails `tails_t`: `book_components` +
        `initial_margin` of `_price` in a few numpy calls (the serving hot path; a test checks it against
        `_price` and the library). `pnl` is an optional scratch buffer for the P&L (partitioned in place)."""
        pnl = np.matmul(notional.astype(SCENARIO_DTYPE), simple_t, out=pnl)
        joint = self._joint(pnl)
        size = np.abs(notional)
        isolated = (size * self._unit_flat[2 * columns + (notional < 0)]).sum(-1)  # each leg's own long / short risk
        addon = 0.0 if self.coef is None else np.minimum(self.coef[columns] * size * np.sqrt(size), size).sum(-1)
        p, w = self.policy, self.policy.correlation_weight
        if tails_t is None:
            blend = (1 - w) * joint + w * isolated
        else:
            como = self._comonotone(notional.astype(SCENARIO_DTYPE) @ tails_t)
            blend = joint + w * np.maximum(como - joint, 0.0)
        return p.scale * np.maximum(blend, 0.0) + addon, p.scale * isolated + addon

    def _price_one(self, notional: np.ndarray, columns: np.ndarray) -> tuple[float, float]:
        """IM and isolated-margin sum of one book (k,)."""
        if self.stress_t is not None or self.any_full:
            im, iso = self._price(notional, columns)
        else:
            im, iso = self._price_fast(notional, columns, self.simple_t[columns],
                                       None if self.tails_t is None else self.tails_t[columns])
        return float(im), float(iso)

    def margin(self, positions: Positions | None = None, *, names=None, notionals=None, kinds=None,
               previous: float | None = None) -> PortfolioMargin:
        """Margin of one book: `Positions` (asset indices into the scenario set) or names/notionals/kinds,
        validated (UnknownAssetError, BadPositionError); `previous`: its margin rate in force (see `_apc`)."""
        if positions is None:
            positions = Positions.from_names(self.index, names, notionals, kinds)
        elif not isinstance(positions, Positions):
            raise BadPositionError(f"positions: expected a Positions (or names=, notionals=), got {positions!r:.60}")
        columns, notional = positions.asset, positions.notional
        if len(columns) > 1 and np.bincount(columns).max() > 1:  # several positions in one asset: net them
            columns, inverse = np.unique(columns, return_inverse=True)
            notional = np.bincount(inverse, weights=notional, minlength=len(columns))
        im, isolated = self._price_one(notional, columns)
        held = notional != 0
        flagged = tuple(self.scenarios.assets[i] for i in columns[held & (self.unusable | self.no_volume)[columns]])
        if self.any_unusable:
            bad = held & self.unusable[columns]
            if bad.any():
                im_clean, iso_clean = self._price_one(np.where(bad, 0.0, notional), columns)
                im = max(im, im_clean + isolated - iso_clean)  # see `_flagged_bound`
                if self._es_twin is not None:
                    im = max(im, self._es_twin.margin(positions).initial)
        im = float(self._apc(np.array([im]), np.array([positions.gross]), previous, 1)[0])
        return PortfolioMargin(im, self.policy.maintenance_fraction * im, isolated, positions.gross, flagged,
                               bool(flagged))

    def margin_batch(self, notional, previous=None) -> PortfolioMargin:
        """Margins of many books: notional (n_books, n_assets) aligned with the scenario set's assets;
        `previous` (n_books,): their margin rates in force (see `_apc`)."""
        try:
            notional = np.asarray(notional, dtype=float)
        except (TypeError, ValueError):
            raise BadPositionError("notional: expected (books, assets) numbers") from None
        if notional.ndim != 2 or notional.shape[1] != len(self.scenarios.assets):
            raise BadPositionError(f"notional: expected (books, {len(self.scenarios.assets)}), got {notional.shape}")
        if not (np.abs(notional) <= MAX_NOTIONAL).all():  # NaN fails it too
            book = int(np.flatnonzero(~(np.abs(notional) <= MAX_NOTIONAL).all(1))[0])
            raise BadPositionError(f"book {book}: a notional is not finite or beyond +-{MAX_NOTIONAL:g}")
        columns = np.flatnonzero(np.abs(notional).sum(0) > 0)
        im, isolated = self._price_blocks(notional[:, columns], columns)
        held_unusable = (notional[:, columns] != 0) & self.unusable[columns]
        if rows := np.flatnonzero(held_unusable.any(1)).tolist():
            im[rows] = self._flagged_bound(notional[rows][:, columns], columns, held_unusable[rows], im[rows],
                                           isolated[rows])
            if self._es_twin is not None:
                im[rows] = np.maximum(im[rows], self._es_twin.margin_batch(notional[rows]).initial)
        held_flagged = held_unusable | ((notional[:, columns] != 0) & self.no_volume[columns])
        flagged = tuple(self.scenarios.assets[i] for i in columns[held_flagged.any(0)])
        gross = np.abs(notional).sum(1)
        im = self._apc(im, gross, previous, len(notional))
        return PortfolioMargin(im, self.policy.maintenance_fraction * im, isolated, gross, flagged,
                               held_flagged.any(1))

    def _apc(self, im: np.ndarray, gross: np.ndarray, previous, n: int) -> np.ndarray:
        """IM after the policy's APC tools on the margin rate, from `previous`, the books' rates in force (NaN:
        a first margin), as the library's `margin_path` steps a day: the scale was calibrated with them, so a
        policy with any tool requires `previous` (BadPositionError), never serves the bare rule in silence."""
        p = self.policy
        if p.buffer is None and p.max_up is None and p.max_down is None:
            return im
        if previous is None:
            raise BadPositionError(f"previous: the scenario file's policy has APC tools (buffer {p.buffer}, max_up "
                                   f"{p.max_up}, max_down {p.max_down}); give the margin rate in force (NaN: a first "
                                   "margin)")
        previous = _per_asset_values("previous", np.reshape(previous, -1) if np.ndim(previous) == 0 else previous, n,
                                     "book (NaN: a first margin)")
        if not (np.isnan(previous) | ((previous >= 0) & (previous <= 1))).all():
            raise BadPositionError("previous: a margin rate in force is a number in [0, 1] (or NaN: a first margin)")
        # a rate of 0 (an empty book's) would cap every later margin at 0 x (1 + max_up): a first margin instead
        previous = np.where(previous > 0, previous, np.nan)
        rate = np.divide(im, gross, out=np.zeros_like(im), where=gross > 0)
        step = apc_step(rate, previous, p.buffer, *speed_bounds(np.ones(n), p.max_up, p.max_down))
        return step * gross

    def _flagged_bound(self, notional: np.ndarray, columns: np.ndarray, bad: np.ndarray, im: np.ndarray,
                       isolated: np.ndarray) -> np.ndarray:
        """IM of books (m, k) holding legs `bad` (m, k) without a usable forecast: at least the joint IM of
        their other legs plus each bad leg's own (isolated) margin at its fallback. Priced jointly at the
        fallback, a bad hedge leg's larger volatility offsets more of the book's risk and lowered the margin
        below that at the true forecast; by subadditivity (ES) the sum bounds the book at any forecast up to
        the fallback, so a missing input never lowers a margin."""
        im_clean, iso_clean = self._price_blocks(np.where(bad, 0.0, notional), columns)
        return np.maximum(im, im_clean + isolated - iso_clean)  # isolated sums are additive over the legs

    def _twin_for_var(self, variance: np.ndarray) -> "PortfolioEngine | None":
        """For a VaR measure, the same engine with the ES at its level and no APC tools, whose margin of a book
        with flagged legs bounds a VaR book's (session 30's red team: a var99 book with a leg at its fallback came
        out at 95% of its margin at the true forecast; VaR is not subadditive, ES is, and ES >= VaR); else None."""
        if parse_measure(self.policy.measure)[0] != "var" or not self.any_unusable:
            return None
        policy = replace(self.policy, measure=self.policy.measure.replace("var", "es", 1), buffer=None, max_up=None,
                         max_down=None)
        return PortfolioEngine(replace(self.scenarios, policy=policy), variance, self.adv)

    def _price_blocks(self, notional: np.ndarray, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """IM and isolated-margin sums of books (n_books, k), BATCH_BLOCK books at a time: each block's
        P&L (BATCH_BLOCK, n_scenarios) float32 lives in one reused buffer that stays in cache, instead of
        one (n_books, n_scenarios) array that the kernel has to page in."""
        im, isolated = np.empty(len(notional)), np.empty(len(notional))
        fast = self.stress_t is None and not self.any_full
        simple_t = self.simple_t[columns]
        tails_t = None if self.tails_t is None else self.tails_t[columns]
        buffer = np.empty((min(BATCH_BLOCK, len(notional)), simple_t.shape[1]), dtype=SCENARIO_DTYPE)
        for first in range(0, len(notional), BATCH_BLOCK):
            block = slice(first, first + BATCH_BLOCK)
            if fast:
                rows = notional[block]
                im[block], isolated[block] = self._price_fast(rows, columns, simple_t, tails_t, buffer[:len(rows)])
            else:
                im[block], isolated[block] = self._price(notional[block], columns)
        return im, isolated
