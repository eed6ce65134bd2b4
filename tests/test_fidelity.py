"""Faithful-to-the-original switches on real-data paths (issue 20): full-resolution scoring, resize filters,
the authors' released Cityscapes depth, SYNTHIA's 3-channel 16-bit depth PNGs and near SYNTHIA depth."""

import h5py
import numpy as np
import png
import pytest
import torch
from scipy.io import savemat

from corda.data import codecs
from corda.data.datasets import SegDepthDataset
from corda.data.index import scan_dataset
from corda.data.readers import read_depth_png, resize_depth
from corda.data.depth_files import read_released_depth, released_depth_path
from corda.errors import DataError
from corda.testing import write_synthia_fixture

H, W = 16, 32


# --- SYNTHIA depth PNGs: 1-channel and 3-channel 16-bit --------------------------------------------------


def _write_png16(path, a):
    a = np.asarray(a, np.uint16)
    planes = 1 if a.ndim == 2 else a.shape[2]
    with open(path, "wb") as f:
        png.Writer(a.shape[1], a.shape[0], greyscale=planes == 1, bitdepth=16).write(f, a.reshape(a.shape[0], -1))


def test_libpng_rgb_to_gray_weights():
    rgb = np.array([[[1000, 1000, 1000], [65535, 65535, 65535], [30000, 0, 0], [0, 30000, 0], [0, 0, 30000]]],
                   np.uint16)
    g = codecs.rgb16_to_gray_libpng(rgb)[0]
    # equal channels come back exactly; otherwise (9797·R + 19234·G + 3737·B + 16384) >> 15
    assert g.tolist() == [1000, 65535, (9797 * 30000 + 16384) >> 15, (19234 * 30000 + 16384) >> 15,
                          (3737 * 30000 + 16384) >> 15]
    assert g.tolist()[2:] == [8969, 17609, 3421]


def test_synthia_depth_png_in_both_layouts(tmp_path):
    raw = np.random.default_rng(0).integers(0, 65536, (H, W), dtype=np.uint16)
    raw[0, :4] = [0, 5, 10, 65535]
    one, three, mixed = tmp_path / "one.png", tmp_path / "three.png", tmp_path / "mixed.png"
    _write_png16(one, raw)
    _write_png16(three, np.stack([raw] * 3, -1))  # the SYNTHIA-RAND-CITYSCAPES layout
    rgb = np.stack([raw, raw // 2, raw // 4], -1)
    _write_png16(mixed, rgb)
    a, b = read_depth_png(one, "synthia"), read_depth_png(three, "synthia")
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, codecs.synthia_raw_to_inv(raw))
    np.testing.assert_array_equal(read_depth_png(mixed, "synthia"),
                                  codecs.synthia_raw_to_inv(codecs.rgb16_to_gray_libpng(rgb)))


def test_corrupt_16bit_colour_png_is_one_line(tmp_path):
    p = tmp_path / "bad.png"
    _write_png16(p, np.zeros((H, W, 3), np.uint16))
    p.write_bytes(p.read_bytes()[:60])
    with pytest.raises(DataError, match="bad.png: corrupt or truncated depth PNG") as e:
        read_depth_png(p, "synthia")
    assert "\n" not in str(e.value)


# --- near SYNTHIA depth survives the depth_maps round trip ------------------------------------------------


def test_near_synthia_depth_stays_valid_in_the_round_trip():
    raw = np.array([0, 5, 9, 10, 11, 500, 65535], np.uint16)
    direct = codecs.synthia_raw_to_inv(raw)  # the original: 65536 / (cm + 1), 65535 → 1.0
    z = codecs.inv_to_depth(direct)
    kept = codecs.depth_to_inv(z, min_valid_m=0.0)
    np.testing.assert_allclose(kept, direct, rtol=1e-6)
    assert kept[-1] == 1.0 and (kept[:-1] > 1.0).all()
    assert (codecs.depth_to_inv(z)[:3] == 1.0).all()  # the network/Cityscapes rule drops z < 0.1 m


# --- resize filters -----------------------------------------------------------------------------------


def test_bilinear_depth_resize_is_cv2_inter_linear_and_blends_invalid():
    a = np.array([[1.0, 3.0]], np.float32)
    # cv2.resize(a, (4, 1), interpolation=cv2.INTER_LINEAR): half-pixel centres, edge clamped
    np.testing.assert_allclose(resize_depth(a, (1, 4), "bilinear")[0], [1.0, 1.5, 2.5, 3.0])
    d = np.full((4, 4), 5.0, np.float32)
    d[:, :2] = codecs.INVALID
    up = resize_depth(d, (4, 8), "bilinear")
    assert ((up > 1.0) & (up < 5.0)).any()  # invalid 1.0 blended into its neighbours (§9.12)
    near = resize_depth(d, (4, 8), "nearest")
    assert set(np.unique(near).tolist()) == {1.0, 5.0}


def test_nearest_cv2_takes_source_row_floor_y_in_over_out():
    """cv2 INTER_NEAREST (the original's SYNTHIA depth resize, 760 → 720 rows): row floor(y·in/out), not PIL's
    floor((y + ½)·in/out); the two rules disagree on half of the output rows."""
    a = (np.arange(760, dtype=np.float32)[:, None] * 2000 + np.arange(1280, dtype=np.float32)).astype(np.float32)
    out = resize_depth(a, (720, 1280), "nearest_cv2")
    rows = [y * 760 // 720 for y in range(720)]  # integer floor: cv2's rule
    np.testing.assert_array_equal(out, a[rows])
    pil = resize_depth(a, (720, 1280), "nearest")
    assert (out[:, 0] != pil[:, 0]).sum() == 360  # half of the rows move to the next source row
    # columns too (1280 → 1024): floor(x·1280/1024)
    out = resize_depth(a, (760, 1024), "nearest_cv2")
    np.testing.assert_array_equal(out[0], a[0, [x * 1280 // 1024 for x in range(1024)]])


def test_synthia_presets_resize_depth_with_cv2_nearest():
    from corda.seg.config import TrainConfig
    from stages.common import load_params, section

    for preset in ("synthia2cityscapes", "synthia2cityscapes_daformer"):
        tc = section(load_params(f"params/{preset}.yaml"), "train", TrainConfig)
        assert tc.source_depth_resample == "nearest_cv2", preset


def _cv2_linear_reference(a: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """cv2.INTER_LINEAR written out per pixel in Python floats (double): x = (i + ½)·in/out − ½, clamped."""

    def taps(n_in, n_out):
        out = []
        for i in range(n_out):
            x = max((i + 0.5) * (n_in / n_out) - 0.5, 0.0)
            i0 = int(np.floor(x))
            f = x - i0
            out.append((min(i0, n_in - 1), min(i0 + 1, n_in - 1), f))
        return out

    a = a.astype(np.float64)
    res = np.empty(hw)
    for y, (r0, r1, fy) in enumerate(taps(a.shape[0], hw[0])):
        for x, (c0, c1, fx) in enumerate(taps(a.shape[1], hw[1])):
            top = a[r0, c0] * (1 - fx) + a[r0, c1] * fx
            bot = a[r1, c0] * (1 - fx) + a[r1, c1] * fx
            res[y, x] = top * (1 - fy) + bot * fy
    return res


def test_bilinear_depth_resize_source_coordinate_is_float64():
    """GTA5 depth 1052 → 720 rows: at valid/invalid borders (1.0 next to inverse depth ~250) a float32 source
    coordinate is off by up to ~3e-2 against cv2's double one; ours agrees to float32 rounding."""
    rng = np.random.default_rng(0)
    a = np.where(rng.random((1052, 6)) < 0.5, 1.0, rng.uniform(50, 250, (1052, 6))).astype(np.float32)
    ref = _cv2_linear_reference(a, (720, 5))
    got = resize_depth(a, (720, 5), "bilinear")
    assert got.dtype == np.float32
    assert np.abs(got - ref).max() < 1e-4
    t = torch.nn.functional.interpolate(torch.from_numpy(a)[None, None], size=(720, 5), mode="bilinear",
                                        align_corners=False)[0, 0].numpy()
    assert np.abs(t - ref).max() > 1e-3  # the float32 rule this replaces is measurably off


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthia")
    write_synthia_fixture(root, n=2, h=H, w=W, seed=3)
    return scan_dataset("synthia", root, "train")


def test_source_resize_keys_reach_the_source_dataset(syn, tmp_path):
    from corda.seg.config import TrainConfig
    from corda.seg.run import seg_datasets

    tc = TrainConfig(crop_hw=(8, 8), source_resize_hw=(24, 48), source_image_resample="bicubic",
                     source_depth_resample="bilinear")
    splits = {"source": syn, "target_train": syn, "target_val": syn}
    d = tmp_path / "depth"
    d.mkdir()
    from corda.h5io import write_depth_h5

    for dom in ("source", "target"):
        rows = [(n, codecs.synthia_raw_to_inv(np.full((H, W), 500, np.uint16)),
                 np.full((H, W), 5.0, np.float16)) for n in syn.names]
        write_depth_h5(d / f"{dom}.h5", rows, len(rows), {"mode": "ground_truth", "model_hash": "", "domain": dom,
                                                          "min_depth_m": 0.1, "max_depth_m": 100.0})
    src, tgt, _ = seg_datasets(splits, tc, d)
    assert (src.image_resample, src.depth_resample) == ("bicubic", "bilinear")
    assert (tgt.image_resample, tgt.depth_resample) == ("bilinear", "nearest")
    a = SegDepthDataset(syn, ("image",), (24, 48), None, image_resample="bicubic")[0]["image"]
    b = SegDepthDataset(syn, ("image",), (24, 48), None)[0]["image"]
    assert not torch.equal(a, b)


# --- evaluation at the labels' resolution ------------------------------------------------------------------


def test_label_native_keeps_the_label_resolution(syn):
    ds = SegDepthDataset(syn, ("image", "label"), (8, 16), None, label_native=True)
    item = ds[0]
    assert item["image"].shape[-2:] == (8, 16) and tuple(item["label"].shape) == (H, W)
    full = SegDepthDataset(syn, ("label",), None, None)[0]["label"]
    assert torch.equal(item["label"], full)
    with pytest.raises(ValueError, match="label_native"):
        SegDepthDataset(syn, ("image", "label"), (8, 16), (4, 4), label_native=True)


def test_confusion_scored_at_label_resolution_upsamples_logits(syn):
    """A model whose logits are a left/right split: scored on the native labels, not the resized ones."""
    from corda.inference import confusion_over, iterate_batches

    class Half(torch.nn.Module):
        num_classes = 19

        def forward(self, x):
            s = torch.zeros(x.shape[0], 19, x.shape[2], x.shape[3])
            s[:, 0, :, : x.shape[3] // 2] = 1
            s[:, 1, :, x.shape[3] // 2:] = 1
            return {"S": s}

    ds = SegDepthDataset(syn, ("image", "label"), (8, 16), None, label_native=True)
    cm = confusion_over(Half(), iterate_batches(ds, 2), 19, torch.device("cpu"))
    labels = torch.stack([ds[i]["label"] for i in range(len(ds))])
    assert cm.matrix.sum() == int((labels != 255).sum())  # every native-resolution pixel scored once


# --- the authors' released Cityscapes depth ------------------------------------------------------------------


def _v73(path, arr, key="depth_map"):
    with h5py.File(path, "w", userblock_size=512) as f:  # MATLAB v7.3: HDF5 after a 512-byte header
        f[key] = arr.T  # column-major, as MATLAB writes it


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_released_depth_both_matlab_formats(tmp_path, fmt):
    z = np.random.default_rng(1).uniform(0.0, 120.0, (H, W)).astype(np.float32)
    z[0, 0] = 0.05  # below 0.1 m: invalid, as the original's Cityscapes reading
    path = released_depth_path(tmp_path, "train", "aachen_000000_000019")
    assert path == tmp_path / "train" / "aachen" / "aachen_000000_000019_depth_stereoscopic.mat"
    path.parent.mkdir(parents=True)
    if fmt == "v5":
        savemat(path, {"depth_map": z.astype(np.float64)})
    else:
        _v73(path, z.astype(np.float64))
    got = read_released_depth(path, (H, W))
    np.testing.assert_allclose(got, z, rtol=1e-6)
    t = codecs.depth_to_inv(got)
    assert t[0, 0] == 1.0
    ref = 655.36 / (np.clip(z.astype(np.float64), 0, 655.35) + 0.01)  # the original's formula
    np.testing.assert_allclose(t.ravel()[1:], ref.ravel()[1:], rtol=1e-6)


@pytest.mark.parametrize("case, match", [
    ("missing", "released depth file not found"),
    ("v5_key", "MATLAB file has no 'depth_map' variable"),
    ("v73_key", "MATLAB v7.3 file has no 'depth_map' variable"),
    ("garbage", "not a readable MATLAB v5 or v7.3 file"),
    ("shape", "depth map is 8x32 but its image is 16x32"),
    ("ndim", "a 2-D numeric depth map"),
])
def test_bad_released_depth_files_are_one_line(tmp_path, case, match):
    p = tmp_path / "x_depth_stereoscopic.mat"
    if case == "v5_key":
        savemat(p, {"depth": np.zeros((H, W))})
    elif case == "v73_key":
        _v73(p, np.zeros((H, W)), key="depth")
    elif case == "garbage":
        p.write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 20)
    elif case == "shape":
        savemat(p, {"depth_map": np.zeros((8, W))})
    elif case == "ndim":
        savemat(p, {"depth_map": np.zeros((2, H, W))})
    with pytest.raises(DataError, match=match) as e:
        read_released_depth(p, (H, W))
    assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)


def test_depth_config_needs_the_files_root():
    from corda.config import from_mapping
    from corda.depth.config import DepthConfig, recorded_config
    from corda.errors import ConfigError

    with pytest.raises(ConfigError, match="depth.target_files_root"):
        from_mapping(DepthConfig, {"target": "files"}, "depth")
    cfg = from_mapping(DepthConfig, {"target": "files", "target_files_root": "x"}, "depth")
    assert "target" not in recorded_config(cfg)  # the depth network's checkpoint does not depend on it
