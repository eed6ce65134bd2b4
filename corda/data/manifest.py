"""The data stage's manifest: which dataset indexes the later stages read, and the class set to score.

The manifest (``data/manifest.json``) holds one :class:`~corda.data.index.DatasetIndex` per split
(``source``, ``target_train``, ``target_val``) as JSON, plus the dataset kinds. Later stages depend
on this small file instead of hashing a multi-GB dataset tree.
"""

from __future__ import annotations

from pathlib import Path

from corda.errors import DataError
from corda.io import read_json

SPLITS = ("source", "target_train", "target_val")


def load_manifest(path: str | Path) -> dict:
    """Read and check a manifest; a missing or stale one tells the user to re-run the data stage."""
    if not Path(path).is_file():
        raise DataError(f"{path}: file not found; run the data stage first: `dvc repro data` "
                        "(or `python -m stages.data`)")
    m = read_json(path)
    missing = [s for s in SPLITS if s not in m.get("splits", {})]
    if missing:
        raise DataError(f"{path}: manifest lacks split(s) {missing}; re-run `dvc repro data`")
    return m


def load_splits(path: str | Path) -> dict:
    """{split name: DatasetIndex} from the manifest."""
    from corda.data.index import DatasetIndex

    m = load_manifest(path)
    return {s: DatasetIndex.from_json(m["splits"][s]) for s in SPLITS}


def class_set_name(manifest: dict) -> str:
    """The evaluation protocol's class set: the paper's for real data, the rendered ten classes otherwise."""
    kind = manifest.get("source_kind", "procedural")
    return {"procedural": "procedural10", "gta5": "cityscapes19", "synthia": "synthia16"}[kind]


# Labelled tuning split (issue 17): recipe and benchmark choices are made on target *train* scenes, whose labels the
# rendered benchmark (and Cityscapes) provide; target val is kept for reporting. The last items by name: the
# unlabelled training pool still contains them, as any held-in tuning subset of real target data would.
TUNING_ITEMS = 200


def _take(index, part: slice):
    """``index`` restricted to the items in ``part`` (names and every field's paths alike)."""
    import dataclasses

    return dataclasses.replace(index, names=index.names[part],
                               paths={f: rels[part] for f, rels in index.paths.items()}, incomplete={})


def _tuning_start(target_train, n: int) -> int:
    """Where the tuning split (the last ``n`` items, or all of a shorter split) begins."""
    return len(target_train) - min(n, len(target_train))


def tuning_split(target_train, n: int = TUNING_ITEMS):
    """The labelled tuning split: the last ``n`` items of the target train :class:`DatasetIndex`."""
    if not target_train.has("label"):
        raise DataError("the target train split has no labels: a tuning split needs them")
    return _take(target_train, slice(_tuning_start(target_train, n), None))


def training_part(target_train, n: int = TUNING_ITEMS):
    """The target train items outside :func:`tuning_split` (what a labelled model may train on when it is
    scored on the tuning split)."""
    return _take(target_train, slice(0, _tuning_start(target_train, n)))
