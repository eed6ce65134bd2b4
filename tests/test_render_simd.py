"""The renderer writes the same bytes at every CPU feature level (issue 18, corda.data.procedural.render docstring).

Source and target items (every file the data stage writes for them: RGB, labels, depth, stereo right view,
video neighbours, camera JSON, disparity) are rendered in fresh interpreters: one at this machine's highest
level, and ones with numpy's dispatch targets above a level switched off (``NPY_DISABLE_CPU_FEATURES``) and
OpenBLAS held to that generation's kernels (``OPENBLAS_CORETYPE``). The sha256 of every file must agree.
"""

import pytest
from numpy._core._multiarray_umath import __cpu_features__ as FEATURES

from benchmarks.simd_bytes import render_hashes

# A sample with every view; the unfixed renderer (1e14ab1) differed here in 26 of 46 files at both levels.
SAMPLE = dict(n_src=6, n_train=3, n_val=2)
# What must be off in the emulated level, to prove the switch took effect (not silently the same path).
LEVEL_OFF = {"avx2": ("x86_v4", "Haswell"), "baseline": ("x86_v3", "Nehalem")}


@pytest.fixture(scope="module")
def highest():
    return render_hashes("max", **SAMPLE)


@pytest.mark.parametrize("level", ["avx2", "baseline"])
def test_same_bytes_at_a_lower_simd_level(highest, level):
    if level == "avx2" and not FEATURES.get("AVX512F"):
        pytest.skip("this CPU has no AVX-512: its highest level is AVX2, so only AVX2 vs baseline is compared "
                    "(the baseline case); the AVX-512 vs AVX2 comparison needs an AVX-512 machine")
    if not FEATURES.get("AVX2"):
        pytest.skip("this CPU has no AVX2: the renderer's byte identity is only claimed for x86-64 with AVX2+")
    low = render_hashes(level, **SAMPLE)
    flag, core = LEVEL_OFF[level]
    assert highest[flag] and not low[flag], f"NPY_DISABLE_CPU_FEATURES did not switch off {flag}"
    if highest["blas"] is not None:
        assert low["blas"] == core, f"OPENBLAS_CORETYPE did not select {core}: {low['blas']}"
    assert len(highest["files"]) == 6 * 3 + 3 * 6 + 2 * 5  # files per item: source 3, target train 6, val 5
    assert highest["files"].keys() == low["files"].keys()
    differ = sorted(k for k in highest["files"] if highest["files"][k] != low["files"][k])
    assert not differ, f"{len(differ)} files differ at {level}: {differ[:5]}"
