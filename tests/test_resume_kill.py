"""kill -9 during a stage, then re-run (CPU, smoke profile).

Training stages (depth_pretrain, train, self_train) resume from their scratch checkpoint and end with
exactly the weights of an uninterrupted run; export stages (depth_maps, pseudo_labels) killed while
writing leave no HDF5 file that looks complete under its final name. After the re-run nothing hidden is left
anywhere (staging paths, atomic-write temporaries; the writers one by one: tests/test_kill_leftovers.py).
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
STEPS = 30

# A wrapper that slows every HDF5 row append, so a kill lands mid-write however small the data.
SLOW_H5 = """
import runpy, sys, time
import corda.h5io as h
_append = h.H5StreamWriter.append
def slow(self, *a, **k):
    time.sleep(0.1)
    return _append(self, *a, **k)
h.H5StreamWriter.append = slow
sys.argv = [sys.argv[1]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def _env(cwd):
    return {**os.environ, "PYTHONPATH": str(cwd), "CORDA_LOG_LEVEL": "INFO", "DVC_NO_ANALYTICS": "1"}


def _run(cwd, *args):
    res = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=_env(cwd), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    return res


N_TRAIN = 8  # images per training split (so each export writes N_TRAIN rows)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume")
    for sub in ("corda", "stages"):
        shutil.copytree(ROOT / sub, d / sub, ignore=shutil.ignore_patterns("__pycache__"))
    p = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    # Tiny images and network; long enough (STEPS, a checkpoint every 2) to be killed mid-way.
    p["data"]["procedural"].update(height=32, width=64, num_source=N_TRAIN, num_target_train=N_TRAIN,
                                   num_target_val=4)
    p["model"].update(task_channels=16, bottleneck=8)
    p["depth"].update(iterations=STEPS)
    p["run"]["depth"].update(checkpoint_every=2)
    p["train"].update(iterations=STEPS, crop_hw=[32, 32])
    p["run"]["train"].update(checkpoint_every=2, eval_every=STEPS)
    p["self_train"].update(iterations=STEPS)
    (d / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    for stage in (["stages.data"], ["stages.depth_pretrain"], ["stages.depth_maps"],
                  ["stages.train", "--method", "corda"], ["stages.pseudo_labels"]):
        _run(d, *stage)
    return d


def _kill_when(proc, ready, what):
    deadline = time.time() + 300
    while not ready() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    time.sleep(0.3)  # land somewhere after the first checkpoint / inside the write
    assert proc.poll() is None, f"the run finished before it could be killed ({what}); make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _leftovers(root):
    """Hidden files and folders anywhere under ``root``: what a killed run left (staging paths, temporaries)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*") if "__pycache__" not in p.parts)


TRAINING = {
    # stage args, scratch checkpoint, output, state key
    "depth_pretrain": (["stages.depth_pretrain"], "checkpoints/depth_pretrain/target.pt", "models/depth/target.pt",
                       "depth"),
    "train": (["stages.train", "--method", "source_only"], "checkpoints/train_source_only/last.pt",
              "models/source_only.pt", "student"),
    "self_train": (["stages.self_train"], "checkpoints/self_train/last.pt", "models/corda_round2.pt", "student"),
}


@pytest.mark.slow
# `make test` kills the train stage; the other two training stages share its resume code (corda.engine) and run
# in `make test-extended`.
@pytest.mark.parametrize("stage", [s if s == "train" else pytest.param(s, marks=pytest.mark.extended)
                                   for s in TRAINING])
def test_kill9_then_rerun_equals_uninterrupted(workdir, stage):
    args, scratch, output = TRAINING[stage][:3]
    key = TRAINING[stage][3]
    scratch, output = workdir / scratch, workdir / output
    if not output.exists():
        _run(workdir, *args)
    reference = torch.load(output, weights_only=False)
    output.unlink()

    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=workdir, env=_env(workdir),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, scratch.exists, stage)
    assert scratch.exists() and not output.exists()
    step_at_kill = torch.load(scratch, weights_only=False)["step"]
    assert 0 < step_at_kill < STEPS

    res = _run(workdir, *args)
    assert "resumed from" in res.stderr
    resumed = torch.load(output, weights_only=False)
    for k, v in reference[key].items():
        assert torch.equal(v, resumed[key][k]), k
    assert reference["history"] == resumed["history"]
    assert not scratch.exists()  # the scratch checkpoint is removed once the outputs are written
    assert _leftovers(workdir) == []


EXPORTS = {
    "depth_maps": ("stages.depth_maps", "depth", ["target.h5"], "DepthH5"),  # source ground truth: read in place
    "pseudo_labels": ("stages.pseudo_labels", "pseudo", ["target.h5"], "PseudoLabelH5"),
}


@pytest.mark.slow
@pytest.mark.parametrize("stage", list(EXPORTS))
def test_kill9_while_exporting_leaves_no_complete_looking_h5(workdir, stage):
    import corda.h5io as h5io
    from corda.errors import CordaError

    module, folder, names, reader = EXPORTS[stage]
    out = workdir / folder
    shutil.rmtree(out)
    proc = subprocess.Popen([sys.executable, "-c", SLOW_H5, module], cwd=workdir, env=_env(workdir),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # A folder output is written in its staging sibling (corda.io.staged_outputs), a file one beside it.
    def hidden():
        where = [d for d in (out, *workdir.glob(f".{folder}.staging-*")) if d.is_dir()]
        return [p for d in where for p in d.iterdir() if p.name.startswith(".") and p.is_file()]

    _kill_when(proc, lambda: bool(hidden()), stage)
    partial = hidden()
    assert partial, "killed outside a write"
    for p in partial:  # the half-written file is refused by the readers
        with pytest.raises(CordaError):
            len(getattr(h5io, reader)(p))
    for name in names:  # a file under its final name is complete (or absent)
        if (out / name).exists():
            with getattr(h5io, reader)(out / name) as f:
                assert len(f) == N_TRAIN
    assert not (out / names[-1]).exists()

    _run(workdir, module)
    for name in names:
        with getattr(h5io, reader)(out / name) as f:
            assert len(f) == N_TRAIN
    assert _leftovers(workdir) == []  # the killed run's staging paths and temporaries are gone
