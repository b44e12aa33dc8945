"""The serving portfolio engine's rules that its parity tests with the library do not hold (session 27's
mutation audit): full collateralisation in both paths and both sides, netting, the batch's maintenance and
flags, the stress floor of the isolated sum, the policy's bounds, and a scenario file checked at load."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import volmargin_serving.portfolio as vp
from volmargin_serving.errors import CalibrationError, SignatureError
from volmargin_serving.portfolio import PortfolioEngine, PortfolioPolicy, load_scenarios, write_scenarios


def _scenarios(policy=PortfolioPolicy(), stress=None, z=None, fallback=(0.05, 0.05)) -> vp.PortfolioScenarios:
    z = np.random.default_rng(0).standard_normal((1000, 2)) if z is None else z
    return vp.PortfolioScenarios(("a", "b"), z, np.arange(len(z)).astype("datetime64[D]"), None, stress,
                                 np.asarray(fallback, dtype=float), policy)


# --- P32 / P26 / P27 / P25: an asset with no forecast and no usable fallback is fully collateralised

@pytest.mark.parametrize("fallback", [np.nan, 0.0])
@pytest.mark.parametrize("notional", [1e6, -1e6])
def test_a_leg_without_forecast_or_fallback_is_fully_collateralised_in_both_paths(fallback, notional):
    """No usable forecast for 'a' and a fallback that is NaN or 0: the position in 'a', long or short, is
    charged its whole notional in the one-book path and in the batch path, in IM and in the isolated sum."""
    engine = PortfolioEngine(_scenarios(fallback=(fallback, 0.05)), np.array([np.nan, 1e-4]))
    one = engine.margin(names=["a"], notionals=[notional])
    batch = engine.margin_batch(np.array([[notional, 0.0]]))
    for m in (one.initial, one.isolated, batch.initial[0], batch.isolated[0]):
        assert m >= abs(notional)
    assert one.flagged == ("a",) and batch.flagged == ("a",)


# --- P30: netting of two opposite positions in one asset

def test_two_opposite_positions_in_one_asset_net_to_nothing():
    """A long and an equal short in the same asset are one flat position: IM and isolated sum 0, with the
    blend weight on the isolated sum (w = 1) too; a long and a smaller short are the net long."""
    engine = PortfolioEngine(_scenarios(PortfolioPolicy(correlation_weight=1.0)), np.array([1e-4, 1e-4]))
    flat = engine.margin(names=["a", "a"], notionals=[1e6, -1e6])
    assert flat.initial == 0.0 and flat.isolated == 0.0 and flat.gross == 2e6
    net = engine.margin(names=["a", "a"], notionals=[1e6, -4e5])
    alone = engine.margin(names=["a"], notionals=[6e5])
    assert net.initial == pytest.approx(alone.initial, rel=1e-6)
    assert net.isolated == pytest.approx(alone.isolated, rel=1e-6)


# --- P31: the batch's maintenance margin

def test_batch_maintenance_is_the_policy_fraction_of_the_initial_margin():
    policy = PortfolioPolicy(maintenance_fraction=0.6)
    engine = PortfolioEngine(_scenarios(policy), np.array([1e-4, 4e-4]))
    books = np.array([[1e6, -5e5], [0.0, 2e6], [-3e5, 0.0]])
    batch = engine.margin_batch(books)
    assert (batch.initial > 0).all()
    np.testing.assert_allclose(batch.maintenance, 0.6 * batch.initial, rtol=1e-12)


# --- P33: the batch names the flagged assets it holds

def test_batch_flags_the_held_assets_priced_at_their_fallback():
    engine = PortfolioEngine(_scenarios(), np.array([np.nan, 1e-4]))
    assert engine.margin_batch(np.array([[1e6, 1e6]])).flagged == ("a",)
    assert engine.margin_batch(np.array([[0.0, 1e6]])).flagged == ()


def test_batch_flags_only_the_books_that_hold_a_flagged_asset():
    """A book without the asset that has no usable forecast is not flagged because another book holds it."""
    engine = PortfolioEngine(_scenarios(), np.array([np.nan, 1e-4]))
    batch = engine.margin_batch(np.array([[1e6, 1e6], [0.0, 1e6], [-2e6, 0.0], [0.0, 0.0]]))
    assert batch.flagged == ("a",)
    np.testing.assert_array_equal(batch.book_flagged, [True, False, True, False])
    assert engine.margin(names=["a"], notionals=[1e6]).book_flagged is True
    assert engine.margin(names=["b"], notionals=[1e6]).book_flagged is False
    assert PortfolioEngine(_scenarios(), np.array([1e-4, 1e-4])).margin_batch(np.ones((2, 2))).book_flagged.sum() == 0


# --- P08 / P14: with a stress floor, each position's isolated margin is floored by its stressed loss

def test_the_isolated_sum_is_floored_by_each_positions_stressed_loss():
    """stress_mode='floor' with the stressed rows at -50% for 'a' and +50% for 'b': a long in 'a' alone has
    isolated margin scale x its stressed loss; a long basket a + b has its stressed joint loss offset by b's
    gain, but its isolated sum (and with w = 1 its IM) still charges a's stressed loss in full."""
    stress = np.tile([-0.5, 0.5], (40, 1))
    policy = PortfolioPolicy(scale=1.5, stress_mode="floor", correlation_weight=1.0)
    engine = PortfolioEngine(_scenarios(policy, stress), np.array([1e-4, 1e-4]))
    a_loss = 1e6 * -np.expm1(-0.5)
    single = engine.margin(names=["a"], notionals=[1e6])
    assert single.isolated == pytest.approx(1.5 * a_loss, rel=1e-5)
    b_alone = engine.margin(names=["b"], notionals=[1e6]).isolated
    basket = engine.margin(names=["a", "b"], notionals=[1e6, 1e6])
    assert basket.isolated == pytest.approx(1.5 * a_loss + b_alone, rel=1e-5)
    assert basket.initial == pytest.approx(basket.isolated, rel=1e-5)  # w = 1: IM is the isolated sum
    assert engine.margin_batch(np.array([[1e6, 1e6]])).isolated[0] == pytest.approx(basket.isolated, rel=1e-5)


# --- P06: a leg that gains in its own tail is no credit to the other legs' isolated margins

def test_a_leg_that_gains_in_every_scenario_is_no_credit_in_the_isolated_sum():
    """'a' rises in every scenario, 'b' is ordinary: a long in 'a' margins 0 alone, so a long a + long b
    book's isolated sum (and with w = 1 its IM) is b's own margin, not b's less a's gain."""
    rng = np.random.default_rng(1)
    z = np.c_[np.abs(rng.standard_normal(1000)) + 0.1, rng.standard_normal(1000)]
    engine = PortfolioEngine(_scenarios(PortfolioPolicy(correlation_weight=1.0), z=z), np.array([1e-4, 1e-4]))
    b_alone = engine.margin(names=["b"], notionals=[1e6])
    both = engine.margin(names=["a", "b"], notionals=[1e6, 1e6])
    assert b_alone.isolated > 0
    assert both.isolated == pytest.approx(b_alone.isolated, rel=1e-6)
    assert both.initial == pytest.approx(b_alone.initial, rel=1e-6)


# --- P23: a scenario file with a non-finite standardised return is refused at load

def test_a_scenario_file_with_a_nan_return_is_refused(tmp_path):
    z = np.random.default_rng(0).standard_normal((200, 2))
    z[17, 1] = np.nan
    path = write_scenarios(tmp_path / "s.npz", _scenarios(z=z))
    with pytest.raises(CalibrationError, match="finite"):
        load_scenarios(path)


# --- P01..P05: the portfolio policy's bounds

@pytest.mark.parametrize("change", [dict(scale=0.0), dict(correlation_weight=1.5), dict(maintenance_fraction=1.0),
                                    dict(stress_weight=1.0), dict(measure="worst0")])
def test_portfolio_policy_bounds(change):
    with pytest.raises(ValueError, match=f"policy.{next(iter(change))}"):
        PortfolioPolicy(**change)


# --- P22: stressed rows weighted into a weighted scenario set keep the total mass at 1

def test_weighted_stress_rows_share_the_mass_with_a_weighted_set():
    n = 100
    weights = np.r_[np.full(50, 0.015), np.full(50, 0.005)]
    policy = PortfolioPolicy(stress_mode="weight", stress_weight=0.2)
    full = vp.scenario_weights(n, np.zeros((4, 2)), policy, weights)
    assert full.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(full[:n], 0.8 * weights)
    np.testing.assert_allclose(full[n:], 0.05)




# --- a scenario file is checked whole at load (session 27: only z was, so a short weights array or a negative
# fallback volatility served NaN or a lower margin)

@pytest.mark.parametrize("field, value, message", [
    ("weights", np.full(199, 1 / 199), "weights must be 200 non-negative numbers that sum to 1"),
    ("weights", np.full(200, 1 / 100), "weights must be 200 non-negative numbers that sum to 1"),
    ("fallback_sigma", np.array([0.05, -0.05]), "fallback_sigma must be one volatility >= 0"),
    ("fallback_sigma", np.array([0.05]), "fallback_sigma must be one volatility >= 0"),
    ("stress", np.array([[-0.5, np.nan]]), "stress must be a finite (rows, 2) matrix"),
    ("stress", np.array([[-0.5, 0.1, 0.2]]), "stress must be a finite (rows, 2) matrix"),
    ("dates", np.arange(10).astype("datetime64[D]"), "dates must hold one date per scenario (200)"),
    ("max_move", 0.0, "max_move must be > 0"),
])
def test_a_scenario_file_with_a_bad_array_is_refused(tmp_path, field, value, message):
    z = np.random.default_rng(0).standard_normal((200, 2))
    good = write_scenarios(tmp_path / "good.npz", _scenarios(z=z))
    assert load_scenarios(good).z.shape == (200, 2)
    bad = dataclasses.replace(_scenarios(z=z), **{field: value})
    with pytest.raises(CalibrationError, match=re.escape(message)):
        load_scenarios(write_scenarios(tmp_path / "bad.npz", bad))


# --- session 29's red team: a forecast whose moves overflow, a measure of gains

@pytest.mark.parametrize("variance", [1e2, 1e4])
def test_a_variance_whose_moves_overflow_is_fully_collateralised_flagged_never_nan(variance):
    """A 1e6 short in an asset forecast at a variance of 1e4: the float32 P&L went to inf - inf and the margin was
    NaN, unflagged (at 1e2 it was 1.6e17). Moves beyond a 10^12-fold price are no price: the position is fully
    collateralised and flagged in both paths, the other asset priced as before."""
    calm = PortfolioEngine(_scenarios(), np.array([1e-2, 4e-4]))
    engine = PortfolioEngine(_scenarios(), np.array([variance, 4e-4]))
    one = engine.margin(names=["a", "b"], notionals=[-1e6, 5e5])
    batch = engine.margin_batch(np.array([[-1e6, 5e5]]))
    assert one.flagged == ("a",) and batch.flagged == ("a",) and batch.book_flagged.all()
    for m in (one.initial, batch.initial[0]):
        assert np.isfinite(m) and m >= 1e6
    assert engine.margin(names=["b"], notionals=[5e5]).initial == calm.margin(names=["b"], notionals=[5e5]).initial


@pytest.mark.parametrize("measure", ["var42", "es100", "var5"])
def test_a_measure_below_the_median_is_refused(measure):
    """var42 margined a plain long at 0; es100 reads as the 10% ES (three digits are a level of 0.xyz)."""
    with pytest.raises(ValueError, match="policy.measure"):
        PortfolioPolicy(measure=measure)


@pytest.mark.parametrize("call", [
    lambda engine: engine.margin(names=None, notionals=[1.0]),
    lambda engine: PortfolioEngine(_scenarios(), ["x", "y"]),
    lambda engine: engine.margin_batch([["a", "b"]]),
    lambda engine: engine.margin("a"),
])
def test_positions_and_forecasts_that_are_not_numbers_are_typed_errors(call):
    """Session 29's red team: numpy's TypeError / ValueError / AttributeError before."""
    with pytest.raises(vp.BadPositionError):
        call(PortfolioEngine(_scenarios(), np.array([1e-4, 4e-4])))


# --- session 30's red team: fixes

@pytest.mark.parametrize("volume", [np.nan, 0.0, np.inf])
def test_a_held_asset_without_a_usable_volume_is_charged_in_full_and_flagged(volume):
    """Under a concentration add-on a position in an asset whose traded volume is NaN, 0 or infinite is
    charged its whole notional; it was not flagged (session 30's note): it is now, in both paths, and only
    the books that hold it; without the add-on a missing volume changes nothing and flags nothing."""
    engine = PortfolioEngine(_scenarios(PortfolioPolicy(concentration=0.5)), np.array([1e-4, 1e-4]),
                             adv=np.array([volume, 1e9]))
    one = engine.margin(names=["a", "b"], notionals=[1e6, -5e5])
    assert one.initial >= 1e6 and one.flagged == ("a",) and one.book_flagged is True
    assert engine.margin(names=["b"], notionals=[1e6]).flagged == ()
    batch = engine.margin_batch(np.array([[1e6, -5e5], [0.0, 1e6]]))
    assert batch.flagged == ("a",)
    np.testing.assert_array_equal(batch.book_flagged, [True, False])
    plain = PortfolioEngine(_scenarios(), np.array([1e-4, 1e-4]), adv=np.array([volume, 1e9]))
    assert plain.margin(names=["a"], notionals=[1e6]).flagged == ()
    assert not plain.margin_batch(np.array([[1e6, 0.0]])).book_flagged.any()


def test_a_concentration_policy_without_volumes_is_a_typed_error_not_a_dropped_addon():
    """A file calibrated with the add-on (concentration 0.5) served with adv=None priced without it, in silence
    (lower than with any volume, even an unlimited one); the library's job refuses the same. NaN volumes are
    charged in full; a policy without the add-on needs no volumes."""
    concentrated = _scenarios(PortfolioPolicy(concentration=0.5))
    with pytest.raises(vp.BadPositionError, match=r"^adv: .*concentration add-on \(0.5\)"):
        PortfolioEngine(concentrated, np.array([1e-4, 1e-4]))
    full = PortfolioEngine(concentrated, np.array([1e-4, 1e-4]), np.array([np.nan, 1e9]))
    assert full.margin(names=["a"], notionals=[1e6]).initial >= 1e6
    assert PortfolioEngine(_scenarios(), np.array([1e-4, 1e-4])).margin(names=["a"], notionals=[1e6]).initial > 0


def _hedge_scenarios(rho=0.9, n=1000, seed=3) -> vp.PortfolioScenarios:
    rng = np.random.default_rng(seed)
    common = rng.standard_t(4, n)
    z = np.c_[common + 0.3 * rng.standard_t(4, n), rho * common + np.sqrt(1 - rho ** 2) * rng.standard_t(4, n)]
    return _scenarios(PortfolioPolicy(scale=0.95, correlation_weight=0.1), z=z / z.std(0), fallback=(0.08, 0.12))


def test_a_missing_forecast_on_a_hedge_leg_never_lowers_the_margin():
    """The red team's book: long 1e6 'a', a small short 1e5 'b' against it, forecasts at 30% of the fallback.
    'b''s forecast missing priced the leg at its (larger) fallback, which offset more of the long: the
    flagged margin was 12% lower than at the true forecast. Swept over hedge sizes, sides and true forecasts
    up to the fallback, with either leg missing, one book and batch: flagged >= clean, flags kept."""
    scenarios = _hedge_scenarios()
    fallback = scenarios.fallback_sigma
    for leg in (0, 1):
        for share in (0.05, 0.3, 0.6, 1.0):
            true = (share * fallback) ** 2
            missing = true.copy()
            missing[leg] = np.nan
            clean, flagged = PortfolioEngine(scenarios, true), PortfolioEngine(scenarios, missing)
            books = np.array([[1e6, h] for h in (-1e5, -3e5, -7e5, -1e6, -1.5e6, 2e5)]
                             + [[-1e6, h] for h in (1e5, 8e5, 1.2e6)])
            batch = flagged.margin_batch(books)
            assert batch.book_flagged.all() and batch.flagged == ("ab"[leg],)
            assert (batch.initial >= clean.margin_batch(books).initial * (1 - 1e-9)).all(), (leg, share)
            for row, im in zip(books, batch.initial):
                one = flagged.margin(names=["a", "b"], notionals=row)
                assert one.initial == pytest.approx(im, rel=1e-6) and one.flagged == ("ab"[leg],)
                assert one.maintenance == pytest.approx(0.75 * one.initial)
    unflagged = PortfolioEngine(scenarios, (0.3 * fallback) ** 2).margin_batch(np.array([[1e6, -1e5]]))
    assert not unflagged.book_flagged.any()  # books without a bad leg are priced as before


def test_a_missing_forecast_never_lowers_a_var_books_margin_either():
    """Session 30's second red team: the bound (other legs jointly + the flagged leg alone) rests on subadditivity,
    which a VaR lacks: a var99 book with a leg at its fallback came out at 95.4% of its margin at the true forecast.
    A VaR book with a flagged leg is charged at least all its legs' own margins too."""
    rng = np.random.default_rng(1)
    n = 200
    common = rng.standard_t(3, n)
    z = np.c_[common + 0.5 * rng.standard_t(3, n), common + 0.5 * rng.standard_t(3, n), rng.standard_t(3, n)]
    z = z + (rng.random((n, 3)) < 0.008) * rng.normal(0, 8, (n, 3))
    z = z / z.std(0)
    fallback = np.array([0.08, 0.1, 0.12])
    books = np.array([[348890.0, 1475602.0, -495855.0], [1e6, -8e5, 0.0], [-5e5, 1e6, 3e5]])
    for measure in ("var99", "var975", "es975"):
        scenarios = vp.PortfolioScenarios(("a", "b", "c"), z, np.arange(n).astype("datetime64[D]"), None, None,
                                          fallback, PortfolioPolicy(scale=1.0, correlation_weight=0.1, measure=measure))
        for share in (0.3, 0.6, 0.9):
            true = (share * fallback) ** 2
            clean = PortfolioEngine(scenarios, true).margin_batch(books).initial
            for leg in range(3):
                missing = true.copy()
                missing[leg] = np.nan
                flagged = PortfolioEngine(scenarios, missing)
                assert (flagged.margin_batch(books).initial >= clean * (1 - 1e-9)).all(), (measure, share, leg)
                one = flagged.margin(names=["a", "b", "c"], notionals=books[0]).initial
                assert one >= clean[0] * (1 - 1e-6), (measure, share, leg)


@pytest.mark.parametrize("change, message", [
    (lambda s: dataclasses.replace(s, policy=dataclasses.replace(s.policy, scale=1e-9)),
     "policy.scale 1e-09 is below the runtime's least scale 0.05"),
    (lambda s: dataclasses.replace(s, max_move=1e-9), "max_move must be > 0, at least 0.001"),
    (lambda s: dataclasses.replace(s, z=np.zeros_like(s.z)), "z must move every asset"),
    (lambda s: dataclasses.replace(s, z=np.c_[s.z[:, :1], np.zeros(len(s.z))]), "z must move every asset"),
    (lambda s: dataclasses.replace(s, z=s.z[:1], dates=s.dates[:1]),
     "z holds 1 scenarios; a calibration uses at least 10"),
    (lambda s: dataclasses.replace(s, fallback_sigma=np.array([1e-300, 0.05])),
     "fallback_sigma must be one volatility"),
    (lambda s: dataclasses.replace(s, policy=dataclasses.replace(s.policy, measure="worst9999")),
     "policy.measure worst9999: worst<k> needs k <= the 200 scenarios"),
])
def test_a_scenario_file_that_prices_near_zero_is_refused_at_load(tmp_path, change, message):
    """Session 30's red team: a resealed scale of 1e-9, a move cap of 1e-9, all-zero z, one scenario, a fallback
    of 1e-300 all loaded and priced a 1e6 long at ~0; worst9999 loaded and failed later with a bare ValueError."""
    good = _scenarios(z=np.random.default_rng(0).standard_normal((200, 2)))
    assert load_scenarios(write_scenarios(tmp_path / "good.npz", good)).z.shape == (200, 2)
    with pytest.raises(CalibrationError, match=re.escape(message)):
        load_scenarios(write_scenarios(tmp_path / "bad.npz", change(good)))
    for none in (0.0, np.nan):  # no fallback at all stays allowed: such a leg is fully collateralised
        without = dataclasses.replace(good, fallback_sigma=np.array([none, 0.05]))
        load_scenarios(write_scenarios(tmp_path / "none.npz", without))


def test_with_a_service_key_a_scenario_file_must_be_signed(tmp_path, monkeypatch):
    """As calibration sets: with VOLMARGIN_BUNDLE_KEY set, an unsigned, altered or foreign-key file is refused."""
    from volmargin_serving.errors import SignatureError

    good = _scenarios(z=np.random.default_rng(0).standard_normal((200, 2)))
    unsigned = write_scenarios(tmp_path / "unsigned.npz", good)
    signed = write_scenarios(tmp_path / "signed.npz", good, key="k1")
    monkeypatch.setenv("VOLMARGIN_BUNDLE_KEY", "k1")
    assert load_scenarios(signed).policy == good.policy
    with pytest.raises(SignatureError, match="no signature"):
        load_scenarios(unsigned)
    with pytest.raises(SignatureError, match="does not verify"):
        load_scenarios(signed, key="k2")
    with np.load(signed) as data:  # a resealed scale: the header changes, the signature does not
        arrays = dict(data)
    arrays["header"] = np.array(str(arrays["header"]).replace('"scale": 1.0', '"scale": 0.5'))
    np.savez(tmp_path / "edited.npz", **arrays)
    with pytest.raises(SignatureError, match="does not verify"):
        load_scenarios(tmp_path / "edited.npz")
    assert load_scenarios(write_scenarios(tmp_path / "env.npz", good)).z.shape == (200, 2)  # signed with the env key
    monkeypatch.delenv("VOLMARGIN_BUNDLE_KEY")
    assert load_scenarios(signed).z.shape == load_scenarios(unsigned).z.shape == (200, 2)  # no key: not required


@pytest.mark.parametrize("assets, values, message", [
    (["a", "a"], [0.05 ** 2, 0.0001 ** 2], "align: asset 'a' is listed twice"),
    (["a", "b"], [0.0025], "align: values: expected (2,) numbers, one per asset listed, got shape (1,)"),
    (["a"], [0.0025, 0.0016], "align: values: expected (1,) numbers, one per asset listed, got shape (2,)"),
])
def test_align_refuses_an_asset_twice_or_values_that_do_not_match_the_names(assets, values, message):
    """Session 30's red team: a stale row after a fresh one won in silence; a short list raised numpy's IndexError."""
    with pytest.raises(vp.BadPositionError, match=re.escape(message)):
        vp.align(("a", "b"), assets, values)
    np.testing.assert_array_equal(vp.align(("a", "b", "c"), ["b", "a"], [2.0, 1.0]), [1.0, 2.0, np.nan])


# session 30's second mutation audit (s30m2)
def _two_hundred_scenarios() -> vp.PortfolioScenarios:
    z = np.random.default_rng(0).standard_normal((200, 2))
    return vp.PortfolioScenarios(("a", "b"), z, np.arange(200).astype("datetime64[D]"), None, None,
                                 np.array([0.05, 0.05]), PortfolioPolicy())


@pytest.mark.parametrize("array", ["z", "fallback_sigma"])
def test_an_edited_array_of_a_signed_scenario_file_does_not_verify(tmp_path, monkeypatch, array):
    """The header alone signed let a file with its z shrunk 1000x (margins ~0) or a lowered fallback load under
    the service key; the signature covers every array's bytes too."""
    signed = write_scenarios(tmp_path / "signed.npz", _two_hundred_scenarios(), key="k1")
    with np.load(signed) as data:
        arrays = dict(data)
    assert array in arrays
    arrays[array] = arrays[array] * 1e-3  # same name, dtype and shape: only the bytes differ
    np.savez(tmp_path / "edited.npz", **arrays)
    monkeypatch.setenv("VOLMARGIN_BUNDLE_KEY", "k1")
    assert load_scenarios(signed).z.shape == (200, 2)
    with pytest.raises(SignatureError, match="does not verify"):
        load_scenarios(tmp_path / "edited.npz")


def test_worst_k_with_k_equal_to_the_scenario_count_loads(tmp_path):
    """worst<k> needs k <= the scenarios: k equal to their count (the mean of every scenario's loss) is a valid
    file, one more is refused."""
    import dataclasses

    from volmargin_serving.errors import CalibrationError

    good = _two_hundred_scenarios()
    every = dataclasses.replace(good, policy=dataclasses.replace(good.policy, measure="worst200"))
    assert load_scenarios(write_scenarios(tmp_path / "every.npz", every)).policy.measure == "worst200"
    beyond = dataclasses.replace(good, policy=dataclasses.replace(good.policy, measure="worst201"))
    with pytest.raises(CalibrationError, match="worst<k> needs k <= the 200 scenarios"):
        load_scenarios(write_scenarios(tmp_path / "beyond.npz", beyond))
