"""Format readers: RGB and label images, depth and disparity PNGs, camera JSON, image sizes and resizing. Each
raises a one-line :class:`~corda.errors.DataError` naming the file.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

from corda import labels as L
from corda.data import codecs
from corda.errors import DataError
from corda.io import corrupt_file_fix, read_image, read_json

log = logging.getLogger(__name__)


# Label id → trainId tables (method.md §6) and the largest id each format defines.
_LABEL_TABLES = {
    "cityscapes": (L.CITYSCAPES_ID_TO_TRAIN, L.CITYSCAPES_MAX_ID, "Cityscapes label id"),
    "gta5": (L.CITYSCAPES_ID_TO_TRAIN, L.CITYSCAPES_MAX_ID, "Cityscapes label id"),
    "synthia": (L.SYNTHIA_TO_TRAIN, L.SYNTHIA_MAX_ID, "SYNTHIA class id"),
}


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB; missing/corrupt/truncated → DataError (:func:`corda.io.read_image`)."""
    return read_image(path, "RGB")


def read_label(path: str | os.PathLike, kind: str, image_hw: tuple[int, int] | None = None,
               strict: bool = True) -> np.ndarray:
    """Label map of a ``kind`` dataset → (H, W) uint8 trainIds (255 = ignore), method.md §6.

    Palette ('P') PNGs, as GTA5 ships, are read as their indices, not their colours.

    Args:
        image_hw: the image's (H, W); a label map of another size is an error when ``strict``,
            otherwise it is resized with nearest-neighbour (and a warning).
        strict: also reject ids the format does not define (otherwise they map to ignore).
    """
    path = Path(path)
    lut, max_id, what = _LABEL_TABLES[kind]
    raw = read_image(path, mode=None)
    if raw.ndim != 2 or raw.dtype.kind not in "ui":
        raise DataError(f"{path}: a label map must be one channel of {what}s (PNG mode L or P), got "
                        f"{raw.dtype} {raw.shape}; use the id PNGs, not colour renderings")
    top = int(raw.max()) if raw.size else 0
    if top > 255 or (strict and top > max_id):
        bad = np.unique(raw[raw > max_id])[:6].tolist()
        raise DataError(f"{path}: values {bad} are not {what}s (0..{max_id}); is this a {kind} label map?")
    raw = raw.astype(np.uint8, copy=False)
    if image_hw is not None and raw.shape != tuple(image_hw):
        msg = (f"{path}: label map is {raw.shape[0]}x{raw.shape[1]} but its image is "
               f"{image_hw[0]}x{image_hw[1]}")
        if strict:
            raise DataError(f"{msg}; re-export the label at the image size "
                            "(or pass strict=False to resize it)")
        log.warning("%s; resizing it with nearest-neighbour", msg)
        raw = resize_array(raw, tuple(image_hw), "nearest")
    return L.map_labels(raw, lut)


def _png_depth_and_colour(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR chunk, or None when the file is not a PNG."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except OSError:
        return None
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def _read_png16_colour(path: Path, what: str) -> np.ndarray:
    """A 16-bit RGB(A) PNG → (H, W) uint16 as ``cv2.imread(path, cv2.IMREAD_ANYDEPTH)`` returns it.

    PIL cannot keep 16 bits per colour channel, so these files are decoded with pypng. OpenCV's PNG
    decoder (libpng) turns colour into grey for that flag with ``png_set_rgb_to_gray(0.299, 0.587)``:
    :func:`corda.data.codecs.rgb16_to_gray_libpng`. SYNTHIA-RAND-CITYSCAPES ships its depth as three
    identical 16-bit channels, for which that is exactly the stored value (the weights sum to 1).
    """
    import png  # pypng: pure Python, handles 16-bit multi-channel PNGs

    try:
        w, h, rows, info = png.Reader(filename=str(path)).asDirect()
        a = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows]).reshape(h, w, info["planes"])
    except Exception as exc:
        raise DataError(f"{path}: corrupt or truncated {what} PNG ({exc}); re-extract this file") from exc
    return codecs.rgb16_to_gray_libpng(a[..., :3])


def _read_uint16(path: Path, what: str) -> np.ndarray:
    hdr = _png_depth_and_colour(path)
    if hdr is not None and hdr[0] == 16 and hdr[1] in (2, 6):  # 16-bit RGB / RGBA
        return _read_png16_colour(path, what)
    raw = read_image(path, mode=None)
    if raw.ndim != 2 or raw.dtype != np.uint16:
        found = f"{raw.shape[2]}-channel {raw.dtype}" if raw.ndim == 3 else f"single-channel {raw.dtype}"
        raise DataError(f"{path}: {what} PNG is {found}; a 16-bit (uint16) PNG, single-channel or RGB, is "
                        "expected (re-extract the dataset file, or convert it without rescaling)")
    return raw


_RAW_DEPTH_TO_INV = {"synthia": codecs.synthia_raw_to_inv, "gta5": codecs.mono_raw_to_inv}


@functools.lru_cache(maxsize=None)
def _through_metres_table(kind: str) -> np.ndarray:
    """(65536,) float32: :func:`corda.data.codecs.inv_through_metres` of every uint16 depth code of ``kind``.

    The function is element-wise, so looking the codes up gives exactly its result, 256 kB once per process
    instead of a dozen float64 passes over every frame."""
    return codecs.inv_through_metres(_RAW_DEPTH_TO_INV[kind](np.arange(65536, dtype=np.uint16)))


def read_depth_png(path: str | os.PathLike, kind: str, through_metres: bool = False) -> np.ndarray:
    """A dataset's own depth file → (H, W) float32 CorDA inverse depth, 1.0 = invalid (method.md §2.2).

    SYNTHIA ``Depth/Depth``: uint16 centimetres (65535 = far → exactly 1.0). GTA5 ``disparity``:
    uint16 mono "normalised disparity" → raw/256 + 1 (not metric). ``through_metres``: then through float32
    metres and back (:func:`corda.data.codecs.inv_through_metres`), the values segmentation training reads.
    """
    raw = _read_uint16(Path(path), "depth")
    if kind not in _RAW_DEPTH_TO_INV:
        raise DataError(f"{path}: {kind} has no depth files; its depth comes from the depth_maps HDF5")
    if through_metres:
        return _through_metres_table(kind)[raw]
    return _RAW_DEPTH_TO_INV[kind](raw)


def read_disparity_png(path: str | os.PathLike) -> np.ndarray:
    """Cityscapes disparity PNG → (H, W) float32 pixels, NaN = invalid (d = (p − 1)/256; p = 0 invalid)."""
    return codecs.disparity_png_to_px(_read_uint16(Path(path), "disparity"))


def read_camera(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Cityscapes camera JSON → (K (3, 3) float64 in pixels of the stored image, baseline in metres).

    Only the keys used are required: ``extrinsic.baseline`` and ``intrinsic.{fx, fy, u0, v0}``.
    ``u0, v0`` are taken in the corner-origin pixel convention of :mod:`corda.geometry`.
    """
    path = Path(path)
    cam = read_json(path)
    need = {"extrinsic": ("baseline",), "intrinsic": ("fx", "fy", "u0", "v0")}
    missing = [f"{sec}.{k}" for sec, keys in need.items() for k in keys
               if not isinstance(cam, dict) or not isinstance(cam.get(sec), dict) or k not in cam[sec]]
    if missing:
        raise DataError(f"{path}: camera JSON lacks {missing}; expected the Cityscapes camera format "
                        '{"extrinsic": {"baseline", ...}, "intrinsic": {"fx", "fy", "u0", "v0"}}')
    try:
        b = float(cam["extrinsic"]["baseline"])
        fx, fy, u0, v0 = (float(cam["intrinsic"][k]) for k in ("fx", "fy", "u0", "v0"))
    except (TypeError, ValueError) as exc:
        raise DataError(f"{path}: camera JSON has a non-numeric value ({exc})") from exc
    if not (np.isfinite([b, fx, fy, u0, v0]).all() and b > 0 and fx > 0 and fy > 0):
        raise DataError(f"{path}: camera JSON needs a positive baseline, fx and fy (got {b}, {fx}, {fy})")
    K = np.array([[fx, 0.0, u0], [0.0, fy, v0], [0.0, 0.0, 1.0]], dtype=np.float64)
    return K, b


def image_hw(path: str | os.PathLike) -> tuple[int, int]:
    """(H, W) of an image file from its header (one-line DataError when missing or corrupt)."""
    return _image_hw(Path(path))


def _image_hw(path: Path) -> tuple[int, int]:
    """(H, W) of an image from its header only (when the pixels are not needed)."""
    if not path.is_file():
        raise DataError(f"{path}: file not found; check the dataset root and that the split is complete")
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: corrupt or truncated image ({exc}); {corrupt_file_fix(path)}") from exc


_RESAMPLE = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def resize_array(a: np.ndarray, hw: tuple[int, int],
                 method: Literal["nearest", "bilinear", "bicubic"]) -> np.ndarray:
    """Resize (H, W) uint8/float32 or (H, W, 3) uint8 to ``hw`` with PIL (as the original's loaders do)."""
    if a.shape[:2] == tuple(hw):
        return a
    img = Image.fromarray(np.ascontiguousarray(a))
    return np.asarray(img.resize((hw[1], hw[0]), resample=_RESAMPLE[method]))


DepthResample = Literal["nearest", "nearest_cv2", "bilinear"]


def cv2_nearest_rows(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each of ``n_out`` output rows (or columns) under cv2 ``INTER_NEAREST``: floor(y·in/out).

    PIL's nearest (:func:`resize_array`) samples pixel centres, floor((y + 0.5)·in/out); for 760 → 720 rows
    half of the output rows take the next source row. Exact integer arithmetic (no float rounding).
    """
    return np.minimum(np.arange(n_out, dtype=np.int64) * n_in // n_out, n_in - 1)


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cv2 ``INTER_LINEAR`` taps along one axis: (i0, i1, w1), source x = (i + 0.5)·in/out − 0.5 in float64.

    cv2 clamps x < 0 to 0 and the taps to [0, in − 1]. The source coordinate is float64 (as cv2's ``double``
    scale); in float32 it differs by up to 3e-2 at valid/invalid borders of a 1052 → 720 resize.
    """
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    x = np.maximum(x, 0.0)
    i0 = np.floor(x).astype(np.int64)
    w1 = x - i0
    i0 = np.minimum(i0, n_in - 1)
    return i0, np.minimum(i0 + 1, n_in - 1), w1


def resize_depth(a: np.ndarray, hw: tuple[int, int], method: DepthResample) -> np.ndarray:
    """Resize an (H, W) float32 depth map to ``hw``.

    ``nearest``: PIL nearest (:func:`resize_array`), pixel-centre rule floor((y + 0.5)·in/out), the intended one.
    ``nearest_cv2``: the original's SYNTHIA depth resize, ``cv2.resize(..., interpolation=cv2.INTER_NEAREST)``,
    source row floor(y·in/out) (:func:`cv2_nearest_rows`). ``bilinear``: the original's GTA5 depth resize,
    ``cv2.INTER_LINEAR``: half-pixel-centre sampling (align_corners=False) of the two nearest source
    rows/columns with float64 coordinates and weights, no antialiasing when shrinking, so an invalid 1.0 next
    to valid depth becomes a blend of both (method.md §9.12).
    """
    if a.shape[:2] == tuple(hw) or method == "nearest":
        return resize_array(a, hw, "nearest")
    if method == "nearest_cv2":
        return np.ascontiguousarray(a[cv2_nearest_rows(a.shape[0], hw[0])][:, cv2_nearest_rows(a.shape[1], hw[1])])
    if method != "bilinear":
        raise ValueError(f"resize_depth: unknown method {method!r}")
    src = np.asarray(a, dtype=np.float64)
    r0, r1, wr = _linear_taps(src.shape[0], hw[0])
    c0, c1, wc = _linear_taps(src.shape[1], hw[1])
    cols = src[:, c0] * (1.0 - wc) + src[:, c1] * wc  # (H, w): horizontal pass first, as cv2 does
    out = cols[r0] * (1.0 - wr)[:, None] + cols[r1] * wr[:, None]
    return out.astype(np.float32)
