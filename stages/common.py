"""Glue shared by the stage entry points: the prologue (params sections, :mod:`corda.params`), logging, errors.

Stages write their declared outputs through :func:`corda.io.staged_outputs`: a failed or interrupted
run (an error, Ctrl-C) leaves the previous outputs untouched.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from typing import Any, Callable

from corda.errors import CordaError, interrupted_message, one_line
from corda.params import check_data_kinds, load_params, section

log = logging.getLogger("stages")


def _flags_take_no_value() -> None:
    """typer's help shows a type for every option, ``--overwrite <bool>`` too, as if a flag took a value.

    Show none for flags (boolean options and --help), and keep typer's display for everything else.
    """
    from typer.core import TyperOption

    show = TyperOption.display_type_rich
    if getattr(show, "_corda_flags", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> Any:
        return None if getattr(self, "is_flag", False) else show(self, ctx)

    display_type_rich._corda_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_take_no_value()


def stage_configs(params: str | os.PathLike, manifest: str | os.PathLike, **sections: type) -> tuple[Any, ...]:
    """The prologue of a stage that reads the data stage's output: its params sections as typed configs (in the
    order given, ``name=ConfigClass``), after checking that the manifest was made for these params."""
    p = load_params(params)
    configs = tuple(section(p, name, cls) for name, cls in sections.items())
    check_data_kinds(p, manifest)
    return configs


def finish_training(trainer: Any, out_live: str | os.PathLike, save: Callable[[], None]) -> None:
    """Rank 0's tail of a training stage: write the model (``save``), the dvclive curves from the trainer's
    history (:meth:`corda.engine.Trainer.write_curves`), and remove the scratch checkpoint."""
    save()
    trainer.write_curves(out_live)
    trainer.discard_scratch()


def stage_main(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a typer command: logging set-up; a CordaError becomes a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from corda.log import setup_logging

        setup_logging(os.environ.get("CORDA_LOG_LEVEL", "INFO"))
        try:
            return fn(*args, **kwargs)
        except CordaError as exc:
            # One line whatever the message holds (a wrapped torch error can span many; a DataLoader
            # worker's error is unwrapped to the line the main process would have printed).
            print("error: " + one_line(exc), file=sys.stderr)
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            print("error: " + interrupted_message(), file=sys.stderr)
            raise SystemExit(130) from None

    return wrapper
