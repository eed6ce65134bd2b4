"""Miniature copies of GTA5, SYNTHIA-RAND-CITYSCAPES and Cityscapes: true size, true formats, a few items.

:func:`make_miniature` writes, under one folder, the three real datasets' on-disk layouts exactly as
:mod:`corda.data.layouts`, :mod:`corda.data.readers` and :mod:`corda.data.depth_files` read them, at each
dataset's true resolution, so the real loaders and every pipeline stage run on them as on the real thing
(issue 28: the presets' rehearsal in ``tests/test_rehearsal.py``)::

    <out>/gta5/                                   1914x1052 (W x H), name NNNNN
        images/NNNNN.png                          RGB
        labels/NNNNN.png                          palette PNG of Cityscapes label ids (as GTA5 ships)
        disparity/NNNNN.png                       uint16 mono "normalised disparity" (CorDA's release)
    <out>/synthia/                                1280x760, name NNNNNNN
        RGB/NNNNNNN.png                           RGB
        synthia_mapped_to_cityscapes/NNNNNNN.png  SYNTHIA class ids, 8-bit grey
        Depth/Depth/NNNNNNN.png                   uint16 centimetres in three identical channels (16-bit RGB)
    <out>/cityscapes/                             2048x1024, name <city>_<seq:06d>_000019
        leftImg8bit/{train,val}/<city>/<name>_leftImg8bit.png
        rightImg8bit/{train,val}/<city>/<name>_rightImg8bit.png
        leftImg8bit_sequence/{train,val}/<city>/<city>_<seq>_0000{18,20}_leftImg8bit.png   the frames the
                                                  depth modes read (the annotated frame's neighbours)
        gtFine/{train,val}/<city>/<name>_gtFine_labelIds.png   label ids, 8-bit grey (hood = 1, ego vehicle)
        camera/{train,val}/<city>/<name>_camera.json           baseline, fx, fy, u0, v0 at 2048x1024
        disparity/{train,val}/<city>/<name>_disparity.png      uint16, d = (p - 1)/256 px, 0 = invalid
    <out>/cityscapes/depth/train/<city>/<name>_depth_stereoscopic.mat   the authors' released stereo depth:
                                                  MATLAB v5, variable ``depth_map``, metres, 0 = invalid

Irregularities of real copies that the data stage must handle are included on purpose: the last GTA5
frame has an image and a depth file but **no label** (copies of GTA5 in circulation lack 25 of the 24,966
labels); the data stage skips such a frame with one warning that counts the skipped frames and names the
first, and records the count in the manifest (``skipped``), as :func:`corda.data.index.scan_dataset` says.

Pixels come from the embedded benchmark's renderer (:mod:`corda.data.procedural`): source style for GTA5 and
SYNTHIA, target style (stereo pair, video neighbours, hood) for Cityscapes. Ray-casting 2048x1024 takes
about 20 s per Cityscapes train item on one core, so by default each frame is rendered at 1/``scale`` of the
true size and enlarged to it (RGB bilinear; labels and depth nearest, so ids and depth values stay ones the
renderer produced); ``scale=1`` renders at true size. The camera JSON and the disparity are those of the
enlarged frame (fx, u0, v0 scaled), so stereo geometry stays consistent. Every item is a pure function of
``(seed, dataset, split, index)``: the same arguments write the same pixels.

API (stable; used by tests and benchmarks)::

    make_miniature(out, *, gta5=4, gta5_unlabelled=1, synthia=4, cityscapes_train=4, cityscapes_val=2,
                   seed=0, scale=4, datasets=("gta5", "synthia", "cityscapes"), workers=1) -> MiniatureRoots

Command line: ``python benchmarks/make_miniature.py OUT_DIR [--scale 4] ...`` (``--help``).
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from corda import labels as L
from corda.data import codecs
from corda.data.procedural import benchmark as B
from corda.data.procedural import render as R
from corda.io import atomic_path, write_json, write_png

#: True (height, width) of each dataset's frames.
SIZES: dict[str, tuple[int, int]] = {"gta5": (1052, 1914), "synthia": (760, 1280), "cityscapes": (1024, 2048)}
DATASETS: tuple[str, ...] = ("gta5", "synthia", "cityscapes")
#: Cityscapes' stereo baseline (m), as in its camera files.
CITYSCAPES_BASELINE_M = 0.209313
TRAIN_CITIES = ("aachen", "bochum")
VAL_CITIES = ("frankfurt",)
_DATASET_IDS = {"gta5": 10, "synthia": 11, "cityscapes": 12}


@dataclass(frozen=True)
class MiniatureRoots:
    """Where :func:`make_miniature` wrote each dataset (the values for ``data.*.root`` and
    ``depth.target_files_root``), and how many items of each split it wrote."""

    gta5: Path
    synthia: Path
    cityscapes: Path
    cityscapes_depth: Path
    counts: dict[str, int]


def _small(hw: tuple[int, int], scale: int) -> tuple[int, int]:
    return max(16, math.ceil(hw[0] / scale)), max(16, math.ceil(hw[1] / scale))


def _enlarge(a: np.ndarray, hw: tuple[int, int], resample: int) -> np.ndarray:
    """(h, w[, 3]) uint8 or float32 → (H, W[, 3]) with PIL (no-op at the true size)."""
    if a.shape[:2] == tuple(hw):
        return a
    return np.asarray(Image.fromarray(np.ascontiguousarray(a)).resize((hw[1], hw[0]), resample=resample))


def _cfg(hw: tuple[int, int]) -> B.BenchmarkConfig:
    return B.BenchmarkConfig(height=hw[0], width=hw[1], baseline_m=CITYSCAPES_BASELINE_M)


def _write_png16_rgb(path: Path, grey: np.ndarray) -> None:
    """A 16-bit RGB PNG with three copies of ``grey`` (H, W) uint16, as SYNTHIA ships its depth (pypng)."""
    import png

    h, w = grey.shape
    rows = np.repeat(grey[..., None], 3, axis=2).reshape(h, w * 3)
    with atomic_path(path, suffix=".png") as tmp, open(tmp, "wb") as f:
        png.Writer(w, h, greyscale=False, bitdepth=16, compression=1).write(f, rows)


def _write_palette_png(path: Path, ids: np.ndarray) -> None:
    """Cityscapes label ids as a palette ('P') PNG whose colours are the Cityscapes colours, as GTA5 ships."""
    img = Image.fromarray(ids.astype(np.uint8))  # mode L; putpalette turns it into P, keeping the indices
    pal = np.zeros((256, 3), np.uint8)
    train = L.CITYSCAPES_ID_TO_TRAIN
    for i in range(min(256, len(train))):
        if train[i] < len(L.PALETTE):
            pal[i] = L.PALETTE[train[i]]
    img.putpalette(pal.reshape(-1).tolist())
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp, format="PNG", compress_level=1)


def _source_frame(kind: str, seed: int, index: int, scale: int) -> dict[str, np.ndarray]:
    hw = SIZES[kind]
    item = B.render_source_item(_cfg(_small(hw, scale)), seed * 1000 + _DATASET_IDS[kind], index)
    sky = item["label"] == R.SKY
    z = np.where(sky, np.nan, item["depth"]).astype(np.float32)
    return {"image": _enlarge(item["image"], hw, Image.BILINEAR),
            "label": _enlarge(item["label"], hw, Image.NEAREST),
            "depth": _enlarge(z, hw, Image.NEAREST)}


def _write_gta5(root: Path, seed: int, index: int, scale: int, labelled: bool) -> None:
    f = _source_frame("gta5", seed, index, scale)
    name = f"{index + 1:05d}.png"  # GTA5 numbers its frames from 00001
    write_png(root / "images" / name, f["image"])
    if labelled:
        _write_palette_png(root / "labels" / name, L.TRAIN_TO_CITYSCAPES_ID[f["label"]])
    # The authors' GTA5 depth: uint16 raw with CorDA inverse depth t = raw/256 + 1 (raw 0 = invalid/sky).
    t = codecs.depth_to_inv(f["depth"])
    raw = np.clip(np.round((t.astype(np.float64) - 1.0) * 256.0), 0, 65535).astype(np.uint16)
    write_png(root / "disparity" / name, raw)


def _write_synthia(root: Path, seed: int, index: int, scale: int) -> None:
    f = _source_frame("synthia", seed, index, scale)
    name = f"{index:07d}.png"
    write_png(root / "RGB" / name, f["image"])
    write_png(root / "synthia_mapped_to_cityscapes" / name, L.TRAIN_TO_SYNTHIA[f["label"]])
    _write_png16_rgb(root / "Depth" / "Depth" / name, codecs.depth_to_synthia_raw(f["depth"]))


def cityscapes_name(split: str, index: int, frame: int = B.LABELLED_FRAME) -> tuple[str, str]:
    """(city, ``<city>_<seq:06d>_<frame:06d>``) of miniature Cityscapes item ``index`` of ``split``."""
    cities = TRAIN_CITIES if split == "train" else VAL_CITIES
    city = cities[index % len(cities)]
    return city, f"{city}_{index:06d}_{frame:06d}"


def _write_cityscapes(root: Path, seed: int, split: str, index: int, scale: int) -> None:
    from scipy.io import savemat

    hw = SIZES["cityscapes"]
    small = _small(hw, scale)
    # Render as a train item whatever the split: the video neighbours come with it (real Cityscapes has
    # leftImg8bit_sequence for val as well); the split still seeds its own scenes.
    item = B.render_target_item(_cfg(small), seed * 1000 + _DATASET_IDS["cityscapes"] + B.SPLIT_IDS[split] * 100,
                                "train", index)
    city, name = cityscapes_name(split, index)
    d = f"{split}/{city}"
    for key, folder, suffix in (("image", "leftImg8bit", "leftImg8bit"), ("right", "rightImg8bit", "rightImg8bit")):
        write_png(root / folder / d / f"{name}_{suffix}.png", _enlarge(item[key], hw, Image.BILINEAR))
    for key, frame in (("prev", B.LABELLED_FRAME - 1), ("next", B.LABELLED_FRAME + 1)):
        _, s = cityscapes_name(split, index, frame)
        write_png(root / "leftImg8bit_sequence" / d / f"{s}_leftImg8bit.png", _enlarge(item[key], hw, Image.BILINEAR))
    label = _enlarge(item["label"], hw, Image.NEAREST)
    ids = L.TRAIN_TO_CITYSCAPES_ID[label]
    ids[label == L.IGNORE] = 1  # the hood is Cityscapes' "ego vehicle" (id 1)
    write_png(root / "gtFine" / d / f"{name}_gtFine_labelIds.png", ids)
    cam = item["cam"]
    sx, sy = hw[1] / small[1], hw[0] / small[0]
    fx, fy, u0, v0 = cam.fx * sx, cam.fy * sy, cam.cx * sx, cam.cy * sy
    write_json(root / "camera" / d / f"{name}_camera.json",
               {"extrinsic": {"baseline": CITYSCAPES_BASELINE_M, "pitch": cam.pitch, "roll": 0.0, "x": 1.7,
                              "y": 0.0, "yaw": cam.yaw, "z": cam.position[1]},
                "intrinsic": {"fx": fx, "fy": fy, "u0": u0, "v0": v0}})
    z = np.where(label == R.SKY, np.nan, _enlarge(item["depth"].astype(np.float32), hw, Image.NEAREST))
    z[label == L.IGNORE] = np.nan  # hood: no stereo match
    with np.errstate(divide="ignore", invalid="ignore"):
        disp = CITYSCAPES_BASELINE_M * fx / z
    write_png(root / "disparity" / d / f"{name}_disparity.png", codecs.disparity_px_to_png(disp))
    if split == "train":  # the authors' release covers the training images (depth_maps reads target train)
        path = root / "depth" / d / f"{name}_depth_stereoscopic.mat"
        with atomic_path(path, suffix=".mat") as tmp:
            savemat(tmp, {"depth_map": np.nan_to_num(z, nan=0.0).astype(np.float32)}, do_compression=True)


def _run(job: tuple[Callable, tuple]) -> None:
    fn, args = job
    with np.errstate(invalid="ignore"):  # the ray-caster's inf·0 on rays parallel to a box face (masked there)
        fn(*args)


def make_miniature(out: str | Path, *, gta5: int = 4, gta5_unlabelled: int = 1, synthia: int = 4,
                   cityscapes_train: int = 4, cityscapes_val: int = 2, seed: int = 0, scale: int = 4,
                   datasets: Iterable[str] = DATASETS, workers: int = 1) -> MiniatureRoots:
    """Write the miniature datasets under ``out`` (layouts in the module docstring); returns their roots.

    Args:
        gta5: labelled GTA5 frames; ``gta5_unlabelled`` more frames follow them without a label file.
        synthia, cityscapes_train, cityscapes_val: items per split.
        scale: render at 1/scale of the true size and enlarge (1 = ray-cast at the true size, slow).
        datasets: which of ``gta5``, ``synthia``, ``cityscapes`` to write.
        workers: processes (1 = in this process); the bytes do not depend on it.
    """
    out = Path(out)
    datasets = tuple(datasets)
    unknown = set(datasets) - set(DATASETS)
    if unknown or scale < 1 or min(gta5, synthia, cityscapes_train, cityscapes_val, gta5_unlabelled) < 0:
        raise ValueError(f"make_miniature: datasets must be among {DATASETS} (got {sorted(unknown)}), scale >= 1 "
                         "and counts >= 0")
    roots = MiniatureRoots(out / "gta5", out / "synthia", out / "cityscapes", out / "cityscapes" / "depth", {})
    jobs: list[tuple[Callable, tuple]] = []
    if "gta5" in datasets:
        jobs += [(_write_gta5, (roots.gta5, seed, i, scale, i < gta5)) for i in range(gta5 + gta5_unlabelled)]
        roots.counts.update(gta5=gta5, gta5_unlabelled=gta5_unlabelled)
    if "synthia" in datasets:
        jobs += [(_write_synthia, (roots.synthia, seed, i, scale)) for i in range(synthia)]
        roots.counts["synthia"] = synthia
    if "cityscapes" in datasets:
        jobs += [(_write_cityscapes, (roots.cityscapes, seed, s, i, scale))
                 for s, n in (("train", cityscapes_train), ("val", cityscapes_val)) for i in range(n)]
        roots.counts.update(cityscapes_train=cityscapes_train, cityscapes_val=cityscapes_val)
    if workers <= 1:
        for job in jobs:
            _run(job)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_run, jobs))
    return roots
