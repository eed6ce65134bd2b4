"""On-disk layouts of SYNTHIA-RAND-CITYSCAPES, GTA5 and Cityscapes (method.md §7): path rules only.

Each layout says where an item's files live relative to the dataset root, given the item's *name*
(the image file's stem without suffix):

* ``synthia``  (split ``train`` only)::

      RGB/NNNNNNN.png                            image (RGB)
      synthia_mapped_to_cityscapes/NNNNNNN.png    label: SYNTHIA class ids (8-bit)
      Depth/Depth/NNNNNNN.png                     depth: uint16 centimetres, 65535 = far

* ``gta5``  (split ``train`` only)::

      images/NNNNN.png                            image
      labels/NNNNN.png                            label: Cityscapes label ids (often palette mode)
      disparity/NNNNN.png                         depth: uint16 mono "normalised disparity" (optional)

* ``cityscapes``  (splits ``train``, ``val``; name = ``<city>_<seq:06d>_<frame:06d>``)::

      leftImg8bit/<split>/<city>/<name>_leftImg8bit.png
      rightImg8bit/<split>/<city>/<name>_rightImg8bit.png
      leftImg8bit_sequence/<split>/<city>/<city>_<seq>_<frame±1:06d>_leftImg8bit.png   prev / next
      gtFine/<split>/<city>/<name>_gtFine_labelIds.png
      camera/<split>/<city>/<name>_camera.json
      disparity/<split>/<city>/<name>_disparity.png

Cityscapes depth targets come from the pipeline's HDF5 file, never from a folder, so ``cityscapes``
has no ``depth`` file field. Relative paths are POSIX strings so manifests are machine-independent.
"""

from __future__ import annotations

import re

KINDS: tuple[str, ...] = ("synthia", "gta5", "cityscapes")
SPLITS: dict[str, tuple[str, ...]] = {"synthia": ("train",), "gta5": ("train",),
                                      "cityscapes": ("train", "val")}
#: The params.yaml key that names each kind's root (for error messages only; the library reads no params).
ROOT_PARAM: dict[str, str] = {"synthia": "data.source.root", "gta5": "data.source.root",
                              "cityscapes": "data.target.root"}
#: Every per-item file a layout can have, in a fixed order.
FILE_FIELDS: tuple[str, ...] = ("image", "label", "depth", "right", "prev", "next", "camera", "disparity")
#: Fields an item must have to be listed at all: a source dataset is useless without its labels.
REQUIRED: dict[str, tuple[str, ...]] = {"synthia": ("image", "label"), "gta5": ("image", "label"),
                                        "cityscapes": ("image",)}

_CS_NAME = re.compile(r"^(?P<city>.+)_(?P<seq>\d{6})_(?P<frame>\d{6})$")
_CS_LEFT_SUFFIX = "_leftImg8bit.png"


def check_kind(kind: str) -> None:
    """ValueError for an unknown kind (a programming error: params validation allows only KINDS)."""
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {list(KINDS)}")


def image_folder(kind: str, split: str) -> str:
    """Folder (relative to the root) whose files enumerate the items of ``split``."""
    return {"synthia": "RGB", "gta5": "images", "cityscapes": f"leftImg8bit/{split}"}[kind]


def field_folder(kind: str, split: str, field: str) -> str | None:
    """Top folder of one field (for listing files and for error messages); None if the layout lacks it."""
    folders = {
        "synthia": {"image": "RGB", "label": "synthia_mapped_to_cityscapes", "depth": "Depth/Depth"},
        "gta5": {"image": "images", "label": "labels", "depth": "disparity"},
        "cityscapes": {"image": f"leftImg8bit/{split}", "right": f"rightImg8bit/{split}",
                       "prev": f"leftImg8bit_sequence/{split}", "next": f"leftImg8bit_sequence/{split}",
                       "label": f"gtFine/{split}", "camera": f"camera/{split}",
                       "disparity": f"disparity/{split}"},
    }[kind]
    return folders.get(field)


def name_of_image(kind: str, rel: str) -> str | None:
    """Item name of an image path relative to :func:`image_folder`, or None if it is not an item image.

    SYNTHIA/GTA5: any ``*.png`` directly in the folder. Cityscapes: ``<city>/<name>_leftImg8bit.png``
    with a ``<city>_<seq>_<frame>`` name.
    """
    parts = rel.split("/")
    if kind in ("synthia", "gta5"):
        if len(parts) == 1 and parts[0].endswith(".png") and not parts[0].startswith("."):
            return parts[0][: -len(".png")]
        return None
    if len(parts) == 2 and parts[1].endswith(_CS_LEFT_SUFFIX):
        name = parts[1][: -len(_CS_LEFT_SUFFIX)]
        if _CS_NAME.match(name):
            return name
    return None


def field_paths(kind: str, split: str, name: str, image_rel: str | None = None) -> dict[str, str]:
    """Expected relative path of every file field of item ``name`` (whether or not it exists).

    Args:
        image_rel: the image path as found on disk (Cityscapes: its folder gives the city); when
            None the city is the name's prefix, as in the official layout.
    """
    if kind == "synthia":
        return {"image": f"RGB/{name}.png", "label": f"synthia_mapped_to_cityscapes/{name}.png",
                "depth": f"Depth/Depth/{name}.png"}
    if kind == "gta5":
        return {"image": f"images/{name}.png", "label": f"labels/{name}.png",
                "depth": f"disparity/{name}.png"}
    m = _CS_NAME.match(name)
    if m is None:
        raise ValueError(f"{name!r} is not a Cityscapes name <city>_<seq:06d>_<frame:06d>")
    city = image_rel.split("/")[-2] if image_rel else m["city"]
    d = f"{split}/{city}"
    paths = {
        "image": f"leftImg8bit/{d}/{name}_leftImg8bit.png",
        "right": f"rightImg8bit/{d}/{name}_rightImg8bit.png",
        "label": f"gtFine/{d}/{name}_gtFine_labelIds.png",
        "camera": f"camera/{d}/{name}_camera.json",
        "disparity": f"disparity/{d}/{name}_disparity.png",
    }
    frame = int(m["frame"])
    # The video neighbours are the frames just before and after the annotated one (method.md §2.1:
    # Monodepth2 on leftImg8bit_sequence); frame 0 has no predecessor.
    for field, f in (("prev", frame - 1), ("next", frame + 1)):
        if 0 <= f <= 999_999:
            paths[field] = f"leftImg8bit_sequence/{d}/{m['city']}_{m['seq']}_{f:06d}_leftImg8bit.png"
    return paths
