"""PointRend: point sampling against a hand-written bilinear interpolation in float64, point selection on
constructed cases, the heads' structure, subdivision inference against the point head applied everywhere, and
forward/backward of every builder."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from fapn.models import get_model, list_models
from fapn.models.pointrend import (
    CoarseMaskHead,
    PointRendMaskHead,
    PointRendSemanticFPN,
    StandardPointHead,
    mask_uncertainty,
    point_sample,
    regular_grid_points,
    roi_point_features,
    semantic_uncertainty,
    uncertain_points_on_grid,
    uncertain_points_with_randomness,
)
from fapn.models.pointrend.mask_rcnn import _sample_gt_masks


def bilinear_by_hand(image: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Value of ``image`` [C, H, W] at normalised (x, y): pixel centres at (i + 0.5) / W, zeros outside."""
    _, height, width = image.shape
    px, py = x * width - 0.5, y * height - 0.5
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(image.shape[0], dtype=torch.float64)
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= yy < height and 0 <= xx < width:
                out += wy * wx * image[:, yy, xx]
    return out


def test_point_sample_is_bilinear_interpolation_in_float64() -> None:
    gen = torch.Generator().manual_seed(0)
    feature = torch.randn(2, 3, 5, 7, dtype=torch.float64, generator=gen)
    coords = torch.rand(2, 40, 2, dtype=torch.float64, generator=gen)
    coords[0, :4] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.5, 0.02]], dtype=torch.float64)
    sampled = point_sample(feature, coords)
    assert sampled.shape == (2, 3, 40) and sampled.dtype == torch.float64
    for r in range(2):
        for p in range(40):
            expected = bilinear_by_hand(feature[r], float(coords[r, p, 0]), float(coords[r, p, 1]))
            torch.testing.assert_close(sampled[r, :, p], expected, rtol=0, atol=1e-12)


def test_point_sample_nearest_and_grid_form() -> None:
    labels = torch.arange(12.0).view(1, 1, 3, 4)
    centres = regular_grid_points(1, 2)  # (0.25, 0.25) ... lands on pixel centres of a 2x2 grid only
    assert point_sample(labels, torch.tensor([[[0.6, 0.9]]]), mode="nearest").item() == 10.0  # row 2, col 2
    grid = point_sample(labels, centres.view(1, 2, 2, 2))
    assert grid.shape == (1, 1, 2, 2)
    with pytest.raises(ValueError, match="coords"):
        point_sample(labels, torch.zeros(1, 5))


def test_regular_grid_matches_detectron2_affine_grid() -> None:
    # detectron2 builds the grid with affine_grid([[0.5, 0, 0.5], [0, 0.5, 0.5]]) over a side x side map
    aff = torch.tensor([[[0.5, 0, 0.5], [0, 0.5, 0.5]]])
    reference = F.affine_grid(aff, [1, 1, 7, 7], align_corners=False).view(1, -1, 2)
    torch.testing.assert_close(regular_grid_points(3, 7), reference.expand(3, -1, -1))


def test_uncertainties() -> None:
    logits = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    ordered = logits.sort(dim=1, descending=True).values
    torch.testing.assert_close(semantic_uncertainty(logits), (ordered[:, 1] - ordered[:, 0]).unsqueeze(1))
    classes = torch.tensor([4, 1])
    expected = torch.stack([-logits[0, 4].abs(), -logits[1, 1].abs()]).unsqueeze(1)
    torch.testing.assert_close(mask_uncertainty(logits, classes), expected)
    torch.testing.assert_close(mask_uncertainty(logits[:, :1], classes), -logits[:, :1].abs())


def test_training_points_are_the_most_uncertain_candidates() -> None:
    # Mask logits that grow with |x - c| (c a pixel centre, so that bilinear interpolation keeps the shape): the
    # uncertain points are those closest to the vertical line x = c, except in the zero-padded border band.
    side = 16
    line = 6.5 / side
    centres = (torch.arange(side, dtype=torch.float64) + 0.5) / side
    logits = (centres - line).abs().expand(side, side).reshape(1, 1, side, side).repeat(2, 1, 1, 1) * 10
    num_points, ratio, beta = 40, 3, 0.75
    selected = uncertain_points_with_randomness(
        logits,
        lambda x: mask_uncertainty(x, torch.zeros(2, dtype=torch.long)),
        num_points,
        ratio,
        beta,
        generator=torch.Generator().manual_seed(3),
    )
    assert selected.shape == (2, num_points, 2)
    # Replay the same draws: the candidates, then the random points.
    gen = torch.Generator().manual_seed(3)
    candidates = torch.rand(2, num_points * ratio, 2, generator=gen)
    extra = torch.rand(2, num_points - int(beta * num_points), 2, generator=gen)
    num_chosen = int(beta * num_points)
    for r in range(2):
        # uncertainty of the sampled logit, by hand: -|bilinear(logits)|
        scores = torch.tensor(
            [-bilinear_by_hand(logits[r], float(x), float(y)).abs().item() for x, y in candidates[r]],
            dtype=torch.float64,
        )
        best = scores.topk(num_chosen).indices
        assert set(map(tuple, selected[r, :num_chosen].tolist())) == set(map(tuple, candidates[r, best].tolist()))
        torch.testing.assert_close(selected[r, num_chosen:], extra[r])
        # and, away from the zero-padded border band, they are the candidates nearest the line
        inner = (candidates[r] > 0.5 / side).all(1) & (candidates[r] < 1 - 0.5 / side).all(1)
        chosen = torch.zeros(len(candidates[r]), dtype=torch.bool)
        chosen[best] = True
        distance = (candidates[r][:, 0] - line).abs()
        assert distance[chosen & inner].max() <= distance[~chosen & inner].min() + 1e-6
    with pytest.raises(ValueError, match="oversample_ratio"):
        uncertain_points_with_randomness(logits, semantic_uncertainty, 4, 0.5)


def test_grid_selection_returns_cell_centres_of_the_top_cells() -> None:
    uncertainty = torch.zeros(1, 1, 3, 5)
    uncertainty[0, 0, 2, 1], uncertainty[0, 0, 0, 4] = 5.0, 3.0
    indices, coords = uncertain_points_on_grid(uncertainty, 2)
    assert indices.tolist() == [[11, 4]]
    torch.testing.assert_close(coords, torch.tensor([[[1.5 / 5, 2.5 / 3], [4.5 / 5, 0.5 / 3]]]))
    assert uncertain_points_on_grid(uncertainty, 100)[0].shape == (1, 15)


def test_roi_point_features_on_a_grid_is_roi_align_aligned() -> None:
    gen = torch.Generator().manual_seed(1)
    feature = torch.randn(2, 4, 24, 32, dtype=torch.float64, generator=gen)
    boxes = [
        torch.tensor([[10.0, 8.0, 60.0, 50.0], [30.5, 20.25, 90.0, 70.0]], dtype=torch.float64),
        torch.tensor([[5.0, 5.0, 120.0, 90.0]], dtype=torch.float64),
    ]
    grid = regular_grid_points(3, 14, dtype=torch.float64)
    ours = roi_point_features(feature, boxes, grid, stride=4).view(3, 4, 14, 14)
    rois = torch.cat([torch.tensor([[0.0], [0.0], [1.0]], dtype=torch.float64), torch.cat(boxes)], dim=1)
    reference = roi_align(feature, rois, (14, 14), spatial_scale=0.25, sampling_ratio=1, aligned=True)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-12)
    assert roi_point_features(feature, [boxes[0][:0], boxes[1][:0]], grid[:0], 4).shape == (0, 4, 196)


def test_sampled_mask_labels() -> None:
    masks = [torch.zeros(2, 20, 30, dtype=torch.uint8), torch.zeros(1, 20, 30, dtype=torch.uint8)]
    masks[0][0, :, :15] = 1
    masks[0][1, 10:] = 1
    masks[1][0] = 1
    boxes = [
        torch.tensor([[0.0, 0.0, 30.0, 20.0], [0.0, 0.0, 30.0, 20.0], [10.0, 0.0, 20.0, 20.0]]),
        torch.tensor([[0.0, 0.0, 30.0, 20.0]]),
    ]
    matched = [torch.tensor([0, 1, 0]), torch.tensor([0])]
    coords = torch.tensor([[[0.25, 0.5], [0.75, 0.75]]]).repeat(4, 1, 1)
    labels = _sample_gt_masks(masks, boxes, matched, coords)
    # RoI 0: mask 0 (left half) at x = 7.5 and 22.5; RoI 1: mask 1 (bottom half) at y = 10 (edge) and 15;
    # RoI 2: mask 0 in box x 10..20 at x = 12.5 and 17.5 (edge at 15 lies between them); RoI 3: all ones.
    torch.testing.assert_close(labels, torch.tensor([[1.0, 0.0], [0.5, 1.0], [1.0, 0.0], [1.0, 1.0]]))


def test_point_head_layers_and_coarse_pred_each_layer() -> None:
    head = StandardPointHead(256, 19, coarse_pred_each_layer=False)
    assert [n for n, _ in head.named_children()] == ["fc1", "fc2", "fc3", "predictor"]
    assert head.fc1.in_channels == 256 + 19 and head.fc2.in_channels == 256 and head.predictor.in_channels == 256
    each = StandardPointHead(256, 80)
    assert each.fc2.in_channels == 256 + 80 and each.predictor.in_channels == 256 + 80
    assert float(each.predictor.weight.std()) == pytest.approx(0.001, rel=0.1)
    assert torch.count_nonzero(each.predictor.bias) == 0
    x, coarse = torch.randn(2, 256, 7), torch.randn(2, 80, 7)
    # by hand: ReLU MLP with the coarse prediction appended after each hidden layer
    h = torch.cat([x, coarse], 1)
    for fc in (each.fc1, each.fc2, each.fc3):
        h = torch.cat([F.relu(fc(h)), coarse], 1)
    torch.testing.assert_close(each(x, coarse), each.predictor(h))
    with pytest.raises(ValueError, match="channels"):
        each(x, coarse[:, :3])


def test_coarse_mask_head_paper_sizes() -> None:
    head = CoarseMaskHead(256, 80)
    assert head.reduce_channel_dim_conv is None
    assert head.reduce_spatial_dim_conv.kernel_size == (2, 2) and head.reduce_spatial_dim_conv.stride == (2, 2)
    assert head.fc1.in_features == 256 * 7 * 7 and head.fc1.out_features == 1024 and head.fc2.out_features == 1024
    assert head.prediction.out_features == 80 * 7 * 7
    assert head(torch.randn(3, 256, 14, 14)).shape == (3, 80, 7, 7)
    assert CoarseMaskHead(512, 2, conv_dim=256).reduce_channel_dim_conv is not None
    with pytest.raises(ValueError, match="14x14"):
        head(torch.randn(1, 256, 7, 7))


class TinyPyramid(nn.Module):
    """P2-P5 of 8 channels (strides 4-32), fast enough for exact checks."""

    out_channels = 8

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 4, stride=4)
        self.downs = nn.ModuleList(nn.Conv2d(8, 8, 3, stride=2, padding=1) for _ in range(3))

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = [self.stem(x)]
        for down in self.downs:
            maps.append(down(maps[-1]))
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


def tiny_semantic(**kwargs) -> PointRendSemanticFPN:
    torch.manual_seed(0)
    options = dict(conv_dims=8, norm_groups=2, point_fc_dim=16, train_num_points=30, subdivision_num_points=50)
    options.update(kwargs)
    return PointRendSemanticFPN(TinyPyramid(), 4, **options)


@pytest.mark.parametrize("size", [(67, 99), (32, 32), (45, 130)])
def test_semantic_inference_full_resolution_for_odd_sizes(size: tuple[int, int]) -> None:
    model = tiny_semantic().eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 4, *size) and torch.isfinite(out).all()


def test_semantic_subdivision_with_every_point_is_the_point_head_everywhere() -> None:
    model = tiny_semantic(subdivision_steps=2, subdivision_num_points=10**6).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
        features = list(model.backbone(x).values())
        coarse = model.coarse_head.layers(features)
        centres = regular_grid_points(1, 1)  # placeholder to get dtype/device
        ys = (torch.arange(64) + 0.5) / 64
        xs = (torch.arange(96) + 0.5) / 96
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        points = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)[None].to(centres)
        expected = model.point_head(point_sample(features[0], points), point_sample(coarse, points))
    torch.testing.assert_close(out.reshape(1, 4, -1), expected, rtol=1e-5, atol=1e-5)


def test_semantic_subdivision_keeps_certain_pixels_bilinear() -> None:
    model = tiny_semantic(subdivision_steps=1, subdivision_num_points=1).eval()
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        out = model(x)
        coarse = model.coarse_head.layers(list(model.backbone(x).values()))
        upsampled = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=False)
        upsampled = F.interpolate(upsampled, size=(32, 64), mode="bilinear", align_corners=False)
    differs = (out - upsampled).abs().amax(1) > 1e-6
    assert 1 <= int(differs.sum()) <= 4 * 4  # one refined cell of the 16x32 grid, spread by the final resize


def test_semantic_losses_backward_and_ignore() -> None:
    model = tiny_semantic().train()
    x = torch.randn(2, 3, 50, 70)
    target = torch.randint(0, 4, (2, 50, 70))
    target[:, :10] = 255
    losses = model(x, target)
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_point"}
    sum(losses.values()).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or torch.count_nonzero(p.grad) == 0]
    assert dead == []
    everything_ignored = model(x, torch.full((2, 50, 70), 255))
    assert all(float(v) == 0.0 for v in everything_ignored.values())
    with pytest.raises(ValueError, match="targets"):
        model(x)
    with pytest.raises(ValueError, match="expected targets of shape"):
        model(x, target[:, :10])


def test_semantic_coarse_loss_is_detectron2s() -> None:
    model = tiny_semantic().train()
    x, target = torch.randn(1, 3, 64, 64), torch.randint(0, 4, (1, 64, 64))
    losses = model(x, target)
    coarse = model.coarse_head.layers(list(model.backbone(x).values()))
    expected = F.cross_entropy(F.interpolate(coarse, scale_factor=4, mode="bilinear", align_corners=False), target)
    torch.testing.assert_close(losses["loss_sem_seg"], expected)


def tiny_mask_head(**kwargs) -> PointRendMaskHead:
    torch.manual_seed(0)
    options = dict(conv_dim=8, fc_dims=(32,), point_fc_dim=16, train_num_points=20)
    options.update(kwargs)
    return PointRendMaskHead(8, 3, **options)


def test_mask_head_subdivision_schedule_matches_detectron2() -> None:
    head = tiny_mask_head()  # 7x7 coarse, 5 steps of 784 points: detectron2 starts at 28 with 3 steps
    assert (head.subdivision_init_resolution, head.subdivision_steps) == (28, 3)
    head = tiny_mask_head(subdivision_num_points=100)
    assert (head.subdivision_init_resolution, head.subdivision_steps) == (7, 5)


def test_mask_head_prediction_against_the_point_head_everywhere() -> None:
    features = {"0": torch.randn(2, 8, 20, 24)}
    boxes = [torch.tensor([[4.0, 6.0, 50.0, 40.0], [10.0, 10.0, 90.0, 70.0]]), torch.tensor([[0.0, 0.0, 30.0, 30.0]])]
    labels = [torch.tensor([1, 3]), torch.tensor([2])]

    def everywhere(head: PointRendMaskHead, side: int) -> torch.Tensor:
        coarse = head.coarse_masks(features["0"], boxes)
        logits = head.point_logits(features["0"], boxes, regular_grid_points(3, side), coarse).view(3, 3, side, side)
        return logits[torch.arange(3), torch.tensor([0, 2, 1])].sigmoid()

    # enough points for the whole grid: the initial grid grows to 28 and no subdivision is left
    head = tiny_mask_head(subdivision_steps=2, subdivision_num_points=10**6).eval()
    assert (head.subdivision_init_resolution, head.subdivision_steps) == (28, 0)
    with torch.no_grad():
        masks = head.predict(features, boxes, labels)
        assert [m.shape for m in masks] == [(2, 1, 28, 28), (1, 1, 28, 28)]
        torch.testing.assert_close(torch.cat(masks)[:, 0], everywhere(head, 28))
    # one step from 7x7 with all but one of the 14x14 cells recomputed: at most one cell per RoI differs
    head = tiny_mask_head(subdivision_steps=1, subdivision_num_points=4 * 49 - 1).eval()
    assert (head.subdivision_init_resolution, head.subdivision_steps) == (7, 1)
    with torch.no_grad():
        got = torch.cat(head.predict(features, boxes, labels))[:, 0]
        differs = ((got - everywhere(head, 14)).abs() > 1e-6).flatten(1).sum(1)
    assert differs.max() <= 1
    empty = head.predict(features, [boxes[0][:0], boxes[1][:0]], [labels[0][:0], labels[1][:0]])
    assert [m.shape for m in empty] == [(0, 1, 14, 14), (0, 1, 14, 14)]


def test_mask_head_losses_backward() -> None:
    head = tiny_mask_head().train()
    features = {"0": torch.randn(1, 8, 20, 24, requires_grad=True)}
    masks = torch.zeros(2, 80, 96, dtype=torch.uint8)
    masks[0, 10:40, 10:50], masks[1, 30:70, 40:90] = 1, 1
    boxes = [torch.tensor([[8.0, 9.0, 52.0, 41.0], [38.0, 28.0, 91.0, 72.0], [12.0, 10.0, 50.0, 40.0]])]
    losses = head.losses(features, boxes, [masks], [torch.tensor([1, 3])], [torch.tensor([0, 1, 0])])
    assert set(losses) == {"loss_mask", "loss_mask_point"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in head.parameters())
    none = head.losses(features, [boxes[0][:0]], [masks], [torch.tensor([1, 3])], [torch.tensor([], dtype=torch.long)])
    assert all(float(v) == 0.0 for v in none.values())


SEMANTIC = [
    "pointrend_semantic_resnet50_fapn",
    "pointrend_semantic_resnet101_fapn",
    "pointrend_semantic_resnet50_fpn",
    "pointrend_semantic_resnet101_fpn",
    "detectron2_pointrend_semantic",
]
INSTANCE = ["pointrend_maskrcnn_resnet50_fapn", "pointrend_maskrcnn_resnet50_fpn", "detectron2_pointrend_rcnn"]
SMALL_RCNN = dict(
    min_size=96,
    max_size=96,
    rpn_pre_nms_top_n_train=50,
    rpn_post_nms_top_n_train=20,
    rpn_pre_nms_top_n_test=50,
    rpn_post_nms_top_n_test=20,
    box_batch_size_per_image=8,
    box_detections_per_img=4,
)


def test_builders_are_registered() -> None:
    # every one also goes through the registry-wide contract tests (tests/test_models_contract.py)
    assert set(SEMANTIC) <= set(list_models(task="semseg"))
    assert set(INSTANCE) <= set(list_models(task="detection"))


@pytest.mark.slow
def test_semantic_builder_forward_backward() -> None:
    torch.manual_seed(0)
    model = get_model(
        "pointrend_semantic_resnet50_fapn",
        num_classes=3,
        ignore_index=7,
        train_num_points=16,
        subdivision_num_points=64,
    )
    assert model.computes_loss and model.ignore_index == 7
    assert (model.train_num_points, model.subdivision_steps) == (16, 2)
    losses = model.train()(torch.randn(1, 3, 64, 64), torch.randint(0, 3, (1, 64, 64)))
    sum(losses.values()).backward()
    assert model.point_head.fc1.weight.grad is not None and model.coarse_head.predictor.weight.grad is not None
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 33, 47)).shape == (1, 3, 33, 47)


def test_semantic_builder_defaults_are_the_authors() -> None:
    with torch.device("meta"):
        model = get_model("pointrend_semantic_resnet50_fapn", num_classes=19)
    assert (model.train_num_points, model.oversample_ratio, model.importance_sample_ratio) == (2048, 3.0, 0.75)
    assert (model.subdivision_steps, model.subdivision_num_points) == (2, 8192)
    assert not model.point_head.coarse_pred_each_layer and model.coarse_head.predictor.in_channels == 128
    assert model.point_head.fc1.in_channels == 256 + 19


@pytest.mark.slow
def test_instance_builder_forward_backward() -> None:
    torch.manual_seed(0)
    model = get_model(
        "pointrend_maskrcnn_resnet50_fapn",
        num_classes=3,
        **SMALL_RCNN,
        mask_head_kwargs={"subdivision_num_points": 64, "train_num_points": 16},
    )
    masks = torch.zeros(2, 90, 96, dtype=torch.uint8)
    masks[0, 10:50, 20:80], masks[1, 40:90, 50:96] = 1, 1
    target = {
        "boxes": torch.tensor([[20.0, 10.0, 80.0, 50.0], [50.0, 40.0, 96.0, 90.0]]),
        "labels": torch.tensor([1, 2]),
        "masks": masks,
    }
    losses = model.train()([torch.rand(3, 90, 96)], [target])
    assert {"loss_mask", "loss_mask_point", "loss_classifier", "loss_objectness"} <= set(losses)
    sum(losses.values()).backward()
    head = model.roi_heads.mask_head
    assert head.point_head.fc1.weight.grad is not None and head.coarse_head.fc1.weight.grad is not None
    with torch.no_grad():
        out = model.eval()([torch.rand(3, 90, 96)])[0]
    assert out["masks"].shape[1:] == (1, 90, 96) and len(out["masks"]) == len(out["boxes"]) <= 4
    with pytest.raises(ValueError, match="masks"):
        model.train()([torch.rand(3, 90, 96)], [{k: v for k, v in target.items() if k != "masks"}])


def test_instance_builder_defaults_are_the_authors() -> None:
    with torch.device("meta"):
        model = get_model("pointrend_maskrcnn_resnet50_fapn", num_classes=81)
    head = model.roi_heads.mask_head
    assert model.roi_heads.train_on_pred_boxes
    assert (head.train_num_points, head.oversample_ratio, head.importance_sample_ratio) == (196, 3.0, 0.75)
    assert (head.subdivision_init_resolution, head.subdivision_steps, head.subdivision_num_points) == (28, 3, 784)
    assert head.pooler_size == 14 and head.coarse_head.output_size == 7 and head.num_classes == 80
    assert head.point_head.coarse_pred_each_layer and head.point_head.fc1.in_channels == 256 + 80


def test_semantic_builder_on_a_timm_encoder() -> None:
    # PointRend takes timm encoders like every builder (timm's test_convnext: a few thousand parameters)
    pytest.importorskip("timm")
    torch.manual_seed(0)
    model = get_model(
        "pointrend_semantic",
        backbone="timm:test_convnext",
        num_classes=3,
        train_num_points=16,
        subdivision_num_points=64,
    )
    assert model.backbone.body.strides == [4, 8, 16, 32]
    losses = model.train()(torch.randn(1, 3, 64, 64), torch.randint(0, 3, (1, 64, 64)))
    sum(losses.values()).backward()
    assert model.point_head.fc1.weight.grad is not None
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 37, 53)).shape == (1, 3, 37, 53)
