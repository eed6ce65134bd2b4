"""`python -m stages.predict`: per-image outputs at the input's size, label ids, HDF5, bad inputs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from corda.labels import TRAIN_TO_CITYSCAPES_ID
from corda.predict import depth_from_png, depth_png, find_images, input_shape
from corda.seg.config import ModelConfig, TrainConfig
from corda.seg.model_file import build_model, save_model
from stages.predict import app

runner = CliRunner()
SIZES = {"c1/c1_000000_000001_leftImg8bit.png": (40, 72), "c1/c1_000000_000002_leftImg8bit.jpg": (50, 50),
         "c2/c2_000001_000003_leftImg8bit.png": (33, 97)}


def _model(path: Path, method: str = "corda") -> Path:
    torch.manual_seed(0)
    mcfg = ModelConfig(backbone="resnet18", output_stride=16, task_channels=16, bottleneck=8, aspp_branches=4,
                       initial_seg_head="conv1x1")
    net = build_model(mcfg, method)
    if method != "dacs":  # untrained decoders sit near the invalid code 1.0; move them to ~33 m and ~27 m
        with torch.no_grad():
            for conv in net.head_d.convs:
                conv.bias += 20.0 / len(net.head_d.convs)
            for conv in net.head_d_src.convs:
                conv.bias += 24.0 / len(net.head_d_src.convs)
    save_model(path, method=method, student=net, teacher=None, mcfg=mcfg, tcfg=TrainConfig(), history=[])
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    rng = np.random.default_rng(0)
    for name, (h, w) in SIZES.items():
        p = root / "images" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
    return root, _model(root / "corda.pt"), _model(root / "dacs.pt", "dacs")


def _run(*args: str):
    return runner.invoke(app, [*map(str, args), "--input-height", "32", "--batch-size", "2", "--device", "cpu"])


def test_outputs_have_each_inputs_size_and_valid_values(setup):
    root, model, _ = setup
    out = root / "out"
    res = _run(root / "images", "--model", model, "--out", out, "--h5")
    assert res.exit_code == 0, res.output
    assert "| images | 3 (3 with depth and difficulty) |" in res.output
    with h5py.File(out / "predictions.h5") as f:
        assert sorted(f) == ["c1", "c2"] and len(f["c1"]) == 2
        for name, (h, w) in SIZES.items():
            stem = str(Path(name).with_suffix(""))
            label = np.asarray(Image.open(out / "labels" / f"{stem}.png"))
            assert label.shape == (h, w) and label.dtype == np.uint8 and label.max() < 19
            ov = np.asarray(Image.open(out / "overlay" / f"{stem}.png"))
            assert ov.shape == (h, w, 3)
            depth = np.asarray(Image.open(out / "depth" / f"{stem}.png"))
            assert depth.shape == (h, w) and depth.dtype == np.uint16 and (depth > 0).all()
            assert np.asarray(Image.open(out / "depth_color" / f"{stem}.png")).shape == (h, w, 3)
            diff = np.asarray(Image.open(out / "difficulty" / f"{stem}.png"))
            assert diff.shape == (h, w) and diff.dtype == np.uint8
            # CorDA encoding t = 655.36 / (z + 0.01): D ≈ 20 → ≈ 33 m; |24 − 20| / 20 = 0.2 difficulty
            assert 25 < np.median(depth) / 256 < 40 and 0.1 < np.median(diff) / 255 < 0.3
            g = f[stem]
            np.testing.assert_array_equal(g["label"][()], label)
            np.testing.assert_allclose(g["depth"][()].astype(np.float32), depth_from_png(depth), rtol=2e-3, atol=4e-3)
            assert g["difficulty"].shape == (h, w) and 0 <= g["difficulty"][()].min() <= g["difficulty"][()].max() <= 1
    assert not list(root.glob(".out.partial*"))


def test_label_ids_round_trip_through_the_official_evaluator(setup, tmp_path):
    """Predictions exported as label ids and scored against themselves (as trainIds) give IoU 1."""
    from corda.metrics import official_cityscapes_results

    root, model, _ = setup
    pngs = root / "pngs"
    for name in SIZES:
        if name.endswith(".png"):
            (pngs / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(root / "images" / name, pngs / name)
    assert _run(pngs, "--model", model, "--out", tmp_path / "train").exit_code == 0
    assert _run(pngs, "--model", model, "--out", tmp_path / "ids", "--label-ids").exit_code == 0
    gt = tmp_path / "gt"
    for p in (tmp_path / "train" / "labels").rglob("*.png"):
        ids = np.asarray(Image.open(tmp_path / "ids" / "labels" / p.relative_to(tmp_path / "train" / "labels")))
        np.testing.assert_array_equal(ids, TRAIN_TO_CITYSCAPES_ID[np.asarray(Image.open(p)).astype(np.int64)])
        dest = gt / p.parent.name / p.name.replace("_leftImg8bit", "_gtFine_labelIds")
        dest.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ids).save(dest)
    res = official_cityscapes_results(gt, tmp_path / "ids" / "labels")
    present = [s for s in res["classScores"].values() if s == s]  # NaN for classes absent from both
    assert present and all(abs(s - 1.0) < 1e-9 for s in present)


def test_dacs_model_gives_labels_only(setup, tmp_path):
    root, _, dacs = setup
    res = _run(root / "images" / "c2", "--model", dacs, "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o/labels/c2_000001_000003_leftImg8bit.png").is_file()
    assert not (tmp_path / "o/depth").exists()


@pytest.mark.parametrize("case", ["empty_folder", "corrupt_image", "missing_checkpoint", "depth_checkpoint",
                                  "out_exists", "no_such_input"])
def test_bad_input_is_one_clear_line_and_writes_nothing(setup, tmp_path, case):
    root, model, _ = setup
    images, out = tmp_path / "imgs", tmp_path / "out"
    images.mkdir()
    shutil.copy(root / "images" / "c1/c1_000000_000001_leftImg8bit.png", images / "a.png")
    expect = {"empty_folder": "no images", "corrupt_image": "bad.png", "missing_checkpoint": "not found",
              "depth_checkpoint": "not a usable corda checkpoint", "out_exists": "--overwrite",
              "no_such_input": "no such file or folder"}[case]
    inputs = [images]
    if case == "empty_folder":
        inputs = [tmp_path / "empty"]
        inputs[0].mkdir()
    elif case == "corrupt_image":
        (images / "bad.png").write_bytes((images / "a.png").read_bytes()[:60])
    elif case == "missing_checkpoint":
        model = tmp_path / "nope.pt"
    elif case == "depth_checkpoint":
        torch.save({"depth": {}, "domain": "target"}, tmp_path / "target.pt")
        model = tmp_path / "target.pt"
    elif case == "out_exists":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "no_such_input":
        inputs = [tmp_path / "typo"]
    res = _run(*inputs, "--model", model, "--out", out)
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and expect in lines[0], res.output
    assert not list(tmp_path.glob(".out.partial*"))
    if case == "out_exists":
        assert (out / "keep.txt").read_text() == "mine"
    else:
        assert not out.exists()


def test_overwrite_replaces_only_predicts_own_outputs(setup, tmp_path):
    """Issue 18 §4: --overwrite replaces a folder predict made (marker file), and only its own outputs."""
    root, model, _ = setup
    out = tmp_path / "o"
    assert _run(root / "images" / "c2", "--model", model, "--out", out).exit_code == 0
    assert (out / ".corda-predict.json").is_file()
    (out / "notes.txt").write_text("mine")
    (out / "labels" / "stale.png").write_bytes(b"x")
    assert _run(root / "images" / "c2", "--model", model, "--out", out, "--overwrite").exit_code == 0
    assert not (out / "labels" / "stale.png").exists() and (out / "labels").is_dir()
    assert (out / "notes.txt").read_text() == "mine"


def test_overwrite_never_touches_a_folder_predict_did_not_make(setup, tmp_path):
    root, model, _ = setup
    out = tmp_path / "models"
    out.mkdir()
    (out / "corda.pt").write_bytes(b"precious")
    res = _run(root / "images" / "c2", "--model", model, "--out", out, "--overwrite")
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "not made by predict" in lines[0], res.output
    assert [p.name for p in out.iterdir()] == ["corda.pt"] and (out / "corda.pt").read_bytes() == b"precious"


def test_out_dot(setup, tmp_path, monkeypatch):
    """`--out .`: a clear line in a folder with other files; it works in an empty one."""
    root, model, _ = setup
    busy, empty = tmp_path / "busy", tmp_path / "empty"
    busy.mkdir()
    empty.mkdir()
    (busy / "x.txt").write_text("x")
    monkeypatch.chdir(busy)
    res = _run(root / "images" / "c2", "--model", model, "--out", ".")
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert [ln for ln in res.output.splitlines() if ln.startswith("error:")][0].startswith(
        "error: .: not empty and not made by predict"), res.output
    assert [p.name for p in busy.iterdir()] == ["x.txt"]
    monkeypatch.chdir(empty)
    assert _run(root / "images" / "c2", "--model", model, "--out", ".").exit_code == 0
    assert (empty / "labels" / "c2_000001_000003_leftImg8bit.png").is_file()


def _bad_folder(root: Path, tmp_path: Path) -> Path:
    images = tmp_path / "mixed"
    shutil.copytree(root / "images" / "c1", images)
    (images / "x.png").write_bytes(b"")
    (images / "y.jpg").write_text("not an image")
    return images


def test_bad_inputs_are_listed_in_one_line_before_anything_is_written(setup, tmp_path):
    root, model, _ = setup
    res = _run(_bad_folder(root, tmp_path), "--model", model, "--out", tmp_path / "o")
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    assert re.search(r"2 of 4 inputs are unreadable: \S*x\.png: empty file.*; \S*y\.jpg: not a JPEG.*--skip-bad",
                     lines[0]), lines[0]
    assert not (tmp_path / "o").exists()


def test_skip_bad_predicts_the_others(setup, tmp_path):
    root, model, _ = setup
    res = _run(_bad_folder(root, tmp_path), "--model", model, "--out", tmp_path / "o", "--skip-bad")
    assert res.exit_code == 0, res.output
    assert "| images | 2 " in res.output and "| skipped (unreadable) | 2:" in res.output
    assert sorted(p.stem for p in (tmp_path / "o/labels").iterdir()) == [
        "c1_000000_000001_leftImg8bit", "c1_000000_000002_leftImg8bit"]
    # The folder's record lists what the summary listed, and nothing tells the user to pass what they passed.
    marker = json.loads((tmp_path / "o" / ".corda-predict.json").read_text())
    assert marker["complete"] and sorted(Path(p).name for p in marker["skipped"]) == ["x.png", "y.jpg"]
    assert "skipping 2 of 4 inputs" in res.output and "pass --skip-bad" not in res.output


def test_skip_bad_at_decode_time_says_skipped_not_pass_skip_bad(setup, tmp_path):
    """A file whose header reads but whose data does not is skipped at decode time with a plain warning."""
    root, model, _ = setup
    images = tmp_path / "imgs"
    shutil.copytree(root / "images" / "c1", images)
    Image.fromarray(np.zeros((40, 40), np.float32), mode="F").save(images / "z.tif")  # no defined range
    res = _run(images, "--model", model, "--out", tmp_path / "o", "--skip-bad")
    assert res.exit_code == 0, res.output
    warning = [ln for ln in res.output.splitlines() if "z.tif" in ln and "WARNING" in ln]
    assert len(warning) == 1 and "no defined range" in warning[0] and "--skip-bad" not in warning[0], res.output
    marker = json.loads((tmp_path / "o" / ".corda-predict.json").read_text())
    assert [Path(p).name for p in marker["skipped"]] == ["z.tif"]


def test_summary_lists_no_class_at_zero_percent():
    from corda.labels import CLASS_NAMES
    from corda.predict import top_classes

    pixels = np.zeros(256, np.int64)
    pixels[[0, 2, 13]] = [90_000, 10_000, 3]  # car at 0.003 % would print as "car 0.0%"
    assert top_classes(pixels, CLASS_NAMES) == [("road", pytest.approx(90.0, abs=0.01)),
                                                ("building", pytest.approx(10.0, abs=0.01))]


def test_labels_at_equals_the_argmax_of_the_full_size_logits():
    """Upsampling one class at a time gives the labels of the full (C, H, W) upsampling, ties included."""
    from corda.models.outputs import upsample_outputs
    from corda.predict import labels_at

    g = torch.Generator().manual_seed(0)
    for c, (h, w), size in [(19, (17, 23), (301, 407)), (16, (8, 8), (8, 8)), (3, (5, 9), (64, 31))]:
        logits = torch.randn(c, h, w, generator=g)
        logits[1] = logits[0]  # exact ties: the first class wins, as in argmax
        logits[:, :2] = 0.0
        full = upsample_outputs({"S": logits[None]}, size, float32=True)["S"][0].argmax(0).to(torch.uint8)
        got = labels_at(logits, size)
        assert got.dtype == torch.uint8 and torch.equal(got, full), (c, h, w, size)
        assert (got != 1).all()  # class 1 never beats its tie with class 0
    half = torch.randn(19, 9, 13, generator=g).to(torch.bfloat16)  # autocast outputs are cast to fp32 first
    assert torch.equal(labels_at(half, (50, 70)),
                       upsample_outputs({"S": half[None]}, (50, 70), float32=True)["S"][0].argmax(0).to(torch.uint8))


def test_maps_computed_in_row_blocks_equal_the_whole_photo_formulas():
    """overlay, depth PNG and colour depth of a photo larger than one block are the one-shot formulas' bytes."""
    import matplotlib

    from corda.labels import colorize
    from corda.predict import by_rows, colour_depth, overlay

    rng = np.random.default_rng(0)
    h, w = 1100, 1000  # two blocks of rows
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (h, w), dtype=np.uint8)
    depth = rng.uniform(0.5, 90.0, (h, w)).astype(np.float32)
    depth[:3] = np.nan
    whole = (image.astype(np.float32) * 0.5 + colorize(label).astype(np.float32) * 0.5 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(overlay(image, label), whole)
    np.testing.assert_array_equal(by_rows(depth_png, depth), depth_png(depth))
    inv = 1.0 / np.maximum(depth.astype(np.float64), 1e-3)
    finite = np.isfinite(inv)
    lo, hi = np.percentile(inv[finite], [2.0, 98.0])
    t = np.clip((np.where(finite, inv, lo) - lo) / (hi - lo), 0.0, 1.0)
    ref = (matplotlib.colormaps["magma"](t)[..., :3] * 255.0 + 0.5).astype(np.uint8)
    ref[~finite] = 0
    np.testing.assert_array_equal(colour_depth(depth), ref)


def test_default_out_is_git_ignored_and_its_help_says_when_files_appear():
    import subprocess

    from stages import predict as stage

    ignore = [ln.strip() for ln in (Path(__file__).resolve().parents[1] / ".gitignore").read_text().splitlines()]
    default = stage.main.__wrapped__.__defaults__  # typer keeps the defaults on the function
    out = next(d for d in default if isinstance(d, Path) and d.name == "predictions")
    assert f"/{out}/" in ignore
    res = subprocess.run(["git", "check-ignore", "-q", f"{out}/x.png"], cwd=Path(__file__).resolve().parents[1])
    assert res.returncode in (0, 128)  # 0: ignored; 128: not a git checkout (a source tarball)
    import typing

    option = typing.get_type_hints(stage.main.__wrapped__, include_extras=True)["out"].__metadata__[0]
    assert "as soon as it is done" in option.help and "created when every" not in option.help


def _lock(folder: Path, model: Path, kinds: tuple[str, str]) -> None:
    from corda.io import file_hash

    data = {"source": {"kind": kinds[0], "root": "s"}, "target": {"kind": kinds[1], "root": "t"}}
    lock = {"schema": "2.0", "stages": {
        "data": {"cmd": "python -m stages.data", "params": {"params.yaml": {"data": data}}, "outs": []},
        "train_corda": {"cmd": "python -m stages.train", "outs": [
            {"path": "models/corda.pt", "hash": "md5", "md5": file_hash(model), "size": model.stat().st_size}]}}}
    import yaml

    (folder / "dvc.lock").write_text(yaml.safe_dump(lock))


def test_a_model_trained_on_the_benchmark_gets_one_warning(setup, tmp_path, monkeypatch):
    """dvc.lock lists the model (same md5) with the procedural data stage: predict says what the model knows."""
    from corda.predict import benchmark_model_warning
    from corda.io import file_hash

    root, model, _ = setup
    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    shutil.copy(model, repo / "models" / "corda.pt")
    monkeypatch.chdir(repo)
    assert benchmark_model_warning("models/corda.pt", file_hash(model)) is None  # no dvc.lock: not judged
    _lock(repo, model, ("procedural", "procedural"))
    res = _run(root / "images" / "c2", "--model", "models/corda.pt", "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    hits = [ln for ln in res.output.splitlines() if "procedural benchmark" in ln]
    assert len(hits) == 1 and "real-data preset" in hits[0], res.output
    assert benchmark_model_warning("models/corda.pt", "0" * 32) is None  # another model: not listed
    _lock(repo, model, ("gta5", "cityscapes"))
    assert benchmark_model_warning("models/corda.pt", file_hash(model)) is None


def test_a_run_that_stops_keeps_what_it_finished(setup, tmp_path, monkeypatch):
    """A file whose header is fine but whose data is not fails at decode time: the images before it stay."""
    import corda.predict as P
    from corda.errors import DataError

    root, model, _ = setup
    real = P.load_rgb

    def load(path):
        if "c2_" in str(path):
            raise DataError(f"{path}: unreadable image (broken data); remove or re-export the file")
        return real(path)

    monkeypatch.setattr(P, "load_rgb", load)
    out = tmp_path / "o"
    res = runner.invoke(app, [str(root / "images"), "--model", str(model), "--out", str(out), "--input-height",
                              "32", "--batch-size", "1", "--device", "cpu"])
    assert res.exit_code == 2
    line = [ln for ln in res.output.splitlines() if ln.startswith("error:")][0]
    assert "c2_000001_000003_leftImg8bit.png: unreadable" in line
    assert "the 2 of 3 images finished are kept in" in line
    assert len(list((out / "labels").rglob("*.png"))) == 2
    assert json.loads((out / ".corda-predict.json").read_text())["complete"] is False


def test_16bit_grey_is_scaled_not_saturated(setup, tmp_path):
    from corda.predict import load_rgb

    root, model, _ = setup
    ramp = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    rgb = load_rgb(tmp_path / "g16.png")
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[..., 0], np.round(ramp / 257.0).astype(np.uint8))
    assert (rgb[..., 0] == rgb[..., 2]).all() and rgb.min() == 0 and rgb.max() == 255
    assert _run(tmp_path / "g16.png", "--model", model, "--out", tmp_path / "o").exit_code == 0


def test_jpeg_exif_orientation_is_applied(setup, tmp_path):
    from corda.predict import load_rgb

    root, model, _ = setup
    a = np.zeros((40, 80, 3), np.uint8)
    a[:, :40] = 255  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.fromarray(a).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    rgb = load_rgb(tmp_path / "phone.jpg")
    assert rgb.shape == (80, 40, 3)
    assert rgb[:30].mean() > 200 and rgb[50:].mean() < 50  # the white half is now on top
    assert _run(tmp_path / "phone.jpg", "--model", model, "--out", tmp_path / "o").exit_code == 0
    assert Image.open(tmp_path / "o/labels/phone.png").size == (40, 80)


def test_tiny_image_warns(setup, tmp_path):
    root, model, _ = setup
    Image.new("RGB", (8, 8), (100, 50, 20)).save(tmp_path / "tiny.png")
    res = _run(tmp_path / "tiny.png", "--model", model, "--out", tmp_path / "o")
    assert res.exit_code == 0, res.output
    assert "| under 32 px | 1 |" in res.output


def test_input_shape_keeps_aspect_and_depth_png_round_trips():
    assert input_shape(1024, 2048, 512) == (512, 1024)
    assert input_shape(128, 256, 128) == (128, 256)
    h, w = input_shape(375, 1242, 256)
    assert h == 256 and w % 16 == 0 and abs(w / h - 1242 / 375) < 16 / 256
    d = np.array([[0.5, 12.25], [np.nan, 300.0]], np.float32)
    back = depth_from_png(depth_png(d))
    np.testing.assert_allclose(back[0], d[0], atol=1 / 256)
    assert np.isnan(back[1, 0]) and back[1, 1] == pytest.approx(65535 / 256)


def test_find_images_rejects_clashing_names(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / sub / "x.png")
    assert [i.stem for i in find_images([tmp_path])] == ["a/x", "b/x"]
    with pytest.raises(Exception, match="both write 'x'"):
        find_images([tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"])
