"""The authors' released Cityscapes stereo depth (method.md §2.1), read into the ``depth_maps`` HDF5.

The paper's headline results train with precomputed SFSU stereo depth for Cityscapes, not with depth
learnt in the pipeline. The release (``city_stereo_depth.zip``) holds one MATLAB file per training image,
laid out like ``leftImg8bit``::

    <depth.target_files_root>/<split>/<city>/<city>_<seq>_<frame>_depth_stereoscopic.mat

(the original derives the name from the image's by replacing ``leftImg8bit.png`` with
``depth_stereoscopic.mat``). Each file holds the variable ``depth_map``: an (H, W) array of metric depth
in metres at the image's resolution. The original clips it to [0, 655.35] and treats depth < 0.1 m as
invalid before the inverse-depth encoding, which is exactly :func:`corda.data.codecs.depth_to_inv`.

Files may be MATLAB v5 (read with :func:`scipy.io.loadmat`) or v7.3 (HDF5, read with h5py; MATLAB stores
arrays column-major, so v7.3 datasets come transposed and are transposed back here).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from corda.errors import DataError

DEPTH_KEY = "depth_map"
SUFFIX = "_depth_stereoscopic.mat"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def released_depth_path(root: str | os.PathLike, split: str, name: str) -> Path:
    """The released depth file of Cityscapes item ``name`` (``aachen_000000_000019``) of ``split``."""
    city = name.split("_")[0]
    return Path(root) / split / city / f"{name}{SUFFIX}"


def _is_hdf5(path: Path) -> bool:
    """MATLAB v7.3 files are HDF5 with a 512-byte user block: the signature sits at 0, 512, 1024 …"""
    with open(path, "rb") as f:
        head = f.read(2048)
    return any(head[o:o + 8] == _HDF5_MAGIC for o in (0, 512, 1024))


def read_released_depth(path: str | os.PathLike, image_hw: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W) float32 metric depth (m) of one released ``*_depth_stereoscopic.mat`` file.

    Raises:
        DataError: missing or unreadable file, no ``depth_map`` variable, not a 2-D numeric array, or
            (with ``image_hw``) another size than the image. One line naming the file and the fix.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: released depth file not found; unzip the authors' city_stereo_depth.zip "
                        "so that depth.target_files_root/<split>/<city>/<name>_depth_stereoscopic.mat exist")
    try:
        if _is_hdf5(path):
            import h5py

            with h5py.File(path, "r") as f:
                keys = list(f.keys())
                if DEPTH_KEY not in f:
                    raise DataError(f"{path}: MATLAB v7.3 file has no '{DEPTH_KEY}' variable (found {keys}); "
                                    "use the authors' released depth files")
                arr = np.asarray(f[DEPTH_KEY][()])
                arr = arr.T if arr.ndim == 2 else arr  # column-major storage
        else:
            from scipy.io import loadmat

            mat = loadmat(path)
            if DEPTH_KEY not in mat:
                keys = [k for k in mat if not k.startswith("__")]
                raise DataError(f"{path}: MATLAB file has no '{DEPTH_KEY}' variable (found {keys}); "
                                "use the authors' released depth files")
            arr = np.asarray(mat[DEPTH_KEY])
    except DataError:
        raise
    except Exception as exc:  # truncated / not a MATLAB file: one line, not a traceback
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not a readable MATLAB v5 or v7.3 file ({first}); re-extract it from the "
                        "authors' release") from exc
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{path}: '{DEPTH_KEY}' is a {arr.dtype} array of shape {arr.shape}; a 2-D numeric "
                        "depth map in metres is expected")
    if image_hw is not None and arr.shape != tuple(image_hw):
        raise DataError(f"{path}: depth map is {arr.shape[0]}x{arr.shape[1]} but its image is "
                        f"{image_hw[0]}x{image_hw[1]}; use the release that matches these images")
    return arr.astype(np.float32)
