"""The dataset index (step 1 of :mod:`corda.data.datasets`): :func:`scan_dataset` lists the items of a split once
and records, per field, the relative path of every item's file (:mod:`corda.data.layouts` rules); the data stage
writes the resulting :class:`DatasetIndex` into the manifest.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from corda.data import layouts
from corda.errors import DataError

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
        skipped: ``{required file field: number of images skipped for lacking it}`` (GTA5 frames without
            their label, as in copies of GTA5 that hold 24,941 labels for 24,966 frames).
    """

    kind: str
    root: str
    split: str
    names: list[str]
    paths: dict[str, list[str]]
    incomplete: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

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

    def lacking(self, file_field: str) -> str:
        """For error messages: how many items lack ``file_field`` and the first missing file, e.g.
        ``" (1 of 2 items lack it, e.g. /data/cs/leftImg8bit_sequence/train/x/x_000000_000018_leftImg8bit.png)"``;
        "" when every item has it or none does (a layout without the field)."""
        n = self.incomplete.get(file_field, 0)
        if not n:
            return ""
        for i, name in enumerate(self.names):
            rel = layouts.field_paths(self.kind, self.split, name, self.paths["image"][i]).get(file_field)
            if rel is not None and not (Path(self.root) / rel).is_file():
                return f" ({n} of {len(self)} items lack it, e.g. {Path(self.root) / rel})"
        return f" ({n} of {len(self)} items lack it)"

    def path(self, file_field: str, i: int) -> Path:
        """Absolute (root-joined) path of item ``i``'s ``file_field`` file."""
        return Path(self.root) / self.paths[file_field][i]

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (relative paths only; ``root`` separate)."""
        obj = {"format": _INDEX_FORMAT, "kind": self.kind, "root": str(self.root), "split": self.split,
               "names": list(self.names), "paths": {k: list(v) for k, v in self.paths.items()},
               "incomplete": dict(self.incomplete)}
        if self.skipped:  # only then: a complete dataset's manifest keeps its bytes
            obj["skipped"] = dict(self.skipped)
        return obj

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
                   incomplete=dict(obj.get("incomplete", {})), skipped=dict(obj.get("skipped", {})))


def _list_files(folder: Path) -> Iterator[str]:
    """Relative POSIX paths of all non-hidden files below ``folder`` (one walk, no per-file stat)."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = Path(dirpath).relative_to(folder).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        for fn in filenames:
            if not fn.startswith("."):  # atomic-write temporaries are hidden (corda.io)
                yield prefix + fn


def resolved_note(root: str | os.PathLike) -> str:
    """What a relative ``root`` in a message is relative to (the working directory; DVC runs the stages in the
    repository root) and where that puts it; empty for an absolute root."""
    p = Path(root)
    return "" if p.is_absolute() else f" (relative to the working directory: {Path.cwd() / p})"


def scan_dataset(kind: str, root: str | os.PathLike, split: str) -> DatasetIndex:
    """List the items of ``split`` of the ``kind`` dataset under ``root`` (see :mod:`corda.data.layouts`).

    Items are the image files, sorted by name. For SYNTHIA and GTA5 an image without its label map
    is skipped with one warning that counts the skipped images and names the first missing label (a source
    item needs its labels; copies of GTA5 in circulation lack 25 labels), and the count is kept in
    ``skipped``; every other field is recorded when
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
        raise DataError(f"{root_p}: {kind} dataset root not found{resolved_note(root_p)}; {hint} to the folder "
                        f"that holds {img_rel}/ (an absolute path, or one relative to the repository root)")
    img_dir = root_p / img_rel
    if not img_dir.is_dir():
        raise DataError(f"{img_dir}: folder not found, so {root_p}{resolved_note(root_p)} is not a {kind} root with a "
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

    skipped_counts: dict[str, int] = {}
    for f in layouts.REQUIRED[kind]:
        lacking = [n for n in names if not has(n, f)]
        if lacking:
            skipped_counts[f] = len(lacking)
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
                        incomplete=incomplete, skipped=skipped_counts)
