"""Learned global forecasters: scale-free causal features, non-crossing tails, determinism, no look-ahead.

Models run with tiny settings on a small synthetic panel so the file stays fast on two CPU cores.
"""

import copy
import logging

import numpy as np
import pandas as pd
import pytest
import torch

from volmargin.data import synthetic_market
from volmargin.errors import ConfigError
from volmargin.evaluation.walkforward import WalkForwardSplit, panel_historical_forecasts
from volmargin.features.learned import (FEATURE_NAMES, FeatureSpec, check_levels, feature_frame, require_levels,
                                       target_frame, training_frame)
from volmargin.features.realized import MEASURES, daily_measures
from volmargin.models import make_forecaster
from volmargin.models.distributions import coverage_factor
from volmargin.models.neural import NeuralForecaster, VolNet, output_columns

LEVELS = (0.975, 0.99)
TINY = {
    "nn": {"window": 8, "hidden": 8, "max_epochs": 3, "patience": 2, "refit_epochs": 1, "batch_size": 128, "lr": 3e-3},
    "gbm": {"n_estimators": 30, "tail_estimators": 20},
}
LEARNED = tuple(TINY)
START, CUT = 700, 760  # first target day and the corruption cut, as row positions


@pytest.fixture(scope="module")
def panel() -> dict[str, pd.DataFrame]:
    """Daily measures of a seeded synthetic market (persistent log-vol, jumps, leverage)."""
    return {asset: daily_measures(bars) for asset, bars in synthetic_market(n_assets=4, days=1000, seed=1).items()}


def _split(panel: dict[str, pd.DataFrame]) -> WalkForwardSplit:
    return WalkForwardSplit(start=next(iter(panel.values())).index[START], refit_every=150, min_train=365)


def _run(panel: dict[str, pd.DataFrame], name: str) -> tuple[dict[str, pd.DataFrame], int]:
    refits, announced = [], []
    frames = panel_historical_forecasts(panel, lambda: make_forecaster(name, **TINY[name]), _split(panel), LEVELS,
                                        on_refit=refits.append, on_start=announced.append)
    assert announced == [len(refits)]  # the progress total announced up front is the refits made
    return frames, len(refits)


def _corrupt(daily: pd.DataFrame, cut: pd.Timestamp) -> pd.DataFrame:
    out = daily.copy()
    later = out.index > cut
    out.loc[later, "ret"] = out.loc[later, "ret"] * 25 + 0.3
    for column in (*MEASURES, "volume", "traded_value"):
        out.loc[later, column] = out.loc[later, column] * 400
    return out


@pytest.fixture(scope="module")
def clean_runs(panel) -> dict[str, tuple[dict[str, pd.DataFrame], int]]:
    return {name: _run(panel, name) for name in LEARNED}


def _forecast_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c.startswith(("variance", "var", "es"))]


# ---------------------------------------------------------------- features


def test_features_use_only_past_rows(panel):
    daily = panel["syn_a"]
    cut = daily.index[500]
    spec = FeatureSpec(long_days=121)  # every core column: the long-run level too
    clean, dirty = feature_frame(daily, spec), feature_frame(_corrupt(daily, cut), spec)
    pd.testing.assert_frame_equal(clean.loc[:cut], dirty.loc[:cut])
    for name in ("rv_d", "liquidity", "long_level"):  # the test has teeth
        assert not np.allclose(clean.loc[cut:, name].iloc[1:], dirty.loc[cut:, name].iloc[1:])


def test_features_and_targets_are_scale_free(panel):
    """Every feature but liquidity ignores the volatility level, the price unit and the volume unit;
    liquidity reads the money traded, and only that (a redenomination keeps it)."""
    daily = panel["syn_b"]
    scaled = daily.copy()
    scaled["ret"] *= 3.0
    scaled[list(MEASURES)] *= 9.0  # variances scale with the square of returns
    scaled["volume"] *= 50.0
    scaled["close"] /= 50.0  # the same money traded in a 50x smaller price unit
    spec = FeatureSpec(long_days=121)
    clean, other = feature_frame(daily, spec), feature_frame(scaled, spec)
    names = list(FEATURE_NAMES) + ["long_level"]
    pd.testing.assert_frame_equal(clean[names], other[names], check_exact=False, rtol=1e-7, atol=1e-9)
    richer = feature_frame(daily.assign(traded_value=daily["traded_value"] * 10.0), spec)
    np.testing.assert_allclose(richer["liquidity"] - clean["liquidity"], np.log(10.0))
    pd.testing.assert_frame_equal(clean.drop(columns="liquidity"), richer.drop(columns="liquidity"))
    np.testing.assert_allclose(other["level"] - clean["level"], np.log(9.0))
    targets = target_frame(daily, clean["level"], 3), target_frame(scaled, other["level"], 3)
    pd.testing.assert_frame_equal(*targets, check_exact=False, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", LEARNED)
def test_scaler_is_fitted_on_training_rows_only(name, panel):
    trains = {asset: daily.iloc[:450] for asset, daily in panel.items()}
    model = make_forecaster(name, **TINY[name]).fit_panel(trains)
    names = list(getattr(model, "feature_names_", FEATURE_NAMES))  # the GBM reads liquidity too
    rows = np.concatenate([feature_frame(daily)[names].to_numpy() for daily in trains.values()])
    np.testing.assert_allclose(model.scaler_.mean_, np.nanmean(rows, axis=0))
    np.testing.assert_allclose(model.scaler_.scale_, np.nanstd(rows, axis=0))


# ---------------------------------------------------------------- network


@pytest.mark.parametrize("calibrated", [False, True])
def test_network_tails_never_cross(calibrated):
    """Whatever the weights, and whatever tail calibration factors (a larger one on the lower level too)."""
    torch.manual_seed(0)
    network = VolNet(len(FEATURE_NAMES), n_levels=len(LEVELS), hidden=8)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.normal_(0.0, 2.0)  # adversarial weights, far from the sensible initialisation
        if calibrated:
            network.tail_scale.copy_(torch.tensor([[3.0, 1.0], [1.5, 1.2]]))
        out = network(5 * torch.randn(256, 16, len(FEATURE_NAMES)))
    assert out.dtype == torch.float32 and out.shape == (256, len(output_columns(LEVELS)))
    table = pd.DataFrame(out.numpy(), columns=output_columns(LEVELS))
    for side in ("long", "short"):
        assert (table[f"var975_{side}"] >= 0).all()
        assert (table[f"var99_{side}"] >= table[f"var975_{side}"]).all()
        for tag in ("975", "99"):
            assert (table[f"es{tag}_{side}"] >= table[f"var{tag}_{side}"]).all()


# ---------------------------------------------------------------- forecasters


@pytest.mark.parametrize("name", LEARNED)
def test_contract_and_level_checks(name, panel):
    model = make_forecaster(name, **TINY[name])
    assert not [k for k in vars(model) if k.endswith("_")], "constructor must only store parameters"
    assert make_forecaster(name, **model.get_params()).get_params() == model.get_params()
    with pytest.raises(ConfigError, match="levels"):
        make_forecaster(name, levels=(0.99, 0.975)).fit_panel(panel)


@pytest.mark.parametrize("name", LEARNED)
def test_walk_forward_smoke(name, clean_runs):
    frames, refits = clean_runs[name]
    assert refits >= 2
    for frame in frames.values():
        values = frame[_forecast_columns(frame)].to_numpy()
        assert len(frame) > 250 and np.isfinite(values).all() and (values > 0).all()
        for side in ("long", "short"):
            assert (frame[f"var99_{side}"] >= frame[f"var975_{side}"]).all()
            assert (frame[f"es99_{side}"] >= frame[f"var99_{side}"]).all()


@pytest.mark.parametrize("name", LEARNED)
def test_no_look_ahead_through_the_walk_forward(name, panel, clean_runs):
    """Corrupting every asset after a cut date leaves all forecasts made up to the cut unchanged."""
    cut = panel["syn_a"].index[CUT]
    dirty, _ = _run({asset: _corrupt(daily, cut) for asset, daily in panel.items()}, name)
    for asset, clean in clean_runs[name][0].items():
        columns, upto = _forecast_columns(clean), clean["origin"] <= cut
        pd.testing.assert_frame_equal(clean.loc[upto, columns], dirty[asset].loc[upto, columns])
        assert not np.allclose(clean.loc[~upto, "variance"], dirty[asset].loc[~upto, "variance"])


@pytest.mark.parametrize("name", LEARNED)
def test_learned_model_beats_constant_variance(name, panel, clean_runs):
    """QLIKE against realised variance at most half that of each asset's training-sample mean variance
    (measured: ~0.2 for both tiny models against ~1.0)."""
    losses = {"model": [], "constant": []}
    for asset, frame in clean_runs[name][0].items():
        frame = frame.dropna(subset=["realized_rv"])
        constant = panel[asset]["rv"].iloc[:START].mean()
        for key, forecast in (("model", frame["variance"]), ("constant", constant)):
            ratio = frame["realized_rv"] / forecast
            losses[key].append(ratio - np.log(ratio) - 1)
    assert np.mean(np.concatenate(losses["model"])) < 0.5 * np.mean(np.concatenate(losses["constant"]))


def test_neural_fit_is_deterministic_and_saves(panel, tmp_path):
    trains = {asset: daily.iloc[:450] for asset, daily in panel.items()}
    first, again, other = (NeuralForecaster(**TINY["nn"], seed=s).fit_panel(trains) for s in (0, 0, 1))
    weights = [m.network_.state_dict() for m in (first, again, other)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert not all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    first.save(tmp_path / "nn.pt")
    loaded = NeuralForecaster.load(tmp_path / "nn.pt")
    history = panel["syn_c"].iloc[:480]
    pd.testing.assert_frame_equal(first.forecast(history, history.index[450:], LEVELS).to_frame(),
                                  loaded.forecast(history, history.index[450:], LEVELS).to_frame())
    with pytest.raises(ConfigError, match="trained levels"):
        first.forecast(history, history.index[450:], (0.99,))


def test_neural_warm_refit_and_short_history(panel):
    """Later fits warm-start (few epochs); an origin with fewer rows than the window still gets a
    finite forecast from its zero-padded window."""
    model = NeuralForecaster(**TINY["nn"]).fit_panel({a: d.iloc[:450] for a, d in panel.items()})
    assert model.tail_factors_ == {"long": [1.0, 1.0], "short": [1.0, 1.0]}  # tail calibration is off by default
    before = {k: v.clone() for k, v in model.network_.state_dict().items()}
    model.fit_panel({a: d.iloc[:480] for a, d in panel.items()})
    assert model.epochs_ == TINY["nn"]["refit_epochs"]
    assert not all(torch.equal(before[k], v) for k, v in model.network_.state_dict().items())
    history = panel["syn_d"].iloc[:3]
    forecast = model.forecast(history, history.index, LEVELS)
    assert np.isfinite(forecast.to_frame().to_numpy()).all() and (forecast.variance > 0).all()


def test_coverage_factor_is_the_level_quantile_of_loss_over_var_and_never_below_one():
    """The tail calibration factor shared by the GBM and the GRU: c x VaR is exceeded on 1 - level of the rows
    with a usable (positive, finite) VaR; VaRs already exceeded too rarely are kept (c = 1)."""
    rng = np.random.default_rng(3)
    var = rng.uniform(0.5, 2.0, 5000)
    ratio = rng.standard_t(4, 5000)
    factor = coverage_factor(ratio * var, var, 0.99)
    assert factor == pytest.approx(np.quantile(ratio, 0.99)) and factor > 1.0
    assert np.mean(ratio * var > factor * var) == pytest.approx(0.01, abs=2e-4)
    unusable = np.r_[var[:100], 0.0, np.nan, -1.0]
    assert coverage_factor(np.r_[ratio[:100] * var[:100], 50.0, 50.0, 50.0], unusable, 0.9) == pytest.approx(
        np.quantile(ratio[:100], 0.9))
    assert coverage_factor(0.5 * var, var, 0.99) == 1.0 and coverage_factor(var, np.zeros(5000), 0.99) == 1.0


def _held_out_factors(model: NeuralForecaster, trains: dict[str, pd.DataFrame], every_asset: bool = False) -> dict:
    """The tail factors recomputed the long way: the uncalibrated network's forecasts of each held-out asset's
    rows after the validation cut (of every asset's with `every_asset`), one asset at a time."""
    data = copy.deepcopy(model)._data(trains)
    cut, held_out = data.validation_cut(), data.validation_assets()
    plain = copy.deepcopy(model)
    plain.network_.tail_scale.fill_(1.0)
    outs, returns = [], []
    for asset in sorted(trains if every_asset else held_out):
        rows = training_frame(trains[asset], model.horizon_, model.feature_spec_).dropna(subset=["y_var", "r_std"])
        rows = rows[rows.index >= cut]
        outs.append(plain.predict_standardized(trains[asset], rows.index)[0])
        returns.append(rows["r_std"].to_numpy())
    out, r_std = np.concatenate(outs), np.concatenate(returns)
    z = r_std * np.exp(-0.5 * out[:, 0])
    var = out[:, 1:].reshape(-1, 2, 2, len(LEVELS))[:, :, 0]
    return {side: [coverage_factor(loss, var[:, i, j], level) for j, level in enumerate(LEVELS)]
            for i, (side, loss) in enumerate((("long", -z), ("short", z)))}


def test_neural_tail_calibration_uses_only_held_out_assets_after_the_cut(panel, tmp_path):
    """The GRU's tail factors are those of its held-out assets' rows after the validation cut, and only
    theirs (every asset's rows give other factors); a warm refit recomputes them; the network, its saved
    weights and its ONNX graph carry them; the same seed gives the same factors."""
    from volmargin.export import check_parity, parity_inputs, reference_outputs, to_onnx

    trains = {asset: daily.iloc[:450] for asset, daily in panel.items()}
    model = NeuralForecaster(**TINY["nn"], tail_calibration=True).fit_panel(trains)
    expected = _held_out_factors(model, trains)
    for side in ("long", "short"):
        np.testing.assert_allclose(model.tail_factors_[side], expected[side], rtol=1e-5)
    assert max(max(f) for f in model.tail_factors_.values()) > 1.0  # tiny network, one unseen asset: thin tails
    every = _held_out_factors(model, trains, every_asset=True)
    assert not np.allclose([every[s] for s in every], [expected[s] for s in every], rtol=1e-3)  # the test has teeth
    again = NeuralForecaster(**TINY["nn"], tail_calibration=True).fit_panel(trains)
    assert again.tail_factors_ == model.tail_factors_

    plain = copy.deepcopy(model)
    plain.network_.tail_scale.fill_(1.0)
    x = parity_inputs(model, panel, rows=256)
    calibrated, uncalibrated = model.predict_raw(x), plain.predict_raw(x)
    columns = output_columns(LEVELS)
    for side in ("long", "short"):
        first = columns.index(f"var975_{side}")
        np.testing.assert_allclose(calibrated[:, first], model.tail_factors_[side][0] * uncalibrated[:, first],
                                   rtol=1e-6)
    np.testing.assert_array_equal(calibrated[:, 0], uncalibrated[:, 0])  # the variance is untouched
    check_parity(to_onnx(model), reference_outputs(model, x), x)
    model.save(tmp_path / "nn.pt")
    assert torch.equal(NeuralForecaster.load(tmp_path / "nn.pt").network_.tail_scale, model.network_.tail_scale)

    longer = {asset: daily.iloc[:480] for asset, daily in panel.items()}
    model.fit_panel(longer)  # warm refit
    refit = _held_out_factors(model, longer)
    for side in ("long", "short"):
        np.testing.assert_allclose(model.tail_factors_[side], refit[side], rtol=1e-5)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_gru_ensemble_averages_its_members_and_exports_with_parity(panel, tmp_path):
    """`members=2`: the first member is the one-network model of the same seed, the ensemble's variance is
    the mean of its members' and its standardized tails the mean of theirs; warm refits, saved weights and
    the ONNX graph carry it (quietly: no "torchvision is not installed" lines from the exporter); tail
    calibration with several members is refused."""
    from volmargin.export import check_parity, parity_inputs, reference_outputs, to_onnx
    from volmargin.models.neural import VolEnsemble

    trains = {asset: daily.iloc[:450] for asset, daily in panel.items()}
    single = NeuralForecaster(**TINY["nn"]).fit_panel(trains)
    model = NeuralForecaster(**TINY["nn"], members=2).fit_panel(trains)
    assert isinstance(model.network_, VolEnsemble) and len(model.network_.members) == 2
    x = parity_inputs(model, panel, rows=256)
    with torch.no_grad():
        first, second = (member(torch.from_numpy(x)).numpy() for member in model.network_.members)
    np.testing.assert_array_equal(first, single.predict_raw(x))
    out = model.predict_raw(x)
    np.testing.assert_allclose(np.exp(out[:, 0]), (np.exp(first[:, 0]) + np.exp(second[:, 0])) / 2, rtol=1e-5)
    np.testing.assert_allclose(out[:, 1:], (first[:, 1:] + second[:, 1:]) / 2, rtol=1e-5, atol=1e-6)
    assert not np.allclose(first, second)  # two networks, not one twice
    exporter_log, heard = logging.getLogger("torch.onnx._internal.exporter._registration"), _Records()
    exporter_log.addHandler(heard)
    try:
        check_parity(to_onnx(model), reference_outputs(model, x), x)
    finally:
        exporter_log.removeHandler(heard)
    assert not [r for r in heard.records if "torchvision" in r.getMessage()]
    model.fit_panel({asset: daily.iloc[:480] for asset, daily in panel.items()})  # warm: both members refit
    model.save(tmp_path / "nn.pt")
    np.testing.assert_array_equal(NeuralForecaster.load(tmp_path / "nn.pt").predict_raw(x), model.predict_raw(x))
    with pytest.raises(ValueError, match="members"):
        NeuralForecaster(**TINY["nn"], members=2, tail_calibration=True).fit_panel(trains)


@pytest.mark.parametrize("loss, weighted, smearing", [("gamma", True, "global"), ("l2", False, "global"),
                                                      ("l2", False, "conditional"), ("gamma", False, "conditional")])
def test_tree_variants_export_with_parity_and_are_deterministic(loss, weighted, smearing, panel):
    """Both variance losses, both smearings (and a feature ablation) export to a graph that reproduces the
    trees; a refit with the same seed repeats exactly; an unknown loss, smearing or feature name is refused."""
    import onnxruntime as ort

    from volmargin.export import check_parity, parity_inputs, reference_outputs, to_onnx

    trains = {asset: daily.iloc[:450] for asset, daily in panel.items()}
    params = {**TINY["gbm"], "variance_loss": loss, "weight_assets": weighted, "drop_features": ("max_move",),
              "smearing": smearing, "smearing_min_samples_leaf": 100}
    model, again = (make_forecaster("gbm", **params).fit_panel(trains) for _ in range(2))
    x = parity_inputs(model, panel, rows=256)
    np.testing.assert_array_equal(model.predict_raw(x[:, -1]), again.predict_raw(x[:, -1]))
    proto = to_onnx(model)
    check_parity(proto, reference_outputs(model, x), x)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.isfinite(session.run(None, {"features": x})[0]).all()
    for bad in ({"variance_loss": "huber"}, {"drop_features": ("nope",)}, {"smearing": "median"}):
        with pytest.raises(ConfigError):
            make_forecaster("gbm", **{**TINY["gbm"], **bad}).fit_panel(trains)


def test_conditional_smearing_follows_the_dispersion_of_new_assets(panel):
    """The conditional smearing factor is fitted on residuals of boosters that never saw the row's asset and
    depends on the row: an asset made jumpier (5% of days with 30x the RV) gets a larger factor than the
    calm ones, where the global factor is one number for all."""
    rng = np.random.default_rng(3)
    trains = {}
    for asset, daily in panel.items():
        daily = daily.iloc[:700].copy()
        if asset == "syn_d":
            jumps = rng.random(len(daily)) < 0.05
            daily.loc[jumps, "rv"] *= 30.0
        trains[asset] = daily
    params = {**TINY["gbm"], "smearing": "conditional", "smearing_min_samples_leaf": 200, "tail_folds": 4}
    model = make_forecaster("gbm", **params).fit_panel(trains)
    factor = {asset: np.median(model._log_smearing(model._inputs(feature_frame(d).dropna().iloc[-300:])))
              for asset, d in trains.items()}
    calm = max(v for a, v in factor.items() if a != "syn_d")
    assert factor["syn_d"] > calm
    assert np.ptp(list(factor.values())) > 0.05


def test_tail_features_describe_the_asset_not_its_level(panel):
    """level_gap >= 0 (Jensen), and a jumpier series has a larger level gap and log-RV dispersion."""
    daily = panel["syn_a"].copy()
    calm = feature_frame(daily)
    rng = np.random.default_rng(0)
    jumps = rng.random(len(daily)) < 0.05
    daily.loc[jumps, "rv"] *= 30.0
    daily.loc[jumps, "bv"] *= 2.0
    jumpy = feature_frame(daily)
    rows = slice(100, None)
    assert (calm["level_gap"].iloc[rows] >= -1e-12).all()
    for name in ("level_gap", "rv_disp", "jump_freq"):
        assert jumpy[name].iloc[rows].mean() > calm[name].iloc[rows].mean()


def test_asset_weights_give_every_asset_the_same_total():
    from volmargin.models.gbm import GBMForecaster

    groups = np.array(["btc"] * 30 + ["new"] * 3 + ["alt"] * 7)
    weight = GBMForecaster(weight_assets=True)._row_weights(groups)
    totals = [weight[groups == g].sum() for g in ("btc", "new", "alt")]
    np.testing.assert_allclose(totals, totals[0])
    assert weight.mean() == pytest.approx(1.0)
    assert GBMForecaster()._row_weights(groups) is None


def test_tree_thresholds_are_float32_and_decide_as_before(panel):
    """Every split threshold of every booster is a float32 value (so ONNX's float32 thresholds are exact),
    and the rounding changes no decision for float32 inputs: predictions equal a refit without it."""
    from lightgbm import LGBMRegressor

    from volmargin.models.gbm import float32_splits

    trains = {asset: daily.iloc[:450] for asset, daily in panel.items()}
    model = make_forecaster("gbm", **TINY["gbm"]).fit_panel(trains)
    boosters = [model.variance_model_, model.smearing_model_, *model.quantile_models_["long"]]
    for booster in boosters:
        for tree in booster.booster_.dump_model()["tree_info"]:
            stack = [tree["tree_structure"]]
            while stack:
                node = stack.pop()
                if "threshold" in node:
                    assert np.float64(np.float32(node["threshold"])) == node["threshold"]
                    stack += [node["left_child"], node["right_child"]]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 4)).astype(np.float32)
    y = x[:, 0] + 0.1 * rng.normal(size=2000)
    plain = LGBMRegressor(n_estimators=20, verbose=-1, deterministic=True, n_jobs=1).fit(x, y)
    before = plain.predict(x)
    np.testing.assert_array_equal(float32_splits(plain).predict(x), before)


def test_tail_calibration_scales_each_tail_to_its_out_of_fold_coverage(panel):
    """With `tail_calibration`, each tail booster predicts its uncalibrated quantile times a factor >= 1 set
    on held-out asset groups, and the exported graph still reproduces the model."""
    from volmargin.export import check_parity, parity_inputs, reference_outputs, to_onnx

    trains = {asset: daily.iloc[:450] for asset, daily in panel.items()}
    params = {**TINY["gbm"], "tail_folds": 2}
    plain = make_forecaster("gbm", **params, tail_calibration=False).fit_panel(trains)
    calibrated = make_forecaster("gbm", **params, tail_calibration=True).fit_panel(trains)
    x = parity_inputs(calibrated, panel, rows=256)[:, -1]
    for side in ("long", "short"):
        factors = calibrated.tail_factors_[side]
        assert all(f >= 1.0 for f in factors) and max(factors) > 1.0  # tiny trees on 450 days: too thin out of fold
        for j, factor in enumerate(factors):
            np.testing.assert_allclose(calibrated.quantile_models_[side][j].predict(x),
                                       factor * plain.quantile_models_[side][j].predict(x), rtol=1e-9, atol=1e-12)
    check_parity(to_onnx(calibrated), reference_outputs(calibrated, parity_inputs(calibrated, panel, rows=256)),
                 parity_inputs(calibrated, panel, rows=256))


def test_out_of_time_calibration_fits_only_rows_known_by_the_cut(panel, monkeypatch):
    """With `tail_calibration_days`, every booster fitted for the calibration (variance, smearing, tails) sees
    only rows whose target is known by the cut, the factors are >= 1 and scale the boosters, and a refit
    repeats exactly."""
    import volmargin.models.gbm as gbm

    days, fitted_rows, calibrating = 60, [], []
    plain_calibrate = gbm.GBMForecaster._calibrate_tails

    def calibrate(self, x, y, r_std, losses, groups, dates, weight):
        cut = dates.max() - pd.Timedelta(days=days)
        late = np.asarray(dates + pd.Timedelta(days=self.horizon_) > cut)
        calibrating.append({row.tobytes() for row in x[late]})
        try:
            return plain_calibrate(self, x, y, r_std, losses, groups, dates, weight)
        finally:
            calibrating.append(None)

    def spy(method):
        plain = getattr(gbm.GBMForecaster, method)

        def wrapped(self, x, *args, **kwargs):
            if calibrating and calibrating[-1] is not None:
                fitted_rows.append(len(calibrating[-1] & {row.tobytes() for row in x}))
            return plain(self, x, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(gbm.GBMForecaster, "_calibrate_tails", calibrate)
    for method in ("_variance_booster", "_smearing_fit", "_quantile_fit"):
        monkeypatch.setattr(gbm.GBMForecaster, method, spy(method))
    trains = {asset: daily.iloc[:450] for asset, daily in panel.items()}
    params = {**TINY["gbm"], "tail_folds": 2, "tail_calibration_days": days, "smearing_min_samples_leaf": 100}
    model = make_forecaster("gbm", **params).fit_panel(trains)
    assert len(fitted_rows) == 2 + 1 + 2 * 2 * len(LEVELS)  # 2 fold variance boosters, smearing, fold x side x level
    assert fitted_rows == [0] * len(fitted_rows)  # not one row from after the cut
    assert all(f >= 1.0 for side in ("long", "short") for f in model.tail_factors_[side])
    plain = make_forecaster("gbm", **{**params, "tail_calibration": False}).fit_panel(trains)
    again = make_forecaster("gbm", **params).fit_panel(trains)
    x = np.random.default_rng(0).normal(size=(64, len(model.feature_names_))).astype(np.float32)
    for j, factor in enumerate(model.tail_factors_["long"]):
        np.testing.assert_allclose(model.quantile_models_["long"][j].predict(x),
                                   factor * plain.quantile_models_["long"][j].predict(x), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(model.predict_raw(x), again.predict_raw(x))
    with pytest.raises(ConfigError, match="tail_calibration_days"):
        make_forecaster("gbm", **{**params, "tail_calibration_days": 5000}).fit_panel(trains)


def test_out_of_time_factor_is_the_level_quantile_of_the_later_held_out_ratios(monkeypatch):
    """On a toy set, the factor is the level quantile of loss / quantile forecast over the rows after the cut
    of each held-out asset group (floored at 1), whatever the rows before it hold."""
    import volmargin.models.gbm as gbm

    class Constant:
        def __init__(self, value):
            self.value = value

        def predict(self, x):
            return np.full(len(x), self.value)

    assets, days, cut_days = 4, 100, 30
    dates = pd.DatetimeIndex(np.tile(pd.date_range("2021-01-01", periods=days, tz="UTC"), assets))
    groups = np.repeat([f"a{i}" for i in range(assets)], days)
    late = np.asarray(dates > dates.max() - pd.Timedelta(days=cut_days))
    rng = np.random.default_rng(3)
    long = np.where(late, rng.exponential(1.0, len(dates)), 50.0)  # a leak of early rows would show
    losses = {"long": long, "short": np.where(late, 0.1, 50.0)}
    x = dates.asi8.reshape(-1, 1).astype(float)
    seen = []

    def quantile_fit(self, x_fit, loss, level, weight=None):
        seen.append(x_fit.max())
        return Constant(0.5)

    model = gbm.GBMForecaster(tail_folds=2, tail_calibration_days=cut_days)
    model.levels_, model.horizon_ = (0.99,), 1
    model.quantile_models_ = {"long": [Constant(0.5)], "short": [Constant(0.5)]}
    monkeypatch.setattr(gbm.GBMForecaster, "_quantile_fit", quantile_fit)
    monkeypatch.setattr(gbm.GBMForecaster, "_standardized_losses", lambda self, *args, **kwargs: (losses, None))
    monkeypatch.setattr(gbm, "scaled_leaves", lambda regressor, factor: regressor)
    factors = model._calibrate_tails(x, np.zeros(len(x)), np.zeros(len(x)), losses, groups, dates, None)
    assert factors["long"] == [pytest.approx(np.quantile(long[late] / 0.5, 0.99))]
    assert factors["short"] == [1.0]  # 0.1 / 0.5 < 1: never narrowed
    cut = (dates.max() - pd.Timedelta(days=cut_days + 1)).value
    assert len(seen) == 4 and max(seen) <= cut


def test_tail_boosters_do_not_read_the_tail_drop_features(panel):
    """`tail_drop_features` keep the tail boosters off those features (the variance booster still reads them),
    and an unknown name is refused."""
    trains = {asset: daily.iloc[:450] for asset, daily in panel.items()}
    params = {**TINY["gbm"], "tail_min_samples_leaf": 50, "tail_calibration": False}
    names = ("ret_d", "ret_w")

    def split_on(booster, model) -> set[str]:
        counts = booster.booster_.feature_importance(importance_type="split")
        return {name for name, count in zip(model.feature_names_, counts) if count > 0}

    plain = make_forecaster("gbm", **params).fit_panel(trains)
    blind = make_forecaster("gbm", **params, tail_drop_features=names).fit_panel(trains)
    tails = [booster for side in ("long", "short") for booster in blind.quantile_models_[side]]
    assert set(names) & set().union(*(split_on(b, plain) for side in ("long", "short")
                                      for b in plain.quantile_models_[side]))  # they would be read
    assert not set(names) & set().union(*(split_on(b, blind) for b in tails))
    assert set(names) & split_on(blind.variance_model_, blind)
    with pytest.raises(ConfigError, match="tail_drop_features"):
        make_forecaster("gbm", **{**TINY["gbm"], "tail_drop_features": ("nope",)}).fit_panel(trains)


def test_monotone_features_only_raise_the_variance_forecast(panel):
    """`monotone` makes the variance booster non-decreasing in the named features (every other input held,
    on random rows); the plain booster is not; an unknown name is refused."""
    trains = {asset: daily.iloc[:450] for asset, daily in panel.items()}
    params = {**TINY["gbm"], "min_samples_leaf": 20, "tail_calibration": False}
    names = ("rv_d", "rv_w", "rv_m")

    def falls(model) -> int:
        """(row, feature) probes along which the variance booster's prediction falls somewhere."""
        x = np.random.default_rng(0).standard_normal((200, len(model.feature_names_))).astype(np.float32)
        count = 0
        for name in names:
            column, steps = model.feature_names_.index(name), []
            for value in np.linspace(-4, 4, 33, dtype=np.float32):
                x[:, column] = value
                steps.append(model.variance_model_.predict(x))
            count += int((np.diff(steps, axis=0) < 0).any(axis=0).sum())
        return count

    assert falls(make_forecaster("gbm", **params).fit_panel(trains)) > 0
    assert falls(make_forecaster("gbm", **params, monotone=names).fit_panel(trains)) == 0
    with pytest.raises(ConfigError, match="monotone"):
        make_forecaster("gbm", **{**TINY["gbm"], "monotone": ("nope",)}).fit_panel(trains)


def test_variance_num_leaves_reaches_the_variance_booster_only(panel):
    """`variance_num_leaves` bounds the variance booster's trees; the tail and smearing boosters keep
    `num_leaves`."""
    trains = {asset: daily.iloc[:450] for asset, daily in panel.items()}
    params = {**TINY["gbm"], "tail_min_samples_leaf": 50, "smearing_min_samples_leaf": 50, "tail_calibration": False}

    def most_leaves(booster) -> int:
        return max(tree["num_leaves"] for tree in booster.booster_.dump_model()["tree_info"])

    model = make_forecaster("gbm", **params, variance_num_leaves=3).fit_panel(trains)
    assert most_leaves(model.variance_model_) == 3
    others = [model.smearing_model_, *(b for side in ("long", "short") for b in model.quantile_models_[side])]
    assert max(most_leaves(b) for b in others) > 3
    assert all(b.get_params()["num_leaves"] == 15 for b in others)
    assert most_leaves(make_forecaster("gbm", **params).fit_panel(trains).variance_model_) > 3


def test_blend_averages_the_variances_keeps_the_gbm_tails_and_exports_with_parity(panel):
    """The blend's members are the models their parameters fit on their own; its variance is (1 - s)(w f_gbm +
    (1 - w) f_nn) + s x the mean RV of the complete days among the last long_days (s = long_share; 0 leaves the
    two-member blend), its VaR and ES the GBM's scaled with the blended volatility; its graph (the GRU fed the
    GBM-standardized window mapped to its own statistics, the long-run level its last column) reproduces
    `predict_raw`, which equals the forecasts; a weight outside [0, 1], a long_share outside [0, 1) or levels
    set on a member are refused, and a refit refits both."""
    from volmargin.export import check_parity, parity_inputs, reference_outputs, standardized_windows, to_onnx
    from volmargin.models.blend import BlendForecaster

    trains = {asset: daily.iloc[:450] for asset, daily in panel.items()}
    gbm, nn = (make_forecaster(name, **TINY[name]).fit_panel(trains) for name in ("gbm", "nn"))
    blend = make_forecaster("blend", weight=0.6, gbm=TINY["gbm"], nn=TINY["nn"]).fit_panel(trains)
    daily = panel["syn_a"]
    origins = daily.index[460:520]
    one, tree, net = (m.forecast(daily, origins, LEVELS) for m in (blend, gbm, nn))
    assert (blend.long_share, blend.long_days) == (0.075, 121)  # the defaults, chosen on unseen-asset folds
    long = daily["rv"].where(daily["complete"]).rolling(121, min_periods=1).mean().loc[origins].to_numpy()
    np.testing.assert_allclose(one.variance, 0.925 * (0.6 * tree.variance + 0.4 * net.variance) + 0.075 * long,
                               rtol=1e-7)  # the level column is read in float32, as the graph reads it
    two = BlendForecaster.from_members(gbm, nn, 0.6, long_share=0.0).forecast(daily, origins, LEVELS)
    np.testing.assert_allclose(two.variance, 0.6 * tree.variance + 0.4 * net.variance, rtol=1e-12)
    scale = np.sqrt(one.variance / tree.variance)[:, None]
    for side in ("long", "short"):
        np.testing.assert_allclose(one.var[side], tree.var[side] * scale, rtol=1e-12)
        np.testing.assert_allclose(one.es[side], tree.es[side] * scale, rtol=1e-12)
    assert not np.allclose(one.variance, tree.variance)
    same = BlendForecaster.from_members(gbm, nn, 0.6).forecast(daily, origins, LEVELS)
    np.testing.assert_array_equal(same.variance, one.variance)
    x = parity_inputs(blend, panel, rows=256)
    check_parity(to_onnx(blend), reference_outputs(blend, x), x)
    windows = standardized_windows(blend, daily.iloc[:520])[-len(origins):]  # those ending at the origins
    raw_variance = np.exp(blend.predict_raw(windows)[:, 0] + np.log(tree.variance) - blend.gbm_.predict_raw(
        windows[:, -1, :-1])[:, 0])
    np.testing.assert_allclose(raw_variance, one.variance, rtol=1e-5)  # the graph's arithmetic is the forecast's
    weights = blend.nn_.network_.encoder.weight_hh_l0.detach().clone()
    blend.fit_panel({asset: d.iloc[:480] for asset, d in panel.items()})  # warm refit of the GRU member
    assert not torch.equal(weights, blend.nn_.network_.encoder.weight_hh_l0)
    with pytest.raises(ConfigError, match="weight"):
        make_forecaster("blend", weight=1.5, gbm=TINY["gbm"], nn=TINY["nn"]).fit_panel(trains)
    with pytest.raises(ConfigError, match="long_share"):
        make_forecaster("blend", long_share=1.0, gbm=TINY["gbm"], nn=TINY["nn"]).fit_panel(trains)
    with pytest.raises(ConfigError, match="levels"):
        make_forecaster("blend", gbm={**TINY["gbm"], "levels": (0.99,)}, nn=TINY["nn"]).fit_panel(trains)


def test_a_blend_of_weight_one_is_the_gbm_mixed_with_the_level_and_exports_without_a_network(panel):
    """Weight 1 (the GBM config): no GRU is fitted or put in the graph; the variance is (1 - s) f_gbm + s x the
    mean RV of the complete days among the last long_days, the tails the GBM's scaled with it, the graph has
    parity with `predict_raw`, and a fitted blend equals the one made from the same GBM member."""
    from volmargin.export import check_parity, parity_inputs, reference_outputs, to_onnx
    from volmargin.models.blend import BlendForecaster

    trains = {asset: daily.iloc[:450] for asset, daily in panel.items()}
    gbm = make_forecaster("gbm", **TINY["gbm"]).fit_panel(trains)
    alone = make_forecaster("blend", weight=1.0, long_share=0.1, gbm=TINY["gbm"]).fit_panel(trains)
    assert alone.nn_ is None and alone.window == 1
    daily = panel["syn_a"]
    origins = daily.index[460:520]
    one, tree = alone.forecast(daily, origins, LEVELS), gbm.forecast(daily, origins, LEVELS)
    long = daily["rv"].where(daily["complete"]).rolling(121, min_periods=1).mean().loc[origins].to_numpy()
    np.testing.assert_allclose(one.variance, 0.9 * tree.variance + 0.1 * long, rtol=1e-7)
    for side in ("long", "short"):
        np.testing.assert_allclose(one.var[side], tree.var[side] * np.sqrt(one.variance / tree.variance)[:, None],
                                   rtol=1e-12)
    made = BlendForecaster.from_members(gbm, None, 1.0, long_share=0.1).forecast(daily, origins, LEVELS)
    np.testing.assert_array_equal(made.variance, one.variance)
    proto = to_onnx(alone)
    assert not any(node.name.startswith("n_") or node.output[0].startswith("n_") for node in proto.graph.node)
    x = parity_inputs(alone, panel, rows=256)
    check_parity(proto, reference_outputs(alone, x), x)
    with pytest.raises(ConfigError, match="nn member"):
        BlendForecaster.from_members(gbm, None, 0.7)


def test_a_blend_of_weight_one_needs_no_network_in_a_run_or_a_backtest(panel):
    """A run config with a weight-1 blend and no GRU loads (the blend takes the run's gbm parameters); the
    backtest then combines the blend from the gbm's forecasts alone, equal to a blend walked forward on its own.
    A blend with a GRU part still needs the GRU's parameters."""
    from volmargin.config import RunConfig
    from volmargin.evaluation.backtest import BacktestConfig, derived_blend, run_backtest

    run = RunConfig(learned={"gbm": TINY["gbm"], "blend": {"weight": 1.0, "long_share": 0.1}})
    assert run.learned["blend"] == {"weight": 1.0, "long_share": 0.1, "gbm": TINY["gbm"], "levels": (0.975, 0.99)}
    with pytest.raises(ConfigError, match="nn member"):
        RunConfig(learned={"gbm": TINY["gbm"], "blend": {"weight": 0.9}})
    params = {"gbm": TINY["gbm"], "blend": run.learned["blend"]}
    config = BacktestConfig(models=("gbm", "blend"), split=_split(panel), levels=LEVELS, model_params=params)
    assert derived_blend(config, ["gbm", "blend"]) == "blend"
    table, timings = run_backtest(panel, config, progress=False)
    walked = panel_historical_forecasts(panel, lambda: make_forecaster("blend", **params["blend"]), _split(panel), LEVELS)
    rows = table[table["model"] == "blend"]
    assert set(timings["model"]) == {"gbm", "blend"} and len(rows) == sum(len(f) for f in walked.values())
    for asset, frame in walked.items():
        got = rows[rows["asset"] == asset].set_index("origin")[_forecast_columns(frame)]
        np.testing.assert_allclose(got.to_numpy(), frame.set_index("origin")[got.columns].to_numpy(), rtol=1e-12)


def test_a_backtest_combines_the_blend_from_its_members_as_a_fitted_blend_would_forecast(panel):
    """With the run's own gbm and nn as its members, the backtest combines their forecasts instead of refitting
    both again; the rows equal a blend walked forward on its own. Members of other parameters: fitted."""
    from volmargin.evaluation.backtest import BacktestConfig, derived_blend, run_backtest

    blend = {"gbm": TINY["gbm"], "nn": TINY["nn"], "weight": 0.6}
    params = {"gbm": TINY["gbm"], "nn": TINY["nn"], "blend": blend}
    config = BacktestConfig(models=("gbm", "nn", "blend"), split=_split(panel), levels=LEVELS, model_params=params)
    assert derived_blend(config, ["gbm", "nn", "blend"]) == "blend"
    other = BacktestConfig(models=config.models, split=config.split, levels=LEVELS,
                           model_params={**params, "blend": {**blend, "gbm": {**TINY["gbm"], "n_estimators": 10}}})
    assert derived_blend(other, ["gbm", "nn", "blend"]) is None
    table, timings = run_backtest(panel, config, progress=False)
    walked = panel_historical_forecasts(panel, lambda: make_forecaster("blend", **blend), _split(panel), LEVELS)
    rows = table[table["model"] == "blend"]
    assert set(timings["model"]) == {"gbm", "nn", "blend"} and len(rows) == sum(len(f) for f in walked.values())
    for asset, frame in walked.items():
        got = rows[rows["asset"] == asset].set_index("origin")[_forecast_columns(frame)]
        np.testing.assert_allclose(got.to_numpy(), frame.set_index("origin")[got.columns].to_numpy(), rtol=1e-12)


@pytest.mark.parametrize("levels", [(0.3,), (0.5,), (1.0,), (0.99, 0.99), (0.99, 0.975), ()])
def test_check_levels_refuses_levels_outside_half_to_one_unsorted_or_repeated(levels):
    with pytest.raises(ConfigError, match="levels"):
        check_levels(levels)


def test_check_levels_keeps_good_levels_and_require_levels_refuses_others():
    assert check_levels((0.975, 0.99)) == (0.975, 0.99)
    require_levels((0.975, 0.99), (0.975, 0.99))
    with pytest.raises(ConfigError, match="trained levels"):
        require_levels((0.975, 0.99), (0.99,))


def test_targets_at_h_days_are_relative_to_h_times_the_level():
    """Constant daily RV v and return m, level log v: the 3-day RV is 3v, so y_var = 0 and r_std = 3m / sqrt(3v)."""
    index = pd.date_range("2024-01-01", periods=10, freq="D", tz="UTC")
    v, m = 1e-4, 0.01
    daily = pd.DataFrame({"rv": v, "ret": m, "complete": True}, index=index)
    targets = target_frame(daily, pd.Series(np.log(v), index=index), 3).dropna()
    assert len(targets) == 7
    np.testing.assert_allclose(targets["y_var"], 0.0, atol=1e-12)
    np.testing.assert_allclose(targets["r_std"], 3 * m / np.sqrt(3 * v), rtol=1e-12)
