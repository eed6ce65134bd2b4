"""The whole pipeline through DVC on the smoke profile: stages fit together, re-runs are no-ops,
and changing train.lambda_depth re-runs only the CorDA branch."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]


def _run(cmd, cwd, **kw):
    # `python` in dvc.yaml commands must be this interpreter (the venv), as `make repro` arranges.
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    env = {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(cwd), "CORDA_LOG_LEVEL": "WARNING"}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory):
    """A copy of the repository's tracked files with the smoke params, as a fresh git repo."""
    dst = tmp_path_factory.mktemp("pipeline") / "repo"
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dst / f)
    shutil.copy2(ROOT / "params" / "smoke.yaml", dst / "params.yaml")
    (dst / "dvc.lock").unlink(missing_ok=True)
    _run(["git", "init", "-q"], dst)
    _run(["git", "add", "-A"], dst)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "smoke"], dst)
    _run(DVC + ["repro"], dst, timeout=1200)
    return dst


@pytest.mark.slow
def test_repro_writes_every_artefact(smoke_repo):
    metrics = json.loads((smoke_repo / "metrics/eval.json").read_text())
    assert set(metrics) == {"source_only", "dacs", "corda", "corda_round2", "oracle"}
    for m in metrics.values():
        assert 0.0 <= m["miou"] <= 1.0 and "road" in m["per_class"]
    depth = json.loads((smoke_repo / "metrics/depth.json").read_text())
    assert "abs_rel" in depth["target"]
    pl = json.loads((smoke_repo / "metrics/pseudo_labels.json").read_text())
    assert "auroc" in pl and "miou" in pl
    for p in ("depth/source.h5", "depth/target.h5", "pseudo/target.h5", "models/corda.pt", "eval/predictions.png",
              "metrics/results.md", "dvclive/train_corda/metrics.json"):
        assert (smoke_repo / p).is_file(), p
    lock = yaml.safe_load((smoke_repo / "dvc.lock").read_text())
    assert {"data", "depth_pretrain", "depth_maps", "train_corda", "pseudo_labels", "self_train",
            "evaluate"} <= set(lock["stages"])


@pytest.mark.slow
def test_second_repro_is_a_noop(smoke_repo):
    res = _run(DVC + ["status"], smoke_repo)
    assert "changed" not in res.stdout and "modified" not in res.stdout, res.stdout


@pytest.mark.slow
def test_lambda_depth_reruns_only_the_corda_branch(smoke_repo):
    params = smoke_repo / "params.yaml"
    original = params.read_text()
    try:
        params.write_text(original.replace("lambda_depth: 0.01 ", "lambda_depth: 0.05 "))
        assert params.read_text() != original
        out = _run(DVC + ["status", "--json"], smoke_repo).stdout
        changed = set(json.loads(out))
    finally:
        params.write_text(original)
    assert "train_corda" in changed
    assert not changed & {"data", "depth_pretrain", "depth_maps", "train_source_only", "train_dacs", "train_oracle"}
    # Downstream stages depend on models/corda.pt, so DVC re-runs them once train_corda has.
