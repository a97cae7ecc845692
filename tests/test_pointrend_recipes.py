"""PointRend recipes: the authors' values load, detectron2's augmentation pipeline is wired into the training
transforms, and ``fapn train`` runs PointRend semantic and PointRend Mask R-CNN end to end (reporting Boundary AP
beside mask AP)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import tv_tensors

from fapn.config import load_config
from fapn.data.augment import CategoryAreaCrop, ColorAugSSD
from fapn.data.transforms import train_transforms
from fapn.engine.detection.config import DetectionConfig
from fapn.engine.semseg.config import SegmentationConfig
from fapn.engine.semseg.data import recipe_train_transforms
from fapn.visualize.instances import draw_instances, instance_boundaries

SEMANTIC = {
    "semseg/cityscapes_pointrend_r50_fapn": "pointrend_semantic_resnet50_fapn",
    "semseg/cityscapes_pointrend_r101_fapn": "pointrend_semantic_resnet101_fapn",
    "semseg/cityscapes_pointrend_r50_fpn": "pointrend_semantic_resnet50_fpn",
    "semseg/cityscapes_pointrend_r101_fpn": "pointrend_semantic_resnet101_fpn",
}


@pytest.mark.parametrize("recipe", sorted(SEMANTIC))
def test_cityscapes_recipes_have_the_authors_values(recipe: str) -> None:
    cfg = load_config(recipe, SegmentationConfig)
    assert cfg.model.name == SEMANTIC[recipe] and cfg.model.frozen_bn
    assert cfg.model.options["train_num_points"] == 2048
    assert (cfg.model.options["subdivision_steps"], cfg.model.options["subdivision_num_points"]) == (2, 8192)
    assert cfg.data.crop_size == [512, 1024] and cfg.data.short_edges == list(range(512, 2049, 256))
    assert (cfg.data.max_size, cfg.data.single_category_max_area, cfg.data.color_aug_ssd) == (4096, 0.75, True)
    assert (cfg.optim.lr, cfg.optim.milestones, cfg.train.iterations, cfg.train.batch_size) == (
        0.01,
        [40000, 55000],
        65000,
        32,
    )
    assert (cfg.optim.schedule, cfg.optim.weight_decay, cfg.optim.weight_decay_norm) == ("multistep", 1e-4, 0.0)


@pytest.mark.parametrize(
    "recipe,neck", [("detection/pointrend_rcnn_R_50_FaPN_1x", "fapn"), ("detection/pointrend_rcnn_R_50_FPN_1x", "fpn")]
)
def test_coco_recipes(recipe: str, neck: str) -> None:
    cfg = load_config(recipe, DetectionConfig)
    assert (cfg.model.detector, cfg.model.neck, cfg.model.backbone) == ("pointrend_maskrcnn", neck, "resnet50")
    assert cfg.model.options["train_on_pred_boxes"] and cfg.model.options["rpn_post_nms_top_n_train"] == 1000
    assert cfg.model.options["mask_head_kwargs"]["train_num_points"] == 196
    assert (cfg.optim.lr, cfg.optim.milestones, cfg.train.iterations, cfg.train.batch_size) == (
        0.02,
        [60000, 80000],
        90000,
        16,
    )


def test_detectron2_pipeline_in_train_transforms() -> None:
    cfg = load_config("semseg/cityscapes_pointrend_r50_fapn", SegmentationConfig).data
    transform = recipe_train_transforms(cfg, 255)
    kinds = [type(t).__name__ for t in transform.transforms]
    assert kinds[:4] == ["RandomShortestSize", "CategoryAreaCrop", "ColorAugSSD", "RandomHorizontalFlip"]
    assert isinstance(transform.transforms[1], CategoryAreaCrop) and isinstance(transform.transforms[2], ColorAugSSD)
    torch.manual_seed(0)
    image = tv_tensors.Image(torch.randint(0, 256, (3, 64, 128), dtype=torch.uint8))
    mask = tv_tensors.Mask(torch.arange(64 * 128).view(64, 128) % 19)
    out_image, out_mask = transform(image, mask)
    assert out_image.shape == (3, 512, 1024) and out_image.dtype == torch.float32 and out_mask.shape == (512, 1024)
    # the default pipeline is unchanged
    assert [type(t).__name__ for t in train_transforms([32, 32], 255).transforms][:3] == [
        "RandomScale",
        "RandomHorizontalFlip",
        "RandomCrop",
    ]


@pytest.mark.slow
def test_fapn_train_pointrend_semantic(tmp_path) -> None:
    from fapn.engine.semseg.train import train

    cfg = load_config(
        "semseg/synthetic_r18_fapn",
        SegmentationConfig,
        [
            "model.name=pointrend_semantic",
            "model.backbone=resnet18",
            "model.options={neck: fpn, train_num_points: 64, subdivision_num_points: 256}",
            "data.options={size: [64, 96], num_images: 4}",
            "data.crop_size=[64, 64]",
            "data.scales=[1.0]",
            "data.single_category_max_area=0.75",
            "data.color_aug_ssd=true",
            "train.batch_size=2",
            "train.iterations=2",
            "train.eval_period=0",
            "train.threads=1",
        ],
    )
    result = train(cfg, output_dir=tmp_path / "run", progress=False)
    assert result["iteration"] == 2 and result["metrics"]["mIoU"] is not None
    from fapn.checkpoint import build_model_from_checkpoint, load_checkpoint

    model = build_model_from_checkpoint(load_checkpoint(tmp_path / "run" / "last.pt")).eval()
    assert type(model).__name__ == "PointRendSemanticFPN"
    with torch.no_grad():
        assert model(torch.randn(1, 3, 37, 53)).shape == (1, 8, 37, 53)


@pytest.mark.slow
def test_fapn_train_pointrend_maskrcnn_reports_boundary_ap(tmp_path) -> None:
    from fapn.engine.detection.train import train

    cfg = load_config(
        "detection/pointrend_rcnn_R_18_FaPN_synthetic",
        DetectionConfig,
        [
            f"data.root={tmp_path / 'data'}",
            "data.synthetic={num_train: 2, num_val: 2, height: 96, width: 96}",
            "model.min_size=[96]",
            "model.max_size=96",
            "model.options.box_detections_per_img=5",
            "model.options.mask_head_kwargs={subdivision_num_points: 196}",
            "train.batch_size=2",
            "train.iterations=2",
            "train.threads=1",
            "train.checkpoint_period=0",
        ],
    )
    metrics = train(cfg, tmp_path / "run", progress=False)
    assert {"bbox", "segm", "boundary"} <= set(metrics)
    assert set(metrics["boundary"]) == {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    # the supplementary's Figure 2 layout from fapn compare: image | model A | model B, boundaries outlined
    from PIL import Image

    from fapn.cli.main import main

    checkpoint = str(tmp_path / "run" / "model_final.pt")
    image = sorted((tmp_path / "data" / "val" / "images").glob("*"))[0]
    assert (
        main(
            [
                "compare",
                str(image),
                "--weights",
                checkpoint,
                checkpoint,
                "--names",
                "FPN",
                "FaPN",
                "--out",
                str(tmp_path / "figures"),
                "--width",
                "96",
                "--score-threshold",
                "0.0",
            ]
        )
        == 0
    )
    figure = np.asarray(Image.open(tmp_path / "figures" / f"{image.stem}_compare.png"))
    assert figure.shape[1] == 3 * 96 + 2 * 4 and figure.shape[2] == 3


def test_draw_instances_outlines_boundaries() -> None:
    image = np.full((12, 16, 3), 100, np.uint8)
    masks = np.zeros((2, 12, 16), bool)
    masks[0, 2:10, 2:14] = True
    masks[1, 4:7, 5:9] = True
    out = draw_instances(image, masks, scores=[0.9, 0.8], colors=[[255, 0, 0], [0, 0, 255]], alpha=0.5)
    edges = instance_boundaries(masks)
    for n, _color in enumerate(([255, 0, 0], [0, 0, 255])):  # boundary pixels by hand: a 4-neighbour outside
        for y, x in zip(*np.nonzero(masks[n])):
            window = masks[n, max(0, y - 1) : y + 2, max(0, x - 1) : x + 2]
            assert edges[n, y, x] == (not window.all())
    assert (out[edges[0] & ~masks[1]] == [255, 0, 0]).all()
    assert (out[edges[1]] == [0, 0, 255]).all()  # the smaller instance is drawn on top
    inner = masks[0] & ~edges[0] & ~masks[1]
    assert (out[inner] == [178, 50, 50]).all()  # half red over grey 100
    assert (draw_instances(image, masks, scores=[0.1, 0.2]) == image).all()  # below the threshold


def test_backbone_or_neck_a_fixed_builder_cannot_take_is_an_error() -> None:
    """``--set model.backbone=resnet101`` on the R50 PointRend recipe used to be dropped silently (its builder has
    the encoder in its name), so the run trained a ResNet-50; now it names the key and the builder."""
    from fapn.engine.semseg.model import model_config_of

    recipe = "semseg/cityscapes_pointrend_r50_fapn"
    assert model_config_of(load_config(recipe, SegmentationConfig), 19)["name"] == "pointrend_semantic_resnet50_fapn"
    for override in ("model.backbone=resnet101", "model.neck=fpn"):
        cfg = load_config(recipe, SegmentationConfig, [override])
        with pytest.raises(ValueError, match=rf"^{override.split('=')[0]}=.*pointrend_semantic_resnet50_fapn takes no"):
            model_config_of(cfg, 19)
    general = load_config(recipe, SegmentationConfig, ["model.name=pointrend_semantic", "model.backbone=resnet101"])
    assert model_config_of(general, 19)["backbone"] == "resnet101"
