"""DAFormer recipe pieces (corda.recipe): warm-up + poly schedule, AdamW parameter groups, config keys."""

import pytest
import torch

from corda.config import from_mapping
from corda.errors import ConfigError
from corda.models.daformer_head import DAFormerCorDANet
from corda.recipe import adamw_param_groups, warmup_poly_factor


def test_warmup_then_poly():
    total, warm = 40000, 1500
    f = [warmup_poly_factor(s, total, 1.0, warm, 1e-6) for s in (0, 750, 1499, 1500, 20000, 39999)]
    assert f[0] == pytest.approx(1e-6)  # starts at warmup_ratio
    assert f[1] == pytest.approx((1 - 750 / total) * (1 - 0.5 * (1 - 1e-6)))  # half way up, times the poly
    assert f[2] < f[3] == pytest.approx(1 - warm / total)  # joins the poly curve at the end of the warm-up
    assert f[4] == pytest.approx(0.5)  # power 1.0: linear decay to 0
    assert f[5] == pytest.approx(1 / total)
    assert warmup_poly_factor(10, 100, 0.9) == pytest.approx(0.9 ** 0.9)  # no warm-up: the DeepLab poly


def test_adamw_groups():
    with torch.device("meta"):  # grouping needs names and shapes only
        net = DAFormerCorDANet(mit="b0", depth=True)
    groups = adamw_param_groups(net, lr=6e-5, weight_decay=0.01, head_lr_mult=10.0, no_decay_norm=True)
    enc = {id(p) for p in net.backbone.parameters()}
    by = {(g["lr"], g["weight_decay"]): {id(p) for p in g["params"]} for g in groups}
    assert by[(6e-5, 0.0)] == {id(p) for n, p in net.backbone.named_parameters() if "norm" in n}
    assert by[(6e-5, 0.01)] | by[(6e-5, 0.0)] == enc
    assert by[(6e-5 * 10.0, 0.01)] == \
        {id(p) for p in net.parameters()} - enc  # decoder and CorDA heads at 10×
    opt = torch.optim.AdamW(groups, lr=6e-5, betas=(0.9, 0.999))
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(net.parameters()))


def test_recipe_keys_validate():
    from corda.seg.config import TrainConfig

    cfg = from_mapping(TrainConfig, {"optimizer": "adamw", "warmup_iters": 1500, "rcs_temperature": 0.01,
                                     "fd_weight": 0.005}, "train")
    assert cfg.optimizer == "adamw" and cfg.fd_classes == (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)
    default = from_mapping(TrainConfig, {}, "train")
    assert (default.optimizer, default.warmup_iters, default.rcs_temperature, default.fd_weight) == \
        ("sgd", 0, None, 0.0)  # the DeepLab-v2 recipe is unchanged by default
    for bad, key in (({"optimizer": "adam"}, "train.optimizer"), ({"rcs_temperature": 0.0}, "train.rcs_temperature"),
                     ({"fd_weight": -1.0}, "train.fd_weight")):
        with pytest.raises(ConfigError, match=key):
            from_mapping(TrainConfig, bad, "train")


def test_architecture_keys_validate_and_select_the_network():
    from corda.models.corda_net import CorDANet
    from corda.models.daformer_head import DAFormerCorDANet
    from corda.seg.config import ModelConfig
    from corda.seg.model_file import build_model

    base = {"backbone": "resnet18", "output_stride": 16, "input_norm": "imagenet"}
    mcfg = from_mapping(ModelConfig, {**base, "architecture": "daformer", "mit": "b0"}, "model")
    with torch.device("meta"):  # which network, not its weights
        assert type(build_model(from_mapping(ModelConfig, base, "model"), "dacs")) is CorDANet  # default
        net = build_model(mcfg, "dacs")
    assert isinstance(net, DAFormerCorDANet) and not net.depth  # DACS on DAFormer = DAFormer alone
    with pytest.raises(ConfigError, match="model.mit"):
        from_mapping(ModelConfig, {"mit": "b6"}, "model")
    with pytest.raises(ConfigError, match="model.architecture"):
        from_mapping(ModelConfig, {"architecture": "segformer"}, "model")


def test_train_step_runs_on_the_daformer_network(one_thread):
    """The CorDA training step consumes the DAFormer network unchanged (same output keys, any stride)."""
    import copy

    from corda.seg.config import TrainConfig
    from corda.seg.step import train_step
    from corda.seg.model_file import build_seg_model

    torch.manual_seed(0)
    student = build_seg_model("corda", architecture="daformer", mit="b0", input_norm="imagenet")
    teacher = copy.deepcopy(student).requires_grad_(False)
    b, h, w = 1, 32, 64
    src = {"image": torch.rand(b, 3, h, w), "label": torch.randint(0, 19, (b, h, w)),
           "depth": torch.rand(b, 1, h, w)}
    tgt = {"image": torch.rand(b, 3, h, w), "depth": torch.rand(b, 1, h, w)}
    out = train_step(student, teacher, src, tgt, TrainConfig(method="corda"), 0, torch.Generator().manual_seed(0))
    assert torch.isfinite(out["loss"]) and out["depth_src"] > 0 and out["seg_mix"] > 0
    out["loss"].backward()
    assert student.head_d_src.weight.grad is not None and student.backbone.patch_embed1.proj.weight.grad is not None
