"""Forecasters: one interface (fit -> self, forecast -> Forecast) for baselines and learned models."""

from functools import partial

from volmargin.errors import ConfigError
from volmargin.models.base import SIDES, Forecast, Forecaster, level_tag
from volmargin.models.garch import Garch
from volmargin.models.har import HAR
from volmargin.models.scale import EWMA, FilteredHistoricalSimulation, HistoricalVolatility

BASELINES = ("hist", "ewma", "garch", "gjr", "har", "fhs")


def make_forecaster(name: str, **params) -> Forecaster:
    """A fresh forecaster by its short name, as used by the CLI and configs."""
    factories = {
        "hist": HistoricalVolatility,
        "ewma": EWMA,
        "garch": partial(Garch, o=0),
        "gjr": partial(Garch, o=1),
        "har": HAR,
        "fhs": FilteredHistoricalSimulation,
    }
    if name not in factories:
        raise ConfigError(f"unknown model {name!r}; choose from {', '.join(factories)}")
    return factories[name](**params)


__all__ = [
    "BASELINES", "SIDES", "EWMA", "HAR", "Forecast", "Forecaster", "FilteredHistoricalSimulation",
    "Garch", "HistoricalVolatility", "level_tag", "make_forecaster",
]
