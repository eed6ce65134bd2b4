"""Do two git revisions write byte-identical pipeline outputs? (issue 16: restructuring changes no result)

For each revision: export its tracked files (``git archive``) into a temporary folder, use its smoke
profile (``params/smoke.yaml``, tiny procedural data and a few iterations) as ``params.yaml``, run every
stage command of its ``dvc.yaml`` in order (the stage entry points directly, without DVC), and hash every
file the stages wrote. Then print one table: path, md5 at A, md5 at B, same?

    python benchmarks/byte_identity.py 84c7d77 HEAD                 # ~10-20 min per revision on 2 cores
    python benchmarks/byte_identity.py 84c7d77 HEAD --keep /tmp/bi  # keep the two trees for a closer look

Files that legitimately differ between identical runs are listed in VOLATILE and reported, not compared.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]

# Written by the stages but not results (timestamps, absolute paths); compared anyway when equal. None so far:
# the DVCLive summaries hold no timestamp (corda.engine.write_dvclive) and the HDF5 files no path.
VOLATILE: dict[str, str] = {}


def _volatile(rel: str) -> str | None:
    from fnmatch import fnmatch

    for pat, why in VOLATILE.items():
        if fnmatch(rel, pat):
            return why
    return None


def export(rev: str, dst: Path) -> None:
    dst.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dst)], input=archive, check=True)
    (dst / "params.yaml").write_bytes((dst / "params" / "smoke.yaml").read_bytes())


def run_stages(repo: Path, log) -> None:
    from pipeline_stages import stage_commands  # this folder is on sys.path when a script in it runs

    env = {**os.environ, "PYTHONPATH": str(repo), "DVC_NO_ANALYTICS": "1", "CORDA_LOG_LEVEL": "WARNING",
           "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    for name, cmd, _ in stage_commands(repo):
        t0 = time.perf_counter()
        res = subprocess.run(cmd, shell=True, cwd=repo, env=env,
                             capture_output=True, text=True)
        print(f"  {repo.name}: {name} ({time.perf_counter() - t0:.0f} s) rc={res.returncode}", file=log, flush=True)
        if res.returncode:
            raise SystemExit(f"{repo.name}: stage {name} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")


def hashes(repo: Path, tracked: set[str]) -> dict[str, str]:
    """md5 of every file the stages wrote: new files, and tracked ones rewritten (``git archive`` gives tracked
    files the commit's time, so a later mtime means a stage wrote it: metrics/, eval/ are committed outputs)."""
    exported = (repo / "dvc.yaml").stat().st_mtime + 1
    out = {}
    for p in sorted(repo.rglob("*")):
        rel = p.relative_to(repo).as_posix()
        if not p.is_file() or "__pycache__" in rel or rel.startswith(".pytest") or rel in (".tracked", ".done"):
            continue
        if rel not in tracked or p.stat().st_mtime > exported:
            out[rel] = hashlib.md5(p.read_bytes()).hexdigest()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("rev_a")
    ap.add_argument("rev_b")
    ap.add_argument("--keep", type=Path, default=None, help="folder to keep both trees in (default: a temp dir)")
    ap.add_argument("--only-a", action="store_true", help="build the first tree only (with --keep: run B later)")
    args = ap.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="byte_identity_"))
    result = {}
    for tag, rev in (("a", args.rev_a), ("b", args.rev_b)):
        repo = base / tag
        if not (repo / ".done").exists():
            export(rev, repo)
            tracked = {p.relative_to(repo).as_posix() for p in repo.rglob("*") if p.is_file()}
            run_stages(repo, sys.stderr)
            (repo / ".tracked").write_text("\n".join(sorted(tracked)))
            (repo / ".done").write_text(rev)
        tracked = set((repo / ".tracked").read_text().split("\n"))
        result[tag] = hashes(repo, tracked)
        if args.only_a:
            return
    a, b = result["a"], result["b"]
    print(f"| file | {args.rev_a} | {args.rev_b} | same |\n|---|---|---|---|")
    bad = 0
    for rel in sorted(set(a) | set(b)):
        why = _volatile(rel)
        same = a.get(rel) == b.get(rel)
        verdict = "yes" if same else (f"ignored ({why})" if why else "**NO**")
        bad += not same and not why
        print(f"| {rel} | {a.get(rel, '—')[:12]} | {b.get(rel, '—')[:12]} | {verdict} |")
    print(f"\n{len(set(a) | set(b))} files, {bad} differ (not counting ignored ones); trees in {base}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
