"""The one logging and progress setup shared by every stage."""

from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def setup_logging(level: str = "INFO") -> None:
    """Rich output in a terminal; plain timestamped lines when stderr is not a TTY (dvc repro logs, CI)."""
    root = logging.getLogger()
    root.handlers.clear()
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, rich_tracebacks=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "working") -> Iterator[T]:
    """A progress bar with ETA in a terminal; in a log, a line every ~10% with rate and ETA."""
    total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    if sys.stderr.isatty():
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TextColumn("ETA"), TimeRemainingColumn(), transient=False) as bar:
            task = bar.add_task(desc, total=total)
            for item in iterable:
                yield item
                bar.advance(task)
        return
    log = logging.getLogger("corda.progress")
    start = time.perf_counter()
    every = max(1, (total or 100) // 10)
    n = 0
    for item in iterable:
        yield item
        n += 1
        if n % every == 0 or n == total:
            el = time.perf_counter() - start
            rate = n / el if el > 0 else float("inf")
            eta = (total - n) / rate if total and rate > 0 else 0.0
            log.info("%s: %d/%s (%.1f/s, elapsed %.0fs, ETA %.0fs)", desc, n, total or "?", rate, el, eta)
