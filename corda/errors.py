"""One exception type for bad input, so stages can print a one-line error and exit non-zero."""


class CordaError(Exception):
    """A user-facing error: the message names the file or key and says how to fix it."""


class ConfigError(CordaError):
    """A params section has an unknown, missing, mistyped or out-of-range key."""


class DataError(CordaError):
    """A dataset file is missing, corrupt, of the wrong shape/dtype, or has invalid content."""
