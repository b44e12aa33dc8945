"""Calibration sets: the margin parameters a service loads with its bundle, and their sanity rules.

A calibration set is one JSON file beside the bundle (bundles are immutable, and a venue recalibrates
more often than it retrains), written by `volmargin.calibration.write_parameter_set`:

    {"schema_version": 1, "kind": "volmargin-calibration-set",
     "version": "<bundle name>-<bundle version>-<12 hex digits of the content>", "created": "<UTC ISO>",
     "bundle": {"name": ..., "version": ..., "manifest_sha256": ...},
     "parameters": {"model", "horizon", "as_of", "policy", "records": [one per asset, side and window]},
     "sha256": "<SHA-256 of the canonical JSON of every other key>"}

It is bound to one bundle by the SHA-256 of that bundle's manifest: the scales were fitted to that
model's forecasts, and on another model's forecasts they would give margins nobody backtested.
`check_records` holds the sanity rules, shared with the training library's `validate_parameters`.

The `sha256` only detects damage: anyone can reseal an edited set. What an edit can do is bounded by
hard floors the runtime holds itself: no policy `min_rate` below `HARD_MIN_RATE`, no published margin
below the set's `min_rate`, no scale below `HARD_MIN_SCALE` or outside the policy's `scale_bounds`. With
a service key configured, the set must also carry `signature`: the hex HMAC-SHA256 of the same
canonical JSON under that key (`seal(document, key)`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from volmargin_serving.bundle import (
    MANIFEST, read_json, read_manifest, real_number, resolve_key, sha256, signature, verify_files,
)
from volmargin_serving.errors import CalibrationError, SignatureError
from volmargin_serving.margins import DEFAULT_MIN_RATE, Terms
from volmargin_serving.outputs import SIDES, measure_name

SCHEMA_VERSION = 1
KIND = "volmargin-calibration-set"
KEYS = ("schema_version", "kind", "version", "bundle", "parameters", "sha256")
PARAMETER_KEYS = ("model", "horizon", "policy", "records")
POLICY_RULES = {  # the policy settings serving reads, and the values that cannot lower a margin by mistake
    "risk": lambda v: isinstance(v, str),
    "haircut_risk": lambda v: v is None or isinstance(v, str),
    "maintenance_fraction": lambda v: real_number(v) and 0 < v < 1,
    "buffer": lambda v: v is None or (real_number(v) and v >= 0),
    "max_up": lambda v: v is None or (real_number(v) and v > 0),
    "max_down": lambda v: v is None or (real_number(v) and 0 < v < 1),
    "liquidation_days": lambda v: v is None or (isinstance(v, int) and v >= 1),
}
HARD_MIN_RATE = 0.005  # no calibration set may allow initial margins below 0.5% (200x leverage)
HARD_MIN_SCALE = 0.05  # nor scale the model's risk down by more than 20x
OPTIONAL_POLICY_RULES = {
    "mpor_hours": lambda v: v is None or (isinstance(v, int) and 1 <= v < 24),
    "min_rate": lambda v: v is None or (real_number(v) and HARD_MIN_RATE <= v < 1),
    "scale_bounds": lambda v: v is None or (isinstance(v, (list, tuple)) and len(v) == 2 and all(map(real_number, v))
                                            and HARD_MIN_SCALE <= v[0] < v[1]),
}


def calibration_beside(bundle: str | Path) -> Path:
    """A bundle folder's default calibration set: `<folder>.calibration.json` beside the folder (`.` given
    from inside it names the folder itself)."""
    bundle = Path(bundle)
    if bundle.name in ("", ".", ".."):
        bundle = bundle.resolve()
    return bundle.with_name(f"{bundle.name}.calibration.json")


def canonical(document: Mapping) -> bytes:
    """The bytes the checksum covers: sorted keys, no whitespace, no NaN (JSON has none)."""
    try:
        return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise CalibrationError(f"calibration set is not JSON-ready ({exc})") from exc


def _content(document: Mapping) -> bytes:
    return canonical({k: v for k, v in document.items() if k not in ("sha256", "signature")})


def digest(document: Mapping) -> str:
    """SHA-256 of the canonical JSON of every key but `sha256` and `signature`."""
    return hashlib.sha256(_content(document)).hexdigest()


def seal(document: Mapping, key: bytes | str | None = None) -> dict:
    """The document with its `sha256` and, given a key, its HMAC `signature`."""
    sealed = {k: v for k, v in document.items() if k != "signature"}
    sealed["sha256"] = digest(document)
    if key is not None:
        sealed["signature"] = signature(_content(document), resolve_key(key))
    return sealed


def instant(value) -> np.datetime64:
    """A UTC instant from an ISO string (naive means UTC, as in the training library), datetime or datetime64."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    if isinstance(value, datetime) and value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return np.datetime64(value, "us")


# ------------------------------------------------------------------ sanity rules


def _fail(record: Mapping, name: str, problem: str):
    raise CalibrationError(f"{record.get('asset')}/{record.get('side')}: {name} {problem}")


def _number(record: Mapping, name: str) -> float:
    value = record.get(name)
    try:
        return float("nan") if value is None else float(value)
    except (TypeError, ValueError):
        _fail(record, name, f"= {value!r} is not a number")


def _when(record: Mapping, name: str) -> np.datetime64:
    value = record.get(name)
    if value is None:
        _fail(record, name, "is missing")
    try:
        return instant(value)
    except (TypeError, ValueError):
        _fail(record, name, f"= {value!r} is not an ISO date")


def _check_record(record: Mapping) -> None:
    if not isinstance(record.get("asset"), str) or not record["asset"]:
        _fail(record, "asset", "is missing")
    if record.get("side") not in SIDES:
        _fail(record, "side", f"= {record.get('side')!r} is not one of {SIDES}")
    initial, maintenance, cut = (_number(record, f) for f in ("initial_margin", "maintenance_margin", "haircut"))
    for name, value in (("initial_margin", initial), ("maintenance_margin", maintenance)):
        if not 0 < value <= 1:
            _fail(record, name, f"= {value!r} is outside (0, 1]")
    if not maintenance < initial:
        _fail(record, "maintenance_margin", f"= {maintenance!r} is not below initial_margin = {initial!r}")
    if not 0 <= cut < 1:
        _fail(record, "haircut", f"= {cut!r} is outside [0, 1)")
    # optional (sets written before them have none); only ever a further candidate of a fail-safe maximum
    if record.get("peak_margin") is not None and not 0 < _number(record, "peak_margin") <= 1:
        _fail(record, "peak_margin", f"= {record['peak_margin']!r} is outside (0, 1]")
    if record.get("peak_haircut") is not None and not 0 <= _number(record, "peak_haircut") < 1:
        _fail(record, "peak_haircut", f"= {record['peak_haircut']!r} is outside [0, 1)")
    start = _when(record, "valid_from")
    if record.get("valid_to") is not None and not start < _when(record, "valid_to"):
        _fail(record, "valid_to", f"= {record['valid_to']} is not after valid_from = {record['valid_from']}")


def check_records(records: Iterable[Mapping], assets: Iterable[str] | None = None) -> None:
    """The sanity rules of published parameters; raises `CalibrationError` naming asset/side/field when a
    margin rate is outside (0, 1], maintenance is not below initial margin, a haircut is outside [0, 1),
    a side is not long/short, a validity window is not ordered (valid_from < valid_to, and the windows of
    one model/asset/side follow each other without overlap), or an asset of `assets` lacks a side."""
    rows = [dict(r) for r in records]
    for row in rows:
        _check_record(row)
    ordered = sorted(rows, key=lambda r: (r.get("model") or "", r["asset"], r["side"], _when(r, "valid_from")))
    for a, b in zip(ordered, ordered[1:]):
        same = all(a.get(k) == b.get(k) for k in ("model", "asset", "side"))
        if same and (a.get("valid_to") is None or _when(a, "valid_to") > _when(b, "valid_from")):
            window = f"{a['valid_from']} to {a.get('valid_to')}"
            _fail(b, "valid_from", f"= {b['valid_from']} overlaps the window from {window}")
    present = {(r["asset"], r["side"]) for r in rows}
    for asset in assets or ():
        for side in SIDES:
            if (asset, side) not in present:
                raise CalibrationError(f"{asset}/{side}: missing from the parameter set")


def check_parameters(parameters: Mapping, manifest: Mapping, assets: Iterable[str] | None = None) -> None:
    """A parameter set serving can price with this bundle: fitted to its model (named as the bundle or its
    model kind), its policy settings, the bundle's MPOR and risk measures, a positive scale and a non-negative
    floor per record, and the sanity rules."""
    if not isinstance(parameters, Mapping) or any(k not in parameters for k in PARAMETER_KEYS):
        raise CalibrationError(f"parameters: expected the keys {PARAMETER_KEYS}")
    policy, records = parameters["policy"], parameters["records"]
    if not isinstance(policy, Mapping):
        raise CalibrationError(f"parameters.policy: expected an object, got {policy!r}")
    if not isinstance(records, list) or not records or not all(isinstance(r, Mapping) for r in records):
        raise CalibrationError("parameters.records: expected a non-empty list of objects")
    names = {str(n) for n in (manifest.get("name"), (manifest.get("model") or {}).get("kind")) if n is not None}
    fitted = {str(m) for m in (parameters["model"], *(r.get("model") for r in records)) if m is not None}
    if names and not fitted <= names:
        other = sorted(fitted - names)[0]
        raise CalibrationError(f"parameters.model: the scales were fitted to {other!r}'s forecasts, this bundle is "
                               f"{' / '.join(sorted(names))}; calibrate this bundle's own forecasts")
    if not isinstance(parameters["horizon"], int) or isinstance(parameters["horizon"], bool):
        raise CalibrationError(f"parameters.horizon: {parameters['horizon']!r} is not a whole number of days")
    for name, rule in POLICY_RULES.items():
        if name not in policy or not rule(policy[name]):
            raise CalibrationError(f"policy.{name}: invalid or missing value {policy.get(name)!r}")
    for name, rule in OPTIONAL_POLICY_RULES.items():
        if not rule(policy.get(name)):
            raise CalibrationError(f"policy.{name}: invalid value {policy[name]!r}")
    lowest = policy.get("min_rate")
    lowest = DEFAULT_MIN_RATE if lowest is None else lowest
    bounds = policy.get("scale_bounds") or (HARD_MIN_SCALE, float("inf"))
    if parameters["horizon"] != manifest["horizon"]:
        raise CalibrationError(f"parameters.horizon = {parameters['horizon']!r} differs from the bundle's "
                               f"horizon {manifest['horizon']} (the MPOR the scales were fitted for)")
    measures = {measure_name(m, level) for m in ("var", "es") for level in manifest["levels"]}
    for name in ("risk", "haircut_risk"):
        if policy[name] is not None and policy[name] not in measures:
            raise CalibrationError(f"policy.{name} = {policy[name]!r}: the bundle forecasts {sorted(measures)}")
    check_records(records, assets)
    for record in records:
        scale, floor = _number(record, "scale"), _number(record, "floor")
        if not (np.isfinite(scale) and scale > 0):
            _fail(record, "scale", f"= {scale!r} is not positive")
        if not max(bounds[0], HARD_MIN_SCALE) <= scale <= bounds[1]:
            _fail(record, "scale", f"= {scale!r} is outside the policy's scale_bounds {list(bounds)} "
                                   f"(and the runtime's least scale {HARD_MIN_SCALE})")
        initial = _number(record, "initial_margin")
        if not initial >= lowest:
            _fail(record, "initial_margin", f"= {initial!r} is below the policy's min_rate {lowest!r}")
        if not (np.isfinite(floor) and floor >= 0):
            _fail(record, "floor", f"= {floor!r} is not a non-negative log-return loss")


# ------------------------------------------------------------------ the file


def calibration_document(parameters: Mapping, folder: str | Path, created: str | None = None,
                         key: bytes | str | None = None) -> dict:
    """The sealed calibration set of `parameters` for the bundle in `folder` (checked first), signed
    with `key` if given."""
    manifest = read_manifest(Path(folder))
    verify_files(Path(folder), manifest)
    check_parameters(parameters, manifest)
    bundle = {"name": manifest["name"], "version": str(manifest["version"]),
              "manifest_sha256": sha256(Path(folder) / MANIFEST)}
    content = hashlib.sha256(canonical({"bundle": bundle, "parameters": parameters})).hexdigest()
    return seal({
        "schema_version": SCHEMA_VERSION, "kind": KIND,
        "version": f"{bundle['name']}-{bundle['version']}-{content[:12]}",
        "created": created or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "bundle": bundle, "parameters": dict(parameters),
    }, key)


def _read(path: Path, key: bytes | None = None) -> dict:
    document = read_json(path, CalibrationError, f"{path}: no such calibration set")
    if not isinstance(document, dict) or document.get("kind") != KIND:
        raise CalibrationError(f"{path}: not a volmargin calibration set (kind is not {KIND!r})")
    missing = [k for k in KEYS if k not in document]
    if missing:
        raise CalibrationError(f"{path}: missing keys {missing}")
    if document["schema_version"] != SCHEMA_VERSION:
        raise CalibrationError(f"{path}: schema_version {document['schema_version']!r}; "
                               f"this runtime reads {SCHEMA_VERSION}")
    try:
        content_digest = digest(document)
    except CalibrationError as exc:  # e.g. NaN written into a record: no JSON, so no checksum either
        raise CalibrationError(f"{path}: {exc}") from None
    if content_digest != document["sha256"]:
        raise CalibrationError(f"{path}: SHA-256 differs from the recorded sha256; the calibration set was altered "
                               "or damaged")
    if key is not None:
        recorded = document.get("signature")
        if not isinstance(recorded, str):
            raise SignatureError(f"{path}: no signature; this service requires signed calibration sets")
        if not hmac.compare_digest(recorded, signature(_content(document), key)):
            raise SignatureError(f"{path}: signature does not verify with the service's key; the set was altered "
                                 "or signed with another key")
    return document


def _check_binding(document: Mapping, folder: Path, manifest: Mapping, path: Path) -> None:
    bundle, actual = document["bundle"], sha256(folder / MANIFEST)
    if not isinstance(bundle, Mapping) or bundle.get("manifest_sha256") != actual:
        built = f"{bundle.get('name')}/{bundle.get('version')}" if isinstance(bundle, Mapping) else repr(bundle)
        raise CalibrationError(f"{path}: built from bundle {built} (another manifest SHA-256), not from "
                               f"{manifest['name']}/{manifest['version']} at {folder}; calibrate this bundle")


@dataclass(frozen=True)
class CalibrationSet:
    """A verified calibration set: its version, parameters and policy, and the records by asset and side."""

    path: Path
    version: str
    parameters: dict
    _windows: dict = field(repr=False, default_factory=dict)

    @classmethod
    def read(cls, path: str | Path, folder: str | Path, manifest: Mapping,
             assets: Iterable[str] | None = None, key: bytes | None = None) -> CalibrationSet:
        """Load and verify: kind and schema, checksum, signature (with a `key`), built from the bundle in
        `folder`, the parameters serving needs (`check_parameters`, covering `assets` if given)."""
        path, folder = Path(path), Path(folder)
        document = _read(path, key)
        _check_binding(document, folder, manifest, path)
        try:
            check_parameters(document["parameters"], manifest, assets)
        except CalibrationError as exc:
            raise CalibrationError(f"{path}: {exc}") from None
        windows: dict[tuple[str, str], list] = {}
        for record in document["parameters"]["records"]:
            start = instant(record["valid_from"])
            end = None if record.get("valid_to") is None else instant(record["valid_to"])
            windows.setdefault((record["asset"], record["side"]), []).append((start, end, record))
        for entries in windows.values():
            entries.sort(key=lambda entry: entry[0])
        return cls(path, document["version"], document["parameters"], windows)

    @property
    def policy(self) -> dict:
        return self.parameters["policy"]

    @property
    def first_in_force(self) -> np.datetime64:
        """The earliest instant at which any of the set's parameters are in force (before it, every asset is
        priced fail safe)."""
        return min(entries[0][0] for entries in self._windows.values())

    @property
    def horizon(self) -> int:
        return int(self.parameters["horizon"])

    def record(self, asset: str, side: str, as_of: np.datetime64) -> tuple[dict | None, str]:
        """The record of `asset`/`side` in force at `as_of` and ''; else the nearest record (the latest
        that started, or the first) and why it is not in force; (None, '') if the set has none."""
        entries = self._windows.get((asset, side), [])
        started = [e for e in entries if e[0] <= as_of]
        for start, end, record in reversed(started):
            if end is None or as_of < end:
                return record, ""
        if not entries:
            return None, ""
        record = (started[-1] if started else entries[0])[2]
        return record, (f"{asset}/{side}: no parameters in force at {as_of}; the nearest are valid from "
                        f"{record['valid_from']} to {record.get('valid_to') or 'open end'}")

    def terms(self, assets: Iterable[str], as_of: np.datetime64) -> Terms:
        """The calibrated terms of a batch at `as_of` (see `volmargin_serving.margins.Terms`)."""
        assets = list(assets)
        shape = (len(assets), len(SIDES))
        names = ("scale", "floor", "initial_margin", "haircut")
        values = {name: np.full(shape, np.nan) for name in names}
        known, issue = np.zeros(shape, dtype=bool), np.full(shape, "", dtype=object)
        for k, asset in enumerate(assets):
            for i, side in enumerate(SIDES):
                record, issue[k, i] = self.record(asset, side, as_of)
                known[k, i] = record is not None
                for name, array in values.items():
                    array[k, i] = np.nan if record is None else float(record[name])
        return Terms(values["scale"], values["floor"], values["initial_margin"], values["haircut"], known, issue)
