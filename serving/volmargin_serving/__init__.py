"""volmargin_serving: the embedded runtime for volmargin model bundles (numpy + onnxruntime only).

`load`, `Runtime` and `Server` are imported on first use, so the training library can share the feature,
post-processing and margin code (`volmargin_serving.features`, `.bars`, `.outputs`, `.margins`,
`.calibration`) without loading onnxruntime.
"""

from volmargin_serving.errors import (
    BundleError, CalibrationError, ChecksumError, FutureInputError, GapInputError, ImpossibleInputError, InputDtypeError,
    InputError, InputShapeError, IntervalInputError, NonFiniteInputError, SelfTestError, ServingError, SignatureError,
    StaleInputError, UnsortedInputError,
)
from volmargin_serving.margins import Margins
from volmargin_serving.outputs import Forecasts

__all__ = [
    "BundleError", "CalibrationError", "ChecksumError", "Forecasts", "FutureInputError", "GapInputError",
    "ImpossibleInputError", "InputDtypeError", "InputError", "InputShapeError", "IntervalInputError", "Margins",
    "NonFiniteInputError", "Runtime", "SelfTestError", "Server", "ServingError", "SignatureError", "StaleInputError",
    "UnsortedInputError", "load",
]


def __getattr__(name: str):
    if name in ("Runtime", "Server", "load"):
        from volmargin_serving import runtime

        return getattr(runtime, name)
    raise AttributeError(f"module 'volmargin_serving' has no attribute {name!r}")
