"""MaskFormer through the engine: the optimiser options its recipes use (AdamW, backbone lr factor, no decay on
norms, full-model clipping), the recipes against the authors' configs, and a tiny `fapn train` / checkpoint run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fapn.config import load_config
from fapn.engine.optimizer import build_optimizer, parameter_groups
from fapn.engine.semseg.config import SegmentationConfig

pytest.importorskip("scipy")


pytestmark = pytest.mark.usefixtures("one_thread")


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.head = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
        self.query = nn.Embedding(3, 4)


def test_parameter_groups_follow_maskformers_rules() -> None:
    model = _Toy()
    groups = parameter_groups(model, lr=1.0, weight_decay=0.1, backbone_lr_factor=0.1, weight_decay_norm=0.0)
    by_param = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    expected = {
        "backbone.0.weight": (0.1, 0.1),
        "backbone.0.bias": (0.1, 0.1),
        "backbone.1.weight": (0.1, 0.0),
        "backbone.1.bias": (0.1, 0.0),
        "head.0.weight": (1.0, 0.1),
        "head.0.bias": (1.0, 0.1),
        "head.1.weight": (1.0, 0.0),
        "head.1.bias": (1.0, 0.0),
        "query.weight": (1.0, 0.0),
    }
    assert {name: by_param[id(p)] for name, p in model.named_parameters()} == expected
    # defaults: one group of every trainable parameter, as the SGD recipes always had
    model.backbone[0].weight.requires_grad_(False)
    (single,) = parameter_groups(model, lr=1.0, weight_decay=0.1)
    assert len(single["params"]) == 8


def test_clipping_clips_the_whole_model_before_the_step() -> None:
    torch.manual_seed(0)
    model, reference = _Toy(), _Toy()
    reference.load_state_dict(model.state_dict())
    optimizer = build_optimizer(model, "sgd", lr=0.5, momentum=0.0, clip_grad_norm=0.01)
    plain = torch.optim.SGD(reference.parameters(), lr=0.5)
    x = torch.randn(2, 4)
    for m in (model, reference):
        (m.head(x).sum() * 100 + m.query.weight.sum()).backward()
    torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.01)
    optimizer.step()
    plain.step()
    for (name, a), b in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(a, b, msg=name)
    assert type(build_optimizer(model, "adamw", lr=1e-4)) is torch.optim.AdamW
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        build_optimizer(model, "adam")


def test_ade20k_recipes_are_the_authors_configs() -> None:
    r50 = load_config("semseg/ade20k_maskformer_r50_fapn", SegmentationConfig)
    assert (r50.model.name, r50.model.backbone, r50.model.weights_backbone, r50.model.frozen_bn) == (
        "maskformer_fapn",
        "resnet50",
        "DEFAULT",
        True,
    )
    o = r50.optim
    assert (o.name, o.lr, o.weight_decay, o.weight_decay_norm, o.backbone_lr_factor, o.clip_grad_norm) == (
        "adamw",
        1e-4,
        1e-4,
        0.0,
        0.1,
        0.01,
    )
    assert (o.schedule, o.power, r50.train.iterations, r50.train.batch_size, r50.data.crop_size) == (
        "poly",
        0.9,
        160000,
        16,
        [512, 512],
    )
    assert load_config("semseg/ade20k_maskformer_r50_fpn", SegmentationConfig).model.name == "maskformer_fpn"
    swin = load_config("semseg/ade20k_maskformer_swin_l_fapn", SegmentationConfig)
    assert swin.model.backbone == "timm:swin_large_patch4_window12_384" and swin.data.crop_size == [640, 640]
    o = swin.optim
    assert (o.lr, o.weight_decay, o.backbone_lr_factor, o.warmup_iters, o.warmup_factor) == (
        6e-5,
        0.01,
        1.0,
        1500,
        1e-6,
    )
    assert swin.model.options["backbone_kwargs"] == {"drop_path_rate": 0.3}
    assert swin.model.options["num_queries"] == 100  # merged with the base's options


@pytest.mark.slow
def test_fapn_train_a_tiny_maskformer_and_rebuild_it_from_the_checkpoint(tmp_path) -> None:
    from fapn.checkpoint import build_model_from_checkpoint, load_checkpoint
    from fapn.engine.semseg.train import train

    cfg = load_config(
        "semseg/camvid_maskformer_fapn",
        SegmentationConfig,
        [
            "data.dataset=synthetic",
            "data.root=null",
            "data.crop_size=[64,64]",
            "data.scales=[1.0]",
            "data.options={size: [64, 80], num_images: 4}",
            "data.val_options={num_images: 1}",
            "model.options={num_queries: 5, hidden_dim: 32, nheads: 2, dim_feedforward: 32, dec_layers: 2, "
            "conv_dim: 64, mask_dim: 16}",
            "model.backbone=timm:test_convnext",
            "optim.backbone_lr_factor=0.1",
            "optim.warmup_iters=0",
            "train.iterations=3",
            "train.batch_size=2",
            "train.eval_period=0",
            "train.checkpoint_period=3",
            "train.device=cpu",
            "train.threads=1",
        ],
    )
    result = train(cfg, output_dir=tmp_path, progress=False)
    assert result["iteration"] == 3 and result["metrics"]["mIoU"] is not None
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert checkpoint["model_config"]["name"] == "maskformer_fapn"
    initial = sorted({round(g["initial_lr"], 12) for g in checkpoint["optimizer"]["param_groups"]})
    assert initial == [2e-5, 2e-4]  # the backbone at lr x0.1, the rest at the recipe's lr
    # `fapn eval` on the checkpoint (the model rebuilt from it; --flip averages softmaxes of MaskFormer's scores)
    import json

    from fapn.cli.main import main

    data = ["data.dataset=synthetic", "data.root=null", "data.val_options={num_images: 1, size: [64, 80]}"]
    argv = ["eval", "semseg/camvid_maskformer_fapn", "--weights", str(tmp_path / "last.pt"), "--flip"]
    argv += [item for value in data for item in ("--set", value)]
    assert main([*argv, "--output", str(tmp_path / "eval.json"), "--threads", "1", "--no-progress"]) == 0
    scores = json.loads((tmp_path / "eval.json").read_text())
    assert scores["mIoU"] is not None and 0 <= scores["mIoU"] <= 100
    model = build_model_from_checkpoint(checkpoint).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 80)).shape[-2:] == (64, 80)
