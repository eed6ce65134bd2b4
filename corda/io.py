"""File I/O with clear errors and atomic writes.

Every output is written to a temporary name in the destination folder and renamed into place
when complete (``os.replace`` is atomic on POSIX), so a killed stage never leaves a file that looks
finished. A stage writes its whole set of outputs through :func:`staged_outputs`, so a failed or
interrupted run leaves the previous run's outputs exactly as they were. Readers raise :class:`corda.errors.DataError` naming the file and the fix.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from corda.errors import CordaError, DataError


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # another user's process (or no pid at all): leave its file alone
    return True


#: A :func:`temp_beside` name: ``.<name>.tmp-<pid>-<8 hex><suffix>``.
_TEMP_NAME = re.compile(r"^\..+\.tmp-(\d+)-[0-9a-f]{8}(\.\w+)?$")
#: (pid, folder) pairs this process has swept (:func:`temp_beside` sweeps a folder once per process).
_swept: set[tuple[int, str]] = set()


def remove_dead_temporaries(folder: str | os.PathLike) -> None:
    """Remove the :func:`temp_beside` temporaries in ``folder`` whose writer process is gone (killed outright)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    with os.scandir(folder) as entries:
        for e in entries:
            m = _TEMP_NAME.match(e.name)
            if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
                _remove(Path(e.path))


def temp_beside(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """Create an empty temporary file for ``path`` in its folder and return its name (the one temporary name).

    The name is ``.<name>.tmp-<pid>-<random><suffix>``: hidden (the dataset indexes skip it), on the same file
    system (so ``os.replace`` onto ``path`` is atomic), and naming its writer: the first write into a folder in a
    process removes the temporaries there whose writer was killed outright (SIGKILL), once per folder, so a
    stage writing thousands of files lists each folder once. The file is created with mode ``0o666`` less the
    umask, as ``open()`` would create ``path`` itself (``tempfile.mkstemp`` gives 0600: files colleagues
    could not read).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = (os.getpid(), os.path.abspath(path.parent))
    if key not in _swept:
        remove_dead_temporaries(path.parent)
        _swept.add(key)
    while True:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (:func:`temp_beside`); rename it onto ``path`` only if the block
    succeeds.

    On any exception (including a full disk) the temporary file is removed and the error is
    re-raised as a one-line :class:`CordaError` for OSError, leaving no partial output behind.
    """
    path = Path(path)
    tmp_path = temp_beside(path, suffix or ".tmp")
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise CordaError(f"{path}: could not write ({exc.strerror or exc}); check free disk space and permissions") from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _siblings(path: Path, tag: str) -> list[Path]:
    """Hidden leftovers ``.<name>.<tag>-*`` beside ``path`` (from a run killed by SIGKILL/SIGTERM)."""
    if not path.parent.is_dir():
        return []
    return sorted(path.parent.glob(f".{glob.escape(path.name)}.{tag}-*"))


def _staging_leftovers(path: Path) -> list[Path]:
    """What a killed run left of ``path``'s staging: the staging file or folder ``.<name>.staging-<pid>``, and
    the temporary a writer was filling for a staging file (``..<name>.staging-<pid>.tmp-*``, :func:`temp_beside`
    of the staging path)."""
    return [*_siblings(path, "staging"), *_siblings(path.with_name(f".{path.name}"), "staging")]


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Block SIGINT/SIGTERM for the few renames of a swap, so Ctrl-C cannot land between them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def staged_outputs(*paths: str | os.PathLike, enabled: bool = True) -> Iterator[dict[Path, Path]]:
    """Write a stage's outputs (files or folders) beside them, and swap them in only when all are complete.

    Yields ``{final path: staging path}``; the block writes each output to its staging path
    (``.<name>.staging-<pid>``, a hidden sibling on the same file system). When the block completes,
    every final path is replaced by its staging path (old one renamed aside, new one renamed in, old
    one removed); a final path whose staging path was not written is removed, as a successful run
    defines the whole set. On any exception, KeyboardInterrupt (Ctrl-C) included, only the staging
    paths are removed: the previous outputs stay exactly as they were. A run killed outright
    (SIGKILL) leaves hidden staging paths and its writers' temporaries, removed by the next run; one killed
    inside the swap (signals are blocked there) is put right by the next run, which restores an output renamed
    aside.

    ``enabled=False`` (ranks other than 0, which write nothing) yields the identity mapping.
    """
    finals = [Path(p) for p in paths]
    if not enabled:
        yield {p: p for p in finals}
        return
    for p in finals:
        for old in _siblings(p, "old"):
            if not p.exists() and not p.is_symlink():
                os.replace(old, p)  # a swap was cut short: the previous output comes back
            else:
                _remove(old)
        for stale in _staging_leftovers(p):
            _remove(stale)
        remove_dead_temporaries(p.parent)
        p.parent.mkdir(parents=True, exist_ok=True)
    staged = {p: p.with_name(f".{p.name}.staging-{os.getpid()}") for p in finals}
    try:
        yield staged
    except BaseException:
        for tmp in staged.values():
            _remove(tmp)
        raise
    with _signals_deferred():
        aside = []
        for final, tmp in staged.items():
            if final.exists() or final.is_symlink():
                old = final.with_name(f".{final.name}.old-{os.getpid()}")
                os.replace(final, old)
                aside.append(old)
            if tmp.exists():
                os.replace(tmp, final)
        for old in aside:
            _remove(old)


def save_torch(obj: object, path: str | os.PathLike) -> None:
    """``torch.save(obj)`` to ``path`` atomically, with bytes that depend on ``obj`` only.

    Saved through a file object: torch names the zip records after the file it writes to, so saving to the
    random temporary name would make every artefact's hash differ between identical runs.
    """
    import torch

    with atomic_path(path, suffix=".pt") as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON (stable bytes for DVC hashing)."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode())


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 (H, W) / (H, W, 3) or uint16 (H, W) array as PNG, atomically."""
    if array.dtype == np.uint16:
        img = Image.fromarray(array)  # mode I;16
    elif array.dtype == np.uint8:
        img = Image.fromarray(array)
    else:
        raise TypeError(f"write_png: unsupported dtype {array.dtype} for {path}")
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp, format="PNG", compress_level=1)


def read_image(path: str | os.PathLike, mode: str | None = "RGB", fix: str | None = None) -> np.ndarray:
    """Read an image file into a numpy array; a missing/corrupt/truncated file raises DataError.

    Args:
        mode: PIL mode to convert to ("RGB", "L"), or None to keep the stored mode (16-bit PNGs
            stay uint16).
        fix: what the error tells the user to do with a corrupt file; default: :func:`corrupt_file_fix`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the dataset root and that the split is complete")
    try:
        with Image.open(path) as img:
            img.load()
            if mode is not None and img.mode != mode:
                img = img.convert(mode)
            arr = np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: corrupt or truncated image ({exc}); {fix or corrupt_file_fix(path)}") from exc
    if arr.dtype == np.int32:  # PIL "I" mode from some 16-bit PNGs
        arr = arr.astype(np.uint16)
    return arr


def corrupt_file_fix(path: str | os.PathLike) -> str:
    """The one fix for a corrupt dataset file: the rendered benchmark is re-rendered, a real dataset re-extracted."""
    if "benchmark" in Path(path).parts:  # data/benchmark/..., the data stage's procedural output
        return "re-render the benchmark: `dvc repro -f data`"
    return "re-extract this file from the dataset's archive"


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc


def file_hash(path: str | os.PathLike, algo: str = "md5") -> str:
    """Hex digest of a file's bytes (records which checkpoint produced an artefact)."""
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def remove_outputs(*paths: str | os.PathLike) -> None:
    """Remove temporaries (e.g. per-rank part files); never used on a stage's previous outputs."""
    for p in paths:
        p = Path(p)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists() or p.is_symlink():
            p.unlink(missing_ok=True)
