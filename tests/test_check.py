"""corda.data.check (header-only dataset file checks) and corda.io.staged_outputs, issue 18 §2–§3."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from corda.data import check
from corda.errors import DataError, one_line
from corda.io import staged_outputs, write_png


def _png(path: Path, a: np.ndarray) -> Path:
    write_png(path, a)
    return path


def test_png_header_reads_size_depth_and_colour(tmp_path):
    h = check.png_header(_png(tmp_path / "a.png", np.zeros((5, 7, 3), np.uint8)))
    assert (h.height, h.width, h.bit_depth, h.color_type) == (5, 7, 8, 2)
    h = check.png_header(_png(tmp_path / "d.png", np.zeros((4, 6), np.uint16)))
    assert (h.height, h.width, h.bit_depth, h.color_type) == (4, 6, 16, 0)


@pytest.mark.parametrize("cut,why", [(0, "empty file"), (5, "bad signature"), (40, "truncated"),
                                     (-12, "no IEND"), (-1, "truncated")])
def test_png_damage_is_found_without_decoding(tmp_path, cut, why):
    rng = np.random.default_rng(0)
    data = _png(tmp_path / "a.png", rng.integers(0, 255, (64, 64, 3), np.uint8)).read_bytes()
    (tmp_path / "b.png").write_bytes(data[:cut] if cut else b"")
    with pytest.raises(check.BadFile, match=why):
        check.png_header(tmp_path / "b.png")


def test_jpeg_markers(tmp_path):
    Image.new("RGB", (9, 4)).save(tmp_path / "a.jpg")
    h = check.image_header(tmp_path / "a.jpg")
    assert (h.height, h.width) == (4, 9)
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "b.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(check.BadFile, match="no EOI"):
        check.image_header(tmp_path / "b.jpg")
    (tmp_path / "c.jpg").write_text("not a jpeg")
    with pytest.raises(check.BadFile, match="no SOI"):
        check.image_header(tmp_path / "c.jpg")


def test_check_item_collects_every_problem(tmp_path):
    files = {"image": _png(tmp_path / "i.png", np.zeros((8, 16, 3), np.uint8)),
             "right": _png(tmp_path / "r.png", np.zeros((8, 8, 3), np.uint8)),
             "label": _png(tmp_path / "l.png", np.zeros((8, 16, 3), np.uint8)),
             "disparity": _png(tmp_path / "d.png", np.zeros((8, 16), np.uint8)),
             "camera": tmp_path / "c.json"}
    (tmp_path / "c.json").write_text(json.dumps({"extrinsic": {"baseline": 0.2}, "intrinsic": {"fx": 1}}))
    problems = dict((p.name, why) for p, why in check.check_item(files))
    assert problems == {
        "r.png": "right image is 8x8 but its image is 8x16",
        "l.png": "label map is 3-channel uint8; one channel of ids (PNG mode L or P) is needed",
        "d.png": "disparity PNG is single-channel uint8; a 16-bit (uint16) PNG, single-channel or RGB, is expected",
        "c.json": "camera JSON lacks ['intrinsic.fy', 'intrinsic.u0', 'intrinsic.v0'] "
                  "(expected the Cityscapes camera format)"}


def test_bad_files_message_is_one_line_with_count_paths_and_fix():
    problems = [(Path(f"x/{i}.png"), "truncated") for i in range(5)]
    msg = check.bad_files_message(problems, 100)
    assert "\n" not in msg
    assert msg.startswith("5 of 100 dataset files are bad: x/0.png: truncated; x/1.png: truncated; x/2.png")
    assert "x/3.png" not in msg and "and 2 more" in msg and "re-extract" in msg


class _Bad(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        raise DataError(f"data/x/{i}.png: corrupt or truncated image; re-extract or re-render this file")


def test_one_line_unwraps_a_loader_worker_error():
    with pytest.raises(DataError) as direct:
        next(iter(torch.utils.data.DataLoader(_Bad(), num_workers=0)))
    with pytest.raises(DataError) as worker:
        next(iter(torch.utils.data.DataLoader(_Bad(), num_workers=1)))
    assert "DataLoader worker" in str(worker.value)  # torch's wrapping, which one_line undoes
    assert one_line(worker.value) == one_line(direct.value) == (
        "data/x/0.png: corrupt or truncated image; re-extract or re-render this file")


def test_staged_outputs_swaps_on_success_and_keeps_old_on_failure(tmp_path):
    f, d = tmp_path / "m.json", tmp_path / "out"
    f.write_text("old")
    d.mkdir()
    (d / "old.txt").write_text("old")
    for exc in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(exc), staged_outputs(f, d) as st:
            st[f].write_text("new")
            st[d].mkdir()
            raise exc()
        assert f.read_text() == "old" and [p.name for p in d.iterdir()] == ["old.txt"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "out"]
    with staged_outputs(f, d) as st:
        st[f].write_text("new")
        st[d].mkdir()
        (st[d] / "new.txt").write_text("new")
    assert f.read_text() == "new" and [p.name for p in d.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "out"]


def test_staged_outputs_recovers_from_a_kill(tmp_path):
    """A run killed in the swap left the old output aside; one killed earlier left a staging folder."""
    f = tmp_path / "m.json"
    (tmp_path / ".m.json.old-123").write_text("old")
    (tmp_path / ".m.json.staging-456").mkdir()
    with pytest.raises(RuntimeError), staged_outputs(f):
        raise RuntimeError
    assert f.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]
    with staged_outputs(f, enabled=False) as st:
        assert st == {f: f}
