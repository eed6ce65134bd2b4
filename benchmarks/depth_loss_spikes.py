"""Why train_corda's depth losses jump ~5x at logged steps 100 and 500 (README "Plots"; issue 31).

Replays the source batches of the embedded default (params.yaml: data.seed, train.seed, batch_source, crop_hw,
600 steps) without training: each step's source crops come from :func:`corda.engine.batch_keys` and the
dataset's crop rule, exactly as ``train_corda`` draws them, and their depth targets in CorDA's inverse-depth
encoding (655.36 / (m + 0.01), method.md §2.2) are summarised per logged window of 25 steps. The depth losses
are BerHu on these targets, so a window holding a frame whose camera sits against a car (targets in the
thousands instead of ~70) has a mean loss several times the others. Then it names those frames.

    .venv/bin/python benchmarks/depth_loss_spikes.py      # ~10 min on one core: renders the 1000 source frames

Result (embedded default): the only windows with targets above 5000 are steps 76-100 (step 76) and 476-500
(step 490), both drawing source frame 391, whose camera is inside a car (every pixel car, nearest 0.07 m);
the smaller bumps at 26-50, 426-450 and 526-550 draw frame 716 (57 % of the pixels car nearer than 1 m).
"""

from __future__ import annotations

import numpy as np

from corda.data.codecs import depth_to_inv
from corda.data.procedural import render as R
from corda.data.procedural.benchmark import BenchmarkConfig, render_source_item
from corda.engine import batch_keys
from corda.labels import CLASS_NAMES

N_SOURCE, BATCH, TRAIN_SEED, DATA_SEED, STEPS, CROP, LOG_EVERY = 1000, 4, 1, 0, 600, (128, 128), 25


def main() -> None:
    cfg = BenchmarkConfig()
    frames: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def frame(i: int) -> tuple[np.ndarray, np.ndarray]:
        if i not in frames:
            item = render_source_item(cfg, DATA_SEED, i)
            # ground truth as depth_maps writes it for the source (sky invalid, near depth kept valid)
            frames[i] = depth_to_inv(item["depth"], item["label"] != R.SKY, min_valid_m=0.0), item["label"]
        return frames[i]

    steps = []
    for s in range(STEPS):
        targets, items = [], []
        for i, draw in batch_keys(N_SOURCE, BATCH, TRAIN_SEED, s):
            t, _ = frame(i)
            rng = np.random.default_rng([TRAIN_SEED, draw, i])  # corda.data.datasets: the crop of (draw, index)
            y0 = int(rng.integers(0, t.shape[0] - CROP[0] + 1))
            x0 = int(rng.integers(0, t.shape[1] - CROP[1] + 1))
            c = t[y0:y0 + CROP[0], x0:x0 + CROP[1]]
            targets.append(c[c != 1.0])
            items.append((i, float(c.max())))
        v = np.concatenate(targets)
        steps.append((float(v.mean()), float(v.max()), max(items, key=lambda x: x[1])[0]))
    print(f"{'logged step':>11} | {'mean target':>11} | {'max target':>10} | frame of the max")
    for k in range(STEPS // LOG_EVERY):
        win = steps[k * LOG_EVERY:(k + 1) * LOG_EVERY]
        j = int(np.argmax([w[1] for w in win]))
        print(f"{(k + 1) * LOG_EVERY:>11} | {np.mean([w[0] for w in win]):>11.0f} | {win[j][1]:>10.0f} | "
              f"{win[j][2]} (step {k * LOG_EVERY + j + 1})")
    print("\nframes with a target above 1500 (nearer than 0.43 m):")
    for i, (t, label) in sorted(frames.items()):
        if t.max() > 1500:
            near = t > 655.36 / 1.01  # nearer than 1 m
            classes = {CLASS_NAMES[c]: int(n) for c, n in enumerate(np.bincount(label[near], minlength=19)) if n}
            print(f"  {i:07d}.png: nearest {655.36 / t.max() - 0.01:.2f} m, {near.mean():.0%} of the pixels nearer "
                  f"than 1 m: {classes}")


if __name__ == "__main__":
    main()
