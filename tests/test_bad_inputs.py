"""Bad inputs at the stage level (issue #8, "Reliability: bad input"): one table of cases per stage.

Every case starts from a good tiny workspace (the smoke profile cut to 1-step runs, built once per
module), breaks ONE thing (a dataset file, an HDF5 file or checkpoint from an earlier stage, or a
params key of the stage's own section), runs the stage and checks what a user sees:

* exit code 2 (``stages.common.stage_main`` turns a CordaError into it), no traceback;
* exactly one stderr line starting with ``error:``, naming the offending file or params key and
  saying what to do about it;
* none of the stage's declared outputs (dvc.yaml ``outs``/``metrics``/``plots``) exist afterwards,
  and no atomic-write temporaries (``.<name>.tmp-<pid>-*``, corda.io.temp_beside) are left anywhere.

The library-level format errors are tested in test_datasets.py and test_h5io.py; here they must
reach the command line intact. Stages run in-process through typer's CliRunner (torch is imported
once, which keeps the file fast on 2 cores); ``test_real_process_exit_code`` runs one case as a
real ``python -m stages.<name>`` process to show the CliRunner view equals the process's.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from corda.io import read_image, write_json, write_png
from corda.testing import write_cityscapes_fixture, write_synthia_fixture

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Stage:
    module: str
    args: tuple[str, ...]
    inputs: tuple[str, ...]  # paths (relative to the workspace) linked from the good workspace
    outputs: tuple[str, ...]  # dvc.yaml outs + metrics + plots of the stage


STAGES = {
    "data": Stage("stages.data", (), (), ("data/benchmark", "data/manifest.json")),
    "depth_pretrain": Stage("stages.depth_pretrain", (), ("data",),
                            ("models/depth", "dvclive/depth_pretrain")),
    "depth_maps": Stage("stages.depth_maps", (), ("data", "models/depth"), ("depth", "metrics/depth.json")),
    "train": Stage("stages.train", ("--method", "corda"), ("data", "depth"),
                   ("models/corda.pt", "dvclive/train_corda")),
    "pseudo_labels": Stage("stages.pseudo_labels", (), ("data", "depth", "models/corda.pt"),
                           ("pseudo/target.h5", "metrics/pseudo_labels.json",
                            "plots/pseudo_label_accuracy.json", "plots/pseudo_label_accuracy.png")),
    "self_train": Stage("stages.self_train", (), ("data", "depth", "models/corda.pt", "pseudo"),
                        ("models/corda_round2.pt", "dvclive/self_train")),
    "evaluate": Stage("stages.evaluate", (), ("data", "models/corda.pt"),
                      ("metrics/top", "metrics/adabn", "metrics/eval.json", "metrics/results.md", "eval")),
}


def _tiny_params() -> dict:
    """The smoke profile cut down to one step per training stage and a handful of 32x64 images."""
    p = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    p["data"]["procedural"].update(height=32, width=64, num_source=4, num_target_train=4, num_target_val=2)
    p["depth"].update(iterations=1, batch_size=1, num_scales=1)
    p["run"]["depth"].update(checkpoint_every=1, log_every=1)
    p["model"].update(task_channels=16, bottleneck=8)
    p["train"].update(iterations=1, batch_source=1, batch_target=1, crop_hw=[32, 32])
    p["run"]["train"].update(eval_every=0, eval_items=1, checkpoint_every=1, log_every=1)
    p["self_train"].update(iterations=1)
    p["pseudo_labels"].update(batch_size=4)
    p["evaluate"].update(batch_size=4, strip_items=1)
    return p


def run_stage(cwd: Path, stage: str):
    """Run one stage in ``cwd`` through typer's CliRunner; returns the click Result."""
    st = STAGES[stage]
    app = importlib.import_module(st.module).app
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    old = os.getcwd()
    os.chdir(cwd)
    try:
        return CliRunner().invoke(app, list(st.args), env={"CORDA_LOG_LEVEL": "WARNING"})
    finally:
        os.chdir(old)
        root.handlers[:] = handlers  # setup_logging pointed the root logger at the runner's stream
        root.setLevel(level)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A workspace where data, depth_pretrain, depth_maps, train --method corda and pseudo_labels ran."""
    d = tmp_path_factory.mktemp("good")
    (d / "params.yaml").write_text(yaml.safe_dump(_tiny_params(), sort_keys=False))
    for stage in ("data", "depth_pretrain", "depth_maps", "train", "pseudo_labels"):
        res = run_stage(d, stage)
        assert res.exit_code == 0, f"{stage}: {res.exception!r}\n{res.stderr[-3000:]}"
    return d


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Path:
    """Tiny SYNTHIA and Cityscapes folders in their real on-disk formats (for the data stage)."""
    d = tmp_path_factory.mktemp("real")
    write_synthia_fixture(d / "synthia", n=2, h=16, w=32, seed=0)
    write_cityscapes_fixture(d / "cityscapes", n_train=2, n_val=1, h=16, w=32, seed=1)
    return d


# ------------------------------------------------------------------------------------------------
# Ways to break a workspace (each gets the case folder; paths are relative to it)


def own(case: Path, rel: str) -> Path:
    """Make ``rel`` (and every linked folder above it) a private copy, so breaking it spares `good`."""
    p = case
    for part in Path(rel).parts:
        p = p / part
        if p.is_symlink():
            target = p.resolve()
            p.unlink()
            if target.is_dir():
                shutil.copytree(target, p)
            else:
                shutil.copy2(target, p)
    return case / rel


def files(case: Path, pattern: str) -> list[Path]:
    """Private copies of every file matching ``pattern`` (all items: any of them may be drawn first)."""
    top = pattern.split("/")[0]
    own(case, top)
    found = sorted(case.glob(pattern))
    assert found, pattern
    return [own(case, str(f.relative_to(case))) for f in found]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def set_param(case: Path, key: str, value) -> None:
    p = yaml.safe_load((case / "params.yaml").read_text())
    *parents, last = key.split(".")
    node = p
    for k in parents:
        node = node[k]
    node[last] = value
    (case / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def rename_param(case: Path, key: str, new: str) -> None:
    p = yaml.safe_load((case / "params.yaml").read_text())
    sec, name = key.split(".")
    p[sec] = {(new if k == name else k): v for k, v in p[sec].items()}
    (case / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def rename_section(case: Path, name: str, new: str) -> None:
    p = yaml.safe_load((case / "params.yaml").read_text())
    (case / "params.yaml").write_text(yaml.safe_dump({(new if k == name else k): v for k, v in p.items()},
                                                     sort_keys=False))


def use_real(case: Path, real: Path) -> None:
    """Point the data stage at private copies of the real-format SYNTHIA and Cityscapes fixtures."""
    shutil.copytree(real, case / "real")
    set_param(case, "data.source", {"kind": "synthia", "root": "real/synthia"})
    set_param(case, "data.target", {"kind": "cityscapes", "root": "real/cityscapes"})


def relabel(pattern: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[Path], None]:
    def brk(case: Path) -> None:
        for f in files(case, pattern):
            write_png(f, fn(read_image(f, mode=None)))

    return brk


def edit_checkpoint(rel: str, fn: Callable[[dict], None]) -> Callable[[Path], None]:
    def brk(case: Path) -> None:
        path = own(case, rel)
        ck = torch.load(path, map_location="cpu", weights_only=False)
        fn(ck)
        torch.save(ck, path)

    return brk


def as_dacs(ck: dict) -> None:
    """Turn a CorDA checkpoint into a valid DACS one (the same network without the depth decoders)."""
    from corda.config import from_mapping
    from corda.seg.config import ModelConfig
    from corda.seg.model_file import build_model

    state = build_model(from_mapping(ModelConfig, ck["model_config"], "model"), "dacs").state_dict()
    ck.update(method="dacs", student=state, teacher=state)


def strip_camera(section: str, key: str, pattern: str) -> Callable[[Path], None]:
    def brk(case: Path) -> None:
        import json

        for f in files(case, pattern):
            cam = json.loads(f.read_text())
            del cam[section][key]
            write_json(f, cam)

    return brk


def each(*fns: Callable[[Path], None]) -> Callable[[Path], None]:
    def brk(case: Path) -> None:
        for fn in fns:
            fn(case)

    return brk


SRC = "data/benchmark/source"
TGT = "data/benchmark/target"
RS, RC = "real/synthia", "real/cityscapes"


@dataclass(frozen=True)
class Case:
    id: str
    stage: str
    brk: Callable[[Path], None]  # breaks one thing in the case folder
    names: str  # regex: the offending file or params key
    fix: str  # regex: the advice
    real: bool = False  # data stage on the real-format fixtures instead of the procedural benchmark


CASES = [
    # --- data: real-format datasets (corda/testing.py) ------------------------------------------------------
    Case("missing-source-root", "data", lambda c: shutil.rmtree(c / RS),
         r"real/synthia: synthia dataset root not found", r"set data\.source\.root", real=True),
    Case("missing-val-split", "data", lambda c: shutil.rmtree(c / RC / "leftImg8bit/val"),
         r"real/cityscapes/leftImg8bit/val: folder not found", r"set data\.target\.root", real=True),
    Case("empty-val-split", "data",
         lambda c: [f.unlink() for f in (c / RC / "leftImg8bit/val").rglob("*.png")],
         r"real/cityscapes/leftImg8bit/val: no cityscapes images", r"set data\.target\.root", real=True),
    Case("truncated-png", "data", lambda c: truncate(c / RS / "RGB/0000001.png"),
         r"1 of \d+ dataset files are bad: \S*real/synthia/RGB/0000001\.png: truncated", r"re-extract",
         real=True),
    Case("label-size", "data",
         lambda c: write_png(c / RS / "synthia_mapped_to_cityscapes/0000000.png",
                             np.zeros((8, 32), np.uint8)),
         r"real/synthia/synthia_mapped_to_cityscapes/0000000\.png: label map is 8x32 but its image is 16x32",
         r"re-export", real=True),
    Case("label-ids", "data",
         lambda c: write_png(c / RC / "gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png",
                             np.full((16, 32), 200, np.uint8)),
         r"frankfurt_000000_000019_gtFine_labelIds\.png: values \[200\] are not Cityscapes label ids",
         r"is this a cityscapes label map", real=True),
    Case("depth-dtype", "data",
         lambda c: write_png(c / RS / "Depth/Depth/0000001.png", np.zeros((16, 32), np.uint8)),
         r"real/synthia/Depth/Depth/0000001\.png: depth PNG is single-channel uint8", r"16-bit", real=True),
    Case("camera-keys", "data", strip_camera("intrinsic", "fx", RC + "/camera/train/*/*.json"),
         r"_camera\.json: camera JSON lacks \['intrinsic\.fx'\]", r"expected the Cityscapes camera format",
         real=True),
    Case("param-type", "data", lambda c: set_param(c, "run.data.workers", "abc"),
         r"run\.data\.workers", r"expected an integer"),
    Case("param-range", "data", lambda c: set_param(c, "data.procedural.num_source", -4),
         r"data\.procedural\.num_source", r"below the minimum 1"),
    Case("param-unknown", "data", lambda c: rename_param(c, "data.seed", "sead"),
         r"data\.sead: unknown key", r"did you mean seed\?"),
    # --- depth_pretrain -------------------------------------------------------------------------------------
    Case("missing-dataset-root", "depth_pretrain", lambda c: shutil.rmtree(own(c, TGT)),
         r"data/benchmark/target/\S+: file not found", r"check the dataset root"),
    Case("truncated-right-png", "depth_pretrain",
         lambda c: [truncate(f) for f in files(c, TGT + "/rightImg8bit/train/*/*.png")],
         r"data/benchmark/target/rightImg8bit/train/\w+/\w+_rightImg8bit\.png: corrupt or truncated",
         r"image \([^;]*\); re-render the benchmark: `dvc repro -f data`$"),
    Case("preset-without-data", "depth_pretrain", lambda c: set_param(c, "data.source.kind", "synthia"),
         r"data/manifest\.json: made from source kind 'procedural'", r"`dvc repro data`$"),
    Case("param-type", "depth_pretrain", lambda c: set_param(c, "depth.lr", "abc"),
         r"depth\.lr", r"expected a number"),
    Case("param-range", "depth_pretrain", lambda c: set_param(c, "depth.iterations", -1),
         r"depth\.iterations", r"below the minimum 1"),
    Case("param-unknown", "depth_pretrain", lambda c: rename_param(c, "depth.iterations", "iters"),
         r"depth\.iters: unknown key", r"did you mean iterations\?"),
    # --- depth_maps -----------------------------------------------------------------------------------------
    Case("ckpt-other-backbone", "depth_maps", lambda c: set_param(c, "depth.backbone", "resnet50"),
         r"models/depth/target\.pt: incompatible with depth\.backbone=resnet50", r"re-run depth_pretrain"),
    Case("truncated-ckpt", "depth_maps", lambda c: truncate(own(c, "models/depth/target.pt")),
         r"models/depth/target\.pt", r"re-run depth_pretrain"),
    # source ground-truth depth is read in place by training (depth_maps no longer copies it)
    Case("source-depth-dtype", "train",
         relabel(SRC + "/Depth/Depth/*.png", lambda a: (a >> 8).astype(np.uint8)),
         r"data/benchmark/source/Depth/Depth/\d+\.png: depth PNG is single-channel uint8", r"16-bit"),
    Case("val-camera-keys", "depth_maps", strip_camera("extrinsic", "baseline", TGT + "/camera/val/*/*.json"),
         r"data/benchmark/target/camera/val/\w+/\w+_camera\.json: "
         r"camera JSON lacks \['extrinsic\.baseline'\]",
         r"expected the Cityscapes camera format"),
    Case("mono-camera-height", "depth_maps",
         each(lambda c: set_param(c, "depth.mode", "mono"),
              strip_camera("extrinsic", "z", TGT + "/camera/train/*/*.json")),
         r"data/benchmark/target/camera/train/\w+/\w+_camera\.json: .*extrinsic\.z", r"camera"),
    Case("param-type", "depth_maps", lambda c: set_param(c, "depth.max_depth_m", "far"),
         r"depth\.max_depth_m", r"expected a number"),
    # --- train --method corda -------------------------------------------------------------------------------
    Case("truncated-depth-h5", "train", lambda c: truncate(own(c, "depth/target.h5")),
         r"depth/target\.h5: not a readable HDF5 file", r"dvc repro depth_maps"),
    Case("missing-source-depth", "train", lambda c: own(c, "depth/source.json").unlink(),
         r"depth: neither source\.h5 .* nor source\.json", r"dvc repro depth_maps"),
    Case("label-size", "train",
         relabel(SRC + "/synthia_mapped_to_cityscapes/*.png", lambda a: np.ascontiguousarray(a[:16])),
         r"data/benchmark/source/synthia_mapped_to_cityscapes/\d+\.png: "
         r"label map is 16x64 but its image is 32x64",
         r"re-export"),
    Case("label-ids", "train", relabel(SRC + "/synthia_mapped_to_cityscapes/*.png", lambda a: a * 0 + 99),
         r"data/benchmark/source/synthia_mapped_to_cityscapes/\d+\.png: "
         r"values \[99\] are not SYNTHIA class ids",
         r"is this a synthia label map"),
    Case("param-type", "train", lambda c: set_param(c, "train.lambda_depth", "abc"),
         r"train\.lambda_depth", r"expected a number"),
    Case("param-range", "train", lambda c: set_param(c, "train.iterations", -5),
         r"train\.iterations", r"below the minimum 1"),
    Case("param-unknown", "train", lambda c: rename_param(c, "train.lambda_depth", "lamda_depth"),
         r"train\.lamda_depth: unknown key", r"did you mean lambda_depth\?"),
    Case("section-typo", "train", lambda c: rename_section(c, "train", "trian"),
         r"error: trian: unknown section in params\.yaml", r"did you mean train\?$"),
    Case("manifest-missing", "train", lambda c: own(c, "data/manifest.json").unlink(),
         r"data/manifest\.json: file not found", r"run the data stage first: `dvc repro data`"),
    Case("preset-without-data", "train", lambda c: set_param(c, "data.source.kind", "gta5"),
         r"data/manifest\.json: made from source kind 'procedural' but params\.yaml has data\.source\.kind "
         r"'gta5'", r"`dvc repro data`$"),
    Case("model-choice", "train", lambda c: set_param(c, "model.backbone", "resnet34"),
         r"model\.backbone", r"not one of \['resnet18', 'resnet50', 'resnet101'\]"),
    # --- pseudo_labels --------------------------------------------------------------------------------------
    Case("ckpt-config-mismatch", "pseudo_labels",
         edit_checkpoint("models/corda.pt", lambda ck: ck["model_config"].update(task_channels=32)),
         r"models/corda\.pt: not a usable corda checkpoint", r"re-run the stage that wrote it"),
    Case("ckpt-without-depth", "pseudo_labels", edit_checkpoint("models/corda.pt", as_dacs),
         r"models/corda\.pt: a model with depth decoders \(method corda\) is needed", r"method corda"),
    Case("truncated-ckpt", "pseudo_labels", lambda c: truncate(own(c, "models/corda.pt")),
         r"models/corda\.pt: not a usable corda checkpoint", r"re-run the stage that wrote it"),
    Case("truncated-depth-h5", "pseudo_labels", lambda c: truncate(own(c, "depth/target.h5")),
         r"depth/target\.h5: not a readable HDF5 file", r"dvc repro depth_maps"),
    Case("param-range", "pseudo_labels", lambda c: set_param(c, "pseudo_labels.threshold", 1.5),
         r"pseudo_labels\.threshold", r"above the maximum 1"),
    Case("param-choice", "pseudo_labels", lambda c: set_param(c, "pseudo_labels.weight_rule", "omega2"),
         r"pseudo_labels\.weight_rule", r"not one of"),
    Case("param-unknown", "pseudo_labels", lambda c: rename_param(c, "pseudo_labels.batch_size", "batchsize"),
         r"pseudo_labels\.batchsize: unknown key", r"did you mean batch_size\?"),
    # --- self_train -----------------------------------------------------------------------------------------
    Case("truncated-pseudo-h5", "self_train", lambda c: truncate(own(c, "pseudo/target.h5")),
         r"pseudo/target\.h5: not a readable HDF5 file", r"dvc repro pseudo_labels"),
    Case("ckpt-other-task-channels", "self_train", lambda c: set_param(c, "model.task_channels", 32),
         r"models/corda\.pt.*model\.task_channels", r"re-run|set model"),
    Case("ckpt-other-backbone", "self_train", lambda c: set_param(c, "model.backbone", "resnet50"),
         r"models/corda\.pt.*model\.backbone", r"re-run|set model"),
    Case("param-type", "self_train", lambda c: set_param(c, "self_train.lr", "abc"),
         r"self_train\.lr", r"expected a number"),
    Case("param-range", "self_train", lambda c: set_param(c, "self_train.iterations", -1),
         r"self_train\.iterations", r"below the minimum 1"),
    Case("param-unknown", "self_train",
         lambda c: rename_param(c, "self_train.normalize_weight", "normalise_weight"),
         r"self_train\.normalise_weight: unknown key", r"did you mean normalize_weight\?"),
    Case("preset-without-data", "self_train", lambda c: set_param(c, "data.target.kind", "cityscapes"),
         r"data/manifest\.json: made from target kind 'procedural'", r"`dvc repro data`$"),
    # --- evaluate -------------------------------------------------------------------------------------------
    Case("truncated-val-png", "evaluate",
         lambda c: [truncate(f) for f in files(c, TGT + "/leftImg8bit/val/*/*.png")],
         r"data/benchmark/target/leftImg8bit/val/\w+/\w+_leftImg8bit\.png: corrupt or truncated",
         r"image \([^;]*\); re-render the benchmark: `dvc repro -f data`$"),
    Case("val-label-ids", "evaluate",
         relabel(TGT + "/gtFine/val/*/*_labelIds.png", lambda a: a * 0 + 250),
         r"data/benchmark/target/gtFine/val/\w+/\w+_labelIds\.png: "
         r"values \[250\] are not Cityscapes label ids",
         r"is this a cityscapes label map"),
    Case("ckpt-config-mismatch", "evaluate",
         edit_checkpoint("models/corda.pt", lambda ck: ck["model_config"].update(backbone="resnet50")),
         r"models/corda\.pt: not a usable corda checkpoint", r"re-run the stage that wrote it"),
    Case("param-type", "evaluate", lambda c: set_param(c, "evaluate.batch_size", "abc"),
         r"evaluate\.batch_size", r"expected an integer"),
    Case("param-range", "evaluate", lambda c: set_param(c, "evaluate.eval_hw", [-32, 64]),
         r"evaluate\.eval_hw", r"below the minimum 1"),
    Case("param-unknown", "evaluate", lambda c: rename_param(c, "evaluate.strip_items", "strip"),
         r"evaluate\.strip: unknown key", r"did you mean strip_items\?"),
]


def make_case(good: Path, case_dir: Path, stage: str) -> Path:
    """A workspace holding the good inputs of ``stage`` (linked, not copied) and none of its outputs."""
    case_dir.mkdir()
    shutil.copy2(good / "params.yaml", case_dir / "params.yaml")
    for rel in STAGES[stage].inputs:
        (case_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (case_dir / rel).symlink_to(good / rel, target_is_directory=(good / rel).is_dir())
    return case_dir


def leftovers(case: Path) -> list[str]:
    """Hidden files (atomic-write temporaries) anywhere in the case folder, linked inputs excluded."""
    out = []
    for dirpath, _, filenames in os.walk(case):  # does not descend into linked folders
        out += [os.path.join(dirpath, f) for f in filenames if f.startswith(".")]
    return out


def assert_clean_failure(res, case: Path, stage: str, names: str, fix: str) -> None:
    stderr = res.stderr
    assert res.exit_code == 2, f"exit {res.exit_code}, exception {res.exception!r}\n{stderr[-3000:]}"
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert re.search(names, errors[0]), f"{names!r} not in {errors[0]!r}"
    assert re.search(fix, errors[0]), f"{fix!r} not in {errors[0]!r}"
    for out in STAGES[stage].outputs:
        p = case / out
        assert not p.exists() and not p.is_symlink(), f"{out} left behind"
    assert leftovers(case) == []


@pytest.mark.parametrize("c", CASES, ids=[f"{c.stage}-{c.id}" for c in CASES])
def test_bad_input(c: Case, good: Path, real: Path, tmp_path: Path):
    case = make_case(good, tmp_path / "ws", c.stage)
    if c.real:
        use_real(case, real)
    c.brk(case)
    res = run_stage(case, c.stage)
    assert_clean_failure(res, case, c.stage, c.names, c.fix)


def test_every_stage_has_cases():
    assert {c.stage for c in CASES} == set(STAGES)


def test_real_process_exit_code(good: Path, tmp_path: Path):
    """The same contract for a real `python -m stages.train` process (exit status, stderr)."""
    case = make_case(good, tmp_path / "ws", "train")
    rename_param(case, "train.lambda_depth", "lamda_depth")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CORDA_LOG_LEVEL": "WARNING"}
    res = subprocess.run([sys.executable, "-m", "stages.train", "--method", "corda"], cwd=case, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr[-3000:]
    assert [line for line in res.stderr.splitlines() if line.strip()] == [
        line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert res.stderr.startswith("error: train.lamda_depth: unknown key")
    assert not (case / "models/corda.pt").exists() and not (case / "dvclive/train_corda").exists()


@pytest.mark.parametrize("init_from", ["teacher", "student"])
def test_self_train_starts_from_the_chosen_round1_weights(good: Path, tmp_path: Path, init_from: str):
    """Not a bad input, but it needs this file's good workspace: ``self_train.init_from`` picks which of
    models/corda.pt's networks round 2 starts from. At a vanishing learning rate one step moves no
    parameter measurably, so round 2's weights must be the chosen network's and not the other's."""
    from corda.seg.model_file import load_model

    case = make_case(good, tmp_path / "ws", "train")
    set_param(case, "train.iterations", 3)  # the EMA warm-up copies the student at step 1; later steps differ
    res = run_stage(case, "train")
    assert res.exit_code == 0, f"{res.exception!r}\n{res.stderr[-3000:]}"
    (case / "pseudo").symlink_to(good / "pseudo", target_is_directory=True)
    set_param(case, "self_train.init_from", init_from)
    set_param(case, "self_train.lr", 1e-12)
    res = run_stage(case, "self_train")
    assert res.exit_code == 0, f"{res.exception!r}\n{res.stderr[-3000:]}"
    cpu = torch.device("cpu")
    got = dict(load_model(case / "models/corda_round2.pt", cpu)[0].named_parameters())
    other = {"teacher": "student", "student": "teacher"}[init_from]
    want = dict(load_model(case / "models/corda.pt", cpu, which=init_from)[0].named_parameters())
    not_want = dict(load_model(case / "models/corda.pt", cpu, which=other)[0].named_parameters())
    differ = [k for k in want if not torch.equal(want[k], not_want[k])]
    assert differ, "round 1's teacher and student are identical; the test cannot tell them apart"
    for k in differ:
        assert torch.allclose(got[k], want[k], rtol=0, atol=1e-9), k
        assert not torch.allclose(got[k], not_want[k], rtol=0, atol=1e-9), k


# ------------------------------------------------------------------------------------------------
# Issue 18 §3: a failed or interrupted stage keeps the previous outputs (corda.io.staged_outputs).
# Each stage's outputs are first filled with "previous run" sentinels; a failure at the start (bad
# input checked before writing), a failure in the middle (after some new output was staged) and
# SIGINT (a real process, Ctrl-C) must leave them byte-identical, with no hidden temporaries.

START_FAILURES = {
    "data": lambda c, real: (use_real(c, real), shutil.rmtree(c / RS)),  # a bad dataset root
    "depth_pretrain": lambda c, real: set_param(c, "depth.lr", "abc"),
    "depth_maps": lambda c, real: set_param(c, "depth.max_depth_m", "far"),
    "train": lambda c, real: set_param(c, "model.pretrained", "missing/weights.pth"),
    "pseudo_labels": lambda c, real: truncate(own(c, "models/corda.pt")),
    "self_train": lambda c, real: truncate(own(c, "pseudo/target.h5")),
    "evaluate": lambda c, real: truncate(own(c, "models/corda.pt")),  # a corrupt checkpoint
}
# A function each stage calls after it has staged some of its new outputs ("module:attribute").
MIDDLE = {
    "data": "corda.io:write_json",
    "depth_pretrain": "corda.engine:write_dvclive",
    "depth_maps": "corda.io:write_json",
    "train": "corda.engine:write_dvclive",
    "pseudo_labels": "corda.io:write_json",
    "self_train": "corda.engine:write_dvclive",
    "evaluate": "corda.report:plot_per_class_iou",
}
SENTINEL = b"the previous run's good output\n"


def fill_previous(case: Path, stage: str) -> None:
    """Put a sentinel where each declared output goes: a file, or a folder holding one file."""
    for out in STAGES[stage].outputs:
        p = case / out
        p.parent.mkdir(parents=True, exist_ok=True)
        if Path(out).suffix:
            p.write_bytes(SENTINEL)
        else:
            p.mkdir()
            (p / "previous.txt").write_bytes(SENTINEL)


def assert_previous_kept(case: Path, stage: str) -> None:
    for out in STAGES[stage].outputs:
        p = case / out
        if Path(out).suffix:
            assert p.read_bytes() == SENTINEL, f"{out} was replaced or removed"
        else:
            assert sorted(x.name for x in p.iterdir()) == ["previous.txt"], f"{out} was changed"
            assert (p / "previous.txt").read_bytes() == SENTINEL
    assert leftovers(case) == [], leftovers(case)


def staging_dirs(case: Path) -> list[str]:
    return [str(p) for p in case.rglob(".*.staging-*")]


@pytest.mark.parametrize("stage", list(STAGES))
def test_failure_at_start_keeps_previous_outputs(stage: str, good: Path, real: Path, tmp_path: Path):
    case = make_case(good, tmp_path / "ws", stage)
    fill_previous(case, stage)
    START_FAILURES[stage](case, real)
    res = run_stage(case, stage)
    assert res.exit_code == 2, res.stderr[-3000:]
    assert len([x for x in res.stderr.splitlines() if x.startswith("error:")]) == 1, res.stderr[-3000:]
    assert_previous_kept(case, stage)


@pytest.mark.parametrize("stage", list(STAGES))
def test_failure_in_the_middle_keeps_previous_outputs(stage: str, good: Path, tmp_path: Path, monkeypatch):
    from corda.errors import DataError

    case = make_case(good, tmp_path / "ws", stage)
    fill_previous(case, stage)
    staged_when_failing = []

    def fail(*a, **k):
        staged_when_failing.extend(staging_dirs(case))
        raise DataError("injected failure in the middle of the stage")

    module, attr = MIDDLE[stage].split(":")
    monkeypatch.setattr(importlib.import_module(module), attr, fail)
    res = run_stage(case, stage)
    assert res.exit_code == 2, res.stderr[-3000:]
    assert "injected failure" in res.stderr
    assert staged_when_failing, "the failure came before any new output was staged (not in the middle)"
    assert_previous_kept(case, stage)


# Runs a stage with MIDDLE's function replaced by one that says it is there and then waits for Ctrl-C.
HANG_IN_MIDDLE = """
import importlib, runpy, signal, sys, time
from pathlib import Path
# A shell's background job (`make test &`, nohup) starts with SIGINT ignored, and Python then keeps it ignored:
# restore Python's Ctrl-C so the test sends what a user's terminal sends.
signal.signal(signal.SIGINT, signal.default_int_handler)
module, attr = sys.argv[1].split(":")
def hang(*a, **k):
    Path("READY").write_text("")
    time.sleep(300)
setattr(importlib.import_module(module), attr, hang)
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("stage", list(STAGES))
def test_sigint_keeps_previous_outputs(stage: str, good: Path, tmp_path: Path):
    import signal
    import time

    case = make_case(good, tmp_path / "ws", stage)
    fill_previous(case, stage)
    st = STAGES[stage]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CORDA_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-c", HANG_IN_MIDDLE, MIDDLE[stage], st.module, *st.args],
                            cwd=case, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not (case / "READY").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    assert staging_dirs(case), "interrupted before any new output was staged"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=240)  # a loaded 2-core machine took over 60 s to unwind the data stage
    (case / "READY").unlink()
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("error: interrupted"), err[-3000:]
    assert_previous_kept(case, stage)


@pytest.mark.parametrize("stage,key", [("train", "run.train.workers"), ("depth_pretrain", "run.depth.workers")])
def test_loader_worker_error_is_the_main_process_line(stage: str, key: str, good: Path, tmp_path: Path):
    """Issue 18 §2: a DataError raised in a DataLoader worker reaches the user as the one line it is with
    workers: 0 (file, what is wrong, fix), not torch's "Caught DataError in DataLoader worker ..." text."""
    lines = {}
    for workers in (0, 1):
        case = make_case(good, tmp_path / f"ws{workers}", stage)
        set_param(case, key, workers)
        for f in files(case, TGT + "/leftImg8bit/train/*/*.png") + files(case, SRC + "/RGB/*.png"):
            truncate(f)
        res = run_stage(case, stage)
        assert res.exit_code == 2, res.stderr[-3000:]
        errors = [x for x in res.stderr.splitlines() if x.startswith("error:")]
        assert len(errors) == 1, res.stderr[-3000:]
        lines[workers] = errors[0]
    assert "DataLoader worker" not in lines[1] and "Traceback" not in lines[1], lines[1]
    assert re.match(r"error: \S+\.png: corrupt or truncated .*re-render the benchmark", lines[1]), lines[1]
    assert lines[1] == lines[0]
