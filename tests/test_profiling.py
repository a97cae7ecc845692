"""Parameter and MAC counts: Table 1 of the supplementary, and the counter against fvcore."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fapn.models import realtime_fapn
from fapn.profiling import TABLE1, count_macs, count_parameters, profile_model
from fapn.profiling.table1 import GMACS_TOLERANCE, PARAMS_TOLERANCE_M, TABLE1_INPUT_SHAPE

# Our exact counts (ResNet-18, 19 classes); the paper rounds to 0.1M.
EXPECTED_PARAMS = {"fpn": 11_366_675, "fpn+fam": 12_225_475, "fpn+fam+fsm": 12_569_155, "fapn": 12_634_947}


@pytest.mark.parametrize("neck", list(TABLE1))
def test_table1_row(neck: str) -> None:
    _, _, paper_params_m, paper_gflops = TABLE1[neck]
    complexity = profile_model(realtime_fapn(backbone="resnet18", num_classes=19, neck=neck), TABLE1_INPUT_SHAPE)
    assert complexity.params == EXPECTED_PARAMS[neck]
    assert abs(complexity.params_m - paper_params_m) <= PARAMS_TOLERANCE_M
    assert abs(complexity.gmacs_paper - paper_gflops) <= GMACS_TOLERANCE, complexity


def test_fam_costs_in_both_conventions() -> None:
    """Two FAMs at strides 16 and 8 of 768x1536: offset 1x1 + offset/mask 3x3 in the paper's convention,
    plus the deformable conv's product, sampling and mask in full."""
    fpn = profile_model(realtime_fapn(neck="fpn"))
    fam = profile_model(realtime_fapn(neck="fpn+fam"))
    pixels = 48 * 96 + 96 * 192
    c = 128
    paper_extra = pixels * (2 * c * c + c * 9 * 3 * 8 * 9)
    deform = pixels * (c * c * 9 + c * 9 * 5)
    assert fam.macs_paper - fpn.macs_paper == paper_extra
    assert fam.macs_full - fam.macs_paper == deform
    assert fpn.macs_full == fpn.macs_paper
    assert fam.params - fpn.params == 2 * 429_400


def _conv_only_model() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.Conv2d(16, 32, 5, padding=2, bias=False),
        nn.Conv2d(32, 32, 3, padding=2, dilation=2, groups=4),
        nn.Conv2d(32, 8, 1),
    ).eval()


def test_counter_matches_fvcore_on_a_conv_only_model() -> None:
    fvcore = pytest.importorskip("fvcore.nn")
    model, x = _conv_only_model(), torch.randn(2, 3, 37, 45)
    expected = fvcore.FlopCountAnalysis(model, x).unsupported_ops_warnings(False).total()
    assert count_macs(model, x) == expected
    by_hand = 2 * (16 * 3 * 9 * 19 * 23 + 32 * 16 * 25 * 19 * 23 + 32 * 8 * 9 * 19 * 23 + 8 * 32 * 19 * 23)
    assert expected == by_hand


def test_counter_matches_fvcore_on_the_fpn_model() -> None:
    """BN, upsampling and adaptive pooling too: the real-time FPN and FSM variants, whole."""
    fvcore = pytest.importorskip("fvcore.nn")
    for neck in ["fpn"]:
        model, x = realtime_fapn(neck=neck, num_classes=5).eval(), torch.randn(1, 3, 64, 96)
        expected = fvcore.FlopCountAnalysis(model, x).unsupported_ops_warnings(False).total()
        assert count_macs(model, x) == expected
        assert profile_model(model, tuple(x.shape)).macs_paper == expected


def test_meta_and_real_runs_agree() -> None:
    model = realtime_fapn(neck="fapn", num_classes=3)
    assert profile_model(model, (1, 3, 96, 128), on_meta=True) == profile_model(model, (1, 3, 96, 128), on_meta=False)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


def test_profile_cli_table1(capsys: pytest.CaptureFixture[str]) -> None:
    from fapn.cli.main import main

    assert main(["profile", "--table1"]) == 0
    out = capsys.readouterr().out
    assert "All rows match." in out and out.count(" yes") == 4
