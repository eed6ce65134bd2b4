"""corda.adabn: BN statistics re-estimated on target images, weights untouched (issue 17)."""

import pytest
import torch
from torch import nn

from corda.adabn import target_bn_statistics


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def test_statistics_become_the_average_over_the_target_batches():
    net = _net().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    batches = [torch.rand(5, 3, 8, 8, generator=g) * 0.3 + 0.6 for _ in range(3)]  # bright "target" images
    adapted = target_bn_statistics(net, batches)
    # The mean each BN sees is the conv output's per-channel mean; with equal batch sizes the cumulative
    # average equals the mean over all batches.
    with torch.no_grad():
        feats = torch.cat([net[0](b) for b in batches])
    torch.testing.assert_close(adapted[1].running_mean, feats.mean((0, 2, 3)), rtol=1e-5, atol=1e-6)
    # the input model and every weight are untouched; the copy is in eval mode with the old momentum
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    for k in ("0.weight", "1.weight", "1.bias", "3.weight"):
        assert torch.equal(adapted.state_dict()[k], before[k]), k
    assert not torch.allclose(adapted[1].running_mean, before["1.running_mean"])
    assert not adapted.training and adapted[1].momentum == net[1].momentum


def test_no_batches_or_no_batchnorm_is_an_error():
    with pytest.raises(ValueError, match="no target images"):
        target_bn_statistics(_net(), [])
    with pytest.raises(ValueError, match="no BatchNorm"):
        target_bn_statistics(nn.Conv2d(3, 3, 1), [torch.zeros(1, 3, 4, 4)])
