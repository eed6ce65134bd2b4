"""MiT encoder (corda.models.mit), DAFormer decoder + CorDA network (corda.models.daformer_head), the factory."""

import pytest
import torch

from corda.errors import CordaError
from corda.models.daformer_head import DAFormerCorDANet, DAFormerDecoder
from corda.models.factory import build_network
from corda.models.mit import MIT_SPECS, MixTransformer, load_mit_weights


def _count(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# SegFormer (Xie et al., 2021) Table 1 encoder parameters in millions, and the exact counts of the official
# mit_b* definitions (without the ImageNet classifier head), which this module reproduces layer for layer.
PUBLISHED_M = {"b0": 3.4, "b1": 13.1, "b2": 24.2, "b3": 44.0, "b4": 60.8, "b5": 81.4}
EXACT = {"b0": 3_319_392, "b1": 13_151_424, "b2": 24_196_288, "b3": 44_072_128, "b4": 60_842_688,
         "b5": 81_443_008}


@pytest.mark.parametrize("variant", sorted(MIT_SPECS))
def test_encoder_parameter_counts(variant):
    with torch.device("meta"):  # shapes only: no memory, no slow random init of 81M weights
        n = _count(MixTransformer(variant))
    assert n == EXACT[variant]
    assert abs(n / 1e6 - PUBLISHED_M[variant]) <= 0.1  # the paper rounds loosely (B0: 3.32 → "3.4")


def test_encoder_output_shapes_and_official_names(one_thread):
    enc = MixTransformer("b0")
    outs = enc(torch.rand(2, 3, 64, 96))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 16, 24), (2, 64, 8, 12), (2, 160, 4, 6), (2, 256, 2, 3)]
    names = set(enc.state_dict())
    for key in ("patch_embed1.proj.weight", "patch_embed4.norm.bias", "block1.0.attn.q.weight",
                "block1.0.attn.kv.weight", "block1.0.attn.sr.weight", "block1.0.attn.norm.weight",
                "block2.1.mlp.dwconv.dwconv.weight", "block4.1.mlp.fc2.bias", "norm1.weight", "norm4.bias"):
        assert key in names
    assert "block4.0.attn.sr.weight" not in names  # stage 4 has sr_ratio 1: no reduction conv


def _official_checkpoint(variant: str) -> dict[str, torch.Tensor]:
    """A state dict shaped and named as the official mit_*.pth (encoder keys + the ImageNet ``head``)."""
    enc = MixTransformer(variant)
    sd = {k: torch.randn_like(v) for k, v in enc.state_dict().items()}
    sd["head.weight"] = torch.randn(1000, enc.out_channels[-1])
    sd["head.bias"] = torch.randn(1000)
    return sd


def test_official_checkpoint_loads(tmp_path):
    sd = _official_checkpoint("b0")
    path = tmp_path / "mit_b0.pth"
    torch.save(sd, path)
    enc = MixTransformer("b0")
    dropped = load_mit_weights(enc, path)
    assert sorted(dropped) == ["head.bias", "head.weight"]
    own = enc.state_dict()
    assert all(torch.equal(own[k], sd[k]) for k in own)
    # A DAFormer/mmseg segmentor checkpoint (backbone.* + decode_head.*) loads its encoder too.
    wrapped = {f"backbone.{k}": v for k, v in sd.items() if not k.startswith("head.")}
    wrapped["decode_head.conv_seg.weight"] = torch.zeros(19, 256, 1, 1)
    torch.save({"state_dict": wrapped}, path)
    enc2 = MixTransformer("b0")
    assert load_mit_weights(enc2, path) == ["decode_head.conv_seg.weight"]
    assert torch.equal(enc2.block1[0].attn.kv.weight, sd["block1.0.attn.kv.weight"])


def test_wrong_checkpoint_one_line_error(tmp_path):
    path = tmp_path / "mit_b1.pth"
    torch.save(_official_checkpoint("b1"), path)  # b1 has other widths than b0
    enc = MixTransformer("b0")
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    with pytest.raises(CordaError) as err:
        load_mit_weights(enc, path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "with another shape" in msg and "model.mit" in msg
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())  # nothing half-loaded

    sd = _official_checkpoint("b0")
    sd["block1.0.attn.query.weight"] = sd.pop("block1.0.attn.q.weight")  # a renamed key (e.g. HF naming)
    torch.save(sd, path)
    with pytest.raises(CordaError) as err:
        load_mit_weights(MixTransformer("b0"), path)
    msg = str(err.value)
    assert "\n" not in msg and "1 missing: block1.0.attn.q.weight" in msg
    assert "1 unexpected: block1.0.attn.query.weight" in msg
    with pytest.raises(CordaError, match="not found"):
        load_mit_weights(MixTransformer("b0"), tmp_path / "absent.pth")


def test_daformer_decoder_parameters():
    # daformer_sepaspp_mitb5: 4 linear embeddings to 256, separable ASPP (1, 6, 12, 18) without pooling, 3×3
    # bottleneck; + the 19-class 1×1 classifier = 3,712,275 ≈ 3.7M.
    dec = DAFormerDecoder((64, 128, 320, 512))
    assert _count(dec) == 3_707_392
    assert _count(dec) + 256 * 19 + 19 == 3_712_275
    assert _count(dec.embed) == (64 + 128 + 320 + 512) * 256 + 4 * 256
    # The dilated branches are depthwise-separable: a depthwise 3×3 (groups = channels) then a 1×1.
    dw = dec.fuse.branches[1][0][0]
    assert dw.groups == 1024 and dw.dilation == (6, 6)


def test_daformer_corda_outputs_mirror_corda_net(one_thread):
    x = torch.rand(2, 3, 64, 128)
    net = DAFormerCorDANet(num_classes=19, mit="b0", depth=True).eval()
    out = net(x, return_features=True)
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes == {"S": (2, 19, 16, 32), "initial_S": (2, 19, 16, 32), "D": (2, 1, 16, 32),
                      "D_src": (2, 1, 16, 32), "initial_D": (2, 1, 16, 32), "initial_D_src": (2, 1, 16, 32),
                      "encoder": (2, 256, 2, 4)}
    base = DAFormerCorDANet(num_classes=19, mit="b0", depth=False).eval()
    o = base(x)
    assert set(o) == {"S", "initial_S"} and o["S"] is o["initial_S"] and not base.has_initial_seg_head


def test_feature_exchange_switch(one_thread):
    torch.manual_seed(0)
    net = DAFormerCorDANet(mit="b0", distillation=True).eval()
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a = net(x)["S"]
        net.gate_d_to_s.feature.weight.mul_(3.0)  # the depth→semantic message changes S
        b = net(x)["S"]
    assert not torch.allclose(a, b)
    plain = DAFormerCorDANet(mit="b0", distillation=False)
    assert not hasattr(plain, "gate_d_to_s")


def test_factory_default_is_deeplab_and_daformer_on_request(tmp_path):
    from corda.models.corda_net import CorDANet

    kw = dict(backbone="resnet18", pretrained=None, output_stride=16, task_channels=256, bottleneck=64,
              aspp_branches=4, initial_seg_head="aspp", distillation=True, input_norm="imagenet",
              freeze_bn_affine=True, num_classes=19)
    assert type(build_network(**kw)) is CorDANet
    net = build_network(architecture="daformer", mit="b0", **kw)
    assert isinstance(net, DAFormerCorDANet) and net.backbone.variant == "b0"
    path = tmp_path / "mit_b0.pth"
    torch.save(_official_checkpoint("b0"), path)
    net = build_network(architecture="daformer", mit="b0", **{**kw, "pretrained": str(path)})
    assert torch.equal(net.backbone.norm4.weight, torch.load(path)["norm4.weight"])
