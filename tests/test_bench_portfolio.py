"""The hold-out choice of bench/portfolio_measure.py and bench/portfolio_weight.py (measure, correlation-weight rule)."""

from __future__ import annotations

import pandas as pd
import pytest
from bench_modules import bench_modules

from volmargin.risk import portfolio as pf


@pytest.fixture(scope="module")
def benches():
    with bench_modules("portfolio_measure", "portfolio_weight") as modules:
        yield modules


def _rows(candidate: str, period: str, classes: dict[str, tuple[float, float]], margin: float) -> list[dict]:
    """Per model ewma and har the same classes: {class: (breach rate, clustered Kupiec p)} and the ALL row."""
    rows = []
    for model in ("ewma", "har"):
        for cls, (rate, p) in classes.items():
            rows.append({"candidate": candidate, "period": period, "model": model, "portfolio_class": cls,
                         "breach_rate": rate, "kupiec_p_clustered": p, "avg_margin": margin})
        rows.append({"candidate": candidate, "period": period, "model": model, "portfolio_class": "ALL",
                     "breach_rate": 0.01, "kupiec_p_clustered": 0.5, "avg_margin": margin})
    return rows


def _choice(benches, rows: list[dict]) -> pd.DataFrame:
    measure, _ = benches
    return measure.choose(pd.DataFrame(rows), "candidate")


def test_an_eligible_candidate_beats_one_with_more_passes_above_the_cap(benches):
    rows = (_rows("many passes, one class at 1.6%", "holdout", {"a": (0.016, 0.3), "b": (0.01, 0.9)}, 0.05)
            + _rows("fewer passes", "holdout", {"a": (0.012, 0.01), "b": (0.01, 0.9)}, 0.09))
    ranked = _choice(benches, rows)
    assert ranked["candidate"].iloc[0] == "fewer passes"
    assert list(ranked["eligible"]) == [True, False]


def test_most_clustered_passes_then_least_margin_and_validation_ignored(benches):
    rows = (_rows("two passes", "holdout", {"a": (0.01, 0.3), "b": (0.01, 0.9)}, 0.09)
            + _rows("one pass, cheap", "holdout", {"a": (0.01, 0.01), "b": (0.01, 0.9)}, 0.05)
            + _rows("two passes, cheaper", "holdout", {"a": (0.01, 0.3), "b": (0.01, 0.9)}, 0.08)
            # validation rows that would favour "one pass, cheap" are never read by the rule
            + _rows("one pass, cheap", "validation", {"a": (0.01, 0.9), "b": (0.01, 0.9)}, 0.01)
            + _rows("two passes", "validation", {"a": (0.03, 0.0), "b": (0.03, 0.0)}, 0.2))
    ranked = _choice(benches, rows)
    assert list(ranked["candidate"]) == ["two passes, cheaper", "two passes", "one pass, cheap"]
    assert list(ranked["clustered_pass"]) == [4, 4, 2]


def test_when_no_candidate_is_eligible_all_are_ranked_by_passes(benches):
    rows = (_rows("above the cap, two passes", "holdout", {"a": (0.02, 0.3), "b": (0.01, 0.9)}, 0.09)
            + _rows("above the cap, one pass", "holdout", {"a": (0.02, 0.01), "b": (0.01, 0.9)}, 0.05))
    ranked = _choice(benches, rows)
    assert not ranked["eligible"].any() and ranked["considered"].all()
    assert ranked["candidate"].iloc[0] == "above the cap, two passes"


def test_the_cheapest_rule_is_the_library_calibration_grid(benches):
    _, weight = benches
    assert weight.RULES["cheapest"] == pf.CORRELATION_GRID
    assert all(len(grid) == 1 and grid[0] in pf.CORRELATION_GRID for rule, grid in weight.RULES.items()
               if rule != "cheapest")
