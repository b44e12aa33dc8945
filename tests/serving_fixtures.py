"""Tiny nn, gbm and blend bundles trained once per test module on a synthetic panel, shared by the tests of the
serving fast path (tests/test_serving_graph.py) and of the incremental state (tests/test_serving_stream.py).
A test module uses them by importing the fixtures: `from serving_fixtures import TINY, bundles, panel`
(tests/test_serving.py takes only the model sizes, TINY, for its own panel)."""

from __future__ import annotations

import pandas as pd
import pytest

TINY = {
    "nn": {"window": 8, "hidden": 8, "max_epochs": 2, "patience": 1, "batch_size": 256, "lr": 3e-3},
    "gbm": {"n_estimators": 20, "tail_estimators": 10},
}
TINY["blend"] = {"gbm": TINY["gbm"], "nn": TINY["nn"]}  # the two above, blended (volmargin.models.blend)
# the GBM config's kind of model: a blend of weight 1, the GBM alone mixed with the long-run level (bundle `gbm_level`)
GBM_LEVEL = {"weight": 1.0, "long_share": 0.1, "gbm": TINY["gbm"]}


@pytest.fixture(scope="module")
def panel() -> dict[str, pd.DataFrame]:
    from volmargin.data import synthetic_market
    from volmargin.evaluation.backtest import daily_panel

    return daily_panel(synthetic_market(n_assets=3, days=400, seed=5))


@pytest.fixture(scope="module")
def bundles(panel, tmp_path_factory) -> dict:
    from volmargin.export import write_bundle
    from volmargin.models import make_forecaster

    root = tmp_path_factory.mktemp("models")
    made = {name: write_bundle(make_forecaster(name, **params).fit_panel(panel), panel, root)
            for name, params in TINY.items()}
    made["gbm_level"] = write_bundle(make_forecaster("blend", **GBM_LEVEL).fit_panel(panel), panel, root, "gbm_level")
    return made
