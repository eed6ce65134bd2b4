"""Cheap structural checks of every dataset file, so a bad download is found by the data stage.

Decoding every image of a real dataset takes minutes (Cityscapes: 5,000 fine images plus their right
views, sequence frames, labels and disparities); an interrupted unzip or a full disk leaves truncated
files that would otherwise surface an hour into training. These checks read only headers:

* PNG: the 8-byte signature, then every chunk's 8-byte header (length, type), seeking over the data,
  until ``IEND``; a chunk that ends past the end of the file, a missing ``IEND`` or an ``IHDR`` that
  is not first is an error. ``IHDR`` gives the size, bit depth and colour type, compared with what the
  readers in :mod:`corda.data.datasets` need (label maps one channel, depth/disparity 16-bit grey or RGB,
  views the size of their image).
* JPEG: the SOI marker at the start and EOI at the end.
* JSON (Cityscapes camera files): parsed, with the keys :func:`corda.data.readers.read_camera` uses.

CRCs and pixel data are not checked (that is decoding); the data stage still decodes the first
``data.validate_items`` items of each split in full.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: PNG colour types (IHDR): 0 grey, 2 RGB, 3 palette, 4 grey+alpha, 6 RGBA.
GREY, RGB, PALETTE, RGBA = 0, 2, 3, 6
#: Keys of a camera JSON that are read (corda.data.readers.read_camera).
CAMERA_KEYS = {"extrinsic": ("baseline",), "intrinsic": ("fx", "fy", "u0", "v0")}


class BadFile(ValueError):
    """A file fails a structural check; the message says what is wrong (without the path)."""


@dataclass(frozen=True, slots=True)
class ImageHeader:
    """What an image's header says: (height, width) in pixels, bits per sample, PNG colour type."""

    height: int
    width: int
    bit_depth: int
    color_type: int | None = None  # None for JPEG


def png_header(path: str | os.PathLike) -> ImageHeader:
    """Walk a PNG's chunk headers (no decoding) and return its IHDR; raise :class:`BadFile` if incomplete."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if f.read(8) != PNG_SIGNATURE:
            raise BadFile("not a PNG (bad signature)" if size else "empty file (0 bytes)")
        pos, header, first = 8, None, True
        while True:
            head = f.read(8)
            if len(head) < 8:
                raise BadFile(f"truncated at byte {size} of a PNG (no IEND chunk)")
            length, ctype = struct.unpack(">I4s", head)
            end = pos + 8 + length + 4  # chunk header, data, CRC
            if end > size:
                raise BadFile(f"truncated: chunk {ctype.decode('latin-1')!r} ends at byte {end} "
                              f"of a {size}-byte file")
            if first:
                if ctype != b"IHDR" or length != 13:
                    raise BadFile("corrupt PNG (IHDR is not the first chunk)")
                w, h, depth, color = struct.unpack(">IIBB", f.read(10))
                header = ImageHeader(h, w, depth, color)
                first = False
            if ctype == b"IEND":
                return header
            pos = end
            f.seek(pos)


def jpeg_header(path: str | os.PathLike) -> ImageHeader:
    """Check a JPEG's SOI/EOI markers and read its size from the first SOFn segment."""
    with open(path, "rb") as f:
        data = f.read(2)
        if data != b"\xff\xd8":
            raise BadFile("not a JPEG (no SOI marker)")
        f.seek(-2, os.SEEK_END)
        if f.read(2) != b"\xff\xd9":
            raise BadFile("truncated JPEG (no EOI marker at the end)")
        f.seek(2)
        while True:  # segments: FFxx + 2-byte length, until a start-of-frame
            marker = f.read(4)
            if len(marker) < 4 or marker[0] != 0xFF:
                raise BadFile("corrupt JPEG (no frame header)")
            kind, length = marker[1], struct.unpack(">H", marker[2:])[0]
            if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):
                depth, h, w = struct.unpack(">BHH", f.read(5))
                return ImageHeader(h, w, depth)
            f.seek(length - 2, os.SEEK_CUR)


def image_header(path: str | os.PathLike) -> ImageHeader:
    """:func:`png_header` or :func:`jpeg_header` by suffix; a missing file is a :class:`BadFile`."""
    path = Path(path)
    if not path.is_file():
        raise BadFile("file not found")
    if path.suffix.lower() in (".jpg", ".jpeg"):
        return jpeg_header(path)
    return png_header(path)


def camera_problem(obj: object) -> str | None:
    """What a parsed camera JSON lacks (None if it has every key read_camera uses)."""
    missing = [f"{sec}.{k}" for sec, keys in CAMERA_KEYS.items() for k in keys
               if not isinstance(obj, dict) or not isinstance(obj.get(sec), dict) or k not in obj[sec]]
    return f"camera JSON lacks {missing} (expected the Cityscapes camera format)" if missing else None


def header_problem(file_field: str, header: ImageHeader, image: ImageHeader | None) -> str | None:
    """What is wrong with a ``file_field`` file's header, given its item's image header (None if fine).

    Mirrors the readers: views (right/prev/next) are the image's size; a label map is one channel
    (grey or palette) of the image's size; depth and disparity are 16-bit, grey or RGB(A).
    """
    what = "label map" if file_field == "label" else f"{file_field} image"
    if file_field in ("right", "prev", "next", "label") and image is not None:
        if (header.height, header.width) != (image.height, image.width):
            return (f"{what} is {header.height}x{header.width} but its image is "
                    f"{image.height}x{image.width}")
    if file_field == "label" and header.color_type not in (GREY, PALETTE):
        return f"label map is {_layout(header)}; one channel of ids (PNG mode L or P) is needed"
    # 16-bit grey, or 16-bit RGB(A) as SYNTHIA-RAND-CITYSCAPES ships its depth (three equal channels, read as
    # cv2's grey conversion: corda.data.readers._read_png16_colour).
    if file_field in ("depth", "disparity") and (header.color_type not in (GREY, RGB, RGBA)
                                                 or header.bit_depth != 16):
        return (f"{file_field} PNG is {_layout(header)}; a 16-bit (uint16) PNG, single-channel or RGB, is expected")
    return None


def _layout(header: ImageHeader) -> str:
    """E.g. "single-channel uint8", "3-channel uint16", "palette 8-bit" (the words the readers use)."""
    channels = {0: "single-channel", 2: "3-channel", 3: "palette", 4: "2-channel", 6: "4-channel"}
    kind = channels.get(header.color_type, f"colour type {header.color_type}")
    return f"{kind} uint{header.bit_depth}" if header.bit_depth in (8, 16) else f"{kind} {header.bit_depth}-bit"


def check_item(files: Mapping[str, Path]) -> list[tuple[Path, str]]:
    """Check one item's files ``{file field: path}``; returns ``[(path, problem)]`` (empty if all fine)."""
    problems: list[tuple[Path, str]] = []
    image = None
    if "image" in files:
        try:
            image = image_header(files["image"])
        except (BadFile, OSError) as exc:
            problems.append((files["image"], str(exc)))
    for f, path in files.items():
        if f == "image":
            continue
        try:
            if path.suffix.lower() == ".json":
                if not path.is_file():
                    raise BadFile("file not found")
                try:
                    obj = json.loads(path.read_bytes())
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise BadFile(f"not valid JSON ({exc})") from exc
                problem = camera_problem(obj) if f == "camera" else None
            else:
                problem = header_problem(f, image_header(path), image)
        except (BadFile, OSError) as exc:
            problem = str(exc)
        if problem:
            problems.append((path, problem))
    return problems


def index_items(root: str | os.PathLike, paths: Mapping[str, Sequence[str]]) -> list[dict[str, Path]]:
    """A split's items as :func:`check_item` takes them (``paths``: the :class:`DatasetIndex` field → relative
    paths): ``[{file field: root / relative path}]``, one per item."""
    root = Path(root)
    n = len(next(iter(paths.values()), []))
    return [{f: root / rels[i] for f, rels in paths.items()} for i in range(n)]


#: Items one checking process takes at least: a pool costs about 0.1-0.3 s to start (forking a process that has
#: imported numpy and torch), the check about 1 ms an item, so smaller sets are checked in this process.
MIN_ITEMS_PER_PROCESS = 1000


def check_processes(n_items: int, workers: int) -> int:
    """How many processes :func:`check_items` uses for ``n_items`` items with up to ``workers``."""
    return max(1, min(workers, n_items // MIN_ITEMS_PER_PROCESS))


def check_items(items: Sequence[Mapping[str, Path]], workers: int = 1) -> list[tuple[Path, str]]:
    """:func:`check_item` over every item, in up to ``workers`` processes (:func:`check_processes`); the problems
    come in item order, so the result (and the one-line message made from it) is the same for every count.

    At real size the check opens about 30,000 files (GTA5 or SYNTHIA, and Cityscapes with its views), each a
    few seeks and small reads: on a cold disk or a network file system much of the time is waiting, which
    several processes overlap. Chunks of items keep the inter-process traffic small.
    """
    processes = check_processes(len(items), workers)
    if processes == 1:
        return [p for item in items for p in check_item(item)]
    from concurrent.futures import ProcessPoolExecutor

    chunk = max(1, min(64, len(items) // (4 * processes)))
    with ProcessPoolExecutor(max_workers=processes) as pool:
        return [p for found in pool.map(check_item, items, chunksize=chunk) for p in found]


def check_index_files(root: str | os.PathLike, paths: Mapping[str, Sequence[str]],
                      workers: int = 1) -> list[tuple[Path, str]]:
    """Check every file of a split (``paths``: the :class:`DatasetIndex` field → relative paths)."""
    return check_items(index_items(root, paths), workers)


def bad_files_message(problems: Sequence[tuple[Path, str]], checked: int, show: int = 3) -> str:
    """One line: how many files are bad, the first ``show`` with their problem, and the fix."""
    shown = "; ".join(f"{p}: {why}" for p, why in problems[:show])
    more = f"; and {len(problems) - show} more" if len(problems) > show else ""
    return (f"{len(problems)} of {checked} dataset files are bad: {shown}{more}; re-extract, re-download or "
            "re-export them (an interrupted unzip or a full disk truncates files), or fix the dataset root in params.yaml")


def count_files(paths: Iterable[Mapping[str, Sequence[str]]]) -> int:
    return sum(len(rels) for p in paths for rels in p.values())
