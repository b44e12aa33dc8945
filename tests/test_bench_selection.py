"""The verdict of bench/selection.py: a change is kept only if it gains enough on every selection run."""

from __future__ import annotations

import pandas as pd
import pytest
from bench_modules import bench_modules


@pytest.fixture(scope="module")
def selection():
    with bench_modules("selection") as (module,):
        yield module


def test_a_change_is_kept_only_if_it_gains_on_every_run(selection):
    # session 19's GRU trained by log least squares: better on both 2021 runs, far worse on 2020
    ratios = pd.DataFrame({"2021q4": [1.0324, 1.0114], "2021": [0.9386, 0.9145], "2020": [0.9975, 1.0805]},
                          index=["nn3", "nn3_logls"])
    assert not selection.verdict(ratios, "nn3", "nn3_logls", 0.01)
    assert selection.verdict(ratios.drop(columns="2020"), "nn3", "nn3_logls", 0.01)
    assert not selection.verdict(ratios.drop(columns="2020"), "nn3", "nn3_logls", 0.03)  # a gain too small
    assert not selection.verdict(ratios, "nn3_logls", "nn3", 0.0)


def test_seeds_reach_every_member_and_the_verdict_reads_their_means(selection):
    assert selection.with_seed("gbm", {"n_estimators": 150}, 2) == {"n_estimators": 150, "random_state": 2}
    assert selection.with_seed("nn", {"members": 3}, 1) == {"members": 3, "seed": 1}
    params = {"weight": 0.7, "gbm": {"level_days": 44}, "nn": None}
    assert selection.with_seed("blend", params, 1) == {"weight": 0.7, "gbm": {"level_days": 44, "random_state": 1},
                                                       "nn": {"seed": 1}}
    assert params["gbm"] == {"level_days": 44}  # the variant itself is untouched
    variants = selection.seeded({"gbm": ["gbm", {}]}, [0, 1])
    assert variants == {"gbm": ["gbm", {"random_state": 0}], "gbm#1": ["gbm", {"random_state": 1}]}
    # session 20's second stage of the late-RV feature: better on single seeds of 2021-Q4 and 2021, and on their
    # means, never by 0.003 on 2020
    per_seed = pd.DataFrame({"2021q4": [1.0233, 1.0267, 1.0343, 1.0062, 1.0146, 1.0111],
                             "2020": [0.8862, 0.8938, 0.8833, 0.8867, 0.8879, 0.8865]},
                            index=["gbm", "gbm#1", "gbm#2", "late", "late#1", "late#2"])
    means = selection.seed_means(per_seed, set(per_seed.index))
    assert means.loc["gbm", "2021q4"] == pytest.approx((1.0233 + 1.0267 + 1.0343) / 3)
    # a one-seed call on a folder that holds earlier seeds' parts judges seed 0 alone
    single = selection.seed_means(per_seed, {"gbm", "late"})
    assert single.loc["gbm", "2021q4"] == 1.0233 and single.loc["late", "2020"] == 0.8867
    assert not selection.verdict(means, "gbm", "late", 0.003)
    assert selection.verdict(means.drop(columns="2020"), "gbm", "late", 0.003)
    with pytest.raises(SystemExit, match="no seed parameter"):
        selection.with_seed("garch", {}, 1)


def test_a_trial_reaches_the_candidates_and_every_seed_of_them_only(selection):
    variants = selection.seeded({"gbm": ["gbm", {}], "gbm_rq5": ["gbm", {}]}, [0, 1])
    assert selection.fitting_calls(variants, ["gbm_rq5"], None) == [([str(selection.BENCH / "unseen_assets.py")],
                                                                      variants)]
    (plain, others), (tried_script, tried) = selection.fitting_calls(variants, ["gbm_rq5"], "rq:5")
    assert plain == [str(selection.BENCH / "unseen_assets.py")] and set(others) == {"gbm", "gbm#1"}
    assert tried_script == [str(selection.BENCH / "unseen_feature_trials.py"), "rq:5"]
    assert set(tried) == {"gbm_rq5", "gbm_rq5#1"}
