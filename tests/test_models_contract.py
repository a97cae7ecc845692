"""Contract tests over every real-time model: backbone x ablation variant."""

from __future__ import annotations

import io
import itertools

import pytest
import torch

from fapn.layers import FeatureAlignModule
from fapn.models import BACKBONES, VARIANTS, realtime_fapn

CASES = list(itertools.product(sorted(BACKBONES), list(VARIANTS)))
IDS = [f"{b}-{v}" for b, v in CASES]


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def model_case(request: pytest.FixtureRequest) -> tuple[str, str]:
    return request.param


@pytest.mark.parametrize("size", [(97, 131), (32, 32), (64, 200)])
def test_output_shape_and_finite(model_case: tuple[str, str], size: tuple[int, int]) -> None:
    backbone, variant = model_case
    model = realtime_fapn(backbone=backbone, num_classes=7, variant=variant).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    assert out.shape == (2, 7, *size)
    assert torch.isfinite(out).all()


def test_backward_reaches_every_parameter_after_one_step(model_case: tuple[str, str]) -> None:
    backbone, variant = model_case
    model = realtime_fapn(backbone=backbone, num_classes=5, variant=variant).train()
    x = torch.randn(2, 3, 64, 96)
    target = torch.randint(0, 5, (2, 64, 96))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def step() -> dict[str, torch.Tensor | None]:
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), target).backward()
        return {name: p.grad for name, p in model.named_parameters()}

    grads = step()
    # At initialisation the zero offset/mask conv blocks the gradient to the 1x1 offset conv: exactly zero.
    for name, grad in grads.items():
        assert grad is not None, f"{name} got no gradient"
        if name.endswith("offset_fuse.weight"):
            assert torch.count_nonzero(grad) == 0, name
        else:
            assert torch.count_nonzero(grad) > 0, f"{name} has an all-zero gradient"
    optimizer.step()
    # After one step the offset/mask conv is non-zero and every parameter is reached.
    grads = step()
    dead = [name for name, grad in grads.items() if grad is None or torch.count_nonzero(grad) == 0]
    assert dead == []


def test_state_dict_round_trip(model_case: tuple[str, str]) -> None:
    backbone, variant = model_case
    model = realtime_fapn(backbone=backbone, num_classes=4, variant=variant)
    # move BN statistics and the zero-initialised convs off their initial values
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, FeatureAlignModule):
                module.offset_mask.weight.normal_(std=0.01)
        model.train()(torch.randn(2, 3, 64, 64))
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    clone = realtime_fapn(backbone=backbone, num_classes=4, variant=variant)
    clone.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(1, 3, 70, 90)
    model.eval(), clone.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), clone(x), rtol=0, atol=0)


def test_eval_is_deterministic(model_case: tuple[str, str]) -> None:
    backbone, variant = model_case
    model = realtime_fapn(backbone=backbone, num_classes=3, variant=variant).eval()
    x = torch.randn(2, 3, 50, 77)
    with torch.no_grad():
        first, second = model(x), model(x)
    assert torch.equal(first, second)
    # and the batch elements are independent in eval mode. CPU kernels pick different blockings for a batch
    # of 1 and of 2 (and per processor), so the two differ by float32 rounding: bound the difference relative
    # to the output's scale, not element-wise (a near-zero element has a large relative error). A real
    # dependence between batch elements (batch statistics in eval) differs by the output's own scale.
    with torch.no_grad():
        single = model(x[1:])
    reference = first[1:]
    relative = (single - reference).norm() / reference.norm()
    worst = (single - reference).abs().max() / reference.abs().max()
    assert relative <= 1e-4, f"batch of 1 vs batch of 2: norm-wise relative difference {relative:.2e}"
    assert worst <= 1e-3, f"batch of 1 vs batch of 2: largest difference {worst:.2e} of the output's scale"
