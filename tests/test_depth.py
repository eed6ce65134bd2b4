"""Self-supervised depth: photometric losses, networks, the training step and depth metrics."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from corda.config import ConfigError, from_mapping
from corda.depth.metrics import DepthMetricAccumulator, depth_errors, evaluate_depth
from corda.depth.config import DepthConfig
from corda.depth.step import build_depth_models, colour_jitter, depth_train_step, predict_depth
from corda.errors import CordaError
from corda.geometry import depth_to_disp, stereo_transform, warp
from corda.losses.photometric import edge_aware_smoothness, min_reprojection, photometric_error, ssim
from corda.models.depth_net import DepthNet
from corda.models.pose_net import PoseNet

B, H, W = 2, 32, 64
FX, BASELINE, TRUE_DISP = 32.0, 0.5, 4  # true depth = FX·BASELINE/TRUE_DISP = 4 m


def texture(b: int, h: int, w: int, seed: int, cell: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, h // cell + 1, w // cell + 1, generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def intrinsics(b: int = B) -> torch.Tensor:
    return torch.tensor([[FX, 0.0, W / 2], [0.0, FX, H / 2], [0.0, 0.0, 1.0]]).repeat(b, 1, 1)


def stereo_batch(seed: int = 1) -> dict[str, torch.Tensor]:
    """A fronto-parallel textured plane 4 m away: right(u) = left(u + 4 px)."""
    tex = texture(B, H, W + 16, seed)
    return {"image": tex[..., :W], "right": tex[..., TRUE_DISP:TRUE_DISP + W], "K": intrinsics(),
            "baseline": torch.full((B,), BASELINE)}


# --------------------------------------------------------------------------------------------- photometric

def test_ssim_of_identical_images_is_zero():
    x = torch.rand(B, 3, H, W, generator=torch.Generator().manual_seed(0))
    assert ssim(x, x).abs().max() < 1e-6
    assert photometric_error(x, x).abs().max() < 1e-6
    y = torch.rand(B, 3, H, W, generator=torch.Generator().manual_seed(1))
    assert ssim(x, y).mean() > 0.2
    assert ssim(x, y).shape == (B, 3, H, W)


def test_photometric_error_weights():
    x = torch.full((1, 3, 8, 8), 0.5, dtype=torch.float64)
    y = x + 0.1  # constant images: SSIM is driven by the means only
    # α = 0: pure L1.
    l1 = torch.full((1, 1, 8, 8), 0.1, dtype=torch.float64)
    torch.testing.assert_close(photometric_error(x, y, alpha=0.0), l1)
    # α = 0.85 mixes 0.85·(1 − SSIM)/2 + 0.15·L1; with constant patches SSIM = (2μxμy + C1)/(μx² + μy² + C1).
    c1 = 0.01**2
    s = (2 * 0.5 * 0.6 + c1) / (0.25 + 0.36 + c1)
    expected = 0.85 * (1 - s) / 2 + 0.15 * 0.1
    torch.testing.assert_close(photometric_error(x, y), torch.full_like(l1, expected))


def test_min_reprojection_takes_the_per_pixel_minimum():
    a = torch.tensor([[[[0.1, 0.5], [0.3, 0.9]]]])
    b = torch.tensor([[[[0.2, 0.4], [0.7, 0.1]]]])
    loss, mask = min_reprojection([a, b])
    torch.testing.assert_close(loss, torch.tensor([[[[0.1, 0.4], [0.3, 0.1]]]]))
    assert mask.eq(1).all()
    # Identity errors below a pixel's reconstructions mask it out (and it takes the identity value).
    ident = torch.tensor([[[[0.0, 1.0], [1.0, 0.05]]]])
    loss, mask = min_reprojection([a, b], [ident], torch.Generator().manual_seed(0))
    torch.testing.assert_close(mask, torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]]))
    torch.testing.assert_close(loss, torch.tensor([[[[0.0, 0.4], [0.3, 0.05]]]]), atol=1e-4, rtol=0)


def test_automask_removes_static_pixels():
    # Source identical to the target (a static camera): any non-trivial warp loses to the un-warped
    # source, so every pixel is masked out; the loss there carries no gradient to the depth.
    img = texture(B, H, W, seed=2, cell=4)
    depth = torch.full((B, 1, H, W), 2.0, requires_grad=True)
    T = stereo_transform(torch.full((B,), BASELINE), 1)
    err = photometric_error(warp(img, depth, intrinsics(), T), img)
    ident = photometric_error(img, img)
    loss, mask = min_reprojection([err], [ident], torch.Generator().manual_seed(0))
    # The warp shifts by fx·b/z = 8 px; the first columns sample the clamped border, which equals the
    # target there too (an exact tie, settled by the noise), so only in-view pixels are checked.
    assert mask[..., 9:].sum() == 0
    assert loss[..., 9:].abs().max() < 1e-4
    # A moving source (the true stereo pair) keeps most pixels.
    batch = stereo_batch()
    depth_true = torch.full((B, 1, H, W), FX * BASELINE / TRUE_DISP)
    err = photometric_error(warp(batch["right"], depth_true, intrinsics(), T), batch["image"])
    _, mask = min_reprojection([err], [photometric_error(batch["right"], batch["image"])],
                               torch.Generator().manual_seed(0))
    assert mask.mean() > 0.8


def test_min_reprojection_noise_is_seeded():
    e = [torch.rand(1, 1, 4, 4)]
    ident = [e[0].clone()]  # exact ties: the noise decides
    m1 = min_reprojection(e, ident, torch.Generator().manual_seed(5))[1]
    m2 = min_reprojection(e, ident, torch.Generator().manual_seed(5))[1]
    assert torch.equal(m1, m2)
    assert 0 < m1.mean() < 1


def test_edge_aware_smoothness():
    flat_img = torch.zeros(1, 3, 8, 8)
    const = torch.full((1, 1, 8, 8), 0.3)
    assert edge_aware_smoothness(const, flat_img).item() == pytest.approx(0.0, abs=1e-7)
    step = torch.ones(1, 1, 8, 8)
    step[..., 4:] = 2.0
    # Mean normalisation: scaling the disparity does not change the loss.
    a = edge_aware_smoothness(step, flat_img)
    assert edge_aware_smoothness(step * 10, flat_img).item() == pytest.approx(a.item(), rel=1e-5)
    # d* = d / 1.5 jumps by 1/1.5 on 8 of the 8·7 x-differences; no image edge: weight 1.
    assert a.item() == pytest.approx((1 / 1.5) * 8 / 56, rel=1e-5)
    # An image edge at the same place relaxes the penalty.
    edge_img = torch.zeros(1, 3, 8, 8)
    edge_img[..., 4:] = 1.0
    assert edge_aware_smoothness(step, edge_img).item() == pytest.approx(a.item() * math.exp(-1), rel=1e-5)


# --------------------------------------------------------------------------------------------- networks

@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_depth_net_shapes_and_range(backbone):
    torch.manual_seed(0)
    net = DepthNet(backbone, None, 0.1, 100.0)
    x = torch.rand(B, 3, H, W)
    disps = net(x)
    assert [d.shape for d in disps] == [(B, 1, H // 2**s, W // 2**s) for s in range(4)]
    assert all(((d > 0) & (d < 1)).all() for d in disps)
    depth = net.predict_depth(x)
    assert depth.shape == (B, 1, H, W) and depth.min() >= 0.1 and depth.max() <= 100.0


def test_depth_net_pretrained_file(tmp_path):
    with pytest.raises(CordaError, match="missing_weights.pth"):
        DepthNet("resnet18", str(tmp_path / "missing_weights.pth"))
    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(ref.state_dict(), path)
    net = DepthNet("resnet18", str(path))
    torch.testing.assert_close(net.encoder.net.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)
    # The pose encoder spreads the RGB kernel over both frames.
    pose = PoseNet("resnet18", str(path))
    torch.testing.assert_close(pose.encoder.net.conv1.weight, ref.conv1.weight.repeat(1, 2, 1, 1) / 2)
    with pytest.raises(CordaError, match="check the backbone"):
        DepthNet("resnet50", str(path))


def test_pose_net_outputs_small_motion():
    torch.manual_seed(0)
    pose = PoseNet("resnet18")
    a, b = torch.rand(B, 3, H, W), torch.rand(B, 3, H, W)
    aa, t = pose(a, b)
    assert aa.shape == (B, 3) and t.shape == (B, 3)
    assert aa.abs().max() < 0.1 and t.abs().max() < 0.1  # the 0.01 output scale
    (aa.sum() + t.sum()).backward()
    assert pose.encoder.net.conv1.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------- training

def test_config_validation():
    cfg = from_mapping(DepthConfig, {"mode": "mono+stereo", "min_depth_m": 0.5}, "depth")
    assert cfg.mode == "mono+stereo" and cfg.min_depth_m == 0.5 and cfg.smoothness == 1e-3
    with pytest.raises(ConfigError, match="depth.mode"):
        from_mapping(DepthConfig, {"mode": "video"}, "depth")
    with pytest.raises(ConfigError, match="depth.num_scales"):
        from_mapping(DepthConfig, {"num_scales": 5}, "depth")
    with pytest.raises(ConfigError, match="min_depth_m"):
        from_mapping(DepthConfig, {"min_depth_m": 10.0, "max_depth_m": 5.0}, "depth")


def test_colour_jitter_is_per_sample_and_optional():
    img = texture(B, H, W, seed=4)
    factors = torch.tensor([[1.2, 0.8, 1.1, 0.05], [0.9, 1.1, 0.8, -0.05]], dtype=torch.float64)
    out = colour_jitter(img, factors, torch.tensor([True, False]))
    assert not torch.allclose(out[0], img[0]) and torch.equal(out[1], img[1])
    assert out.min() >= 0 and out.max() <= 1
    same = colour_jitter(img, torch.tensor([[1.0, 1.0, 1.0, 0.0]] * B, dtype=torch.float64),
                         torch.tensor([True, True]))
    torch.testing.assert_close(same, img, atol=1e-5, rtol=0)


class ConstantDisparity(torch.nn.Module):
    """A stand-in depth net: the same sigmoid disparity everywhere; records the input it was given."""

    def __init__(self, value: float):
        super().__init__()
        self.logit = torch.nn.Parameter(torch.tensor(math.log(value / (1 - value))))
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x)
        b, _, h, w = x.shape
        return [torch.sigmoid(self.logit).expand(b, 1, h >> s, w >> s) for s in range(4)]


def test_colour_jitter_reaches_the_network_but_not_the_loss():
    batch = stereo_batch()
    kw = dict(mode="stereo", automask=False, flip=False, num_scales=1)
    losses = {}
    for jitter in (False, True):
        net = ConstantDisparity(0.3)
        cfg = DepthConfig(colour_jitter=jitter, **kw)
        gen = torch.Generator().manual_seed(3)
        losses[jitter] = depth_train_step({"depth": net}, batch, cfg, gen)["loss"]
        seen = net.seen[0]
        assert torch.equal(seen, batch["image"]) != jitter
    torch.testing.assert_close(losses[True], losses[False])


def test_flipped_stereo_pairs_stay_consistent():
    # With the true depth, a mirrored pair must reconstruct exactly as well as the original: its error map is
    # the mirror image (right camera at −baseline). A wrong stereo side would sample 4 px the wrong way.
    batch = stereo_batch()
    true_sigmoid = depth_to_disp(torch.tensor(FX * BASELINE / TRUE_DISP), 1.0, 100.0).item()
    kw = dict(mode="stereo", automask=False, colour_jitter=False, num_scales=1, min_depth_m=1.0)
    seed = 0
    assert (torch.rand(B, generator=torch.Generator().manual_seed(seed)) < 0.5).any()  # some sample flips
    loss = {flip: depth_train_step({"depth": ConstantDisparity(true_sigmoid)}, batch,
                                   DepthConfig(flip=flip, **kw), torch.Generator().manual_seed(seed))["loss"]
            for flip in (False, True)}
    torch.testing.assert_close(loss[True], loss[False], atol=1e-5, rtol=0)
    assert loss[False] < 0.05


def _run(cfg: DepthConfig, steps: int, batch: dict[str, torch.Tensor], seed: int = 0):
    torch.manual_seed(seed)
    models = build_depth_models(cfg)
    opt = torch.optim.Adam([p for m in models.values() for p in m.parameters()], lr=cfg.lr)
    for m in models.values():
        m.train()
    history = []
    for step in range(steps):
        terms = depth_train_step(models, batch, cfg, torch.Generator().manual_seed(1000 * seed + step))
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
    return models, history


def test_stereo_training_lowers_the_loss_and_finds_metric_depth():
    # Depth range 1..100 m: the initial sigmoid 0.5 is ~2 m (8 px), within the texture's reach of 4 m.
    cfg = DepthConfig(mode="stereo", min_depth_m=1.0, max_depth_m=100.0, lr=3e-4)
    batch = stereo_batch()
    models, hist = _run(cfg, 30, batch)
    first = np.mean([h["loss"] for h in hist[:5]])
    last = np.mean([h["loss"] for h in hist[-5:]])
    assert last < 0.5 * first, (first, last)
    assert all(math.isclose(h["loss"], h["photometric"] + h["smoothness"], rel_tol=1e-5) for h in hist)
    # The known baseline gives metric scale: the plane is 4 m away.
    depth = predict_depth(models["depth"], batch["image"], cfg)
    assert depth.shape == (B, 1, H, W)
    assert abs(depth[..., 8:].median().item() - 4.0) < 1.0
    assert models["depth"].training  # predict_depth restored the mode


def test_same_seed_gives_same_weights():
    cfg = DepthConfig(mode="stereo")
    a, _ = _run(cfg, 2, stereo_batch())
    b, _ = _run(cfg, 2, stereo_batch())
    c, _ = _run(cfg, 2, stereo_batch(), seed=1)
    sa, sb, sc = a["depth"].state_dict(), b["depth"].state_dict(), c["depth"].state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


@pytest.mark.parametrize("mode", ["mono", "mono+stereo"])
def test_video_modes_train_the_pose_net(mode):
    cfg = DepthConfig(mode=mode, num_scales=2)
    tex = texture(B, H, W + 16, seed=6)
    batch = {"image": tex[..., 2:2 + W], "prev": tex[..., :W], "next": tex[..., 4:4 + W],
             "right": tex[..., 6:6 + W], "K": intrinsics(), "baseline": torch.full((B,), BASELINE)}
    torch.manual_seed(0)
    models = build_depth_models(cfg)
    assert set(models) == {"depth", "pose"}
    terms = depth_train_step(models, batch, cfg, torch.Generator().manual_seed(0))
    assert set(terms) >= {"loss", "photometric", "smoothness"}
    assert all(torch.isfinite(v).all() for v in terms.values())
    terms["loss"].backward()
    assert models["pose"].decoder[-1].weight.grad.abs().sum() > 0
    assert models["depth"].decoder.heads[0][1].weight.grad.abs().sum() > 0
    del batch["prev"]
    with pytest.raises(CordaError, match="prev"):
        depth_train_step(models, batch, cfg, torch.Generator().manual_seed(0))


def test_stereo_mode_builds_no_pose_net():
    assert set(build_depth_models(DepthConfig(mode="stereo"))) == {"depth"}


# --------------------------------------------------------------------------------------------- metrics

def test_depth_errors_hand_computed():
    gt = np.array([1.0, 1.0, 1.0, 1.0])
    pred = np.array([1.2, 1.5, 1.9, 3.0])
    e = depth_errors(gt, pred)
    d = pred - gt
    assert e["abs_rel"] == pytest.approx(np.mean(np.abs(d)))  # gt = 1
    assert e["abs_rel"] == pytest.approx((0.2 + 0.5 + 0.9 + 2.0) / 4)
    assert e["sq_rel"] == pytest.approx((0.04 + 0.25 + 0.81 + 4.0) / 4)
    assert e["rmse"] == pytest.approx(math.sqrt((0.04 + 0.25 + 0.81 + 4.0) / 4))
    logs = [math.log(1.2), math.log(1.5), math.log(1.9), math.log(3.0)]
    assert e["rmse_log"] == pytest.approx(math.sqrt(sum(x * x for x in logs) / 4))
    # max ratios 1.2, 1.5, 1.9, 3.0 against 1.25, 1.5625, 1.953.
    assert (e["delta1"], e["delta2"], e["delta3"]) == (0.25, 0.5, 0.75)
    # Under-estimates count through gt/pred.
    assert depth_errors(np.array([2.0]), np.array([1.0]))["delta3"] == 0.0


def test_evaluate_depth_masks_scales_and_caps():
    gt = np.array([[np.nan, 0.0, 2.0], [4.0, 8.0, 200.0]])
    pred = np.array([[5.0, 5.0, 1.0], [2.0, 4.0, 1.0]])
    res = evaluate_depth(pred, gt, 1e-3, 80.0, median_scaling=True)
    # Valid: 2, 4, 8 (NaN, 0 and beyond max_depth dropped); pred = gt / 2 → ratio 2, perfect after scaling.
    assert res.num_valid == 3 and res.ratio == pytest.approx(2.0)
    assert res.errors["abs_rel"] == pytest.approx(0.0) and res.errors["delta1"] == 1.0
    # Without median scaling every prediction is half the truth.
    res = evaluate_depth(pred, gt, 1e-3, 80.0, median_scaling=False)
    assert res.ratio == 1.0 and res.errors["abs_rel"] == pytest.approx(0.5)
    # Predictions are capped to [min, max].
    res = evaluate_depth(np.array([500.0, 0.01]), np.array([80.0, 1.0]), 0.5, 100.0, median_scaling=False)
    assert res.errors["abs_rel"] == pytest.approx((20 / 80 + 0.5 / 1) / 2)
    assert evaluate_depth(pred, np.full_like(gt, np.nan), 1e-3, 80.0, False) is None


def test_accumulator_averages_per_image():
    acc = DepthMetricAccumulator(1e-3, 80.0, median_scaling=True)
    acc.update(torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 2, 2), 6.0))  # ratio 3, perfect
    gt = np.ones((4, 4))
    gt[0, 0] = np.nan
    pred = np.ones((4, 4))
    pred[1:, :] = 2.0  # after median scaling (ratio 0.5): 0.5 on 3 pixels, 1.0 on 12
    acc.update(pred, gt)
    acc.update(np.ones((2, 2)), np.zeros((2, 2)))  # no valid gt: skipped
    out = acc.compute()
    assert out["num_images"] == 2 and out["skipped"] == 1
    second = depth_errors(np.ones(15), np.r_[np.full(3, 0.5), np.ones(12)])
    assert out["abs_rel"] == pytest.approx((0.0 + second["abs_rel"]) / 2)  # per image, not per pixel
    np.testing.assert_allclose(acc.ratios, [3.0, 0.5])
    assert out["ratio_median"] == pytest.approx(1.75)
