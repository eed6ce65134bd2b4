"""One exception type for bad input, so stages can print a one-line error and exit non-zero."""


class CordaError(Exception):
    """A user-facing error: the message names the file or key and says how to fix it."""


class ConfigError(CordaError):
    """A params section has an unknown, missing, mistyped or out-of-range key."""


class DataError(CordaError):
    """A dataset file is missing, corrupt, of the wrong shape/dtype, or has invalid content."""


def brief_error(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` on one line, cut to ``limit`` characters.

    torch's load_state_dict errors list every mismatched key over many lines; a stage error must stay
    one line (stages.common.stage_main) with the advice at its end, so only the start is kept.
    """
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
