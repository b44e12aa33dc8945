"""Shared fixtures. Real data lives in ../shared/data beside the checkout; tests that need it skip
when it is absent, so a user's own clone still passes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from arch.univariate import GARCH, StudentsT, ZeroMean

REPO = Path(__file__).resolve().parents[1]


def _shared_data_dir() -> Path:
    return Path(os.environ.get("VOLMARGIN_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def isolated_mlflow(tmp_path_factory, monkeypatch):
    """Every test tracks into its own temporary SQLite store, never into the repository."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    if "mlflow" in sys.modules:  # a URI an earlier test set with mlflow.set_tracking_uri wins over the variable
        sys.modules["mlflow"].set_tracking_uri(uri)
    return folder


@pytest.fixture(scope="session")
def shared_data() -> Path:
    folder = _shared_data_dir()
    if not folder.is_dir():
        pytest.skip("shared data folder ../shared/data not found; set VOLMARGIN_SHARED_DATA")
    return folder


@pytest.fixture(scope="session")
def garch_daily() -> pd.DataFrame:
    """A daily frame (ret, rv, complete) from a known GJR-GARCH-t process, 1,500 days, seeded."""
    params = np.array([0.05, 0.06, 0.08, 0.88, 6.0])  # omega, alpha, gamma, beta, nu (percent units)
    process = ZeroMean(None, volatility=GARCH(1, 1, 1), distribution=StudentsT(seed=np.random.default_rng(3)))
    sim = process.simulate(params, 1500, burn=500)
    rng = np.random.default_rng(7)
    variance = sim["volatility"].to_numpy() ** 2 / 1e4
    index = pd.date_range("2019-01-01", periods=len(sim), freq="D", tz="UTC", name="date")
    return pd.DataFrame(
        {
            "ret": sim["data"].to_numpy() / 100,
            "rv": variance * rng.chisquare(24, len(sim)) / 24,  # noisy realized proxy of the true variance
            "complete": True,
        },
        index=index,
    )
