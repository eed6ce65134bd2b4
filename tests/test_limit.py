"""benchmarks/limit.py (issue 30, item 1): its --quick run on a tiny config gives the one table of ratios, with
every part present and FLOPs actually counted."""

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY = ["--quick", "--threads", "1", "--matmul", "64", "--set", "train.crop_hw=[32,32]", "train.batch_source=1",
        "train.batch_target=1", "train.precision=fp32", "model.decoder_channels=16", "model.task_channels=8",
        "model.bottleneck=8"]


def test_quick_limit_table(tmp_path, capsys):
    from benchmarks import limit

    out = tmp_path / "limit.json"
    res = limit.main(TINY + ["--params", str(ROOT / "params.yaml"), "--out", str(out)])
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["table"] == res["table"] and res["table"] in printed
    # Part 1: a positive peak per precision, and the network's own 3x3 conv shapes were found by the hooks.
    for name in ("fp32", "bf16"):
        assert res["peak"][name]["peak"] > 0 and res["peak"][name]["conv_mix"] > 0
    assert res["peak"]["per_shape"] and all(s["weight"][2:] == [3, 3] for s in res["peak"]["per_shape"])
    # Part 2: every method's step counted FLOPs (> 0) and was timed; DA methods cost more than source-only.
    assert set(res["methods"]) == set(limit.METHODS)
    for m in res["methods"].values():
        assert m["gflop"] > 0 and m["ms"] > 0 and m["gflops"] > 0
    assert res["methods"]["corda"]["gflop"] > res["methods"]["source_only"]["gflop"]
    # Part 3: the groups cover the step's self CPU time; convs and BatchNorm show up; ops were counted.
    share = res["profile"]["percent_self_cpu"]
    assert abs(sum(share.values()) - 100) < 1e-6
    assert share[limit.COMPUTE] > 0 and share["batch_norm"] > 0 and share["optimizer+EMA"] > 0
    # ...and the labelled library functions (ClassMix, jitter, losses) got their own ops' time.
    assert share["mixing"] > 0 and share["colour jitter/blur"] > 0 and share["losses"] > 0
    assert res["profile"]["ops_per_step"] > 100
    # The table: a markdown table, one row per method step, each with a numeric ratio.
    rows = [line for line in res["table"].splitlines() if line.startswith("| step |")]
    assert len(rows) == len(limit.METHODS) + 1  # + the corda step on one thread
    assert all(re.fullmatch(r"\d+\.\d+", r.split("|")[5].strip()) for r in rows), rows
    assert any(line.startswith("| corda profile | matmul/conv") for line in res["table"].splitlines())


def test_op_groups():
    """The name rules put each kind of op in its group (upsample_bilinear2d is no matmul despite 'linear')."""
    from benchmarks.limit import COMPUTE, op_group

    for name in ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_slow_conv2d_forward",
                 "aten::addmm", "aten::mm", "aten::bmm", "aten::linear"):
        assert op_group(name) == COMPUTE, name
    assert op_group("aten::upsample_bilinear2d") == op_group("aten::upsample_bilinear2d_backward") == "upsample"
    assert op_group("aten::native_batch_norm_backward") == "batch_norm"
    assert op_group("aten::_foreach_mul_") == op_group("aten::_fused_adamw_") == "optimizer+EMA"
    assert op_group("aten::nll_loss2d_forward") == "losses"
    assert op_group("aten::copy_") == "copies"
    assert op_group("aten::empty") is None
