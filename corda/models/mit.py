"""SegFormer's Mix Transformer (MiT) encoder, variants B0–B5, and loading of the official ImageNet weights.

Xie et al., "SegFormer: Simple and Efficient Design for Semantic Segmentation with Transformers" (NeurIPS 2021),
§3.1 and Table 6 of its appendix; DAFormer (Hoyer et al., CVPR 2022) uses MiT-B5 as its encoder.

Written here rather than taken from a library:

* timm has no MiT, and depending on ``transformers`` for one encoder would add a large dependency whose
  Segformer modules use other parameter names (``segformer.encoder.block.0.0.attention.self.query``), so the
  ``mit_b*.pth`` files that DAFormer/HRDA/MIC users already have would need a full key translation table;
* with our own modules, named as the official release names its tensors, those files load **without any key
  mapping** (only the ImageNet classifier ``head.*`` is dropped, and a ``module.``/``backbone.`` prefix is
  stripped), and a wrong file gets one clear line (:func:`load_mit_weights`).

Architecture (one stage ``i`` of four, resolutions for an H×W input):

    patch_embed{i}: overlapping conv patch merging (7×7 stride 4 for stage 1, 3×3 stride 2 after), LayerNorm
    block{i}.{j}:   x + DropPath(EfficientAttention(LN(x))),  x + DropPath(MixFFN(LN(x)))
                    attention keys/values come from a sequence shrunk by a strided conv of ratio R_i (8, 4, 2, 1)
                    MixFFN = Linear → 3×3 depthwise conv (the positional information) → GELU → Linear
    norm{i}:        LayerNorm, then the tokens are reshaped to a map (B, C_i, ⌈H/2^(i+1)⌉, ⌈W/2^(i+1)⌉)

Parameter names (what the official files contain): ``patch_embed1.proj.weight``, ``patch_embed1.norm.weight``,
``block1.0.norm1.weight``, ``block1.0.attn.q.weight``, ``block1.0.attn.kv.weight``, ``block1.0.attn.sr.weight``,
``block1.0.attn.norm.weight``, ``block1.0.attn.proj.weight``, ``block1.0.norm2.weight``,
``block1.0.mlp.fc1.weight``, ``block1.0.mlp.dwconv.dwconv.weight``, ``block1.0.mlp.fc2.weight``,
``norm1.weight`` … ``norm4.bias``, plus ``head.weight``/``head.bias`` (ImageNet classifier, unused here).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from corda.errors import CordaError
from corda.models.weights import is_tensor_dict, nested_state_dict, read_torch_file, strip_prefixes

if TYPE_CHECKING:
    from corda.seg.config import MitVariant

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class MitSpec:
    """Hyper-parameters of one MiT variant (SegFormer appendix Table 6; the official ``mit_b*`` classes)."""

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)  # spatial reduction of keys/values per stage
    mlp_ratio: int = 4


_WIDE = (64, 128, 320, 512)
MIT_SPECS: dict[str, MitSpec] = {
    "b0": MitSpec((32, 64, 160, 256), (2, 2, 2, 2)),
    "b1": MitSpec(_WIDE, (2, 2, 2, 2)),
    "b2": MitSpec(_WIDE, (3, 4, 6, 3)),
    "b3": MitSpec(_WIDE, (3, 4, 18, 3)),
    "b4": MitSpec(_WIDE, (3, 8, 27, 3)),
    "b5": MitSpec(_WIDE, (3, 6, 40, 3)),
}

# The official code builds the block and stage-end norms with eps 1e-6, but the patch-embedding norm and the
# key/value reduction norm with PyTorch's default 1e-5; kept so that the ImageNet weights behave as trained.
_BLOCK_EPS = 1e-6


def _tokens_to_map(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, h·w, C) tokens → (B, C, h, w) map."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)


class PatchEmbed(nn.Module):
    """Overlapping patch merging: conv (kernel k, stride s, padding k//2) → tokens → LayerNorm.

    Forward: (B, C_in, H, W) → tokens (B, ⌈H/s⌉·⌈W/s⌉, C_out) and the map size (⌈H/s⌉, ⌈W/s⌉).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(out_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a sequence shortened by ``sr_ratio``² (SegFormer
    §3.1 "Efficient Self-Attn"): a ``sr_ratio``×``sr_ratio`` strided conv + LayerNorm on the token map.

    Forward: tokens (B, N, C) with N = h·w → (B, N, C).
    """

    def __init__(self, dim: int, num_heads: int, sr_ratio: int):
        super().__init__()
        if dim % num_heads:
            raise CordaError(f"MiT: width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)  # keys then values, one matrix (official layout)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        heads, d = self.num_heads, c // self.num_heads
        q = self.q(x).view(b, n, heads, d).transpose(1, 2)  # (B, heads, N, d)
        src = x
        if self.sr_ratio > 1:
            src = self.norm(self.sr(_tokens_to_map(x, h, w)).flatten(2).transpose(1, 2))
        k, v = self.kv(src).view(b, -1, 2, heads, d).permute(2, 0, 3, 1, 4)  # each (B, heads, N', d)
        # softmax(q·kᵀ/√d)·v; the fused kernel picks a memory-efficient implementation where one exists.
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class DepthwiseConv(nn.Module):
    """3×3 depthwise conv on a token sequence (the ``dwconv.dwconv`` of the official names)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.dwconv(_tokens_to_map(x, h, w)).flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    """Linear → depthwise 3×3 conv → GELU → Linear (SegFormer §3.1 "Mix-FFN": the conv leaks positional
    information, so MiT needs no positional encoding and works at any input size)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DepthwiseConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), h, w)))


class DropPath(nn.Module):
    """Stochastic depth per sample (Huang et al. 2016): in ``train()`` each sample's residual branch is zeroed
    with probability ``p`` and the kept ones scaled by 1/(1-p); identity in ``eval()`` or for p = 0.

    Same random draws as torchvision's ``StochasticDepth(p, "row")`` (one Bernoulli per sample from an
    ``empty().bernoulli_()`` of shape (B, 1, …)), so seeded runs did not change when it replaced it.
    Forward: (B, …) → (B, …).
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise CordaError(f"drop-path probability must be in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        noise = torch.empty((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        if keep > 0.0:
            noise.div_(keep)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}"


class MiTBlock(nn.Module):
    """Pre-norm transformer block with stochastic depth on both residual branches."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: int, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=_BLOCK_EPS)
        self.attn = EfficientAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=_BLOCK_EPS)
        self.mlp = MixFFN(dim, dim * mlp_ratio)
        # "row" mode drops the whole residual branch per sample, as DropPath does; identity in eval().
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class MixTransformer(nn.Module):
    """The MiT encoder: four stages at strides 4, 8, 16, 32.

    Args:
        variant: ``b0`` … ``b5`` (:data:`MIT_SPECS`).
        drop_path_rate: stochastic-depth probability of the last block, rising linearly from 0 over all blocks
            (0.1 in SegFormer and DAFormer's ``MixVisionTransformer`` default).
        in_channels: input channels (3).

    Forward: normalised images (B, 3, H, W) → four maps (B, C_i, ⌈H/s_i⌉, ⌈W/s_i⌉), s_i = 4, 8, 16, 32,
    C_i = ``out_channels[i]``.
    """

    def __init__(self, variant: MitVariant = "b5", drop_path_rate: float = 0.1, in_channels: int = 3):
        super().__init__()
        if variant not in MIT_SPECS:
            raise CordaError(f"unknown MiT variant {variant!r}; choose one of {sorted(MIT_SPECS)}")
        spec = MIT_SPECS[variant]
        self.variant = variant
        self.out_channels: tuple[int, ...] = spec.embed_dims
        total = sum(spec.depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        prev, first = in_channels, 0
        for i, (dim, depth) in enumerate(zip(spec.embed_dims, spec.depths), start=1):
            kernel, stride = (7, 4) if i == 1 else (3, 2)
            setattr(self, f"patch_embed{i}", PatchEmbed(prev, dim, kernel, stride))
            setattr(self, f"block{i}", nn.ModuleList(
                MiTBlock(dim, spec.num_heads[i - 1], spec.sr_ratios[i - 1], spec.mlp_ratio, rates[first + j])
                for j in range(depth)))
            setattr(self, f"norm{i}", nn.LayerNorm(dim, eps=_BLOCK_EPS))
            prev, first = dim, first + depth
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialisation of the official code: truncated N(0, 0.02²) linear weights, zero biases, unit
        LayerNorms, and He-style N(0, 2/fan_out) conv weights (fan_out = k²·C_out/groups)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i in range(1, 5):
            tokens, h, w = getattr(self, f"patch_embed{i}")(x)
            for block in getattr(self, f"block{i}"):
                tokens = block(tokens, h, w)
            x = _tokens_to_map(getattr(self, f"norm{i}")(tokens), h, w)
            outs.append(x)
        return outs


# Prefixes of wrapped checkpoints: DataParallel (``module.``) and mmseg/DAFormer segmentors (``backbone.``).
_STRIP_PREFIXES = ("module.", "backbone.")
# The ImageNet classifier of the official release has no counterpart in a segmentation encoder.
_DROPPED_PREFIXES = ("head.",)


def map_mit_key(key: str) -> str:
    """An official (or mmseg-wrapped) checkpoint key → our parameter name: strip the wrapper prefixes."""
    return strip_prefixes(key, _STRIP_PREFIXES)


def _examples(names: list[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


def load_mit_weights(encoder: MixTransformer, path: str | Path) -> list[str]:
    """Copy an official MiT ImageNet checkpoint (``mit_b0.pth`` … ``mit_b5.pth``) into ``encoder``; strict.

    Accepts a bare state dict or one under ``state_dict``/``model``; keys may carry ``module.`` or ``backbone.``
    (a DAFormer/mmseg segmentor checkpoint); ``head.*`` (the ImageNet classifier) is dropped. Every remaining
    key must match a parameter of the same shape and every parameter must be present, else nothing is copied.

    Returns:
        the checkpoint keys that were dropped (``head.weight``, ``head.bias``; decoder keys of a segmentor).

    Raises:
        CordaError: one line naming the file, the missing/unexpected/mis-shaped keys and the fix.
    """
    path = Path(path)
    fix = (f"use the official SegFormer ImageNet file mit_{encoder.variant}.pth, or set model.mit to the "
           f"variant the file holds")
    obj = read_torch_file(
        path, missing=(f"{path}: MiT weights not found; download mit_{encoder.variant}.pth (SegFormer ImageNet-1k "
                       "release) and put it there, or set model.pretrained"),
        unreadable=lambda exc: f"{path}: cannot read MiT weights ({' '.join(str(exc).split())[:120]}); {fix}")
    obj = nested_state_dict(obj)
    if not is_tensor_dict(obj) or not obj:
        raise CordaError(f"{path}: not a state dict of tensors; {fix}")
    ckpt: dict[str, torch.Tensor] = {}
    dropped: list[str] = []
    unwrapped = {k.removeprefix("module."): k for k in obj}
    segmentor = any(k.startswith("backbone.") for k in unwrapped)
    for bare, key in unwrapped.items():
        # In a segmentor checkpoint only the ``backbone.`` tensors are the encoder (decode_head.* is dropped).
        if bare.startswith(_DROPPED_PREFIXES) or (segmentor and not bare.startswith("backbone.")):
            dropped.append(key)
            continue
        ckpt[map_mit_key(bare)] = obj[key]
    own = encoder.state_dict()
    missing = sorted(set(own) - set(ckpt))
    unexpected = sorted(set(ckpt) - set(own))
    mis_shaped = sorted(k for k in set(own) & set(ckpt) if own[k].shape != ckpt[k].shape)
    if missing or unexpected or mis_shaped:
        parts = [f"{len(v)} {what}: {_examples(v)}" for what, v in
                 (("missing", missing), ("unexpected", unexpected), ("with another shape", mis_shaped)) if v]
        raise CordaError(f"{path}: not a MiT-{encoder.variant.upper()} checkpoint in the official key format "
                         f"({'; '.join(parts)}); {fix}")
    with torch.no_grad():
        for key, tensor in ckpt.items():
            own[key].copy_(tensor.to(own[key].dtype))
    log.info("loaded MiT-%s weights from %s (%d tensors; dropped %s)", encoder.variant.upper(), path,
             len(ckpt), _examples(dropped) or "none")
    return dropped
