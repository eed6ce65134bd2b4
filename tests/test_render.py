"""The procedural renderer: determinism, exact labels/depth, and photometric consistency of views."""

import math

import numpy as np

from corda.data.procedural import benchmark as B
from corda.data.procedural import render as R

H, W = 64, 128


def _scene_and_camera(seed=3):
    rng = np.random.default_rng(seed)
    scene = R.make_scene(rng, B.TARGET_STATS, 0.25)
    fx = (W / 2) / math.tan(math.radians(60) / 2)
    cam = R.CameraSpec(H, W, fx, fx, W / 2, H / 2, (0.5, 1.3, 0.0), math.radians(2.0))
    return scene, cam


def _bilinear(img, u, v):
    """Sample (H, W, C) at float pixel coords (pixel centres at integer + 0.5 convention handled by caller)."""
    u0 = np.clip(np.floor(u).astype(int), 0, img.shape[1] - 2)
    v0 = np.clip(np.floor(v).astype(int), 0, img.shape[0] - 2)
    a, b = (u - u0)[..., None], (v - v0)[..., None]
    return ((1 - a) * (1 - b) * img[v0, u0] + a * (1 - b) * img[v0, u0 + 1]
            + (1 - a) * b * img[v0 + 1, u0] + a * b * img[v0 + 1, u0 + 1])


def test_same_seed_same_bytes_other_seed_differs():
    cfg = B.BenchmarkConfig(height=H, width=W)
    a = B.render_target_item(cfg, 7, "train", 2)
    b = B.render_target_item(cfg, 7, "train", 2)
    c = B.render_target_item(cfg, 8, "train", 2)
    for k in ("image", "right", "prev", "next", "label"):
        assert np.array_equal(a[k], b[k]), k
    assert not np.array_equal(a["image"], c["image"])
    s1, s2 = B.render_source_item(cfg, 7, 0), B.render_source_item(cfg, 7, 0)
    assert np.array_equal(s1["image"], s2["image"]) and np.array_equal(s1["depth"], s2["depth"])


def test_labels_cover_the_ten_classes_and_depth_is_exact_on_the_ground():
    cfg = B.BenchmarkConfig(height=128, width=256)
    seen = set()
    for i in range(12):
        seen |= set(np.unique(B.render_source_item(cfg, 0, i)["label"]).tolist())
    assert {R.ROAD, R.SIDEWALK, R.BUILDING, R.POLE, R.SIGN, R.VEGETATION, R.SKY, R.PERSON, R.CAR} <= seen
    # Ground pixels: depth along the optical axis equals the analytic ray/plane intersection.
    scene, cam = _scene_and_camera()
    hit = R.cast(scene, cam)
    o, d = R.camera_rays(cam)
    ground = np.isin(hit.cls, [R.ROAD, R.SIDEWALK, R.TERRAIN])
    expected = -o[1] / d[ground, 1]
    np.testing.assert_allclose(hit.t[ground], expected, rtol=1e-5)


def test_stereo_pair_is_consistent_with_true_disparity():
    """Warping the right view onto the left with the true disparity reconstructs the left view."""
    scene, cam = _scene_and_camera()
    baseline = 0.5
    cam_r = cam.moved(dx_cam=baseline)
    hit_l, hit_r = R.cast(scene, cam), R.cast(scene, cam_r)
    left = R.shade_target(hit_l, scene, cam, 11, 70.0)
    right = R.shade_target(hit_r, scene, cam_r, 11, 70.0)
    z = hit_l.t.reshape(H, W)
    disp = baseline * cam.fx / z
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    ur = u - disp  # a left pixel appears `disp` pixels further left in the right image
    warped = _bilinear(right, ur, v)
    zr = _bilinear(hit_r.t.reshape(H, W, 1), ur, v)[..., 0]
    visible = (ur > 1) & (ur < W - 2) & (np.abs(zr - z) < 0.02 * z) & (z < 200)
    assert visible.mean() > 0.5
    err = np.abs(warped - left).mean(-1)[visible]
    # A wrong disparity (here: none at all) must be clearly worse.
    wrong = np.abs(right - left).mean(-1)[visible]
    assert np.median(err) < 0.01 and err.mean() < 0.03
    assert wrong.mean() > 3 * err.mean()


def test_video_frames_are_consistent_with_known_motion():
    scene, cam = _scene_and_camera()
    step = 1.0
    cam_n = cam.moved(dz_world=step)
    hit, hit_n = R.cast(scene, cam), R.cast(scene, cam_n)
    img = R.shade_target(hit, scene, cam, 5, 70.0)
    img_n = R.shade_target(hit_n, scene, cam_n, 5, 70.0)
    # Project every left-frame 3D point into the next frame.
    right, down, fwd = cam_n.axes()
    rel = hit.point.astype(np.float64) - np.asarray(cam_n.position)
    zc = rel @ fwd
    u = cam_n.fx * (rel @ right) / zc + cam_n.cx - 0.5
    v = cam_n.fy * (rel @ down) / zc + cam_n.cy - 0.5
    warped = _bilinear(img_n, u.reshape(H, W), v.reshape(H, W))
    zn = _bilinear(hit_n.t.reshape(H, W, 1), u.reshape(H, W), v.reshape(H, W))[..., 0]
    ok = ((u > 1) & (u < W - 2) & (v > 1) & (v < H - 2)).reshape(H, W)
    ok &= (np.abs(zn - zc.reshape(H, W)) < 0.02 * zc.reshape(H, W)) & (hit.t.reshape(H, W) < 200)
    assert ok.mean() > 0.5
    err = np.abs(warped - img).mean(-1)[ok]
    assert np.median(err) < 0.01 and err.mean() < 0.03
    assert np.abs(img_n - img).mean(-1)[ok].mean() > 2 * err.mean()


def test_target_hood_is_ignored_and_has_no_depth():
    cfg = B.BenchmarkConfig(height=H, width=W)
    item = B.render_target_item(cfg, 0, "val", 0)
    hood = R.hood_mask(H, W, cfg.appearance.hood_frac)
    assert hood.any()
    assert (item["label"][hood] == 255).all()
    assert np.isnan(item["depth"][hood]).all()


def test_target_depth_is_the_rendered_frames_depth():
    """target_depth re-casts the same frame as render_target_item (no sky depth), for any split and seed."""
    cfg = B.BenchmarkConfig(height=H, width=W)
    for seed, split, i in ((0, "val", 1), (5, "train", 3)):
        item = B.render_target_item(cfg, seed, split, i)
        z = B.target_depth(cfg, seed, split, i)
        assert z.dtype == np.float32 and z.shape == (H, W)
        sky = item["label"] == R.SKY
        assert sky.any() and np.isnan(z[sky]).all()
        want = np.where(sky, np.nan, item["depth"]).astype(np.float32)
        assert np.array_equal(z, want, equal_nan=True), (seed, split, i)
    assert not np.array_equal(B.target_depth(cfg, 0, "val", 1), B.target_depth(cfg, 1, "val", 1), equal_nan=True)
