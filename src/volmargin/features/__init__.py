"""Features and targets: information up to day t (X) and the h days after it (y)."""

from volmargin.features.realized import MEASURES, daily_measures, horizon_targets

__all__ = ["MEASURES", "daily_measures", "horizon_targets"]
