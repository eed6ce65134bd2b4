"""The segmentation run, corda.seg.run: saved models and the optimizer (method.md §5)."""

import copy

import torch
import torch.nn.functional as F

from corda.models.corda_net import param_groups
from corda.seg.config import TrainConfig
from corda.seg.model_file import build_seg_model


def test_self_train_starts_from_the_chosen_round1_weights(tmp_path):
    """self_train.init_from picks the round-1 teacher or student out of models/corda.pt."""
    from corda.seg.config import ModelConfig, TrainConfig
    from corda.seg.model_file import load_model, save_model

    mcfg = ModelConfig(backbone="resnet18", num_classes=3, output_stride=16)
    torch.manual_seed(0)
    student = build_seg_model("corda", backbone="resnet18", num_classes=3, output_stride=16)
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for q in teacher.parameters():
            q.add_(1.0)
    path = tmp_path / "corda.pt"
    save_model(path, method="corda", student=student, teacher=teacher, mcfg=mcfg, tcfg=TrainConfig(), history=[])
    for which, ref in (("teacher", teacher), ("student", student)):
        m, _ = load_model(path, torch.device("cpu"), which=which)
        assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), ref.state_dict().values())), which
    from corda.seg.config import SelfTrainConfig

    assert SelfTrainConfig().init_from == "teacher"

def test_adamw_optimizer_switch():
    from corda.seg.config import ModelConfig, TrainConfig
    from corda.seg.run import build_optimizer
    from corda.seg.model_file import build_model

    model = build_model(ModelConfig(backbone="resnet18", output_stride=16, head="decoder4", init="kaiming",
                                    task_channels=16, bottleneck=8, decoder_channels=24), "corda")
    assert isinstance(build_optimizer(model, TrainConfig(optimizer="adamw", lr=1e-3, head_lr_mult=1.0)),
                      torch.optim.AdamW)
    sgd = build_optimizer(model, TrainConfig())
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[1]["lr"] == 10 * sgd.param_groups[0]["lr"]


def test_adamw_with_duplicate_backbone_updates_is_refused_by_the_config():
    """The authors' repeated SGD updates have no AdamW counterpart: the train section itself says so."""
    import pytest

    from corda.config import from_mapping
    from corda.errors import ConfigError

    with pytest.raises(ConfigError, match="duplicate_backbone_updates"):
        from_mapping(TrainConfig, {"optimizer": "adamw", "duplicate_backbone_updates": True}, "train")


def test_oracle_iterations_are_the_oracles_step_count_only():
    """train.oracle_iterations sets the ceiling's schedule; every compared method keeps train.iterations."""
    from corda.methods import METHODS, ORACLE

    cfg = TrainConfig(iterations=6, oracle_iterations=9)
    assert cfg.for_method(ORACLE).iterations == 9
    for m in METHODS.values():
        assert m is ORACLE or cfg.for_method(m).iterations == 6
    assert TrainConfig(iterations=6).for_method(ORACLE).iterations == 6  # null: as long as the others


def test_for_method_records_the_method_it_trains():
    """The saved train_config names the method that trained it (issue 29: it said "corda" for every model)."""
    from corda.methods import METHODS

    for name, m in METHODS.items():
        assert TrainConfig().for_method(m).method == name
