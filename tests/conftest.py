import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

# Two cores are all CI has; more threads than cores only adds contention. An explicit OMP_NUM_THREADS wins: on a
# busy machine OMP_NUM_THREADS=1 is 10x faster than two spinning threads (0.5 s against 6.3 s for one forward).
if not os.environ.get("OMP_NUM_THREADS"):
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed_and_guard_grad_mode() -> Iterator[None]:
    torch.manual_seed(0)
    yield
    # A test that leaves autograd off breaks every test after it, far from the cause: fail it here.
    if not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail("the test left autograd disabled (torch.set_grad_enabled(False) leaked)")


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module of tiny models (``pytestmark = pytest.mark.usefixtures("one_thread")``): a
    second thread buys nothing there and, on a busy machine, costs a lot in contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cityscapes_scripts(monkeypatch: pytest.MonkeyPatch) -> Any:
    """cityscapesscripts' pixel-level evaluator module (the test skips without it), the reference of the Cityscapes
    scores: quiet, no JSON file, pixel scores only (a test turns ``args.evalInstLevelScore`` on for iIoU)."""
    ev = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    if not hasattr(np, "in1d"):  # cityscapesscripts 2.3 calls np.in1d, removed in numpy 2.4
        monkeypatch.setattr(
            np, "in1d", lambda a, b, invert=False: np.isin(np.asarray(a).ravel(), b, invert=invert), raising=False
        )
    monkeypatch.setattr(ev.args, "evalInstLevelScore", False)
    monkeypatch.setattr(ev.args, "JSONOutput", False)
    monkeypatch.setattr(ev.args, "quiet", True)
    return ev


@pytest.fixture(scope="session")
def d2_resnet50_shapes() -> dict[str, tuple[int, ...]]:
    """detectron2's R-50 key names (without the ``backbone.bottom_up.`` prefix) and shapes, written out from its
    ``BottleneckBlock`` layout: the conversion tests build the authors' checkpoints from them."""
    bn = ("weight", "bias", "running_mean", "running_var")
    shapes: dict[str, tuple[int, ...]] = {"stem.conv1.weight": (64, 3, 7, 7)}
    shapes.update({f"stem.conv1.norm.{b}": (64,) for b in bn})
    in_ch, bottleneck = 64, 64
    for stage, blocks in {2: 3, 3: 4, 4: 6, 5: 3}.items():
        out_ch = bottleneck * 4
        for i in range(blocks):
            prefix = f"res{stage}.{i}"
            if i == 0:
                shapes[f"{prefix}.shortcut.weight"] = (out_ch, in_ch, 1, 1)
                shapes.update({f"{prefix}.shortcut.norm.{b}": (out_ch,) for b in bn})
            shapes[f"{prefix}.conv1.weight"] = (bottleneck, in_ch if i == 0 else out_ch, 1, 1)
            shapes[f"{prefix}.conv2.weight"] = (bottleneck, bottleneck, 3, 3)
            shapes[f"{prefix}.conv3.weight"] = (out_ch, bottleneck, 1, 1)
            for k, ch in ((1, bottleneck), (2, bottleneck), (3, out_ch)):
                shapes.update({f"{prefix}.conv{k}.norm.{b}": (ch,) for b in bn})
        in_ch, bottleneck = out_ch, bottleneck * 2
    return shapes


@pytest.fixture(scope="session")
def d2_r50_fapn_shapes(d2_resnet50_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The authors' detectron2 R-50 + FaPN backbone, key -> shape: ``backbone.bottom_up.*`` (from
    ``d2_resnet50_shapes``) and the neck (``fan_align*``, ``fpn_output*``)."""
    shapes = {f"backbone.bottom_up.{k}": s for k, s in d2_resnet50_shapes.items()}
    for level, c in ((2, 256), (3, 512), (4, 1024)):
        p = f"backbone.fan_align{level}"
        shapes[f"{p}.lateral_conv.conv_atten.weight"] = (c, c, 1, 1)
        shapes[f"{p}.lateral_conv.conv.weight"] = (256, c, 1, 1)
        shapes[f"{p}.offset.weight"] = (256, 512, 1, 1)
        shapes[f"{p}.dcpack_L2.weight"] = (256, 256, 3, 3)
        shapes[f"{p}.dcpack_L2.bias"] = (256,)
        shapes[f"{p}.dcpack_L2.conv_offset_mask.weight"] = (216, 256, 3, 3)
        shapes[f"{p}.dcpack_L2.conv_offset_mask.bias"] = (216,)
        shapes[f"backbone.fpn_output{level}.weight"] = (256, 256, 3, 3)
        shapes[f"backbone.fpn_output{level}.bias"] = (256,)
    shapes["backbone.fan_align5.weight"] = (256, 2048, 1, 1)
    shapes["backbone.fan_align5.bias"] = (256,)
    return shapes


@pytest.fixture(scope="session")
def d2_rcnn_head_shapes() -> dict[str, tuple[int, ...]]:
    """detectron2's RPN and box head of an 80-class R-CNN (3 anchors a location), key -> shape."""
    layers = {
        "proposal_generator.rpn_head.conv": ((256, 256, 3, 3), (256,)),
        "proposal_generator.rpn_head.objectness_logits": ((3, 256, 1, 1), (3,)),
        "proposal_generator.rpn_head.anchor_deltas": ((12, 256, 1, 1), (12,)),
        "roi_heads.box_head.fc1": ((1024, 12544), (1024,)),
        "roi_heads.box_head.fc2": ((1024, 1024), (1024,)),
        "roi_heads.box_predictor.cls_score": ((81, 1024), (81,)),
        "roi_heads.box_predictor.bbox_pred": ((320, 1024), (320,)),
    }
    return {f"{name}.{kind}": shape for name, (w, b) in layers.items() for kind, shape in (("weight", w), ("bias", b))}
