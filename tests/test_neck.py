"""The FaPN neck against torchvision's FeaturePyramidNetwork and the authors' structure."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from fapn import FaPN
from fapn.layers import FeatureAlignModule, FeatureSelectionModule, FPNMerge

IN_CHANNELS = [16, 32, 64, 128]


def _features(batch: int = 2, size: tuple[int, int] = (40, 52)) -> OrderedDict[str, torch.Tensor]:
    h, w = size
    return OrderedDict(
        (name, torch.randn(batch, c, -(-h // 2**i), -(-w // 2**i)))
        for i, (name, c) in enumerate(zip(["c2", "c3", "c4", "c5"], IN_CHANNELS))
    )


@pytest.mark.parametrize("extra", [None, "maxpool", "p6p7"])
def test_same_names_and_shapes_as_torchvision_fpn(extra: str | None) -> None:
    def blocks():  # type: ignore[no-untyped-def]
        return {None: None, "maxpool": LastLevelMaxPool(), "p6p7": LastLevelP6P7(24, 24)}[extra]

    x = _features()
    ours = FaPN(IN_CHANNELS, 24, extra_blocks=blocks())(x)
    theirs = FeaturePyramidNetwork(IN_CHANNELS, 24, extra_blocks=blocks())(x)
    assert list(ours) == list(theirs)
    assert [v.shape for v in ours.values()] == [v.shape for v in theirs.values()]
    assert all(torch.isfinite(v).all() for v in ours.values())


def test_with_fam_and_fsm_off_the_neck_is_torchvision_fpn() -> None:
    """Exact equivalence: FaPN(feature_alignment=False, feature_selection=False, upsample_mode="nearest",
    top_output_conv=True) with torchvision's FPN weights computes torchvision's FPN outputs."""
    torch.manual_seed(0)
    fpn = FeaturePyramidNetwork(IN_CHANNELS, 24, extra_blocks=LastLevelMaxPool()).double()
    neck = FaPN(
        IN_CHANNELS,
        24,
        extra_blocks=LastLevelMaxPool(),
        feature_alignment=False,
        feature_selection=False,
        upsample_mode="nearest",
        top_output_conv=True,
    ).double()
    for p in fpn.parameters():
        torch.nn.init.normal_(p, std=0.1)  # biases too: torchvision zero-inits them
    with torch.no_grad():
        neck.top_lateral.weight.copy_(fpn.inner_blocks[-1][0].weight)
        neck.top_lateral.bias.copy_(fpn.inner_blocks[-1][0].bias)
        assert neck.top_output is not None
        neck.top_output.weight.copy_(fpn.layer_blocks[-1][0].weight)
        neck.top_output.bias.copy_(fpn.layer_blocks[-1][0].bias)
        for i in range(len(IN_CHANNELS) - 1):
            neck.merges[i].lateral.weight.copy_(fpn.inner_blocks[i][0].weight)
            neck.merges[i].lateral.bias.copy_(fpn.inner_blocks[i][0].bias)
            neck.output_convs[i].weight.copy_(fpn.layer_blocks[i][0].weight)
            neck.output_convs[i].bias.copy_(fpn.layer_blocks[i][0].bias)
    assert sum(p.numel() for p in neck.parameters()) == sum(p.numel() for p in fpn.parameters())
    x = OrderedDict((k, v.double()) for k, v in _features(size=(37, 53)).items())
    ours, theirs = neck(x), fpn(x)
    for name in theirs:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-12, atol=1e-12)


def test_authors_structure() -> None:
    neck = FaPN(IN_CHANNELS, 24, extra_blocks=LastLevelMaxPool())
    assert isinstance(neck.top_lateral, torch.nn.Conv2d) and neck.top_lateral.kernel_size == (1, 1)
    assert neck.top_lateral.bias is not None and neck.top_output is None
    assert len(neck.merges) == len(neck.output_convs) == 3
    for merge, conv in zip(neck.merges, neck.output_convs):
        assert isinstance(merge, FeatureAlignModule) and merge.upsample_mode == "bilinear"
        assert isinstance(merge.lateral, FeatureSelectionModule) and merge.fusion == "sum"
        assert conv.kernel_size == (3, 3) and conv.bias is not None
    # the top-down path carries the FAM output, not the output conv's: P4 depends on no output conv weight
    x = _features()
    out = neck(x)
    neck.output_convs[2].weight.data.zero_()
    neck.output_convs[2].bias.data.zero_()
    out2 = neck(x)
    assert torch.count_nonzero(out2["c4"]) == 0
    for name in ["c2", "c3", "c5", "pool"]:
        torch.testing.assert_close(out2[name], out[name])
    # P6 = max_pool2d(P5, kernel 1, stride 2)
    torch.testing.assert_close(out["pool"], out["c5"][:, :, ::2, ::2])


def test_ablation_switches() -> None:
    neck = FaPN(IN_CHANNELS, 24, feature_alignment=False, feature_selection=True, fusion="concat")
    assert all(isinstance(m, FPNMerge) and isinstance(m.lateral, FeatureSelectionModule) for m in neck.merges)
    assert all(m.concat_fuse is not None for m in neck.merges)
    neck = FaPN(IN_CHANNELS, 24, feature_selection=False, output_convs=False, top_feature_selection=True)
    assert all(isinstance(m.lateral, torch.nn.Conv2d) for m in neck.merges)
    assert isinstance(neck.top_lateral, FeatureSelectionModule) and len(neck.output_convs) == 0
    out = neck(_features())
    assert [v.shape[1] for v in out.values()] == [24] * 4


def test_wrong_number_of_inputs() -> None:
    with pytest.raises(ValueError, match=r"FaPN was built for 4 input maps, got 3"):
        FaPN(IN_CHANNELS, 8)(OrderedDict(list(_features().items())[:3]))
