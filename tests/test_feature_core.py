"""The shared feature core where training and serving cannot disagree but both can be wrong: the weekly IV
move, the rows `history_days` asks for under any spec, the log floor of a day without variance."""
import numpy as np
import pytest

from volmargin_serving.features import FeatureSpec, compute_features, compute_iv_features


def test_iv_chg_is_the_log_move_over_week_days():
    level = np.linspace(-8, -7, 30)
    iv = np.exp(np.linspace(np.log(40), np.log(90), 30)) * (1 + 0.05 * np.sin(np.arange(30)))
    for spec in (FeatureSpec(), FeatureSpec(week_days=3)):
        change = compute_iv_features(iv, level, spec)[:, 2]
        k = spec.week_days
        assert np.isnan(change[:k]).all()
        np.testing.assert_allclose(change[k:], np.log(iv[k:] / iv[:-k]), rtol=1e-12)


def _inputs(days: int, seed: int = 3) -> tuple[dict, np.ndarray]:
    rng = np.random.default_rng(seed)
    rv = np.exp(rng.normal(-8, 0.7, days))
    ret = rng.normal(0, 1, days) * np.sqrt(rv)
    columns = {"ret": ret, "rv": rv, "bv": rv * rng.uniform(0.6, 1.0, days), "parkinson": rv * rng.uniform(0.5, 1.5, days),
               "rogers_satchell": rv * rng.uniform(0.5, 1.5, days), "volume": rng.uniform(1e3, 1e4, days),
               "traded_value": rng.uniform(1e6, 1e7, days), "complete": rng.uniform(size=days) > 0.1}
    return columns, np.arange(days) % 7


@pytest.mark.parametrize("spec", [FeatureSpec(), FeatureSpec(liquidity_days=30), FeatureSpec(level_days=40, month_days=30,
                                                                                             liquidity_days=20, long_days=50)])
def test_history_days_rows_give_the_last_window_features_of_the_whole_history(spec):
    """Serving sends history_days(window) rows; the last `window` feature rows must equal those computed on the
    asset's whole history, whatever the spec (level_chg reaches back month_days + level_days - 1 rows)."""
    columns, weekday = _inputs(400)
    window = 8
    full, full_level = compute_features(columns, weekday, spec)
    rows = spec.history_days(window)
    cut = {c: v[-rows:] for c, v in columns.items()}
    part, part_level = compute_features(cut, weekday[-rows:], spec, last=window)
    np.testing.assert_allclose(part, full[-window:], rtol=1e-9, atol=1e-12, equal_nan=True)
    np.testing.assert_allclose(part_level, full_level[-window:], rtol=1e-12)


def test_a_day_without_variance_enters_at_the_log_floor():
    columns, weekday = _inputs(100)
    columns["rv"][-1] = columns["bv"][-1] = 0.0  # a halted market: zero variance
    features, level = compute_features(columns, weekday)
    if columns["complete"][-1]:
        assert features[-1, 0] == pytest.approx(np.log(1e-12) - level[-1])
    columns["complete"][-1] = True
    features, level = compute_features(columns, weekday)
    assert features[-1, 0] == pytest.approx(np.log(1e-12) - level[-1])
