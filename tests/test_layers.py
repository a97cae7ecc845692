"""FSM and FAM against their definitions, FAM's initialisation, and alignment in miniature."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fapn.layers import FeatureAlignModule, FeatureSelectionModule, FPNMerge


def test_fsm_matches_its_formula_in_float64() -> None:
    fsm = FeatureSelectionModule(6, 4).double()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    w_att = fsm.attention.weight[:, :, 0, 0]
    w_proj = fsm.projection.weight[:, :, 0, 0]
    a = torch.sigmoid(torch.einsum("oc,nc->no", w_att, x.mean(dim=(2, 3))))
    expected = torch.einsum("oc,nchw->nohw", w_proj, x * (1 + a[:, :, None, None]))
    torch.testing.assert_close(fsm(x), expected)
    assert fsm.attention.bias is None and fsm.projection.bias is None


@pytest.mark.parametrize("fusion", ["sum", "concat"])
@pytest.mark.parametrize("upsample_mode", ["bilinear", "nearest"])
def test_fam_at_initialisation_is_half_a_plain_conv(fusion: str, upsample_mode: str) -> None:
    fam = FeatureAlignModule(12, 16, upsample_mode=upsample_mode, fusion=fusion).double()  # type: ignore[arg-type]
    torch.nn.init.normal_(fam.deform.bias)
    lateral = torch.randn(2, 12, 9, 11, dtype=torch.float64)
    coarse = torch.randn(2, 16, 5, 6, dtype=torch.float64)
    parts = fam.align(lateral, coarse)
    up = F.interpolate(
        coarse, size=(9, 11), mode=upsample_mode, **({"align_corners": False} if upsample_mode == "bilinear" else {})
    )
    torch.testing.assert_close(parts["upsampled"], up)
    assert torch.count_nonzero(parts["offset"]) == 0
    torch.testing.assert_close(parts["mask"], torch.full_like(parts["mask"], 0.5))
    plain = F.conv2d(up, fam.deform.weight, padding=1)
    expected = torch.relu(0.5 * plain + fam.deform.bias[None, :, None, None])
    torch.testing.assert_close(parts["aligned"], expected)
    selected = fam.lateral(lateral)
    if fusion == "sum":
        torch.testing.assert_close(parts["out"], expected + selected)
    else:
        assert fam.concat_fuse is not None
        torch.testing.assert_close(parts["out"], fam.concat_fuse(torch.cat([expected, selected], 1)))
    torch.testing.assert_close(fam(lateral, coarse), parts["out"])


def test_fam_offset_branch_doubles_only_the_upsampled_feature() -> None:
    fam = FeatureAlignModule(8, 8, feature_selection=False).double()
    lateral = torch.randn(1, 8, 6, 6, dtype=torch.float64)
    coarse = torch.randn(1, 8, 3, 3, dtype=torch.float64)
    captured = {}
    fam.offset_fuse.register_forward_pre_hook(lambda m, args: captured.update(input=args[0]))
    parts = fam.align(lateral, coarse)
    torch.testing.assert_close(captured["input"], torch.cat([parts["selected"], 2 * parts["upsampled"]], 1))


def _smooth_field(channels: int, size: int, shift: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    """``g(y - sy, x - sx)`` for a random positive band-limited field ``g`` (exact at any sub-pixel shift)."""
    ys = torch.arange(size, dtype=torch.float64)[:, None] - shift[0]
    xs = torch.arange(size, dtype=torch.float64)[None, :] - shift[1]
    field = torch.full((channels, size, size), 2.0, dtype=torch.float64)
    for _ in range(3):
        fy, fx = (torch.rand(2, channels, 1, 1, generator=generator, dtype=torch.float64) - 0.5) * 0.16
        phase = torch.rand(channels, 1, 1, generator=generator, dtype=torch.float64) * 2 * math.pi
        amp = 0.3 + 0.2 * torch.rand(channels, 1, 1, generator=generator, dtype=torch.float64)
        field = field + amp * torch.sin(2 * math.pi * (fy * ys + fx * xs) + phase)
    return field


def _identity_alignment_fam(channels: int) -> FeatureAlignModule:
    """A FAM whose deformable conv passes its centre tap through: aligned = mask * up(p + offset)."""
    fam = FeatureAlignModule(channels, channels, feature_selection=False).double()
    with torch.no_grad():
        fam.deform.weight.zero_()
        fam.deform.weight[:, :, 1, 1] = torch.eye(channels)
        fam.deform.bias.zero_()
    return fam


def test_offsets_set_to_the_shift_align_the_maps() -> None:
    """Sign and layout: with offsets (dy, dx) = shift in the FAM's own output channels, up aligns to fine."""
    generator = torch.Generator().manual_seed(1)
    channels, size, shift = 8, 24, (0.6, -0.35)
    fine = _smooth_field(channels, size, (0.0, 0.0), generator)[None]
    generator = torch.Generator().manual_seed(1)
    shifted = _smooth_field(channels, size, shift, generator)[None]  # same field, moved by +shift
    fam = _identity_alignment_fam(channels)
    groups, taps = fam.offset_groups, 9
    inner = (slice(None), slice(None), slice(3, -3), slice(3, -3))

    def aligned_error(dy: float, dx: float) -> float:
        with torch.no_grad():
            fam.offset_mask.bias.zero_()
            bias = fam.offset_mask.bias
            for g in range(groups):
                for k in range(taps):
                    bias[g * 2 * taps + 2 * k] = dy
                    bias[g * 2 * taps + 2 * k + 1] = dx
            bias[2 * groups * taps :] = 30.0  # mask = sigmoid(30) = 1
            # coarse at the fine size: upsampling is then the identity, isolating the alignment
            aligned = fam.align(fine, shifted)["aligned"]
        return float((aligned - fine)[inner].abs().max())

    unaligned = aligned_error(0.0, 0.0)
    aligned = aligned_error(*shift)
    wrong_sign = aligned_error(-shift[0], -shift[1])
    swapped = aligned_error(shift[1], shift[0])
    print(
        f"max error: unaligned {unaligned:.4f}, aligned {aligned:.4f}, wrong sign {wrong_sign:.4f}, "
        f"dy/dx swapped {swapped:.4f}"
    )
    # what remains is bilinear interpolation error of the band-limited field
    assert aligned < 0.1 * unaligned, (aligned, unaligned)
    assert wrong_sign > 1.5 * unaligned and swapped > 5 * aligned


@pytest.mark.slow
def test_fam_learns_the_shift_between_fine_and_coarse_maps() -> None:
    """The paper's claim in miniature: trained alone, FAM's offsets recover a sub-pixel misalignment.

    The coarse map is a 2x average-pooled copy of the fine map moved by ``shift``; FAM (identity deformable
    weights, so that only the offsets can explain the shift) is trained to reproduce the fine map.
    """
    torch.manual_seed(0)
    channels, size, shift = 8, 32, (0.7, -0.45)
    fam = _identity_alignment_fam(channels)
    fam.deform.weight.requires_grad_(False)
    fam.deform.bias.requires_grad_(False)
    optimizer = torch.optim.Adam([p for p in fam.parameters() if p.requires_grad], lr=0.01)
    generator = torch.Generator().manual_seed(0)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    for _ in range(300):
        seed = int(torch.randint(0, 2**31, (1,), generator=generator))
        fine = _smooth_field(channels, size, (0.0, 0.0), torch.Generator().manual_seed(seed))[None]
        shifted = _smooth_field(channels, size, shift, torch.Generator().manual_seed(seed))[None]
        coarse = F.avg_pool2d(shifted, 2)
        parts = fam.align(fine, coarse)
        loss = F.mse_loss(parts["aligned"][inner], fine[inner])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    offset = parts["offset"].detach()[inner].reshape(1, fam.offset_groups, 9, 2, size - 8, size - 8)
    centre = offset[:, :, 4]  # only the centre tap carries weight
    dy, dx = float(centre[:, :, 0].mean()), float(centre[:, :, 1].mean())
    print(f"learned offset (dy, dx) = ({dy:.3f}, {dx:.3f}), true shift = {shift}")
    assert abs(dy - shift[0]) < 0.25 and abs(dx - shift[1]) < 0.25, (dy, dx)


def test_fpn_merge_is_lateral_plus_nearest_upsample() -> None:
    merge = FPNMerge(6, 4, feature_selection=False, upsample_mode="nearest").double()
    lateral, coarse = torch.randn(1, 6, 8, 10, dtype=torch.float64), torch.randn(1, 4, 4, 5, dtype=torch.float64)
    expected = merge.lateral(lateral) + coarse.repeat_interleave(2, -2).repeat_interleave(2, -1)
    torch.testing.assert_close(merge(lateral, coarse), expected)


def test_layer_options_are_checked() -> None:
    with pytest.raises(ValueError, match="upsample_mode must be 'bilinear' or 'nearest', got 'area'"):
        FeatureAlignModule(8, 8, upsample_mode="area")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="fusion must be 'sum' or 'concat', got 'max'"):
        FeatureAlignModule(8, 8, fusion="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="in_channels \\(12\\) must be divisible by offset_groups \\(8\\)"):
        FeatureAlignModule(12, 12)
