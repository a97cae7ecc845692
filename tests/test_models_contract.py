"""Contract tests over every registered builder (``fapn.models.list_models()``), semantic and detection.

Each registry name gets, for each of its tiny configurations in :data:`TINY`: a forward pass (eval), a backward
pass of its own loss in which every trainable parameter gets a gradient (after one optimiser step: at
initialisation the zero offset/mask conv of a FAM blocks the gradient to its 1x1 offset conv), odd input sizes,
a state-dict round trip into a freshly built model, and a hub-folder round trip (``fapn.save_pretrained`` ->
``fapn.from_pretrained``: config.json + safetensors, rebuilt through the registry from the recorded kwargs). Semantic models are also checked for eval determinism and
batch independence.

A new builder must add an entry to :data:`TINY` (``test_every_registered_model_has_tiny_kwargs`` fails otherwise):
small backbone, few classes, small inputs. Builders on ResNet-50/101 run at 64x64 with ``weights_backbone=None``
and are marked slow.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import itertools
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import fapn
from fapn.models import BACKBONES, NECKS, get_model, get_model_builder, list_models

# RPN samples torchvision's 256 anchors per image: with fewer, a level's anchors can all go unsampled and its output
# conv gets no gradient (at 64x64 every RoI pools from P2, so only the RPN reaches P3-P5)
RCNN = dict(
    min_size=64,
    max_size=64,
    rpn_pre_nms_top_n_train=50,
    rpn_post_nms_top_n_train=20,
    rpn_pre_nms_top_n_test=50,
    rpn_post_nms_top_n_test=20,
    box_batch_size_per_image=8,
    box_score_thresh=0.0,
    box_detections_per_img=10,
)
RETINA = dict(min_size=64, max_size=64, topk_candidates=20, score_thresh=0.0, detections_per_img=10)
PANOPTIC = dict(RCNN, num_stuff_classes=2, panoptic_kwargs={"stuff_area_threshold": 16})
MASKFORMER = dict(
    backbone="resnet18",
    num_classes=4,
    num_queries=5,
    hidden_dim=32,
    nheads=2,
    dim_feedforward=32,
    dec_layers=2,
    conv_dim=32,
    mask_dim=32,
)
POINTREND_SEMANTIC = dict(num_classes=4, train_num_points=64, subdivision_steps=1, subdivision_num_points=64)
# timm encoders: one CNN and one NHWC transformer, each a few thousand parameters on the same code path as
# the full-size models (timm's test_convnext; a one-block-per-stage Swin-T shape, drop path off so that the two
# backward passes below see the same network)
TIMM_CNN = "timm:test_convnext"
TIMM_SWIN = dict(
    backbone="timm:swin_tiny_patch4_window7_224",
    backbone_kwargs=dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1), drop_path_rate=0.0),
)

TINY: dict[str, list[dict[str, Any]]] = {
    # semantic segmentation: [N, 3, H, W] -> [N, C, H, W]
    "realtime_fapn": [
        dict(backbone=b, neck=v, num_classes=5)
        for b, v in itertools.product(BACKBONES, NECKS)
        if b == "resnet18" or v == "fapn"
    ]
    + [dict(backbone=TIMM_CNN, num_classes=5)],
    "semantic_fpn": [
        dict(backbone="resnet18", num_classes=5),
        dict(backbone="resnet18", num_classes=5, neck="fpn"),
        dict(backbone=TIMM_CNN, num_classes=5, conv_dims=32),
    ],
    "semantic_fpn_resnet50_fapn": [dict(num_classes=5)],
    "semantic_fpn_resnet101_fapn": [dict(num_classes=5)],
    "maskformer_fapn": [MASKFORMER, {**MASKFORMER, **TIMM_SWIN}],
    "maskformer_fpn": [MASKFORMER],
    "maskformer": [{**MASKFORMER, "neck": "fpn"}],
    "pointrend_semantic": [
        dict(backbone="resnet18", **POINTREND_SEMANTIC),
        dict(backbone="resnet18", neck="fpn", **POINTREND_SEMANTIC),
    ],
    "pointrend_semantic_resnet50_fapn": [POINTREND_SEMANTIC],
    "pointrend_semantic_resnet101_fapn": [POINTREND_SEMANTIC],
    "pointrend_semantic_resnet50_fpn": [POINTREND_SEMANTIC],
    "pointrend_semantic_resnet101_fpn": [POINTREND_SEMANTIC],
    # detection: torchvision's calling convention
    "fasterrcnn_resnet50_fapn": [dict(num_classes=3, **RCNN)],
    "fasterrcnn_resnet101_fapn": [dict(num_classes=3, **RCNN)],
    "maskrcnn_resnet50_fapn": [dict(num_classes=3, **RCNN)],
    "maskrcnn_resnet101_fapn": [dict(num_classes=3, **RCNN)],
    "retinanet_resnet50_fapn": [dict(num_classes=3, **RETINA)],
    "retinanet_resnet101_fapn": [dict(num_classes=3, **RETINA)],
    "panoptic_fpn_resnet50_fapn": [dict(num_classes=3, **PANOPTIC)],
    "panoptic_fpn_resnet101_fapn": [dict(num_classes=3, **PANOPTIC)],
    "detectron2_fapn_rcnn": [dict(depth=50, mask=True, num_classes=3, **RCNN)],
    "build_detection_model": [
        dict(detector="maskrcnn", backbone="resnet18", num_classes=3, fapn_kwargs={"norm": "GN"}, **RCNN),
        dict(detector="retinanet", backbone="resnet18", neck="fpn", num_classes=3, **RETINA),
        dict(detector="panoptic_fpn", backbone="resnet18", num_classes=3, **PANOPTIC),
    ],
    "pointrend_maskrcnn_resnet50_fapn": [dict(num_classes=3, **RCNN)],
    "pointrend_maskrcnn_resnet50_fpn": [dict(num_classes=3, **RCNN)],
    "detectron2_pointrend_rcnn": [dict(depth=50, num_classes=3, **RCNN)],
    "detectron2_pointrend_semantic": [dict(depth=50, **POINTREND_SEMANTIC)],
}
"""Each registry name -> the tiny keyword arguments its contract tests build it with (one case each)."""

LIGHT_BACKBONES = ("resnet18", "resnet34")
HAS_TIMM = importlib.util.find_spec("timm") is not None
HAS_HUB = all(importlib.util.find_spec(m) is not None for m in ("huggingface_hub", "safetensors"))


def _is_heavy(kwargs: dict[str, Any]) -> bool:
    backbone = str(kwargs.get("backbone"))
    return backbone not in LIGHT_BACKBONES and not backbone.startswith("timm:")


def _cases() -> list[Any]:
    cases = []
    for name in list_models():
        for index, kwargs in enumerate(TINY.get(name, [])):
            marks = [pytest.mark.slow] if _is_heavy(kwargs) else []
            if str(kwargs.get("backbone")).startswith("timm:") and not HAS_TIMM:
                marks.append(pytest.mark.skip(reason='timm encoders need the timm extra (pip install "fapn[timm]")'))
            cases.append(pytest.param((name, index), id=f"{name}-{index}", marks=marks))
    return cases


def test_every_registered_model_has_tiny_kwargs() -> None:
    missing = [name for name in list_models() if not TINY.get(name)]
    assert missing == [], f"add tiny contract-test kwargs to TINY in tests/test_models_contract.py for {missing}"


def test_registry_lookups() -> None:
    assert "realtime_fapn" in list_models(task="semseg") and "maskrcnn_resnet50_fapn" in list_models(task="detection")
    assert list_models("retinanet_*") == ["retinanet_resnet101_fapn", "retinanet_resnet50_fapn"]
    assert set(list_models(task="semseg")).isdisjoint(list_models(task="detection"))
    with pytest.raises(ValueError, match=r"unknown model 'unet'; known models: \['build_detection_model', "):
        get_model_builder("unet")
    with pytest.raises(ValueError, match=r"unknown model 'realtime_fapm' \(did you mean 'realtime_fapn'\?\); known"):
        get_model("realtime_fapm")


# --- helpers ------------------------------------------------------------------------------------------------


def _task(name: str) -> str:
    return "detection" if name in list_models(task="detection") else "semseg"


def _build(name: str, index: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return get_model(name, **copy.deepcopy(TINY[name][index]))


@pytest.fixture(scope="module", params=_cases())
def built(request: pytest.FixtureRequest) -> tuple[str, int, nn.Module]:
    """One model per case, built once for the module's tests of that case; tests work on deep copies."""
    name, index = request.param
    return name, index, _build(name, index)


def _semseg_batch(size: tuple[int, int] = (64, 64), batch: int = 2, classes: int = 5) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(batch, 3, *size, generator=g)
    targets = torch.randint(0, classes, (batch, *size), generator=g)
    targets[:, :3] = 255  # an ignored band
    return images, targets


def _detection_batch(sizes: tuple[tuple[int, int], ...] = ((64, 64),)) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    g = torch.Generator().manual_seed(1)
    images, targets = [], []
    for height, width in sizes:
        images.append(torch.rand(3, height, width, generator=g))
        masks = torch.zeros(2, height, width, dtype=torch.uint8)
        masks[0, height // 8 : height // 2, width // 8 : width // 2] = 1
        masks[1, height // 2 : height - 2, width // 3 : width - 3] = 1
        boxes = torch.tensor(
            [[width // 8, height // 8, width // 2, height // 2], [width // 3, height // 2, width - 3, height - 2]],
            dtype=torch.float32,
        )
        sem_seg = torch.ones(height, width, dtype=torch.long)
        sem_seg[height // 2 :] = 2
        sem_seg[masks.bool().any(0)] = 0
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks, "sem_seg": sem_seg})
    return images, targets


def _classes(name: str, index: int) -> int:
    return int(TINY[name][index]["num_classes"])


def _loss(name: str, index: int, model: nn.Module) -> Tensor:
    """The model's training loss on a tiny batch: its own loss dict (detection, ``computes_loss``) or the
    cross-entropy of its logits."""
    if _task(name) == "detection":
        images, targets = _detection_batch()
        losses = model(images, targets)
        return sum(losses.values())  # type: ignore[return-value]
    images, targets = _semseg_batch(classes=_classes(name, index))
    if getattr(model, "computes_loss", False):
        return sum(model(images, targets).values())  # type: ignore[return-value]
    return F.cross_entropy(model(images), targets, ignore_index=255)


def _flatten(output: Any) -> list[Tensor]:
    """Every tensor of a model output (a tensor, or detection's list of dicts), in a fixed order."""
    if isinstance(output, Tensor):
        return [output]
    tensors = []
    for item in output:
        for key in sorted(item):
            if isinstance(item[key], Tensor):
                tensors.append(item[key])
    return tensors


def _perturb(model: nn.Module) -> None:
    """Move every float parameter and buffer off its initial value (zero-initialised convs, batch-norm
    statistics) by a little zero-mean noise, keeping variances positive, so that a round trip that loses anything
    shows (a biased shift would blow up the un-normalised activations of a 50-layer body)."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=g).to(tensor.dtype) * 1e-3
                tensor.add_(noise.abs() if key.endswith("running_var") else noise)


# --- the contract -------------------------------------------------------------------------------------------


def test_forward_and_odd_sizes(built: tuple[str, int, nn.Module]) -> None:
    name, index, model = built
    model = copy.deepcopy(model).eval()
    if _task(name) == "detection":
        sizes = ((45, 67), (70, 51))
        images, _ = _detection_batch(sizes)
        with torch.no_grad():
            outputs = model(images)
        assert len(outputs) == 2
        for output, (height, width) in zip(outputs, sizes):
            assert {"boxes", "labels", "scores"} <= set(output)
            boxes = output["boxes"]
            assert boxes.shape[1:] == (4,) and torch.isfinite(boxes).all()
            assert (boxes[:, 0::2] <= width + 1e-3).all() and (boxes[:, 1::2] <= height + 1e-3).all()
            assert (boxes >= -1e-3).all()
            if "masks" in output:
                assert output["masks"].shape[1:] == (1, height, width)
            if "panoptic_seg" in output:
                assert output["panoptic_seg"].shape == (height, width)
        return
    classes = _classes(name, index)
    for size in ((64, 64), (45, 67), (33, 50)):
        images, _ = _semseg_batch(size)
        with torch.no_grad():
            out = model(images)
        assert out.shape == (2, classes, *size), size
        assert torch.isfinite(out).all()
    # deterministic, and the batch elements are independent in eval mode. CPU kernels pick different blockings
    # for a batch of 1 and of 2 (and per processor): bound the difference relative to the output's scale, not
    # element-wise (a near-zero element has a large relative error). A real dependence between batch elements
    # (batch statistics in eval) differs by the output's own scale.
    images, _ = _semseg_batch((50, 77))
    with torch.no_grad():
        first, second, single = model(images), model(images), model(images[1:])
    assert torch.equal(first, second)
    reference = first[1:]
    relative = (single - reference).norm() / reference.norm()
    worst = (single - reference).abs().max() / reference.abs().max()
    assert relative <= 1e-4, f"batch of 1 vs batch of 2: norm-wise relative difference {relative:.2e}"
    assert worst <= 1e-3, f"batch of 1 vs batch of 2: largest difference {worst:.2e} of the output's scale"


def test_backward_reaches_every_parameter_after_one_step(built: tuple[str, int, nn.Module]) -> None:
    name, index, model = built
    model = copy.deepcopy(model).train()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.SGD(trainable.values(), lr=0.01)

    def step() -> dict[str, Tensor | None]:
        optimizer.zero_grad()
        torch.manual_seed(3)  # the same sampling (proposals, points, dropout) in both steps
        loss = _loss(name, index, model)
        assert torch.isfinite(loss), f"{name}: loss {loss}"
        loss.backward()
        return {n: p.grad for n, p in trainable.items()}

    grads = step()
    missing = [n for n, grad in grads.items() if grad is None]
    assert missing == [], f"{name}: no gradient for {missing[:5]}"
    # a bounded step: a body with frozen (identity) batch norm at random init has huge gradients
    norm = torch.nn.utils.clip_grad_norm_(trainable.values(), 1.0)
    assert torch.isfinite(norm), f"{name}: gradient norm {norm}"
    optimizer.step()
    grads = step()
    dead = [n for n, grad in grads.items() if grad is None or torch.count_nonzero(grad) == 0]
    assert dead == [], f"{name}: all-zero gradient after one step for {dead[:5]}"


def test_state_dict_round_trip(built: tuple[str, int, nn.Module]) -> None:
    name, index, model = built
    model = copy.deepcopy(model)
    _perturb(model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = _build(name, index, seed=1)  # built again from the registry with the same kwargs, other weights
    clone.load_state_dict(torch.load(buffer, weights_only=True), strict=True)
    model.eval(), clone.eval()
    if _task(name) == "detection":
        inputs: Any = _detection_batch(((64, 64),))[0]
    else:
        inputs = _semseg_batch((70, 90), batch=1)[0]
    with torch.no_grad():
        expected, got = _flatten(model(inputs)), _flatten(clone(inputs))
    assert len(got) == len(expected) > 0
    assert all(torch.isfinite(t).all() for t in expected if t.is_floating_point())
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.skipif(not HAS_HUB, reason='hub folders need the hub extra (pip install "fapn[hub]")')
def test_hub_folder_round_trip(built: tuple[str, int, nn.Module], tmp_path: Path) -> None:
    name, _, model = built
    model = copy.deepcopy(model)
    _perturb(model)
    assert model.fapn_config["name"] == name  # recorded by the registry
    folder = fapn.save_pretrained(model, tmp_path / name)
    clone = fapn.from_pretrained(folder)  # rebuilt from config.json alone, weights from model.safetensors
    assert type(clone) is type(model) and not clone.training
    model.eval()
    if _task(name) == "detection":
        inputs: Any = _detection_batch(((64, 64),))[0]
    else:
        inputs = _semseg_batch((64, 64), batch=1)[0]
    with torch.no_grad():
        expected, got = _flatten(model(inputs)), _flatten(clone(inputs))
    assert len(got) == len(expected) > 0
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
