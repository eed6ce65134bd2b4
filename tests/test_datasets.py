"""Dataset loaders: format round trips, resize/crop geometry, determinism and one-line data errors."""

import json

import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import labels as cs_labels
from PIL import Image

from corda import labels as L
from corda.data.datasets import SegDepthDataset, validate_index
from corda.data.index import DatasetIndex, FIELDS, scan_dataset
from corda.errors import DataError
from corda.testing import write_cityscapes_fixture, write_gta5_fixture, write_synthia_fixture

H, W = 32, 64


@pytest.fixture(scope="module")
def cs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cityscapes")
    return root, write_cityscapes_fixture(root, n_train=3, n_val=2, h=H, w=W, seed=1, disparity_px=2)


@pytest.fixture(scope="module")
def gta(tmp_path_factory):
    root = tmp_path_factory.mktemp("gta5")
    return root, write_gta5_fixture(root, n=3, h=H, w=W, seed=2)


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthia")
    return root, write_synthia_fixture(root, n=3, h=H, w=W, seed=3)


def _img(a):
    return torch.from_numpy(a.transpose(2, 0, 1).astype(np.float32) / 255.0)


# --- label tables -----------------------------------------------------------------------------------


def test_label_tables_equal_cityscapesscripts_and_method_md():
    for lab in cs_labels:
        if 0 <= lab.id <= L.CITYSCAPES_MAX_ID:
            expected = lab.trainId if 0 <= lab.trainId < 19 else 255
            assert L.CITYSCAPES_ID_TO_TRAIN[lab.id] == expected, lab.name
    assert [int(np.flatnonzero(L.CITYSCAPES_ID_TO_TRAIN == t)[0]) for t in range(19)] == [
        7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
    assert (L.CITYSCAPES_ID_TO_TRAIN[L.CITYSCAPES_MAX_ID + 1:] == 255).all()
    synthia = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 16: 9, 1: 10, 10: 11, 17: 12, 8: 13,
               18: 14, 19: 15, 20: 16, 12: 17, 11: 18}  # method.md §6
    assert {i: int(L.SYNTHIA_TO_TRAIN[i]) for i in range(256) if L.SYNTHIA_TO_TRAIN[i] != 255} == synthia


# --- round trips --------------------------------------------------------------------------------------


def test_cityscapes_round_trip(cs):
    root, planted = cs
    for split in ("train", "val"):
        idx = scan_dataset("cityscapes", root, split)
        assert idx.names == [it.name for it in planted[split]]
        assert set(idx.paths) == {"image", "label", "right", "prev", "next", "camera", "disparity"}
        ds = SegDepthDataset(idx, [f for f in FIELDS if f not in ("depth", "pseudo_label", "pseudo_weight")], None, None)
        for i, it in enumerate(planted[split]):
            s = ds[i]
            assert s["name"] == it.name and s["index"] == i
            for f in ("image", "right", "prev", "next"):
                assert s[f].dtype == torch.float32 and torch.equal(s[f], _img(getattr(it, f))), f
            assert s["label"].dtype == torch.int64 and np.array_equal(s["label"].numpy(), it.train_ids)
            assert (s["label"].numpy() == 255).any() and (s["label"].numpy() < 19).any()
            np.testing.assert_allclose(s["K"].numpy(), it.K, rtol=1e-6)
            assert s["baseline"].shape == () and abs(float(s["baseline"]) - it.baseline_m) < 1e-6
            np.testing.assert_array_equal(s["disparity"][0].numpy(), it.disparity_px)  # NaN positions too
            # Stereo consistency: the left pixel x appears at x - d in the right image.
            d = int(np.nanmax(it.disparity_px))
            assert torch.equal(s["image"][:, :, d:], s["right"][:, :, :-d])


def test_gta5_round_trip_reads_palette_indices_and_mono_depth(gta):
    root, planted = gta
    assert Image.open(root / "labels" / "00001.png").mode == "P"
    idx = scan_dataset("gta5", root, "train")
    assert idx.names == ["00001", "00002", "00003"] and idx.has("depth")
    ds = SegDepthDataset(idx, ("image", "label", "depth"), None, None)
    for i, it in enumerate(planted):
        s = ds[i]
        assert torch.equal(s["image"], _img(it.image))
        assert np.array_equal(s["label"].numpy(), it.train_ids)
        assert s["depth"].shape == (1, H, W) and s["depth"].dtype == torch.float32
        np.testing.assert_array_equal(s["depth"][0].numpy(), it.inv_depth)
        assert (s["depth"] == 1.0).any()


def test_synthia_round_trip(syn):
    root, planted = syn
    idx = scan_dataset("synthia", root, "train")
    assert idx.names == ["0000000", "0000001", "0000002"]
    ds = SegDepthDataset(idx, ("image", "label", "depth"), None, None)
    for i, it in enumerate(planted):
        s = ds[i]
        assert np.array_equal(s["label"].numpy(), it.train_ids)
        np.testing.assert_allclose(s["depth"][0].numpy(), it.inv_depth, rtol=1e-6)
        far = np.isnan(it.depth_m)
        assert far.any() and (s["depth"][0].numpy()[far] == 1.0).all()


def test_depth_from_h5_by_name(cs, tmp_path):
    from corda.data.codecs import depth_to_inv
    from corda.h5io import write_depth_h5

    root, planted = cs
    idx = scan_dataset("cityscapes", root, "train")
    items = [(it.name, depth_to_inv(it.depth_m), it.depth_m.astype(np.float16)) for it in planted["train"]]
    path = tmp_path / "target.h5"
    attrs = {"min_depth_m": 0.1, "max_depth_m": 100.0, "mode": "stereo", "model_hash": "",
             "domain": "cityscapes"}
    write_depth_h5(path, reversed(items), len(items), attrs)
    ds = SegDepthDataset(idx, ("depth",), None, None, depth_h5=path)
    for i, (_, inv, _) in enumerate(items):  # stored in reverse order: looked up by name, not row
        np.testing.assert_array_equal(ds[i]["depth"][0].numpy(), inv)
    with pytest.raises(DataError, match="cityscapes datasets have no 'depth'"):
        SegDepthDataset(idx, ("depth",), None, None)
    val = scan_dataset("cityscapes", root, "val")
    with pytest.raises(DataError, match="target.h5.*frankfurt"):
        SegDepthDataset(val, ("depth",), None, None, depth_h5=path)


# --- resize, crop, determinism ------------------------------------------------------------------------


def test_resize_scales_K_and_disparity_and_keeps_invalid_depth(cs, syn):
    root, planted = cs
    ds = SegDepthDataset(scan_dataset("cityscapes", root, "train"), ("image", "label", "K", "disparity"),
                         (H // 2, W // 2), None)
    it, s = planted["train"][0], ds[0]
    assert s["image"].shape == (3, H // 2, W // 2) and s["label"].shape == (H // 2, W // 2)
    K = it.K.copy()
    K[:2] /= 2
    np.testing.assert_allclose(s["K"].numpy(), K, rtol=1e-6)
    valid = np.isfinite(s["disparity"].numpy())
    assert valid.any() and np.allclose(s["disparity"].numpy()[valid], np.nanmax(it.disparity_px) / 2)
    assert np.array_equal(s["label"].numpy(), it.train_ids[::2, ::2])  # 4-px blocks: nearest is exact
    sroot, splanted = syn
    sidx = scan_dataset("synthia", sroot, "train")
    sd = SegDepthDataset(sidx, ("depth",), (H // 2, W // 2), None)[0]["depth"]
    assert set(np.unique(sd.numpy())) <= set(np.unique(splanted[0].inv_depth)) and (sd == 1.0).any()


def test_crop_is_aligned_across_fields(cs):
    root, _ = cs
    idx = scan_dataset("cityscapes", root, "train")
    fields = ("image", "label", "right", "next", "K", "disparity")
    full = SegDepthDataset(idx, fields, (24, 48), None)[(2, 0)]
    crop = SegDepthDataset(idx, fields, (24, 48), (16, 16), seed=5)[(2, 9)]
    offsets = [(y, x) for y in range(24 - 16 + 1) for x in range(48 - 16 + 1)
               if torch.equal(full["image"][:, y:y + 16, x:x + 16], crop["image"])]
    assert len(offsets) == 1
    y, x = offsets[0]
    for f in ("label", "right", "next"):
        assert torch.equal(full[f][..., y:y + 16, x:x + 16], crop[f]), f
    disp = full["disparity"][..., y:y + 16, x:x + 16]
    assert torch.equal(disp.nan_to_num(-1), crop["disparity"].nan_to_num(-1))
    K = full["K"].clone()
    K[0, 2] -= x
    K[1, 2] -= y
    assert torch.allclose(crop["K"], K)


def test_same_key_same_sample_and_draw_moves_the_crop(gta):
    root, _ = gta
    idx = scan_dataset("gta5", root, "train")
    a = SegDepthDataset(idx, ("image", "label", "depth"), (30, 60), (8, 8), seed=3)
    b = SegDepthDataset(idx, ("image", "label", "depth"), (30, 60), (8, 8), seed=3)
    for key in ((1, 0), (1, 7), (2, 123)):
        sa, sb = a[key], b[key]
        assert all(torch.equal(sa[k], sb[k]) for k in ("image", "label", "depth"))
    assert not all(torch.equal(a[(1, 0)]["image"], a[(1, d)]["image"]) for d in range(1, 6))
    # A DataLoader with (index, draw) keys gives collated batches.
    batch = next(iter(torch.utils.data.DataLoader(a, batch_sampler=[[(0, 0), (2, 1)]])))
    assert batch["image"].shape == (2, 3, 8, 8) and batch["name"] == ["00001", "00003"]


def test_index_json_round_trip_is_relative(cs, tmp_path):
    root, _ = cs
    idx = scan_dataset("cityscapes", root, "train")
    obj = json.loads(json.dumps(idx.to_json()))
    assert all(not p.startswith("/") and str(root) not in p for ps in obj["paths"].values() for p in ps)
    back = DatasetIndex.from_json(obj)
    assert back == idx
    moved = DatasetIndex.from_json(obj, root=tmp_path)
    assert moved.path("label", 0) == tmp_path / idx.paths["label"][0]


def test_scan_records_only_complete_fields(tmp_path):
    root = tmp_path / "cs"
    write_cityscapes_fixture(root, 2, 1, H, W, seed=0, sequence=False, disparity=False)
    next(iter((root / "rightImg8bit" / "train").rglob("*.png"))).unlink()
    idx = scan_dataset("cityscapes", root, "train")
    assert set(idx.paths) == {"image", "label", "camera"} and idx.incomplete == {"right": 1}
    with pytest.raises(DataError, match=r"rightImg8bit.*1 of 2 items"):
        SegDepthDataset(idx, ("image", "right"), None, None)
    with pytest.raises(DataError, match=r"leftImg8bit_sequence/train: not found"):
        SegDepthDataset(idx, ("image", "prev"), None, None)


# --- errors -------------------------------------------------------------------------------------------


def test_scan_errors_name_the_folder_and_the_fix(tmp_path, gta):
    with pytest.raises(DataError, match=r"nowhere.*set data.target.root in params.yaml"):
        scan_dataset("cityscapes", tmp_path / "nowhere", "train")
    (tmp_path / "cs" / "leftImg8bit" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match=r"leftImg8bit/val: folder not found"):
        scan_dataset("cityscapes", tmp_path / "cs", "val")
    with pytest.raises(DataError, match=r"leftImg8bit/train: no cityscapes images"):
        scan_dataset("cityscapes", tmp_path / "cs", "train")
    with pytest.raises(DataError, match=r"no split 'val'"):
        scan_dataset("gta5", gta[0], "val")


@pytest.fixture
def syn_copy(tmp_path):
    root = tmp_path / "syn"
    write_synthia_fixture(root, n=2, h=H, w=W, seed=4)
    return root


def _fails(root, kind, fields, fname, match=None, **kw):
    idx = scan_dataset(kind, root, "train")
    ds = SegDepthDataset(idx, fields, None, None, **kw)
    with pytest.raises(DataError) as info:
        ds[0]
    msg = str(info.value)
    assert fname in msg and "\n" not in msg
    if match:
        assert match in msg
    with pytest.raises(DataError, match=fname):
        validate_index(idx, max_items=1)
    return msg


def test_missing_and_corrupt_files(syn_copy):
    idx = scan_dataset("synthia", syn_copy, "train")
    (syn_copy / "Depth" / "Depth" / "0000000.png").unlink()  # deleted after indexing
    with pytest.raises(DataError, match="0000000.png: file not found"):
        SegDepthDataset(idx, ("depth",), None, None)[0]
    rgb = syn_copy / "RGB" / "0000000.png"
    rgb.write_bytes(rgb.read_bytes()[:200])
    _fails(syn_copy, "synthia", ("image",), "RGB/0000000.png", "corrupt or truncated")


def test_label_of_another_size(syn_copy):
    label = syn_copy / "synthia_mapped_to_cityscapes" / "0000000.png"
    Image.fromarray(np.zeros((H, W + 4), np.uint8)).save(label)
    _fails(syn_copy, "synthia", ("image", "label"), "synthia_mapped_to_cityscapes/0000000.png", "32x68")
    s = SegDepthDataset(scan_dataset("synthia", syn_copy, "train"), ("label",), None, None, strict=False)[0]
    assert s["label"].shape == (H, W)


def test_label_ids_outside_the_table(syn_copy, tmp_path):
    ids = np.full((H, W), 3, np.uint8)
    ids[0, 0] = L.SYNTHIA_MAX_ID + 1
    Image.fromarray(ids).save(syn_copy / "synthia_mapped_to_cityscapes" / "0000000.png")
    _fails(syn_copy, "synthia", ("label",), "0000000.png", "[23]")
    root = tmp_path / "cs"
    write_cityscapes_fixture(root, 1, 0, H, W, seed=0, val_cities=("frankfurt",))
    lab = next(iter(root.rglob("*_gtFine_labelIds.png")))
    Image.fromarray(np.full((H, W), 200, np.uint8)).save(lab)
    _fails(root, "cityscapes", ("label",), lab.name, "0..33")


def test_depth_png_of_the_wrong_dtype(syn_copy):
    depth = syn_copy / "Depth" / "Depth" / "0000000.png"
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(depth)
    msg = _fails(syn_copy, "synthia", ("depth",), "Depth/Depth/0000000.png")
    assert "3-channel uint8" in msg and "16-bit (uint16) PNG, single-channel or RGB" in msg
    Image.fromarray(np.zeros((H, W), np.uint8)).save(depth)
    _fails(syn_copy, "synthia", ("depth",), "Depth/Depth/0000000.png", "uint16")


def test_camera_json_without_its_keys(tmp_path):
    root = tmp_path / "cs"
    write_cityscapes_fixture(root, 1, 0, H, W, seed=0)
    cam = next(iter(root.rglob("*_camera.json")))
    cam.write_text(json.dumps({"extrinsic": {"pitch": 0.0}, "intrinsic": {"fx": 100.0, "fy": 100.0}}))
    msg = _fails(root, "cityscapes", ("image", "K"), cam.name)
    assert "extrinsic.baseline" in msg and "intrinsic.u0" in msg


def test_validate_index_passes_on_good_data_and_respects_max_items(cs, syn_copy):
    root, _ = cs
    assert validate_index(scan_dataset("cityscapes", root, "train")) == 3
    Image.fromarray(np.zeros((H, W), np.uint8)).save(syn_copy / "Depth" / "Depth" / "0000001.png")
    idx = scan_dataset("synthia", syn_copy, "train")
    assert validate_index(idx, max_items=1) == 1  # the bad second item is not opened
    with pytest.raises(DataError, match="0000001.png"):
        validate_index(idx)


def test_tuning_split_and_training_part_partition_target_train():
    # The oracle scored on the tuning split must never train on it (benchmarks/tune.py, issue 17).
    from corda.data.manifest import training_part, tuning_split

    names = [f"c_{i:06d}" for i in range(7)]
    idx = DatasetIndex("cityscapes", "r", "train", names,
                       {"image": [f"img/{n}.png" for n in names], "label": [f"lab/{n}.png" for n in names]},
                       incomplete={"right": 2})
    tune, rest = tuning_split(idx, 3), training_part(idx, 3)
    assert tune.names == names[-3:] and rest.names == names[:-3]
    for part in (tune, rest):
        assert part.paths["image"] == [f"img/{n}.png" for n in part.names]
        assert part.paths["label"] == [f"lab/{n}.png" for n in part.names]
    assert tuning_split(idx, 50).names == names and training_part(idx, 50).names == []
    unlabelled = DatasetIndex("cityscapes", "r", "train", names, {"image": idx.paths["image"]})
    with pytest.raises(DataError, match="no labels"):
        tuning_split(unlabelled, 3)


def test_a_relative_root_in_an_error_says_what_it_is_relative_to(tmp_path, monkeypatch):
    """``../gta5`` alone does not tell the user where it was looked for: the message resolves it."""
    work = tmp_path / "repo"
    work.mkdir()
    monkeypatch.chdir(work)
    with pytest.raises(DataError) as err:
        scan_dataset("gta5", "../gta", "train")
    msg = str(err.value)
    assert msg.startswith("../gta: gta5 dataset root not found (relative to the working directory: ")
    assert f"{work}/../gta)" in msg and "data.source.root" in msg
    (tmp_path / "cs").mkdir()
    with pytest.raises(DataError) as err:  # a root without the split's folder: the same note
        scan_dataset("cityscapes", "../cs", "val")
    assert f"so ../cs (relative to the working directory: {work}/../cs) is not a cityscapes root" in str(err.value)
    with pytest.raises(DataError) as err:  # an absolute root is shown as it is
        scan_dataset("gta5", tmp_path / "gta", "train")
    assert "working directory" not in str(err.value)
