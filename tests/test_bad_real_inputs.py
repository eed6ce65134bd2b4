"""Bad input at real size (issue 28), on copies of the miniature real datasets (corda.data.miniature): a truncated
frame, a label whose size does not match its image, a frame without its label, a sequence with a missing frame.
Each is either one `error:` line naming the file before any training (the data stage's header check of every file,
or depth_pretrain's check of the views its depth.mode reads), or a documented skip with a count.

A disk too small for an artefact is tested where artefacts are written: tests/test_h5io.py
(test_disk_full_becomes_corda_error: one line, no partial file) and tests/test_bad_inputs.py
(test_failure_in_the_middle_keeps_previous_outputs: the previous outputs are kept).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import invoke_stage

ROOT = Path(__file__).resolve().parents[1]


def _params(case: Path, source: str, mode: str = "stereo") -> None:
    preset = "gta2cityscapes" if source == "gta5" else "synthia2cityscapes"
    p = yaml.safe_load((ROOT / "params" / f"{preset}.yaml").read_text())
    p["data"]["source"]["root"] = str(case / source)
    p["data"]["target"]["root"] = str(case / "cityscapes")
    p["depth"].update(mode=mode, iterations=1, batch_size=1)
    (case / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def _stage(case: Path, module: str):
    """Run ``python -m <module>`` in ``case`` in-process; returns (exit code, stderr lines, log text)."""
    res = invoke_stage(case, module)
    return res.exit_code, [ln for ln in res.stderr.splitlines() if ln.startswith("error:")], res.stderr


@pytest.fixture
def case(miniature, tmp_path) -> Path:
    """A private copy of the miniature datasets (gta5/, synthia/, cityscapes/) in a fresh workspace."""
    for d in ("gta5", "synthia", "cityscapes"):
        shutil.copytree(getattr(miniature, d), tmp_path / d, ignore=shutil.ignore_patterns("depth"))
    return tmp_path


def _one_line_naming(code, errors, path: Path, *words):
    assert code == 2, errors
    assert len(errors) == 1, errors
    assert str(path) in errors[0] and all(w in errors[0] for w in words), errors[0]


def test_truncated_frame_is_one_line_before_training(case):
    frame = next((case / "cityscapes/leftImg8bit/train").rglob("*_leftImg8bit.png"))
    data = frame.read_bytes()
    frame.write_bytes(data[: len(data) // 2])  # an interrupted unzip
    _params(case, "gta5")
    code, errors, _ = _stage(case, "stages.data")
    _one_line_naming(code, errors, frame, "truncated")
    assert not (case / "data/manifest.json").exists()  # nothing for a training stage to start from


def test_label_of_another_size_is_one_line_before_training(case):
    label = case / "gta5/labels/00001.png"
    img = Image.open(label)
    img.crop((0, 0, 1913, 1052)).save(label)  # still a palette PNG, one column short
    _params(case, "gta5")
    code, errors, _ = _stage(case, "stages.data")
    _one_line_naming(code, errors, label, "label map is 1052x1913 but its image is 1052x1914")


def test_frame_without_label_is_skipped_and_counted(case):
    assert not (case / "gta5/labels/00003.png").exists() and (case / "gta5/images/00003.png").is_file()
    _params(case, "gta5")
    code, errors, log = _stage(case, "stages.data")
    assert code == 0 and not errors, log
    assert "skipping 1 of 3 items without a label file, e.g. labels/00003.png" in log
    src = json.loads((case / "data/manifest.json").read_text())["splits"]["source"]
    assert src["names"] == ["00001", "00002"] and src["skipped"] == {"label": 1}


def test_sequence_with_a_missing_frame(case):
    """The data stage warns (count and first file) and records the field as incomplete; a depth.mode that reads
    the video neighbours then stops before training with one line naming the missing frame."""
    seq = sorted((case / "cityscapes/leftImg8bit_sequence/train").rglob("*_000018_leftImg8bit.png"))[0]
    seq.unlink()
    _params(case, "synthia", mode="mono")
    code, errors, log = _stage(case, "stages.data")
    assert code == 0 and not errors, log
    assert "1 of 2 items lack a prev file" in log and seq.name in log
    train = json.loads((case / "data/manifest.json").read_text())["splits"]["target_train"]
    assert train["incomplete"] == {"prev": 1} and "prev" not in train["paths"] and "next" in train["paths"]
    code, errors, _ = _stage(case, "stages.depth_pretrain")
    _one_line_naming(code, errors, seq, "depth.mode=mono", "1 of 2 items lack it")
    assert not (case / "models/depth").exists()
