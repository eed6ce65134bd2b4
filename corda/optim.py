"""SGD with the original's repeated backbone updates (method.md §5; faithful/fixed switch).

The original's 1× parameter group comes from DeepLab's ``get_1x_lr_params_NOscale`` (shared by
AdaptSegNet, DACS and CorDA). For each of ``conv1, bn1, layer1 … layer4`` it walks that module's
``modules()`` (the module itself and every descendant) and yields each visited module's
``parameters()``, which recurse. A tensor is therefore listed once per module that encloses it, from
its own module up to the stage root: in a ResNet-101 the stem conv once, the 99 convs inside
residual blocks 3 times (stage, block, conv) and the 4 downsample convs 4 times (stage, block,
downsample Sequential, conv): 314 entries for 104 trainable tensors when the BN affines are frozen.

torch 1.7.1's ``SGD.step`` (read from its published source) loops over a group's entries and, for each,

1. ``d = grad + weight_decay · p``  (out of place, with the weight *as it is now*);
2. momentum buffer, kept in ``state[p]`` (one per tensor, so shared by its duplicates):
   ``buf = clone(d)`` the first time ever, else ``buf = momentum · buf + (1 − dampening) · d``;
3. ``p -= lr · buf``.

A tensor listed k times thus gets k such updates per step, each with the same gradient but the
current weight and the advanced buffer. :class:`RepeatedSGD` does exactly that, with the repeat
count carried per tensor (group key ``"repeats"``), instead of listing a tensor k times: newer torch
warns that duplicate parameters will become an error, and the repeat count is explicit and testable.
With every count 1 it is torch's SGD (the fixed behaviour); the pipeline then uses ``torch.optim.SGD``
itself, so the default run is unchanged.
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

import torch
from torch import nn

#: The backbone children the original's generator walks, in its order.
AUTHORS_1X_ROOTS = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")


def authors_repeat_counts(backbone: nn.Module,
                          roots: Iterable[str] = AUTHORS_1X_ROOTS) -> dict[int, int]:
    """How many times the original's 1× generator lists each trainable backbone tensor.

    Counts, over every module ``m`` reachable through ``root.modules()`` for each root, the
    trainable tensors of ``m.parameters()`` (recursive), i.e. one count per enclosing module.

    Returns:
        ``{id(tensor): k}`` for every trainable tensor under the roots (k ≥ 1).
    """
    counts: Counter[int] = Counter()
    for name in roots:
        root = getattr(backbone, name)
        for m in root.modules():
            for p in m.parameters():
                if p.requires_grad:
                    counts[id(p)] += 1
    return dict(counts)


class RepeatedSGD(torch.optim.SGD):
    """``torch.optim.SGD`` (momentum, dampening, L2 weight decay) that updates each tensor k times per step.

    Each param group may carry ``"repeats"``: a list of ints aligned with ``"params"`` (default all 1).
    A tensor with count k receives k sequential torch-1.7.1 SGD updates per :meth:`step`, exactly as if
    it were listed k times in its group (module docstring). Nesterov and ``maximize`` are not supported
    (the original uses neither). The state dict has torch's layout (``momentum_buffer`` per tensor), and
    the repeat counts travel in the param groups, so checkpoints resume as with torch's SGD.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay)
        for g in self.param_groups:
            reps = g.setdefault("repeats", [1] * len(g["params"]))
            if len(reps) != len(g["params"]) or any(int(k) < 1 for k in reps):
                raise ValueError("each group's 'repeats' must list one count ≥ 1 per parameter")

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            momentum, dampening = group["momentum"], group["dampening"]
            for p, k in zip(group["params"], group["repeats"]):
                if p.grad is None:
                    continue
                state = self.state[p]
                for _ in range(int(k)):
                    d = p.grad.add(p, alpha=wd) if wd != 0 else p.grad
                    if momentum != 0:
                        buf = state.get("momentum_buffer")
                        if buf is None:
                            buf = state["momentum_buffer"] = torch.clone(d).detach()
                        else:
                            buf.mul_(momentum).add_(d, alpha=1 - dampening)
                        d = buf
                    p.add_(d, alpha=-lr)
        return loss
