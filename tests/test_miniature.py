"""The miniature real datasets (corda.data.miniature): true sizes, the formats the real loaders read, and the GTA5
frame without a label, which the index skips and counts."""

import json

import numpy as np
from PIL import Image

from corda.data import check, codecs
from corda.data.datasets import SegDepthDataset
from corda.data.depth_files import read_released_depth, released_depth_path
from corda.data.index import DatasetIndex, scan_dataset
from corda.data.readers import read_depth_png, read_label


def test_true_sizes_and_formats(miniature):
    gta = scan_dataset("gta5", miniature.gta5, "train")
    syn = scan_dataset("synthia", miniature.synthia, "train")
    cs = {s: scan_dataset("cityscapes", miniature.cityscapes, s) for s in ("train", "val")}
    # header level: GTA5 labels are palette PNGs (as shipped), SYNTHIA depth is 16-bit RGB, disparity 16-bit grey
    h = {f: check.image_header(gta.path(f, 0)) for f in ("image", "label", "depth")}
    assert (h["image"].height, h["image"].width) == (1052, 1914)
    assert h["label"].color_type == check.PALETTE and (h["depth"].color_type, h["depth"].bit_depth) == (0, 16)
    h = {f: check.image_header(syn.path(f, 0)) for f in ("image", "label", "depth")}
    assert (h["image"].height, h["image"].width) == (760, 1280)
    assert (h["depth"].color_type, h["depth"].bit_depth) == (check.RGB, 16)
    assert check.check_index_files(syn.root, syn.paths) == []  # the data stage's check accepts SYNTHIA's depth
    for split, idx in cs.items():
        assert {"image", "right", "prev", "next", "label", "camera", "disparity"} <= set(idx.paths), split
        for f in ("image", "right", "prev", "next", "label", "disparity"):
            hd = check.image_header(idx.path(f, 0))
            assert (hd.height, hd.width) == (1024, 2048), (split, f)
        assert check.check_index_files(idx.root, idx.paths) == []
    # pixel level, through the real readers
    assert set(np.unique(read_label(gta.path("label", 0), "gta5"))) <= set(range(19)) | {255}
    assert (read_label(syn.path("label", 0), "synthia") != 255).any()
    t = read_depth_png(syn.path("depth", 0), "synthia")
    assert t.shape == (760, 1280) and (t == codecs.INVALID).any() and (t > 1.0).any()
    t = read_depth_png(gta.path("depth", 0), "gta5")
    assert t.shape == (1052, 1914) and (t == codecs.INVALID).any() and (t > 1.0).any()
    s = SegDepthDataset(cs["train"], ("image", "right", "prev", "next", "label", "K", "baseline", "disparity"),
                        None, None)[0]
    assert s["image"].shape == (3, 1024, 2048) and abs(float(s["baseline"]) - 0.209313) < 1e-6
    assert np.isfinite(s["disparity"].numpy()).mean() > 0.3
    z = read_released_depth(released_depth_path(miniature.cityscapes_depth, "train", cs["train"].names[0]),
                            (1024, 2048))
    assert z.dtype == np.float32 and (z > 0.1).mean() > 0.3


def test_gta5_frame_without_label_is_skipped_and_counted(miniature):
    assert (miniature.gta5 / "images" / "00003.png").is_file() and not (miniature.gta5 / "labels" / "00003.png").exists()
    idx = scan_dataset("gta5", miniature.gta5, "train")
    assert idx.names == ["00001", "00002"] and idx.skipped == {"label": 1}
    back = DatasetIndex.from_json(json.loads(json.dumps(idx.to_json())))
    assert back.skipped == {"label": 1}
    assert "skipped" not in scan_dataset("synthia", miniature.synthia, "train").to_json()  # complete: no key


def test_same_arguments_same_pixels(miniature, tmp_path):
    from corda.data.miniature import make_miniature

    again = make_miniature(tmp_path, gta5=1, gta5_unlabelled=0, datasets=["gta5"])
    for f in ("images", "labels", "disparity"):
        a = np.asarray(Image.open(again.gta5 / f / "00001.png"))
        assert np.array_equal(a, np.asarray(Image.open(miniature.gta5 / f / "00001.png"))), f
