"""kill -9 during a training stage, then re-run: it resumes from the scratch checkpoint and ends with
exactly the weights of an uninterrupted run (CPU, smoke profile)."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _env(cwd):
    return {**os.environ, "PYTHONPATH": str(cwd), "CORDA_LOG_LEVEL": "INFO", "DVC_NO_ANALYTICS": "1"}


def _stage(cwd, *args):
    return [sys.executable, "-m", *args]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    for sub in ("corda", "stages"):
        shutil.copytree(ROOT / sub, d / sub, ignore=shutil.ignore_patterns("__pycache__"))
    text = (ROOT / "params" / "smoke.yaml").read_text()
    # Long enough to be killed mid-way, checkpoints every 2 steps.
    text = text.replace("  iterations: 6\n  batch_source: 2", "  iterations: 40\n  batch_source: 2")
    text = text.replace("  checkpoint_every: 3\n  log_every: 2\n  workers: 0\n  nan_policy",
                        "  checkpoint_every: 2\n  log_every: 2\n  workers: 0\n  nan_policy")
    (d / "params.yaml").write_text(text)
    for stage in ("stages.data", "stages.depth_pretrain", "stages.depth_maps"):
        subprocess.run(_stage(d, stage), cwd=d, env=_env(d), check=True, capture_output=True)
    return d


@pytest.mark.slow
def test_kill9_then_rerun_equals_uninterrupted(workdir):
    cmd = _stage(workdir, "stages.train", "--method", "source_only")
    subprocess.run(cmd, cwd=workdir, env=_env(workdir), check=True, capture_output=True)
    reference = torch.load(workdir / "models/source_only.pt", weights_only=False)
    (workdir / "models/source_only.pt").unlink()

    proc = subprocess.Popen(cmd, cwd=workdir, env=_env(workdir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    scratch = workdir / "checkpoints/train_source_only/last.pt"
    deadline = time.time() + 300
    while not scratch.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    time.sleep(0.3)  # land somewhere between two checkpoints
    assert proc.poll() is None, "the run finished before it could be killed; raise iterations"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert scratch.exists() and not (workdir / "models/source_only.pt").exists()
    step_at_kill = torch.load(scratch, weights_only=False)["step"]
    assert 0 < step_at_kill < 40

    res = subprocess.run(cmd, cwd=workdir, env=_env(workdir), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"resumed from {scratch.relative_to(workdir)}" in res.stderr or "resumed from" in res.stderr
    resumed = torch.load(workdir / "models/source_only.pt", weights_only=False)
    for k, v in reference["student"].items():
        assert torch.equal(v, resumed["student"][k]), k
    assert reference["history"] == resumed["history"]
    assert not scratch.exists()  # the scratch checkpoint is removed once the outputs are written
