"""One dataset abstraction for GTA5, SYNTHIA-RAND-CITYSCAPES and Cityscapes (method.md §2, §5–§7).

The original CorDA has a copy-pasted loader per dataset, each with its own label map and resize code
(style.md §8). Here the three layouts differ only in their path rules (:mod:`corda.data.layouts`) and
in two table look-ups (label ids → trainIds, depth PNG → CorDA inverse depth); everything else is one
code path:

1. :func:`scan_dataset` lists the items of a split once and records, per field, the relative path of
   every item's file. The result, a :class:`DatasetIndex`, is what the data stage writes into the
   manifest, so later stages never re-walk (or hash) a multi-GB tree.
2. :class:`SegDepthDataset` reads the requested fields of an item, checks them (one-line
   :class:`~corda.errors.DataError` naming the file and the fix), resizes everything to
   ``resize_hw`` (images bilinear or bicubic, labels/depth/disparity nearest so that the exact 1.0
   "invalid" of the depth encoding survives, method.md §2.2) and cuts the same random crop from every
   field (method.md §5). The crop is drawn from ``np.random.default_rng([seed, draw, index])``, so a
   batch is a pure function of the training step and a resumed run sees the same pixels.
3. :func:`validate_index` opens every (or the first N) items with all their files, for the data stage.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Sequence

import numpy as np
import torch
from PIL import Image

from corda import labels as L
from corda.data import codecs, layouts
from corda.errors import DataError
from corda.io import corrupt_file_fix, read_image, read_json

log = logging.getLogger(__name__)

#: Fields a :class:`SegDepthDataset` can return (besides "name" and "index").
FIELDS: tuple[str, ...] = ("image", "label", "depth", "right", "prev", "next", "K", "baseline", "disparity",
                           "pseudo_label", "pseudo_weight")
_PSEUDO = ("pseudo_label", "pseudo_weight")
#: The file field each sample field is read from.
_FILE_OF = {"image": "image", "label": "label", "depth": "depth", "right": "right", "prev": "prev",
            "next": "next", "K": "camera", "baseline": "camera", "disparity": "disparity"}
_VIEWS = ("image", "right", "prev", "next")
_INDEX_FORMAT = 1

# Label id → trainId tables (method.md §6) and the largest id each format defines.
_LABEL_TABLES = {
    "cityscapes": (L.CITYSCAPES_ID_TO_TRAIN, L.CITYSCAPES_MAX_ID, "Cityscapes label id"),
    "gta5": (L.CITYSCAPES_ID_TO_TRAIN, L.CITYSCAPES_MAX_ID, "Cityscapes label id"),
    "synthia": (L.SYNTHIA_TO_TRAIN, L.SYNTHIA_MAX_ID, "SYNTHIA class id"),
}


# ------------------------------------------------------------------------------------------------
# Index


@dataclass
class DatasetIndex:
    """The items of one split of one dataset and the relative paths of their files.

    Attributes:
        kind: ``"synthia" | "gta5" | "cityscapes"``.
        root: the dataset root as given (kept apart from the paths so a manifest moves between machines).
        split: ``"train" | "val"``.
        names: item names, sorted (SYNTHIA ``"0000042"``, GTA5 ``"00042"``, Cityscapes
            ``"aachen_000000_000019"``); the key of the HDF5 depth/pseudo-label files.
        paths: ``{file field: [relative POSIX path per item]}`` for the fields every item has
            (``image``, ``label``, ``depth``, ``right``, ``prev``, ``next``, ``camera``, ``disparity``).
        incomplete: ``{file field: number of items lacking it}`` for fields only some items have.
    """

    kind: str
    root: str
    split: str
    names: list[str]
    paths: dict[str, list[str]]
    incomplete: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for f, rels in self.paths.items():
            if len(rels) != len(self.names):
                raise ValueError(f"DatasetIndex: field {f!r} has {len(rels)} paths for "
                                 f"{len(self.names)} names")

    def __len__(self) -> int:
        return len(self.names)

    def has(self, file_field: str) -> bool:
        """Whether every item has a file for ``file_field``."""
        return file_field in self.paths

    def path(self, file_field: str, i: int) -> Path:
        """Absolute (root-joined) path of item ``i``'s ``file_field`` file."""
        return Path(self.root) / self.paths[file_field][i]

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (relative paths only; ``root`` separate)."""
        return {"format": _INDEX_FORMAT, "kind": self.kind, "root": str(self.root), "split": self.split,
                "names": list(self.names), "paths": {k: list(v) for k, v in self.paths.items()},
                "incomplete": dict(self.incomplete)}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any] | str, root: str | os.PathLike | None = None) -> "DatasetIndex":
        """Inverse of :meth:`to_json` (a dict or its JSON text); ``root`` overrides the stored root."""
        if isinstance(obj, str):
            obj = json.loads(obj)
        missing = [k for k in ("kind", "root", "split", "names", "paths") if k not in obj]
        if missing or obj.get("format", _INDEX_FORMAT) != _INDEX_FORMAT:
            raise DataError(f"dataset index lacks {missing or 'a known format'} (old manifest?); "
                            "re-run `dvc repro data`")
        return cls(kind=obj["kind"], root=str(root if root is not None else obj["root"]), split=obj["split"],
                   names=list(obj["names"]), paths={k: list(v) for k, v in obj["paths"].items()},
                   incomplete=dict(obj.get("incomplete", {})))


def _list_files(folder: Path) -> Iterator[str]:
    """Relative POSIX paths of all non-hidden files below ``folder`` (one walk, no per-file stat)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = Path(dirpath).relative_to(folder).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        for fn in filenames:
            if not fn.startswith("."):  # atomic-write temporaries are hidden (corda.io)
                yield prefix + fn


def scan_dataset(kind: str, root: str | os.PathLike, split: str) -> DatasetIndex:
    """List the items of ``split`` of the ``kind`` dataset under ``root`` (see :mod:`corda.data.layouts`).

    Items are the image files, sorted by name. For SYNTHIA and GTA5 an image without its label map
    is skipped with a warning (a source item needs its labels); every other field is recorded when
    all items have it, and counted in ``incomplete`` (with a warning) when only some do.

    Raises:
        DataError: the root, the split's image folder or its images are missing, or the split does
            not exist for ``kind``; the message names the folder and the params key to set.
    """
    layouts.check_kind(kind)
    root_p = Path(root)
    hint = f"set {layouts.ROOT_PARAM[kind]} in params.yaml"
    if split not in layouts.SPLITS[kind]:
        raise DataError(f"{root_p}: a {kind} dataset has no split {split!r} "
                        f"(only {list(layouts.SPLITS[kind])})")
    img_rel = layouts.image_folder(kind, split)
    if not root_p.is_dir():
        raise DataError(f"{root_p}: {kind} dataset root not found; {hint} to the folder that holds "
                        f"{img_rel}/")
    img_dir = root_p / img_rel
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: folder not found, so {root_p} is not a {kind} root with a "
                        f"{split!r} split; {hint} (expected layout: corda/data/layouts.py)")
    images: dict[str, str] = {}
    skipped = []
    for rel in _list_files(img_dir):
        name = layouts.name_of_image(kind, rel)
        if name is None:
            skipped.append(rel)
            continue
        if name in images:
            raise DataError(f"{img_dir}: image {name!r} appears twice ({images[name]}, "
                            f"{img_rel}/{rel}); remove one")
        images[name] = f"{img_rel}/{rel}"
    if skipped:
        log.warning("%s: ignored %d files that are not %s images, e.g. %s", img_dir, len(skipped), kind,
                    skipped[0])
    if not images:
        raise DataError(f"{img_dir}: no {kind} images found; {hint} (expected layout: corda/data/layouts.py)")

    names = sorted(images)
    expected = {n: layouts.field_paths(kind, split, n, images[n]) for n in names}
    existing: set[str] = set()
    for folder in {layouts.field_folder(kind, split, f) for f in layouts.FILE_FIELDS} - {None}:
        if (root_p / folder).is_dir():
            existing.update(f"{folder}/{rel}" for rel in _list_files(root_p / folder))
    existing.update(images.values())

    def has(n: str, f: str) -> bool:
        return f in expected[n] and expected[n][f] in existing

    for f in layouts.REQUIRED[kind]:
        lacking = [n for n in names if not has(n, f)]
        if lacking:
            log.warning("%s: skipping %d of %d items without a %s file, e.g. %s", root_p, len(lacking),
                        len(names), f, expected[lacking[0]][f])
            names = [n for n in names if has(n, f)]
    if not names:
        raise DataError(f"{root_p}: no {kind} item has all of {list(layouts.REQUIRED[kind])}; "
                        f"check the {layouts.field_folder(kind, split, 'label')}/ folder")

    paths: dict[str, list[str]] = {}
    incomplete: dict[str, int] = {}
    for f in layouts.FILE_FIELDS:
        present = [has(n, f) for n in names]
        if all(present):
            paths[f] = [expected[n][f] for n in names]
        elif any(present):
            incomplete[f] = present.count(False)
            first = names[present.index(False)]
            log.warning("%s: %d of %d items lack a %s file (e.g. %s); that field is unavailable", root_p,
                        incomplete[f], len(names), f, expected[first].get(f, "-"))
    return DatasetIndex(kind=kind, root=str(root), split=split, names=names, paths=paths,
                        incomplete=incomplete)


# ------------------------------------------------------------------------------------------------
# Readers (each raises a one-line DataError naming the file)


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


def read_depth_png(path: str | os.PathLike, kind: str) -> np.ndarray:
    """A dataset's own depth file → (H, W) float32 CorDA inverse depth, 1.0 = invalid (method.md §2.2).

    SYNTHIA ``Depth/Depth``: uint16 centimetres (65535 = far → exactly 1.0). GTA5 ``disparity``:
    uint16 mono "normalised disparity" → raw/256 + 1 (not metric).
    """
    raw = _read_uint16(Path(path), "depth")
    if kind == "synthia":
        return codecs.synthia_raw_to_inv(raw)
    if kind == "gta5":
        return codecs.mono_raw_to_inv(raw)
    raise DataError(f"{path}: {kind} has no depth files; its depth comes from the depth_maps HDF5")


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


def resize_depth(a: np.ndarray, hw: tuple[int, int], method: Literal["nearest", "bilinear"]) -> np.ndarray:
    """Resize an (H, W) float32 depth map. ``nearest``: PIL nearest (:func:`resize_array`). ``bilinear``: the
    original's ``cv2.resize(..., interpolation=cv2.INTER_LINEAR)``, i.e. half-pixel-centre sampling
    (align_corners=False) with the two nearest source rows/columns, no antialiasing when shrinking, so an
    invalid 1.0 next to valid depth becomes a blend of both (method.md §9.12)."""
    if a.shape[:2] == tuple(hw) or method == "nearest":
        return resize_array(a, hw, "nearest")
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    out = torch.nn.functional.interpolate(t, size=tuple(hw), mode="bilinear", align_corners=False,
                                          antialias=False)
    return out[0, 0].numpy()


# ------------------------------------------------------------------------------------------------
# Dataset


# DAFormer re-crops a rare-class sample up to 10 times (mmseg/datasets/uda_dataset.py, get_rare_class_sample).
RCS_RECROPS = 10


def _parse_key(key: Any, n: int) -> tuple[int, int, int | None]:
    """(index, draw, class or None) of an int, (index, draw) or rare-class (index, draw, class) key."""
    cls = None
    if isinstance(key, (tuple, list)):
        if len(key) not in (2, 3):
            raise TypeError(f"dataset key must be an int, (index, draw) or (index, draw, class), got {key!r}")
        i, draw = int(key[0]), int(key[1])
        if len(key) == 3:
            cls = int(key[2])
    else:
        i, draw = int(key), 0
    if not -n <= i < n:
        raise IndexError(f"index {i} out of range for {n} items")
    return i % n, draw, cls


def _hw_pair(value: Sequence[int] | None, what: str) -> tuple[int, int] | None:
    if value is None:
        return None
    hw = tuple(int(v) for v in value)
    if len(hw) != 2 or min(hw) < 1:
        raise ValueError(f"{what} must be (height, width) of positive ints, got {value!r}")
    return hw  # type: ignore[return-value]


class SegDepthDataset(torch.utils.data.Dataset):
    """Images, labels, depth and stereo/video/camera data of one :class:`DatasetIndex`.

    ``ds[i]`` or ``ds[(i, draw)]`` returns a dict with the requested fields:

    * ``"image" | "right" | "prev" | "next"``: float32 (3, h, w) RGB in [0, 1];
    * ``"label"``: int64 (h, w) trainIds, 255 = ignore;
    * ``"depth"``: float32 (1, h, w) CorDA inverse depth, exactly 1.0 = invalid, from the dataset's
      own depth files (SYNTHIA ground truth, GTA5 mono) or, with ``depth_h5``, from that HDF5 file;
    * ``"K"``: float32 (3, 3) intrinsics of the returned (resized, cropped) pixels;
    * ``"baseline"``: float32 scalar tensor, stereo baseline in metres;
    * ``"disparity"``: float32 (1, h, w) disparity in pixels of the returned resolution, NaN = invalid;
    * ``"name"`` (str) and ``"index"`` (int).

    Every field is first resized to ``resize_hw`` (images with ``image_resample``; labels, depth and
    disparity nearest-neighbour, method.md §5), then the same ``crop_hw`` window is cut from all of
    them, drawn from ``np.random.default_rng([seed, draw, index])`` (``draw`` = 0 for an int key).
    A rare-class key ``(index, draw, class)`` (:func:`corda.rcs.rcs_batch_keys`) applies DAFormer's crop
    rule: while the crop holds no more than ``class_crop_min_pixels`` pixels of ``class`` (in the resized
    label), cut the next window from the same generator, at most 10 times, and keep the last (DAFormer
    ``UDADataset.get_rare_class_sample``); the first window is the one an ``(index, draw)`` key gets.

    Args:
        index: the split to read.
        fields: any of :data:`FIELDS`.
        resize_hw: (H, W) after resizing, or None to keep each image's size.
        crop_hw: (h, w) random crop, or None for the whole (resized) image.
        depth_h5: a ``depth_maps`` HDF5 file to take "depth" from, looked up by item name.
        seed: seeds the crops together with ``(draw, index)``.
        strict: check each file's content when read (label ids within the table, label size equal
            to the image's); missing/corrupt files and wrong depth dtypes are errors regardless.
        image_resample: "bilinear" (Cityscapes in the original) or "bicubic" (the source datasets, §5).
        label_native: return "label" at its stored resolution while the images are resized (evaluation at
            the labels' full resolution, method.md §6); needs ``crop_hw`` None.
        depth_resample: "nearest" (keeps the exact 1.0 "invalid", intended) or "bilinear" (the original's
            cv2.INTER_LINEAR for GTA5 depth, which blends invalid pixels into their neighbours, §9.12).
        class_crop_min_pixels: rare-class keys re-crop until the crop has more pixels of the drawn class than
            this (``train.rcs_min_pixels · train.rcs_min_crop_ratio``); 0 = keep the first crop.
    """

    def __init__(self, index: DatasetIndex, fields: Sequence[str], resize_hw: Sequence[int] | None,
                 crop_hw: Sequence[int] | None, depth_h5: str | os.PathLike | None = None, seed: int = 0,
                 strict: bool = True, image_resample: Literal["bilinear", "bicubic"] = "bilinear",
                 pseudo_h5: str | os.PathLike | None = None, label_native: bool = False,
                 depth_resample: Literal["nearest", "bilinear"] = "nearest",
                 class_crop_min_pixels: float = 0.0) -> None:
        unknown = [f for f in fields if f not in FIELDS]
        if unknown:
            raise ValueError(f"unknown dataset fields {unknown}; choose from {list(FIELDS)}")
        if image_resample not in ("bilinear", "bicubic"):
            raise ValueError(f"image_resample must be 'bilinear' or 'bicubic', got {image_resample!r}")
        if depth_resample not in ("nearest", "bilinear"):
            raise ValueError(f"depth_resample must be 'nearest' or 'bilinear', got {depth_resample!r}")
        if label_native and crop_hw is not None:
            raise ValueError("label_native needs crop_hw=None (a crop window has no native-resolution label)")
        self.index = index
        self.fields = tuple(dict.fromkeys(fields))
        self.label_native = label_native
        self.depth_resample = depth_resample
        self.class_crop_min_pixels = float(class_crop_min_pixels)
        self.resize_hw = _hw_pair(resize_hw, "resize_hw")
        self.crop_hw = _hw_pair(crop_hw, "crop_hw")
        if self.resize_hw and self.crop_hw and any(c > r for c, r in zip(self.crop_hw, self.resize_hw)):
            raise ValueError(f"crop_hw {self.crop_hw} is larger than resize_hw {self.resize_hw}")
        self.depth_h5 = str(depth_h5) if depth_h5 is not None else None
        self.seed = int(seed)
        self.strict = strict
        self.image_resample = image_resample
        self._h5: Any = None
        self._h5_rows: list[int] = []
        self.pseudo_h5 = str(pseudo_h5) if pseudo_h5 is not None else None
        self._pl: Any = None
        self._pl_rows: list[int] = []
        if any(f in _PSEUDO for f in self.fields) and self.pseudo_h5 is None:
            raise ValueError("fields pseudo_label/pseudo_weight need pseudo_h5 (the pseudo_labels output)")
        if self.pseudo_h5 is not None:
            self._pseudo_file()
        for f in self.fields:
            if f not in _PSEUDO:
                self._check_available(f)
        if "depth" in self.fields and self.depth_h5 is not None:
            self._depth_file()  # fail at construction, not in a DataLoader worker mid-training

    def __len__(self) -> int:
        return len(self.index)

    @property
    def names(self) -> list[str]:
        return self.index.names

    def _check_available(self, f: str) -> None:
        idx = self.index
        if f == "depth" and self.depth_h5 is not None:
            return
        file_field = _FILE_OF[f]
        if idx.has(file_field):
            return
        folder = layouts.field_folder(idx.kind, idx.split, file_field)
        where = f"{idx.root} ({idx.kind}, {idx.split})"
        if folder is None:
            extra = "; pass depth_h5 (the depth_maps output)" if f == "depth" else ""
            raise DataError(f"{where}: {idx.kind} datasets have no {file_field!r} files, needed for field "
                            f"{f!r}{extra}")
        folder_p = Path(idx.root) / folder
        if file_field in idx.incomplete:
            raise DataError(f"{folder_p}: {idx.incomplete[file_field]} of {len(idx)} items lack their "
                            f"{file_field} file, needed for field {f!r}; complete that folder and re-run "
                            "`dvc repro data`")
        raise DataError(f"{folder_p}: not found, needed for field {f!r}; add that folder to the dataset and "
                        "re-run `dvc repro data`")

    def _depth_file(self) -> Any:
        """The HDF5 depth reader (opened once; pickle-safe) with the row of every item."""
        if self._h5 is None:
            from corda.h5io import DepthH5  # imported here: only datasets with depth_h5 need h5py

            self._h5, self._h5_rows = self._open_by_name(DepthH5, self.depth_h5, "depth", "depth_maps")
        return self._h5

    def _pseudo_file(self) -> Any:
        """The HDF5 pseudo-label reader (self-training) with the row of every item."""
        if self._pl is None:
            from corda.h5io import PseudoLabelH5

            self._pl, self._pl_rows = self._open_by_name(PseudoLabelH5, self.pseudo_h5, "pseudo-labels",
                                                         "pseudo_labels")
        return self._pl

    def _open_by_name(self, reader_cls: Any, path: str, what: str, stage: str) -> tuple[Any, list[int]]:
        """Open an HDF5 reader keyed by item name and find the row of every item of the index.

        ``reader_cls(path)`` must expose ``names`` and ``index_of(name)`` (the :mod:`corda.h5io` readers).
        Raises DataError naming ``what`` the file lacks and the DVC ``stage`` that writes it when any item
        of the index is missing from the file.
        """
        reader = reader_cls(path)
        known = set(reader.names)
        missing = [n for n in self.index.names if n not in known]
        if missing:
            raise DataError(f"{path}: no {what} for {len(missing)} of {len(self)} images of "
                            f"{self.index.root} (e.g. {missing[0]!r}); re-run `dvc repro {stage}`")
        return reader, [reader.index_of(n) for n in self.index.names]

    def load_raw(self, i: int) -> dict[str, Any]:
        """The requested fields of item ``i`` at their stored size, decoded and checked.

        Returns numpy arrays: views (H, W, 3) uint8, "label" (H, W) uint8 trainIds, "depth" (H', W')
        float32, "disparity" (H', W') float32 px, "K" (3, 3) float64, "baseline" float, plus "hw" =
        the image's (H, W).
        """
        idx, fields = self.index, self.fields
        img_path = idx.path("image", i)
        out: dict[str, Any] = {}
        if "image" in fields:
            out["image"] = read_rgb(img_path)
            hw = out["image"].shape[:2]
        else:
            hw = _image_hw(img_path)
        out["hw"] = hw
        for f in ("right", "prev", "next"):
            if f in fields:
                p = idx.path(f, i)
                out[f] = read_rgb(p)
                if out[f].shape[:2] != hw:  # a view of another size breaks the warping geometry
                    raise DataError(f"{p}: {f} image is {out[f].shape[0]}x{out[f].shape[1]} but the left "
                                    f"image {img_path.name} is {hw[0]}x{hw[1]}; re-extract the matching file")
        if "label" in fields:
            out["label"] = read_label(idx.path("label", i), idx.kind, hw, self.strict)
        if "depth" in fields:
            if self.depth_h5 is not None:
                out["depth"] = np.asarray(self._depth_file().inv_depth(self._h5_rows[i]), dtype=np.float32)
            else:
                out["depth"] = read_depth_png(idx.path("depth", i), idx.kind)
        if "K" in fields or "baseline" in fields:
            out["K"], out["baseline"] = read_camera(idx.path("camera", i))
        if "disparity" in fields:
            out["disparity"] = read_disparity_png(idx.path("disparity", i))
        if "pseudo_label" in fields:
            out["pseudo_label"] = np.asarray(self._pseudo_file().label(self._pl_rows[i]), dtype=np.uint8)
        if "pseudo_weight" in fields:
            out["pseudo_weight"] = np.asarray(self._pseudo_file().weight(self._pl_rows[i]), dtype=np.float32)
        return out

    def _crop_origin(self, i: int, draw: int, out_hw: tuple[int, int], cls: int | None = None,
                     label: np.ndarray | None = None) -> tuple[int, int, int, int]:
        """(y0, x0, h, w) of the crop window in the resized image; with ``cls`` and the resized ``label``,
        DAFormer's rare-class re-cropping (class docstring)."""
        if self.crop_hw is None:
            return 0, 0, out_hw[0], out_hw[1]
        ch, cw = self.crop_hw
        if ch > out_hw[0] or cw > out_hw[1]:
            raise DataError(f"{self.index.path('image', i)}: image {out_hw[0]}x{out_hw[1]} is smaller than "
                            f"the crop {ch}x{cw}; set a resize or a smaller crop")
        rng = np.random.default_rng([self.seed, draw, i])
        recrops = RCS_RECROPS if cls is not None and label is not None and self.class_crop_min_pixels > 0 else 0
        for attempt in range(recrops + 1):
            y0 = int(rng.integers(0, out_hw[0] - ch + 1))
            x0 = int(rng.integers(0, out_hw[1] - cw + 1))
            if attempt == recrops or int((label[y0:y0 + ch, x0:x0 + cw] == cls).sum()) > self.class_crop_min_pixels:
                break
        return y0, x0, ch, cw

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        i, draw, cls = _parse_key(key, len(self))
        raw = self.load_raw(i)
        h0, w0 = raw["hw"]
        out_hw = self.resize_hw or (h0, w0)
        label = None
        if cls is not None and "label" in self.fields and self.class_crop_min_pixels > 0:
            label = resize_array(raw["label"], out_hw, "nearest")
        y0, x0, ch, cw = self._crop_origin(i, draw, out_hw, cls, label)
        win = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        sample: dict[str, Any] = {"name": self.index.names[i], "index": i}
        for f in _VIEWS:
            if f in self.fields:
                a = resize_array(raw[f], out_hw, self.image_resample)[win]
                sample[f] = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1))).float().div_(255.0)
        for f in ("label", "pseudo_label"):
            if f in self.fields:
                if f == "label" and self.label_native:
                    sample[f] = torch.from_numpy(raw[f].astype(np.int64))
                    continue
                lab = resize_array(raw[f], out_hw, "nearest")[win]
                sample[f] = torch.from_numpy(lab.astype(np.int64))
        if "pseudo_weight" in self.fields:
            pw = resize_array(raw["pseudo_weight"], out_hw, "nearest")[win]
            sample["pseudo_weight"] = torch.from_numpy(np.array(pw, dtype=np.float32))
        if "depth" in self.fields:
            # Nearest keeps the exact 1.0 "invalid" value that BerHu tests with == (method.md §2.2); the
            # original resizes GTA5 depth bilinearly (cv2.INTER_LINEAR), blending invalid pixels (§9.12).
            d = resize_depth(raw["depth"].astype(np.float32, copy=False), out_hw, self.depth_resample)[win]
            sample["depth"] = torch.from_numpy(np.array(d, dtype=np.float32))[None]
        if "disparity" in self.fields:
            disp = raw["disparity"]
            scale = out_hw[1] / disp.shape[1]  # disparity is horizontal: it scales with the width
            d = resize_array(disp, out_hw, "nearest")[win] * np.float32(scale)
            sample["disparity"] = torch.from_numpy(np.array(d, dtype=np.float32))[None]
        if "K" in self.fields:
            K = raw["K"].copy()
            K[0] *= out_hw[1] / w0  # corner-origin pixels: resizing scales rows exactly (corda.geometry)
            K[1] *= out_hw[0] / h0
            K[0, 2] -= x0
            K[1, 2] -= y0
            sample["K"] = torch.from_numpy(K.astype(np.float32))
        if "baseline" in self.fields:
            sample["baseline"] = torch.tensor(raw["baseline"], dtype=torch.float32)
        return sample


def validate_index(index: DatasetIndex, max_items: int | None = None,
                   depth_h5: str | os.PathLike | None = None, strict: bool = True) -> int:
    """Open every file of every (or the first ``max_items``) item; raise the first problem as DataError.

    Checks all fields the index has (image, label, depth, stereo/video views, camera, disparity) and,
    when given, that ``depth_h5`` covers every item. Returns the number of items checked.
    """
    fields = ["image"] + [f for f in ("label", "right", "prev", "next", "disparity") if index.has(f)]
    if index.has("depth") or depth_h5 is not None:
        fields.append("depth")
    if index.has("camera"):
        fields.append("K")
    ds = SegDepthDataset(index, fields, None, None, depth_h5=depth_h5, strict=strict)
    n = len(index) if max_items is None else min(len(index), max_items)
    for i in range(n):
        ds.load_raw(i)
    log.debug("%s: checked %d of %d %s items (%s)", index.root, n, len(index), index.kind, ", ".join(fields))
    return n
