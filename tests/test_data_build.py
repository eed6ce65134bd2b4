"""The data stage's manifest (corda.data.build): the same bytes whatever the number of checking processes
(run.data.workers), and the same one-line error naming the same bad files in the same order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from corda.data.build import build_manifest
from corda.data.config import DataConfig, SourceSpec, TargetSpec
from corda.errors import DataError


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> Path:
    from corda.testing import write_cityscapes_fixture, write_synthia_fixture

    d = tmp_path_factory.mktemp("real")
    write_cityscapes_fixture(d / "cs", n_train=6, n_val=2, h=16, w=32, seed=0)
    write_synthia_fixture(d / "syn", n=5, h=16, w=32, seed=1)
    return d


def _cfg(d: Path, workers: int) -> DataConfig:
    return DataConfig(workers=workers, validate_items=1, source=SourceSpec("synthia", str(d / "syn")),
                      target=TargetSpec("cityscapes", str(d / "cs")))


def _pool_sizes(monkeypatch) -> list[int]:
    """Record the size of every process pool the check starts (on these few items too)."""
    import concurrent.futures

    from corda.data import check

    monkeypatch.setattr(check, "MIN_ITEMS_PER_PROCESS", 1)
    sizes: list[int] = []
    real = concurrent.futures.ProcessPoolExecutor

    class Recording(real):
        def __init__(self, max_workers=None, **kw):
            sizes.append(max_workers)
            super().__init__(max_workers=max_workers, **kw)

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Recording)
    return sizes


def test_manifest_is_byte_identical_for_any_worker_count(datasets, monkeypatch):
    sizes = _pool_sizes(monkeypatch)
    got = {w: json.dumps(build_manifest(_cfg(datasets, w)), sort_keys=False) for w in (1, 2, 3)}
    assert got[1] == got[2] == got[3]
    assert sizes == [2, 3]  # one pool per run with workers > 1, of that size; none for 1
    assert len(json.loads(got[1])["splits"]["target_train"]["names"]) == 6


def test_bad_files_are_reported_alike_for_any_worker_count(tmp_path, datasets, monkeypatch):
    import shutil

    sizes = _pool_sizes(monkeypatch)
    d = tmp_path / "d"
    shutil.copytree(datasets, d)
    # Bad files in every split, listed in item order: source first, then target train, then target val.
    bad = sorted((d / "syn" / "RGB").glob("*.png"))[3], sorted((d / "cs" / "gtFine" / "train").rglob("*labelIds.png"))[4]
    for f in bad:
        f.write_bytes(f.read_bytes()[:40])
    sorted((d / "cs" / "leftImg8bit" / "val").rglob("*.png"))[1].write_bytes(b"")
    messages = []
    for w in (1, 2, 4):
        with pytest.raises(DataError) as exc:
            build_manifest(_cfg(d, w))
        messages.append(str(exc.value))
    assert messages[0] == messages[1] == messages[2] and sizes == [2, 4]
    assert messages[0].startswith("3 of ") and messages[0].index(bad[0].name) < messages[0].index(bad[1].name)


def test_small_sets_are_checked_without_a_pool():
    """A pool costs more than it saves on a few hundred items (the embedded smoke profile, the miniature data)."""
    from corda.data.check import MIN_ITEMS_PER_PROCESS, check_processes

    assert check_processes(10, 8) == 1 and check_processes(2 * MIN_ITEMS_PER_PROCESS - 1, 8) == 1
    assert check_processes(2 * MIN_ITEMS_PER_PROCESS, 8) == 2 and check_processes(25_000, 4) == 4
    assert check_processes(25_000, 1) == 1
