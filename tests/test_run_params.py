"""Knobs that change no result (params.yaml ``run``) are no DVC stage's parameter dependency, so changing one
re-runs nothing; they still reach the typed configs, and a knob in the wrong section is a one-line error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from corda.config import run_keys
from corda.errors import ConfigError
from corda.params import RUN, load_params, section

ROOT = Path(__file__).resolve().parents[1]


def _configs():
    from corda.depth.config import DepthConfig
    from corda.seg.config import TrainConfig
    from corda.data.config import DataConfig
    from corda.seg.config import EvalConfig
    from corda.seg.config import PseudoConfig

    return {"data": DataConfig, "depth": DepthConfig, "train": TrainConfig, "pseudo_labels": PseudoConfig,
            "evaluate": EvalConfig}


def test_operational_keys_are_the_run_section():
    params = load_params(ROOT / "params.yaml")
    assert {name: list(run_keys(cls)) for name, cls in _configs().items()} == {
        name: list(sub) for name, sub in params[RUN].items()}
    assert set(run_keys(_configs()["train"])) >= {"log_every", "eval_every", "checkpoint_every", "workers", "device"}


def test_no_stage_declares_the_run_section():
    from test_dvc_deps import declared_params, dvc_stages

    for name, stage in dvc_stages(ROOT / "dvc.yaml").items():
        for key in declared_params(stage):  # (it refuses params from another file)
            assert key != RUN and not key.startswith(RUN + "."), (name, key)


def _dvc_param_values(repo_dir: Path) -> dict[str, dict]:
    """What DVC compares for `dvc status`: every stage's params dependencies, read through DVC itself."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(repo_dir)) as repo:
        return {st.name: {str(d): d.read_params() for d in st.deps if isinstance(d, ParamsDependency)}
                for st in repo.index.stages}


@pytest.fixture
def dvc_copy(tmp_path):
    from dvc.repo import Repo

    Repo.init(str(tmp_path), no_scm=True).close()
    for f in ("dvc.yaml", "params.yaml"):
        shutil.copy2(ROOT / f, tmp_path / f)
    return tmp_path


def _set(repo_dir: Path, *overrides: str) -> None:
    """Edit params.yaml exactly as `dvc exp run -S <override>` does."""
    from dvc.utils.hydra import apply_overrides

    apply_overrides(repo_dir / "params.yaml", list(overrides))


def test_changing_an_operational_knob_changes_no_stage_params(dvc_copy):
    before = _dvc_param_values(dvc_copy)
    assert {"train_corda", "depth_pretrain", "data", "evaluate"} <= set(before)
    params = load_params(dvc_copy / "params.yaml")
    changes = []
    for name, sub in params[RUN].items():
        for k, v in sub.items():
            new = {"auto": "cpu"}.get(v, v + 1 if isinstance(v, int) else v)
            changes.append(f"{RUN}.{name}.{k}={new}")
    _set(dvc_copy, *changes)
    after = load_params(dvc_copy / "params.yaml")
    assert after[RUN]["train"]["log_every"] == params[RUN]["train"]["log_every"] + 1
    assert _dvc_param_values(dvc_copy) == before


def test_changing_a_result_param_does_change_stage_params(dvc_copy):
    """The check above can see a change: train.lr reaches the training stages' params dependencies."""
    before = _dvc_param_values(dvc_copy)
    _set(dvc_copy, "train.lr=0.125")
    after = _dvc_param_values(dvc_copy)
    changed = {s for s in before if before[s] != after[s]}
    assert changed == {"train@source_only", "train@dacs", "train_corda", "train_oracle", "self_train"}


@pytest.mark.parametrize("override, stages", [
    # The depth-only keys (dvc.yaml's train_depth list): the CorDA branch, never the baselines or the oracle.
    ("train.lambda_depth=0.05", {"train_corda", "self_train"}),
    ("train.depth_weight_eps=0.01", {"train_corda", "self_train"}),
    # The oracle's own step count: the oracle alone.
    ("train.oracle_iterations=9", {"train_oracle"}),
])
def test_a_train_key_changes_only_the_stages_that_read_it(dvc_copy, override, stages):
    """What `dvc exp run -S <override>` re-runs first, read through DVC itself from dvc.yaml's anchored key lists
    (the stages downstream then follow from their deps: pseudo_labels, evaluate)."""
    before = _dvc_param_values(dvc_copy)
    _set(dvc_copy, override)
    after = _dvc_param_values(dvc_copy)
    assert {s for s in before if before[s] != after[s]} == stages


def test_run_knob_set_like_exp_run_reaches_the_config(dvc_copy):
    from corda.seg.config import TrainConfig

    _set(dvc_copy, f"{RUN}.train.log_every=10", f"{RUN}.depth.workers=0")
    p = load_params(dvc_copy / "params.yaml")
    assert section(p, "train", TrainConfig).log_every == 10
    assert section(p, "depth", _configs()["depth"]).workers == 0


@pytest.mark.parametrize("edit, message", [
    (lambda p: p["train"].update(log_every=5), "train.log_every: changes no result, so it belongs in run.train"),
    (lambda p: p[RUN]["train"].update(lr=0.1), "run.train.lr: not an operational key of train"),
    (lambda p: p[RUN]["train"].update(log_every=0), "run.train.log_every: 0 is below the minimum 1"),
    (lambda p: p[RUN]["train"].update(device="gpu"), "run.train.device: 'gpu' is not one of"),
])
def test_misplaced_or_bad_run_key_is_one_error_naming_it(edit, message):
    from corda.seg.config import TrainConfig

    p = load_params(ROOT / "params.yaml")
    edit(p)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        section(p, "train", TrainConfig)
