"""Reading and verifying model bundles: models/<name>/<version>/ with model.onnx, manifest.json,
golden.npz and, optionally, fast.onnx (the serving fast path, manifest key `fast`). A bundle is immutable; its calibration set is a separate file (e.g. models/<name>/<version>.
calibration.json, see `volmargin_serving.calibration`) bound to it by the SHA-256 of its manifest.

The manifest describes everything a service needs without the training stack: feature spec and window,
the standardisation statistics, input/output names and dtypes, horizon, VaR/ES levels, provenance, and
the SHA-256 of every other file. `volmargin.export` writes bundles with the same helpers.

What the checks guarantee (see the README's "Security model"): every file but the manifest matches the
manifest's SHA-256; every manifest value the runtime reads is type- and range-checked (`check_manifest`)
and its file references are plain names inside the bundle folder; the golden self-test runs with the
runtime's own tolerance. A SHA-256 kept beside the manifest would not stop someone who can edit both, so
the manifest itself is protected by an optional HMAC-SHA256 signature (`manifest.sig`, hex) made with a
key the service holds: with a key configured (`load(..., key=...)` or VOLMARGIN_BUNDLE_KEY), an
unsigned or wrongly signed bundle is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import math
from numbers import Real
import os
import re
from pathlib import Path

from volmargin_serving.errors import BundleError, ChecksumError, SignatureError
from volmargin_serving.features import (
    FEATURE_NAMES, INPUT_COLUMNS, LONG_LEVEL_FEATURE_NAMES, FeatureSpec, model_feature_names,
)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"  # hex HMAC-SHA256 of manifest.json's bytes under the service's key
KEY_ENV = "VOLMARGIN_BUNDLE_KEY"
_HEX64 = re.compile(r"[0-9a-f]{64}")
REQUIRED_KEYS = ("schema_version", "name", "version", "model", "features", "onnx", "horizon", "levels", "sides",
                 "golden", "files")
FEATURE_KEYS = ("names", "inputs", "spec", "window", "history_days", "mean", "scale")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


MAX_JSON_BYTES = 64 << 20  # a manifest or calibration set larger than this is not one


def read_json(path: Path, error: type[BundleError], absent: str) -> dict:
    """A JSON document, or `error` naming the file: `absent` when it does not exist, else why it cannot be read."""
    if not path.is_file():
        raise error(absent)
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise error(f"{path}: larger than {MAX_JSON_BYTES >> 20} MB; not a volmargin document")
        return json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None


def resolve_key(key: bytes | str | None = None) -> bytes | None:
    """The service's HMAC key: `key`, else the environment variable VOLMARGIN_BUNDLE_KEY, else None."""
    key = key if key is not None else os.environ.get(KEY_ENV) or None
    return key.encode() if isinstance(key, str) else key


def signature(data: bytes, key: bytes) -> str:
    """Hex HMAC-SHA256 of `data`."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def sign_bundle(folder: Path, key: bytes | str) -> Path:
    """Write `manifest.sig` for the bundle's manifest (the exporter calls this in its staging folder)."""
    path = Path(folder) / SIGNATURE
    path.write_text(signature((Path(folder) / MANIFEST).read_bytes(), resolve_key(key)) + "\n")
    return path


def verify_signature(folder: Path, key: bytes) -> None:
    """SignatureError unless `manifest.sig` holds the HMAC of manifest.json under `key`."""
    path = Path(folder) / SIGNATURE
    if not path.is_file():
        raise SignatureError(f"{folder}: no {SIGNATURE}; this service requires signed bundles (a key is configured)")
    expected = signature((Path(folder) / MANIFEST).read_bytes(), key)
    if not hmac.compare_digest(path.read_text(errors="replace").strip(), expected):
        raise SignatureError(f"{folder}: {SIGNATURE} does not verify with the service's key; the manifest was altered "
                             "or signed with another key")


def read_manifest(folder: Path, key: bytes | None = None) -> dict:
    """The manifest of a bundle folder, its signature verified when a `key` is given, checked against
    the schema this runtime knows (`check_manifest`)."""
    path = Path(folder) / MANIFEST
    if not Path(folder).is_dir():
        raise BundleError(f"{folder}: no such bundle folder")
    if path.is_symlink():  # as every file it lists (`verify_files`)
        raise BundleError(f"{path}: is a symbolic link; a bundle's files must be regular files")
    manifest = read_json(path, BundleError, f"{folder}: no {MANIFEST}; not a volmargin bundle")
    if key is not None:
        verify_signature(folder, key)
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: not a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise BundleError(f"{path}: missing keys {missing}")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise BundleError(f"{path}: schema_version {manifest['schema_version']!r}; this runtime reads {SCHEMA_VERSION}")
    if not isinstance(manifest["features"], dict):
        raise BundleError(f"{path}: features: expected an object")
    missing = [key for key in FEATURE_KEYS if key not in manifest["features"]]
    if missing:
        raise BundleError(f"{path}: features is missing {missing}")
    problem = check_manifest(manifest)
    if problem:
        raise BundleError(f"{path}: {problem}")
    return manifest


# ------------------------------------------------------------------ manifest values


def _int(value, low: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def real_number(value) -> bool:
    """A finite real number, not a bool (numpy scalars included): what a numeric setting must be."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def plain_name(value) -> bool:
    """A file name with no folder part: what a bundle may reference (never ../x or an absolute path)."""
    return (isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and "\\" not in value
            and "\0" not in value and Path(value).name == value)


OPTIONAL_SPEC_KEYS = {"long_days": 0}  # added after bundles were written without it; absent = the default


def _spec_problem(spec, names: list) -> str:
    fields = {f.name: f for f in dataclasses.fields(FeatureSpec)}
    if not isinstance(spec, dict) or not set(fields) - set(OPTIONAL_SPEC_KEYS) <= set(spec) <= set(fields):
        return f"features.spec: expected the keys {sorted(fields)}"
    long_days = spec.get("long_days", 0)
    reads_long = LONG_LEVEL_FEATURE_NAMES[0] in names
    if not (_int(long_days, low=2) and long_days <= 10_000 if reads_long else _int(long_days, low=0) and long_days == 0):
        return (f"features.spec.long_days: {long_days!r}; >= 2 where the model reads long_level "
                "(features.names), else 0")
    for name, value in spec.items():
        default = fields[name].default
        positive = _int(value) if isinstance(default, int) else real_number(value) and value > 0
        ok = name in OPTIONAL_SPEC_KEYS or positive
        if not ok:
            return f"features.spec.{name}: invalid value {value!r}"
    return ""


def check_manifest(manifest: dict) -> str:
    """'' if every manifest value the runtime reads has the right type and range, else the first problem
    (dotted key and value)."""
    files = manifest["files"]
    if not isinstance(files, dict) or not files:
        return "files: expected an object of file name -> SHA-256"
    for name, digest in files.items():
        if not plain_name(name) or name in (MANIFEST, SIGNATURE):
            return f"files: {name!r} is not a plain file name inside the bundle"
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            return f"files.{name}: {digest!r} is not a SHA-256 hex digest"
    for key in ("onnx", "golden") + (("fast",) if "fast" in manifest else ()):  # fast: optional
        section = manifest[key]
        if not isinstance(section, dict) or not plain_name(section.get("file")) or section["file"] not in files:
            got = section.get("file") if isinstance(section, dict) else section
            return f"{key}.file: {got!r} must name a file of the bundle (files), inside its folder"
    if not isinstance(manifest["name"], str) or not plain_name(manifest["name"]):
        return f"name: {manifest['name']!r} is not a plain name"
    if not (plain_name(manifest["version"]) or _int(manifest["version"])):
        return f"version: {manifest['version']!r} is not a plain name"
    if not _int(manifest["horizon"]) or manifest["horizon"] > 366:
        return f"horizon: {manifest['horizon']!r} is not a whole number of days in [1, 366]"
    levels = manifest["levels"]
    if (not isinstance(levels, list) or not levels or not all(real_number(x) and 0.5 < x < 1 for x in levels)
            or any(a >= b for a, b in zip(levels, levels[1:]))):
        return f"levels: {levels!r} must be ascending confidence levels in (0.5, 1)"
    if manifest["sides"] != ["long", "short"]:
        return f"sides: {manifest['sides']!r}; this runtime serves ['long', 'short']"
    onnx = manifest["onnx"]
    for key in ("inputs", "outputs"):
        entries = onnx.get(key)
        if not isinstance(entries, list) or not entries or not all(
                isinstance(e, dict) and isinstance(e.get("name"), str) and e["name"] for e in entries):
            return f"onnx.{key}: expected a list of {{name, dtype, shape}}"
    if "fast" in manifest and manifest["fast"]["file"] == manifest["onnx"]["file"]:
        return f"fast.file: {manifest['fast']['file']!r} is the model's own file; the fast path is a graph of its own"
    features = manifest["features"]
    names = features["names"]
    if names not in [list(model_feature_names(liquidity, iv, long)) for liquidity in (False, True) for iv in (False, True)
                     for long in (False, liquidity and not iv)]:
        return (f"features.names: {features['names']!r} differ from this runtime's features {list(FEATURE_NAMES)}; "
                "the bundle needs the runtime it was exported with")
    if features["inputs"] != list(INPUT_COLUMNS):
        return f"features.inputs: {features['inputs']!r} differ from this runtime's inputs {list(INPUT_COLUMNS)}"
    problem = _spec_problem(features["spec"], names)
    if problem:
        return problem
    if not _int(features["window"]) or features["window"] > 10_000:
        return f"features.window: {features['window']!r} is not a positive number of days"
    if features["history_days"] != FeatureSpec(**features["spec"]).history_days(features["window"]):
        return (f"features.history_days: {features['history_days']!r} is not what spec and window imply "
                f"({FeatureSpec(**features['spec']).history_days(features['window'])})")
    for key, positive in (("mean", False), ("scale", True)):
        values = features[key]
        if (not isinstance(values, list) or len(values) != len(names)
                or not all(real_number(x) and (x > 0 or not positive) for x in values)):
            return f"features.{key}: expected {len(names)} finite numbers{' > 0' if positive else ''}"
    seconds = manifest.get("training", {}).get("bar_seconds", []) if isinstance(manifest.get("training"), dict) else []
    if not isinstance(seconds, list) or not all(_int(s) and s <= 86_400 for s in seconds):
        return f"training.bar_seconds: {seconds!r} must list bar intervals in seconds (1 .. 86400)"
    return ""


def learned_bar_seconds(manifest: dict) -> tuple[int, ...]:
    """The bar intervals (seconds) the bundle's model learned from; () where the bundle does not record
    them (exported before session 23): such bundles take bars as given."""
    training = manifest.get("training")
    return tuple(training.get("bar_seconds", ())) if isinstance(training, dict) else ()


def verify_files(folder: Path, manifest: dict) -> None:
    """Every file listed in the manifest exists with its SHA-256, and nothing else is in the bundle."""
    folder = Path(folder)
    listed = set(manifest["files"]) | {MANIFEST, SIGNATURE}
    extra = sorted(p.name for p in folder.iterdir() if p.name not in listed)
    if extra:
        raise ChecksumError(f"{folder}: files not in the manifest: {extra}")
    for name, expected in manifest["files"].items():
        path = folder / name
        if path.is_symlink():  # a link can be re-pointed after the check (a ConfigMap mounts links: copy them in)
            raise ChecksumError(f"{folder}: {name} is a symbolic link; a bundle's files must be regular files")
        if not path.is_file():
            raise ChecksumError(f"{folder}: {name} is listed in the manifest but missing")
        if sha256(path) != expected:
            raise ChecksumError(f"{path}: SHA-256 differs from the manifest; the bundle was altered or damaged")
