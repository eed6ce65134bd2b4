"""The one training loop shared by depth pretraining, CorDA training and self-training.

Design (why resume is exact, and how it lives with DVC):

* Every random choice of step ``i`` (which images, which crops, ClassMix classes, augmentation) is
  drawn from generators seeded by ``(seed, i)``: batches are a pure function of the step number, so
  there is no sampler or RNG state to save and a resumed run sees exactly the batches an
  uninterrupted run would.
* DVC deletes a stage's declared outputs before it runs the stage, so resumable checkpoints cannot
  live there. The loop writes them to a scratch folder (``checkpoints/<run>/last.pt``, git- and
  DVC-ignored) every ``checkpoint_every`` steps, atomically. On start it resumes from that file when
  its *fingerprint* (config + input hashes) matches this run; otherwise it starts afresh. After the
  last step the stage writes its declared outputs and the scratch checkpoint is removed.
* A NaN/Inf in any loss term stops the run with an error naming the step and the term (the last
  good checkpoint is kept), or, with ``nan_policy="skip"``, skips that step and counts it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from corda.errors import CordaError
from corda.io import remove_dead_temporaries, save_torch

log = logging.getLogger(__name__)


class NonFiniteLoss(CordaError):
    """A loss term became NaN or Inf."""


def fingerprint(obj: Any) -> str:
    """A stable short hash of a JSON-serialisable object (configs, input hashes)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 63-bit seed for the random draws of one step (and one stream within it)."""
    return int(np.random.SeedSequence([seed, step, stream]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def step_generator(seed: int, step: int, stream: int = 0, device: torch.device | str = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(step_seed(seed, step, stream))
    return g


def batch_keys(n: int, batch: int, seed: int, step: int) -> list[tuple[int, int]]:
    """Dataset keys ``(index, draw)`` of step ``step``: epoch-wise permutations of ``range(n)``.

    Consecutive steps walk through a fresh permutation per epoch, so every image is seen once per
    epoch; ``draw`` (the global sample position) seeds the item's random crop.
    """
    keys = []
    for k in range(batch):
        pos = step * batch + k
        epoch, j = divmod(pos, n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        keys.append((int(perm[j]), pos))
    return keys


def poly_lr(base: float, step: int, total: int, power: float = 0.9, warmup_iters: int = 0,
            warmup_ratio: float = 1e-6) -> float:
    """Poly decay (method.md §5): base · (1 − step/total)^power, set at the start of every step.

    With ``warmup_iters`` > 0 (DAFormer's recipe, :mod:`corda.recipe`) the factor is scaled during the first
    steps by mmcv's linear warm-up 1 − (1 − step/warmup_iters)·(1 − warmup_ratio), rising from ``warmup_ratio``
    at step 0 to 1 at ``warmup_iters``, where it meets the undisturbed poly curve.
    """
    factor = (1.0 - step / max(total, 1)) ** power
    if step < warmup_iters:
        factor *= 1.0 - (1.0 - step / warmup_iters) * (1.0 - warmup_ratio)
    return base * factor


def check_terms(terms: Mapping[str, Any]) -> tuple[list[str], dict[str, torch.Tensor]]:
    """The names of a step's non-finite tensor terms, and its detached one-element terms to log.

    One host-device sync: each term's finiteness is reduced on its device and the flags are stacked, so a GPU
    step waits once instead of once per term (a sync drains the launch queue); the logged terms stay on the
    device until a log step (:func:`_mean`). Only a failing step looks at the terms one by one, to name them.
    """
    ok = {k: torch.isfinite(v).all() for k, v in terms.items() if torch.is_tensor(v)}
    bad = [] if not ok or bool(torch.stack(list(ok.values())).all()) else [k for k, f in ok.items() if not f]
    return bad, {k: v.detach() for k, v in terms.items() if torch.is_tensor(v) and v.numel() == 1}


def _mean(values: list[torch.Tensor]) -> float:
    """The mean of logged 0-dim tensors, in float64 as ``np.mean`` of their Python floats (one transfer)."""
    return float(np.mean(torch.stack([v.reshape(()) for v in values]).double().cpu().numpy()))


@dataclass
class LoopState:
    step: int = 0
    skipped: int = 0


class Trainer:
    """Runs a step function (:meth:`run`) for ``iterations`` steps with checkpoints, resume, logging and NaN checks.

    Args:
        modules: every module whose state belongs in a checkpoint (student, teacher, pose net, ...).
        optimizer: owns the trainable parameters; its groups may carry an ``lr_mult`` entry.
        lr_at: the base learning rate of a step; group lr = base · group["lr_mult"].
        scratch: the scratch checkpoint file (outside DVC's outputs).
        fingerprint: identifies the run; a scratch checkpoint with another fingerprint is ignored.
        eval_fn: ``eval_fn(step) -> dict[str, float]``, called every ``eval_every`` steps and at the end.
        reduce_terms: maps a step's terms to the values that are checked for NaN and logged (data-parallel
            runs average them over the ranks, so every rank takes the same stop/skip decision); the
            ``"loss"`` that is back-propagated is always the step function's own. None = the terms themselves.
        grad_clip: clip the total gradient norm of the optimised parameters to this value (None = off); the
            norm before clipping is logged as ``grad_norm``.
        write_checkpoints: False on the non-zero ranks of a data-parallel run (only rank 0 writes).
    """

    def __init__(self, *, modules: Mapping[str, nn.Module], optimizer: torch.optim.Optimizer,
                 iterations: int, lr_at: Callable[[int], float], scratch: Path, fingerprint: str,
                 checkpoint_every: int = 500,
                 log_every: int = 25, eval_fn: Callable[[int], dict[str, float]] | None = None,
                 eval_every: int = 0, nan_policy: str = "stop", progress: Callable[[Iterable, int, str], Iterable] | None = None,
                 desc: str = "training", grad_clip: float | None = None,
                 reduce_terms: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None,
                 write_checkpoints: bool = True):
        self.modules = dict(modules)
        self.optimizer = optimizer
        self.iterations = iterations
        self.lr_at = lr_at
        self.scratch = Path(scratch)
        self.fp = fingerprint
        self.checkpoint_every = checkpoint_every
        self.log_every = log_every
        self.eval_fn = eval_fn
        self.eval_every = eval_every
        if nan_policy not in ("stop", "skip"):
            raise ValueError(f"nan_policy must be 'stop' or 'skip', got {nan_policy!r}")
        self.nan_policy = nan_policy
        self.progress = progress or (lambda it, total, desc: it)
        self.desc = desc
        self.grad_clip = grad_clip
        self.reduce_terms = reduce_terms
        self.write_checkpoints = write_checkpoints
        self.state = LoopState()
        self.history: list[dict[str, float]] = []
        self._resume_checked = False

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {
            "fingerprint": self.fp,
            "step": self.state.step,
            "skipped": self.state.skipped,
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizer": self.optimizer.state_dict(),
            "history": self.history,
        }

    def save_scratch(self) -> None:
        if not self.write_checkpoints:
            return
        save_torch(self.state_dict(), self.scratch)

    def try_resume(self) -> bool:
        """Load the scratch checkpoint if it belongs to this run; returns whether it resumed."""
        self._resume_checked = True
        if not self.scratch.is_file():
            return False
        try:
            ck = torch.load(self.scratch, map_location="cpu", weights_only=False)
        except Exception as exc:  # a corrupt scratch file: start afresh rather than fail
            log.warning("ignoring unreadable checkpoint %s (%s)", self.scratch, exc)
            return False
        if ck.get("fingerprint") != self.fp:
            log.info("checkpoint %s belongs to another configuration; starting afresh", self.scratch)
            return False
        for k, m in self.modules.items():
            m.load_state_dict(ck["modules"][k])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.state = LoopState(step=ck["step"], skipped=ck.get("skipped", 0))
        self.history = ck.get("history", [])
        log.info("resumed from %s at step %d/%d", self.scratch, self.state.step, self.iterations)
        return True

    def write_curves(self, directory: str | Path) -> None:
        """The history as dvclive curves in ``directory`` (:func:`write_dvclive`)."""
        write_dvclive(self.history, directory)

    def discard_scratch(self) -> None:
        if self.write_checkpoints:
            self.scratch.unlink(missing_ok=True)
            remove_dead_temporaries(self.scratch.parent)  # a scratch save cut short by a kill -9

    # ---------------------------------------------------------------- loop
    def _set_lr(self, step: int) -> float:
        base = self.lr_at(step)
        for g in self.optimizer.param_groups:
            g["lr"] = base * g.get("lr_mult", 1.0)
        return base

    def run(self, step_fn: Callable[[int], dict[str, torch.Tensor]],
            after_step: Callable[[int], None] | None = None) -> list[dict[str, float]]:
        """Train to ``iterations``; returns the logged history (one dict per logged step).

        Args:
            step_fn: ``step_fn(step) -> dict[str, Tensor]`` returning named loss terms; ``"loss"`` is the total
                to back-propagate, the other entries are logged.
            after_step: called after the optimizer step (the EMA teacher update).
        """
        if not self._resume_checked:
            self.try_resume()
        start_step = self.state.step
        for m in self.modules.values():
            m.train()
        clip_params = [p for g in self.optimizer.param_groups for p in g["params"]] if self.grad_clip else []
        t0 = time.perf_counter()
        running: dict[str, list[torch.Tensor]] = {}
        for step in self.progress(range(start_step, self.iterations), self.iterations - start_step, self.desc):
            lr = self._set_lr(step)
            self.optimizer.zero_grad(set_to_none=True)
            terms = step_fn(step)
            seen = self.reduce_terms(terms) if self.reduce_terms is not None else terms
            bad, scalars = check_terms(seen)  # the loop's one host-device sync per step
            if bad:
                msg = f"step {step}: loss term '{bad[0]}' is {seen[bad[0]].detach().float().mean().item()}"
                if self.nan_policy == "stop":
                    raise NonFiniteLoss(f"{msg}; stopped (last good checkpoint kept at {self.scratch}); "
                                        "lower the learning rate or set nan_policy: skip")
                self.state.skipped += 1
                log.warning("%s; step skipped (%d so far)", msg, self.state.skipped)
            else:
                terms["loss"].backward()
                if clip_params:
                    # The norm before clipping is logged: a run heading for divergence shows it first.
                    norm = torch.nn.utils.clip_grad_norm_(clip_params, self.grad_clip)
                    running.setdefault("grad_norm", []).append(norm.detach())
                self.optimizer.step()
                if after_step is not None:
                    after_step(step)
            for k, v in scalars.items():
                running.setdefault(k, []).append(v)
            done = step + 1
            self.state.step = done
            if done % self.log_every == 0 or done == self.iterations:
                row = {"step": done, "lr": lr, **{k: _mean(v) for k, v in running.items()}}
                running = {}
                if self.eval_fn is not None and self.eval_every and (done % self.eval_every == 0 or done == self.iterations):
                    row.update(self.eval_fn(done))
                    for m in self.modules.values():
                        m.train()
                self.history.append(row)
                self._log(row)
            if self.checkpoint_every and done % self.checkpoint_every == 0 and done < self.iterations:
                self.save_scratch()
        el = time.perf_counter() - t0
        log.info("%s: %d steps in %.1f s (%.2f steps/s)%s", self.desc, self.iterations - start_step, el,
                 (self.iterations - start_step) / max(el, 1e-9),
                 f", {self.state.skipped} skipped" if self.state.skipped else "")
        return self.history

    def _log(self, row: dict[str, float]) -> None:
        log.info("step %d: %s", row["step"], "  ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "step"))


def write_dvclive(history: list[dict[str, float]], directory: str | Path) -> None:
    """Write the training curves with dvclive (``dvcyaml=False``: dvc.yaml declares the plots).

    The curves are replayed from the history kept in the checkpoint, so a resumed run writes
    exactly the files an uninterrupted one would (and no timestamps: stable bytes for DVC). Terms that
    are 0 at every step are left out (``dvc plots`` would draw a flat chart for each).
    """
    from dvclive import Live

    live = Live(str(directory), dvcyaml=False, save_dvc_exp=False, report=None)
    # A term that is 0 at every step is one the method does not have (dacs: the depth losses): no curve.
    absent = {k for k in {k for row in history for k in row} if all(row.get(k, 0) == 0 for row in history)}
    for row in history:
        live.step = int(row["step"])
        for k, v in row.items():
            if k != "step" and k not in absent and math.isfinite(v):
                live.log_metric(k if "/" in k else f"train/{k}", v)
    live.make_summary()
