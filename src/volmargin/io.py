"""Atomic file writing: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pandas as pd


@contextmanager
def atomic_path(target: str | Path):
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(target: str | Path, writer: Callable[[Path], None]) -> Path:
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


def write_frame(frame: pd.DataFrame, target: str | Path) -> Path:
    """Write a table as Parquet or CSV (by suffix), atomically."""
    target = Path(target)
    if target.suffix == ".parquet":
        return write_atomic(target, lambda p: frame.to_parquet(p, index=False))
    return write_atomic(target, lambda p: frame.to_csv(p, index=False))
