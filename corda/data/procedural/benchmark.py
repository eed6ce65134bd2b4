"""The embedded procedural benchmark, written in the real datasets' on-disk layouts.

* source (``synthetic look``) in the SYNTHIA-RAND-CITYSCAPES layout::

      <root>/RGB/NNNNNNN.png                          RGB
      <root>/synthia_mapped_to_cityscapes/NNNNNNN.png  SYNTHIA class ids (uint8)
      <root>/Depth/Depth/NNNNNNN.png                   uint16 depth in centimetres, 65535 = sky/far

* target (``real look``) in the Cityscapes layout (stem ``<city>_<seq:06d>_000019``)::

      leftImg8bit/{train,val}/<city>/<stem>_leftImg8bit.png
      rightImg8bit/{train,val}/<city>/<stem>_rightImg8bit.png        stereo pair, known baseline
      leftImg8bit_sequence/train/<city>/<city>_<seq>_0000{18,20}_leftImg8bit.png   video neighbours
      gtFine/{train,val}/<city>/<stem>_gtFine_labelIds.png            Cityscapes label ids (hood = 1, ego vehicle)
      camera/{train,val}/<city>/<stem>_camera.json                    baseline, fx, fy, u0, v0
      disparity/val/<city>/<stem>_disparity.png                        uint16, d = (p − 1)/256 px, 0 = invalid

Each item is a pure function of ``(seed, domain, split, index)``, so the same seed gives the same
bytes whatever the number of worker processes.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from corda import labels as L
from corda.config import field
from corda.data import codecs
from corda.data.procedural import exactmath as E
from corda.data.procedural import render as R
from corda.io import write_json, write_png

log = logging.getLogger(__name__)

TRAIN_CITIES = ("arden", "brockton", "corvale", "dunmore")
VAL_CITIES = ("elmsford", "farrow")
LABELLED_FRAME = 19  # Cityscapes annotates the 20th frame of each 30-frame snippet

SOURCE_ID, TARGET_ID = 0, 1
SPLIT_IDS = {"train": 0, "val": 1}


@dataclass(frozen=True, slots=True)
class Appearance:
    """Image-formation settings of the target ('real') style."""

    haze_m: float = field(70.0, gt=0)  # extinction distance of the aerial-perspective haze
    blur_sigma_px: float = field(0.6, min=0)
    noise_std: float = field(0.02, min=0)
    vignetting: float = field(0.35, min=0, max=1)
    hood_frac: float = field(0.07, min=0, max=0.5)  # ego-vehicle hood height as a fraction of the frame


@dataclass(frozen=True, slots=True)
class CameraRange:
    """Camera sampling ranges of one domain (metres, degrees)."""

    height_m: tuple[float, float]
    pitch_deg: tuple[float, float]
    hfov_deg: tuple[float, float]
    lateral_m: tuple[float, float]


@dataclass(frozen=True, slots=True)
class BenchmarkConfig:
    """Sizes, resolution and appearance of the procedural benchmark (params.yaml ``data.procedural``)."""

    height: int = field(128, min=16)
    width: int = field(256, min=16)
    num_source: int = field(1000, min=1)
    num_target_train: int = field(1000, min=1)
    num_target_val: int = field(200, min=1)
    baseline_m: float = field(0.5, gt=0)  # stereo baseline of the target rig
    ego_step_m: tuple[float, float] = (0.6, 1.2)  # camera motion between consecutive video frames
    source_tint: float = field(0.35, min=0)  # per-object colour variation of the synthetic style
    source_camera: CameraRange = CameraRange((1.3, 2.3), (-2.0, 6.0), (70.0, 85.0), (-2.5, 2.5))
    target_camera: CameraRange = CameraRange((1.15, 1.4), (0.0, 3.0), (56.0, 62.0), (-1.8, 1.8))
    appearance: Appearance = Appearance()


SOURCE_STATS = R.SceneStats()
# The 'real' city: busier streets, lower buildings, more trees (object statistics shift).
TARGET_STATS = R.SceneStats(building_h=(5.0, 18.0), building_gap_p=0.35, tree_spacing=(5.0, 12.0),
                            parked_cars=(5, 12), lane_cars=(1, 4), persons=(12, 36))


def _camera(rng: np.random.Generator, cr: CameraRange, h: int, w: int, road_half: float) -> R.CameraSpec:
    hfov = math.radians(rng.uniform(*cr.hfov_deg))
    fx = (w / 2) / float(E.tan(hfov / 2))  # not math.tan: libm's last bits vary by library and CPU
    lateral = float(np.clip(rng.uniform(*cr.lateral_m), -road_half + 1.0, road_half - 1.0))
    return R.CameraSpec(h, w, fx, fx, w / 2, h / 2, (lateral, rng.uniform(*cr.height_m), 0.0),
                        math.radians(rng.uniform(*cr.pitch_deg)))


def render_source_item(cfg: BenchmarkConfig, seed: int, index: int) -> dict[str, np.ndarray]:
    """One synthetic-style frame: RGB, trainIds and metric depth (m, FAR_M for sky)."""
    rng = np.random.default_rng([seed, SOURCE_ID, 0, index])
    scene = R.make_scene(rng, SOURCE_STATS, cfg.source_tint)
    cam = _camera(rng, cfg.source_camera, cfg.height, cfg.width, scene.road_half)
    hit = R.cast(scene, cam)
    rgb = R.to_uint8(R.shade_source(hit, scene, cam), gamma=False)
    shape = (cfg.height, cfg.width)
    return {"image": rgb, "label": hit.cls.reshape(shape).astype(np.uint8), "depth": hit.t.reshape(shape)}


def _target_view(scene, cam, cfg: BenchmarkConfig, rng, tex_seed: int, hood) -> np.ndarray:
    hit = R.cast(scene, cam)
    lin = R.shade_target(hit, scene, cam, tex_seed, cfg.appearance.haze_m)
    a = cfg.appearance
    return R.finish_target(lin, rng, a.blur_sigma_px, a.noise_std, a.vignetting, hood), hit


def _target_scene(cfg: BenchmarkConfig, seed: int, split: str, index: int):
    """The scene and left camera of one target frame, and the generator left just after drawing them.

    The first draws of every target item: render_target_item continues from the returned generator, and
    target_depth stops here, so the two agree on the geometry of a frame by construction.
    """
    rng = np.random.default_rng([seed, TARGET_ID, SPLIT_IDS[split], index])
    scene = R.make_scene(rng, TARGET_STATS, 0.25)
    cam = _camera(rng, cfg.target_camera, cfg.height, cfg.width, scene.road_half)
    return rng, scene, cam


def target_depth(cfg: BenchmarkConfig, seed: int, split: str, index: int) -> np.ndarray:
    """Exact camera-z depth of a target frame's left image, without rendering its pixels.

    The benchmark writes depth for target val only (as disparity, like Cityscapes); this is the ground truth
    for any split, for diagnostics such as training on perfect target depth.

    Returns:
        (H, W) float32 metres; NaN on sky and on the ego-vehicle hood.
    """
    _, scene, cam = _target_scene(cfg, seed, split, index)
    hit = R.cast(scene, cam)
    z = hit.t.reshape(cfg.height, cfg.width).astype(np.float32)
    z[(hit.cls.reshape(z.shape) == R.SKY) | R.hood_mask(cfg.height, cfg.width, cfg.appearance.hood_frac)] = np.nan
    return z


def render_target_item(cfg: BenchmarkConfig, seed: int, split: str, index: int) -> dict:
    """One real-style stereo frame (+ video neighbours on train) with labels, depth and camera."""
    rng, scene, cam = _target_scene(cfg, seed, split, index)
    tex_seed = int(rng.integers(0, 2**31 - 1))
    hood = R.hood_mask(cfg.height, cfg.width, cfg.appearance.hood_frac)
    left, hit = _target_view(scene, cam, cfg, rng, tex_seed, hood)
    right, _ = _target_view(scene, cam.moved(dx_cam=cfg.baseline_m), cfg, rng, tex_seed, hood)
    shape = (cfg.height, cfg.width)
    label = hit.cls.reshape(shape).astype(np.uint8)
    label[hood] = L.IGNORE
    depth = hit.t.reshape(shape).copy()
    depth[hood] = np.nan
    out = {"image": left, "right": right, "label": label, "depth": depth, "cam": cam}
    if split == "train":
        step = rng.uniform(*cfg.ego_step_m)
        out["prev"], _ = _target_view(scene, cam.moved(dz_world=-step), cfg, rng, tex_seed, hood)
        out["next"], _ = _target_view(scene, cam.moved(dz_world=step), cfg, rng, tex_seed, hood)
    return out


def _camera_json(cam: R.CameraSpec, baseline: float) -> dict:
    """A Cityscapes camera JSON (intrinsics in pixels at the stored resolution)."""
    return {
        "extrinsic": {"baseline": baseline, "pitch": cam.pitch, "roll": 0.0, "x": 1.7, "y": 0.0,
                      "yaw": cam.yaw, "z": cam.position[1]},
        "intrinsic": {"fx": cam.fx, "fy": cam.fy, "u0": cam.cx, "v0": cam.cy},
    }


def target_stem(split: str, index: int, frame: int = LABELLED_FRAME) -> tuple[str, str]:
    cities = TRAIN_CITIES if split == "train" else VAL_CITIES
    city = cities[index % len(cities)]
    return city, f"{city}_{index:06d}_{frame:06d}"


def _write_source(args) -> None:
    cfg, seed, root, index = args
    item = render_source_item(cfg, seed, index)
    name = f"{index:07d}.png"
    write_png(root / "RGB" / name, item["image"])
    write_png(root / "synthia_mapped_to_cityscapes" / name, L.TRAIN_TO_SYNTHIA[item["label"]])
    sky = item["label"] == R.SKY
    write_png(root / "Depth" / "Depth" / name, codecs.depth_to_synthia_raw(item["depth"], ~sky))


def _write_target(args) -> None:
    cfg, seed, root, split, index = args
    item = render_target_item(cfg, seed, split, index)
    city, stem = target_stem(split, index)
    write_png(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", item["image"])
    write_png(root / "rightImg8bit" / split / city / f"{stem}_rightImg8bit.png", item["right"])
    ids = L.TRAIN_TO_CITYSCAPES_ID[item["label"]]
    ids[item["label"] == L.IGNORE] = 1  # the hood is Cityscapes' "ego vehicle" (id 1)
    write_png(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids)
    write_json(root / "camera" / split / city / f"{stem}_camera.json", _camera_json(item["cam"], cfg.baseline_m))
    if split == "train":
        for key, frame in (("prev", LABELLED_FRAME - 1), ("next", LABELLED_FRAME + 1)):
            _, s = target_stem(split, index, frame)
            write_png(root / "leftImg8bit_sequence" / split / city / f"{s}_leftImg8bit.png", item[key])
    else:
        sky = item["label"] == R.SKY
        z = np.where(sky, np.nan, item["depth"])
        disp = cfg.baseline_m * item["cam"].fx / z
        write_png(root / "disparity" / split / city / f"{stem}_disparity.png", codecs.disparity_px_to_png(disp))


def render_benchmark(cfg: BenchmarkConfig, seed: int, source_root: Path, target_root: Path, workers: int = 1,
                     progress: Callable[[Iterable, int, str], Iterable] | None = None) -> dict[str, int]:
    """Render and write the whole benchmark; returns item counts. ``progress`` wraps iterables (a bar)."""
    jobs: list[tuple[Callable, tuple]] = []
    jobs += [(_write_source, (cfg, seed, Path(source_root), i)) for i in range(cfg.num_source)]
    jobs += [(_write_target, (cfg, seed, Path(target_root), "train", i)) for i in range(cfg.num_target_train)]
    jobs += [(_write_target, (cfg, seed, Path(target_root), "val", i)) for i in range(cfg.num_target_val)]
    wrap = progress or (lambda it, total, desc: it)
    if workers <= 1:
        for fn, a in wrap(jobs, len(jobs), "rendering"):
            fn(a)
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(fn, a) for fn, a in jobs]
            for f in wrap(futures, len(futures), "rendering"):
                f.result()
    return {"source": cfg.num_source, "target_train": cfg.num_target_train, "target_val": cfg.num_target_val}
