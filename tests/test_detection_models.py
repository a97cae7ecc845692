"""FaPN on torchvision's detectors: builders, BackboneWithFaPN plumbing, parameter counts, detectron2 weights."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d

from fapn.convert import convert_detectron2_fapn_rcnn, convert_detectron2_resnet
from fapn.models.detection import (
    BackboneWithFaPN,
    build_detection_model,
    detectron2_fapn_rcnn,
    detectron2_resnet,
    fasterrcnn_resnet50_fapn,
    fasterrcnn_resnet101_fapn,
    maskrcnn_resnet50_fapn,
    maskrcnn_resnet101_fapn,
    resnet_fapn_extractor,
    retinanet_resnet50_fapn,
    retinanet_resnet101_fapn,
)
from fapn.models.pointrend import pointrend_maskrcnn_resnet50_fapn

TINY = dict(
    min_size=64,
    max_size=64,
    rpn_pre_nms_top_n_train=50,
    rpn_post_nms_top_n_train=20,
    rpn_batch_size_per_image=32,
    box_batch_size_per_image=8,
)
TINY_RETINA = dict(min_size=64, max_size=64, topk_candidates=20)


def _targets(masks: bool) -> list[dict[str, torch.Tensor]]:
    target = {"boxes": torch.tensor([[8.0, 10.0, 40.0, 50.0]]), "labels": torch.tensor([1])}
    if masks:
        m = torch.zeros(1, 64, 64, dtype=torch.uint8)
        m[0, 10:50, 8:40] = 1
        target["masks"] = m
    return [target]


def _neck_params(backbone: torch.nn.Module) -> int:
    neck = backbone.fapn if isinstance(backbone, BackboneWithFaPN) else backbone.fpn
    return sum(p.numel() for p in neck.parameters())


def test_resnet50_neck_parameter_count_against_detectron2_fpn():
    ours = maskrcnn_resnet50_fapn(num_classes=3).backbone
    fpn = torchvision.models.detection.maskrcnn_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=3
    ).backbone
    # hand count: top 1x1 2048->256 (+bias); per level FSM (C^2 + 256 C), offset 1x1 512->256,
    # offset/mask 3x3 256->216 (+bias), DCN 3x3 256->256 (+bias), output 3x3 (+bias)
    per_level = 131072 + (256 * 216 * 9 + 216) + 2 * (256 * 256 * 9 + 256)
    hand = 2048 * 256 + 256 + sum(c * c + 256 * c for c in (256, 512, 1024)) + 3 * per_level
    assert _neck_params(ours) == hand == 7_786_888  # notes: "about 7.79M"
    assert _neck_params(fpn) == 3_344_384  # notes: detectron2's FPN "3.34M"


@pytest.mark.parametrize("builder, masks", [(fasterrcnn_resnet50_fapn, False), (maskrcnn_resnet50_fapn, True)])
def test_rcnn_builders_train_and_infer(builder, masks):
    model = builder(num_classes=3, **TINY)
    assert isinstance(model.backbone, BackboneWithFaPN) and model.backbone.out_channels == 256
    losses = model([torch.rand(3, 64, 64)], _targets(masks))
    expected = {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert set(losses) == expected | ({"loss_mask"} if masks else set())
    sum(losses.values()).backward()
    fam = model.backbone.fapn.merges[0]
    assert fam.deform.weight.grad is not None and fam.deform.weight.grad.abs().sum() > 0
    assert fam.lateral.attention.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64)])[0]
    assert set(out) == {"boxes", "labels", "scores"} | ({"masks"} if masks else set())


@pytest.mark.parametrize(
    "builder, detector",
    [
        (fasterrcnn_resnet101_fapn, "FasterRCNN"),
        (maskrcnn_resnet101_fapn, "MaskRCNN"),
        (retinanet_resnet101_fapn, "RetinaNet"),
    ],
)
def test_resnet101_builders(builder, detector):
    """Same code path as ResNet-50 (trained above); check the depth and the wiring only, to keep CI short."""
    model = builder(num_classes=3)
    assert type(model).__name__ == detector
    assert len(model.backbone.body.layer3) == 23
    expected = [512, 1024, 2048] if detector == "RetinaNet" else [256, 512, 1024, 2048]
    assert model.backbone.fapn.in_channels_list == expected


def test_retinanet_builder_p3_to_p7():
    model = retinanet_resnet50_fapn(num_classes=3, **TINY_RETINA)
    x = torch.rand(1, 3, 64, 64)
    feats = model.backbone(x)
    assert list(feats) == ["0", "1", "2", "p6", "p7"]
    assert [f.shape[-1] for f in feats.values()] == [8, 4, 2, 1, 1]
    assert model.backbone.fapn.in_channels_list == [512, 1024, 2048]
    # P6 from C5 (2048 channels), as the authors' LastLevelP6P7(2048, 256), not from P5 (torchvision's v1)
    p6 = model.backbone.fapn.extra_blocks.p6
    assert (p6.in_channels, p6.out_channels) == (2048, 256)
    with torch.no_grad():
        c5 = model.backbone.body(x)["2"]
        torch.testing.assert_close(feats["p6"], p6(c5))
        torch.testing.assert_close(feats["p7"], model.backbone.fapn.extra_blocks.p7(F.relu(p6(c5))))
    losses = model([torch.rand(3, 64, 64)], _targets(False))
    assert set(losses) == {"classification", "bbox_regression"}
    sum(losses.values()).backward()
    assert model.backbone.fapn.merges[0].deform.weight.grad.abs().sum() > 0


def test_switching_from_torchvision_is_one_word(tmp_path):
    """Same keyword arguments, same heads, same frozen stages and frozen BN as torchvision's builder."""
    body = torchvision.models.resnet50()
    torch.save(body.state_dict(), tmp_path / "r50.pth")
    ours = maskrcnn_resnet50_fapn(
        num_classes=5, weights_backbone=str(tmp_path / "r50.pth"), trainable_backbone_layers=2, min_size=320
    )
    reference_body = _resnet_fpn_extractor(torchvision.models.resnet50(norm_layer=FrozenBatchNorm2d), 2)
    tv = torchvision.models.detection.MaskRCNN(reference_body, num_classes=5, min_size=320)
    assert ours.transform.min_size == tv.transform.min_size == (320,)
    assert [n for n, p in ours.backbone.body.named_parameters() if p.requires_grad] == [
        n for n, p in tv.backbone.body.named_parameters() if p.requires_grad
    ]
    assert any(isinstance(m, FrozenBatchNorm2d) for m in ours.backbone.body.modules())
    torch.testing.assert_close(ours.backbone.body.conv1.weight, body.conv1.weight)
    strip = lambda sd: {k: v.shape for k, v in sd.items() if not k.startswith("backbone.")}  # noqa: E731
    assert strip(ours.state_dict()) == strip(tv.state_dict())


@pytest.mark.parametrize(
    "detector, builder",
    [("maskrcnn", maskrcnn_resnet50_fapn), ("pointrend_maskrcnn", pointrend_maskrcnn_resnet50_fapn)],
)
def test_model_weights_load_into_torchvisions_frozen_layout(tmp_path, detector, builder):
    """``weights=`` (the state dict of a model trained from ImageNet weights, as ``fapn train`` and ``fapn convert``
    write it) builds the model as torchvision does for trained weights, Mask R-CNN and PointRend's alike: frozen
    batch norm, three trainable stages, the weights loaded."""
    trained = build_detection_model(detector=detector, backbone="resnet50", num_classes=3, frozen_batch_norm=True)
    torch.save(trained.state_dict(), tmp_path / "model.pth")
    model = builder(num_classes=3, weights=str(tmp_path / "model.pth"))
    body = model.backbone.body
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    assert {name.split(".")[0] for name, p in body.named_parameters() if p.requires_grad} == {
        "layer2",
        "layer3",
        "layer4",
    }
    torch.testing.assert_close(body.layer4[0].conv1.weight, trained.backbone.body.layer4[0].conv1.weight)


def test_fapn_switched_to_fpn_reproduces_torchvision_backbone_with_fpn():
    """BackboneWithFaPN plumbing (body, names, P6) against torchvision's BackboneWithFPN, same weights."""
    tv = _resnet_fpn_extractor(torchvision.models.resnet18(), 5).eval()
    ours = resnet_fapn_extractor(
        torchvision.models.resnet18(),
        5,
        feature_alignment=False,
        feature_selection=False,
        upsample_mode="nearest",
        top_output_conv=True,
    ).eval()
    ours.body.load_state_dict(tv.body.state_dict())
    neck = ours.fapn
    with torch.no_grad():
        for i in range(3):
            neck.merges[i].lateral.load_state_dict(tv.fpn.inner_blocks[i][0].state_dict())
            neck.output_convs[i].load_state_dict(tv.fpn.layer_blocks[i][0].state_dict())
        neck.top_lateral.load_state_dict(tv.fpn.inner_blocks[3][0].state_dict())
        neck.top_output.load_state_dict(tv.fpn.layer_blocks[3][0].state_dict())
        x = torch.rand(1, 3, 96, 64)
        expected, got = tv(x), ours(x)
    assert list(got) == list(expected) == ["0", "1", "2", "3", "pool"]
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])


def test_build_detection_model_neck_choice():
    fapn = build_detection_model(detector="fasterrcnn", backbone="resnet18", neck="fapn", num_classes=4)
    fpn = build_detection_model(detector="fasterrcnn", backbone="resnet18", neck="fpn", num_classes=4)
    assert type(fapn.backbone).__name__ == "BackboneWithFaPN" and type(fpn.backbone).__name__ == "BackboneWithFPN"
    for neck, attribute in (("fapn", "fapn"), ("fpn", "fpn")):  # RetinaNet: P6 from C5 (512 on ResNet-18) either way
        retina = build_detection_model(detector="retinanet", backbone="resnet18", neck=neck, num_classes=4)
        extra = getattr(retina.backbone, attribute).extra_blocks
        assert extra.p6.in_channels == 512 and not extra.use_P5
    gn = build_detection_model(detector="fasterrcnn", backbone="resnet18", num_classes=4, fapn_kwargs={"norm": "GN"})
    assert isinstance(gn.backbone.fapn.output_convs[0].norm, torch.nn.GroupNorm)
    assert gn.backbone.fapn.output_convs[0].bias is None
    with pytest.raises(ValueError, match="neck must be one of"):
        build_detection_model(neck="bifpn")
    with pytest.raises(ValueError, match="torchvision ResNet"):
        build_detection_model(backbone="vgg16")


# --- detectron2-style ResNet and the authors' checkpoints ---------------------------------------------------

_D2_BLOCKS = {2: 3, 3: 4, 4: 6, 5: 3}


def _random_detectron2_state(keys: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    state = {}
    for key, shape in keys.items():
        if key.endswith("running_var") or key.endswith("norm.weight"):
            state[key] = torch.rand(shape, dtype=torch.float64) + 0.5
        elif key.endswith("weight") and len(shape) == 4:
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, dtype=torch.float64) * (1.0 / fan_in) ** 0.5
        else:
            state[key] = torch.randn(shape, dtype=torch.float64) * 0.1
    return state


def _reference_detectron2_resnet(state: dict[str, torch.Tensor], bgr: torch.Tensor) -> list[torch.Tensor]:
    """detectron2's R-50 forward written from its definition (stride in the 1x1 conv, FrozenBN, eps 1e-5)."""

    def conv_norm(x, name, stride=1, padding=0):
        x = F.conv2d(x, state[f"{name}.weight"], stride=stride, padding=padding)
        scale = state[f"{name}.norm.weight"] * (state[f"{name}.norm.running_var"] + 1e-5).rsqrt()
        shift = state[f"{name}.norm.bias"] - state[f"{name}.norm.running_mean"] * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]

    x = F.relu(conv_norm(bgr, "stem.conv1", stride=2, padding=3))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    outputs = []
    for stage, blocks in _D2_BLOCKS.items():
        for i in range(blocks):
            p = f"res{stage}.{i}"
            stride = 2 if (i == 0 and stage > 2) else 1
            shortcut = conv_norm(x, f"{p}.shortcut", stride=stride) if i == 0 else x
            y = F.relu(conv_norm(x, f"{p}.conv1", stride=stride))
            y = F.relu(conv_norm(y, f"{p}.conv2", padding=1))
            x = F.relu(conv_norm(y, f"{p}.conv3") + shortcut)
        outputs.append(x)
    return outputs


def test_detectron2_resnet_with_converted_weights_matches_detectron2_forward(d2_resnet50_shapes):
    state = _random_detectron2_state(d2_resnet50_shapes)
    mapped, unmapped = convert_detectron2_resnet({f"backbone.bottom_up.{k}": v for k, v in state.items()})
    assert unmapped == []
    body = detectron2_resnet(50).double().eval()
    missing, unexpected = body.load_state_dict(mapped, strict=False)
    assert unexpected == [] and sorted(missing) == ["fc.bias", "fc.weight"]
    rgb01 = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    # detectron2: BGR 0-255 minus PIXEL_MEAN (BGR), std 1; ours: RGB through torchvision's transform constants
    bgr = rgb01.flip(1) * 255 - torch.tensor([103.53, 116.28, 123.675], dtype=torch.float64)[None, :, None, None]
    model = detectron2_fapn_rcnn(50)
    mean = torch.tensor(model.transform.image_mean, dtype=torch.float64)[None, :, None, None]
    std = torch.tensor(model.transform.image_std, dtype=torch.float64)[None, :, None, None]
    ours_in = (rgb01 - mean) / std
    expected = _reference_detectron2_resnet(state, bgr)
    x = ours_in
    with torch.no_grad():
        x = body.maxpool(body.relu(body.bn1(body.conv1(x))))
        got = []
        for layer in (body.layer1, body.layer2, body.layer3, body.layer4):
            x = layer(x)
            got.append(x)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-9, atol=1e-9)


def test_convert_detectron2_fapn_rcnn_loads_whole_mask_rcnn_and_reports_the_rest(
    d2_r50_fapn_shapes, d2_rcnn_head_shapes
):
    model = detectron2_fapn_rcnn(50, mask=True, num_classes=81)
    target = model.state_dict()
    mask_head = {
        "roi_heads.mask_head.deconv": ((256, 256, 2, 2), (256,)),
        "roi_heads.mask_head.predictor": ((80, 256, 1, 1), (80,)),
        **{f"roi_heads.mask_head.mask_fcn{k}": ((256, 256, 3, 3), (256,)) for k in range(1, 5)},
    }
    shapes = {**d2_r50_fapn_shapes, **d2_rcnn_head_shapes}
    shapes.update(
        {f"{name}.{kind}": s for name, (w, b) in mask_head.items() for kind, s in (("weight", w), ("bias", b))}
    )
    d2 = {k: torch.randn(s) for k, s in shapes.items()}
    d2["pixel_mean"] = torch.zeros(3, 1, 1)
    mapped, unmapped = convert_detectron2_fapn_rcnn(d2)
    assert unmapped == ["pixel_mean"]
    assert set(mapped) == set(target)
    assert all(mapped[k].shape == target[k].shape for k in target)
    model.load_state_dict(mapped)
    cls = d2["roi_heads.box_predictor.cls_score.weight"]
    torch.testing.assert_close(mapped["roi_heads.box_predictor.cls_score.weight"][0], cls[80])  # background
    torch.testing.assert_close(mapped["roi_heads.box_predictor.cls_score.weight"][1:], cls[:80])
    assert mapped["roi_heads.box_predictor.bbox_pred.weight"][:4].abs().sum() == 0
    torch.testing.assert_close(
        mapped["roi_heads.mask_predictor.mask_fcn_logits.weight"][1:], d2["roi_heads.mask_head.predictor.weight"]
    )
    torch.testing.assert_close(mapped["backbone.body.conv1.weight"], d2["backbone.bottom_up.stem.conv1.weight"].flip(1))
    torch.testing.assert_close(
        mapped["backbone.fapn.merges.1.offset_mask.weight"], d2["backbone.fan_align3.dcpack_L2.conv_offset_mask.weight"]
    )


def test_detectron2_resnet_stride_placement():
    body = detectron2_resnet(50)
    assert body.layer3[0].conv1.stride == (2, 2) and body.layer3[0].conv2.stride == (1, 1)
    plain = detectron2_resnet(50, stride_in_1x1=False)
    assert plain.layer3[0].conv1.stride == (1, 1) and plain.layer3[0].conv2.stride == (2, 2)
    assert isinstance(body.bn1, FrozenBatchNorm2d)
    feats = BackboneWithFaPN(
        body, {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}, [256, 512, 1024, 2048], 256
    )(torch.rand(1, 3, 64, 64))
    assert isinstance(feats, OrderedDict) and [f.shape[-1] for f in feats.values()] == [16, 8, 4, 2, 1]
