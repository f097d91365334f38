"""User-facing errors: the CLI prints their message on one line and exits non-zero, no traceback."""


class NexlifyError(Exception):
    """A problem the user can fix (bad input, missing file, invalid setting). Message says how."""


class ConfigError(NexlifyError, ValueError):
    """An invalid configuration key or value."""


class DataError(NexlifyError, ValueError):
    """Market data that cannot be loaded or fails validation."""


class CheckpointError(NexlifyError):
    """A checkpoint that is missing, corrupt, unsafe or incompatible."""


class ExchangeError(NexlifyError):
    """Downloading from an exchange failed."""
