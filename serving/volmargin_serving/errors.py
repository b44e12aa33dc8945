"""Errors of the serving runtime: one class per failure a margin service must tell apart."""


class ServingError(Exception):
    """Base class of every error the runtime raises on purpose."""


class BundleError(ServingError):
    """The bundle folder is unusable: missing file, unknown schema, malformed manifest."""


class ChecksumError(BundleError):
    """A bundle file's SHA-256 differs from its manifest: the bundle was altered or damaged."""


class SignatureError(ChecksumError):
    """The bundle's or calibration set's HMAC signature is missing or does not verify with the service's key."""


class SelfTestError(BundleError):
    """The bundle's golden inputs no longer give its golden outputs on this machine."""


class InputError(ServingError, ValueError):
    """Bad input to a forecast call; subclasses name the kind."""


class InputShapeError(InputError):
    """Wrong number of dimensions, columns or rows (e.g. less history than the model's window needs)."""


class InputDtypeError(InputError):
    """Values that are not floating point, or dates that are not datetime64."""


class NonFiniteInputError(InputError):
    """NaN or infinite values."""


class UnsortedInputError(InputError):
    """Dates not strictly increasing (unsorted or duplicated rows)."""


class StaleInputError(InputError):
    """The newest row is older than the freshness limit allows."""


class ImpossibleInputError(InputError):
    """Values no market produces: a negative variance measure or volume, high < low, a `complete` flag
    that is not 0/1, a non-positive price."""


class FutureInputError(InputError):
    """Rows dated after `as_of`: data from a day that has not happened yet."""


class GapInputError(InputError):
    """Missing days inside the window the model reads (a feed that skipped a day)."""


class IntervalInputError(InputError):
    """Intraday bars of an interval the model cannot read: coarser than the bars it learned from, or not
    dividing them (finer bars that divide them are aggregated)."""


class CalibrationError(BundleError):
    """The calibration set is unusable: altered, built from another bundle, or breaking a sanity rule;
    the message names the asset, side and field at fault."""
