"""Regenerate the README's figures from the committed run, and record what they were made from.

    make figures          # = .venv/bin/python docs/figures.py

* ``docs/predict_example.png``: ``python -m stages.predict`` with ``models/corda_round2.pt`` on three target val
  images, composed by docs/make_predict_figure.py.
* ``docs/plots_page.png``: ``dvc plots show`` with the offline template (docs/plots_offline.html), screenshot by
  a headless Chromium.

Both need the committed run's outputs in the workspace (after ``dvc repro`` or ``dvc pull``); the script
stops with one line when the workspace differs from dvc.lock. ``docs/figures.json`` records, per figure, the
sha256 of the PNG and the hashes of its inputs: the dvc.lock hashes of the outputs it shows and the sha256 of
the code and configuration that draw it. tests/test_figures.py fails when a figure or one of its inputs
changed since it was recorded, i.e. when the figure is stale: re-run this script then.
``--check`` only compares (exit 1 on drift) and changes nothing.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "docs" / "figures.json"
PREDICT_IMAGES = "data/benchmark/target/leftImg8bit/val/elmsford"
PREDICT_MODEL = "models/corda_round2.pt"
BROWSER_WINDOW = (1200, 2600)  # px; the page is cut at this height

#: Per figure: the dvc.lock outputs it shows, the files that draw it, the library functions it uses.
FIGURES: dict[str, dict[str, tuple[str, ...]]] = {
    "docs/predict_example.png": {
        "outs": (PREDICT_MODEL, "data/benchmark"),
        "files": ("corda/predict.py", "stages/predict.py", "docs/make_predict_figure.py", "docs/figures.py"),
        "functions": ("corda.report:depth_panel", "corda.report:scalar_panel", "corda.labels:colorize"),
    },
    "docs/plots_page.png": {
        "outs": ("eval", "plots/pseudo_label_accuracy.json", "plots/pseudo_label_accuracy.png",
                 "dvclive/train_corda", "dvclive/depth_pretrain"),
        "files": ("docs/plots_offline.html", "docs/figures.py", ".dvc/config"),
        "functions": (),
    },
}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def lock_hashes(lock_path: Path = ROOT / "dvc.lock") -> dict[str, str]:
    """``{out path: md5}`` of every stage output in dvc.lock."""
    lock = yaml.safe_load(lock_path.read_text()) if lock_path.is_file() else {}
    return {o["path"]: o.get("md5", "") for st in (lock or {}).get("stages", {}).values() for o in st.get("outs", [])}


def plots_config(root: Path = ROOT) -> dict:
    """What dvc.yaml says about plots: the top-level ``plots`` and each stage's ``plots`` entries, and the
    .dvc/plots templates (editing a stage's command or deps does not make the plots page stale)."""
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    stage_plots = {name: st["plots"] for name, st in dvc.get("stages", {}).items() if st.get("plots")}
    templates = {p.name: p.read_text() for p in sorted((root / ".dvc" / "plots").glob("*.json"))}
    return {"plots": dvc.get("plots", []), "stage_plots": stage_plots, "templates": templates}


def function_source(root: Path, ref: str) -> str:
    """The source text of a top-level function ``"package.module:name"`` under ``root`` ("missing" if absent):
    a figure goes stale when the function that colours it changes, not when its module changes elsewhere."""
    module, name = ref.split(":")
    path = root / (module.replace(".", "/") + ".py")
    if not path.is_file():
        return "missing"
    text = path.read_text()
    for node in ast.parse(text).body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment(text, node) or "missing"
    return "missing"


def input_hashes(figure: str, root: Path = ROOT) -> dict[str, str]:
    """The hashes of one figure's inputs (see :data:`FIGURES`), as recorded in docs/figures.json."""
    spec = FIGURES[figure]
    lock = lock_hashes(root / "dvc.lock")
    out = {f"dvc.lock:{p}": lock.get(p, "missing") for p in spec["outs"]}
    out |= {p: _sha256((root / p).read_bytes()) if (root / p).is_file() else "missing" for p in spec["files"]}
    for ref in spec["functions"]:
        out[ref] = _sha256(function_source(root, ref).encode())
    if figure == "docs/plots_page.png":
        out["dvc.yaml:plots"] = _sha256(json.dumps(plots_config(root), sort_keys=True).encode())
    return out


def drift(root: Path = ROOT) -> list[str]:
    """One line per figure that is stale (or unrecorded) against docs/figures.json; empty when all agree."""
    path = root / RECORD.relative_to(ROOT)
    record = json.loads(path.read_text()) if path.is_file() else {}
    problems = []
    for figure in FIGURES:
        rec = record.get(figure)
        if rec is None:
            problems.append(f"{figure}: not recorded in docs/figures.json")
            continue
        png = root / figure
        if not png.is_file() or _sha256(png.read_bytes()) != rec.get("sha256"):
            problems.append(f"{figure}: the PNG is not the one recorded")
        now = input_hashes(figure, root)
        changed = sorted(k for k in now.keys() | rec.get("inputs", {}).keys() if now.get(k) != rec["inputs"].get(k))
        if changed:
            problems.append(f"{figure}: drawn from other inputs than today's: {', '.join(changed)}")
    return problems


def _run(cmd: list[str], **kw) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "DVC_NO_ANALYTICS": "1"}
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed:\n{res.stdout[-2000:]}{res.stderr[-2000:]}")


def _check_workspace() -> None:
    dvc = [sys.executable, "-m", "dvc"]
    res = subprocess.run(dvc + ["status", "--json"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    status = json.loads(res.stdout or "{}") if res.returncode == 0 else None
    if status is None or status:
        sys.exit("error: the workspace differs from dvc.lock (`dvc status`); run `dvc checkout` (or `dvc pull`, "
                 "`dvc repro`) first, so the figures show the committed run")


def make_predict_example(tmp: Path) -> None:
    preds = tmp / "predictions"
    _run([sys.executable, "-m", "stages.predict", PREDICT_IMAGES, "--model", PREDICT_MODEL, "--out", str(preds),
          "--overwrite"])
    _run([sys.executable, "docs/make_predict_figure.py", PREDICT_IMAGES, str(preds), "--rows", "3",
          "--out", "docs/predict_example.png"])


def make_plots_page(tmp: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("error: chromium is needed for docs/plots_page.png (Debian: apt-get install chromium)")
    _run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(tmp / "plots")])
    w, h = BROWSER_WINDOW
    _run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--virtual-time-budget=20000",
          f"--window-size={w},{h}", f"--screenshot={ROOT / 'docs/plots_page.png'}",
          (tmp / "plots" / "index.html").as_uri()], timeout=300)


def record(root: Path = ROOT) -> None:
    """Write docs/figures.json for the figures as they are now."""
    out = {f: {"sha256": _sha256((root / f).read_bytes()), "inputs": input_hashes(f, root)} for f in FIGURES}
    (root / RECORD.relative_to(ROOT)).write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only report stale figures (exit 1 if any)")
    args = ap.parse_args()
    if args.check:
        problems = drift()
        print("\n".join(problems) or "the figures are up to date")
        sys.exit(1 if problems else 0)
    _check_workspace()
    with tempfile.TemporaryDirectory() as tmp:
        make_predict_example(Path(tmp))
        make_plots_page(Path(tmp))
    record()
    print(f"wrote {', '.join(FIGURES)} and {RECORD.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
