"""Typed params sections: unknown, mistyped and out-of-range keys are errors naming the key."""

import dataclasses
from pathlib import Path
from typing import Literal

import pytest
import yaml

from corda.config import field, from_mapping
from corda.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


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


def test_unknown_key_suggests_the_nearest():
    with pytest.raises(ConfigError, match=r"^train\.lamda_depth: unknown key; did you mean lambda_depth\?$"):
        from_mapping(Cfg, {"lamda_depth": 0.1}, "train")
    # Nothing near: the known keys are listed instead.
    with pytest.raises(ConfigError, match=r"^train\.zzz: unknown key; known keys: crop, inner, iterations, "):
        from_mapping(Cfg, {"zzz": 1}, "train")


def test_unknown_key_hint_lists_only_keys_the_section_takes():
    """Operational keys live in run.<section> and are rejected in the section itself: the hint for train.foo does
    not list them, and a near miss of one names where it goes."""
    from corda.seg.config import TrainConfig
    from stages.common import section

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["foo"] = 1
    with pytest.raises(ConfigError) as err:
        section(params, "train", TrainConfig)
    listed = str(err.value).split("known keys: ")[1].split(", ")
    assert "lambda_depth" in listed and not set(listed) & set(TrainConfig.RUN_KEYS), listed
    del params["train"]["foo"]
    params["train"]["log_evry"] = 10
    with pytest.raises(ConfigError, match=r"^train\.log_evry: unknown key; did you mean run\.train\.log_every\?$"):
        section(params, "train", TrainConfig)


def test_internal_fields_are_not_params_keys():
    """``method`` and ``target_ce_weight`` are set by the stages: params.yaml cannot set them, and the known
    keys an error lists are only real params keys."""
    from corda.seg.config import TrainConfig

    for key in ("method", "target_ce_weight"):
        with pytest.raises(ConfigError, match=rf"^train\.{key}: unknown key"):
            from_mapping(TrainConfig, {key: "dacs" if key == "method" else 1.0}, "train")
    with pytest.raises(ConfigError) as err:
        from_mapping(TrainConfig, {"zzz": 1}, "train")
    listed = str(err.value).split("known keys: ")[1].split(", ")
    assert "lambda_depth" in listed and "grad_clip" in listed
    assert "method" not in listed and "target_ce_weight" not in listed
