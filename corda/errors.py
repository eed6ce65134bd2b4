"""One exception type for bad input, so stages can print a one-line error and exit non-zero."""

import os
from typing import Mapping


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


def one_line(exc: BaseException) -> str:
    """The user-facing one-line message of ``exc``, also when a DataLoader worker raised it.

    torch re-raises a worker's exception in the main process as the same type with the message
    "Caught DataError in DataLoader worker process 0. Original Traceback (most recent call last): ...";
    the original message is the end of that traceback text, after ``<module>.<Type>: ``. It is cut out
    so the user reads the same line (file, what is wrong, fix) as with ``workers: 0``.
    """
    text = str(exc)
    if text.startswith("Caught ") and "Original Traceback" in text:
        t = type(exc)
        for prefix in (f"{t.__module__}.{t.__qualname__}: ", f"{t.__qualname__}: "):
            at = text.rfind("\n" + prefix)
            if at >= 0:
                text = text[at + 1 + len(prefix):]
                break
    return " ".join(text.split())


def interrupted_message(environ: Mapping[str, str] | None = None) -> str:
    """The line a stage prints when interrupted (Ctrl-C), true to how it was started.

    Run by itself, a stage keeps its previous outputs (:func:`corda.io.staged_outputs`). Run by DVC (``dvc repro``,
    ``dvc exp run``; DVC sets ``DVC_STAGE`` for the command), DVC removed the stage's outputs before starting it,
    and ``dvc checkout <stage>`` brings back those dvc.lock records from DVC's cache.
    """
    stage = (os.environ if environ is None else environ).get("DVC_STAGE")
    if stage:
        return (f"interrupted; DVC removed the outputs of stage {stage} before running it: `dvc checkout {stage}` "
                "brings back those of its last completed run (dvc.lock), `dvc repro` finishes this one")
    return "interrupted; the previous outputs of this stage are unchanged (re-run it to finish)"
