"""params.yaml, the presets and the smoke profile load into the stages' typed configs, every key is
declared to DVC by the stages that read it, and every stage has a working --help."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from corda.params import load_params, section

ROOT = Path(__file__).resolve().parents[1]
PARAM_FILES = [ROOT / "params.yaml", *sorted((ROOT / "params").glob("*.yaml"))]


def _sections():
    from corda.depth.config import DepthConfig
    from corda.seg.config import ModelConfig, TrainConfig
    from corda.data.config import DataConfig
    from corda.seg.config import EvalConfig
    from corda.seg.config import PseudoConfig
    from corda.seg.config import SelfTrainConfig

    return {"data": DataConfig, "depth": DepthConfig, "model": ModelConfig, "train": TrainConfig,
            "pseudo_labels": PseudoConfig, "self_train": SelfTrainConfig, "evaluate": EvalConfig}


def _field_names(cls):
    return {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name)
def test_every_params_file_validates_and_is_complete(path):
    from corda.config import run_keys

    params = load_params(path)
    secs = _sections()
    assert set(params) == set(secs) | {"run"}
    assert set(params["run"]) == {name for name, cls in secs.items() if run_keys(cls)}
    for name, cls in secs.items():
        section(params, name, cls)
        # Every config field is spelled out (no hidden defaults), except those the stages set: `method`, and
        # `target_ce_weight`, which self_train takes from self_train.target_weight. Operational fields are
        # spelled out in run.<section> instead.
        assert _field_names(cls) - {"method", "target_ce_weight"} - set(run_keys(cls)) == set(params[name]), name
        assert set(run_keys(cls)) == set(params["run"].get(name, {})), name


def test_dvc_yaml_declares_what_each_stage_reads():
    from test_dvc_deps import declared_params, dvc_stages

    dvc = dvc_stages(ROOT / "dvc.yaml")
    params = load_params(ROOT / "params.yaml")
    # The keys only the depth losses and ω read: dvc.yaml's `train_depth` list, their one spelling.
    train_keys = next(v["train_keys"] for v in yaml.safe_load((ROOT / "dvc.yaml").read_text())["vars"]
                      if "train_keys" in v)
    depth_only = {k.removeprefix("train.") for k in train_keys["train_depth"]}
    assert {"lambda_depth", "lambda_depth_mixed", "depth_weight"} <= depth_only

    def declared(stage):
        out = set()
        for p in declared_params(dvc[stage]):
            if "." in p:
                out.add(p)
            else:
                out |= {f"{p}.{k}" for k in params[p]}
        return out

    oracle_only = {"train.oracle_iterations"}
    for stage, reads in {"data": ["data"], "depth_pretrain": ["depth"], "depth_maps": ["depth"],
                         "train_corda": ["model", "train"], "self_train": ["model", "train", "self_train"],
                         "pseudo_labels": ["pseudo_labels"], "evaluate": ["evaluate"]}.items():
        need = {f"{s}.{k}" for s in reads for k in params[s]} - oracle_only
        assert need <= declared(stage), (stage, need - declared(stage))
    for stage in ("train@source_only", "train@dacs", "train_oracle"):
        need = {f"model.{k}" for k in params["model"]} | {f"train.{k}" for k in params["train"] if k not in depth_only}
        got = declared(stage)
        assert need - (set() if stage == "train_oracle" else oracle_only) <= got, (stage, need - got)
        assert not {f"train.{k}" for k in depth_only} & got  # lambda_depth must not re-run baselines
    # the oracle's step count re-trains the oracle alone
    assert [s for s in dvc if oracle_only & declared(s)] == ["train_oracle"]


@pytest.mark.parametrize("stage", ["data", "rcs", "depth_pretrain", "depth_maps", "train", "pseudo_labels",
                                   "self_train", "evaluate"])
def test_stage_help(stage):
    res = subprocess.run([sys.executable, "-m", f"stages.{stage}", "--help"], cwd=ROOT, capture_output=True,
                         text=True)
    assert res.returncode == 0 and "Usage" in res.stdout


def test_stages_index_lists_all():
    res = subprocess.run([sys.executable, "-m", "stages", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0
    for stage in ("data", "depth_pretrain", "depth_maps", "train", "pseudo_labels", "self_train", "evaluate"):
        assert stage in res.stdout


def test_bad_param_gives_one_line_error_naming_the_key(tmp_path):
    text = (ROOT / "params.yaml").read_text().replace("lambda_depth: 0.01 ", 'lambda_depth: "abc" ')
    (tmp_path / "params.yaml").write_text(text)
    res = subprocess.run([sys.executable, "-m", "stages.train", "--method", "corda", "--params",
                          str(tmp_path / "params.yaml")], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2
    assert "train.lambda_depth" in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.name)
def test_dvc_exp_run_set_param_changes_exactly_one_line(path, tmp_path):
    """`dvc exp run -S key=value` rewrites the params file through DVC's own YAML round trip
    (dvc.utils.hydra.apply_overrides); the files are kept in the form it writes, so only the set line changes."""
    from dvc.utils.hydra import apply_overrides

    copy = tmp_path / path.name
    copy.write_text(path.read_text())
    old = yaml.safe_load(path.read_text())["train"]["lambda_depth"]
    apply_overrides(str(copy), [f"train.lambda_depth={old + 0.5}"])
    before, after = path.read_text().splitlines(), copy.read_text().splitlines()
    assert len(before) == len(after), "lines were added or removed"
    changed = [(a, b) for a, b in zip(before, after) if a != b]
    assert len(changed) == 1 and changed[0][1].lstrip().startswith(f"lambda_depth: {old + 0.5}"), changed
    apply_overrides(str(copy), [f"train.lambda_depth={old}"])
    assert copy.read_text() == path.read_text()  # and setting it back restores the file byte for byte
