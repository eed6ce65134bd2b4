"""DAFormer's training recipe as config keys and pure functions (Hoyer et al., CVPR 2022, §3.2–§3.4, §4.1).

Values from DAFormer's release (``configs/daformer/gta2cs_uda_warm_fdthings_rcs_croppl_a999_daformer_mitb5_s0``
and its bases ``schedules/adamw.py``, ``schedules/poly10warm.py``, ``uda/dacs_a999_fdthings.py``):

* AdamW, lr 6e-5, betas (0.9, 0.999), weight decay 0.01; the decode head at 10× the lr; no weight decay on
  parameters whose name contains ``norm`` (``paramwise_cfg.custom_keys``: head lr_mult 10, norm decay_mult 0);
* poly schedule with power 1.0 (linear decay to 0), after a linear warm-up over 1500 iterations that starts at
  ``warmup_ratio`` = 1e-6 of the scheduled lr (mmcv's ``warmup='linear'``);
* 40k iterations, batch 2 source + 2 target, 512×512 crops; EMA α 0.999, pseudo-label threshold 0.968;
* rare-class sampling with temperature 0.01, ``min_pixels`` 3000, ``min_crop_ratio`` 0.5 (:mod:`corda.rcs`);
* ImageNet feature distance weight 0.005 on the thing classes (6, 7, 11–18), label cells kept when their
  majority class covers ≥ 0.75 of the cell (:mod:`corda.losses.feature_distance`);
* pseudo-label weights zeroed on the top 15 and bottom 120 rows of Cityscapes crops (rectification artefacts
  and the ego car).

The keys are in ``corda.seg.config.TrainConfig`` (params.yaml ``train``). Defaults keep the
DeepLab-v2 recipe (SGD, no warm-up, no RCS, no feature distance, no pseudo-label crop).
"""

from __future__ import annotations

from torch import nn


def warmup_poly_factor(step: int, total: int, power: float = 1.0, warmup_iters: int = 0,
                       warmup_ratio: float = 1e-6) -> float:
    """The lr multiplier at ``step`` (0-based): poly decay, scaled by a linear warm-up at the start.

    poly(s) = (1 − s/total)^power (DAFormer: power 1.0, min lr 0). During the warm-up (s < warmup_iters) mmcv's
    linear rule multiplies it by 1 − (1 − s/warmup_iters)·(1 − warmup_ratio), rising from ``warmup_ratio`` at
    s = 0 to 1 at s = warmup_iters, where it meets the undisturbed poly curve.
    """
    from corda.engine import poly_lr

    return poly_lr(1.0, step, total, power, warmup_iters, warmup_ratio)


def adamw_param_groups(model: nn.Module, lr: float, weight_decay: float, head_lr_mult: float = 10.0,
                       no_decay_norm: bool = True) -> list[dict]:
    """AdamW groups as DAFormer's ``paramwise_cfg``: encoder at ``lr``, everything else (decoder, CorDA heads)
    at ``head_lr_mult·lr``; encoder parameters named ``*norm*`` without weight decay when ``no_decay_norm``.

    ``model.backbone`` is the encoder. Each group carries ``lr_mult`` (as
    :func:`corda.models.corda_net.param_groups`) so the loop sets ``lr = base · lr_mult · factor``. Frozen
    parameters are left out; empty groups are dropped.
    """
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    enc_decay, enc_no_decay, heads = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) not in backbone_ids:
            heads.append(p)
        elif no_decay_norm and "norm" in name:
            enc_no_decay.append(p)
        else:
            enc_decay.append(p)
    groups = [
        {"params": enc_decay, "lr": lr, "lr_mult": 1.0, "weight_decay": weight_decay},
        {"params": enc_no_decay, "lr": lr, "lr_mult": 1.0, "weight_decay": 0.0},
        {"params": heads, "lr": lr * head_lr_mult, "lr_mult": head_lr_mult, "weight_decay": weight_decay},
    ]
    return [g for g in groups if g["params"]]
