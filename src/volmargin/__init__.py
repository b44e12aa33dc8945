"""volmargin: volatility and tail-risk forecasts, benchmarks and margin calibration for crypto venues."""

from volmargin.errors import VolmarginError, DataError, ConfigError

__version__ = "0.1.0"
__all__ = ["VolmarginError", "DataError", "ConfigError", "__version__"]
