"""Pinhole-camera geometry for self-supervised depth (Monodepth2, Godard et al. ICCV 2019; method.md,
"Monodepth2 essentials"): back-projection, projection, poses and the disparity ↔ depth mapping.

Everything here is a pure tensor function: no module state, sizes come from the inputs, so the same
functions serve every batch size and resolution (Monodepth2 builds fixed-size projection modules instead).

Conventions, used consistently by every function below:

* **Cameras**: OpenCV axes: x right, y down, z forward; distances in metres.
* **Pixels**: continuous pixel coordinates with the origin at the *top-left corner* of the image, so pixel
  ``(row i, column j)`` covers ``[j, j+1) × [i, i+1)`` and its centre is ``(j + 0.5, i + 0.5)``. The
  intrinsics ``K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` map camera points to these coordinates; this is
  also the renderer's convention (``corda.data.procedural.render``). Under it, resizing an image by ``(sx, sy)`` scales
  ``K``'s first two rows exactly (:func:`scale_intrinsics`), and ``grid_sample(align_corners=False)``
  addresses the same coordinates through ``x_norm = 2·u / W − 1`` (``−1`` is the left edge of the image,
  ``+1`` the right edge). Datasets whose ``cx`` refers to pixel centres at integer coordinates differ by
  half a pixel, which is far below the accuracy of self-supervised depth.
* **Poses**: ``T`` (B, 4, 4) is a rigid transform that maps points expressed in the *target* camera (the
  one whose depth is predicted, frame 0 / the left image) into the *source* camera (the view that is
  sampled): ``X_src = R·X_tgt + t``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixel_grid(height: int, width: int, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Homogeneous pixel-centre coordinates ``(u, v, 1)``, row-major: (3, H·W), ``u = j + 0.5``."""
    v, u = torch.meshgrid(torch.arange(height, device=device, dtype=dtype) + 0.5,
                          torch.arange(width, device=device, dtype=dtype) + 0.5, indexing="ij")
    return torch.stack((u.reshape(-1), v.reshape(-1), torch.ones_like(u).reshape(-1)), 0)


def backproject(depth: torch.Tensor, inv_K: torch.Tensor) -> torch.Tensor:
    """Lift every pixel centre to a 3-D point in the camera frame.

    Args:
        depth: (B, 1, H, W) depth along the optical axis (z), metres.
        inv_K: (B, 3, 3) inverse intrinsics (pixels → normalised rays with z = 1).

    Returns:
        (B, 3, H·W) camera points, metres, pixels in row-major order.
    """
    b, _, h, w = depth.shape
    pix = pixel_grid(h, w, device=depth.device, dtype=depth.dtype)
    rays = inv_K.to(depth.dtype) @ pix.unsqueeze(0)  # (B, 3, HW), z = 1 because K's last row is (0, 0, 1)
    return rays * depth.reshape(b, 1, h * w)


def transform_points(points: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Apply the rigid transforms (B, 4, 4) to points (B, 3, N): ``R·X + t``."""
    return T[:, :3, :3] @ points + T[:, :3, 3:4]


def project(points: torch.Tensor, K: torch.Tensor, T: torch.Tensor, height: int, width: int,
            eps: float = 1e-7) -> torch.Tensor:
    """Project target-camera points into the source camera as a ``grid_sample`` grid.

    Args:
        points: (B, 3, H·W) points in the target camera (from :func:`backproject`), metres.
        K: (B, 3, 3) source-camera intrinsics in pixels at the (H, W) resolution.
        T: (B, 4, 4) target → source transform.
        height, width: the target image size (H, W); ``points`` must hold H·W of them.

    Returns:
        (B, H, W, 2) sampling locations ``(x, y)`` normalised for ``grid_sample(align_corners=False)``:
        ``−1``/``+1`` are the outer edges of the source image; values outside [−1, 1] fall off it.
    """
    cam = transform_points(points, T)
    pix = K.to(points.dtype) @ cam
    # Points behind or on the camera plane get a tiny positive z: their projections land far away (and are
    # then clamped by border padding) instead of producing Inf/NaN.
    z = pix[:, 2:3].clamp_min(eps)
    uv = pix[:, :2] / z  # (B, 2, HW) continuous pixel coordinates (corner origin)
    scale = torch.tensor([2.0 / width, 2.0 / height], device=uv.device, dtype=uv.dtype).view(1, 2, 1)
    grid = uv * scale - 1.0
    return grid.reshape(points.shape[0], 2, height, width).permute(0, 2, 3, 1)


def in_view(grid: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 2) grid → (B, 1, H, W) bool: the sample lies inside the source image."""
    return (grid.abs() <= 1.0).all(dim=-1).unsqueeze(1)


def warp(src_img: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """Reconstruct the target view by sampling the source image (Monodepth2's view synthesis).

    Each target pixel is back-projected with its depth, moved into the source camera by ``T`` and projected
    with ``K``; the source image is sampled there bilinearly with ``grid_sample(padding_mode="border",
    align_corners=False)``. ``align_corners=False`` matches the corner-origin pixel convention of this module
    (a pixel centre ``u = j + 0.5`` samples pixel ``j`` exactly, so ``T = I`` reproduces the image);
    ``border`` padding repeats edge pixels for samples that leave the image (Monodepth2 does the same; the
    auto-mask and the minimum over views keep those pixels from dominating the loss).

    Args:
        src_img: (B, C, H, W) source view.
        depth: (B, 1, H, W) target depth, metres.
        K: (B, 3, 3) intrinsics in pixels at the (H, W) resolution (both cameras share them).
        T: (B, 4, 4) target → source transform.

    Returns:
        (B, C, H, W) the source image warped into the target view.
    """
    _, _, h, w = depth.shape
    points = backproject(depth, torch.linalg.inv(K.to(depth.dtype)))
    grid = project(points, K, T, h, w)
    return F.grid_sample(src_img, grid.to(src_img.dtype), mode="bilinear", padding_mode="border",
                         align_corners=False)


def _skew(v: torch.Tensor) -> torch.Tensor:
    """(B, 3) → (B, 3, 3) cross-product matrix ``[v]×``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack((o, -z, y, z, o, -x, -y, x, o), -1).reshape(*v.shape[:-1], 3, 3)


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula: axis-angle vectors (B, 3) (direction = axis, norm = angle in radians) → (B, 3, 3).

    ``R = I + a·[v]× + b·[v]×²`` with ``a = sin θ / θ`` and ``b = (1 − cos θ) / θ²``; near θ = 0 both use
    their Taylor series so that the value and the gradient stay finite at the zero rotation, which is where
    the pose network starts.
    """
    theta2 = (aa * aa).sum(-1, keepdim=True).unsqueeze(-1)  # (B, 1, 1)
    small = theta2 < 1e-8
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    safe = safe2.sqrt()
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(safe) / safe)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(safe)) / safe2)
    k = _skew(aa)
    eye = torch.eye(3, device=aa.device, dtype=aa.dtype).expand_as(k)
    return eye + a * k + b * (k @ k)


def pose_to_matrix(axisangle: torch.Tensor, translation: torch.Tensor, invert: bool = False) -> torch.Tensor:
    """A rigid transform (B, 4, 4) from an axis-angle rotation (B, 3) and a translation (B, 3) in metres.

    ``T = [R | t]`` maps ``X ↦ R·X + t``. With ``invert=True`` the inverse ``[Rᵀ | −Rᵀ·t]`` is returned: the
    pose network sees frames in temporal order (previous, current), so the previous frame's prediction is the
    motion *to* the target and must be inverted to obtain the target → source transform.
    """
    R = axis_angle_to_matrix(axisangle)
    t = translation.unsqueeze(-1)
    if invert:
        R = R.transpose(-1, -2)
        t = -R @ t
    T = torch.zeros(*axisangle.shape[:-1], 4, 4, device=axisangle.device, dtype=axisangle.dtype)
    T[..., :3, :3] = R
    T[..., :3, 3:] = t
    T[..., 3, 3] = 1.0
    return T


def stereo_transform(baseline_m: torch.Tensor, side: int | torch.Tensor) -> torch.Tensor:
    """Target → source transform (B, 4, 4) of a rectified stereo pair: a pure translation along x.

    Args:
        baseline_m: (B,) distance between the two optical centres, metres.
        side: ``+1`` when the source camera sits at ``+baseline`` along the target's x axis (target = left
            image, source = right image), ``−1`` for the opposite (target = right or a horizontally flipped
            pair). A (B,) tensor of ±1 gives per-sample sides.

    A target point ``X`` has source coordinates ``X − side·baseline·e_x``, so a point at depth ``z`` appears
    ``side·fx·baseline / z`` pixels to the *left* in the source image (the usual disparity).
    """
    baseline_m = torch.as_tensor(baseline_m)
    side_t = torch.as_tensor(side, dtype=baseline_m.dtype, device=baseline_m.device)
    T = torch.eye(4, dtype=baseline_m.dtype, device=baseline_m.device).repeat(baseline_m.shape[0], 1, 1)
    T[:, 0, 3] = -side_t * baseline_m
    return T


def disp_to_depth(sigmoid_disp: torch.Tensor, min_depth: float, max_depth: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Map the network's sigmoid output to depth (Monodepth2): disparity linear in [1/max, 1/min].

    Args:
        sigmoid_disp: (…) values in [0, 1]; 0 ↦ ``max_depth``, 1 ↦ ``min_depth``.
        min_depth, max_depth: depth range in metres (0.1 and 100 in method.md).

    Returns:
        ``(scaled_disp, depth)``: inverse depth in 1/m and depth in m, both shaped like the input.
    """
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    scaled = min_disp + (max_disp - min_disp) * sigmoid_disp
    return scaled, 1.0 / scaled


def depth_to_disp(depth: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """Inverse of :func:`disp_to_depth`: depth (m) → the sigmoid disparity in [0, 1] (clamped)."""
    min_disp, max_disp = 1.0 / max_depth, 1.0 / min_depth
    return ((1.0 / depth - min_disp) / (max_disp - min_disp)).clamp(0.0, 1.0)


def scale_intrinsics(K: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """Intrinsics (…, 3, 3) for an image resized by factors ``(sx, sy)`` (new size / old size).

    With the corner-origin pixel convention of this module the first row scales by ``sx`` and the second by
    ``sy`` exactly (``cx`` included).
    """
    out = K.clone()
    out[..., 0, :] = out[..., 0, :] * sx
    out[..., 1, :] = out[..., 1, :] * sy
    return out
