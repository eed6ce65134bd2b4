"""Label tables: the one place where dataset label ids become Cityscapes trainIds.

Cityscapes and GTA5 store Cityscapes label ids; their id→trainId table is built from
``cityscapesscripts.helpers.labels`` rather than typed by hand. SYNTHIA-RAND-CITYSCAPES stores its
own class ids; its table is the one CorDA/DACS use (method.md §6). The class subsets of the
paper's protocols (19 for GTA5→Cityscapes, 16 and 13 for SYNTHIA→Cityscapes) and of the embedded
procedural benchmark are defined here as tuples of trainIds.
"""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _CS_LABELS

IGNORE = 255
NUM_CLASSES = 19

#: The 19 Cityscapes train classes, indexed by trainId.
CLASS_NAMES: tuple[str, ...] = tuple(
    lab.name for lab in sorted((l for l in _CS_LABELS if 0 <= l.trainId < 255), key=lambda l: l.trainId)
)
#: RGB palette of the 19 train classes, indexed by trainId.
PALETTE: np.ndarray = np.array(
    [lab.color for lab in sorted((l for l in _CS_LABELS if 0 <= l.trainId < 255), key=lambda l: l.trainId)],
    dtype=np.uint8,
)


def _build_id_to_train() -> np.ndarray:
    lut = np.full(256, IGNORE, dtype=np.uint8)
    for lab in _CS_LABELS:
        if 0 <= lab.id < 256 and 0 <= lab.trainId < 255 and not lab.ignoreInEval:
            lut[lab.id] = lab.trainId
    return lut


def _build_train_to_id() -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)  # ignore → id 0 ("unlabeled")
    for lab in _CS_LABELS:
        if 0 <= lab.trainId < 255 and not lab.ignoreInEval and lab.id >= 0:
            lut[lab.trainId] = lab.id
    return lut


#: Cityscapes label id (0..33, -1 excluded) → trainId; everything else → 255.
CITYSCAPES_ID_TO_TRAIN: np.ndarray = _build_id_to_train()
#: trainId → Cityscapes label id (255 → 0), for exporting predictions to the official evaluator.
TRAIN_TO_CITYSCAPES_ID: np.ndarray = _build_train_to_id()
#: The largest label id Cityscapes defines; larger ids in a label map are invalid input.
CITYSCAPES_MAX_ID = max(lab.id for lab in _CS_LABELS)

#: SYNTHIA class id → trainId (method.md §6); other ids → 255.
SYNTHIA_TO_TRAIN_DICT = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10,
                         10: 11, 17: 12, 8: 13, 18: 14, 19: 15, 20: 16, 12: 17, 11: 18}
SYNTHIA_TO_TRAIN: np.ndarray = np.full(256, IGNORE, dtype=np.uint8)
for _k, _v in SYNTHIA_TO_TRAIN_DICT.items():
    SYNTHIA_TO_TRAIN[_k] = _v
#: trainId → SYNTHIA id (for writing SYNTHIA-layout fixtures); 255 → 0 (void).
TRAIN_TO_SYNTHIA: np.ndarray = np.zeros(256, dtype=np.uint8)
for _k, _v in SYNTHIA_TO_TRAIN_DICT.items():
    TRAIN_TO_SYNTHIA[_v] = _k
#: The largest SYNTHIA class id (22 = lanemarking); larger ids are invalid input.
SYNTHIA_MAX_ID = 22


def _ids(*names: str) -> tuple[int, ...]:
    return tuple(CLASS_NAMES.index(n) for n in names)


#: Class sets (trainIds) over which mIoU is averaged.
CLASS_SETS: dict[str, tuple[int, ...]] = {
    "cityscapes19": tuple(range(19)),
    # SYNTHIA→Cityscapes: terrain, truck and train do not occur in SYNTHIA (method.md §6).
    "synthia16": tuple(i for i in range(19) if CLASS_NAMES[i] not in ("terrain", "truck", "train")),
    # mIoU*: the 16 classes minus wall, fence and pole.
    "synthia13": tuple(
        i for i in range(19) if CLASS_NAMES[i] not in ("terrain", "truck", "train", "wall", "fence", "pole")
    ),
    # The embedded procedural benchmark renders these ten classes (corda.data.procedural.render).
    "procedural10": _ids("road", "sidewalk", "building", "pole", "traffic sign", "vegetation",
                         "terrain", "sky", "person", "car"),
}


def map_labels(raw: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Apply a 256-entry LUT to an integer label map; returns uint8 trainIds (255 = ignore)."""
    return lut[raw.astype(np.int64, copy=False)]


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """(H, W) trainIds → (H, W, 3) uint8 RGB with the Cityscapes palette (ignore is black)."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    pal[: len(PALETTE)] = PALETTE
    return pal[train_ids]
