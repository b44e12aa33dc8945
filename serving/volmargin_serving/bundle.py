"""Reading and verifying model bundles: models/<name>/<version>/ with model.onnx, manifest.json and
golden.npz. A bundle is immutable; its calibration set is a separate file (e.g. models/<name>/<version>.
calibration.json, see `volmargin_serving.calibration`) bound to it by the SHA-256 of its manifest.

The manifest describes everything a service needs without the training stack: feature spec and window,
the standardisation statistics, input/output names and dtypes, horizon, VaR/ES levels, provenance, and
the SHA-256 of every other file. `volmargin.export` writes bundles with the same helpers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from volmargin_serving.errors import BundleError, ChecksumError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_KEYS = ("schema_version", "name", "version", "model", "features", "onnx", "horizon", "levels", "sides",
                 "golden", "files")
FEATURE_KEYS = ("names", "inputs", "spec", "window", "history_days", "mean", "scale")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_json(path: Path, error: type[BundleError], absent: str) -> dict:
    """A JSON document, or `error` naming the file: `absent` when it does not exist, else why it cannot be read."""
    if not path.is_file():
        raise error(absent)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid JSON ({exc})") from exc


def read_manifest(folder: Path) -> dict:
    """The manifest of a bundle folder, checked against the schema this runtime knows."""
    path = Path(folder) / MANIFEST
    manifest = read_json(path, BundleError, f"{folder}: no {MANIFEST}; not a volmargin bundle")
    missing = [key for key in REQUIRED_KEYS if key not in manifest]
    if missing:
        raise BundleError(f"{path}: missing keys {missing}")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise BundleError(f"{path}: schema_version {manifest['schema_version']!r}; this runtime reads {SCHEMA_VERSION}")
    missing = [key for key in FEATURE_KEYS if key not in manifest["features"]]
    if missing:
        raise BundleError(f"{path}: features is missing {missing}")
    return manifest


def verify_files(folder: Path, manifest: dict) -> None:
    """Every file listed in the manifest exists with its SHA-256, and nothing else is in the bundle."""
    folder = Path(folder)
    listed = set(manifest["files"]) | {MANIFEST}
    extra = sorted(p.name for p in folder.iterdir() if p.name not in listed)
    if extra:
        raise ChecksumError(f"{folder}: files not in the manifest: {extra}")
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise ChecksumError(f"{folder}: {name} is listed in the manifest but missing")
        if sha256(path) != expected:
            raise ChecksumError(f"{path}: SHA-256 differs from the manifest; the bundle was altered or damaged")
