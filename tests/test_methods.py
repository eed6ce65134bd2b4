"""The table of methods (corda.methods): the paper's comparison in one place."""

import pytest

from corda.errors import ConfigError
from corda.methods import METHODS, TRAINED, get_method, saved_method


def test_rows_say_what_the_paper_compares():
    assert not get_method("dacs").depth_heads and get_method("dacs").teacher
    assert get_method("corda").omega and get_method("corda").depth_losses
    assert get_method("oracle").target_ground_truth and not get_method("oracle").source_batch
    assert not get_method("source_only").target_batch and get_method("source_only").unused_parameters
    assert get_method("self_train").target_labels == "exported" and not get_method("self_train").teacher
    assert set(TRAINED) <= set(METHODS) and "self_train" not in TRAINED


def test_ablations_are_corda_with_one_switch_off():
    corda = get_method("corda")
    for name, switch in (("corda_no_omega", "omega"), ("corda_no_exchange", "feature_exchange")):
        row = get_method(name)
        differ = {k for k in corda.__dataclass_fields__ if getattr(row, k) != getattr(corda, k)}
        assert differ == {"name", switch}


def test_unknown_method_is_one_line_error():
    with pytest.raises(ConfigError, match="unknown training method 'dac'"):
        get_method("dac")
    assert saved_method("corda_round2").name == "self_train"


def test_ablation_rows_build_the_ablated_network():
    from corda.seg.model_file import build_seg_model

    kw = dict(backbone="resnet18", output_stride=16, pretrained=None)
    assert build_seg_model("dacs", **kw).depth is False
    assert build_seg_model("corda_no_exchange", **kw).distillation is False
    assert build_seg_model("corda", **kw).distillation is True
