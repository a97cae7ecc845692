"""The authors' PointRend checkpoints: state dicts in detectron2's layouts (names and shapes written out here from
detectron2's modules) convert onto fapn's detectron2-configured PointRend models, load strictly, and the converted
heads compute what a float64 forward written here from the original tensors computes."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fapn.convert.pointrend import convert_pointrend, is_pointrend_checkpoint
from fapn.models.pointrend import detectron2_pointrend_rcnn, detectron2_pointrend_semantic, point_sample


def d2_semantic_heads(num_classes: int = 19) -> dict[str, torch.Tensor]:
    """``PointRendSemSegHead``: ``SemSegFPNHead`` (per level conv3x3 + GN [+ upsample] as one Sequential whose
    convs sit at indices 0, 2, 4) and ``StandardPointHead`` without ``coarse_pred_each_layer``."""
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int, scale: float = 1.0, offset: float = 0.0) -> torch.Tensor:
        return torch.randn(shape, dtype=torch.float64, generator=gen) * scale + offset

    state = {}
    for level, convs in ((2, 1), (3, 1), (4, 2), (5, 3)):
        for k in range(convs):
            p = f"sem_seg_head.coarse_sem_seg_head.p{level}.{2 * k}"
            state[f"{p}.weight"] = rand(128, 256 if k == 0 else 128, 3, 3, scale=0.05)
            state[f"{p}.norm.weight"] = rand(128, scale=0.1, offset=1.0)
            state[f"{p}.norm.bias"] = rand(128, scale=0.1)
    state["sem_seg_head.coarse_sem_seg_head.predictor.weight"] = rand(num_classes, 128, 1, 1, scale=0.1)
    state["sem_seg_head.coarse_sem_seg_head.predictor.bias"] = rand(num_classes)
    width = 256 + num_classes
    for k in (1, 2, 3):
        state[f"sem_seg_head.point_head.fc{k}.weight"] = rand(256, width, 1, scale=0.05)
        state[f"sem_seg_head.point_head.fc{k}.bias"] = rand(256, scale=0.1)
        width = 256
    state["sem_seg_head.point_head.predictor.weight"] = rand(num_classes, 256, 1, scale=0.05)
    state["sem_seg_head.point_head.predictor.bias"] = rand(num_classes)
    return state


def reference_semantic_coarse(d2: dict[str, torch.Tensor], features: list[torch.Tensor]) -> torch.Tensor:
    """detectron2's ``SemSegFPNHead.layers``: conv (no bias) -> GroupNorm(32) -> ReLU, 2x bilinear while coarser
    than stride 4, summed, 1x1 predictor."""
    total = 0
    for level, feature in zip((2, 3, 4, 5), features):
        x = feature
        for k in range(max(1, level - 2)):
            p = f"sem_seg_head.coarse_sem_seg_head.p{level}.{2 * k}"
            x = F.conv2d(x, d2[f"{p}.weight"], padding=1)
            x = F.relu(F.group_norm(x, 32, d2[f"{p}.norm.weight"], d2[f"{p}.norm.bias"]))
            if level > 2:
                x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        total = total + x
    p = "sem_seg_head.coarse_sem_seg_head.predictor"
    return F.conv2d(total, d2[f"{p}.weight"], d2[f"{p}.bias"])


def reference_point_head(
    d2: dict[str, torch.Tensor], prefix: str, fine: torch.Tensor, coarse: torch.Tensor, each_layer: bool
) -> torch.Tensor:
    x = torch.cat([fine, coarse], 1)
    for k in (1, 2, 3):
        x = F.relu(F.conv1d(x, d2[f"{prefix}.fc{k}.weight"], d2[f"{prefix}.fc{k}.bias"]))
        if each_layer:
            x = torch.cat([x, coarse], 1)
    return F.conv1d(x, d2[f"{prefix}.predictor.weight"], d2[f"{prefix}.predictor.bias"])


def reference_semantic_inference(d2, features, steps: int, num_points: int) -> torch.Tensor:
    """detectron2's ``PointRendSemSegHead`` inference: upsample 2x, top-N uncertain cells (second - first logit),
    point head on P2 and the coarse logits there, scatter."""
    coarse = reference_semantic_coarse(d2, features)
    logits = coarse.clone()
    for _ in range(steps):
        logits = F.interpolate(logits, scale_factor=2, mode="bilinear", align_corners=False)
        top2 = logits.topk(2, dim=1).values
        uncertainty = (top2[:, 1] - top2[:, 0]).flatten(1)
        n, c, h, w = logits.shape
        index = uncertainty.topk(min(num_points, h * w), dim=1).indices
        coords = torch.stack([((index % w).double() + 0.5) / w, ((index // w).double() + 0.5) / h], dim=2)
        point = reference_point_head(
            d2,
            "sem_seg_head.point_head",
            point_sample(features[0], coords),
            point_sample(coarse, coords),
            each_layer=False,
        )
        logits = logits.reshape(n, c, h * w).scatter(2, index[:, None].expand(-1, c, -1), point).view(n, c, h, w)
    return logits


@pytest.mark.slow
def test_semantic_checkpoint_converts_and_computes_the_reference(d2_r50_fapn_shapes) -> None:
    # names and shapes matter for the backbone, not values (its conversion is checked numerically elsewhere)
    backbone = {k: torch.zeros(s) for k, s in d2_r50_fapn_shapes.items()}
    d2 = {**backbone, **d2_semantic_heads(), "pixel_mean": torch.zeros(3, 1, 1)}
    assert is_pointrend_checkpoint(d2)
    mapped, unmapped = convert_pointrend(d2)
    assert unmapped == ["pixel_mean"]
    with torch.device("meta"):  # no initialisation: every tensor comes from the checkpoint
        model = detectron2_pointrend_semantic(50, num_classes=19).eval()
    model.load_state_dict(mapped, assign=True)  # strict: every key filled, nothing left over
    gen = torch.Generator().manual_seed(1)
    features = [torch.randn(1, 256, 16 // s, 24 // s, dtype=torch.float64, generator=gen) for s in (1, 2, 4, 8)]
    assert (model.subdivision_steps, model.subdivision_num_points) == (2, 8192)  # the authors' values
    model.subdivision_num_points = 700  # fewer than the cells of both steps (768, 3072): the selection matters
    with torch.no_grad():
        torch.testing.assert_close(model.coarse_head.layers(features), reference_semantic_coarse(d2, features))
        ours = model.subdivision_inference(model.coarse_head.layers(features), features[0], (64, 96))
    expected = reference_semantic_inference(d2, features, steps=2, num_points=700)
    torch.testing.assert_close(ours, expected, rtol=1e-9, atol=1e-9)


def d2_mask_heads(layout: int, num_classes: int = 80) -> dict[str, torch.Tensor]:
    """PointRend's coarse mask head (conv 2x2/2 + 2 FC 1024 + 7x7 prediction) and point head (256 + classes in,
    coarse prediction at every layer), under the names of detectron2's first release (1), of the mask head moved
    under ``mask_head`` (2, Nov 2020) and of the refactored head (3, Apr 2021, current)."""
    gen = torch.Generator().manual_seed(2)
    coarse = {
        "reduce_spatial_dim_conv.weight": (256, 256, 2, 2),
        "reduce_spatial_dim_conv.bias": (256,),
        "fc1.weight": (1024, 256 * 49),
        "fc1.bias": (1024,),
        "fc2.weight": (1024, 1024),
        "fc2.bias": (1024,),
        "prediction.weight": (num_classes * 49, 1024),
        "prediction.bias": (num_classes * 49,),
    }
    width = 256 + num_classes
    point = {}
    for k in (1, 2, 3):
        point[f"fc{k}.weight"], point[f"fc{k}.bias"] = (256, width, 1), (256,)
        width = 256 + num_classes
    point["predictor.weight"], point["predictor.bias"] = (num_classes, width, 1), (num_classes,)
    if layout > 1:
        coarse_prefix, point_prefix = "roi_heads.mask_head.coarse_head", "roi_heads.mask_head.point_head"
    else:
        coarse_prefix, point_prefix = "roi_heads.mask_coarse_head", "roi_heads.mask_point_head"
    if layout < 3:
        coarse = {k.replace("fc", "coarse_mask_fc") if k.startswith("fc") else k: v for k, v in coarse.items()}
    state = {
        f"{coarse_prefix}.{k}": torch.randn(s, dtype=torch.float64, generator=gen) * 0.03 for k, s in coarse.items()
    }
    state.update(
        {f"{point_prefix}.{k}": torch.randn(s, dtype=torch.float64, generator=gen) * 0.05 for k, s in point.items()}
    )
    return state


@pytest.mark.slow
def test_rcnn_checkpoints_in_both_layouts_convert_and_compute_the_reference(
    d2_r50_fapn_shapes, d2_rcnn_head_shapes
) -> None:
    rest = {k: torch.zeros(s) for k, s in {**d2_r50_fapn_shapes, **d2_rcnn_head_shapes}.items()}
    new = d2_mask_heads(3)
    mapped_new, unmapped_new = convert_pointrend({**rest, **new})
    assert unmapped_new == []
    for layout in (1, 2):
        old = d2_mask_heads(layout)
        assert set(old) != set(new)
        mapped_old, unmapped_old = convert_pointrend({**rest, **old})
        assert unmapped_old == [] and mapped_new.keys() == mapped_old.keys()
        assert all(torch.equal(mapped_new[k], mapped_old[k]) for k in mapped_new)
    with torch.device("meta"):
        model = detectron2_pointrend_rcnn(50, num_classes=81).eval()
    model.load_state_dict(mapped_old, assign=True)  # strict
    head = model.roi_heads.mask_head
    gen = torch.Generator().manual_seed(3)
    rois = torch.randn(5, 256, 14, 14, dtype=torch.float64, generator=gen)
    d2 = new
    p = "roi_heads.mask_head.coarse_head"
    x = F.relu(
        F.conv2d(rois, d2[f"{p}.reduce_spatial_dim_conv.weight"], d2[f"{p}.reduce_spatial_dim_conv.bias"], stride=2)
    ).flatten(1)
    x = F.relu(F.linear(x, d2[f"{p}.fc1.weight"], d2[f"{p}.fc1.bias"]))
    x = F.relu(F.linear(x, d2[f"{p}.fc2.weight"], d2[f"{p}.fc2.bias"]))
    expected_coarse = F.linear(x, d2[f"{p}.prediction.weight"], d2[f"{p}.prediction.bias"]).view(5, 80, 7, 7)
    fine, coarse_points = (
        torch.randn(5, 256, 11, dtype=torch.float64, generator=gen),
        torch.randn(5, 80, 11, dtype=torch.float64, generator=gen),
    )
    with torch.no_grad():
        torch.testing.assert_close(head.coarse_head(rois), expected_coarse)
        torch.testing.assert_close(
            head.point_head(fine, coarse_points),
            reference_point_head(d2, "roi_heads.mask_head.point_head", fine, coarse_points, each_layer=True),
        )
    assert (head.subdivision_init_resolution, head.subdivision_steps) == (28, 3)


def test_fapn_convert_dispatches_pointrend_checkpoints(tmp_path, capsys) -> None:
    from fapn.checkpoint import load_checkpoint
    from fapn.cli.main import main
    from fapn.convert import convert_detectron2_fapn

    d2 = {
        **d2_semantic_heads(num_classes=3),
        "backbone.fan_align5.bias": torch.zeros(256),
        "pixel_mean": torch.zeros(3, 1, 1),
    }
    mapped, unmapped = convert_detectron2_fapn(d2)
    assert mapped.keys() == convert_pointrend(d2)[0].keys() and unmapped == ["pixel_mean"]
    assert "point_head.fc1.weight" in mapped and "backbone.fapn.top_lateral.bias" in mapped
    torch.save({"model": d2}, tmp_path / "pointrend.pth")
    assert (
        main(
            [
                "convert",
                str(tmp_path / "pointrend.pth"),
                "--out",
                str(tmp_path / "out.pt"),
                "--model-config",
                '{"name": "detectron2_pointrend_semantic", "depth": 50, "num_classes": 3}',
            ]
        )
        == 0
    )
    assert "1 keys not mapped" in capsys.readouterr().out
    converted = load_checkpoint(tmp_path / "out.pt")
    assert converted["model"].keys() == mapped.keys()
    assert converted["model_config"]["name"] == "detectron2_pointrend_semantic"
    torch.testing.assert_close(
        converted["model"]["coarse_head.scale_heads.3.4.1.weight"],
        d2["sem_seg_head.coarse_sem_seg_head.p5.4.norm.weight"],
    )
