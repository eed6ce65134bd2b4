"""What each HDF5 artefact holds: the depth-map and pseudo-label schemas (the format: :mod:`corda.h5io`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

#: Root attribute listing the attributes stored as JSON text (dicts).
JSON_ATTRS_KEY = "json_attrs"
DEPTH_MODES = ("ground_truth", "stereo", "mono", "mono+stereo", "files")
DEPTH_ENCODING = (
    "inv_depth t = 655.36/(z+0.01) for metric depth z in metres (mono: raw/256+1, not metric); "
    "t >= 1 and t == 1.0 = invalid. depth_m: metres, NaN = invalid"
)
_NAMES = "names"


@dataclass(frozen=True)
class H5Schema:
    """What a file of one ``kind`` holds: per-image datasets (dtype), required attributes, producing stage."""

    kind: str
    datasets: Mapping[str, np.dtype]
    required_attrs: tuple[str, ...]
    stage: str


DEPTH_SCHEMA = H5Schema(
    kind="depth",
    datasets={"inv_depth": np.dtype(np.float32), "depth_m": np.dtype(np.float16)},
    required_attrs=(
        "encoding", "min_depth_m", "max_depth_m", "mode", "model_hash", "domain", "height", "width",
    ),
    stage="depth_maps",
)

PSEUDO_SCHEMA = H5Schema(
    kind="pseudo_labels",
    datasets={
        "label": np.dtype(np.uint8),
        "confidence": np.dtype(np.float16),
        "depth_weight": np.dtype(np.float16),
        "weight": np.dtype(np.float16),
    },
    required_attrs=(
        "class_names", "threshold", "checkpoint_hash", "params", "weight_rule", "height", "width",
    ),
    stage="pseudo_labels",
)

_SCHEMAS = {s.kind: s for s in (DEPTH_SCHEMA, PSEUDO_SCHEMA)}
