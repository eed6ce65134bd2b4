"""CorDA network, backbone, pretrained loading and the segmentation losses (method.md §1–§2)."""

import pytest
import torch
import torch.nn.functional as F
import torchvision

from corda.errors import CordaError
from corda.losses.segmentation import berhu, ce_mean_valid, weighted_ce
from corda.models.backbone import DilatedResNet, load_pretrained, map_checkpoint_key
from corda.models.corda_net import IMG_MEAN_BGR, CorDANet, param_groups, upsample_outputs

DEPTH_KEYS = {"S", "initial_S", "D", "D_src", "initial_D", "initial_D_src"}

# ----------------------------------------------------------------------------------------------- model


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "resnet101"])
def test_output_shapes_every_backbone(arch):
    torch.manual_seed(0)
    model = CorDANet(num_classes=19, backbone=arch).eval()
    with torch.no_grad():
        out = model(torch.rand(1 if arch == "resnet101" else 2, 3, 64, 128))
    assert set(out) == DEPTH_KEYS
    b = 1 if arch == "resnet101" else 2
    # Output stride 8 with the Caffe ceil-mode pool: 64×128 → 9×17.
    assert out["S"].shape == (b, 19, 9, 17)
    assert out["initial_S"].shape == (b, 19, 9, 17)
    for k in ("D", "D_src", "initial_D", "initial_D_src"):
        assert out[k].shape == (b, 1, 9, 17)
    assert model.backbone.out_channels == (512 if arch == "resnet18" else 2048)


def test_deeplab_geometry_65x65_and_dilations():
    net = DilatedResNet("resnet18").eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 512, 512)).shape[-2:] == (65, 65)  # §1.1: 512 crop → 65×65
    for stage, d in (("layer3", 2), ("layer4", 4)):
        for conv in getattr(net, stage).modules():
            if isinstance(conv, torch.nn.Conv2d):
                assert conv.stride == (1, 1)
                if conv.kernel_size == (3, 3):
                    assert conv.dilation == (d, d) and conv.padding == (d, d)
    deep = DilatedResNet("resnet50")
    # Caffe ResNet: the stride sits on the first 1×1 conv of layer2 (§1.1).
    assert deep.layer2[0].conv1.stride == (2, 2) and deep.layer2[0].conv2.stride == (1, 1)
    assert deep.layer3[0].conv2.dilation == (2, 2) and deep.layer4[0].conv2.dilation == (4, 4)


def test_dacs_model_has_single_head():
    model = CorDANet(backbone="resnet18", depth=False).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 64))
    assert set(out) == {"S", "initial_S"}
    assert out["S"] is out["initial_S"]
    assert not model.has_initial_seg_head
    assert not any(n.startswith(("branch_", "gate_", "head_d")) for n, _ in model.named_parameters())


def test_frozen_bn_affine_still_updates_stats():
    model = CorDANet(backbone="resnet18", freeze_bn_affine=True).train()
    bn = model.backbone.bn1
    assert not bn.weight.requires_grad and not bn.bias.requires_grad
    assert model.branch_s[0].bn1.weight.requires_grad  # task-branch BNs stay trainable (§1.2)
    before = bn.running_mean.clone()
    model(torch.rand(2, 3, 32, 64))
    assert not torch.equal(before, bn.running_mean)
    assert CorDANet(backbone="resnet18", freeze_bn_affine=False).backbone.bn1.weight.requires_grad


def test_init_and_param_groups():
    torch.manual_seed(0)
    model = CorDANet(backbone="resnet18", conv_init_std=0.01)
    w = model.head_s.convs[0].weight.detach()
    assert abs(float(w.std()) - 0.01) < 0.001 and abs(float(w.mean())) < 0.001
    assert abs(float(model.backbone.layer1[0].conv1.weight.detach().std()) - 0.01) < 0.001
    assert torch.all(model.branch_d[0].bn2.weight == 1) and torch.all(model.branch_d[0].bn2.bias == 0)

    groups = param_groups(model, 2.5e-4)
    assert [g["lr"] for g in groups] == pytest.approx([2.5e-4, 2.5e-3])
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert all(id(p) in backbone_ids for p in groups[0]["params"])
    assert not any(id(p) in backbone_ids for p in groups[1]["params"])
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable) and len(set(grouped)) == len(grouped)


@pytest.mark.parametrize("branches,expect_grad", [(2, False), (4, True)])
def test_aspp_branches(branches, expect_grad):
    model = CorDANet(backbone="resnet18", aspp_branches=branches)
    model(torch.rand(2, 3, 32, 64))["S"].sum().backward()
    head = model.head_s.convs
    assert head[1].weight.grad is not None
    # The original's early return (§1.4): the dilation-18/24 convs never get a gradient.
    assert (head[2].weight.grad is not None) == expect_grad
    assert (head[3].weight.grad is not None) == expect_grad


def test_distillation_switch():
    x = torch.rand(2, 3, 32, 64)
    for distill in (True, False):
        torch.manual_seed(0)
        model = CorDANet(backbone="resnet18", distillation=distill).eval()
        with torch.no_grad():
            s0 = model(x)["S"]
            model.branch_d[1].conv3.weight.mul_(3.0)  # change only the depth branch
            s1 = model(x)["S"]
        # With the feature exchange S depends on the depth branch; without it (identity) it does not.
        assert torch.allclose(s0, s1) != distill


def test_initial_seg_head_variants():
    gta = CorDANet(backbone="resnet18", initial_seg_head="aspp")
    syn = CorDANet(backbone="resnet18", initial_seg_head="conv1x1")
    assert gta.initial_s.convs[0].in_channels == 512  # on the raw backbone output
    assert syn.initial_s.kernel_size == (1, 1) and syn.initial_s.in_channels == 256


def test_input_normalisation():
    x = torch.rand(1, 3, 4, 5)
    caffe = CorDANet(backbone="resnet18", input_norm="caffe_bgr")
    expect = x[:, [2, 1, 0]] * 255.0 - torch.tensor(IMG_MEAN_BGR).view(1, 3, 1, 1)
    assert torch.allclose(caffe.normalize(x), expect, atol=1e-3)
    imnet = CorDANet(backbone="resnet18", input_norm="imagenet")
    expect = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(imnet.normalize(x), expect, atol=1e-5)
    assert "norm_mean" not in caffe.state_dict()


def test_upsample_outputs_align_corners():
    out = {"S": torch.rand(1, 2, 3, 4), "D": torch.rand(1, 1, 3, 4)}
    up = upsample_outputs(out, (9, 10))
    assert up["S"].shape == (1, 2, 9, 10) and up["D"].shape == (1, 1, 9, 10)
    # align_corners=True keeps the corner values exactly.
    assert torch.allclose(up["S"][..., 0, 0], out["S"][..., 0, 0])
    assert torch.allclose(up["S"][..., -1, -1], out["S"][..., -1, -1])


# -------------------------------------------------------------------------------------- pretrained


def _random_resnet18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    sd = torchvision.models.resnet18(weights=None).state_dict()
    return {k: (torch.randn_like(v) if v.is_floating_point() else v + 3) for k, v in sd.items()}


def test_coco_key_mapping_and_load(tmp_path, caplog):
    ref = _random_resnet18_state()
    ckpt = {f"Scale.{k}": v for k, v in ref.items() if not k.startswith("fc.")}
    ckpt["Scale.layer5.conv2d_list.0.weight"] = torch.randn(21, 512, 3, 3)  # DeepLab classifier: no match
    ckpt["Scale.layer1.0.conv1.weight"] = torch.randn(64, 64, 1, 1)  # wrong shape: skipped
    path = tmp_path / "coco.pth"
    torch.save(ckpt, path)

    key = "layer3.1.downsample.1.running_var"
    assert map_checkpoint_key(f"Scale.{key}") == key
    assert map_checkpoint_key("module.Scale.bn1.weight") == "bn1.weight"
    model = CorDANet(backbone="resnet18")
    head_before = model.head_s.convs[0].weight.clone()
    with caplog.at_level("INFO"):
        report = load_pretrained(model, path)
    bb = model.backbone.state_dict()
    for k in ("conv1.weight", "bn1.running_var", "layer2.0.downsample.0.weight",
              "layer2.0.downsample.1.weight", "layer4.1.bn2.bias", "layer1.0.bn1.num_batches_tracked"):
        assert torch.equal(bb[k], ref[k]), k
    assert bb["layer1.0.conv1.weight"].shape == (64, 64, 3, 3)  # the mismatched tensor kept its init
    assert not torch.equal(bb["layer1.0.conv1.weight"], ref["layer1.0.conv1.weight"])
    assert report.shape_mismatch == ["layer1.0.conv1.weight"]
    assert report.unexpected == ["layer5.conv2d_list.0.weight"]
    assert len(report.loaded) == len(ref) - 2 - 1  # minus fc.weight/fc.bias and the mismatch
    assert torch.equal(model.head_s.convs[0].weight, head_before)  # heads untouched
    assert "layer1.0.conv1.weight" in caplog.text


def test_torchvision_state_dict_via_constructor(tmp_path):
    ref = _random_resnet18_state()
    path = tmp_path / "imagenet.pth"
    torch.save({"state_dict": ref}, path)
    model = CorDANet(backbone="resnet18", pretrained=path)
    assert torch.equal(model.backbone.layer3[1].conv2.weight, ref["layer3.1.conv2.weight"])
    # Frozen affine survives loading.
    assert not model.backbone.bn1.weight.requires_grad


def test_missing_pretrained_file(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(CordaError, match="nope.pth"):
        CorDANet(backbone="resnet18", pretrained=missing)


# ------------------------------------------------------------------------------------------- losses


def test_berhu_hand_values():
    pred = torch.tensor([2.5, 3.0, 7.0, 12.0, 99.0]).view(1, 1, 1, 5)
    target = torch.tensor([2.0, 2.0, 2.0, 2.0, 1.0]).view(1, 1, 1, 5)  # last pixel invalid (exactly 1.0)
    # r = [0.5, 1, 5, 10], c = 0.2·10 = 2: ℓ = [0.5, 1, (25+4)/4, (100+4)/4].
    assert float(berhu(pred, target)) == pytest.approx((0.5 + 1 + 7.25 + 26.0) / 4)
    # c comes from the max over the whole batch: a second image with r = 20 makes c = 4.
    pred2 = torch.cat([pred, torch.tensor([22.0, 2, 2, 2, 2]).view(1, 1, 1, 5)])
    target2 = torch.cat([target, torch.full((1, 1, 1, 5), 2.0)])
    expect = [0.5, 1, (25 + 16) / 8, (100 + 16) / 8, (400 + 16) / 8, 0, 0, 0, 0]
    assert float(berhu(pred2, target2)) == pytest.approx(sum(expect) / 9)


def test_berhu_no_valid_pixel_and_zero_residual():
    pred = torch.rand(1, 1, 2, 2, requires_grad=True)
    loss = berhu(pred, torch.ones(1, 1, 2, 2))
    assert float(loss.detach()) == 0.0
    loss.backward()
    assert torch.all(pred.grad == 0)
    p = torch.full((1, 1, 2, 2), 3.0, requires_grad=True)
    berhu(p, torch.full((1, 1, 2, 2), 3.0)).backward()
    assert torch.isfinite(p.grad).all()


def test_cross_entropy_normalisations():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 5)
    labels = torch.randint(0, 4, (2, 3, 5))
    labels[0, 0] = 255
    per_pixel = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    n_valid = int((labels != 255).sum())
    assert float(ce_mean_valid(logits, labels)) == pytest.approx(float(per_pixel.sum()) / n_valid, rel=1e-6)
    # Mixed CE: ignored pixels give 0 but still count in the B·H·W denominator (§3.7).
    ones = torch.ones(2, 3, 5)
    assert float(weighted_ce(logits, labels, ones)) == pytest.approx(float(per_pixel.sum()) / 30, rel=1e-6)
    w = torch.rand(2, 3, 5)
    assert float(weighted_ce(logits, labels, w)) == pytest.approx(float((per_pixel * w).sum()) / 30, rel=1e-6)
    assert float(ce_mean_valid(logits, torch.full_like(labels, 255))) == 0.0


# ------------------------------------------------------------------ decoder4 head (the embedded default)


def test_paper_presets_keep_the_authors_parameter_counts():
    """The paper's network is untouched by the decoder4 option: 48,015,074 (GTA) / 46,619,049 (SYNTHIA)."""
    gta = CorDANet(num_classes=19, backbone="resnet101", aspp_branches=2, initial_seg_head="aspp")
    syn = CorDANet(num_classes=19, backbone="resnet101", aspp_branches=2, initial_seg_head="conv1x1")
    assert sum(p.numel() for p in gta.parameters()) == 48_015_074
    assert sum(p.numel() for p in syn.parameters()) == 46_619_049
    assert not hasattr(gta, "decoder")


@pytest.mark.parametrize("depth", [True, False])
def test_decoder4_predicts_at_quarter_resolution(depth):
    torch.manual_seed(0)
    model = CorDANet(num_classes=19, backbone="resnet18", output_stride=16, head="decoder4", init="kaiming",
                     task_channels=16, bottleneck=8, decoder_channels=24, depth=depth,
                     initial_seg_head="conv1x1").eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 64, 128))
    # Stem conv /2, ceil-mode pool /2: layer1 is 17×33, the decoder's grid (deeplabv2 at OS16 gives 5×9).
    assert out["S"].shape == (2, 19, 17, 33)
    if depth:
        assert set(out) == DEPTH_KEYS
        for k in ("D", "D_src", "initial_D", "initial_D_src"):
            assert out[k].shape == (2, 1, 17, 33)
        # CorDA's exchange works at that resolution too.
        assert model.gate_d_to_s.feature.in_channels == 16
    else:
        assert out["initial_S"] is out["S"]


def test_kaiming_init_scales_convs_by_fan_out_and_keeps_predictors_small():
    torch.manual_seed(0)
    model = CorDANet(num_classes=19, backbone="resnet18", output_stride=16, head="decoder4", init="kaiming")
    w = model.backbone.layer3[0].conv2.weight.detach()  # 256 out × 3×3: fan_out 2304, He std sqrt(2/2304) ≈ 0.0295
    assert abs(float(w.std()) - (2 / 2304) ** 0.5) < 0.002
    assert abs(float(model.head_s.weight.detach().std()) - 0.01) < 0.002
    deeplab = CorDANet(num_classes=19, backbone="resnet18", output_stride=16, head="decoder4", init="deeplab")
    assert abs(float(deeplab.backbone.layer3[0].conv2.weight.detach().std()) - 0.01) < 0.001


def test_missing_pretrained_weights_name_the_key_and_the_file(tmp_path):
    from corda.errors import CordaError

    model = DilatedResNet("resnet18")
    with pytest.raises(CordaError, match=r"missing\.pth: pretrained weights not found \(model\.pretrained\); .*"
                                         r"DeepLab-v2 ResNet-101 COCO.*resnet101COCO-41f33a49\.pth.*null"):
        load_pretrained(model, tmp_path / "missing.pth")


def test_upsample_outputs_is_the_one_rule_with_the_callers_dtype():
    """bf16 outputs are cast before upsampling when asked (training, evaluation); aliases stay aliases."""
    s = torch.randn(1, 3, 4, 4).bfloat16()
    out = {"S": s, "initial_S": s, "D": torch.rand(1, 1, 4, 4)}
    up = upsample_outputs(out, (8, 8), keys=("S", "initial_S", "absent"), float32=True)
    assert set(up) == {"S", "initial_S"} and up["S"] is up["initial_S"] and up["S"].dtype == torch.float32
    ref = F.interpolate(s.float(), size=(8, 8), mode="bilinear", align_corners=True)
    assert torch.equal(up["S"], ref)
    assert upsample_outputs(out, (8, 8), keys=("S",))["S"].dtype == torch.bfloat16


@pytest.mark.parametrize("depth", [True, False])
def test_decoder2_reads_semantics_out_at_half_resolution_and_starts_as_decoder4(depth):
    """decoder2: S at 1/2 (a zero-initialised correction from the stem added to the upsampled 1/4 logits); the
    depth outputs, initial_S and the feature exchange stay at 1/4, so at initialisation S is decoder4's S,
    upsampled."""
    kw = dict(num_classes=19, backbone="resnet18", output_stride=16, init="kaiming", task_channels=16,
              bottleneck=8, decoder_channels=24, depth=depth, initial_seg_head="conv1x1")
    torch.manual_seed(0)
    fine = CorDANet(head="decoder2", **kw).eval()
    coarse = CorDANet(head="decoder4", **kw).eval()
    missing, unexpected = coarse.load_state_dict(fine.state_dict(), strict=False)
    assert not missing and {k.split(".")[0] for k in unexpected} == {"refine_s", "fine_s"}
    x = torch.rand(2, 3, 64, 128)
    with torch.no_grad():
        out, ref = fine(x), coarse(x)
    assert out["S"].shape == (2, 19, 32, 64)  # the stem's grid
    assert torch.allclose(out["S"], F.interpolate(ref["S"], size=(32, 64), mode="bilinear", align_corners=True),
                          atol=1e-6)
    if depth:
        for k in ("initial_S", "D", "D_src", "initial_D", "initial_D_src"):
            assert out[k].shape[-2:] == (17, 33) and torch.equal(out[k], ref[k])
    # Trained, the correction is no longer zero and S differs from the upsampled coarse logits.
    with torch.no_grad():
        fine.fine_s.weight.normal_(0, 0.1)
        assert not torch.allclose(fine(x)["S"], out["S"], atol=1e-4)


def test_output_stride_32_is_the_undilated_resnet_and_needs_a_decoder_head():
    from corda.errors import ConfigError

    x = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        # ceil-mode pool: layer1 17×33, then 9×17, 5×9 (OS16 keeps it), 3×5
        assert DilatedResNet("resnet18", output_stride=32)(x).shape[-2:] == (3, 5)
        assert DilatedResNet("resnet18", output_stride=16)(x).shape[-2:] == (5, 9)
    plain = DilatedResNet("resnet18", output_stride=32)
    assert all(m.dilation == (1, 1) for m in plain.modules() if isinstance(m, torch.nn.Conv2d))
    model = CorDANet(num_classes=19, backbone="resnet18", output_stride=32, head="decoder4", init="kaiming",
                     task_channels=16, bottleneck=8, decoder_channels=24, initial_seg_head="conv1x1").eval()
    with torch.no_grad():
        assert model(x)["S"].shape[-2:] == (17, 33)  # the decoder still predicts on layer1's 1/4 grid
    with pytest.raises(ConfigError, match="output_stride 32 needs a decoder head"):
        CorDANet(num_classes=19, backbone="resnet18", output_stride=32, head="deeplabv2")
