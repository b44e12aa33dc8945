"""bench/ scripts imported as modules by the tests of their selection rules."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


@contextmanager
def bench_modules(*names: str) -> Iterator[tuple]:
    """The scripts `names` of bench/ as modules, with bench/ on sys.path while they are in use (their own
    imports of each other)."""
    sys.path.insert(0, str(BENCH))
    try:
        yield tuple(importlib.import_module(name) for name in names)
    finally:
        sys.path.remove(str(BENCH))
