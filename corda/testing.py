"""Tiny valid datasets in the exact on-disk formats of Cityscapes, GTA5 and SYNTHIA (tests, smoke runs).

Every writer draws from ``np.random.default_rng(seed)`` only, so the same arguments write the same
bytes. Images are random textures (so a crop can be located by its pixels); label maps are 4×4-pixel
blocks of ids drawn from *all* ids the format defines (void ids included), written as the dataset
writes them; the expected trainIds are computed here from cityscapesscripts' own table (Cityscapes,
GTA5) or the SYNTHIA table of method.md §6, not from the loader's look-up tables.

Geometry is planted exactly (ecosystem.md §12): the Cityscapes right image is the left one shifted
by a known integer disparity ``d`` (right[x] = left[x + d]), so the disparity map is ``d`` where the
left pixel is visible in the right view (x ≥ d) and invalid elsewhere, and the metric depth is
``baseline · fx / d``; the video neighbours are the left image shifted by ∓1 pixel.
"""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS
from PIL import Image

from corda.io import atomic_path, write_json, write_png
from corda.labels import SYNTHIA_MAX_ID, SYNTHIA_TO_TRAIN_DICT

if TYPE_CHECKING:
    from corda.distributed import DistInfo

BLOCK = 4  # label/depth block size in pixels

_CS_IDS = np.array(sorted(lab.id for lab in _CS_LABELS if lab.id >= 0), dtype=np.uint8)
_CS_ID_TO_TRAIN = {lab.id: (lab.trainId if 0 <= lab.trainId < 255 else 255)
                   for lab in _CS_LABELS if lab.id >= 0}


@dataclass
class FixtureItem:
    """What one written item holds, decoded by hand (the expected loader output at native size)."""

    name: str
    image: np.ndarray  # (H, W, 3) uint8
    label_ids: np.ndarray  # (H, W) uint8 ids as written
    train_ids: np.ndarray  # (H, W) uint8 expected trainIds, 255 = ignore
    inv_depth: np.ndarray | None = None  # (H, W) float32 expected CorDA encoding of the depth file
    depth_m: np.ndarray | None = None  # (H, W) float32 metres (Cityscapes: from the stereo), NaN invalid
    disparity_px: np.ndarray | None = None  # (H, W) float32, NaN invalid
    K: np.ndarray | None = None  # (3, 3) float64
    baseline_m: float | None = None
    right: np.ndarray | None = None
    prev: np.ndarray | None = None
    next: np.ndarray | None = None


def _blocks(rng: np.random.Generator, h: int, w: int, values: np.ndarray) -> np.ndarray:
    """(h, w) map of BLOCK×BLOCK tiles, each one value drawn from ``values``."""
    coarse = rng.choice(values, size=(-(-h // BLOCK), -(-w // BLOCK)))
    return np.repeat(np.repeat(coarse, BLOCK, axis=0), BLOCK, axis=1)[:h, :w]


def _cs_train_ids(ids: np.ndarray) -> np.ndarray:
    lut = np.full(256, 255, dtype=np.uint8)
    for i, t in _CS_ID_TO_TRAIN.items():
        lut[i] = t
    return lut[ids]


def _write_palette_png(path: Path, ids: np.ndarray) -> None:
    """A 'P'-mode PNG: indices = the ids, palette = the Cityscapes colours (as GTA5 ships its labels)."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    for lab in _CS_LABELS:
        if lab.id >= 0:
            pal[lab.id] = lab.color
    img = Image.fromarray(np.ascontiguousarray(ids, dtype=np.uint8))
    img.putpalette(pal.reshape(-1).tolist())  # turns the L image into P with these colours
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp, format="PNG")


def write_cityscapes_fixture(root: str | os.PathLike, n_train: int, n_val: int, h: int, w: int, seed: int, *,
                             disparity_px: int = 2, baseline_m: float = 0.21,
                             cities: tuple[str, ...] = ("aachen", "bochum"),
                             val_cities: tuple[str, ...] = ("frankfurt",), right: bool = True,
                             sequence: bool = True, camera: bool = True, disparity: bool = True
                             ) -> dict[str, list[FixtureItem]]:
    """Write a Cityscapes-layout fixture; returns ``{split: [FixtureItem sorted by name]}``.

    Names are ``<city>_<i:06d>_000019`` (city = ``cities[i % len(cities)]``); frames 18 and 20 are the
    video neighbours. The flags leave out optional folders.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    d = int(disparity_px)
    fx = 1.1 * w
    K = np.array([[fx, 0.0, w / 2], [0.0, fx, h / 2], [0.0, 0.0, 1.0]])
    out: dict[str, list[FixtureItem]] = {}
    for split, n, cs in (("train", n_train, cities), ("val", n_val, val_cities)):
        items = []
        for i in range(n):
            city = cs[i % len(cs)]
            name = f"{city}_{i:06d}_000019"
            tex = rng.integers(0, 256, size=(h, w + d + 2, 3), dtype=np.uint8)
            left = tex[:, 1:1 + w]
            ids = _blocks(rng, h, w, _CS_IDS).astype(np.uint8)
            disp = np.full((h, w), float(d), dtype=np.float32)
            disp[:, :d] = np.nan  # left pixels x < d are outside the right view
            item = FixtureItem(name=name, image=left.copy(), label_ids=ids, train_ids=_cs_train_ids(ids),
                               disparity_px=disp, depth_m=(baseline_m * fx / disp).astype(np.float32),
                               K=K.copy(), baseline_m=baseline_m)
            sub = f"{split}/{city}"
            write_png(root / "leftImg8bit" / sub / f"{name}_leftImg8bit.png", item.image)
            write_png(root / "gtFine" / sub / f"{name}_gtFine_labelIds.png", ids)
            if right:
                item.right = tex[:, 1 + d:1 + d + w].copy()
                write_png(root / "rightImg8bit" / sub / f"{name}_rightImg8bit.png", item.right)
            if sequence:
                item.prev, item.next = tex[:, 0:w].copy(), tex[:, 2:2 + w].copy()
                for frame, img in ((18, item.prev), (20, item.next)):
                    seq_name = f"{city}_{i:06d}_{frame:06d}_leftImg8bit.png"
                    write_png(root / "leftImg8bit_sequence" / sub / seq_name, img)
            if camera:
                write_json(root / "camera" / sub / f"{name}_camera.json", {
                    "extrinsic": {"baseline": baseline_m, "pitch": 0.04, "roll": 0.0, "yaw": 0.0,
                                  "x": 1.7, "y": 0.1, "z": 1.2},
                    "intrinsic": {"fx": fx, "fy": fx, "u0": w / 2, "v0": h / 2},
                })
            if disparity:
                # Cityscapes encoding: p = 256·d + 1, p = 0 invalid.
                p = np.where(np.isfinite(disp), np.round(np.nan_to_num(disp) * 256.0) + 1.0, 0.0)
                write_png(root / "disparity" / sub / f"{name}_disparity.png", p.astype(np.uint16))
            items.append(item)
        out[split] = sorted(items, key=lambda it: it.name)
    return out


def write_gta5_fixture(root: str | os.PathLike, n: int, h: int, w: int, seed: int, *, palette: bool = True,
                       disparity: bool = True) -> list[FixtureItem]:
    """Write a GTA5-layout fixture (names ``00001``…; labels as palette PNGs of Cityscapes ids).

    The optional ``disparity/`` holds uint16 "normalised disparity" with some 0 (invalid) blocks;
    the expected inverse depth is raw/256 + 1 (method.md §2.2).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    items = []
    for i in range(1, n + 1):
        name = f"{i:05d}"
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        ids = _blocks(rng, h, w, _CS_IDS).astype(np.uint8)
        write_png(root / "images" / f"{name}.png", image)
        if palette:
            _write_palette_png(root / "labels" / f"{name}.png", ids)
        else:
            write_png(root / "labels" / f"{name}.png", ids)
        item = FixtureItem(name=name, image=image, label_ids=ids, train_ids=_cs_train_ids(ids))
        if disparity:
            raw = _blocks(rng, h, w, np.arange(0, 65536, 97, dtype=np.uint16)).astype(np.uint16)
            raw[_blocks(rng, h, w, np.array([True, False, False, False]))] = 0
            item.inv_depth = (raw.astype(np.float64) / 256.0 + 1.0).astype(np.float32)
            write_png(root / "disparity" / f"{name}.png", raw)
        items.append(item)
    return items


def write_synthia_fixture(root: str | os.PathLike, n: int, h: int, w: int, seed: int) -> list[FixtureItem]:
    """Write a SYNTHIA-RAND-CITYSCAPES-layout fixture (names ``0000000``…).

    Labels are SYNTHIA class ids 0..22; depth is uint16 centimetres with 65535 (far/sky) blocks, whose
    expected encoding is 65536 / (raw + 1), exactly 1.0 for 65535 (method.md §2.2).
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    syn_lut = np.full(256, 255, dtype=np.uint8)
    for k, v in SYNTHIA_TO_TRAIN_DICT.items():
        syn_lut[k] = v
    items = []
    for i in range(n):
        name = f"{i:07d}"
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        ids = _blocks(rng, h, w, np.arange(SYNTHIA_MAX_ID + 1, dtype=np.uint8)).astype(np.uint8)
        cm = _blocks(rng, h, w, np.arange(50, 60000, 37, dtype=np.uint16)).astype(np.uint16)
        cm[_blocks(rng, h, w, np.array([True, False, False, False]))] = 65535
        write_png(root / "RGB" / f"{name}.png", image)
        write_png(root / "synthia_mapped_to_cityscapes" / f"{name}.png", ids)
        write_png(root / "Depth" / "Depth" / f"{name}.png", cm)
        z = np.where(cm == 65535, np.nan, cm / 100.0).astype(np.float32)
        inv = (65536.0 / (cm.astype(np.float64) + 1.0)).astype(np.float32)
        items.append(FixtureItem(name=name, image=image, label_ids=ids, train_ids=syn_lut[ids], inv_depth=inv,
                                 depth_m=z))
    return items


def free_port() -> int:
    """A free TCP port on 127.0.0.1, for the rendezvous of a multi-process test."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gloo_process_group(rank: int, world: int, port: int) -> Iterator[DistInfo]:
    """Join a CPU (gloo) process group of ``world`` ranks at 127.0.0.1:``port`` as ``rank``; leave it on exit.

    For the body of a ``torch.multiprocessing.spawn`` worker in the data-parallel tests; one thread per rank,
    so two ranks do not oversubscribe a small CI machine.
    """
    import torch

    from corda.distributed import DistInfo, destroy_process_group, init_process_group

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    info = DistInfo(rank, world)
    init_process_group(info, torch.device("cpu"))
    try:
        yield info
    finally:
        destroy_process_group()
