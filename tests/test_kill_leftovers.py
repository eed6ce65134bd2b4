"""kill -9 inside each kind of writer, then write again: nothing is left behind (corda.io.temp_beside).

Every writer (JSON/PNG through ``atomic_path``, checkpoints through ``save_torch``, HDF5 through
``H5StreamWriter``), writing a stage output through ``staged_outputs`` (a file or a folder) or a file
directly (scratch checkpoints, predict's files, the data-parallel part files), is killed while its
temporary exists; the next run of the same writer must leave only the finished files.
The stages themselves are killed in tests/test_resume_kill.py (slow).
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# argv: kind, out folder, "hang" | "finish". With "hang" the writer stops inside its write (its temporary file
# exists) and prints "inside", for the parent to kill it.
CHILD = r"""
import os, sys, time
from pathlib import Path
import numpy as np
import corda.io as cio
from corda.h5io import H5StreamWriter

kind, out, hang = sys.argv[1], Path(sys.argv[2]), sys.argv[3] == "hang"

def stop():
    print("inside", flush=True)
    time.sleep(120)

if hang:  # the atomic writers stop before their rename, the HDF5 writer after its first row
    _replace = os.replace
    os.replace = lambda *a: (stop(), _replace(*a))
    _append = H5StreamWriter.append
    H5StreamWriter.append = lambda self, *a, **k: (_append(self, *a, **k), stop())

def h5(path):
    with H5StreamWriter(path, 2, {"x": ((4,), np.uint8)}, {"kind": "depth"}) as w:
        w.append("a", x=np.zeros(4))
        w.append("b", x=np.ones(4))

if kind == "json_staged_file":  # a stage's metrics file
    with cio.staged_outputs(out / "m.json") as st:
        cio.write_json(st[out / "m.json"], {"a": 1})
elif kind == "h5_staged_file":  # pseudo/target.h5
    with cio.staged_outputs(out / "target.h5") as st:
        h5(st[out / "target.h5"])
elif kind == "h5_staged_folder":  # depth/{source,target}.h5
    with cio.staged_outputs(out / "depth") as st:
        h5(st[out / "depth"] / "source.h5")
elif kind == "torch_direct":  # the scratch checkpoint
    import torch
    cio.save_torch({"w": torch.zeros(3)}, out / "last.pt")
elif kind == "png_direct":  # predict's files
    cio.write_png(out / "a.png", np.zeros((4, 4), np.uint8))
elif kind == "h5_direct":  # a data-parallel part file
    h5(out / "target.h5.part0")
"""

FINAL = {
    "json_staged_file": ["m.json"],
    "h5_staged_file": ["target.h5"],
    "h5_staged_folder": ["depth", "depth/source.h5"],
    "torch_direct": ["last.pt"],
    "png_direct": ["a.png"],
    "h5_direct": ["target.h5.part0"],
}


def _child(kind, out, mode):
    return subprocess.Popen([sys.executable, "-c", CHILD, kind, str(out), mode], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _tree(out):
    return sorted(str(p.relative_to(out)) for p in out.rglob("*"))


@pytest.mark.parametrize("kind", list(FINAL))
def test_kill9_inside_a_write_leaves_nothing_after_the_next_write(tmp_path, kind):
    out = tmp_path / "out"
    out.mkdir()
    proc = _child(kind, out, "hang")
    try:
        line = proc.stdout.readline()
        assert line.strip() == "inside", proc.stderr.read()[-2000:]
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert any(name.split("/")[-1].startswith(".") for name in _tree(out)), "killed outside a write"

    proc = _child(kind, out, "finish")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert _tree(out) == FINAL[kind]


def test_atomic_writes_respect_the_umask(tmp_path):
    """Files come out as open() would create them (0644 under umask 0022), not 0600 (tempfile.mkstemp)."""
    import numpy as np

    from corda import io as cio
    from corda.h5io import H5StreamWriter

    old = os.umask(0o022)
    try:
        cio.write_json(tmp_path / "a.json", {})
        cio.write_png(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
        cio.save_torch({}, tmp_path / "a.pt")
        with H5StreamWriter(tmp_path / "a.h5", 0, {}, {"kind": "depth"}):
            pass
        with cio.staged_outputs(tmp_path / "m.json", tmp_path / "d") as st:
            cio.write_json(st[tmp_path / "m.json"], {})
            st[tmp_path / "d"].mkdir()
            cio.write_json(st[tmp_path / "d"] / "x.json", {})
        os.umask(0o077)  # a stricter umask is kept too
        cio.write_json(tmp_path / "private.json", {})
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.rglob("*") if p.is_file()}
    assert modes == {"a.json": 0o644, "a.png": 0o644, "a.pt": 0o644, "a.h5": 0o644, "m.json": 0o644,
                     "x.json": 0o644, "private.json": 0o600}


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    """Only temporaries whose writer is gone are removed: another process may be writing beside us."""
    from corda import io as cio

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        mine = tmp_path / f".a.json.tmp-{live.pid}-0123abcd.tmp"
        stale = tmp_path / f".b.png.tmp-{dead.pid}-89abcdef.png"
        other = tmp_path / ".c.json.tmp-notapid"  # not a temporary of ours
        for p in (mine, stale, other):
            p.write_bytes(b"x")
        cio.write_json(tmp_path / "d.json", {})
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name, "d.json"])
    finally:
        live.kill()
        live.wait()
