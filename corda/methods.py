"""The methods the paper compares, and its ablations, as one table (method.md §3, §4, §7).

Each row says what one training method does; the training step (:func:`corda.seg.step.train_step`), the
run loop (:mod:`corda.seg.run`) and the stages read these fields instead of testing method names.
An ablation is one more row.

The convention: a row says *what* a method is (which networks, batches and loss terms); a params key is a
numeric knob of it (``train.lambda_depth``). A stage turns its ``--method`` name into the row once
(:func:`get_method`) and passes the row on; the library's functions take rows, not names. The saved model
records the row's name (``method`` in ``models/<name>.pt``, :mod:`corda.seg.model_file`).

========================  ======  =======  ======  ======  =============  ======  =====  ========
name                      depth   teacher  source  target  target labels  depth   ω      feature
                          heads            batch   batch                  losses         exchange
========================  ======  =======  ======  ======  =============  ======  =====  ========
source_only               yes     no       yes     no      none           no      no     yes
dacs                      no      yes      yes     yes     teacher        no      no     yes
corda                     yes     yes      yes     yes     teacher        yes     yes    yes
oracle                    yes     no       no      yes     ground_truth   no      no     yes
self_train                yes     no       yes     yes     exported       yes     no     yes
corda_no_omega            yes     yes      yes     yes     teacher        yes     no     yes
corda_no_exchange         yes     yes      yes     yes     teacher        yes     yes    no
========================  ======  =======  ======  ======  =============  ======  =====  ========

``self_train`` (the second round) has ω already folded into its exported weights, so it does not recompute
ω. ``source_only`` and ``oracle`` keep the depth heads (the network is CorDA's) but never put them in a loss.
The two ablations are ``corda`` with ``train.depth_weight: false`` and ``model.distillation: false``; those two
switches stay params because saved models record them (their ``train_config`` / ``model_config``), and a
switch set to false is equivalent to the row.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from corda.errors import ConfigError

TargetLabels = Literal["none", "ground_truth", "teacher", "exported"]


@dataclass(frozen=True)
class Method:
    """One training method: which networks, batches and loss terms it uses."""

    name: str
    depth_heads: bool  # the network has depth decoders (False: a ``depth=False`` network, DACS)
    teacher: bool  # an EMA teacher is trained alongside the student (and labels the target batch)
    source_batch: bool  # a labelled source batch is drawn every step
    target_batch: bool  # a target batch is drawn every step
    target_labels: TargetLabels  # none | ground_truth (oracle) | teacher (EMA pseudo-labels) | exported (files)
    depth_losses: bool  # the BerHu depth terms are in the loss (when the network has depth heads)
    omega: bool  # the mixed CE is weighted by the depth-discrepancy ω (§4; also gated by train.depth_weight)
    feature_exchange: bool = True  # the task-feature correlation (§1.3; also gated by model.distillation)

    @property
    def mixes(self) -> bool:
        """ClassMix of source onto target with pseudo-labels (§3.4–3.8)."""
        return self.target_labels in ("teacher", "exported")

    @property
    def target_ground_truth(self) -> bool:
        """The target batch carries its ground-truth labels (the oracle)."""
        return self.target_labels == "ground_truth"

    @property
    def unused_parameters(self) -> bool:
        """Some network outputs never reach the loss (DDP must look for parameters without a gradient)."""
        return self.depth_heads and not self.depth_losses


SOURCE_ONLY = Method("source_only", depth_heads=True, teacher=False, source_batch=True, target_batch=False,
                     target_labels="none", depth_losses=False, omega=False)
DACS = Method("dacs", depth_heads=False, teacher=True, source_batch=True, target_batch=True,
              target_labels="teacher", depth_losses=False, omega=False)
CORDA = Method("corda", depth_heads=True, teacher=True, source_batch=True, target_batch=True,
               target_labels="teacher", depth_losses=True, omega=True)
ORACLE = Method("oracle", depth_heads=True, teacher=False, source_batch=False, target_batch=True,
                target_labels="ground_truth", depth_losses=False, omega=False)
SELF_TRAIN = Method("self_train", depth_heads=True, teacher=False, source_batch=True, target_batch=True,
                    target_labels="exported", depth_losses=True, omega=False)
CORDA_NO_OMEGA = dataclasses.replace(CORDA, name="corda_no_omega", omega=False)
CORDA_NO_EXCHANGE = dataclasses.replace(CORDA, name="corda_no_exchange", feature_exchange=False)

METHODS: dict[str, Method] = {m.name: m for m in (SOURCE_ONLY, DACS, CORDA, ORACLE, SELF_TRAIN, CORDA_NO_OMEGA,
                                                  CORDA_NO_EXCHANGE)}

#: The methods the ``train`` stage trains from scratch (``--method``); self_train is its own stage.
TRAINED: tuple[str, ...] = ("corda", "dacs", "source_only", "oracle", "corda_no_omega", "corda_no_exchange")

#: Model artefacts whose ``method`` is not a row: the self-training round saves ``corda_round2``.
SAVED_AS = {"corda_round2": SELF_TRAIN}


def get_method(name: str) -> Method:
    """The row of ``name``; an unknown name is a one-line ConfigError."""
    try:
        return METHODS[name]
    except KeyError:
        raise ConfigError(f"unknown training method {name!r}; one of {sorted(METHODS)}") from None


def saved_method(name: str) -> Method:
    """The row of a saved model's ``method`` (``models/<name>.pt``), which may be an artefact name."""
    return SAVED_AS.get(name) or get_method(name)
