"""Typed params sections: unknown, mistyped and out-of-range keys are errors naming the key."""

import dataclasses
from typing import Literal

import pytest

from corda.config import field, from_mapping
from corda.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Inner:
    a: int = field(1, min=0)


@dataclasses.dataclass(frozen=True)
class Cfg:
    lambda_depth: float = field(0.01, min=0)
    iterations: int = field(10, min=1)
    mode: Literal["stereo", "mono"] = "stereo"
    crop: tuple[int, int] = (8, 8)
    inner: Inner = Inner()


@pytest.mark.parametrize("data, key", [
    ({"lambda_depth": "abc"}, "train.lambda_depth"),
    ({"iterations": -5}, "train.iterations"),
    ({"iterations": 2.5}, "train.iterations"),
    ({"lamda_depth": 0.1}, "train.lamda_depth"),
    ({"mode": "lidar"}, "train.mode"),
    ({"crop": [1, 2, 3]}, "train.crop"),
    ({"inner": {"a": -1}}, "train.inner.a"),
    ({"inner": {"b": 1}}, "train.inner.b"),
])
def test_bad_values_name_the_key(data, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        from_mapping(Cfg, data, "train")


def test_good_values_and_coercion():
    cfg = from_mapping(Cfg, {"lambda_depth": 1, "crop": [4, 6], "inner": {"a": 3}}, "train")
    assert cfg.lambda_depth == 1.0 and isinstance(cfg.lambda_depth, float)
    assert cfg.crop == (4, 6) and cfg.inner.a == 3
