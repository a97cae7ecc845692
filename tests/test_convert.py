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
from fapn.convert import convert_detectron2_fapn, convert_fapn_neck, load_detectron2_checkpoint, neck_stages
from fapn.models.pyramid import p6p7_from_c5
from fapn.necks import FaPN

IN_CHANNELS = {2: 16, 3: 24, 4: 32, 5: 40}
WIDTH, GROUPS = 32, 8
NORM_LEAVES = {"GN": ("weight", "bias"), "BN": ("weight", "bias", "running_mean", "running_var")}


def authors_neck_state(
    seed: int = 0,
    stages: tuple[int, ...] = (2, 3, 4, 5),
    width: int = WIDTH,
    norm: str | None = None,
    top_block: bool = False,
) -> dict[str, torch.Tensor]:
    """Random tensors under the authors' key names, as their ``FAN(bottom_up, in_features, out_channels, norm,
    top_block)`` names them: ``fan_align{s}`` / ``fpn_output{s}`` after the input's stage, detectron2's
    ``Conv2d`` layout (``<conv>.norm.*``, no bias when normalised), RetinaNet's ``top_block.p6/p7`` on C5."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape, std=0.1: torch.randn(*shape, generator=g) * std  # noqa: E731
    state: dict[str, torch.Tensor] = {}

    def conv_norm(name: str, *shape: int, std: float) -> None:
        state[f"{name}.weight"] = r(*shape, std=std)
        if norm is None:
            state[f"{name}.bias"] = r(shape[0])
            return
        for leaf in NORM_LEAVES[norm]:
            value = r(shape[0], std=0.3) + (1.0 if leaf in ("weight", "running_var") else 0.0)
            state[f"{name}.norm.{leaf}"] = value.abs() if leaf == "running_var" else value

    for s in stages[:-1]:
        c = IN_CHANNELS[s]
        p = f"backbone.fan_align{s}."
        state[p + "lateral_conv.conv_atten.weight"] = r(c, c, 1, 1)
        state[p + "lateral_conv.conv.weight"] = r(width, c, 1, 1, std=0.3)
        state[p + "offset.weight"] = r(width, 2 * width, 1, 1, std=0.2)
        if norm is not None:
            for leaf in NORM_LEAVES[norm]:
                state[p + f"offset.norm.{leaf}"] = r(width, std=0.3) + (
                    1.0 if leaf in ("weight", "running_var") else 0.0
                )
        state[p + "dcpack_L2.weight"] = r(width, width, 3, 3)
        state[p + "dcpack_L2.bias"] = r(width)
        state[p + "dcpack_L2.conv_offset_mask.weight"] = r(
            3 * GROUPS * 9, width, 3, 3, std=0.3
        )  # offsets of several px
        state[p + "dcpack_L2.conv_offset_mask.bias"] = r(3 * GROUPS * 9, std=1.0)
        conv_norm(f"backbone.fpn_output{s}", width, width, 3, 3, std=0.1)
    conv_norm(f"backbone.fan_align{stages[-1]}", width, IN_CHANNELS[stages[-1]], 1, 1, std=0.3)
    if top_block:
        state["backbone.top_block.p6.weight"] = r(width, IN_CHANNELS[stages[-1]], 3, 3)
        state["backbone.top_block.p6.bias"] = r(width)
        state["backbone.top_block.p7.weight"] = r(width, width, 3, 3)
        state["backbone.top_block.p7.bias"] = r(width)
    return state


def reference_neck(
    state: dict[str, torch.Tensor], feats: dict[int, torch.Tensor], norm: str | None = None
) -> dict[str, torch.Tensor]:
    """The authors' neck (their fan.py: FeatureAlign_V2, FAN, LastLevelMaxPool / LastLevelP6P7 on res5), in
    float64, written with functional ops. ``norm`` follows each detectron2 ``Conv2d(norm=...)``: the top lateral,
    the 1x1 offset conv and the output convs (GroupNorm(32) or eval-mode BatchNorm)."""
    w = {k.removeprefix("backbone."): v.double() for k, v in state.items()}
    stages = sorted(feats)
    top = stages[-1]

    def normed(x: torch.Tensor, name: str) -> torch.Tensor:
        if norm == "GN":
            return F.group_norm(x, 32, w[f"{name}.norm.weight"], w[f"{name}.norm.bias"], eps=1e-5)
        if norm == "BN":
            return F.batch_norm(
                x,
                w[f"{name}.norm.running_mean"],
                w[f"{name}.norm.running_var"],
                w[f"{name}.norm.weight"],
                w[f"{name}.norm.bias"],
                training=False,
                eps=1e-5,
            )
        return x

    def conv(x: torch.Tensor, name: str, padding: int = 0) -> torch.Tensor:
        return normed(F.conv2d(x, w[f"{name}.weight"], w.get(f"{name}.bias"), padding=padding), name)

    def fsm(x: torch.Tensor, s: int) -> torch.Tensor:
        a = torch.sigmoid(F.conv2d(F.adaptive_avg_pool2d(x, 1), w[f"fan_align{s}.lateral_conv.conv_atten.weight"]))
        return F.conv2d(x + x * a, w[f"fan_align{s}.lateral_conv.conv.weight"])

    def fam(c: torch.Tensor, prev: torch.Tensor, s: int) -> torch.Tensor:
        sel = fsm(c, s)
        up = F.interpolate(prev, size=sel.shape[-2:], mode="bilinear", align_corners=False)
        o = conv(torch.cat([sel, 2 * up], 1), f"fan_align{s}.offset")
        om = F.conv2d(
            o,
            w[f"fan_align{s}.dcpack_L2.conv_offset_mask.weight"],
            w[f"fan_align{s}.dcpack_L2.conv_offset_mask.bias"],
            padding=1,
        )
        offset, mask = om[:, : 2 * GROUPS * 9], torch.sigmoid(om[:, 2 * GROUPS * 9 :])
        aligned = F.relu(
            torchvision.ops.deform_conv2d(
                up, offset, w[f"fan_align{s}.dcpack_L2.weight"], w[f"fan_align{s}.dcpack_L2.bias"], padding=1, mask=mask
            )
        )
        return aligned + sel

    p_top = conv(feats[top], f"fan_align{top}")
    out = {f"p{top}": p_top}
    if "top_block.p6.weight" in w:  # RetinaNet: P6 from C5 (res5), P7 from relu(P6)
        p6 = F.conv2d(feats[top], w["top_block.p6.weight"], w["top_block.p6.bias"], stride=2, padding=1)
        out.update(
            p6=p6, p7=F.conv2d(F.relu(p6), w["top_block.p7.weight"], w["top_block.p7.bias"], stride=2, padding=1)
        )
    else:
        out[f"p{top + 1}"] = F.max_pool2d(p_top, kernel_size=1, stride=2)
    prev = p_top
    for s in reversed(stages[:-1]):
        prev = fam(feats[s], prev, s)
        out[f"p{s}"] = conv(prev, f"fpn_output{s}", padding=1)
    return out


CASES = {
    "res2-res5": dict(stages=(2, 3, 4, 5)),
    "res3-res5-retinanet": dict(stages=(3, 4, 5), top_block=True),
    "res2-res5-GN": dict(stages=(2, 3, 4, 5), norm="GN", width=64),
    "res3-res5-BN": dict(stages=(3, 4, 5), norm="BN"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_converted_neck_computes_the_reference_forward(case: str) -> None:
    """Converted by stage name, strict load into our neck over the same stages, same outputs to 1e-10."""
    options = CASES[case]
    stages, width, norm = options["stages"], options.get("width", WIDTH), options.get("norm")
    state = authors_neck_state(**options)
    mapped, unmapped = convert_fapn_neck(state)
    assert unmapped == []
    assert len(mapped) == len(state)
    extra = p6p7_from_c5(IN_CHANNELS[stages[-1]], width) if options.get("top_block") else LastLevelMaxPool()
    neck = FaPN([IN_CHANNELS[s] for s in stages], width, extra_blocks=extra, norm=norm).double().eval()
    neck.load_state_dict({k: v.double() for k, v in mapped.items()}, strict=True)
    assert torch.equal(
        neck.merges[0].offset_fuse.weight, state[f"backbone.fan_align{stages[0]}.offset.weight"].double()
    )
    g = torch.Generator().manual_seed(1)
    sizes = {2: (28, 36), 3: (14, 18), 4: (7, 9), 5: (4, 5)}  # odd sizes: upsampling is to the exact size
    feats = {s: torch.randn(1, IN_CHANNELS[s], *sizes[s], generator=g, dtype=torch.float64) for s in stages}
    with torch.no_grad():
        ours = neck(OrderedDict((f"res{s}", feats[s]) for s in stages))
        ref = reference_neck(state, feats, norm)
        coarse = torch.zeros(1, width, *sizes[stages[1]], dtype=torch.float64)
        offsets = neck.merges[0].align(feats[stages[0]], coarse)["offset"]
    extra_names = ["p6", "p7"] if options.get("top_block") else ["pool"]
    assert list(ours) == [f"res{s}" for s in stages] + extra_names
    ref_names = [f"p{s}" for s in stages] + (["p6", "p7"] if options.get("top_block") else [f"p{stages[-1] + 1}"])
    for ours_key, ref_key in zip(ours, ref_names):
        diff = (ours[ours_key] - ref[ref_key]).abs().max().item()
        print(case, ref_key, tuple(ref[ref_key].shape), "max abs diff", diff)
        assert diff < 1e-10
    assert offsets.abs().max() > 2.0  # the check covers real displacements, not only the identity


def test_stages_can_be_given_and_foreign_stages_are_reported() -> None:
    state = authors_neck_state(stages=(3, 4, 5))
    assert neck_stages(state) == [3, 4, 5]
    mapped, unmapped = convert_fapn_neck(state, stages=[2, 3, 4, 5])  # a res2-res5 neck: fan_align3 is merges.1
    assert "merges.1.offset_fuse.weight" in mapped and "merges.2.offset_fuse.weight" in mapped
    assert unmapped == []
    mapped, unmapped = convert_fapn_neck(state, stages=[4, 5])  # fan_align3 belongs to no merge of this neck
    assert sorted(unmapped) == sorted(k for k in state if "align3." in k or "output3." in k)
    with pytest.raises(ValueError, match="ascending"):
        convert_fapn_neck(state, stages=[5, 4])


def test_unmapped_keys_are_reported_and_body_is_converted() -> None:
    state = authors_neck_state()
    state["backbone.fan_align3.some_new_thing.weight"] = torch.zeros(1)
    state["pixel_mean"] = torch.zeros(3, 1, 1)
    state["backbone.bottom_up.stem.conv1.weight"] = torch.arange(3.0).view(1, 3, 1, 1).expand(4, 3, 7, 7).clone()
    _mapped, unmapped = convert_fapn_neck(state)
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
    with pytest.raises(ValueError, match=r"refused to load builtins\.print"):
        load_detectron2_checkpoint(evil)
    assert main(["convert", str(tmp_path / "missing.pkl"), "--out", str(out)]) == 2
