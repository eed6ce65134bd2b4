"""Each artefact path is spelled once (corda.paths): dvc.yaml declares exactly those paths, and no stage or
library module spells one itself."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from corda import paths as P
from corda.eval_files import MODELS, headline_metrics, headline_path
from test_dvc_deps import PACKAGES, dvc_stages

ROOT = Path(__file__).resolve().parents[1]
STAGES = dvc_stages(ROOT / "dvc.yaml")


def _posix(*ps) -> set[str]:
    return {Path(p).as_posix() for p in ps}


def _trained(method: str) -> set[str]:
    return _posix(P.model_file(method), P.live_dir(f"train_{method}"))


#: What each stage writes, in corda.paths' terms (outs, metrics and plots together).
WRITES = {
    "data": _posix(P.BENCHMARK_DIR, P.MANIFEST),
    "rcs": _posix(P.RCS_STATS),
    "depth_pretrain": _posix(P.DEPTH_MODELS_DIR, P.live_dir("depth_pretrain")),
    "depth_maps": _posix(P.DEPTH_DIR, P.DEPTH_METRICS),
    "train@source_only": _trained("source_only"),
    "train@dacs": _trained("dacs"),
    "train_corda": _trained("corda"),
    "train_oracle": _trained("oracle"),
    "pseudo_labels": _posix(P.PSEUDO_LABELS, P.PSEUDO_METRICS, P.PSEUDO_PLOT_JSON, P.PSEUDO_PLOT_PNG),
    "self_train": _posix(P.model_file("corda_round2"), P.live_dir("self_train")),
    "evaluate": _posix(P.EVAL_METRICS, P.RESULTS_TABLE, P.EVAL_DIR)
    | {headline_path(r) for r in headline_metrics({m: {} for m in MODELS})},
}


def _names(entries) -> list[str]:
    return [next(iter(e)) if isinstance(e, dict) else e for e in entries or []]


def _is_code(p: str) -> bool:
    return p.split("/")[0] in PACKAGES


def test_each_stage_writes_the_paths_of_corda_paths():
    assert set(STAGES) == set(WRITES)
    for name, st in STAGES.items():
        written = set(_names(st.get("outs")) + _names(st.get("metrics")) + _names(st.get("plots")))
        assert written == WRITES[name], name


def test_each_data_dependency_is_what_a_stage_writes():
    """A stage reads another stage's output by the same spelling (a path renamed on one side alone fails)."""
    written = set().union(*WRITES.values())
    for name, st in STAGES.items():
        for dep in _names(st.get("deps")):
            assert _is_code(dep) or dep in written, (name, dep)
    assert _posix(P.MANIFEST, P.depth_h5("target").parent, P.model_file("corda")) <= set(
        _names(STAGES["pseudo_labels"]["deps"]))
    assert {headline_path("corda")} <= WRITES["evaluate"] and _posix(P.DEPTH_METRICS, P.PSEUDO_METRICS) <= set(
        _names(STAGES["evaluate"]["deps"]))


def test_every_plotted_file_lies_in_a_declared_output():
    import yaml

    written = set().union(*WRITES.values())
    files = []
    for entry in yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]:
        key, spec = (next(iter(entry.items())) if isinstance(entry, dict) else (entry, {}))
        ys = spec.get("y") if isinstance(spec, dict) else None
        files += list(ys) if isinstance(ys, dict) else [key]
    assert files
    for f in files:
        assert any(f == w or f.startswith(w + "/") for w in written), f


def test_library_defaults_are_corda_paths():
    from corda.depth.checkpoint import depth_checkpoint_path
    from corda.rcs import STATS_PATH

    assert STATS_PATH == P.RCS_STATS
    assert depth_checkpoint_path(P.DEPTH_MODELS_DIR, "target") == P.DEPTH_MODELS_DIR / "target.pt"


def _artefact_literals(path: Path) -> list[str]:
    """String constants in ``path`` (docstrings aside) that spell an artefact path of corda.paths."""
    spelled = {Path(v).as_posix() for v in vars(P).values() if isinstance(v, Path)}
    tree = ast.parse(path.read_text())
    docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                  if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            s = node.value
            if " " in s:  # a message, not a path
                continue
            # A bare folder name ("depth", "eval") is also a field or a word; only paths with a "/" count there.
            if any(s.startswith(p + "/") or (s == p and "/" in p) for p in spelled):
                found.append(s)
    return found


@pytest.mark.parametrize("package", ["stages", "corda"])
def test_no_module_spells_an_artefact_path_itself(package):
    """The stages' option defaults and outputs, and the library's defaults, come from corda.paths."""
    bad = {}
    for f in sorted((ROOT / package).rglob("*.py")):
        if f == ROOT / "corda/paths.py":
            continue
        lits = _artefact_literals(f)
        if lits:
            bad[f.relative_to(ROOT).as_posix()] = lits
    assert not bad, bad
