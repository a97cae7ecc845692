"""MaskFormer: matching against brute force, losses against a hand computation, the pixel decoders against a
second implementation of the authors' forward, training/eval contract on a CNN and a transformer encoder."""

from __future__ import annotations

import io
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d

pytest.importorskip("scipy")
pytest.importorskip("timm")

from fapn.layers import FeatureAlignModule
from fapn.models import get_model, list_models
from fapn.models.maskformer import (
    HungarianMatcher,
    MaskFormerLoss,
    PixelDecoder,
    maskformer_fapn,
    maskformer_fpn,
    semantic_inference,
    semantic_to_segments,
)

TINY = dict(num_queries=6, hidden_dim=32, nheads=2, dim_feedforward=64, dec_layers=2, conv_dim=32, mask_dim=16)
TINY_SWIN = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), drop_path_rate=0.0)  # no random
# stochastic depth: a dropped block would get no gradient
ENCODERS = {
    "cnn": dict(backbone="timm:test_convnext"),
    "swin": dict(backbone="timm:swin_tiny_patch4_window7_224", backbone_kwargs=TINY_SWIN),
}


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------- matching


def _reference_cost(class_logits, mask_logits, labels, masks, weights=(1.0, 20.0, 1.0)):
    """MaskFormer's matching cost, one pair at a time, in float64 python arithmetic over pixels."""
    prob = class_logits.double().softmax(-1)
    cost = torch.zeros(class_logits.shape[0], len(labels), dtype=torch.float64)
    for q in range(class_logits.shape[0]):
        p = mask_logits[q].double().flatten().sigmoid()
        for m in range(len(labels)):
            t = masks[m].double().flatten()
            focal = 0.0
            for pi, ti in zip(p.tolist(), t.tolist()):
                if ti == 1:
                    focal += 0.25 * (1 - pi) ** 2 * -math.log(pi)
                else:
                    focal += 0.75 * pi**2 * -math.log(1 - pi)
            focal /= len(p)
            dice = 1 - (2 * (p * t).sum().item() + 1) / (p.sum().item() + t.sum().item() + 1)
            cost[q, m] = -weights[0] * prob[q, labels[m]] + weights[1] * focal + weights[2] * dice
    return cost


@pytest.mark.parametrize(("queries", "segments", "seed"), [(4, 3, 0), (5, 2, 1), (3, 3, 2), (5, 4, 3)])
def test_matching_is_the_brute_force_optimum(queries: int, segments: int, seed: int) -> None:
    torch.manual_seed(seed)
    class_logits = torch.randn(queries, 4) * 2
    mask_logits = torch.randn(queries, 6, 6) * 2
    labels = torch.randint(0, 3, (segments,))
    masks = torch.rand(segments, 6, 6) > 0.5
    matcher = HungarianMatcher()
    reference = _reference_cost(class_logits, mask_logits, labels, masks)
    torch.testing.assert_close(
        matcher.cost_matrix(class_logits, mask_logits, labels, masks).double(), reference, rtol=1e-5, atol=1e-5
    )
    rows, cols = matcher.match(class_logits, mask_logits, labels, masks)
    assert sorted(cols.tolist()) == list(range(segments))
    best = min(
        sum(reference[q, m].item() for m, q in enumerate(assignment))
        for assignment in itertools.permutations(range(queries), segments)
    )
    assert reference[rows, cols].sum().item() == pytest.approx(best, abs=1e-9)


def test_matching_resizes_targets_nearest_and_handles_no_segment() -> None:
    torch.manual_seed(0)
    matcher = HungarianMatcher()
    class_logits, mask_logits = torch.randn(3, 3), torch.randn(3, 4, 4)
    labels, masks = torch.tensor([1]), torch.rand(1, 8, 8) > 0.5
    small = F.interpolate(masks[:, None].float(), size=(4, 4), mode="nearest")[:, 0]
    torch.testing.assert_close(
        matcher.cost_matrix(class_logits, mask_logits, labels, masks),
        matcher.cost_matrix(class_logits, mask_logits, labels, small),
    )
    rows, cols = matcher.match(
        class_logits, mask_logits, torch.tensor([], dtype=torch.long), torch.zeros(0, 8, 8, dtype=torch.bool)
    )
    assert rows.numel() == cols.numel() == 0


# --------------------------------------------------------------------------------------------- losses


def test_losses_against_a_hand_computation() -> None:
    # One image, 3 queries, 2 classes (+ no-object), 2x2 masks at the targets' size (no resize).
    class_logits = torch.tensor([[[4.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 4.0, 0.0]]])  # q0 -> 0, q2 -> 1
    mask_logits = torch.tensor([[[[2.0, -1.0], [0.5, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[-2.0, 1.0], [-0.5, 3.0]]]])
    labels = [torch.tensor([0, 1])]
    masks = [torch.tensor([[[1, 0], [1, 0]], [[0, 1], [0, 1]]], dtype=torch.bool)]
    loss = MaskFormerLoss(num_classes=2)
    out = loss(class_logits[None], mask_logits[None], labels, masks)

    def log_softmax(row: list[float], k: int) -> float:
        return row[k] - math.log(sum(math.exp(v) for v in row))

    rows = class_logits[0].tolist()
    # targets: q0 -> class 0, q1 -> no-object (2, weight 0.1), q2 -> class 1
    ce = -(1.0 * log_softmax(rows[0], 0) + 0.1 * log_softmax(rows[1], 2) + 1.0 * log_softmax(rows[2], 1)) / 2.1

    def sig(v: float) -> float:
        return 1 / (1 + math.exp(-v))

    focal_sum, dice_sum = 0.0, 0.0
    for q, m in ((0, 0), (2, 1)):
        logits = mask_logits[0, q].flatten().tolist()
        target = masks[0][m].flatten().float().tolist()
        terms = []
        for x, t in zip(logits, target):
            p = sig(x)
            ce_px = -(t * math.log(p) + (1 - t) * math.log(1 - p))
            p_t = p * t + (1 - p) * (1 - t)
            alpha_t = 0.25 * t + 0.75 * (1 - t)
            terms.append(alpha_t * ce_px * (1 - p_t) ** 2)
        focal_sum += sum(terms) / 4
        probs = [sig(x) for x in logits]
        dice_sum += 1 - (2 * sum(p * t for p, t in zip(probs, target)) + 1) / (sum(probs) + sum(target) + 1)
    assert out["loss_ce"].item() == pytest.approx(ce, rel=1e-5)
    assert out["loss_mask"].item() == pytest.approx(20 * focal_sum / 2, rel=1e-5)
    assert out["loss_dice"].item() == pytest.approx(dice_sum / 2, rel=1e-5)
    assert set(out) == {"loss_ce", "loss_mask", "loss_dice"}


def test_semantic_targets_skip_the_ignore_label() -> None:
    target = torch.tensor([[3, 3, 255], [0, 3, 255]])
    labels, masks = semantic_to_segments(target)
    assert labels.tolist() == [0, 3]
    assert masks.sum().item() == 4 and not masks[:, :, 2].any()


def test_semantic_inference_is_the_einsum_of_probabilities_and_masks() -> None:
    torch.manual_seed(0)
    class_logits, mask_logits = torch.randn(1, 4, 3), torch.randn(1, 4, 5, 5)
    probs, masks = class_logits.softmax(-1), mask_logits.sigmoid()
    expected = sum(probs[0, q, :2, None, None] * masks[0, q] for q in range(4))
    torch.testing.assert_close(semantic_inference(class_logits, mask_logits)[0], expected)


# --------------------------------------------------------------------------------------------- pixel decoders


def _reference_decoder(decoder: PixelDecoder, features: list[torch.Tensor], align: bool) -> torch.Tensor:
    """The authors' BasePixelDecoder / BasePixelFANDecoder forward, written out with the module's weights."""

    def conv(module, x, padding):
        y = F.conv2d(x, module.weight, module.bias, padding=padding)
        return y if module.norm is None else F.group_norm(y, 32, module.norm.weight, module.norm.bias)

    y = F.relu(conv(decoder.top, features[-1], 1))
    for i, x in enumerate(reversed(features[:-1])):
        lateral, output_conv = decoder.laterals[i], decoder.output_convs[i]
        if align:
            l_feat = conv(lateral.lateral, x, 0)
            up = F.interpolate(y, size=l_feat.shape[-2:], mode="bilinear", align_corners=False)
            o = conv(lateral.offset_fuse, torch.cat([l_feat, 2 * up], 1), 0)
            om = F.conv2d(o, lateral.offset_mask.weight, lateral.offset_mask.bias, padding=1)
            offset, mask = om[:, :144], om[:, 144:].sigmoid()  # 8 groups: 2*8*9 offsets, 8*9 masks
            a = deform_conv2d(up, offset, lateral.deform.weight, lateral.deform.bias, padding=1, mask=mask)
            y = F.relu(a) + l_feat
        else:
            l_feat = conv(lateral, x, 0)
            y = l_feat + F.interpolate(y, size=l_feat.shape[-2:], mode="nearest")
        y = F.relu(conv(output_conv, y, 1))
    return F.conv2d(y, decoder.mask_features.weight, decoder.mask_features.bias, padding=1)


@pytest.mark.parametrize("align", [True, False], ids=["fapn", "fpn"])
def test_pixel_decoder_equals_the_authors_forward(align: bool) -> None:
    torch.manual_seed(0)
    channels = [8, 16, 24, 40]
    decoder = PixelDecoder(channels, conv_dim=32, mask_dim=16, feature_alignment=align).double()
    with torch.no_grad():  # move off the zero initialisation and the unit GroupNorm so every term counts
        for module in decoder.modules():
            if isinstance(module, FeatureAlignModule):
                module.offset_mask.weight.normal_(std=0.05)
                module.offset_mask.bias.normal_(std=0.5)
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.normal_(1, 0.2)
                module.bias.normal_(0, 0.2)
    features = [
        torch.randn(2, c, 33 // s + 1, 45 // s + 1, dtype=torch.float64) for c, s in zip(channels, (1, 2, 4, 8))
    ]
    torch.testing.assert_close(decoder(features), _reference_decoder(decoder, features, align), rtol=1e-10, atol=1e-10)


def test_fapn_decoder_fam_is_feature_align_module_without_fsm_and_shares_the_norm() -> None:
    decoder = PixelDecoder([8, 16, 24, 40], conv_dim=32, mask_dim=16)
    for fam, output_conv in zip(decoder.laterals, decoder.output_convs):
        assert isinstance(fam, FeatureAlignModule)
        assert fam.upsample_mode == "bilinear" and fam.fusion == "sum" and fam.offset_groups == 8
        assert isinstance(fam.lateral, torch.nn.Conv2d) and fam.lateral.bias is None  # 1x1 + GN, no FSM
        assert isinstance(fam.offset_fuse.norm, torch.nn.GroupNorm)
        assert output_conv.norm is fam.offset_fuse.norm  # one get_norm module for both in the authors' code
        # Same weights, same outputs as a stand-alone FeatureAlignModule with the FSM off.
        standalone = FeatureAlignModule(fam.in_channels, 32, feature_selection=False, norm="GN")
        standalone.load_state_dict(fam.state_dict())
        lateral, coarse = torch.randn(1, fam.in_channels, 10, 12), torch.randn(1, 32, 5, 6)
        torch.testing.assert_close(standalone(lateral, coarse), fam(lateral, coarse))
    unshared = PixelDecoder([8, 16, 24, 40], conv_dim=32, mask_dim=16, share_offset_norm=False)
    assert sum(p.numel() for p in unshared.parameters()) - sum(p.numel() for p in decoder.parameters()) == 3 * 64


# --------------------------------------------------------------------------------------------- whole model


def test_builders_are_registered() -> None:
    assert {"maskformer_fapn", "maskformer_fpn"} <= set(list_models(task="semseg"))
    model = get_model("maskformer_fpn", num_classes=3, **ENCODERS["cnn"], **TINY)
    assert model.computes_loss and not model.pixel_decoder.feature_alignment


@pytest.mark.parametrize(
    ("builder", "encoder"), [(maskformer_fapn, "swin"), (maskformer_fpn, "cnn")], ids=["fapn-swin", "fpn-cnn"]
)
def test_train_losses_backward_and_eval_scores(builder, encoder: str) -> None:
    torch.manual_seed(0)
    model = builder(num_classes=4, **ENCODERS[encoder], **TINY)
    images = torch.randn(2, 3, 40, 60)
    targets = torch.randint(0, 4, (2, 40, 60))
    targets[0, :10] = 255
    targets[1] = 255  # an image with no labelled pixel
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(2):  # after one step the zero offset/mask conv passes gradient to the offset conv
        model.train()
        optimizer.zero_grad()
        losses = model(images, targets)
        assert set(losses) == {f"loss_{k}{s}" for k in ("ce", "mask", "dice") for s in ("", "_0")}
        total = sum(losses.values())
        assert torch.isfinite(total)
        total.backward()
        optimizer.step()
    dead = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []
    model.eval()
    with torch.no_grad():
        scores = model(images)
    assert scores.shape == (2, 4, 40, 60)
    assert torch.isfinite(scores).all() and (scores >= 0).all()


def test_eval_pads_and_crops_and_round_trips() -> None:
    torch.manual_seed(0)
    model = maskformer_fapn(num_classes=3, **ENCODERS["cnn"], **TINY).eval()
    images = torch.randn(2, 3, 40, 57)
    with torch.no_grad():
        scores = model(images)
        class_logits, mask_logits = model.predict_masks(F.pad(images, (0, 7, 0, 24)))
        masks = F.interpolate(mask_logits[-1], size=(64, 64), mode="bilinear", align_corners=False)
        torch.testing.assert_close(scores, semantic_inference(class_logits[-1], masks)[..., :40, :57])
        torch.testing.assert_close(model(images[1:]), scores[1:], rtol=1e-4, atol=1e-5)  # batch independence
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    clone = maskformer_fapn(num_classes=3, **ENCODERS["cnn"], **TINY).eval()
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    with torch.no_grad():
        torch.testing.assert_close(clone(images), scores, rtol=0, atol=0)


def test_bad_inputs_give_clear_errors() -> None:
    model = maskformer_fpn(num_classes=3, **ENCODERS["cnn"], **TINY)
    with pytest.raises(ValueError, match="needs targets"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="expected targets of shape"):
        model(torch.randn(1, 3, 32, 32), torch.zeros(1, 16, 16, dtype=torch.long))
    with pytest.raises(ValueError, match="target class 7 is out of range for 3 classes"):
        model(torch.randn(1, 3, 32, 32), torch.full((1, 32, 32), 7))
    with pytest.raises(ValueError, match=r"expected a 4-D image batch \[N, 3, H, W\]"):
        model.eval()(torch.randn(3, 64, 64))


@pytest.mark.slow
def test_onnx_export_matches_pytorch_in_onnxruntime(tmp_path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from fapn.export.onnx import export_onnx, onnx_op_counts

    torch.manual_seed(0)
    # one decoder layer: the graph's size, not the arithmetic, sets the export time
    model = maskformer_fapn(num_classes=3, backbone="resnet18", **{**TINY, "conv_dim": 64, "dec_layers": 1}).eval()
    with torch.no_grad():  # non-zero offsets, so the DeformConv translation is really exercised
        for module in model.modules():
            if isinstance(module, FeatureAlignModule):
                module.offset_mask.weight.normal_(std=0.05)
    report = export_onnx(model, tmp_path / "maskformer.onnx", check_shapes=[(1, 3, 64, 96), (2, 3, 70, 50)])
    assert report is not None and report.passed, report.summary()
    assert onnx_op_counts(tmp_path / "maskformer.onnx")["DeformConv"] == 3
