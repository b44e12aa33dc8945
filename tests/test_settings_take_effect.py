"""Settings that change results must take effect (min_bars, the horizon of the blend's long-run level) or be
refused at load (boundaries of levels, min_train_days, learning_rate, the training window)."""
import numpy as np
import pandas as pd
import pytest

from volmargin.config import TrainConfig, WindowConfig
from volmargin.data import synthetic_market
from volmargin.errors import ConfigError
from volmargin.evaluation.backtest import daily_panel
from volmargin.models.blend import BlendForecaster


def test_daily_panel_applies_the_configured_min_bars():
    bars = synthetic_market(n_assets=1, days=40, seed=0)
    asset, frame = next(iter(bars.items()))
    day = frame.index[24 * 10].normalize()
    thinned = frame.drop(frame.index[(frame.index >= day) & (frame.index < day + pd.Timedelta(hours=5))])
    thinned.attrs = frame.attrs  # 19 of 24 bars left on that day
    default = daily_panel({asset: thinned})[asset]
    relaxed = daily_panel({asset: thinned}, 19)[asset]
    assert not default.loc[day, "complete"] and relaxed.loc[day, "complete"]


def test_the_blend_long_run_level_scales_with_the_horizon():
    daily = daily_panel(synthetic_market(n_assets=1, days=400, seed=0))
    history = next(iter(daily.values()))
    blend = BlendForecaster(weight=1.0, long_share=0.1)
    origins = history.index[250:260]
    np.testing.assert_allclose(blend.long_variance(history, origins, 5),
                               5 * blend.long_variance(history, origins, 1), rtol=1e-12)


@pytest.mark.parametrize("params, message", [({"learning_rate": 0.0}, "gbm.learning_rate: 0.0"),
                                             ({"subsample": 0.0}, "gbm.subsample: 0.0")])
def test_zero_rates_are_refused(params, message):
    from volmargin.training import check_learned_params

    with pytest.raises(ConfigError, match=message):
        check_learned_params("gbm", params, "gbm")


def test_the_training_window_must_leave_days_to_evaluate_and_history_to_train():
    from volmargin.training import check_window

    panel = daily_panel(synthetic_market(n_assets=1, days=400, seed=0))  # 2021-01-01 .. 2022-02-04
    last = next(iter(panel.values())).index[-1].strftime("%Y-%m-%d")
    with pytest.raises(ConfigError, match="is not before the data ends"):
        check_window(TrainConfig(window=WindowConfig(train_end=last)), panel)
    with pytest.raises(ConfigError, match="no asset has window.min_train_days"):
        check_window(TrainConfig(window=WindowConfig(train_end="2021-06-30", min_train_days=365)), panel)
    check_window(TrainConfig(window=WindowConfig(train_end="2022-01-31", min_train_days=365)), panel)
