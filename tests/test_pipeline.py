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
    # The caller's PATH is not the venv's: dvc.yaml's commands name .venv/bin/python, whatever PATH holds.
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p != os.path.dirname(sys.executable))
    env = {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", "PYTHONPATH": str(cwd), "CORDA_LOG_LEVEL": "WARNING"}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    assert res.returncode == 0, f"{cmd} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory, repo_copy):
    """A copy of the repository's tracked files with the smoke params, as a fresh git repo."""
    dst = repo_copy(tmp_path_factory.mktemp("pipeline") / "repo", ROOT / "params" / "smoke.yaml")
    _run(DVC + ["repro"], dst, timeout=1200)
    return dst


@pytest.mark.slow
def test_repro_writes_every_artefact(smoke_repo):
    from corda import paths
    from corda.eval_files import MODELS, read_detail, read_eval_metrics, read_headline

    metrics = read_eval_metrics(smoke_repo)
    models = set(MODELS)
    # every model is scored twice: with its running BN statistics and with target ones (corda/adabn.py)
    assert set(metrics) == models | {f"{m}_adabn" for m in models}
    for m in metrics.values():
        assert 0.0 <= m["miou"] <= 1.0 and "road" in m["per_class"]
    depth = read_detail(smoke_repo / paths.DEPTH_METRICS)
    assert "abs_rel" in depth["target"]
    pl = read_detail(smoke_repo / paths.PSEUDO_METRICS)
    assert "auroc" in pl and "miou" in pl
    # The headline metrics: every file dvc.yaml declares as metrics, only numbers (corda.eval_files.headline_metrics).
    headline = read_headline(smoke_repo)
    declared = [next(iter(m)) for m in yaml.safe_load((smoke_repo / "dvc.yaml").read_text())["stages"]["evaluate"]["metrics"]]
    assert len(headline) == len(declared)
    for row, values in headline.items():
        assert all(isinstance(v, float) for v in values.values()), row
    assert "miou" in headline["corda"]
    # source ground truth is read in place: a record, no copy of the dataset's depth
    assert not (smoke_repo / "depth/source.h5").exists()
    for p in ("depth/source.json", "depth/target.h5", "pseudo/target.h5", "models/corda.pt", "eval/predictions.png",
              "metrics/results.md", "dvclive/train_corda/metrics.json"):
        assert (smoke_repo / p).is_file(), p
    # train.grad_clip (set in the smoke params) reaches the shared loop, which then logs the pre-clip norm.
    assert "grad_norm" in json.loads((smoke_repo / "dvclive/train_corda/metrics.json").read_text())["train"]
    # train.oracle_iterations (8 in the smoke params) is the oracle's step count; the other methods run iterations
    import torch

    ran = {m: torch.load(smoke_repo / f"models/{m}.pt", map_location="cpu", weights_only=False)
           for m in ("oracle", "corda")}
    assert [ran[m]["train_config"]["iterations"] for m in ("oracle", "corda")] == [8, 6]
    assert [ran[m]["history"][-1]["step"] for m in ("oracle", "corda")] == [8, 6]
    # every saved model records the method that trained it (round 2: the self_train row), not "corda"
    saved = {m: torch.load(smoke_repo / f"models/{m}.pt", map_location="cpu", weights_only=False)["train_config"]
             for m in ("source_only", "dacs", "oracle", "corda", "corda_round2")}
    assert {m: c["method"] for m, c in saved.items()} == {"source_only": "source_only", "dacs": "dacs",
                                                          "oracle": "oracle", "corda": "corda",
                                                          "corda_round2": "self_train"}
    lock = yaml.safe_load((smoke_repo / "dvc.lock").read_text())
    assert {"data", "depth_pretrain", "depth_maps", "train_corda", "pseudo_labels", "self_train",
            "evaluate"} <= set(lock["stages"])


@pytest.mark.slow
def test_second_repro_is_a_noop(smoke_repo):
    res = _run(DVC + ["status"], smoke_repo)
    assert "changed" not in res.stdout and "modified" not in res.stdout, res.stdout


def _stages_changed_by(smoke_repo, old: str, new: str) -> set[str]:
    """The stages `dvc status` lists once params.yaml's text ``old`` reads ``new`` (the file is restored)."""
    params = smoke_repo / "params.yaml"
    original = params.read_text()
    try:
        params.write_text(original.replace(old, new))
        assert params.read_text() != original
        return set(json.loads(_run(DVC + ["status", "--json"], smoke_repo).stdout))
    finally:
        params.write_text(original)


@pytest.mark.slow
def test_lambda_depth_reruns_only_the_corda_branch(smoke_repo):
    changed = _stages_changed_by(smoke_repo, "lambda_depth: 0.01 ", "lambda_depth: 0.05 ")
    # Only the stages that declare the key; the rest of the branch (pseudo_labels, evaluate) depends on
    # models/corda.pt, so DVC re-runs it once train_corda has. The baselines stay as they are.
    assert changed == {"train_corda", "self_train"}, changed


@pytest.mark.slow
def test_oracle_iterations_rerun_only_the_oracle(smoke_repo):
    changed = _stages_changed_by(smoke_repo, "oracle_iterations: 8 ", "oracle_iterations: 9 ")
    assert changed == {"train_oracle"}, changed


@pytest.mark.slow
def test_operational_knobs_rerun_nothing(smoke_repo):
    """Logging cadence, workers and devices (params.yaml `run`) are no stage's DVC param: `dvc status` stays clean."""
    params = smoke_repo / "params.yaml"
    original = params.read_text()
    try:
        p = yaml.safe_load(original)
        p["run"]["train"].update(log_every=1, eval_every=1, workers=3, device="cpu")
        p["run"]["depth"].update(log_every=1, checkpoint_every=1, device="cpu")
        p["run"]["data"]["workers"] = 3
        params.write_text(yaml.safe_dump(p, sort_keys=False))
        out = _run(DVC + ["status", "--json"], smoke_repo).stdout
    finally:
        params.write_text(original)
    assert json.loads(out) == {}, out


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (make test "
                    "installs it when it runs as root with apt-get)")
def test_plots_page_draws_offline_in_headless_chromium(smoke_repo, tmp_path):
    """`dvc plots show` with the committed offline template: every vega chart and every PNG draws in a
    real browser with no network (the template's footer counts them; see docs/make_plots_template.py)."""
    import re

    out = tmp_path / "dvc_plots"
    _run(DVC + ["plots", "show", "-o", str(out)], smoke_repo)
    page = (out / "index.html").read_text()
    assert "cdn.jsdelivr.net" not in page and "corda-render-check" in page
    browser = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--virtual-time-budget=20000", "--window-size=1200,2000"]
    dom = subprocess.run(browser + ["--dump-dom", (out / "index.html").as_uri()], capture_output=True, text=True,
                         timeout=180).stdout
    footer = re.search(r'<footer id="corda-render-check"[^>]*>', dom)
    assert footer, dom[-2000:]
    attrs = dict(re.findall(r'data-([a-z-]+)="(\d+)"', footer.group(0)))
    assert int(attrs["charts"]) >= 5 and attrs["drawn"] == attrs["charts"], footer.group(0)
    assert int(attrs["images"]) >= 5 and attrs["images-ok"] == attrs["images"], footer.group(0)
    # The colours vega gave each chart's series in the browser (the template's data-colours, {value: colour}):
    # the pseudo-label chart has a line per signal, and every model chart colours a model as the PNGs do.
    import html

    from corda.report import MODEL_COLOURS, SIGNAL_COLOURS

    legends = {html.unescape(t): json.loads(html.unescape(c)) for t, c in
               re.findall(r'<div[^>]* data-title="([^"]*)"[^>]* data-colours="([^"]*)"', dom)}
    pseudo = [c for t, c in legends.items() if t.startswith("Pseudo-label accuracy")]
    assert pseudo == [SIGNAL_COLOURS], legends
    by_model = {t: c for t, c in legends.items() if t.startswith(("Per-class IoU", "Target-val mIoU"))}
    assert len(by_model) == 2, legends
    for title, colours in by_model.items():
        assert colours == MODEL_COLOURS, (title, colours)
    shot = tmp_path / "page.png"
    subprocess.run(browser + [f"--screenshot={shot}", (out / "index.html").as_uri()], capture_output=True,
                   timeout=180)
    from PIL import Image

    import numpy as np

    pixels = np.asarray(Image.open(shot).convert("L"))
    assert pixels.std() > 10  # not a blank page


@pytest.mark.slow
def test_remote_push_then_a_second_clone_pulls_without_retraining(smoke_repo, tmp_path):
    """A team shares results through a DVC remote (here a local folder): push from one clone, pull
    into another, and the second clone has the trained models and nothing to re-run."""
    remote = tmp_path / "remote"
    _run(DVC + ["remote", "add", "-d", "shared", str(remote)], smoke_repo)
    _run(["git", "add", "-A"], smoke_repo)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results"], smoke_repo)
    _run(DVC + ["push"], smoke_repo)
    assert any(remote.rglob("*")), "nothing was pushed"

    clone = tmp_path / "clone"
    _run(["git", "clone", "-q", str(smoke_repo), str(clone)], tmp_path)
    assert not (clone / "models").exists()
    _run(DVC + ["pull"], clone)
    for p in ("models/corda.pt", "models/corda_round2.pt", "depth/target.h5", "pseudo/target.h5"):
        assert (clone / p).read_bytes() == (smoke_repo / p).read_bytes(), p
    status = _run(DVC + ["status"], clone).stdout
    assert "up to date" in status, status


@pytest.mark.slow
@pytest.mark.extended  # `make test-extended`: the DAFormer presets' rehearsal also runs there
def test_daformer_small_mit_runs_the_whole_pipeline(smoke_repo, tmp_path):
    """`dvc exp run -S model.architecture=daformer -S model.mit=b0 ...` re-runs every training stage and what
    follows on the MiT network with DAFormer's recipe switched on (AdamW, warm-up, rare-class sampling from the
    rcs stage's file, the ImageNet feature distance from a fixture checkpoint in the official key format, the
    pseudo-label row crop). A copy of the smoke repository, so the other tests see the DeepLab-v2 results."""
    import torch

    from corda.models.mit import MixTransformer

    repo = tmp_path / "repo"
    shutil.copytree(smoke_repo, repo, symlinks=True)
    sd = MixTransformer("b0").state_dict()  # the official mit_b0.pth key names (+ the ImageNet head)
    sd.update({"head.weight": torch.zeros(1000, 256), "head.bias": torch.zeros(1000)})
    (repo / "pretrained").mkdir()
    torch.save(sd, repo / "pretrained" / "mit_b0.pth")
    sets = ["model.architecture=daformer", "model.mit=b0", "model.decoder_channels=32",
            "model.pretrained=pretrained/mit_b0.pth", "train.optimizer=adamw", "train.lr=0.0006",
            "train.warmup_iters=2", "train.rcs_temperature=0.01", "train.rcs_min_pixels=20",
            "train.fd_weight=0.005", "train.pl_ignore_top=2", "train.pl_ignore_bottom=4",
            "train.iterations=3", "self_train.iterations=2"]  # fewer steps: the stages' start-up is the cost
    _run(DVC + ["exp", "run"] + [a for s in sets for a in ("-S", s)], repo, timeout=1200)
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert lock["stages"]["train_corda"]["params"]["params.yaml"]["model"]["architecture"] == "daformer"
    ck = torch.load(repo / "models" / "corda.pt", map_location="cpu", weights_only=False)
    assert any(k.startswith("backbone.block1") for k in ck["student"])  # the MiT encoder was trained
    from corda.eval_files import MODELS, read_eval_metrics

    metrics = read_eval_metrics(repo)
    models = set(MODELS)
    assert set(metrics) == models | {f"{m}_adabn" for m in models}  # smoke params: adabn_items 8
    # The feature distance is logged as its own loss term (in the history; dvclive drops a curve that is 0 at
    # every step, as here, where no 32×32 cell of the tiny crops is 75 % thing class).
    assert all("feat_dist" in row for row in ck["history"])
    stats = json.loads((repo / "data/rcs_class_stats.json").read_text())
    assert stats["min_pixels"] == 20 and stats["names"]
