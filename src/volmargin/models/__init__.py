"""Forecasters: one interface (fit -> self, forecast -> Forecast) for baselines and learned models."""

from collections.abc import Callable
from functools import partial
from importlib import import_module

from volmargin.errors import ConfigError
from volmargin.models.base import SIDES, Forecast, Forecaster, GlobalForecaster, level_tag
from volmargin.models.garch import Garch
from volmargin.models.har import HAR
from volmargin.models.scale import EWMA, FilteredHistoricalSimulation, HistoricalVolatility

BASELINES = ("hist", "ewma", "garch", "gjr", "har", "fhs")
_FACTORIES: dict[str, Callable[..., Forecaster]] = {
    "hist": HistoricalVolatility,
    "ewma": EWMA,
    "garch": partial(Garch, o=0),
    "gjr": partial(Garch, o=1),
    "har": HAR,
    "fhs": FilteredHistoricalSimulation,
}
# learned models import torch / scikit-learn ensembles only when asked for: name -> "module:Class"
_LEARNED = {"nn": "volmargin.models.neural:NeuralForecaster", "gbm": "volmargin.models.gbm:GBMForecaster",
            "blend": "volmargin.models.blend:BlendForecaster"}


def model_names() -> tuple[str, ...]:
    return (*_FACTORIES, *_LEARNED)


def make_forecaster(name: str, **params) -> Forecaster:
    """A fresh forecaster by its short name, as used by the CLI and configs."""
    if name in _FACTORIES:
        factory = _FACTORIES[name]
    elif name in _LEARNED:
        module, cls = _LEARNED[name].split(":")
        factory = getattr(import_module(module), cls)
    else:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(model_names())}")
    try:
        return factory(**params)
    except TypeError as exc:  # an unknown hyper-parameter name
        raise ConfigError(f"model {name!r}: {exc}") from exc


__all__ = [
    "BASELINES", "SIDES", "EWMA", "HAR", "Forecast", "Forecaster", "FilteredHistoricalSimulation",
    "Garch", "GlobalForecaster", "HistoricalVolatility", "level_tag", "make_forecaster", "model_names",
]
