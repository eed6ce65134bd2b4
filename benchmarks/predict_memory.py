"""Peak memory of `predict` on one large photo: labels upsampled one class at a time vs the full logits tensor.

    python benchmarks/predict_memory.py                 # a 4000x3000 photo, input height 128 (the benchmark's)
    python benchmarks/predict_memory.py --height 1024 --width 2048 --input-height 512

Each variant runs in a fresh process (so its high-water mark is its own): the model is built and warmed up,
then one image goes through ``corda.predict.predict_images`` and ``PredictionWriter.write`` (all maps, PNGs
included). ``peak`` is the process's maximum resident set size; ``added`` is what the prediction added on top of
the high-water mark before it (model, imports, the warm-up). ``baseline`` swaps in the decoding before issue 31
(all 19 logit planes upsampled to the photo's size in float32, then the argmax; the rest of the path is today's,
whose overlay, depth and colour maps are computed in row blocks too). The labels of both are compared (they must
be identical). A randomly initialised corda network stands in for a trained one: memory depends on
the shapes only.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _baseline_decode(item, image, out, j):
    """The decoding before issue 31: (C, H, W) float32 logits at the photo's size, then argmax."""
    import torch

    from corda.data.codecs import MAX_DEPTH_M, inv_to_depth
    from corda.models.outputs import upsample_outputs
    from corda.predict import Prediction

    size = image.shape[:2]
    up = {k: v[0] for k, v in upsample_outputs({k: v[j:j + 1] for k, v in out.items()}, size,
                                                keys=("S", "D", "D_src"), float32=True).items()}
    pred = Prediction(item, image, up["S"].argmax(0).to(torch.uint8).cpu().numpy())
    if "D" in up:
        d_tgt = up["D"][0].clamp_min(1.0)
        pred.depth_m = np.clip(inv_to_depth(d_tgt.cpu().numpy()), 0.0, MAX_DEPTH_M)
        pred.difficulty = ((up["D_src"][0] - d_tgt).abs() / d_tgt).clamp(0.0, 1.0).cpu().numpy()
    return pred


def child(variant: str, photo: Path, out: Path, input_height: int) -> dict:
    import torch

    import corda.predict as P
    from corda.seg.config import ModelConfig
    from corda.seg.run import build_model

    torch.manual_seed(0)
    torch.set_num_threads(1)
    mcfg = ModelConfig(backbone="resnet18", output_stride=16, task_channels=16, bottleneck=8, aspp_branches=4,
                       initial_seg_head="conv1x1")
    net = build_model(mcfg, "corda").eval()
    with torch.no_grad():
        net(torch.zeros(1, 3, input_height, input_height * 4 // 3 // 16 * 16))  # warm-up at the input size
    if variant == "baseline":
        P._decode = _baseline_decode
    items = [P.ImageItem(photo, photo.stem)]
    writer = P.PredictionWriter(out, label_ids=False, h5=False, overwrite=False)
    before = _maxrss_mb()
    for pred in P.predict_images(net, items, input_height, 1, torch.device("cpu")):
        writer.write(pred)
        labels = pred.label
    writer.commit(1)
    peak = _maxrss_mb()
    np.save(out / "labels.npy", labels)
    return {"variant": variant, "before_mb": before, "peak_mb": peak, "added_mb": peak - before}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--height", type=int, default=3000)
    ap.add_argument("--width", type=int, default=4000)
    ap.add_argument("--input-height", type=int, default=128)
    ap.add_argument("--child", nargs=4, metavar=("VARIANT", "PHOTO", "OUT", "INPUT_HEIGHT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        v, photo, out, ih = args.child
        print(json.dumps(child(v, Path(photo), Path(out), int(ih))))
        return

    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        # A smooth random photo (noise upsampled): realistic JPEG size, varied labels.
        small = rng.integers(0, 256, (args.height // 50, args.width // 50, 3), dtype=np.uint8)
        photo = tmp / "photo.jpg"
        Image.fromarray(small).resize((args.width, args.height), Image.BILINEAR).save(photo, quality=90)
        rows = []
        for v in ("baseline", "per_class"):
            res = subprocess.run([sys.executable, __file__, "--child", v, str(photo), str(tmp / v),
                                  str(args.input_height)], capture_output=True, text=True, cwd=ROOT)
            if res.returncode != 0:
                sys.exit(res.stderr[-3000:])
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        same = np.array_equal(np.load(tmp / "baseline" / "labels.npy"), np.load(tmp / "per_class" / "labels.npy"))

    print(f"predict, one {args.height}x{args.width} photo, input height {args.input_height}, CPU, 19 classes")
    print(f"| variant | before (MB) | peak (MB) | added by the prediction (MB) |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['before_mb']:.0f} | {r['peak_mb']:.0f} | {r['added_mb']:.0f} |")
    b, n = rows
    print(f"peak ratio per_class / baseline: {n['peak_mb'] / b['peak_mb']:.2f}; added: "
          f"{n['added_mb'] / b['added_mb']:.2f}; labels identical: {same}")
    if not same:
        sys.exit("the labels differ")


if __name__ == "__main__":
    main()
