"""The command line a newcomer meets: `python -m stages --help` lists every command (predict too), flags
show no value type, choices are listed, and params.yaml mistakes outside a section name the fix."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corda.errors import ConfigError, DataError
from corda.io import write_json
from corda.params import check_data_kinds, section

ROOT = Path(__file__).resolve().parents[1]


def _help(*args: str) -> str:
    from stages.__main__ import app

    res = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "120"})
    assert res.exit_code == 0, res.output
    return res.output


def test_index_lists_predict_and_runs_it():
    assert "predict" in _help()
    out = _help("predict")
    assert "--label-ids" in out and "--overwrite" in out


def test_predict_via_the_index_process():
    res = subprocess.run([sys.executable, "-m", "stages", "predict", "--help"], cwd=ROOT, capture_output=True,
                         text=True, env={"COLUMNS": "120", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0 and "Usage" in res.stdout and "--teacher" in res.stdout


@pytest.mark.parametrize("cmd", ["predict", "train", "evaluate"])
def test_flags_show_no_value_type(cmd):
    out = _help(cmd)
    assert "<bool>" not in out
    assert "<path>" in out  # other options still show theirs


def test_method_lists_its_choices():
    from corda.methods import TRAINED

    from stages.__main__ import app

    out = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output  # one line for the choices
    assert "<" + "|".join(TRAINED) + ">" in out and "<str>" not in out


def test_misspelt_section_is_an_unknown_section():
    with pytest.raises(ConfigError, match=r"^trian: unknown section in params\.yaml; did you mean train\?$"):
        section({"model": {}, "trian": {}}, "train", dict)
    with pytest.raises(ConfigError, match=r"^train: section missing"):
        section({"model": {}}, "train", dict)


def _manifest(tmp_path: Path, source: str, target: str) -> Path:
    splits = {s: {} for s in ("source", "target_train", "target_val")}
    write_json(tmp_path / "manifest.json", {"source_kind": source, "target_kind": target, "splits": splits})
    return tmp_path / "manifest.json"


def test_manifest_must_match_the_dataset_kinds(tmp_path):
    m = _manifest(tmp_path, "procedural", "procedural")
    check_data_kinds({"data": {"source": {"kind": "procedural"}, "target": {"kind": "procedural"}}}, m)
    preset = {"data": {"source": {"kind": "gta5"}, "target": {"kind": "cityscapes"}}}
    with pytest.raises(DataError, match=r"made from source kind 'procedural' but params\.yaml has "
                                        r"data\.source\.kind 'gta5'; run the data stage .*`dvc repro data`$"):
        check_data_kinds(preset, m)
    check_data_kinds(preset, _manifest(tmp_path, "gta5", "cityscapes"))


def test_missing_manifest_says_run_the_data_stage(tmp_path):
    with pytest.raises(DataError, match=r"manifest\.json: file not found; run the data stage first: "
                                        r"`dvc repro data` \(or `python -m stages\.data`\)$"):
        check_data_kinds({}, tmp_path / "manifest.json")


AFTER_DATA = ("depth_pretrain", "depth_maps", "train", "pseudo_labels", "self_train", "evaluate")


@pytest.mark.parametrize("stage", AFTER_DATA)
def test_every_stage_after_data_rejects_a_preset_over_the_procedural_manifest(stage, tmp_path):
    """A paper preset applied while the procedural manifest is still in place: each stage stops at once with
    exit 2, naming the mismatch and the stage to run, instead of training on the procedural data."""
    import importlib

    import yaml

    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["data"]["source"]["kind"] = "gta5"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    manifest = _manifest(tmp_path, "procedural", "procedural")
    app = importlib.import_module(f"stages.{stage}").app
    res = CliRunner().invoke(app, ["--params", str(tmp_path / "params.yaml"), "--manifest", str(manifest)])
    assert res.exit_code == 2, res.output
    assert "made from source kind 'procedural' but params.yaml has data.source.kind 'gta5'" in res.output
    assert "`dvc repro data`" in res.output


def test_a_corrupt_image_gets_one_fix(tmp_path):
    """A file that passes the header check but does not decode: one error with one fix, the caller's (predict's)
    or the dataset's (re-render the benchmark, re-extract a real dataset), never two pasted together."""
    import re

    from corda.io import read_image
    from corda.predict import load_rgb

    bad = tmp_path / "x.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(DataError) as exc:
        load_rgb(bad)
    assert re.fullmatch(r"\S+x\.png: unreadable image \([^;]*\); remove or re-export the file, or pass --skip-bad",
                        str(exc.value)), str(exc.value)
    with pytest.raises(DataError) as exc:
        read_image(bad)
    assert re.fullmatch(r"\S+: corrupt or truncated image \([^;]*\); re-extract this file from the dataset's "
                        r"archive", str(exc.value)), str(exc.value)
    bench = tmp_path / "data" / "benchmark" / "x.png"
    bench.parent.mkdir(parents=True)
    bench.write_bytes(bad.read_bytes())
    with pytest.raises(DataError, match=r"\([^;]*\); re-render the benchmark: `dvc repro -f data`$"):
        read_image(bench)


@pytest.mark.parametrize("under_dvc", [False, True])
def test_interrupted_says_what_holds_under_dvc(under_dvc, monkeypatch, capsys):
    """Ctrl-C: run by itself a stage kept its outputs; run by DVC (DVC_STAGE set), DVC removed them before the
    stage started, and the line says how to get them back instead of claiming they are unchanged."""
    from stages.common import stage_main

    if under_dvc:
        monkeypatch.setenv("DVC_STAGE", "train_corda")
    else:
        monkeypatch.delenv("DVC_STAGE", raising=False)

    @stage_main
    def stage():
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exit_:
        stage()
    assert exit_.value.code == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    if under_dvc:
        assert "DVC removed the outputs of stage train_corda" in line and "`dvc checkout train_corda`" in line
        assert "unchanged" not in line
    else:
        assert line == "error: interrupted; the previous outputs of this stage are unchanged (re-run it to finish)"
