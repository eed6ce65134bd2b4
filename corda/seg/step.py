"""The segmentation step: one training iteration of the CorDA network and its baselines (method.md §3, §4).

:func:`train_step` computes the named loss terms for one source batch and one target batch. It does not call
``backward``, step the optimizer or update the EMA teacher: the shared training loop does that, in this order:
``loss.backward()``, ``optimizer.step()``, :func:`corda.uda.ema_update`.

Batches (crops of size H×W):
    src: ``image`` (B, 3, H, W) RGB in [0, 1]; ``label`` (B, H, W) int64, 255 = ignore;
         ``depth`` (B, 1, H, W) CorDA inverse depth (§2.2), 1.0 = invalid.
    tgt: ``image``, ``depth`` as above; ``label`` (oracle only); ``pseudo_label`` (B, H, W) and
         ``pseudo_weight`` (B, H, W) float (self_train only).

Methods (the table in :mod:`corda.methods`; the step reads its fields, never a method name):
    corda:       §3 steps 1–8: source CE + depth, EMA-teacher pseudo-labels, ClassMix, strong augmentation,
                 mixed CE weighted by confidence × depth-discrepancy ω (§4), mixed depth with decoder routing.
    dacs:        the same without any depth loss and without ω (a ``depth=False`` model).
    source_only: source CE only. The target batch is not forwarded at all, so the BN running statistics see
                 source images only; in corda/dacs they also see mixed batches (§9.6). This is a confound of
                 the comparison, kept because "source only" means exactly that.
    oracle:      supervised CE on the target labels only (no source, no mixing).
    self_train:  corda/dacs mixing, but target labels and weights come from ``tgt["pseudo_label"]`` /
                 ``tgt["pseudo_weight"]`` (exported offline, ω already folded in); no teacher, ω not
                 recomputed.
                 Depth losses apply when the model has depth heads.
"""

from __future__ import annotations

import torch
from torch import nn

from corda.distributed import unwrap
from corda.errors import ConfigError, DataError
from corda.losses.feature_distance import ImageNetFeatureDistance
from corda.losses.segmentation import berhu, ce_mean_valid, weighted_ce
from corda.methods import get_method
from corda.models.corda_net import CorDANet
from corda.models.outputs import upsample_outputs
from corda.seg.config import TrainConfig
from corda.uda import (
    classmix_masks,
    confidence_weight,
    depth_discrepancy_weight,
    mix,
    strong_augment,
)

LOSS_KEYS = ("loss", "seg_src", "seg_src_init", "depth_src", "seg_mix", "seg_mix_init", "depth_mix",
             "seg_tgt", "seg_tgt_init")
DIAG_KEYS = ("pl_weight", "omega_mean")
OPTIONAL_KEYS = ("feat_dist",)  # DAFormer's ImageNet feature distance (L_FD, unweighted), only when on


@torch.no_grad()
def teacher_pseudo_labels(teacher: nn.Module, images: torch.Tensor,
                          use_initial: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard pseudo-labels and their confidence from a segmentation model (§3.2).

    The module's train/eval mode is left as the caller set it (the training step uses train mode, §3.2).

    Args:
        teacher: a :class:`CorDANet`.
        images: (B, 3, H, W) RGB in [0, 1], un-augmented.
        use_initial: take ``initial_S`` instead of ``S`` (the GTA warm-up, §3.2).

    Returns:
        labels (B, H, W) int64 = argmax, confidence (B, H, W) float = max softmax probability, both at the
        image resolution (bilinear, align_corners=True upsampling of the logits).
    """
    key = "initial_S" if use_initial else "S"
    logits = _upsampled(teacher(images), images.shape[-2:], (key,))[key]
    conf, labels = torch.softmax(logits, dim=1).max(dim=1)
    return labels, conf


def _upsampled(out: dict[str, torch.Tensor], size: tuple[int, int] | torch.Size,
               keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The outputs ``keys`` in fp32, upsampled to ``size`` (B, C, H, W).

    Under bf16 autocast (``train.precision: bf16``) the network returns bf16; the cross-entropies, softmax,
    BerHu and ω need fp32 (a bf16 log-softmax over 19 classes loses ~2 decimal digits), so the outputs are
    cast before upsampling. For fp32 outputs ``.float()`` returns the tensor itself: nothing changes.
    """
    return upsample_outputs(out, size, keys=keys, float32=True)


def _zero(ref: torch.Tensor) -> torch.Tensor:
    return ref.new_zeros(())


def _require(batch: dict[str, torch.Tensor], key: str, name: str, method: str) -> torch.Tensor:
    if key not in batch:
        raise DataError(f"{name} batch has no {key!r}, which method {method!r} needs")
    return batch[key]


def _supervised(out: dict[str, torch.Tensor], labels: torch.Tensor, cfg: TrainConfig,
                has_initial: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """CE(S) and CE(initial_S) over labelled pixels (§3.1); the second is 0 without an initial head."""
    seg = ce_mean_valid(out["S"], labels)
    seg_init = ce_mean_valid(out["initial_S"], labels) if has_initial else _zero(seg)
    return seg, seg_init


def train_step(
    student: nn.Module,
    teacher: nn.Module | None,
    src: dict[str, torch.Tensor],
    tgt: dict[str, torch.Tensor],
    cfg: TrainConfig,
    step: int,
    gen: torch.Generator,
    fd: ImageNetFeatureDistance | None = None,
) -> dict[str, torch.Tensor]:
    """Loss terms of one iteration (§3 steps 1–8). See the module docstring for batches and methods.

    Args:
        student: the trained :class:`CorDANet` (put in train mode here), possibly inside
            DistributedDataParallel (then the batches are this rank's slice, :mod:`corda.distributed`).
        teacher: its EMA copy (corda/dacs); unused (may be None) for the other methods.
        cfg: the ``train`` section; the step reads its loss weights and switches and ``method``.
        step: 0-based iteration (selects the teacher head during the GTA warm-up).
        gen: CPU ``torch.Generator`` for ClassMix and the strong augmentation.
        fd: DAFormer's ImageNet feature distance on the source batch (``train.fd_weight`` > 0; needs a network
            whose forward takes ``return_features``, the MiT one); adds ``fd.weight``·L_FD and logs
            ``feat_dist`` (L_FD). None = off (no term, no extra key).

    Returns:
        ``loss`` (the total, with graph) and the terms ``seg_src``, ``seg_src_init``, ``depth_src``,
        ``seg_mix``, ``seg_mix_init``, ``depth_mix``, ``seg_tgt``, ``seg_tgt_init`` (detached; 0 when a term
        does not apply), plus the diagnostics ``pl_weight`` (q, §3.3) and ``omega_mean`` (mean ω, §4).
        ``depth_src``/``depth_mix`` are the un-weighted sums of the final- and initial-head BerHu terms.
    """
    student.train()
    has_depth = bool(getattr(unwrap(student), "depth", True))
    has_initial = bool(getattr(unwrap(student), "has_initial_seg_head", True))
    method = get_method(cfg.method)
    terms: dict[str, torch.Tensor] = {}

    if method.target_labels == "ground_truth":
        x_t = tgt["image"]
        out = _upsampled(student(x_t), x_t.shape[-2:], ("S", "initial_S"))
        seg, seg_init = _supervised(out, _require(tgt, "label", "target", method.name), cfg, has_initial)
        total = seg + cfg.w_seg_initial * seg_init
        terms.update(seg_tgt=seg, seg_tgt_init=seg_init)
        return _finish(total, terms)

    # Step 1: supervised source loss.
    x_s, y_s = src["image"], src["label"]
    size = x_s.shape[-2:]
    use_depth = has_depth and method.depth_losses
    keys = ("S", "initial_S") + (("D_src", "initial_D_src") if use_depth else ())
    raw = student(x_s, return_features=True) if fd is not None else student(x_s)
    o = _upsampled(raw, size, keys)
    seg, seg_init = _supervised(o, y_s, cfg, has_initial)
    total = seg + cfg.w_seg_initial * seg_init
    terms.update(seg_src=seg, seg_src_init=seg_init)
    if fd is not None:
        # DAFormer §3.4: the student's bottleneck features stay near the ImageNet encoder's on thing classes.
        feat_dist = fd.loss(raw["encoder"], unwrap(student).normalize(x_s), y_s)
        total = total + fd.weight * feat_dist
        terms["feat_dist"] = feat_dist
    if use_depth:
        d_s = src["depth"]
        depth_src = (berhu(o["initial_D_src"], d_s, cfg.depth_invalid)
                     + berhu(o["D_src"], d_s, cfg.depth_invalid))
        total = total + cfg.lambda_depth * depth_src
        terms["depth_src"] = depth_src
    if method.target_labels == "none":
        return _finish(total, terms)

    # Steps 2–3: target pseudo-labels and their weight.
    x_t = tgt["image"]
    if method.target_labels == "exported":
        y_t = _require(tgt, "pseudo_label", "target", method.name).long()
        w_t = _require(tgt, "pseudo_weight", "target", method.name).to(x_t.dtype)
        q = w_t.mean()
        if cfg.target_ce_weight > 0:
            o_t = _upsampled(student(x_t), size, ("S", "initial_S"))
            seg_t = weighted_ce(o_t["S"], y_t, w_t)
            seg_t_init = weighted_ce(o_t["initial_S"], y_t, w_t) if has_initial else _zero(seg_t)
            total = total + cfg.target_ce_weight * (seg_t + cfg.w_seg_initial * seg_t_init)
            terms.update(seg_tgt=seg_t, seg_tgt_init=seg_t_init)
    else:
        if teacher is None:
            raise ConfigError(f"method {method.name!r} needs an EMA teacher")
        teacher.train(cfg.teacher_train_mode_bn)
        use_initial = (step < cfg.teacher_initial_until
                       and bool(getattr(teacher, "has_initial_seg_head", True)))
        y_t, conf = teacher_pseudo_labels(teacher, x_t, use_initial)
        q = confidence_weight(conf, cfg.pl_threshold)
        w_t = q.expand_as(conf)
        if cfg.pl_ignore_top or cfg.pl_ignore_bottom:
            # DAFormer's pseudo_weight_ignore_top/bottom: rectification artefacts and the ego car (Cityscapes).
            w_t = ignore_rows(w_t, cfg.pl_ignore_top, cfg.pl_ignore_bottom)

    # Steps 4–6: ClassMix (source i onto target i), then strong augmentation of the mixed image only.
    m = classmix_masks(y_s, gen, include_ignore=cfg.mix_include_ignore)
    x_m = mix(m, x_s, x_t)
    y_m = mix(m, y_s.long(), y_t.long())
    w0 = mix(m, torch.ones_like(w_t), w_t)  # pasted source pixels weigh 1 (§3.5)
    x_m = strong_augment(x_m, gen, jitter_p=cfg.jitter_p, jitter=cfg.jitter, blur_p=cfg.blur_p,
                         sigma=cfg.blur_sigma, kernel_frac=cfg.blur_kernel_frac)

    # Step 7: the student on the mixed batch.
    mix_keys = ("S", "initial_S") + (("D", "D_src", "initial_D", "initial_D_src") if use_depth else ())
    u = _upsampled(student(x_m), size, mix_keys)
    w = w0
    omega_mean = _zero(seg)
    if use_depth:
        d_m = mix(m, src["depth"], tgt["depth"])
        if method.omega and cfg.depth_weight:
            omega, mult = depth_discrepancy_weight(u["D_src"], u["D"], d_m, cfg.depth_weight_per_image,
                                                   eps=cfg.depth_weight_eps, invalid=cfg.depth_invalid)
            w = w0 * mult
            omega_mean = omega.mean()
        # Decoder routing (§2.4): source decoder inside pasted source pixels, target decoder elsewhere.
        depth_mix = (berhu(mix(m, u["D_src"], u["D"]), d_m, cfg.depth_invalid)
                     + berhu(mix(m, u["initial_D_src"], u["initial_D"]), d_m, cfg.depth_invalid))
        total = total + cfg.lambda_depth_mixed * depth_mix
        terms["depth_mix"] = depth_mix
    w = w.detach()
    seg_mix = weighted_ce(u["S"], y_m, w)
    seg_mix_init = weighted_ce(u["initial_S"], y_m, w) if has_initial else _zero(seg_mix)
    # Step 8: L = L_src + L_u + L_u2 + 0.001·(L_D + L_D2).
    total = total + cfg.consistency_weight * (seg_mix + cfg.w_seg_initial * seg_mix_init)
    terms.update(seg_mix=seg_mix, seg_mix_init=seg_mix_init, pl_weight=q.detach(), omega_mean=omega_mean)
    return _finish(total, terms)


def ignore_rows(weight: torch.Tensor, top: int, bottom: int) -> torch.Tensor:
    """A copy of the (B, H, W) pseudo-label weight with its ``top`` first and ``bottom`` last rows set to 0."""
    w = weight.clone()
    if top:
        w[:, :top, :] = 0
    if bottom:
        w[:, w.shape[1] - min(bottom, w.shape[1]):, :] = 0
    return w


def _finish(total: torch.Tensor, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The fixed key set: total with graph, every other term detached, 0 where it does not apply; the
    optional terms (:data:`OPTIONAL_KEYS`) only when switched on, so a run without them logs what it always did."""
    out = {"loss": total}
    for k in LOSS_KEYS[1:] + DIAG_KEYS:
        v = terms.get(k)
        out[k] = v.detach() if v is not None else total.new_zeros(())
    for k in OPTIONAL_KEYS:
        if k in terms:
            out[k] = terms[k].detach()
    return out
