"""The authors' detectron2 FaPN checkpoints: key mapping, and our neck against a reference forward written
from the notes with the original tensors."""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from fapn.cli.main import main
from fapn.convert import convert_detectron2_fapn, convert_fapn_neck, load_detectron2_checkpoint
from fapn.necks import FaPN

IN_CHANNELS = {2: 16, 3: 24, 4: 32, 5: 40}
WIDTH, GROUPS = 32, 8


def authors_neck_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the authors' key names (notes: fan_align*, dcpack_L2, fpn_output*, fan_align5)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape, std=0.1: torch.randn(*shape, generator=g) * std  # noqa: E731
    state: dict[str, torch.Tensor] = {}
    for s in (2, 3, 4):
        c = IN_CHANNELS[s]
        p = f"backbone.fan_align{s}."
        state[p + "lateral_conv.conv_atten.weight"] = r(c, c, 1, 1)
        state[p + "lateral_conv.conv.weight"] = r(WIDTH, c, 1, 1, std=0.3)
        state[p + "offset.weight"] = r(WIDTH, 2 * WIDTH, 1, 1, std=0.2)
        state[p + "dcpack_L2.weight"] = r(WIDTH, WIDTH, 3, 3)
        state[p + "dcpack_L2.bias"] = r(WIDTH)
        state[p + "dcpack_L2.conv_offset_mask.weight"] = r(3 * GROUPS * 9, WIDTH, 3, 3, std=0.3)  # offsets of several px
        state[p + "dcpack_L2.conv_offset_mask.bias"] = r(3 * GROUPS * 9, std=1.0)
        state[f"backbone.fpn_output{s}.weight"] = r(WIDTH, WIDTH, 3, 3)
        state[f"backbone.fpn_output{s}.bias"] = r(WIDTH)
    state["backbone.fan_align5.weight"] = r(WIDTH, IN_CHANNELS[5], 1, 1, std=0.3)
    state["backbone.fan_align5.bias"] = r(WIDTH)
    return state


def reference_neck(state: dict[str, torch.Tensor], feats: dict[int, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The authors' neck as the notes describe it, in float64, written with functional ops."""
    w = {k.removeprefix("backbone."): v.double() for k, v in state.items()}

    def fsm(x: torch.Tensor, s: int) -> torch.Tensor:
        a = torch.sigmoid(F.conv2d(F.adaptive_avg_pool2d(x, 1), w[f"fan_align{s}.lateral_conv.conv_atten.weight"]))
        return F.conv2d(x + x * a, w[f"fan_align{s}.lateral_conv.conv.weight"])

    def fam(c: torch.Tensor, prev: torch.Tensor, s: int) -> torch.Tensor:
        sel = fsm(c, s)
        up = F.interpolate(prev, size=sel.shape[-2:], mode="bilinear", align_corners=False)
        o = F.conv2d(torch.cat([sel, 2 * up], 1), w[f"fan_align{s}.offset.weight"])
        om = F.conv2d(o, w[f"fan_align{s}.dcpack_L2.conv_offset_mask.weight"], w[f"fan_align{s}.dcpack_L2.conv_offset_mask.bias"], padding=1)
        offset, mask = om[:, : 2 * GROUPS * 9], torch.sigmoid(om[:, 2 * GROUPS * 9 :])
        aligned = F.relu(
            torchvision.ops.deform_conv2d(up, offset, w[f"fan_align{s}.dcpack_L2.weight"], w[f"fan_align{s}.dcpack_L2.bias"], padding=1, mask=mask)
        )
        return aligned + sel

    p5 = F.conv2d(feats[5], w["fan_align5.weight"], w["fan_align5.bias"])
    out = {"p5": p5, "p6": F.max_pool2d(p5, kernel_size=1, stride=2)}
    prev = p5
    for s in (4, 3, 2):
        prev = fam(feats[s], prev, s)
        out[f"p{s}"] = F.conv2d(prev, w[f"fpn_output{s}.weight"], w[f"fpn_output{s}.bias"], padding=1)
    return out


def test_converted_neck_computes_the_reference_forward() -> None:
    state = authors_neck_state()
    mapped, unmapped = convert_fapn_neck(state)
    assert unmapped == []
    assert len(mapped) == len(state) == 3 * 9 + 2
    neck = FaPN([IN_CHANNELS[s] for s in (2, 3, 4, 5)], WIDTH, extra_blocks=LastLevelMaxPool()).double().eval()
    neck.load_state_dict({k: v.double() for k, v in mapped.items()}, strict=True)
    g = torch.Generator().manual_seed(1)
    sizes = {2: (28, 36), 3: (14, 18), 4: (7, 9), 5: (4, 5)}  # odd sizes: upsampling is to the exact size
    feats = {s: torch.randn(1, IN_CHANNELS[s], *sizes[s], generator=g, dtype=torch.float64) for s in (2, 3, 4, 5)}
    with torch.no_grad():
        ours = neck(OrderedDict((f"res{s}", feats[s]) for s in (2, 3, 4, 5)))
        ref = reference_neck(state, feats)
        offsets = neck.merges[0].align(feats[2], torch.zeros(1, WIDTH, 14, 18, dtype=torch.float64))["offset"]
    assert list(ours) == ["res2", "res3", "res4", "res5", "pool"]
    for ours_key, ref_key in zip(ours, ["p2", "p3", "p4", "p5", "p6"]):
        diff = (ours[ours_key] - ref[ref_key]).abs().max().item()
        print(ref_key, tuple(ref[ref_key].shape), "max abs diff", diff)
        assert diff < 1e-10
    assert offsets.abs().max() > 2.0  # the check covers real displacements, not only the identity


def test_unmapped_keys_are_reported_and_body_is_converted() -> None:
    state = authors_neck_state()
    state["backbone.fan_align3.some_new_thing.weight"] = torch.zeros(1)
    state["pixel_mean"] = torch.zeros(3, 1, 1)
    state["backbone.bottom_up.stem.conv1.weight"] = torch.arange(3.0).view(1, 3, 1, 1).expand(4, 3, 7, 7).clone()
    mapped, unmapped = convert_fapn_neck(state)
    assert unmapped == ["backbone.fan_align3.some_new_thing.weight"]
    whole, whole_unmapped = convert_detectron2_fapn(state)
    assert "backbone.fan_align3.some_new_thing.weight" in whole_unmapped and "pixel_mean" in whole_unmapped
    assert torch.equal(whole["backbone.fapn.merges.1.deform.weight"], state["backbone.fan_align3.dcpack_L2.weight"])
    if "backbone.body.conv1.weight" in whole:  # the detection converter is present: BGR -> RGB stem
        assert whole["backbone.body.conv1.weight"][0, :, 0, 0].tolist() == [2.0, 1.0, 0.0]
        assert "backbone.bottom_up.stem.conv1.weight" not in whole_unmapped


def test_pkl_and_pth_loading_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = authors_neck_state()
    state["pixel_std"] = torch.ones(3, 1, 1)
    pkl = tmp_path / "model_final.pkl"
    with pkl.open("wb") as handle:
        pickle.dump({"model": {k: v.numpy() for k, v in state.items()}, "__author__": "authors"}, handle)
    pth = tmp_path / "model_final.pth"
    torch.save({"model": state, "iteration": 3}, pth)
    for source in (pkl, pth):
        loaded = load_detectron2_checkpoint(source)
        assert set(loaded) == set(state) and all(torch.equal(loaded[k], state[k]) for k in state)
    out = tmp_path / "neck.pt"
    assert main(["convert", str(pkl), "--out", str(out), "--neck-only"]) == 0
    text = capsys.readouterr().out
    assert "1 keys not mapped" in text and "pixel_std" in text
    converted = torch.load(out, weights_only=True)
    assert converted["unmapped_keys"] == ["pixel_std"]
    FaPN([IN_CHANNELS[s] for s in (2, 3, 4, 5)], WIDTH).load_state_dict(converted["model"])

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("ran code",))

    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"model": {"x": Evil()}}))
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        load_detectron2_checkpoint(evil)
    assert main(["convert", str(tmp_path / "missing.pkl"), "--out", str(out)]) == 2
