"""The risk layer core: positions, scenario sets, linear valuation and risk measures."""

from __future__ import annotations

import numpy as np
import pytest
import volmargin_serving.risk as vr

from volmargin.risk import (
    BadPositionError, Positions, ScenarioSet, UnknownAssetError, expected_shortfall, linear_pnl, parse_measure,
    risk_measure, simple_returns, value_at_risk, worst_mean,
)


def test_positions_from_names_and_dense():
    pos = Positions.from_names(("btc", "eth", "sol"), ["eth", "btc", "eth"], [2.0, -1.0, 3.0], ["perp", "spot", "perp"])
    np.testing.assert_array_equal(pos.asset, [1, 0, 1])
    np.testing.assert_allclose(pos.dense(3), [-1.0, 5.0, 0.0])
    assert pos.gross == 6.0


@pytest.mark.parametrize("names, notionals, kinds, error, text", [
    (["doge"], [1.0], None, UnknownAssetError, "'doge' is not in the scenario set"),
    (["btc"], [np.nan], None, BadPositionError, "not finite"),
    (["btc"], [np.inf], None, BadPositionError, "not finite"),
    (["btc"], [1.0], ["call"], BadPositionError, "instrument kind"),
    (["btc", "eth"], [1.0], None, BadPositionError, "one of each"),
])
def test_bad_positions_raise_typed_errors(names, notionals, kinds, error, text):
    with pytest.raises(error, match=text):
        Positions.from_names(("btc", "eth"), names, notionals, kinds)


def test_scenario_set_checks_shapes_and_weights():
    ScenarioSet(("a", "b"), np.zeros((3, 2)), np.arange(3), np.full(3, 1 / 3))
    with pytest.raises(ValueError, match="do not match"):
        ScenarioSet(("a",), np.zeros((3, 2)), np.arange(3))
    with pytest.raises(ValueError, match="sum to 1"):
        ScenarioSet(("a", "b"), np.zeros((3, 2)), np.arange(3), np.ones(3))


def test_linear_pnl_vectorised_over_books():
    returns = np.log(np.array([[1.1, 0.9], [0.8, 1.2], [1.0, 1.0]]))
    simple = simple_returns(returns)
    books = np.array([[100.0, 0.0], [100.0, -100.0]])
    pnl = linear_pnl(books, simple)
    np.testing.assert_allclose(pnl, [[10.0, -20.0, 0.0], [20.0, -40.0, 0.0]])
    np.testing.assert_allclose(linear_pnl(books[1], simple), pnl[1])


def test_measures_on_equal_weights():
    losses = np.arange(1.0, 101.0)  # 1..100
    assert value_at_risk(losses, 0.99) == 99.0  # inf{l : F(l) >= 0.99}, F(99) = 0.99
    assert value_at_risk(losses, 0.95) == 95.0
    assert expected_shortfall(losses, 0.95) == pytest.approx(np.mean([96, 97, 98, 99, 100]))
    assert expected_shortfall(losses, 0.975) == pytest.approx((100 + 99 + 0.5 * 98) / 2.5)  # fractional last
    assert worst_mean(losses, 6) == pytest.approx(np.mean(np.arange(95, 101)))
    batch = np.stack([losses, 2 * losses[::-1]])
    np.testing.assert_allclose(risk_measure(batch, "es95"), [98.0, 196.0])


def test_weighted_measures_match_replication():
    """Weight 2/n on a scenario is that scenario twice on an equal-weight set."""
    rng = np.random.default_rng(0)
    losses = rng.normal(size=40)
    weights = np.full(40, 1.0)
    weights[:10] = 2.0
    replicated = np.concatenate([losses, losses[:10]])
    weights /= weights.sum()
    for level in (0.9, 0.95, 0.975):
        assert expected_shortfall(losses, level, weights) == pytest.approx(expected_shortfall(replicated, level))
        assert value_at_risk(losses, level, weights) == pytest.approx(value_at_risk(replicated, level))
    equal = np.full(40, 1 / 40)
    assert expected_shortfall(losses, 0.9, equal) == pytest.approx(expected_shortfall(losses, 0.9))
    assert risk_measure(losses, "worst4", equal) == pytest.approx(worst_mean(losses, 4))


def test_es_is_coherent_on_books():
    """Positive homogeneity and subadditivity: ES(a + b) <= ES(a) + ES(b)."""
    rng = np.random.default_rng(1)
    simple = simple_returns(rng.standard_t(4, size=(500, 2)) * 0.03)
    la, lb = -linear_pnl([1.0, 0.0], simple), -linear_pnl([0.0, -1.0], simple)
    es = lambda x: expected_shortfall(x, 0.975)  # noqa: E731
    assert es(3 * la) == pytest.approx(3 * es(la))
    assert es(la + lb) <= es(la) + es(lb) + 1e-12


@pytest.mark.parametrize("spec, parsed", [("var99", ("var", 0.99)), ("es975", ("es", 0.975)),
                                          ("es9976", ("es", 0.9976)), ("worst6", ("worst", 6.0))])
def test_parse_measure(spec, parsed):
    assert parse_measure(spec) == parsed


def test_bad_measure_names():
    with pytest.raises(ValueError, match="expected var"):
        parse_measure("cvar99")
    with pytest.raises(ValueError, match="level"):
        expected_shortfall(np.ones(5), 1.0)


@pytest.mark.parametrize("spec", ["es975", "es9976", "var99", "var975", "worst6", "worst1"])
def test_pnl_measure_is_the_risk_measure_of_the_losses(spec):
    rng = np.random.default_rng(3)
    pnl = rng.standard_t(3, 2500)
    weights = rng.random(2500)
    weights /= weights.sum()
    assert vr.pnl_measure(spec, 2500)(pnl) == pytest.approx(float(vr.risk_measure(-pnl, spec)), rel=1e-12)
    assert vr.pnl_measure(spec, 2500, weights)(pnl) == pytest.approx(float(vr.risk_measure(-pnl, spec, weights)))
    block = rng.standard_t(3, (5, 2500)).astype(np.float32)  # a block of books, partitioned in place
    expected = vr.risk_measure(-block.astype(float), spec)
    np.testing.assert_allclose(vr.pnl_measure(spec, 2500)(block.copy()), expected, rtol=1e-12)
    by_book = [float(vr.risk_measure(-row, spec, weights)) for row in block]  # each book on its own
    np.testing.assert_allclose(vr.pnl_measure(spec, 2500, weights)(block), by_book, rtol=1e-6)
