"""Our ResNet and drop-path replace torchvision's without changing a single seeded number.

corda no longer imports torchvision (its import costs every stage process ~3 s of CPU); these tests keep it
as the reference: same state-dict names, bit-equal random initialisation for the same seed, equal forwards.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from corda.models import backbone
from corda.models.mit import DropPath
from corda.models.resnet import resnet
from corda.seg.config import ModelConfig
from corda.seg.model_file import build_model

ROOT = Path(__file__).resolve().parents[1]


def _assert_same_state(ours: torch.nn.Module, ref: torch.nn.Module) -> None:
    a, b = ours.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    unequal = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert not unequal, f"{len(unequal)} tensors differ, first {unequal[:3]}"


# Two seeds for each block type; one for the deeper nets (a ResNet-101 takes seconds to initialise on CPU).
@pytest.mark.parametrize(("arch", "seed"), [("resnet18", 0), ("resnet18", 1234), ("resnet34", 0),
                                            ("resnet50", 0), ("resnet50", 1234), ("resnet101", 1234)])
def test_resnet_equals_torchvision(arch, seed):
    torch.manual_seed(seed)
    ours = resnet(arch)
    torch.manual_seed(seed)
    ref = getattr(torchvision.models, arch)(weights=None)
    _assert_same_state(ours, ref)
    x = torch.randn(2, 3, 40, 48, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        assert torch.equal(ours.train()(x), ref.train()(x))
        _assert_same_state(ours, ref)  # running statistics after a train-mode step
        assert torch.equal(ours.eval()(x), ref.eval()(x))


def test_generator_left_in_the_same_state():
    torch.manual_seed(5)
    resnet("resnet18")
    after_ours = torch.randn(16)
    torch.manual_seed(5)
    torchvision.models.resnet18(weights=None)
    assert torch.equal(after_ours, torch.randn(16))


def test_torchvision_state_dict_loads_strictly():
    ref = torchvision.models.resnet101(weights=None).state_dict()
    resnet("resnet101").load_state_dict(ref, strict=True)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("shape", [(4, 49, 32), (3, 8, 5, 5)])
def test_drop_path_equals_stochastic_depth(p, shape):
    x = torch.randn(*shape)
    ours, ref = DropPath(p).train(), torchvision.ops.StochasticDepth(p, "row").train()
    torch.manual_seed(11)
    a = ours(x)
    torch.manual_seed(11)
    b = ref(x)
    assert torch.equal(a, b)
    assert torch.equal(ours.eval()(x), x)


def test_drop_path_drops_whole_samples():
    torch.manual_seed(0)
    y = DropPath(0.5).train()(torch.ones(64, 7, 3))
    per_sample = y.flatten(1)
    assert set(per_sample.unique().tolist()) == {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()


@pytest.mark.parametrize("kw", [{}, {"backbone": "resnet18", "output_stride": 32, "head": "decoder4",
                                     "init": "kaiming"}])
def test_segmentation_model_unchanged(monkeypatch, kw):
    """The whole DeepLab/CorDA network (ModelConfig's paper default, and the embedded default's backbone)
    built on our ResNet equals the one built on torchvision's, seed for seed."""
    torch.manual_seed(7)
    ours = build_model(ModelConfig(**kw), "corda")
    monkeypatch.setattr(backbone, "resnet", lambda arch: getattr(torchvision.models, arch)(weights=None))
    torch.manual_seed(7)
    ref = build_model(ModelConfig(**kw), "corda")
    assert any(type(m).__module__.startswith("torchvision") for m in ref.modules())
    _assert_same_state(ours, ref)


def test_stage_processes_do_not_import_torchvision():
    code = ("import sys, torch\n"
            "import stages.train, stages.evaluate, stages.depth_pretrain, stages.depth_maps, stages.pseudo_labels\n"
            "import stages.self_train, stages.predict\n"
            "from corda.seg.config import ModelConfig\n"
            "from corda.seg.model_file import build_model\n"
            "from corda.models.depth_net import DepthNet\n"
            "from corda.models.pose_net import PoseNet\n"
            "build_model(ModelConfig(backbone='resnet18'), 'corda')\n"
            "build_model(ModelConfig(architecture='daformer', mit='b0'), 'corda')(torch.rand(1, 3, 64, 64))\n"
            "DepthNet('resnet18'); PoseNet('resnet18')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
