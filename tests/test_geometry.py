"""Camera geometry of self-supervised depth (corda.geometry)."""

import math

import pytest
import torch
import torch.nn.functional as F

from corda.geometry import (
    axis_angle_to_matrix,
    backproject,
    depth_to_disp,
    disp_to_depth,
    in_view,
    pose_to_matrix,
    project,
    scale_intrinsics,
    stereo_transform,
    warp,
)
from corda.losses.photometric import photometric_error

B, H, W = 2, 32, 64
FX = 32.0


def intrinsics(b: int = B, fx: float = FX, cx: float = W / 2, cy: float = H / 2) -> torch.Tensor:
    K = torch.tensor([[fx, 0.0, cx], [0.0, fx, cy], [0.0, 0.0, 1.0]])
    return K.repeat(b, 1, 1)


def smooth_texture(b: int, h: int, w: int, seed: int = 0, cell: int = 4) -> torch.Tensor:
    """A random colour texture with structure at ``cell`` pixels (bilinear upsampling of noise)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 3, h // cell + 1, w // cell + 1, generator=g)
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def normalised_pixel_centres(h: int, w: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return torch.stack((2 * xs / w - 1, 2 * ys / h - 1), -1)


def test_backproject_then_project_is_identity():
    g = torch.Generator().manual_seed(0)
    depth = 1.0 + 20.0 * torch.rand(B, 1, H, W, generator=g)
    K = intrinsics()
    K[1, 0, 0] = 40.0  # a second camera with other intrinsics
    K[1, 0, 2] = 30.3
    points = backproject(depth, torch.linalg.inv(K))
    assert points.shape == (B, 3, H * W)
    # z of every back-projected point is the depth itself.
    torch.testing.assert_close(points[:, 2], depth.reshape(B, -1))
    grid = project(points, K, torch.eye(4).repeat(B, 1, 1), H, W)
    assert grid.shape == (B, H, W, 2)
    torch.testing.assert_close(grid, normalised_pixel_centres(H, W).expand(B, H, W, 2), atol=1e-5, rtol=0)


def test_identity_warp_reproduces_the_image():
    img = torch.rand(B, 3, H, W, generator=torch.Generator().manual_seed(1))
    out = warp(img, torch.full((B, 1, H, W), 7.0), intrinsics(), torch.eye(4).repeat(B, 1, 1))
    torch.testing.assert_close(out, img, atol=1e-5, rtol=0)


def test_project_applies_the_transform():
    # A point 10 m ahead on the optical axis, camera moved 1 m to the right (T: X ↦ X − 1 m·e_x):
    # it appears fx·1/10 = 3.2 px left of the principal point.
    pts = torch.tensor([[[0.0], [0.0], [10.0]]])
    T = stereo_transform(torch.tensor([1.0]), 1)
    grid = project(pts, intrinsics(1), T, 1, 1)  # one point, shaped as a 1×1 grid
    u = (grid[0, 0, 0, 0] + 1) * 1 / 2  # x_norm = 2u/W − 1 with W = 1
    v = (grid[0, 0, 0, 1] + 1) * 1 / 2
    assert u.item() == pytest.approx(W / 2 - FX / 10, abs=1e-4)
    assert v.item() == pytest.approx(H / 2, abs=1e-4)


def test_axis_angle_matches_hand_rotation():
    R = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, math.pi / 2]]))
    expected = torch.tensor([[[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])
    torch.testing.assert_close(R, expected, atol=1e-6, rtol=0)
    R = axis_angle_to_matrix(torch.tensor([[math.pi / 3, 0.0, 0.0]]))
    c, s = 0.5, math.sqrt(3) / 2
    torch.testing.assert_close(R, torch.tensor([[[1.0, 0, 0], [0, c, -s], [0, s, c]]]), atol=1e-6, rtol=0)


def test_axis_angle_round_trip_and_matrix_exponential():
    aa = torch.tensor([[0.3, -0.2, 0.5], [1e-9, 0.0, 0.0], [-1.0, 2.0, 0.5]], dtype=torch.float64)
    R = axis_angle_to_matrix(aa)
    skew = torch.zeros(3, 3, 3, dtype=torch.float64)
    skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -aa[:, 2], aa[:, 1], -aa[:, 0]
    skew = skew - skew.transpose(1, 2)
    torch.testing.assert_close(R, torch.linalg.matrix_exp(skew))
    # Rotating by −aa undoes the rotation; the axis is a fixed point.
    eye = torch.eye(3, dtype=torch.float64).expand(3, 3, 3)
    torch.testing.assert_close(axis_angle_to_matrix(-aa) @ R, eye)
    torch.testing.assert_close((R @ aa.unsqueeze(-1)).squeeze(-1), aa)


def test_axis_angle_gradient_is_finite_at_zero():
    aa = torch.zeros(1, 3, requires_grad=True)
    axis_angle_to_matrix(aa).sum().backward()
    assert torch.isfinite(aa.grad).all()


def test_pose_inverse():
    aa = torch.tensor([[0.1, 0.2, -0.3]])
    t = torch.tensor([[1.0, -2.0, 0.5]])
    T = pose_to_matrix(aa, t)
    inv = pose_to_matrix(aa, t, invert=True)
    torch.testing.assert_close(inv @ T, torch.eye(4).unsqueeze(0), atol=1e-6, rtol=0)
    torch.testing.assert_close(T[0, :3, 3], t[0])


def test_disp_depth_mapping():
    d = torch.tensor([0.0, 1.0, 0.5])
    scaled, depth = disp_to_depth(d, 0.1, 100.0)
    torch.testing.assert_close(depth[:2], torch.tensor([100.0, 0.1]))
    torch.testing.assert_close(scaled * depth, torch.ones(3))
    torch.testing.assert_close(depth_to_disp(depth, 0.1, 100.0), d)


def test_stereo_transform_sign():
    T = stereo_transform(torch.tensor([0.5, 0.2]), torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(T[:, 0, 3], torch.tensor([-0.5, 0.2]))
    torch.testing.assert_close(T[:, :3, :3], torch.eye(3).expand(2, 3, 3))


def test_scale_intrinsics_keeps_rays():
    K = intrinsics(1)
    K2 = scale_intrinsics(K, 0.5, 0.25)
    torch.testing.assert_close(K2[0], torch.tensor([[16.0, 0, 16.0], [0, 8.0, 4.0], [0, 0, 1.0]]))
    # The centre of pixel (0, 0) of the half-size image covers pixels (0..1, 0..3) of the full one: the
    # corner-origin convention maps it to the centre of that block, i.e. the same ray.
    ray_small = torch.linalg.inv(K2[0]) @ torch.tensor([0.5, 0.5, 1.0])
    ray_full = torch.linalg.inv(K[0]) @ torch.tensor([1.0, 2.0, 1.0])
    torch.testing.assert_close(ray_small, ray_full)


def _stereo_scene(disp_rows: torch.Tensor, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Left/right images of planes at a known per-row integer disparity (px): right(u) = left(u + d)."""
    dmax = int(disp_rows.max())
    tex = smooth_texture(B, H, W + dmax, seed=seed)
    left = tex[..., :W]
    right = torch.stack([tex[..., r, int(d):int(d) + W] for r, d in enumerate(disp_rows)], -2)
    # With right(u) = tex(u + d) and left(u) = tex(u), left(u) = right(u − d): the right view sees the
    # point d pixels further left, as a camera at +baseline should.
    return left, right


@pytest.mark.parametrize("two_planes", [False, True])
def test_warp_with_true_disparity_reconstructs_the_target(two_planes):
    baseline = 0.5
    disp_rows = torch.full((H,), 4)
    if two_planes:
        disp_rows[H // 2:] = 6  # nearer plane in the lower half
    left, right = _stereo_scene(disp_rows)
    depth = (FX * baseline / disp_rows.float()).view(1, 1, H, 1).expand(B, 1, H, W)
    K = intrinsics()
    T = stereo_transform(torch.full((B,), baseline), 1)
    recon = warp(right, depth, K, T)
    err = photometric_error(recon, left)
    # Valid: the sample lies inside the right image (x ≥ d), away from the 3×3 SSIM window's reach of the
    # left border and of the depth discontinuity between the two planes.
    valid = torch.ones(H, W, dtype=torch.bool)
    valid[:, : int(disp_rows.max()) + 1] = False
    if two_planes:
        valid[H // 2 - 1: H // 2 + 1] = False
    assert err[..., valid].max() < 1e-4
    # The same warp with a wrong depth does not reconstruct it (so the check above is meaningful).
    wrong = photometric_error(warp(right, depth * 1.5, K, T), left)
    assert wrong[..., valid].mean() > 0.02
    # Out-of-view pixels are the ones at the left border.
    pts = backproject(depth, torch.linalg.inv(K))
    inside = in_view(project(pts, K, T, H, W))
    assert not inside[..., :3].any() and inside[..., 8:].all()


def test_warp_is_differentiable_in_depth():
    left, right = _stereo_scene(torch.full((H,), 4))
    depth = torch.full((B, 1, H, W), 3.0, requires_grad=True)
    T = stereo_transform(torch.full((B,), 0.5), 1)
    err = photometric_error(warp(right, depth, intrinsics(), T), left)
    err.mean().backward()
    assert depth.grad.abs().sum() > 0
