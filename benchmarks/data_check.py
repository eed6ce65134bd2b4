"""Wall time of the data stage's header check (corda.data.check) with 1, 2, ... processes, and CPU s per file.

    OMP_NUM_THREADS=1 python benchmarks/data_check.py /tmp/mini --files 30000 --workers 1 2 4 --cold

Scans the miniature real datasets (benchmarks/make_miniature.py: GTA5 and Cityscapes, train and val), then checks
their items repeated up to ``--files`` files (the count of a real GTA5 + Cityscapes run is about 30,000), so the
numbers hold at real size on a warm page cache; a cold disk or a network file system adds waiting, which more
processes overlap. Prints, per worker count, the best wall time of ``--repeats`` runs, files per second, and the
CPU seconds per file (this process and its children). The problems found must be the same for every count.

``--cold`` also times one pass over the distinct files after evicting them from the page cache
(``posix_fadvise(DONTNEED)``, these files only): the first read of a dataset, from the disk (with a pool for
every count above 1, though the stage checks so few items in one process: corda.data.check.check_processes).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corda.data.check import check_items, index_items  # noqa: E402  (the repository's, not an installed copy)
from corda.data.index import scan_dataset  # noqa: E402


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _evict(items) -> None:
    """Drop the files' pages from the page cache (a hint the kernel follows for clean pages)."""
    for it in items:
        for p in it.values():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("root", type=Path, help="make_miniature.py's output folder (gta5/, cityscapes/)")
    ap.add_argument("--files", type=int, default=30000, help="files to check (the items, repeated)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="also time a pass over the distinct files, evicted first")
    a = ap.parse_args()
    indexes = [scan_dataset("gta5", a.root / "gta5", "train"), scan_dataset("cityscapes", a.root / "cityscapes", "train"),
               scan_dataset("cityscapes", a.root / "cityscapes", "val")]
    items = [it for idx in indexes for it in index_items(idx.root, idx.paths)]
    per_pass = sum(len(it) for it in items)
    distinct = items
    items = items * max(1, round(a.files / per_pass))
    files = sum(len(it) for it in items)
    print(f"{len(indexes)} splits, {per_pass} distinct files; checking {files} files ({len(items)} items)")
    print("| workers | wall s (best of %d) | files/s | CPU ms/file |\n|---|---|---|---|" % a.repeats)
    found = None
    for w in a.workers:
        best, cpu = float("inf"), float("inf")
        for _ in range(a.repeats):
            c0, t0 = _cpu(), time.perf_counter()
            problems = check_items(items, w)
            wall, used = time.perf_counter() - t0, _cpu() - c0
            best, cpu = min(best, wall), min(cpu, used)
        assert found is None or problems == found, "the problems differ between worker counts"
        found = problems
        print(f"| {w} | {best:.2f} | {files / best:,.0f} | {1e3 * cpu / files:.3f} |")
    if a.cold:
        from corda.data import check

        check.MIN_ITEMS_PER_PROCESS = 1  # a pool even for these few items: does it overlap the disk's waits?
        print(f"\ncold page cache, {per_pass} distinct files, one pass each (best of {a.repeats}):\n"
              "| workers | wall s | wall ms/file |\n|---|---|---|")
        for w in a.workers:
            best = float("inf")
            for _ in range(a.repeats):
                _evict(distinct)
                t0 = time.perf_counter()
                check_items(distinct, w)
                best = min(best, time.perf_counter() - t0)
            print(f"| {w} | {best:.3f} | {1e3 * best / per_pass:.2f} |")


if __name__ == "__main__":
    main()
