"""HDF5 artefacts: schema round trips, determinism, streaming memory, atomicity and clear read errors."""

import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from corda.errors import CordaError, DataError
from corda.h5io import (
    DEPTH_SCHEMA,
    PSEUDO_SCHEMA,
    DepthH5,
    H5StreamWriter,
    PseudoLabelH5,
    open_h5,
    write_depth_h5,
    write_pseudo_h5,
)

ROOT = Path(__file__).resolve().parents[1]
H, W = 6, 10
DEPTH_ATTRS = dict(
    min_depth_m=0.1, max_depth_m=100.0, mode="stereo", model_hash="abc123", domain="cityscapes"
)
PSEUDO_ATTRS = dict(
    class_names=["road", "sidewalk", "building"], threshold=0.968, checkpoint_hash="deadbeef",
    params={"threshold": 0.968, "per_image": False, "nested": {"a": [1, 2]}},
    weight_rule="q * omega / mean(omega)",
)


def depth_items(n, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        z = rng.uniform(1.0, 80.0, (H, W)).astype(np.float32)
        z[0, :3] = np.nan  # invalid pixels
        inv = np.where(np.isnan(z), 1.0, 655.36 / (z + 0.01)).astype(np.float32)
        yield f"city/img_{i:03d}", inv, z


def pseudo_items(n, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(n):
        label = rng.integers(0, 3, (H, W)).astype(np.uint8)
        label[-1, -1] = 255
        conf = rng.uniform(0.3, 1.0, (H, W)).astype(np.float32)
        omega = rng.uniform(1e-3, 1.0, (H, W)).astype(np.float32)
        yield f"img_{i}", label, conf, omega, conf * omega / omega.mean()


def write_depth(path, n=3, **kw):
    write_depth_h5(path, depth_items(n), n, DEPTH_ATTRS, **kw)


# ---------------------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------------------

def test_depth_round_trip_dtypes_shapes_attrs(tmp_path):
    path = tmp_path / "depth" / "cityscapes.h5"
    write_depth(path, n=3)
    with h5py.File(path, "r") as f:  # the on-disk schema itself
        assert f["inv_depth"].dtype == np.float32 and f["inv_depth"].shape == (3, H, W)
        assert f["depth_m"].dtype == np.float16 and f["depth_m"].shape == (3, H, W)
        assert f["names"].shape == (3,)
        assert f["inv_depth"].chunks == (1, H, W) and f["inv_depth"].compression == "gzip"
        assert f["inv_depth"].compression_opts == 4
        assert bool(f.attrs["complete"])
    r = DepthH5(path)
    assert len(r) == 3 and r.shape == (H, W)
    assert r.names == [f"city/img_{i:03d}" for i in range(3)]
    assert r.index_of("city/img_002") == 2
    a = r.attrs
    assert a["kind"] == "depth" and a["mode"] == "stereo" and a["model_hash"] == "abc123"
    assert a["domain"] == "cityscapes" and a["height"] == H and a["width"] == W
    assert a["min_depth_m"] == 0.1 and a["max_depth_m"] == 100.0
    assert "655.36/(z+0.01)" in a["encoding"] and "1.0 = invalid" in a["encoding"]
    for i, (name, inv, z) in enumerate(depth_items(3)):
        got_inv, got_z = r.inv_depth(i), r.depth_m(i)
        assert got_inv.dtype == np.float32 and got_z.dtype == np.float16
        np.testing.assert_array_equal(got_inv, inv)  # float32 stored exactly
        assert (got_inv[0, :3] == 1.0).all()  # invalid stays exactly 1.0
        np.testing.assert_array_equal(got_z, z.astype(np.float16))  # NaN positions included
    np.testing.assert_array_equal(r.inv_depth(-1), r.inv_depth(2))
    with pytest.raises(IndexError):
        r.inv_depth(3)
    with pytest.raises(DataError, match="img_999"):
        r.index_of("img_999")


def test_pseudo_round_trip_dtypes_shapes_attrs(tmp_path):
    path = tmp_path / "pseudo.h5"
    write_pseudo_h5(path, pseudo_items(4), 4, PSEUDO_ATTRS)
    with h5py.File(path, "r") as f:
        for name, dtype in PSEUDO_SCHEMA.datasets.items():
            assert f[name].dtype == dtype and f[name].shape == (4, H, W)
        assert f["label"].dtype == np.uint8 and f["weight"].dtype == np.float16
    r = PseudoLabelH5(path)
    a = r.attrs
    assert a["kind"] == "pseudo_labels" and a["threshold"] == 0.968 and a["checkpoint_hash"] == "deadbeef"
    assert a["class_names"] == ["road", "sidewalk", "building"] == r.class_names
    assert a["params"] == PSEUDO_ATTRS["params"]  # dict stored as JSON, decoded back
    assert a["weight_rule"] == "q * omega / mean(omega)" and (a["height"], a["width"]) == (H, W)
    for i, (name, label, conf, omega, weight) in enumerate(pseudo_items(4)):
        assert r.names[i] == name
        np.testing.assert_array_equal(r.label(i), label)
        np.testing.assert_array_equal(r.confidence(i), conf.astype(np.float16))
        np.testing.assert_array_equal(r.depth_weight(i), omega.astype(np.float16))
        np.testing.assert_array_equal(r.weight(i), weight.astype(np.float16))
        assert r.label(i).dtype == np.uint8 and r.confidence(i).dtype == np.float16


def test_generic_writer_chunks_attrs_and_counts(tmp_path):
    path = tmp_path / "g.h5"
    attrs = {"kind": "custom", "s": "x", "i": 3, "f": 0.5, "b": True, "l": [1, 2], "ls": ["a", "b"],
             "d": {"k": 1}, "p": tmp_path / "q"}
    with H5StreamWriter(path, 7, {"x": ((2, 3), np.int16), "y": ((4,), "float32")}, attrs,
                        chunk_items=3, compression=None) as w:
        for i in range(6):
            w.append(f"n{i}", x=np.full((2, 3), i), y=np.arange(4) * i)
        with pytest.raises(ValueError, match="shape"):
            w.append("bad", x=np.zeros((3, 2)), y=np.zeros(4))
        with pytest.raises(ValueError, match="duplicate"):
            w.append("n0", x=np.zeros((2, 3)), y=np.zeros(4))
        w.append("n6", x=np.full((2, 3), 6.0), y=np.arange(4) * 6)  # integral floats are fine
        with pytest.raises(ValueError, match="more than"):
            w.append("n7", x=np.zeros((2, 3)), y=np.zeros(4))
    with open_h5(path, "custom") as f:
        from corda.h5io import read_attrs

        a = read_attrs(f)
        assert f["x"].chunks == (3, 2, 3) and f["x"].dtype == np.int16
        np.testing.assert_array_equal(f["x"][5], np.full((2, 3), 5))
        np.testing.assert_array_equal(f["y"][6], np.arange(4) * 6.0)
    assert a["d"] == {"k": 1} and a["ls"] == ["a", "b"] and a["l"] == [1, 2] and a["b"] is True
    assert a["p"] == str(tmp_path / "q") and a["i"] == 3 and a["complete"] is True


def test_empty_file_and_multi_item_gzip_chunks(tmp_path):
    attrs = {**DEPTH_ATTRS, "height": H, "width": W}
    write_depth_h5(tmp_path / "e.h5", [], 0, attrs)  # a domain without images still gets a valid file
    r = DepthH5(tmp_path / "e.h5")
    assert len(r) == 0 and r.shape == (H, W) and r.names == []
    write_depth(tmp_path / "c.h5", n=5, chunk_items=2)  # partially filled compressed chunks
    r = DepthH5(tmp_path / "c.h5")
    for i, (_, inv, _) in enumerate(depth_items(5)):
        np.testing.assert_array_equal(r.inv_depth(i), inv)
    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert f["inv_depth"].chunks == (2, H, W)


def test_integer_overflow_and_bad_values_rejected(tmp_path):
    with pytest.raises(ValueError, match="does not fit"):
        with H5StreamWriter(tmp_path / "a.h5", 1, {"x": ((2,), np.uint8)}) as w:
            w.append("a", x=np.array([1, 300]))
    bad_label = [("a", np.full((H, W), 7, np.uint8), np.ones((H, W)), np.ones((H, W)), np.ones((H, W)))]
    with pytest.raises(DataError, match="outside"):
        write_pseudo_h5(tmp_path / "p.h5", bad_label, 1, PSEUDO_ATTRS)
    bad_inv = [("a", np.full((H, W), 0.5, np.float32), np.ones((H, W)))]
    with pytest.raises(DataError, match="< 1"):
        write_depth_h5(tmp_path / "d.h5", bad_inv, 1, DEPTH_ATTRS)
    with pytest.raises(ValueError, match="mode"):
        write_depth_h5(tmp_path / "d.h5", depth_items(1), 1, {**DEPTH_ATTRS, "mode": "lidar"})
    with pytest.raises(ValueError, match="missing"):
        write_pseudo_h5(tmp_path / "p.h5", pseudo_items(1), 1, {"threshold": 0.9})
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------
# Determinism and memory
# ---------------------------------------------------------------------------------------------------------

def test_identical_content_gives_identical_bytes(tmp_path):
    write_pseudo_h5(tmp_path / "a.h5", pseudo_items(3), 3, PSEUDO_ATTRS)
    time.sleep(1.1)  # a timestamp anywhere in the file would now differ
    # Same content, attrs given in another order.
    write_pseudo_h5(tmp_path / "b.h5", pseudo_items(3), 3, dict(reversed(list(PSEUDO_ATTRS.items()))))
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    write_pseudo_h5(tmp_path / "c.h5", pseudo_items(3, seed=1), 3, PSEUDO_ATTRS)
    assert (tmp_path / "a.h5").read_bytes() != (tmp_path / "c.h5").read_bytes()


def test_streaming_memory_stays_flat(tmp_path):
    """400 items of 256×512 (300 MB of data): peak RSS of the writing process grows by far less."""
    script = textwrap.dedent("""
        import resource, sys
        import numpy as np
        from corda.h5io import write_depth_h5
        N, H, W = 400, 256, 512
        ramp = np.linspace(1, 50, H * W, dtype=np.float32).reshape(H, W)
        def items(n):
            for i in range(n):
                inv = ramp + np.float32(i)  # a fresh array per item, like a real producer
                yield f"img_{i:04d}", inv, (655.36 / inv).astype(np.float16)
        attrs = dict(min_depth_m=0.1, max_depth_m=100.0, mode="stereo", model_hash="x", domain="d")
        write_depth_h5(sys.argv[1] + "/warm.h5", items(2), 2, attrs)  # load HDF5 and filters first
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        write_depth_h5(sys.argv[1] + "/big.h5", items(N), N, attrs)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) * 1024, N * H * W * 6)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True,
                         text=True, check=True, env=env)
    growth, total = map(int, out.stdout.split())
    assert total == 400 * 256 * 512 * 6
    mib = 2**20
    assert growth < 32 * mib, f"peak RSS grew by {growth / mib:.1f} MiB for {total / mib:.0f} MiB of data"
    assert len(DepthH5(tmp_path / "big.h5")) == 400


# ---------------------------------------------------------------------------------------------------------
# Atomicity and failures
# ---------------------------------------------------------------------------------------------------------

def test_exception_mid_write_leaves_nothing(tmp_path):
    def broken():
        for k, item in enumerate(depth_items(5)):
            if k == 3:
                raise RuntimeError("model crashed")
            yield item

    with pytest.raises(RuntimeError, match="model crashed"):
        write_depth_h5(tmp_path / "d.h5", broken(), 5, DEPTH_ATTRS)
    assert list(tmp_path.iterdir()) == []  # neither d.h5 nor .d.h5.tmp


def test_exception_keeps_previous_output(tmp_path):
    path = tmp_path / "d.h5"
    write_depth(path, n=2)
    before = path.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        with H5StreamWriter(path, 2, {"x": ((2,), np.uint8)}, {"kind": "depth"}) as w:
            w.append("a", x=np.zeros(2))
            assert w.tmp_path.name.startswith(".d.h5.tmp-") and w.tmp_path.exists()  # the temporary name
            raise KeyboardInterrupt
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.h5"]


def test_too_few_items_is_an_error(tmp_path):
    with pytest.raises(CordaError, match="3 items were written but 5"):
        write_depth_h5(tmp_path / "d.h5", depth_items(3), 5, DEPTH_ATTRS)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_becomes_corda_error(tmp_path, monkeypatch):
    def full(self, key, value):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(h5py.Dataset, "__setitem__", full)
    path = tmp_path / "d.h5"
    with pytest.raises(CordaError, match=r"d\.h5.*No space left"):
        write_depth(path, n=2)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------------------
# Reading: clear errors
# ---------------------------------------------------------------------------------------------------------

def test_missing_file_names_stage(tmp_path):
    with pytest.raises(DataError, match=r"nope\.h5.*dvc repro depth_maps"):
        DepthH5(tmp_path / "nope.h5")


@pytest.mark.parametrize("cut", [16, 2000, "half"])
def test_truncated_file_rejected(tmp_path, cut):
    good = tmp_path / "good.h5"
    write_depth(good, n=4)
    data = good.read_bytes()
    n_cut = len(data) // 2 if cut == "half" else cut
    bad = tmp_path / "cut.h5"
    bad.write_bytes(data[: len(data) - n_cut])
    with pytest.raises(DataError, match=r"cut\.h5.*dvc repro depth_maps"):
        DepthH5(bad)


def test_not_hdf5_rejected(tmp_path):
    bad = tmp_path / "text.h5"
    bad.write_text("hello")
    with pytest.raises(DataError, match=r"text\.h5"):
        open_h5(bad, "pseudo_labels")


def test_incomplete_file_rejected(tmp_path):
    path = tmp_path / "half.h5"
    with h5py.File(path, "w") as f:  # what a writer killed before finishing would look like
        f.attrs["kind"] = "depth"
        f.create_dataset("inv_depth", data=np.ones((1, H, W), np.float32))
    with pytest.raises(DataError, match=r"half\.h5.*incomplete.*dvc repro depth_maps"):
        DepthH5(path)


def test_wrong_kind_and_schema_rejected(tmp_path):
    path = tmp_path / "d.h5"
    write_depth(path)
    with pytest.raises(DataError, match=r"d\.h5.*'depth'.*expected 'pseudo_labels'"):
        PseudoLabelH5(path)
    odd = tmp_path / "odd.h5"  # right kind, complete, but a dataset with the wrong dtype
    with H5StreamWriter(odd, 1, {"inv_depth": ((H, W), np.float64), "depth_m": ((H, W), np.float16)},
                        {**DEPTH_ATTRS, "kind": "depth", "encoding": "", "height": H, "width": W}) as w:
        w.append("a", inv_depth=np.ones((H, W)), depth_m=np.ones((H, W)))
    with pytest.raises(DataError, match=r"odd\.h5.*inv_depth.*float64"):
        DepthH5(odd)


# ---------------------------------------------------------------------------------------------------------
# Readers in other processes
# ---------------------------------------------------------------------------------------------------------

def test_reader_survives_pickling(tmp_path):
    path = tmp_path / "p.h5"
    write_pseudo_h5(path, pseudo_items(3), 3, PSEUDO_ATTRS)
    r = PseudoLabelH5(path)
    first = r.label(1)  # opens the handle in this process
    r2 = pickle.loads(pickle.dumps(r))
    np.testing.assert_array_equal(r2.label(1), first)
    assert r2.names == r.names and r2.attrs == r.attrs
    r.close()
    r2.close()


class _DepthDataset:
    def __init__(self, reader):
        self.reader = reader

    def __len__(self):
        return len(self.reader)

    def __getitem__(self, i):
        return self.reader.inv_depth(i), os.getpid()


def test_reader_in_dataloader_workers(tmp_path):
    import torch

    path = tmp_path / "d.h5"
    write_depth(path, n=4)
    reader = DepthH5(path)
    expected = [reader.inv_depth(i) for i in range(4)]  # parent holds an open handle before the fork
    loader = torch.utils.data.DataLoader(_DepthDataset(reader), batch_size=1, num_workers=2)
    got = list(loader)
    assert {int(pid) for _, pid in got} - {os.getpid()}  # really read in worker processes
    for (inv, _), exp in zip(got, expected):
        np.testing.assert_array_equal(inv[0].numpy(), exp)
    np.testing.assert_array_equal(reader.inv_depth(0), expected[0])  # parent handle still fine


def test_schemas_describe_the_files():
    assert DEPTH_SCHEMA.kind == "depth" and DEPTH_SCHEMA.stage == "depth_maps"
    assert set(PSEUDO_SCHEMA.datasets) == {"label", "confidence", "depth_weight", "weight"}
