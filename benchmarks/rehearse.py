"""The presets' rehearsal on the miniature real datasets, stage by stage through `dvc repro` (issue 28, item 2).

Each preset in params/ runs every stage on the miniature real datasets (:mod:`corda.data.miniature`: true sizes
1914×1052, 1280×760, 2048×1024 and true formats) with the presets' full-resolution evaluation, in a clone of this
repository's HEAD. What is lowered, through the same dotted ``key=value`` overrides as ``dvc exp run -S``:

* always: the iteration counts (1 per training stage) and ``run`` keys, which change no result (loader workers,
  in-training evaluation on one item);
* ``--network small`` (what ``tests/test_rehearsal.py`` runs in CI): a small network (DeepLab-v2 on ResNet-18 at
  output stride 16 with narrow heads; MiT-B0 with a 32-channel decoder), batch 1 + 1 and 256×256 crops;
* ``--network own``: the preset's own network (ResNet-101 DeepLab-v2 at output stride 8; MiT-B5 with DAFormer's
  256-channel decoder) from **random weights**: ``model.pretrained=null`` for the DeepLab presets, and for the
  DAFormer presets a random MiT file in the official key format written where the preset looks for
  ``mit_b5.pth`` (the feature distance needs an ImageNet encoder). That file is the rehearsal's explicit switch:
  a user's run never gets random weights without naming them. The crop stays the preset's; ``--batch`` lowers the
  batch (time on a CPU, not memory) and is recorded.

Every stage runs as ``dvc repro -s <stage>`` under ``/usr/bin/time -v``: wall and CPU seconds (DVC's own start-up,
about 1–2 CPU s, included), peak RSS and the bytes each stage's outputs hold. Rows go to ``--out`` (JSON) and a
table is printed.

    python benchmarks/rehearse.py --work /tmp/own --network own --presets gta2cityscapes gta2cityscapes_daformer \\
        --batch 1 --out benchmarks/rehearse_own_log.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRESETS = ("gta2cityscapes", "gta2cityscapes_daformer", "synthia2cityscapes", "synthia2cityscapes_daformer")
STAGE_ORDER = ("data", "rcs", "depth_pretrain", "depth_maps", "train@source_only", "train@dacs", "train_corda",
               "train_oracle", "pseudo_labels", "self_train", "evaluate")


def rehearsal_overrides(preset: str, roots, network: str = "small", batch: int | None = None) -> list[str]:
    """The ``key=value`` overrides of one preset's rehearsal on the miniature datasets ``roots`` (MiniatureRoots).

    ``network``: "small" (CI's rehearsal: small network, batch 1 + 1, 256×256 crops) or "own" (the preset's own
    network from random weights, its own crop; ``batch`` source = target images, None = the preset's).
    """
    source = roots.gta5 if preset.startswith("gta") else roots.synthia
    sets = [f"data.source.root={source}", f"data.target.root={roots.cityscapes}",
            f"depth.target_files_root={roots.cityscapes_depth}",
            # iteration counts
            "depth.iterations=1", "train.iterations=1", "self_train.iterations=1",
            # change no result (params.yaml `run`)
            "run.train.workers=0", "run.depth.workers=0", "run.train.eval_items=1"]
    daformer = preset.endswith("daformer")
    if network == "small":
        # time on 2 cores: one image per batch, smaller training crops (the evaluation stays full size)
        sets += ["depth.batch_size=1", "train.batch_source=1", "train.batch_target=1", "train.crop_hw=[256,256]",
                 "pseudo_labels.batch_size=2", "evaluate.batch_size=1"]
        if daformer:
            sets += ["model.mit=b0", "model.decoder_channels=32", "model.pretrained=pretrained/mit_b0.pth",
                     "train.warmup_iters=1"]
        else:
            sets += ["model.backbone=resnet18", "model.output_stride=16", "model.pretrained=null",
                     "model.task_channels=16", "model.bottleneck=8"]
        return sets
    if network != "own":
        raise ValueError(f"network={network!r}: choose small or own")
    sets += ["depth.batch_size=1", "pseudo_labels.batch_size=2", "evaluate.batch_size=1"]
    if batch is not None:
        sets += [f"train.batch_source={batch}", f"train.batch_target={batch}"]
    sets += ["train.warmup_iters=1"] if daformer else ["model.pretrained=null"]
    return sets


def random_mit_file(variant: str) -> bytes:
    """A randomly initialised MiT encoder saved in the official ``mit_b*.pth`` key format (+ the ImageNet head)."""
    import torch

    from corda.models.mit import MixTransformer

    enc = MixTransformer(variant)
    sd = enc.state_dict()
    sd.update({"head.weight": torch.zeros(1000, enc.out_channels[-1]), "head.bias": torch.zeros(1000)})
    buf = io.BytesIO()
    torch.save(sd, buf)
    return buf.getvalue()


def _set(tree: dict, dotted: str) -> None:
    import yaml

    key, value = dotted.split("=", 1)
    *path, last = key.split(".")
    for k in path:
        tree = tree[k]
    tree[last] = yaml.safe_load(value)


def _git(cmd: list[str], cwd: Path) -> None:
    subprocess.run(["git", "-c", "user.name=r", "-c", "user.email=r@r", *cmd], cwd=cwd, check=True,
                   capture_output=True)


def prepare(preset: str, work: Path, roots, network: str, batch: int | None) -> Path:
    """A clone of HEAD at ``work/<preset>`` with the preset's params and the rehearsal's overrides applied."""
    import yaml

    repo = work / preset
    if repo.exists():
        shutil.rmtree(repo)
    _git(["clone", "-q", str(ROOT), str(repo)], work)
    (repo / ".venv").symlink_to(ROOT / ".venv")
    params = yaml.safe_load((repo / "params" / f"{preset}.yaml").read_text())
    for s in rehearsal_overrides(preset, roots, network, batch):
        _set(params, s)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    mit = params["model"].get("pretrained") if params["model"].get("architecture") == "daformer" else None
    if mit and not (repo / mit).exists():  # the rehearsal's random-weights switch for the DAFormer presets
        (repo / mit).parent.mkdir(parents=True, exist_ok=True)
        (repo / mit).write_bytes(random_mit_file(params["model"]["mit"]))
    return repo


def run_preset(repo: Path, stages=STAGE_ORDER) -> list[dict]:
    """``dvc repro -s`` each stage in order under /usr/bin/time -v; stops at the first failure."""
    from cost import run_stage  # this folder is on sys.path when a script in it runs
    from pipeline_stages import stage_commands

    outs = {name: o for name, _, o in stage_commands(repo)}
    rows = []
    for name in stages:
        row = run_stage(repo, name, [str(ROOT / ".venv/bin/dvc"), "repro", "-s", name], outs[name])
        rows.append(row)
        print(json.dumps(row), flush=True)
        if row["returncode"]:
            break
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", type=Path, required=True, help="folder for the miniature datasets and the clones")
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    ap.add_argument("--network", choices=("small", "own"), default="own")
    ap.add_argument("--batch", type=int, default=None, help="source = target images per step (own network)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    os.environ["DVC_NO_ANALYTICS"] = "1"
    from corda.data.miniature import make_miniature

    a.work.mkdir(parents=True, exist_ok=True)
    a.out = a.out.resolve()
    t0 = time.perf_counter()
    roots = make_miniature(a.work / "miniature", gta5=2, gta5_unlabelled=1, synthia=2, cityscapes_train=2,
                           cityscapes_val=1)
    print(f"miniature datasets: {roots.counts} in {time.perf_counter() - t0:.0f} s", flush=True)
    result = {"network": a.network, "batch": a.batch, "counts": roots.counts, "presets": {}}
    for preset in a.presets:
        repo = prepare(preset, a.work, roots, a.network, a.batch)
        result["presets"][preset] = run_preset(repo)
        a.out.write_text(json.dumps(result, indent=1))
    print(f"\n| preset | stage | wall s | CPU s | peak RSS GB | output MB |\n|---|---|---:|---:|---:|---:|")
    for preset, rows in result["presets"].items():
        for r in rows:
            mb = sum(r["out_bytes"].values()) / 1e6
            print(f"| {preset} | {r['stage']} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | "
                  f"{r['peak_rss_bytes'] / 2**30:.2f} | {mb:.1f} |" + (" FAILED" if r["returncode"] else ""))
    return 0 if all(not r["returncode"] for rows in result["presets"].values() for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
