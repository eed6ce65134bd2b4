"""A vectorised numpy ray-caster of procedural street scenes: the embedded benchmark's renderer.

A scene is a straight street along the world +Z axis (X right, Y up, metres): road, sidewalks,
terrain verges, building blocks, hedges, trees, poles with traffic signs, parked and driving cars
and pedestrians, under a sky. Primitives are axis-aligned boxes, vertical cylinders, spheres and
the ground plane, so every pixel gets an exact class label and an exact metric depth (the camera
z coordinate of the hit point).

Appearance is a pure function of the world-space hit point, its surface normal and the object, so
a stereo pair or consecutive video frames of one scene are photometrically consistent, as
self-supervised depth training assumes (method.md, Monodepth2 essentials). Two *styles* give the
domain gap:

* ``source`` ("synthetic look", like SYNTHIA): flat per-class albedo with strong per-object tints
  (so a network cannot solve the task by colour alone), Lambertian sun + ambient, sharp, no noise.
* ``target`` ("real look", like Cityscapes): world-space procedural textures (asphalt grain, lane
  markings, paving, facades with windows, foliage), another palette and sun, depth-dependent haze,
  optical blur, sensor noise, vignetting and an ego-vehicle hood (labelled ignore, as in Cityscapes).
  The image pipeline (blur, noise, vignetting, hood) is applied by :func:`finish_target`.

The same seed writes the same bytes on every x86-64 CPU (issue 18). numpy picks a SIMD implementation
of its transcendental ufuncs per CPU (baseline SSE, AVX2, AVX-512) and OpenBLAS picks matmul kernels per
CPU; their results differ in the last bits, and a few pixels then round to another uint8 or centimetre.
So the value path here uses only operations that IEEE-754 rounds exactly (+ − × ÷, sqrt, floor,
comparisons) and integer hashing:

* exp / sin / cos / tan / pow come from :mod:`corda.data.procedural.exactmath` (basic float64 arithmetic in a fixed
  order), never from ``np.exp``, ``**``, ``math.*`` or libm;
* 3-vector dot products are written out (:func:`_dot3`), never ``@`` (BLAS);
* the tone curve of :func:`to_uint8` compares with precomputed thresholds instead of calling a power;
* the Gaussian kernel is normalised by ``math.fsum`` (exactly rounded, order-free).

``np.random`` draws are integer-based and identical everywhere. ``benchmarks/simd_bytes.py`` and
``tests/test_render_simd.py`` render items under numpy's lower dispatch levels and OpenBLAS's older kernels
(``NPY_DISABLE_CPU_FEATURES``, ``OPENBLAS_CORETYPE``) and compare every written byte. Not covered: the PNG
compressor (Pillow's bundled zlib-ng) may in principle pick other matches on another CPU or version; the
decoded pixels are the invariant.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from corda.data.procedural import exactmath as E
from corda.labels import IGNORE

# trainIds (corda.labels.CLASS_NAMES) of the ten rendered classes.
ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, TERRAIN, SKY, PERSON, CAR = 0, 1, 2, 5, 7, 8, 9, 10, 11, 13
FAR_M = 1.0e4  # "no hit": the sky


@dataclass(frozen=True)
class CameraSpec:
    """A pinhole camera: intrinsics in pixels, pose in the world (metres, radians)."""

    height: int
    width: int
    fx: float
    fy: float
    cx: float
    cy: float
    position: tuple[float, float, float]
    pitch: float  # positive looks down
    yaw: float = 0.0

    def axes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World directions of the camera's right, down and forward axes (OpenCV convention)."""
        (sp, sy_), (cp, cy_) = E.sin_cos([self.pitch, self.yaw])
        fwd = np.array([sy_ * cp, -sp, cy_ * cp])
        right = np.array([cy_, 0.0, -sy_])
        # World (X right, Y up, Z forward) is left-handed, so image-down = right × forward
        # (= −Y when level).
        down = np.cross(right, fwd)
        return right, down, fwd

    def moved(self, dx_cam: float = 0.0, dz_world: float = 0.0) -> "CameraSpec":
        """The same camera shifted by ``dx_cam`` along its own right axis and ``dz_world`` along the street."""
        right, _, _ = self.axes()
        p = np.asarray(self.position) + dx_cam * right + np.array([0.0, 0.0, dz_world])
        return CameraSpec(self.height, self.width, self.fx, self.fy, self.cx, self.cy,
                          (float(p[0]), float(p[1]), float(p[2])), self.pitch, self.yaw)


@dataclass
class Scene:
    """Primitives of one street scene; each object has a class and a colour tint / texture seed."""

    road_half: float
    sidewalk_w: float
    # boxes: (M, 6) min xyz, max xyz; cylinders: (M, 5) cx, cz, r, y0, y1; spheres: (M, 4) x, y, z, r
    boxes: np.ndarray
    box_cls: np.ndarray
    box_tint: np.ndarray
    cyls: np.ndarray
    cyl_cls: np.ndarray
    cyl_tint: np.ndarray
    spheres: np.ndarray
    sph_cls: np.ndarray
    sph_tint: np.ndarray
    sun: np.ndarray = field(default_factory=lambda: np.array([0.4, 0.8, -0.45]))


@dataclass(frozen=True)
class SceneStats:
    """Object statistics of a domain (the 'content' part of the domain gap)."""

    road_half: tuple[float, float] = (3.5, 6.0)
    sidewalk_w: tuple[float, float] = (1.5, 3.5)
    terrain_w: tuple[float, float] = (0.0, 4.0)
    building_h: tuple[float, float] = (6.0, 24.0)
    building_gap_p: float = 0.25
    tree_spacing: tuple[float, float] = (7.0, 16.0)
    pole_spacing: tuple[float, float] = (12.0, 25.0)
    sign_p: float = 0.6
    parked_cars: tuple[int, int] = (3, 10)
    lane_cars: tuple[int, int] = (0, 3)
    # Pedestrians per scene. Tripled in benchmark v2 (issue 17): with (2, 9) / (4, 12) persons covered 0.34 % /
    # 0.42 % of the source / target pixels, against about 1.2 % in Cityscapes' fine train labels.
    persons: tuple[int, int] = (6, 27)


# --------------------------------------------------------------------------------------------
# Scene generation


def _tint(rng: np.random.Generator, spread: float) -> np.ndarray:
    return np.clip(1.0 + rng.uniform(-spread, spread, size=3), 0.2, 2.0)


def _paint(rng: np.random.Generator) -> np.ndarray:
    """A free colour for cars and clothing (any hue in both domains: no colour shortcut)."""
    if rng.random() < 0.35:  # greys, white and black are the commonest car colours
        return np.full(3, rng.uniform(0.08, 0.9), np.float32)
    return rng.uniform(0.1, 0.9, size=3).astype(np.float32)


def make_scene(rng: np.random.Generator, stats: SceneStats, tint_spread: float, z_range=(-20.0, 220.0)) -> Scene:
    """Draw one street scene. ``tint_spread`` is the per-object colour variation (fraction)."""
    boxes, box_cls, box_tint = [], [], []
    cyls, cyl_cls, cyl_tint = [], [], []
    sph, sph_cls, sph_tint = [], [], []

    def box(lo, hi, cls, spread=tint_spread, paint=None):
        boxes.append([*lo, *hi])
        box_cls.append(cls)
        box_tint.append(_tint(rng, spread) if paint is None else paint)

    road_half = rng.uniform(*stats.road_half)
    sw = rng.uniform(*stats.sidewalk_w)
    z0, z1 = z_range
    for side in (-1.0, 1.0):
        terrain_w = rng.uniform(*stats.terrain_w) if rng.random() < 0.6 else 0.0
        facade = road_half + sw + terrain_w
        # Building blocks (or hedges/trees in the gaps) along the street.
        z = z0
        while z < z1:
            length = rng.uniform(8.0, 28.0)
            if rng.random() < stats.building_gap_p:
                if rng.random() < 0.5:  # hedge
                    hx = facade + rng.uniform(0.0, 1.0)
                    lo_x, hi_x = (hx, hx + 1.2) if side > 0 else (-hx - 1.2, -hx)
                    box((lo_x, 0.0, z), (hi_x, rng.uniform(0.8, 2.2), z + length), VEGETATION)
            else:
                setback = rng.uniform(0.0, 1.5)
                hx = facade + setback
                lo_x, hi_x = (hx, hx + 12.0) if side > 0 else (-hx - 12.0, -hx)
                box((lo_x, 0.0, z), (hi_x, rng.uniform(*stats.building_h), z + length), BUILDING)
            z += length + rng.uniform(0.0, 3.0)
        # Trees on the verge (or the sidewalk's outer edge when there is no verge).
        tx = road_half + sw + (terrain_w / 2 if terrain_w > 1.0 else -0.5)
        z = z0 + rng.uniform(0, 10)
        while z < z1:
            if rng.random() < 0.7:
                h = rng.uniform(2.0, 3.5)
                r = rng.uniform(1.2, 2.8)
                cyls.append([side * tx, z, 0.18, 0.0, h + r * 0.5])
                cyl_cls.append(VEGETATION)
                cyl_tint.append(_tint(rng, tint_spread))
                sph.append([side * tx + rng.uniform(-0.3, 0.3), h + r * 0.8, z, r])
                sph_cls.append(VEGETATION)
                sph_tint.append(_tint(rng, tint_spread))
            z += rng.uniform(*stats.tree_spacing)
        # Poles at the curb, some carrying a traffic sign facing the oncoming camera.
        px = road_half + 0.4
        z = z0 + rng.uniform(0, 12)
        while z < z1:
            h = rng.uniform(3.5, 7.0)
            r = rng.uniform(0.07, 0.13)
            cyls.append([side * px, z, r, 0.0, h])
            cyl_cls.append(POLE)
            cyl_tint.append(_tint(rng, tint_spread * 0.5))
            if rng.random() < stats.sign_p:
                s = rng.uniform(0.5, 0.9)
                y = rng.uniform(2.0, min(3.2, h - 0.2))
                cx = side * px - side * (s / 2 + r)  # hangs towards the road
                box((cx - s / 2, y, z - r - 0.06), (cx + s / 2, y + s, z - r), SIGN)
            z += rng.uniform(*stats.pole_spacing)
        # Parked cars along the curb.
        for _ in range(rng.integers(*stats.parked_cars, endpoint=True)):
            cz = rng.uniform(z0 + 10, z1 - 20)
            _car(box, side * (road_half - 1.1), cz, rng)
        # Pedestrians on the sidewalk.
        for _ in range(rng.integers(*stats.persons, endpoint=True)):
            _person(cyls, cyl_cls, cyl_tint, sph, sph_cls, sph_tint,
                    side * (road_half + rng.uniform(0.4, sw)), rng.uniform(z0 + 8, z1 - 20), rng, tint_spread)
    # Cars driving in the lanes, well ahead of (or behind) the ego camera at z ≈ 0.
    for _ in range(rng.integers(*stats.lane_cars, endpoint=True)):
        lane = rng.choice([-1.0, 1.0]) * rng.uniform(1.6, max(1.7, road_half - 2.2))
        cz = rng.uniform(10.0, 90.0)
        if abs(lane) < 2.5 and cz < 14:
            cz += 10
        _car(box, lane, cz, rng)
    # Occasionally a pedestrian crossing the road far ahead.
    if rng.random() < 0.3:
        _person(cyls, cyl_cls, cyl_tint, sph, sph_cls, sph_tint,
                rng.uniform(-road_half, road_half), rng.uniform(15.0, 60.0), rng, tint_spread)

    sun = np.array([rng.uniform(-0.6, 0.6), rng.uniform(0.5, 0.9), rng.uniform(-0.7, 0.2)])
    return Scene(
        road_half=road_half, sidewalk_w=sw,
        boxes=np.array(boxes, np.float32).reshape(-1, 6), box_cls=np.array(box_cls, np.int64),
        box_tint=np.array(box_tint, np.float32).reshape(-1, 3),
        cyls=np.array(cyls, np.float32).reshape(-1, 5), cyl_cls=np.array(cyl_cls, np.int64),
        cyl_tint=np.array(cyl_tint, np.float32).reshape(-1, 3),
        spheres=np.array(sph, np.float32).reshape(-1, 4), sph_cls=np.array(sph_cls, np.int64),
        sph_tint=np.array(sph_tint, np.float32).reshape(-1, 3),
        sun=sun / math.sqrt(sun[0] * sun[0] + sun[1] * sun[1] + sun[2] * sun[2]),
    )


def _car(box, x: float, z: float, rng: np.random.Generator) -> None:
    w, length = rng.uniform(1.7, 2.0), rng.uniform(3.8, 4.8)
    body_h = rng.uniform(0.9, 1.2)
    paint = _paint(rng)
    box((x - w / 2, 0.15, z - length / 2), (x + w / 2, body_h, z + length / 2), CAR, paint=paint)
    cw, cl = w * 0.9, length * rng.uniform(0.45, 0.6)
    box((x - cw / 2, body_h, z - cl / 2), (x + cw / 2, body_h + rng.uniform(0.45, 0.65), z + cl / 2), CAR,
        paint=paint)


def _person(cyls, cyl_cls, cyl_tint, sph, sph_cls, sph_tint, x, z, rng, spread) -> None:
    h = rng.uniform(1.45, 1.75)
    r = rng.uniform(0.18, 0.26)
    cyls.append([x, z, r, 0.0, h - 0.22])
    cyl_cls.append(PERSON)
    cyl_tint.append(_paint(rng))  # clothing: any colour, in both domains
    sph.append([x, h - 0.11, z, 0.12])
    sph_cls.append(PERSON)
    sph_tint.append(np.array([0.85, 0.66, 0.52], np.float32) * rng.uniform(0.5, 1.1))  # skin


# --------------------------------------------------------------------------------------------
# Ray casting


def camera_rays(cam: CameraSpec) -> tuple[np.ndarray, np.ndarray]:
    """Ray origin (3,) and world directions (H*W, 3), scaled so that depth == ray parameter t."""
    v, u = np.mgrid[0:cam.height, 0:cam.width].astype(np.float32)
    xc = (u + 0.5 - cam.cx) / cam.fx
    yc = (v + 0.5 - cam.cy) / cam.fy
    right, down, fwd = cam.axes()
    d = xc.reshape(-1, 1) * right + yc.reshape(-1, 1) * down + fwd  # camera z = 1
    return np.asarray(cam.position, np.float32), d.astype(np.float32)


@dataclass
class Hit:
    """Per-ray hit record (N rays)."""

    t: np.ndarray  # (N,) ray parameter == camera-z depth in metres; FAR_M for sky
    cls: np.ndarray  # (N,) trainId
    obj: np.ndarray  # (N,) object index into ``tint`` (−1 for ground/sky)
    normal: np.ndarray  # (N, 3) world normal
    point: np.ndarray  # (N, 3) world hit point
    tint: np.ndarray  # (N, 3) per-object tint (1 for ground/sky)


def _dot3(a: np.ndarray, v) -> np.ndarray:
    """a (..., 3) · v (3,) as three multiplies and two adds in a fixed order.

    Not ``a @ v``: matmul goes through OpenBLAS, whose kernels (and so the last bits) depend on the CPU.
    """
    return a[..., 0] * v[0] + a[..., 1] * v[1] + a[..., 2] * v[2]


def _hit_box(o, d, b):
    """Ray/AABB slab test for rays d (n, 3) against one box b (6,); returns t (n,) and normals (n, 3)."""
    inv = 1.0 / np.where(np.abs(d) < 1e-9, 1e-9, d)
    lo = (b[:3] - o) * inv
    hi = (b[3:] - o) * inv
    tmin = np.minimum(lo, hi)
    tnear = tmin.max(axis=1)
    tfar = np.maximum(lo, hi).min(axis=1)
    t = np.where((tnear <= tfar) & (tnear > 1e-3), tnear, np.inf)
    axis = tmin.argmax(axis=1)  # the slab entered last is the face that was hit
    n = np.zeros_like(d)
    rows = np.arange(len(d))
    n[rows, axis] = -np.sign(d[rows, axis])
    return t, n


def _hit_cyl(o, d, c):
    """Vertical cylinder c = (cx, cz, r, y0, y1): solve in the xz-plane, then check the height."""
    ox, oz = o[0] - c[0], o[2] - c[1]
    a = d[:, 0] * d[:, 0] + d[:, 2] * d[:, 2]
    b = 2 * (ox * d[:, 0] + oz * d[:, 2])
    disc = b * b - 4 * a * (ox * ox + oz * oz - c[2] * c[2])
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * np.maximum(a, 1e-12))
    y = o[1] + t * d[:, 1]
    t = np.where((disc > 0) & (t > 1e-3) & (y >= c[3]) & (y <= c[4]), t, np.inf)
    p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
    n = np.stack([p[:, 0] - c[0], np.zeros(len(d), np.float32), p[:, 2] - c[1]], 1) / c[2]
    return t, n


def _hit_sphere(o, d, s):
    oc = o - s[:3]
    a = _dot3(d, d.T)
    b = 2 * _dot3(d, oc)
    disc = b * b - 4 * a * (_dot3(oc, oc) - s[3] * s[3])
    t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
    t = np.where((disc > 0) & (t > 1e-3), t, np.inf)
    p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
    return t, (p - s[:3]) / s[3]


def _bounds(scene: Scene) -> list[tuple[np.ndarray, np.ndarray, str, int]]:
    """World AABB (lo, hi), primitive type and index of every primitive."""
    out = []
    for i, b in enumerate(scene.boxes):
        out.append((b[:3], b[3:], "box", i))
    for i, c in enumerate(scene.cyls):
        out.append((np.array([c[0] - c[2], c[3], c[1] - c[2]]), np.array([c[0] + c[2], c[4], c[1] + c[2]]), "cyl", i))
    for i, s in enumerate(scene.spheres):
        out.append((s[:3] - s[3], s[:3] + s[3], "sph", i))
    return out


def _screen_rect(lo, hi, cam: CameraSpec, right, down, fwd):
    """Pixel rectangle (v0, v1, u0, u1) covering a world AABB, or None if it is entirely behind."""
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    rel = corners - np.asarray(cam.position)
    zc = _dot3(rel, fwd)
    if (zc <= 0.05).all():
        return None
    if (zc <= 0.05).any():  # straddles the image plane: test the whole frame
        return 0, cam.height, 0, cam.width
    u = cam.fx * _dot3(rel, right) / zc + cam.cx
    v = cam.fy * _dot3(rel, down) / zc + cam.cy
    u0, u1 = int(np.floor(u.min())) - 1, int(np.ceil(u.max())) + 1
    v0, v1 = int(np.floor(v.min())) - 1, int(np.ceil(v.max())) + 1
    u0, v0 = max(u0, 0), max(v0, 0)
    u1, v1 = min(u1, cam.width), min(v1, cam.height)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


def cast(scene: Scene, cam: CameraSpec) -> Hit:
    """Intersect every pixel's ray with the scene; returns the nearest hit per ray.

    Each primitive is tested only against the rays inside its projected bounding rectangle, so the
    cost grows with the pixels objects cover, not with pixels × objects.
    """
    o, d = camera_rays(cam)
    right, down, fwd = cam.axes()
    H, W = cam.height, cam.width
    n_rays = d.shape[0]
    t = np.full(n_rays, np.inf, np.float32)
    cls = np.full(n_rays, SKY, np.int64)
    normal = np.zeros((n_rays, 3), np.float32)
    tint = np.ones((n_rays, 3), np.float32)
    obj = np.full(n_rays, -1, np.int64)

    # Ground plane y = 0: road / sidewalk / terrain by |x|.
    with np.errstate(divide="ignore", invalid="ignore"):
        tg = np.where(d[:, 1] < -1e-6, -o[1] / d[:, 1], np.inf).astype(np.float32)
    take = np.isfinite(tg)
    t[take] = tg[take]
    normal[take] = (0.0, 1.0, 0.0)
    gx = np.abs(o[0] + tg * d[:, 0])
    gcls = np.where(gx < scene.road_half, ROAD, np.where(gx < scene.road_half + scene.sidewalk_w, SIDEWALK, TERRAIN))
    cls[take] = gcls[take]

    t2 = t.reshape(H, W)
    tables = {
        "box": (scene.boxes, scene.box_cls, scene.box_tint, _hit_box, 0),
        "cyl": (scene.cyls, scene.cyl_cls, scene.cyl_tint, _hit_cyl, len(scene.boxes)),
        "sph": (scene.spheres, scene.sph_cls, scene.sph_tint, _hit_sphere, len(scene.boxes) + len(scene.cyls)),
    }
    d2 = d.reshape(H, W, 3)
    for lo, hi, kind, i in _bounds(scene):
        rect = _screen_rect(lo, hi, cam, right, down, fwd)
        if rect is None:
            continue
        v0, v1, u0, u1 = rect
        prims, pcls, ptint, fn, offset = tables[kind]
        ts, ns = fn(o, d2[v0:v1, u0:u1].reshape(-1, 3), prims[i])
        cur = t2[v0:v1, u0:u1].reshape(-1)
        closer = ts < cur
        if not closer.any():
            continue
        rows = (np.arange(v0, v1)[:, None] * W + np.arange(u0, u1)[None, :]).reshape(-1)[closer]
        t[rows] = ts[closer]
        cls[rows] = pcls[i]
        normal[rows] = ns[closer]
        tint[rows] = ptint[i]
        obj[rows] = offset + i

    sky = ~np.isfinite(t)
    t[sky] = FAR_M
    cls[sky] = SKY
    point = o + t[:, None] * d
    return Hit(t=t, cls=cls, obj=obj, normal=normal, point=point.astype(np.float32), tint=tint)


# --------------------------------------------------------------------------------------------
# Appearance

# Per-class base albedo (RGB in [0,1]) of the two styles: plausible, not adversarial (no swaps).
SOURCE_PALETTE = {
    ROAD: (0.45, 0.42, 0.48), SIDEWALK: (0.78, 0.62, 0.70), BUILDING: (0.55, 0.50, 0.45),
    POLE: (0.62, 0.62, 0.62), SIGN: (0.95, 0.80, 0.10), VEGETATION: (0.25, 0.60, 0.20),
    TERRAIN: (0.55, 0.75, 0.35), SKY: (0.35, 0.60, 0.95), PERSON: (0.85, 0.25, 0.30), CAR: (0.15, 0.25, 0.70),
}
TARGET_PALETTE = {
    ROAD: (0.30, 0.30, 0.31), SIDEWALK: (0.58, 0.56, 0.52), BUILDING: (0.60, 0.52, 0.44),
    POLE: (0.45, 0.46, 0.48), SIGN: (0.85, 0.75, 0.35), VEGETATION: (0.22, 0.36, 0.15),
    TERRAIN: (0.42, 0.45, 0.25), SKY: (0.72, 0.78, 0.85), PERSON: (0.40, 0.35, 0.38), CAR: (0.45, 0.45, 0.50),
}


def _palette_lut(pal: dict) -> np.ndarray:
    lut = np.zeros((256, 3), np.float32)
    for k, v in pal.items():
        lut[k] = v
    return lut


FREE_COLOUR = (CAR, PERSON)


def _albedo(palette: dict, hit: Hit, tint_gain: float) -> np.ndarray:
    """Per-class albedo × per-object tint; cars and clothing take their own paint colour."""
    col = _palette_lut(palette)[hit.cls] * (1.0 + (hit.tint - 1.0) * tint_gain)
    free = np.isin(hit.cls, FREE_COLOUR)
    col[free] = hit.tint[free]
    return col


def _hash3(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: int) -> np.ndarray:
    """A cheap integer hash of lattice coordinates → float in [0, 1)."""
    h = (ix.astype(np.int64) * 73856093) ^ (iy.astype(np.int64) * 19349663) ^ (iz.astype(np.int64) * 83492791)
    h = (h ^ (seed * 2654435761)) & 0xFFFFFFFF
    h = (h ^ (h >> 13)) * 1274126177 & 0xFFFFFFFF
    h = h ^ (h >> 16)
    return (h & 0xFFFFFF).astype(np.float32) / float(0x1000000)


def value_noise(p: np.ndarray, scale: float, seed: int) -> np.ndarray:
    """Trilinear value noise of world points p (N, 3) at spatial frequency 1/scale; values in [0, 1)."""
    q = p / scale
    i = np.floor(q)
    f = q - i
    f = f * f * (3 - 2 * f)  # smoothstep: no visible lattice creases
    i = i.astype(np.int64)
    out = np.zeros(len(p), np.float32)
    for dx in (0, 1):
        wx = f[:, 0] if dx else 1 - f[:, 0]
        for dy in (0, 1):
            wy = f[:, 1] if dy else 1 - f[:, 1]
            for dz in (0, 1):
                wz = f[:, 2] if dz else 1 - f[:, 2]
                out += wx * wy * wz * _hash3(i[:, 0] + dx, i[:, 1] + dy, i[:, 2] + dz, seed)
    return out


def fbm(p: np.ndarray, scale: float, seed: int, octaves: int = 3) -> np.ndarray:
    """Fractal sum of value noise, normalised to about [0, 1]."""
    total, amp, norm = np.zeros(len(p), np.float32), 1.0, 0.0
    for k in range(octaves):
        total += amp * value_noise(p, scale / (2 ** k), seed + 101 * k)
        norm += amp
        amp *= 0.5
    return total / norm


def shade_source(hit: Hit, scene: Scene, cam: CameraSpec) -> np.ndarray:
    """'Synthetic' look: flat per-class albedo × per-object tint, Lambertian sun + ambient. (H, W, 3) in [0,1]."""
    albedo = _albedo(SOURCE_PALETTE, hit, 1.0)
    lam = np.clip(_dot3(hit.normal, scene.sun), 0.0, 1.0)
    col = albedo * (0.55 + 0.45 * lam[:, None])
    sky = hit.cls == SKY
    col[sky] = _palette_lut(SOURCE_PALETTE)[SKY]
    return np.clip(col, 0, 1).reshape(cam.height, cam.width, 3)


def shade_target(hit: Hit, scene: Scene, cam: CameraSpec, seed: int, haze_m: float) -> np.ndarray:
    """'Real' look: world-space textures, another palette, warm sun, depth haze. (H, W, 3) linear in [0,1].

    Textures depend only on world coordinates, so every view of the scene sees the same surface.
    """
    p, cls = hit.point, hit.cls
    # Objects keep a milder per-object variation than in the source (facade colour, foliage).
    col = _albedo(TARGET_PALETTE, hit, 0.6)
    grain = fbm(p, 0.6, seed, 3)
    coarse = fbm(p, 4.0, seed + 7, 2)

    m = cls == ROAD
    if m.any():
        x, z = p[m, 0], p[m, 2]
        lane = (np.abs(x) < 0.08) & (np.mod(z, 6.0) < 3.0)
        edge = np.abs(np.abs(x) - (scene.road_half - 0.25)) < 0.07
        c = col[m] * (0.75 + 0.35 * grain[m, None] + 0.2 * (coarse[m, None] - 0.5))
        c[lane | edge] = (0.85, 0.85, 0.82)
        col[m] = c
    m = cls == SIDEWALK
    if m.any():
        x, z = p[m, 0], p[m, 2]
        joints = (np.mod(x, 0.6) < 0.04) | (np.mod(z, 0.6) < 0.04)
        c = col[m] * (0.85 + 0.25 * grain[m, None])
        c[joints] *= 0.6
        col[m] = c
    m = cls == TERRAIN
    if m.any():
        g = fbm(p[m], 0.25, seed + 3, 3)
        col[m] = col[m] * (0.6 + 0.8 * g[:, None]) + (0.08 * (coarse[m] - 0.5))[:, None]
    m = cls == BUILDING
    if m.any():
        y = p[m, 1]
        # Windows on the facades: a grid in (along-wall, height) coordinates.
        along = np.where(np.abs(hit.normal[m, 0]) > 0.5, p[m, 2], p[m, 0])
        win = (np.mod(along, 3.0) > 0.8) & (np.mod(along, 3.0) < 2.2) & (np.mod(y, 3.2) > 1.0) & (np.mod(y, 3.2) < 2.4)
        win &= y > 2.5
        c = col[m] * (0.8 + 0.3 * grain[m, None])
        c[win] = (0.18, 0.22, 0.28) + 0.15 * grain[m][win, None]
        col[m] = c
    m = cls == VEGETATION
    if m.any():
        leaf = fbm(p[m], 0.18, seed + 5, 3)
        col[m] = col[m] * (0.45 + 1.1 * leaf[:, None])
    m = cls == CAR
    if m.any():
        glass = (p[m, 1] > 1.05) & (np.abs(hit.normal[m, 1]) < 0.5)
        c = col[m] * (0.9 + 0.15 * grain[m, None])
        c[glass] = (0.12, 0.14, 0.17)
        col[m] = c
    m = cls == PERSON
    if m.any():
        col[m] = col[m] * (0.85 + 0.3 * grain[m, None])
    m = cls == SIGN
    if m.any():
        col[m] = col[m] * (0.9 + 0.2 * grain[m, None])

    warm = np.array([1.05, 0.98, 0.88], np.float32)
    sun = scene.sun * np.array([-1.0, 1.0, 1.0])  # another sun than the source's
    lam = np.clip(_dot3(hit.normal, sun), 0.0, 1.0)
    col = col * (0.45 + 0.6 * lam[:, None]) * warm
    # Sky: a vertical gradient by ray elevation.
    sky = cls == SKY
    if sky.any():
        _, d = camera_rays(cam)
        ds = d[sky]
        elev = ds[:, 1] / np.sqrt(_dot3(ds, ds.T))
        col[sky] = (np.array(TARGET_PALETTE[SKY]) * (0.85 + 0.35 * np.clip(elev, 0, 1))[:, None]).astype(np.float32)
    # Depth-dependent haze (aerial perspective) towards a pale grey-blue.
    haze = E.exp(-np.minimum(hit.t, 400.0) / haze_m).astype(np.float32)[:, None]
    col = col * haze + np.array([0.70, 0.74, 0.78], np.float32) * (1 - haze)
    return np.clip(col, 0, 1).reshape(cam.height, cam.width, 3).astype(np.float32)


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur of an (H, W, C) float image (reflect padding)."""
    if sigma <= 0:
        return img
    r = max(1, int(np.ceil(3 * sigma)))
    x = np.arange(-r, r + 1) / sigma
    k = E.exp(-0.5 * x * x)
    k /= math.fsum(k)  # exactly rounded sum: no dependence on numpy's reduction order
    out = img
    for axis in (0, 1):
        pad = [(0, 0)] * img.ndim
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="reflect")
        acc = np.zeros_like(out)
        for i, w in enumerate(k):
            sl = [slice(None)] * img.ndim
            sl[axis] = slice(i, i + out.shape[axis])
            acc += w * padded[tuple(sl)]
        out = acc
    return out


def hood_mask(height: int, width: int, frac: float) -> np.ndarray:
    """(H, W) bool: the ego-vehicle hood, an ellipse cap over the bottom ``frac`` of the frame."""
    if frac <= 0:
        return np.zeros((height, width), bool)
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    top = height * (1 - frac)
    x = (u - width / 2) / (width * 0.75)
    cap = top + (height * frac) * (x * x)
    return v >= cap


def finish_target(img: np.ndarray, rng: np.random.Generator, blur_sigma: float, noise_std: float,
                  vignetting: float, hood: np.ndarray | None) -> np.ndarray:
    """Camera pipeline of the 'real' style: hood overlay, blur, vignetting, sensor noise, gamma → uint8."""
    h, w, _ = img.shape
    if hood is not None and hood.any():
        v = np.mgrid[0:h, 0:w][0].astype(np.float32)
        shade = 0.10 + 0.08 * (v / h)
        img = img.copy()
        img[hood] = np.stack([shade, shade, shade * 1.1], -1)[hood]
    img = gaussian_blur(img, blur_sigma)
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    x, y = (u - w / 2) / (w / 2), (v - h / 2) / (h / 2)
    r2 = x * x + y * y
    img = img * (1 - vignetting * r2 / 2)[..., None]
    img = img + rng.normal(0.0, noise_std, img.shape).astype(np.float32)
    return to_uint8(img, gamma=True)


GAMMA = 1 / 1.15  # the target style's mild tone curve


def _gamma_tables(cells: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Lookup tables that apply round(255·x^GAMMA) to x in [0, 1] without a power function.

    Code k is reached at x ≥ s_k = ((k − ½)/255)^(1/GAMMA) (k = 1..255; float64 from exactmath). Split
    [0, 1] into ``cells`` equal cells, narrower than the smallest gap between thresholds (1.8e-3), so a
    cell holds at most one: code(x) = base[c] + (x ≥ inner[c]), c = ⌊x·cells⌋ (exact: a power of two).
    """
    steps = E.power((np.arange(1, 256) - 0.5) / 255.0, 1.0 / GAMMA)
    assert np.diff(steps).min() > 1.0 / cells
    edges = np.arange(cells + 1) / cells
    base = np.searchsorted(steps, edges[:-1], side="right").astype(np.uint8)
    inner = np.full(cells, np.inf)
    inside = np.searchsorted(steps, edges[1:], side="left") > base  # a threshold strictly inside the cell
    inner[inside] = steps[base[inside]]
    return base, inner


_GAMMA_BASE, _GAMMA_INNER = _gamma_tables()


def to_uint8(img: np.ndarray, gamma: bool) -> np.ndarray:
    """[0, 1] float image → uint8 (rounded), through the tone curve x^GAMMA if ``gamma``."""
    img = np.clip(img, 0, 1)
    if gamma:
        cell = np.minimum((img * len(_GAMMA_BASE)).astype(np.int64), len(_GAMMA_BASE) - 1)
        return _GAMMA_BASE[cell] + (img >= _GAMMA_INNER[cell]).astype(np.uint8)
    return (img * 255 + 0.5).astype(np.uint8)
