"""Render benchmark items in subprocesses at numpy's SIMD levels and compare every written byte.

    PYTHONPATH=. python benchmarks/simd_bytes.py [--source 20] [--train 10] [--val 10]

Each level is a fresh interpreter with ``NPY_DISABLE_CPU_FEATURES`` switching off numpy's dispatch
targets above it (numpy reads the variable once, at import). The items go through the data stage's own
writers (corda.data.procedural.benchmark._write_source / _write_target), so every file of an item is compared:
RGB, labels, SYNTHIA depth, stereo right view, video neighbours, gtFine, camera JSON, disparity.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

# Environment of each level: numpy's dispatch targets above it switched off (numpy >= 2.4 group names, and
# the older per-feature names, which numpy ignores when it does not know them) and OpenBLAS's kernels of
# that CPU generation (matmul/dot go through OpenBLAS, which picks kernels by CPU, not by numpy's flags).
_AVX512 = "X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL"
LEVELS = {
    "max": {},
    "avx2": {"NPY_DISABLE_CPU_FEATURES": _AVX512, "OPENBLAS_CORETYPE": "Haswell"},
    "baseline": {"NPY_DISABLE_CPU_FEATURES": "X86_V3 AVX2 FMA3 AVX F16C " + _AVX512, "OPENBLAS_CORETYPE": "Nehalem"},
}

CHILD = r"""
import hashlib, json, sys, tempfile
from pathlib import Path
import numpy as np
from numpy._core._multiarray_umath import __cpu_features__ as feats
from corda.data.procedural import benchmark as B
n_src, n_train, n_val, h, w = map(int, sys.argv[1:6])
cfg = B.BenchmarkConfig(height=h, width=w)
out = {}
with tempfile.TemporaryDirectory() as d:
    src, tgt = Path(d) / "s", Path(d) / "t"
    for i in range(n_src):
        B._write_source((cfg, 0, src, i))
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            B._write_target((cfg, 0, tgt, split, i))
    for f in sorted(Path(d).rglob("*")):
        if f.is_file():
            out[str(f.relative_to(d))] = hashlib.sha256(f.read_bytes()).hexdigest()
def blas_core():
    import ctypes, glob
    for lib in glob.glob(np.__path__[0] + ".libs/*openblas*"):
        for name in ("scipy_openblas_get_corename64_", "openblas_get_corename64_", "openblas_get_corename"):
            f = getattr(ctypes.CDLL(lib), name, None)
            if f is not None:
                f.restype = ctypes.c_char_p
                return f().decode()
    return None
json.dump({"blas": blas_core(), "avx512f": bool(feats.get("AVX512F")), "avx2": bool(feats.get("AVX2")),
           "x86_v4": bool(feats.get("X86_V4")), "x86_v3": bool(feats.get("X86_V3")), "files": out}, sys.stdout)
"""


def render_hashes(level: str, n_src: int, n_train: int, n_val: int, h: int = 128, w: int = 256) -> dict:
    """{relative path: sha256} of the items rendered in a subprocess at ``level`` (a key of LEVELS)."""
    env = dict(os.environ, **LEVELS[level], OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    r = subprocess.run([sys.executable, "-c", CHILD, str(n_src), str(n_train), str(n_val), str(h), str(w)],
                       env=env, capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--source", type=int, default=20)
    ap.add_argument("--train", type=int, default=10)
    ap.add_argument("--val", type=int, default=10)
    a = ap.parse_args()
    res = {lv: render_hashes(lv, a.source, a.train, a.val) for lv in LEVELS}
    ref = res["max"]["files"]
    for lv, r in res.items():
        diff = [k for k in ref if r["files"].get(k) != ref[k]]
        flags = {k: v for k, v in r.items() if k != "files"}
        print(f"{lv:9s} {flags}  files={len(r['files'])}  differ from max: {len(diff)}")
        kinds: dict[str, int] = {}
        for k in diff:
            kind = re.sub(r"[0-9]+", "#", k.split("/")[1] + "/" + k.rsplit("_", 1)[-1] if k[0] == "t" else k.rsplit("/", 1)[0])
            kinds[kind] = kinds.get(kind, 0) + 1
        for kind, n in sorted(kinds.items()):
            print(f"    {n:4d}  {kind}")


if __name__ == "__main__":
    main()
