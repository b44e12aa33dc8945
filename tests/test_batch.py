"""Batch scoring and serving of a panel (`volmargin.batch`, the work of `volmargin score` and `margins`): each
asset's rows are the service's own answers, one origin at a time, in asset order, carrying the day before's
margins (session 27's mutation audit: a scored table labelled with another asset's bars, origins off by a day,
an asset with exactly one window left out and replays without the previous margins passed every test)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from reliability_fixtures import build

    return build(tmp_path_factory.mktemp("mutI"))


def test_a_scored_table_is_the_service_one_origin_at_a_time(served):
    """Each asset's rows hold its own forecasts, at the origins they were made at, in asset order."""
    import volmargin_serving as vs
    from reliability_fixtures import ASSETS, arrays

    from volmargin.batch import score_panel

    runtime = vs.load(served.bundle)
    n = runtime.history_days
    # distinct lengths (the shortest exactly one window), given out of asset order
    panel = {a: served.panel[a].iloc[-(n + 4 * k):] for k, a in enumerate(reversed(ASSETS))}
    scored = score_panel(served.bundle, panel, progress=False)
    assert list(dict.fromkeys(scored["asset"])) == sorted(panel)
    for asset, daily in panel.items():
        rows = scored[scored["asset"] == asset]
        assert list(rows["origin"]) == list(daily.index[n - 1:])
        inputs, dates = arrays(daily)
        for end in (n - 1, len(daily) - 1):  # the first and the newest origin, each from its own window alone
            window = slice(end - n + 1, end + 1)
            single = runtime.forecast_daily(inputs[window], dates[window], as_of=dates[end] + 1)
            row = rows[rows["origin"] == daily.index[end]]
            assert row["variance"].item() == pytest.approx(single.variance[0], rel=1e-6)
            assert row["var99_long"].item() == pytest.approx(single.columns()["var99_long"][0], rel=1e-6)
    latest = score_panel(served.bundle, panel, latest=True, progress=False)
    newest = scored.groupby("asset", sort=False).tail(1).reset_index(drop=True)
    pd.testing.assert_frame_equal(latest[["asset", "origin", "variance"]], newest[["asset", "origin", "variance"]])


def test_served_margins_are_the_service_day_by_day_carrying_its_previous_margins(served):
    """`serve_panel` replays what a service would have published: each origin priced as of the next day from
    its own window, with the day before's initial margins as `previous` (buffer and speed limits)."""
    import volmargin_serving as vs
    from reliability_fixtures import ASSETS, arrays

    from volmargin.batch import serve_panel

    runtime = vs.load(served.bundle, calibration=served.calibration)
    n = runtime.history_days
    panel = {a: served.panel[a] for a in reversed(ASSETS)}
    start = served.panel[ASSETS[0]].index[-12]
    table = serve_panel(served.bundle, served.calibration, panel, start=start, progress=False)
    assert list(dict.fromkeys(table["asset"])) == sorted(panel)
    for asset in sorted(panel):
        daily = panel[asset]
        inputs, dates = arrays(daily)
        rows = table[table["asset"] == asset]
        first = int(daily.index.searchsorted(start))
        assert list(rows["origin"].unique()) == list(daily.index[first:])
        previous = None
        for end in range(first, len(daily)):
            window = slice(end - n + 1, end + 1)
            one = runtime.margins([asset], inputs[None, window], dates[None, window], as_of=dates[end] + 1,
                                  previous=previous)
            previous = one.initial
            day = rows[rows["origin"] == daily.index[end]]
            assert list(day["side"]) == ["long", "short"]
            np.testing.assert_allclose(day["initial_margin"], one.initial[0], rtol=1e-9)
            assert not day["fail_safe"].any(), day["reason"].tolist()
    # from a start before any full window: the first origin is the first with a whole window behind it
    young = {ASSETS[0]: served.panel[ASSETS[0]].iloc[-(n + 2):]}
    first = serve_panel(served.bundle, served.calibration, young, start=young[ASSETS[0]].index[0], progress=False)
    assert list(first["origin"].unique()) == list(young[ASSETS[0]].index[n - 1:])


def test_a_scored_window_holding_a_missing_day_carries_the_services_refusal(served):
    """Session 30's red team: `score` priced the windows holding a missing day with no doubt ("0 on a window a
    margin service would flag"), where `Runtime.margins` refuses every one (GapInputError, fail safe)."""
    import volmargin_serving as vs
    from reliability_fixtures import ASSETS

    from volmargin.batch import score_panel

    n = vs.load(served.bundle).history_days
    daily = served.panel[ASSETS[0]]
    gap = daily.index[-20]
    scored = score_panel(served.bundle, {ASSETS[0]: daily.drop(index=gap)}, progress=False)
    holding = (scored["origin"] > gap) & (scored["origin"] <= gap + pd.Timedelta(days=n))
    assert holding.sum() == 19
    before = (gap - pd.Timedelta(days=1)).date()
    assert scored.loc[holding, "doubt"].str.startswith(f"dates skip 1 day(s) after {before}").all()
    assert not scored.loc[~holding, "doubt"].str.contains("dates skip").any()


def test_a_replay_does_not_depend_on_what_the_process_priced_before(served, tmp_path):
    """Each worker caches one runtime per bundle and set, and the runtime remembered every asset's margins across
    commands: a what-if replay (a month's moves x5) lifted the next replay of the real data up to 1.69x on a
    long-lived cluster, through the fall limit (session 31's red team). Each replay now starts with no memory."""
    from reliability_fixtures import ASSETS, resealed_set

    from volmargin.batch import _runtime, serve_panel

    def speed_limits(parameters):
        parameters["policy"].update(buffer=0.25, max_up=0.5, max_down=0.1)

    calibration = resealed_set(served, tmp_path, speed_limits)
    asset = ASSETS[0]
    daily = served.panel[asset]
    start = daily.index[-8]
    alone = serve_panel(served.bundle, calibration, {asset: daily}, start=start, progress=False)
    _runtime.cache_clear()  # a worker that has priced nothing yet
    wild = daily.copy()
    moves = [c for c in wild.columns if c not in ("ret", "volume", "traded_value", "close", "n_bars", "complete")]
    wild.loc[wild.index[-40:], "ret"] *= 5
    wild.loc[wild.index[-40:], moves] *= 25
    what_if = serve_panel(served.bundle, calibration, {asset: wild.iloc[:-8]}, latest=True, progress=False)
    assert (what_if["initial_margin"].to_numpy() > 2 * alone["initial_margin"].iloc[:2].to_numpy()).all()
    again = serve_panel(served.bundle, calibration, {asset: daily}, start=start, progress=False)
    pd.testing.assert_frame_equal(again, alone)
