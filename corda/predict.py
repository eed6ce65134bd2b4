"""Applying a trained model to a user's own images: labels, overlay, depth and a difficulty map.

The network sees each image resized (bilinear, aspect ratio kept) to the model's input height, as
in evaluation (method.md §6: 512×1024 for Cityscapes); logits and depth are upsampled back to the
image's own size (bilinear, align_corners=True, as :func:`corda.inference.segment`). Images of
equal input shape are batched together, so any mix of sizes and aspect ratios works.

Outputs per image (``<stem>`` keeps the input's sub-folders):

- ``labels/<stem>.png``: uint8 trainIds (0..18), or Cityscapes label ids for the official evaluator.
- ``overlay/<stem>.png``: the image blended with the Cityscapes palette.
- ``depth/<stem>.png``: uint16 metric depth × 256 (the KITTI depth-PNG convention; 0 = invalid,
  saturates at 255.99 m) from the target depth decoder. Sky has no special value: it gets the decoder's
  far depth (tens of metres on the benchmark); ``depth_color/<stem>.png`` colourises
  inverse depth.
- ``difficulty/<stem>.png``: uint8, 255 × the relative disagreement of the source and target depth
  decoders, clip(|d_src − d_tgt| / d_tgt, 0, 1) in CorDA's inverse-depth encoding. It is 1 − ω of
  method.md §4 with the target decoder's own output standing in for the depth target that training
  uses (none exists for a new image): bright = hard to adapt.

Depth and difficulty need a model with depth decoders (corda, source_only, oracle, corda_round2);
a DACS model gives labels and overlays only.

Inputs are read as an image viewer shows them: the JPEG EXIF orientation is applied, and a 16-bit
greyscale PNG is scaled from its full 16-bit range to 8 bits (not saturated to white). Every input is
checked (headers) before the first prediction; unreadable ones are listed in one message, or skipped
with ``--skip-bad``; images under :data:`MIN_SIDE_PX` on a side get a warning. Each image's files are
written as soon as it is done, so a run that stops keeps what it finished.
"""

from __future__ import annotations

import glob
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from PIL import Image

from corda.errors import CordaError, DataError
from corda.inference import labels_at  # noqa: F401  (per-class upsampling; used below and by callers)

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".tif", ".tiff", ".webp")
DEPTH_PNG_SCALE = 256.0  # KITTI convention: uint16 = metric depth × 256, 0 = invalid
OUTPUT_DIRS = ("labels", "overlay", "depth", "depth_color", "difficulty")
H5_NAME = "predictions.h5"
#: Marks a folder predict made; ``--overwrite`` replaces only such a folder's own outputs.
MARKER = ".corda-predict.json"
#: Below this many pixels on a side an image carries too little for the network (its input is ≥ 16 px
#: after the stride-16 backbone's first stage): the maps are upsampled guesses, so the user is warned.
MIN_SIDE_PX = 32


class UnreadableImage(DataError):
    """An input image that cannot be decoded: ``problem`` says why, the message adds what to do."""

    def __init__(self, path: str | Path, problem: str, fix: str = "remove or re-export the file") -> None:
        super().__init__(f"{path}: {problem}; {fix}, or pass --skip-bad")
        self.path, self.problem = Path(path), problem


@dataclass(frozen=True)
class ImageItem:
    path: Path
    stem: str  # relative output name without suffix, e.g. "frankfurt/frankfurt_000000_000294_leftImg8bit"


def find_images(inputs: Sequence[str | Path]) -> list[ImageItem]:
    """Images named by folders (searched recursively), glob patterns or files, in a stable order.

    Output stems keep a folder's sub-folders; files and glob matches use their own name. Two inputs
    that would write the same stem, or nothing found at all, raise :class:`DataError`.
    """
    items: list[ImageItem] = []
    for spec in inputs:
        p = Path(spec)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{p}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder or below; "
                                "point at the folder that holds the frames")
            items += [ImageItem(f, str(f.relative_to(p).with_suffix(""))) for f in found]
        elif p.is_file():
            items.append(ImageItem(p, p.stem))
        elif glob.has_magic(str(spec)):
            found = sorted(Path(f) for f in glob.glob(str(spec), recursive=True)
                           if Path(f).is_file() and Path(f).suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise DataError(f"{spec}: the pattern matches no image files; check the path and quote it "
                                "so the shell does not expand it")
            items += [ImageItem(f, f.stem) for f in found]
        else:
            raise DataError(f"{p}: no such file or folder; give a folder of images, an image, or a glob pattern")
    seen: dict[str, Path] = {}
    for it in items:
        if it.stem in seen:
            raise DataError(f"{it.path} and {seen[it.stem]} would both write '{it.stem}'; "
                            "pass their common parent folder instead so sub-folders keep them apart")
        seen[it.stem] = it.path
    return items


def input_shape(h: int, w: int, input_height: int, multiple: int = 16) -> tuple[int, int]:
    """Network input (H, W) for an h×w image: height ``input_height``, aspect kept, W a multiple of ``multiple``."""
    width = max(multiple, int(round(w * input_height / h / multiple)) * multiple)
    return input_height, width


@dataclass
class Prediction:
    """One image's outputs at its own size (H, W)."""

    item: ImageItem
    image: np.ndarray  # (H, W, 3) uint8
    label: np.ndarray  # (H, W) uint8 trainIds
    depth_m: np.ndarray | None = None  # (H, W) float32 metres (target decoder)
    difficulty: np.ndarray | None = None  # (H, W) float32 in [0, 1]


def load_rgb(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB as a viewer shows the file: EXIF orientation applied, 16-bit grey scaled.

    PIL's conversion of a 16-bit greyscale image (mode I;16 or I) to RGB saturates every value above
    255 to white; here the full 16-bit range maps onto 0..255 (round(v / 257)). Floating-point images
    are refused: their range is unknown.
    """
    from PIL import ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as raw:
            img = ImageOps.exif_transpose(raw)
            if img.mode.startswith("I"):
                a = np.asarray(img).astype(np.int64)
                if a.size and (a.min() < 0 or a.max() > 65535):
                    raise UnreadableImage(path, f"a {img.mode} image with values outside 0..65535",
                                          "convert it to 8-bit RGB")
                grey = ((a + 128) // 257).astype(np.uint8)
                return np.repeat(grey[..., None], 3, axis=2)
            if img.mode == "F":
                raise UnreadableImage(path, "a floating-point image (mode F) has no defined range",
                                      "convert it to 8-bit RGB")
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnreadableImage(path, f"unreadable image ({exc})") from None


def check_inputs(items: Sequence[ImageItem]) -> tuple[list[ImageItem], list[tuple[Path, str]],
                                                        list[tuple[Path, tuple[int, int]]]]:
    """Headers of every input, before any prediction: (readable items, [(path, problem)], [(path, (H, W))]
    of images under :data:`MIN_SIDE_PX` on a side).

    PNG and JPEG structure is checked without decoding (:mod:`corda.data.check`: a 0-byte file, a
    text file named .jpg, a truncated PNG); other formats by opening their header with PIL.
    """
    from PIL import UnidentifiedImageError

    from corda.data.check import BadFile, image_header

    good, bad, small = [], [], []
    for it in items:
        try:
            if it.path.suffix.lower() in (".png", ".jpg", ".jpeg"):
                image_header(it.path)
            with Image.open(it.path) as img:
                w, h = img.size
        except BadFile as exc:
            bad.append((it.path, str(exc)))
            continue
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            bad.append((it.path, f"unreadable ({exc})"))
            continue
        good.append(it)
        if min(h, w) < MIN_SIDE_PX:
            small.append((it.path, (h, w)))
    return good, bad, small


def bad_inputs_message(bad: Sequence[tuple[Path, str]], total: int, show: int = 4, skipping: bool = False) -> str:
    """One line: how many inputs are unreadable, the first ``show`` of them, and the two ways on (or, when
    ``skipping`` with --skip-bad, that they are skipped)."""
    shown = "; ".join(f"{p}: {why}" for p, why in bad[:show])
    more = f"; and {len(bad) - show} more" if len(bad) > show else ""
    if skipping:
        return f"skipping {len(bad)} of {total} inputs, unreadable: {shown}{more}"
    return (f"{len(bad)} of {total} inputs are unreadable: {shown}{more}; remove or re-export them, or pass "
            "--skip-bad to predict the others")


def _decode(item: ImageItem, image: np.ndarray, out: dict[str, torch.Tensor], j: int) -> Prediction:
    """Upsample image ``j`` of a batch's outputs to the image's own size and decode them."""
    from corda.data.codecs import MAX_DEPTH_M, inv_to_depth
    from corda.models.outputs import upsample_outputs

    size = image.shape[:2]
    pred = Prediction(item, image, labels_at(out["S"][j], size).cpu().numpy())
    if "D" in out:
        up = {k: v[0] for k, v in upsample_outputs({k: v[j:j + 1] for k, v in out.items()}, size,
                                                    keys=("D", "D_src"), float32=True).items()}
        d_tgt = up["D"][0].clamp_min(1.0)  # encoding ≥ 1 (1.0 = farthest representable depth)
        pred.depth_m = by_rows(lambda t: np.clip(inv_to_depth(t), 0.0, MAX_DEPTH_M), d_tgt.cpu().numpy())
        pred.difficulty = ((up["D_src"][0] - d_tgt).abs() / d_tgt).clamp(0.0, 1.0).cpu().numpy()
    return pred


@torch.no_grad()
def predict_images(model: torch.nn.Module, items: Sequence[ImageItem], input_height: int, batch_size: int,
                   device: torch.device, skipped: list[tuple[Path, str]] | None = None) -> Iterator[Prediction]:
    """Predictions for ``items``, batched by network input shape; yields as soon as a batch is done.

    Memory holds at most ``batch_size`` images per distinct input shape. With ``skipped`` (a list), an
    image that fails to decode is appended to it with a warning instead of stopping the run.
    """
    model.eval()
    pending: dict[tuple[int, int], list[tuple[ImageItem, np.ndarray]]] = {}

    def run(batch: list[tuple[ImageItem, np.ndarray]], shape: tuple[int, int]) -> Iterator[Prediction]:
        x = torch.stack([torch.from_numpy(np.array(Image.fromarray(img).resize(shape[::-1], Image.BILINEAR)))
                         for _, img in batch]).permute(0, 3, 1, 2).float().div_(255.0).to(device)
        out = model(x)
        for j, (item, img) in enumerate(batch):
            yield _decode(item, img, out, j)

    for item in items:
        try:
            img = load_rgb(item.path)
        except DataError as exc:
            if skipped is None:
                raise
            why = exc.problem if isinstance(exc, UnreadableImage) else str(exc)
            log.warning("skipped %s: %s", item.path, why)
            skipped.append((item.path, why))
            continue
        shape = input_shape(img.shape[0], img.shape[1], input_height)
        pending.setdefault(shape, []).append((item, img))
        if len(pending[shape]) == batch_size:
            yield from run(pending.pop(shape), shape)
    for shape, batch in pending.items():
        yield from run(batch, shape)


def overlay(image: np.ndarray, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: the image blended with the Cityscapes colours of ``label`` (trainIds)."""
    from corda.labels import colorize

    return by_rows(lambda im, lab: (im.astype(np.float32) * (1 - alpha) + colorize(lab).astype(np.float32) * alpha
                                    + 0.5).astype(np.uint8), image, label)


def by_rows(fn, *arrays: np.ndarray, pixels: int = 1 << 20) -> np.ndarray:
    """``fn(*arrays)`` computed over blocks of about ``pixels`` pixels (whole rows) and stacked.

    For a per-pixel ``fn`` the result is identical to one call; its float temporaries stay block-sized instead of
    photo-sized (a float64 copy of a 4000x3000 map is 96 MB, an RGB one 288 MB).
    """
    h, w = arrays[0].shape[:2]
    step = max(1, pixels // max(1, w))
    return np.concatenate([fn(*(a[r:r + step] for a in arrays)) for r in range(0, h, step)]) if h else fn(*arrays)


def depth_png(depth_m: np.ndarray) -> np.ndarray:
    """Metric depth → uint16 PNG values (× 256, 0 = invalid/non-finite, saturating)."""
    d = np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(np.round(d * DEPTH_PNG_SCALE), 0, 65535).astype(np.uint16)


def depth_from_png(values: np.ndarray) -> np.ndarray:
    """Inverse of :func:`depth_png`: metres as float32, NaN where invalid (0)."""
    v = np.asarray(values).astype(np.float32)
    return np.where(v > 0, v / DEPTH_PNG_SCALE, np.nan).astype(np.float32)


def colour_depth(depth_m: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 view of inverse depth (near = bright), range from the image's own percentiles."""
    from corda.report import depth_panel

    return depth_panel(depth_m)


@dataclass
class Summary:
    images: int = 0
    with_depth: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    seconds: float = 0.0
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(256, np.int64))
    sizes: dict[tuple[int, int], int] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else math.inf


class PredictionWriter:
    """Writes each image's maps into ``out`` as soon as it is done (every file atomically).

    ``out`` must be new, empty, or a folder an earlier predict run made (it holds :data:`MARKER`).
    ``overwrite`` replaces only such a folder's own outputs (:data:`OUTPUT_DIRS`, the HDF5 file, the
    marker); nothing else in it is touched, and a folder predict did not make is never written into.
    A run that stops (an error, Ctrl-C) keeps the images it finished; the marker says how many.
    """

    def __init__(self, out: Path, label_ids: bool, h5: bool, overwrite: bool, attrs: dict | None = None) -> None:
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise CordaError(f"{self.out}: exists and is not a folder; choose another --out")
        if self.out.is_dir() and any(self.out.iterdir()):
            if not (self.out / MARKER).is_file():
                raise CordaError(f"{self.out}: not empty and not made by predict (no {MARKER}); choose a new or "
                                 "empty --out (--overwrite only replaces a folder predict made)")
            if not overwrite:
                raise CordaError(f"{self.out}: already holds predictions; pass --overwrite to replace them, or "
                                 "choose another --out")
            for d in OUTPUT_DIRS:
                shutil.rmtree(self.out / d, ignore_errors=True)
            for f in (H5_NAME, f".{H5_NAME}.partial", MARKER):
                (self.out / f).unlink(missing_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        self.label_ids, self.attrs = label_ids, attrs or {}
        self._mark(complete=False, images=0)
        self.h5 = None
        if h5:
            import h5py

            self.h5 = h5py.File(self.out / f".{H5_NAME}.partial", "w")
            self.h5.attrs.update({"label_encoding": "cityscapes_label_id" if label_ids else "train_id",
                                  "depth_unit": "m", **self.attrs})

    def _mark(self, **state) -> None:
        from corda.io import write_json

        write_json(self.out / MARKER, {"made_by": "python -m stages.predict", **self.attrs, **state})

    def write(self, p: Prediction) -> None:
        from corda.io import write_png

        def dest(kind: str) -> Path:
            path = self.out / kind / f"{p.item.stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            return path

        labels = self._labels(p.label)  # mapped once, for the PNG and the HDF5 file
        write_png(dest("labels"), labels)
        write_png(dest("overlay"), overlay(p.image, p.label))
        if p.depth_m is not None:
            write_png(dest("depth"), by_rows(depth_png, p.depth_m))
            write_png(dest("depth_color"), colour_depth(p.depth_m))
            write_png(dest("difficulty"), (p.difficulty * 255.0 + 0.5).astype(np.uint8))
        if self.h5 is not None:
            g = self.h5.create_group(p.item.stem)
            g.attrs["source"] = str(p.item.path)
            kw = {"compression": "gzip", "compression_opts": 4}
            g.create_dataset("label", data=labels, **kw)
            if p.depth_m is not None:
                g.create_dataset("depth", data=p.depth_m.astype(np.float16), **kw)
                g.create_dataset("difficulty", data=p.difficulty.astype(np.float16), **kw)

    def _labels(self, label: np.ndarray) -> np.ndarray:
        """trainIds as written: as they are, or as Cityscapes label ids (the table export_label_ids uses)."""
        from corda.labels import TRAIN_TO_CITYSCAPES_ID

        return TRAIN_TO_CITYSCAPES_ID[label.astype(np.int64)].astype(np.uint8) if self.label_ids else label

    def _close_h5(self) -> None:
        """Close the HDF5 file and give it its name: it is valid and holds the finished images."""
        if self.h5 is not None:
            self.h5.close()
            self.h5 = None
            (self.out / f".{H5_NAME}.partial").replace(self.out / H5_NAME)

    def commit(self, images: int, skipped: Sequence[tuple[Path, str]] = ()) -> None:
        self._close_h5()
        self._mark(complete=True, images=images, skipped=[str(p) for p, _ in skipped])

    def abort(self, images: int) -> None:
        """Keep what was finished; the marker records that the run stopped after ``images`` images."""
        self._close_h5()
        self._mark(complete=False, images=images)


def run_predict(model: torch.nn.Module, items: Sequence[ImageItem], writer: PredictionWriter, input_height: int,
                batch_size: int, device: torch.device, progress=None, skip_bad: bool = False,
                skipped: Sequence[tuple[Path, str]] = ()) -> Summary:
    """Predict and write every item; a run that stops keeps the images it finished (one-line error).

    ``skip_bad``: an image that fails to decode is skipped (listed in the summary) instead of stopping.
    ``skipped``: the inputs already left out ((path, problem), :func:`check_inputs`); the summary and the
    folder's marker list them first.
    """
    from corda.errors import one_line

    summary = Summary(skipped=list(skipped))
    start = time.perf_counter()
    preds: Iterable[Prediction] = predict_images(model, items, input_height, batch_size, device,
                                                 summary.skipped if skip_bad else None)
    if progress is not None:
        preds = progress(preds, len(items), "predict")
    try:
        for p in preds:
            writer.write(p)
            summary.images += 1
            summary.with_depth += p.depth_m is not None
            summary.class_pixels += np.bincount(p.label.ravel(), minlength=256)[:256]
            hw = p.image.shape[:2]
            summary.sizes[hw] = summary.sizes.get(hw, 0) + 1
        writer.commit(summary.images, summary.skipped)
    except (CordaError, KeyboardInterrupt) as exc:
        writer.abort(summary.images)
        why = "interrupted" if isinstance(exc, KeyboardInterrupt) else one_line(exc)
        raise CordaError(f"{why}; the {summary.images} of {len(items)} images finished are kept in "
                         f"{writer.out}") from exc
    except BaseException:
        writer.abort(summary.images)
        raise
    summary.seconds = time.perf_counter() - start
    return summary


def top_classes(class_pixels: np.ndarray, names: Sequence[str], k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most frequent classes as (name, percent of the pixels), leaving out any under 0.05 % (which
    a one-decimal summary would show as 0.0 %)."""
    counts = np.asarray(class_pixels[:len(names)], dtype=np.float64)
    share = 100.0 * counts / max(1.0, counts.sum())
    order = np.argsort(-share, kind="stable")[:k]
    return [(names[c], float(share[c])) for c in order if share[c] >= 0.05]


def benchmark_model_warning(model: str | Path, model_hash: str) -> str | None:
    """One line when ``model`` was trained on the embedded procedural benchmark, else None.

    A checkpoint does not record its data, but the pipeline's ``dvc.lock`` does: when an output recorded
    there has this file's md5 (``model_hash``), the ``data`` stage's params of that run say what it was
    trained on. The lock file is looked for in the working directory and above the model. A model the lock
    does not list is not judged (None).
    """
    import yaml

    model = Path(model).resolve()
    for folder in dict.fromkeys([Path.cwd(), *model.parents]):
        lock = folder / "dvc.lock"
        if not lock.is_file():
            continue
        try:
            stages = (yaml.safe_load(lock.read_text()) or {}).get("stages") or {}
            outs = [o for st in stages.values() for o in st.get("outs") or []]
            if not any(o.get("md5") == model_hash for o in outs):
                continue
            data = stages["data"]["params"]["params.yaml"]["data"]
            kinds = {side: data[side]["kind"] for side in ("source", "target")}
        except (yaml.YAMLError, OSError, KeyError, TypeError, AttributeError):
            continue
        if "procedural" in kinds.values():
            return (f"{model.name} was trained on the embedded procedural benchmark ({lock}: data.source.kind "
                    f"{kinds['source']}, data.target.kind {kinds['target']}): it knows only that rendered world, "
                    "so its labels for real photographs are confident nonsense; for real frames use a model "
                    "trained on a real-data preset (params/*.yaml, README \"Your own images\")")
        return None
    return None
