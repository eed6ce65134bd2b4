import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


# `make test` runs the suite in one pytest-xdist worker per core (PYTEST_XDIST_WORKER is set in each): one torch
# thread per worker then, so the workers do not fight over the cores; two threads in a single process.
THREADS = 1 if os.environ.get("PYTEST_XDIST_WORKER") else 2


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(THREADS)
    yield


@pytest.fixture
def one_thread():
    """One OpenMP thread for the test (tiny convolutions on a shared 2-core machine run far faster so)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def miniature(tmp_path_factory):
    """The miniature real datasets (corda.data.miniature), written once per session: 2 labelled GTA5 frames and
    one without its label, 2 SYNTHIA frames, 2 + 1 Cityscapes train + val items, all at true size. Read-only: copy before
    changing a file."""
    from corda.data.miniature import make_miniature

    return make_miniature(tmp_path_factory.mktemp("miniature"), gta5=2, gta5_unlabelled=1, synthia=2,
                          cityscapes_train=2, cityscapes_val=1)


def copy_repository(dst: Path, params: Path | None = None, extra: dict[str, bytes] | None = None) -> Path:
    """A fresh git repository at ``dst`` holding this checkout's tracked files (``params`` copied over params.yaml,
    ``extra`` files added, dvc.lock removed), with a git-ignored ``.venv/bin/python`` that runs this interpreter, as
    `make install` makes one in a clone: dvc.yaml's commands name .venv/bin/python."""
    import shutil
    import subprocess

    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    if params is not None:
        shutil.copy2(params, dst / "params.yaml")
    for rel, data in (extra or {}).items():
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).write_bytes(data)
    (dst / "dvc.lock").unlink(missing_ok=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "copy"]):
        subprocess.run(git + cmd, cwd=dst, check=True, capture_output=True)
    (dst / ".venv" / "bin").mkdir(parents=True)
    (dst / ".venv" / "bin" / "python").write_text(f"#!/bin/sh\nexec '{sys.executable}' \"$@\"\n")
    (dst / ".venv" / "bin" / "python").chmod(0o755)
    return dst


@pytest.fixture(scope="session")
def repo_copy():
    """:func:`copy_repository`, for module-scoped fixtures that build a pipeline repository."""
    return copy_repository


def invoke_stage(cwd: Path, module: str):
    """Run the stage ``module``'s typer app in-process with ``cwd`` as the working folder (CliRunner); the logging
    handlers and the working folder are restored. Returns the click Result. Tests import it (``from conftest
    import invoke_stage``: pytest puts tests/ on sys.path)."""
    import importlib
    import logging

    from typer.testing import CliRunner

    app = importlib.import_module(module).app
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(app, [], env={"CORDA_LOG_LEVEL": "WARNING"})
    finally:
        os.chdir(old)
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
def spy_interpolate(monkeypatch):
    """Call it to start recording the shape of every ``F.interpolate`` output (the only full-size tensors inference
    makes); returns the list it fills, in call order."""

    def start() -> list[tuple[int, ...]]:
        import torch.nn.functional as F

        shapes, real = [], F.interpolate

        def spy(*args, **kw):
            out = real(*args, **kw)
            shapes.append(tuple(out.shape))
            return out

        monkeypatch.setattr(F, "interpolate", spy)
        return shapes

    return start
