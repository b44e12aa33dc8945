"""Margin calibration: forecasts -> a calibrated margin policy, its backtest and its parameter set.

Pure functions on the long forecast table of `volmargin.evaluation.backtest` (no tracking); the one
I/O is `write_parameter_set`, which writes the calibration set a serving runtime loads with its bundle.
"""

from volmargin.calibration.autocalibrate import CALIBRATION_COLUMNS, calibrate, walk_forward_calibration
from volmargin.calibration.backtest import (
    PATH_COLUMNS, STRESS_COLUMNS, STRESS_EVENTS, SUMMARY_COLUMNS, margin_paths, margin_summary, stress_report,
)
from volmargin.calibration.parameters import ParameterRecord, parameter_set, validate_parameters, write_parameter_set
from volmargin.calibration.policy import PolicyConfig, apc_step, haircut, liquidation_threshold, margin_rate

__all__ = [
    "CALIBRATION_COLUMNS", "PATH_COLUMNS", "STRESS_COLUMNS", "STRESS_EVENTS", "SUMMARY_COLUMNS",
    "ParameterRecord", "PolicyConfig", "apc_step", "calibrate", "haircut", "liquidation_threshold",
    "margin_paths", "margin_rate", "margin_summary", "parameter_set", "stress_report",
    "validate_parameters", "walk_forward_calibration", "write_parameter_set",
]
