"""Exception types. The CLI turns any VolmarginError into a one-line message and a non-zero exit."""


class VolmarginError(Exception):
    """Base class for errors caused by the user's input or configuration."""


class DataError(VolmarginError, ValueError):
    """Market data that cannot be read or fails validation; the message names the file and row."""


class ConfigError(VolmarginError, ValueError):
    """A bad option or configuration value; the message names the key."""


class OutputError(VolmarginError):
    """An output cannot be written where asked (not a regular file, read-only, locked by another writer),
    or an output read back is incomplete or damaged; the message names the path."""
