"""The paper's semantic segmentation setting (semantic FPN head on ResNet-50 + FaPN) through fapn train's config."""

from __future__ import annotations

import pytest
import torch

from fapn.checkpoint import build_model_from_checkpoint
from fapn.config import load_config
from fapn.engine.semseg.config import SegmentationConfig
from fapn.engine.semseg.model import build_segmentation_model, model_config_of
from fapn.models.semantic_fpn import SemanticFPN


def test_recipe_holds_the_detectron2_semantic_schedule() -> None:
    cfg = load_config("semseg/cityscapes_semantic_fpn_r50_fapn", SegmentationConfig)
    assert (cfg.model.name, cfg.model.backbone, cfg.model.frozen_bn) == ("semantic_fpn", "resnet50", True)
    assert (cfg.optim.lr, cfg.optim.schedule, cfg.optim.milestones) == (0.01, "multistep", [40000, 55000])
    assert cfg.train.iterations == 65000 and list(cfg.data.crop_size) == [512, 1024]


def test_semantic_fpn_builds_runs_and_rebuilds_from_its_checkpoint_config() -> None:
    cfg = load_config("semseg/cityscapes_semantic_fpn_r50_fapn", SegmentationConfig, ["model.weights_backbone=null"])
    model = build_segmentation_model(cfg, num_classes=19).eval()
    assert isinstance(model, SemanticFPN)
    x = torch.randn(1, 3, 70, 100)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 19, 70, 100) and torch.isfinite(out).all()
    checkpoint = {"model": model.state_dict(), "model_config": model_config_of(cfg, 19)}
    clone = build_model_from_checkpoint(checkpoint).eval()
    with torch.no_grad():
        torch.testing.assert_close(clone(x), out, rtol=0, atol=0)


def test_wrong_model_names_are_refused() -> None:
    cfg = load_config("semseg/cityscapes_semantic_fpn_r50_fapn", SegmentationConfig, ["model.backbone=resnet9"])
    with pytest.raises(
        ValueError, match=r"unknown backbone 'resnet9' for semantic_fpn; valid backbones: \['resnet101', "
    ):
        build_segmentation_model(cfg, 19)
    cfg = load_config("semseg/camvid_r18_fapn", SegmentationConfig, ["model.name=unet"])
    with pytest.raises(ValueError, match=r"unknown model.name 'unet'"):
        model_config_of(cfg, 11)
