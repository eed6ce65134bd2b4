"""Numeric precision and memory layout of segmentation training (issue #7, "Speed"; an extension of §5).

The paper trains in fp32 only (method.md §5), and ``train.precision: fp32`` is the faithful default. The
faster paths trade exactness for speed on recent GPUs:

* ``fp32``: full fp32; cuDNN and CUDA matmuls may not use TF32 (PyTorch lets cuDNN convolutions use TF32 by
  default, which is not fp32). ``cudnn.benchmark`` stays off, as in the original (§5).
* ``tf32``: fp32 tensors, but convolutions and matmuls on Ampere+ GPUs use TF32 (10-bit mantissa inputs,
  fp32 accumulation). ``cudnn.benchmark`` on: the crop size is fixed, so autotuning pays off; it makes
  kernels (and so bits) vary between runs, acceptable once fp32 exactness is given up.
* ``bf16``: the forward and the losses of a step run under ``torch.autocast(dtype=bfloat16)`` (TF32 and
  ``cudnn.benchmark`` as for ``tf32`` for what autocast leaves in fp32). The network outputs are cast to
  fp32 before the cross-entropies, softmax, BerHu and ω (:mod:`corda.seg.step`), weights, gradients and
  optimizer state stay fp32 and backward runs outside autocast. bf16 has fp32's exponent range, so no loss
  scaling is needed.

``channels_last`` (NHWC) puts the networks and the input images in ``torch.channels_last``: tensor-core
convolutions want NHWC, so cuDNN otherwise transposes around every convolution.

``compile`` (``train.compile``) hands the student's and the teacher's forward to ``torch.compile`` (in place,
:meth:`torch.nn.Module.compile`, so state-dict keys, checkpoints, the EMA update and DDP see the plain
modules). ``default`` fuses element-wise work around the convolutions; ``reduce-overhead`` adds CUDA graphs
against the launch overhead that dominates a batch-2 step; ``max-autotune`` also benchmarks kernels. The
first steps pay the compilation (minutes for ResNet-101), a new input shape (evaluation's full images)
compiles once more. Only ``default`` was exercised here (CPU, inductor); the GPU modes are unmeasured.

On the CPU the TF32 and cuDNN switches do nothing. bf16 autocast runs oneDNN's bf16 kernels where the CPU has
AVX512-BF16 or AMX: there a step of the embedded default is 1.5-1.8x faster than fp32 (issue 17,
``benchmarks/default_step.py``), which is why the embedded default uses it. Without them bf16 is emulated and can
be slower than fp32; :func:`configure_backends` then warns (it never switches the precision itself: the choice
changes float results, so it stays the params' decision).
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, ContextManager

import torch

if TYPE_CHECKING:
    from corda.seg.config import CompileMode, Precision

log = logging.getLogger(__name__)


def configure_backends(precision: Precision, device: torch.device) -> None:
    """Set the process-wide TF32 and cuDNN switches for ``precision`` (CUDA only); on a CPU without native bf16,
    warn that ``bf16`` is emulated."""
    if precision not in ("fp32", "tf32", "bf16"):
        raise ValueError(f"precision must be fp32, tf32 or bf16, got {precision!r}")
    if device.type == "cpu" and precision == "bf16" and not cpu_has_native_bf16():
        log.warning("train.precision bf16 on a CPU without AVX512-BF16 or AMX runs emulated and may be slower than "
                    "fp32: set train.precision: fp32 for speed (results then differ in float rounding)")
    if device.type != "cuda":
        return
    fast = precision != "fp32"
    torch.backends.cuda.matmul.allow_tf32 = fast
    torch.backends.cudnn.allow_tf32 = fast
    torch.backends.cudnn.benchmark = fast
    if fast:
        torch.backends.cudnn.deterministic = False
    log.info("precision %s: TF32 %s, cudnn.benchmark %s", precision, "on" if fast else "off",
             "on" if fast else "off")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); True where torch cannot tell."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [p for p in probes if p is not None]
    return not probes or any(p() for p in probes)


def autocast(precision: Precision, device: torch.device) -> ContextManager:
    """The context for a step's forward + losses: bf16 autocast, or nothing at all for fp32/tf32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def to_layout(batch: dict, channels_last: bool) -> dict:
    """``batch`` with its 4-D floating-point tensors (images, depth) in channels_last; unchanged if False."""
    if not channels_last:
        return batch
    return {k: (v.contiguous(memory_format=torch.channels_last)
                if torch.is_tensor(v) and v.dim() == 4 and v.is_floating_point() else v)
            for k, v in batch.items()}


def compile_networks(mode: CompileMode, *modules: torch.nn.Module | None) -> None:
    """``torch.compile`` the forward of each module in place (``mode`` "eager": nothing; None entries skipped)."""
    if mode == "eager":
        return
    for m in modules:
        if m is not None:
            m.compile(mode=mode)
    log.info("torch.compile mode %s: the first steps include compilation", mode)
