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

Step 1 lives in :mod:`corda.data.index`, the format readers in :mod:`corda.data.readers`, steps 2 and 3 here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch

from corda.data import layouts
from corda.data.index import FIELDS, _FILE_OF, _PSEUDO, _VIEWS, DatasetIndex
from corda.data.readers import (
    _image_hw,
    read_camera,
    read_depth_png,
    read_disparity_png,
    read_label,
    read_rgb,
    resize_array,
    resize_depth,
)
from corda.errors import DataError

log = logging.getLogger(__name__)


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
      own depth files (SYNTHIA ground truth, GTA5 mono; read where they lie, nothing is copied) or, with
      ``depth_h5``, from that HDF5 file;
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
        depth_resample: "nearest" (PIL's pixel-centre rule; keeps the exact 1.0 "invalid", intended),
            "nearest_cv2" (the original's cv2.INTER_NEAREST for SYNTHIA depth, source row floor(y·in/out)) or
            "bilinear" (the original's cv2.INTER_LINEAR for GTA5 depth, which blends invalid pixels, §9.12);
            :func:`corda.data.readers.resize_depth`.
        class_crop_min_pixels: rare-class keys re-crop until the crop has more pixels of the drawn class than
            this (``train.rcs_min_pixels · train.rcs_min_crop_ratio``); 0 = keep the first crop.
        depth_through_metres: the dataset's own depth files pass through float32 metres and back
            (:func:`corda.data.codecs.inv_through_metres`): source ground truth as segmentation training reads
            it. Ignored with ``depth_h5``.
    """

    def __init__(self, index: DatasetIndex, fields: Sequence[str], resize_hw: Sequence[int] | None,
                 crop_hw: Sequence[int] | None, depth_h5: str | os.PathLike | None = None, seed: int = 0,
                 strict: bool = True, image_resample: Literal["bilinear", "bicubic"] = "bilinear",
                 pseudo_h5: str | os.PathLike | None = None, label_native: bool = False,
                 depth_resample: Literal["nearest", "nearest_cv2", "bilinear"] = "nearest",
                 class_crop_min_pixels: float = 0.0, depth_through_metres: bool = False) -> None:
        unknown = [f for f in fields if f not in FIELDS]
        if unknown:
            raise ValueError(f"unknown dataset fields {unknown}; choose from {list(FIELDS)}")
        if image_resample not in ("bilinear", "bicubic"):
            raise ValueError(f"image_resample must be 'bilinear' or 'bicubic', got {image_resample!r}")
        if depth_resample not in ("nearest", "nearest_cv2", "bilinear"):
            raise ValueError(f"depth_resample must be 'nearest', 'nearest_cv2' or 'bilinear', got {depth_resample!r}")
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
        self.depth_through_metres = bool(depth_through_metres)
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
                out["depth"] = read_depth_png(idx.path("depth", i), idx.kind, self.depth_through_metres)
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
