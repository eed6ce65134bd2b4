"""The shared training loop: exact resume, NaN handling, deterministic batches."""

import pytest
import torch

from corda.engine import NonFiniteLoss, Trainer, batch_keys, fingerprint, poly_lr, step_generator


def _make(tmp_path, fail_at=None, nan_at=None, policy="stop", iterations=12, grad_clip=None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    def step_fn(step):
        if fail_at is not None and step == fail_at:
            raise KeyboardInterrupt("killed")
        g = step_generator(0, step)
        x = torch.randn(16, 4, generator=g)
        y = x.sum(1, keepdim=True)
        loss = ((model(x) - y) ** 2).mean()
        if nan_at is not None and step == nan_at:
            loss = loss * float("nan")
        return {"loss": loss, "mse": loss.detach()}

    tr = Trainer(modules={"model": model}, optimizer=opt, iterations=iterations,
                 lr_at=lambda s: poly_lr(0.05, s, iterations), scratch=tmp_path / "last.pt",
                 fingerprint=fingerprint({"cfg": 1}), checkpoint_every=4, log_every=2, nan_policy=policy,
                 grad_clip=grad_clip)
    tr.step = step_fn  # what run() runs
    return tr, model


def test_resume_after_kill_is_bitwise_identical(tmp_path):
    ref_tr, ref = _make(tmp_path / "a")
    ref_tr.run(ref_tr.step)
    tr, _ = _make(tmp_path / "b", fail_at=9)
    with pytest.raises(KeyboardInterrupt):
        tr.run(tr.step)
    assert (tmp_path / "b" / "last.pt").is_file()  # checkpoint of step 8 kept
    tr2, model2 = _make(tmp_path / "b")
    tr2.run(tr2.step)
    assert tr2.history[-1]["step"] == 12
    for a, b in zip(ref.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)
    assert [r["mse"] for r in tr2.history] == [r["mse"] for r in ref_tr.history]


def test_checkpoint_of_other_config_is_ignored(tmp_path):
    tr, _ = _make(tmp_path, fail_at=5)
    with pytest.raises(KeyboardInterrupt):
        tr.run(tr.step)
    tr2, _ = _make(tmp_path)
    tr2.fp = fingerprint({"cfg": 2})
    assert not tr2.try_resume()


def test_nan_stops_with_step_and_term_named_and_keeps_checkpoint(tmp_path):
    tr, _ = _make(tmp_path, nan_at=6)
    with pytest.raises(NonFiniteLoss, match=r"step 6: loss term 'loss'"):
        tr.run(tr.step)
    assert (tmp_path / "last.pt").is_file()


def test_nan_skip_policy_counts(tmp_path):
    tr, model = _make(tmp_path, nan_at=6, policy="skip")
    tr.run(tr.step)
    assert tr.state.skipped == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_grad_clip_bounds_the_update_and_logs_the_norm(tmp_path):
    def first_update(clip):
        tr, model = _make(tmp_path / str(clip), iterations=1, grad_clip=clip)
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        tr.run(tr.step)
        after = torch.cat([p.detach().flatten() for p in model.parameters()])
        return float((after - before).norm()), tr.history[-1]

    free, row = first_update(None)
    lr = poly_lr(0.05, 0, 1)  # first step: momentum buffer = gradient, so the update is lr * clipped gradient
    clipped, row_c = first_update(1e-3)
    assert "grad_norm" not in row and row_c["grad_norm"] > 1e-3
    assert clipped == pytest.approx(lr * 1e-3, rel=1e-4)
    assert free == pytest.approx(lr * row_c["grad_norm"], rel=1e-4)


def test_batch_keys_cover_each_epoch_and_depend_on_seed():
    n, b = 10, 4
    seen = [k for s in range(5) for k in batch_keys(n, b, 0, s)]  # 20 samples = 2 epochs
    assert sorted(i for i, _ in seen[:10]) == list(range(10))
    assert sorted(i for i, _ in seen[10:20]) == list(range(10))
    assert batch_keys(n, b, 0, 3) == batch_keys(n, b, 0, 3)
    assert batch_keys(n, b, 0, 3) != batch_keys(n, b, 1, 3)


def test_saved_artefacts_are_byte_identical_for_identical_content(tmp_path):
    """Model files are DVC outputs: the same weights saved twice must hash the same (torch.save to a path
    names the zip records after that path, here the random temporary name of the atomic write)."""
    from corda.io import save_torch

    state = {"w": torch.arange(12.0).reshape(3, 4), "step": 7}
    save_torch(state, tmp_path / "a.pt")
    save_torch(state, tmp_path / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    assert torch.equal(torch.load(tmp_path / "a.pt")["w"], state["w"])
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob(".*.pt"))


def test_logged_terms_are_the_mean_of_each_steps_values(tmp_path):
    """Terms stay on the device between log steps; the row still holds the float64 mean of the steps' values."""
    import numpy as np

    tr, _ = _make(tmp_path, iterations=6)
    seen, step_fn = [], tr.step

    def recording(step):
        out = step_fn(step)
        seen.append(float(out["mse"]))
        return out

    tr.step = recording
    tr.log_every = 3
    tr.run(tr.step)
    assert [r["step"] for r in tr.history] == [3, 6]
    assert [r["mse"] for r in tr.history] == [float(np.mean(seen[:3])), float(np.mean(seen[3:]))]
    assert all(type(r["mse"]) is float for r in tr.history)


def test_write_dvclive_leaves_out_terms_the_method_lacks(tmp_path):
    """A term that is 0 at every step (dacs' depth losses) gets no curve; a term that is sometimes 0 keeps it."""
    from corda.engine import write_dvclive

    history = [{"step": s, "seg_src": 1.0 / s, "depth_src": 0.0, "seg_mix": 0.0 if s == 25 else 0.5}
               for s in (25, 50, 75)]
    write_dvclive(history, tmp_path / "live")
    curves = {p.stem for p in (tmp_path / "live" / "plots" / "metrics" / "train").glob("*.tsv")}
    assert curves == {"seg_src", "seg_mix"}


def test_poly_lr_holds_the_warmup_and_is_the_plain_poly_without_it():
    from corda.recipe import warmup_poly_factor

    for s in (0, 7, 99):
        assert poly_lr(0.01, s, 100, 0.9) == 0.01 * (1.0 - s / 100) ** 0.9  # bit for bit: no warm-up branch
        assert poly_lr(0.01, s, 100, 1.0, 50, 1e-6) == 0.01 * warmup_poly_factor(s, 100, 1.0, 50, 1e-6)
    assert poly_lr(1.0, 0, 100, 1.0, 50, 1e-6) == pytest.approx(1e-6)
