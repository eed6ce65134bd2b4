"""Depth and disparity encodings of the real datasets and of CorDA (method.md §2.2).

CorDA regresses a scaled *inverse* depth ``t`` in which the value 1.0 means "invalid":

* metric depth z (m):            t = 655.36 / (z + 0.01), z clipped to [0.1, 655.35] (z < 0.1 → invalid)
* SYNTHIA uint16 depth (cm):     t = 65536 / (raw + 1)          (raw = 65535, sky/far → exactly 1.0)
* GTA5 / mono uint16 disparity:  t = raw / 256 + 1              (raw = 0 → 1.0; not metric)

Cityscapes stores disparity as uint16 ``p``: d = (p − 1) / 256 px for p > 0, p = 0 invalid, and
depth = baseline · fx / d.
"""

from __future__ import annotations

import numpy as np

from corda.inv_depth import INV_EPS_M, INV_NUMERATOR, INVALID, MAX_DEPTH_M, MIN_VALID_M


def depth_to_inv(z_m: np.ndarray, valid: np.ndarray | None = None,
                 min_valid_m: float = MIN_VALID_M) -> np.ndarray:
    """Metric depth (m) → CorDA inverse-depth encoding (float32); invalid → exactly 1.0.

    Mirrors the Cityscapes-stereo reading of the original: clip to [0, 655.35], z < 0.1 → 655.35,
    then 655.36 / (z + 0.01), which gives exactly 1.0 for invalid pixels. ``min_valid_m=0`` keeps
    near depth valid, as the original's SYNTHIA reading (65536 / (cm + 1) for every cm < 65535) does:
    the ``depth_maps`` round trip of dataset ground truth uses it, so SYNTHIA depth ≤ 10 cm stays valid.
    """
    z = np.clip(np.asarray(z_m, dtype=np.float64), 0.0, MAX_DEPTH_M)
    bad = ~np.isfinite(z) | (z < min_valid_m)
    if valid is not None:
        bad |= ~valid
    z = np.where(bad, MAX_DEPTH_M, z)
    t = (INV_NUMERATOR / (z + INV_EPS_M)).astype(np.float32)
    t[bad] = INVALID
    return t


def inv_to_depth(t: np.ndarray) -> np.ndarray:
    """CorDA inverse-depth encoding → metric depth (m); invalid (t == 1.0) → NaN."""
    t = np.asarray(t, dtype=np.float64)
    z = INV_NUMERATOR / np.maximum(t, 1e-6) - INV_EPS_M
    return np.where(t == INVALID, np.nan, z).astype(np.float32)


def inv_through_metres(t: np.ndarray) -> np.ndarray:
    """CorDA inverse depth → float32 metres → inverse depth again (``min_valid_m=0``): dataset ground truth
    as training reads it.

    ``depth_to_inv(inv_to_depth(t), min_valid_m=0.0)``, element-wise; invalid (1.0) stays exactly 1.0 and near
    depth stays valid. Not the identity: the float32 metres round the value, so 4,519 of the 65,536 SYNTHIA codes
    and 6,241 of the GTA5 codes come back one float32 step away. Training reads source ground truth through
    this rounding, so that its targets are bit for bit the ones of the exported metric-depth files it was tuned
    on (and a change of reader changes no trained model).
    """
    return depth_to_inv(inv_to_depth(t), min_valid_m=0.0)


def synthia_raw_to_inv(raw: np.ndarray) -> np.ndarray:
    """SYNTHIA uint16 depth (cm) → CorDA encoding: 65536 / (raw + 1); 65535 → 1.0."""
    return (65536.0 / (raw.astype(np.float64) + 1.0)).astype(np.float32)


def depth_to_synthia_raw(z_m: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Metric depth (m) → SYNTHIA uint16 centimetres; far/invalid → 65535."""
    cm = np.round(np.asarray(z_m, dtype=np.float64) * 100.0)
    bad = ~np.isfinite(cm) | (cm >= 65535)
    if valid is not None:
        bad |= ~valid
    return np.where(bad, 65535, np.clip(cm, 0, 65534)).astype(np.uint16)


def synthia_raw_to_depth(raw: np.ndarray) -> np.ndarray:
    """SYNTHIA uint16 depth → metric depth (m); 65535 → NaN (sky / beyond range)."""
    z = raw.astype(np.float32) / 100.0
    return np.where(raw == 65535, np.nan, z).astype(np.float32)


def rgb16_to_gray_libpng(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint16 RGB → (H, W) uint16 grey exactly as libpng's ``png_set_rgb_to_gray(1, 0.299, 0.587)``.

    That is what ``cv2.imread(path, cv2.IMREAD_ANYDEPTH)`` (grey, any depth) gives for a 16-bit colour PNG,
    the original's SYNTHIA depth reader: libpng truncates the weights to 15-bit integers (0.299 → 9797,
    0.587 → 19234, blue = 32768 − both = 3737) and rounds ``(r·R + g·G + b·B + 16384) >> 15`` per pixel
    on the channels in their stored (R, G, B) order. Equal channels give back their value.
    """
    c = rgb.astype(np.uint64)
    g = (9797 * c[..., 0] + 19234 * c[..., 1] + 3737 * c[..., 2] + 16384) >> 15
    return g.astype(np.uint16)


def mono_raw_to_inv(raw: np.ndarray) -> np.ndarray:
    """GTA5 / Cityscapes-mono uint16 'normalised disparity' → CorDA encoding raw/256 + 1 (not metric)."""
    return (raw.astype(np.float32) / 256.0 + 1.0).astype(np.float32)


def disparity_png_to_px(p: np.ndarray) -> np.ndarray:
    """Cityscapes uint16 disparity PNG → disparity in pixels; 0 → NaN (invalid)."""
    p = p.astype(np.float32)
    return np.where(p > 0, (p - 1.0) / 256.0, np.nan).astype(np.float32)


def disparity_px_to_png(d: np.ndarray) -> np.ndarray:
    """Disparity in pixels → Cityscapes uint16 PNG values (p = d·256 + 1); NaN/≤0 → 0."""
    d = np.asarray(d, dtype=np.float64)
    ok = np.isfinite(d) & (d > 0)
    p = np.where(ok, np.round(d * 256.0) + 1.0, 0.0)
    return np.clip(p, 0, 65535).astype(np.uint16)


def disparity_to_depth(d_px: np.ndarray, baseline_m: float, fx_px: float) -> np.ndarray:
    """Disparity (px) → depth (m) = baseline · fx / d; invalid disparity → NaN."""
    d = np.asarray(d_px, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(d > 0, baseline_m * fx_px / d, np.nan)
    return z.astype(np.float32)
