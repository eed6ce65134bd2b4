"""Source ground-truth depth is read where it lies (issue 28): `depth_maps` writes the record depth/source.json, not a
copy of the dataset's depth in depth/source.h5, and training reads bit for bit the values that copy held.
"""

from pathlib import Path

import numpy as np
import pytest
import yaml

from corda.data import codecs
from corda.data.datasets import SegDepthDataset
from corda.data.index import scan_dataset
from corda.data.readers import read_depth_png
from corda.errors import DataError
from corda.h5io import DepthH5, source_depth_h5, write_depth_h5
from corda.io import write_png
from corda.seg.config import TrainConfig
from corda.seg.run import seg_datasets
from corda.testing import write_cityscapes_fixture, write_gta5_fixture, write_synthia_fixture

from conftest import invoke_stage

ROOT = Path(__file__).resolve().parents[1]
H, W = 32, 64
ATTRS = {"mode": "ground_truth", "model_hash": "", "min_depth_m": 0.1, "max_depth_m": 100.0}


def _index(tmp_path: Path, kind: str):
    root = tmp_path / kind
    if kind == "synthia":
        write_synthia_fixture(root, n=3, h=H, w=W, seed=0)
    else:
        write_gta5_fixture(root, n=3, h=H, w=W, seed=0)
    return scan_dataset(kind, root, "train")


def _former_export(index, out: Path) -> None:
    """depth/source.h5 as depth_maps wrote it for ground truth before: the dataset's depth through metres, stored."""
    ds = SegDepthDataset(index, ("depth",), None, None)
    rows = []
    for i in range(len(ds)):
        z = codecs.inv_to_depth(ds[i]["depth"][0].numpy())
        rows.append((ds[i]["name"], codecs.depth_to_inv(z, min_valid_m=0.0), z.astype(np.float16)))
    write_depth_h5(out / "source.h5", rows, len(rows), {**ATTRS, "domain": "source"})


def _target_h5(index, out: Path) -> None:
    rows = [(n, np.full((H, W), 2.0, np.float32), np.full((H, W), 5.0, np.float16)) for n in index.names]
    write_depth_h5(out / "target.h5", rows, len(rows), {**ATTRS, "domain": "target"})


@pytest.mark.parametrize("kind", ["synthia", "gta5"])
def test_every_depth_code_reads_through_metres_exactly(tmp_path, kind):
    p = tmp_path / "all_codes.png"
    write_png(p, np.arange(65536, dtype=np.uint16).reshape(256, 256))
    plain = read_depth_png(p, kind)
    table = read_depth_png(p, kind, through_metres=True)
    assert table.dtype == np.float32 and table.shape == (256, 256)
    assert table.tobytes() == codecs.inv_through_metres(plain).tobytes()
    assert (table != plain).any()  # the round trip is not the identity: dropping it would change training


@pytest.mark.parametrize("kind", ["synthia", "gta5"])
@pytest.mark.parametrize("resample", ["nearest", "nearest_cv2", "bilinear"])
def test_training_source_depth_equals_the_former_h5_copy(tmp_path, kind, resample):
    index = _index(tmp_path, kind)
    splits = {"source": index, "target_train": index, "target_val": index}
    copied, in_place = tmp_path / "copied", tmp_path / "in_place"
    for d in (copied, in_place):
        d.mkdir()
        _target_h5(index, d)
    _former_export(index, copied)
    (in_place / "source.json").write_text("{}")
    tc = TrainConfig(crop_hw=(16, 16), source_resize_hw=(24, 40), source_depth_resample=resample)
    old, _, _ = seg_datasets(splits, tc, copied)
    new, _, _ = seg_datasets(splits, tc, in_place)
    assert old.depth_h5 is not None and new.depth_h5 is None
    for key in [(i, draw) for i in range(len(index)) for draw in range(2)]:
        a, b = old[key], new[key]
        assert b["depth"].dtype == a["depth"].dtype and b["depth"].shape == a["depth"].shape
        assert b["depth"].numpy().tobytes() == a["depth"].numpy().tobytes(), key
        assert b["image"].numpy().tobytes() == a["image"].numpy().tobytes(), key
    # at full size the values are the decoded files through metres, and differ from the plain decoding
    full = SegDepthDataset(index, ("depth",), None, None, depth_through_metres=True)
    plain = SegDepthDataset(index, ("depth",), None, None)
    with DepthH5(copied / "source.h5") as h5:
        for i in range(len(index)):
            assert full.load_raw(i)["depth"].tobytes() == h5.inv_depth(i).tobytes()
    assert any(full.load_raw(i)["depth"].tobytes() != plain.load_raw(i)["depth"].tobytes() for i in range(3))


def test_source_depth_h5_picks_the_h5_the_record_or_fails(tmp_path):
    with pytest.raises(DataError, match=r"neither source\.h5 .* nor source\.json.*dvc repro depth_maps"):
        source_depth_h5(tmp_path)
    (tmp_path / "source.json").write_text("{}")
    assert source_depth_h5(tmp_path) is None
    (tmp_path / "source.h5").write_bytes(b"")  # network depth: the h5 wins (depth_maps writes only one)
    assert source_depth_h5(tmp_path) == tmp_path / "source.h5"


def _run(cwd: Path, module: str) -> None:
    res = invoke_stage(cwd, module)
    assert res.exit_code == 0, f"{module}: {res.exception!r}\n{res.output[-3000:]}"


def test_depth_maps_writes_no_copy_of_ground_truth(tmp_path):
    """The stage on SYNTHIA + Cityscapes folders: source.json (no source.h5), target.h5; training reads in place."""
    import json

    import torch

    from corda.depth.checkpoint import save_depth_net
    from corda.depth.config import DepthConfig
    from corda.models.depth_net import DepthNet
    from corda.params import section

    ws = tmp_path / "ws"
    ws.mkdir()
    write_synthia_fixture(tmp_path / "synthia", n=2, h=H, w=W, seed=0)
    write_cityscapes_fixture(tmp_path / "cityscapes", n_train=2, n_val=1, h=H, w=W, seed=1)
    p = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    p["data"]["source"] = {"kind": "synthia", "root": str(tmp_path / "synthia")}
    p["data"]["target"] = {"kind": "cityscapes", "root": str(tmp_path / "cityscapes")}
    (ws / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    _run(ws, "stages.data")
    cfg = section(p, "depth", DepthConfig)
    assert cfg.source == "ground_truth"
    torch.manual_seed(0)
    net = DepthNet(cfg.backbone, None, cfg.min_depth_m, cfg.max_depth_m)
    save_depth_net(ws / "models/depth/target.pt", cfg, "target", net, [])
    _run(ws, "stages.depth_maps")
    assert sorted(f.name for f in (ws / "depth").iterdir()) == ["source.json", "target.h5"]
    record = json.loads((ws / "depth/source.json").read_text())
    assert record["mode"] == "ground_truth" and record["read_in_place"] and record["items"] == 2
    with DepthH5(ws / "depth/target.h5") as f:
        assert len(f) == 2 and f.inv_depth(0).shape == (H, W)

    from corda.data.manifest import load_splits

    src, _, _ = seg_datasets(load_splits(ws / "data/manifest.json"), TrainConfig(crop_hw=(16, 16)), ws / "depth")
    assert src.depth_h5 is None and src.depth_through_metres
    copied = tmp_path / "copied"
    copied.mkdir()
    _former_export(src.index, copied)
    with DepthH5(copied / "source.h5") as h5:
        for i in range(len(src)):
            assert src.load_raw(i)["depth"].tobytes() == h5.inv_depth(i).tobytes()
