"""Bad input gets a ValueError that says what was expected and what came."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision
import torchvision.models._api

from fapn.models import realtime_fapn


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return realtime_fapn(num_classes=3, neck="fapn").eval()


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (torch.randn(3, 64, 64), r"4-D image batch \[N, 3, H, W\], got a 3-D tensor of shape \(3, 64, 64\)"),
        (torch.randn(1, 1, 64, 64), r"expected 3 input channels .* got shape \(1, 1, 64, 64\)"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), r"floating-point .* got dtype torch.uint8"),
        (torch.randn(1, 3, 31, 64), r"31x64 pixels is smaller than the network's stride; .* at least 32"),
        (torch.randn(0, 3, 64, 64), r"expected at least one image, got an empty batch of shape \(0, 3, 64, 64\)"),
        (
            torch.randn(1, 3, 64, 64, dtype=torch.float64),
            r"input dtype torch.float64 differs from the model's weights \(torch.float32\); convert the input",
        ),
    ],
)
def test_bad_input(model: torch.nn.Module, x: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model(x)


def test_float64_model_takes_float64_input_and_equals_float32() -> None:
    torch.manual_seed(0)
    model = realtime_fapn(num_classes=3, neck="fapn", channels=32, head_channels=16).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = model(x)
        got = model.double()(x.double())
    assert got.dtype == torch.float64
    torch.testing.assert_close(got.float(), expected, rtol=1e-4, atol=1e-4)


def test_unknown_names_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown backbone 'resnet9'; valid backbones: \['resnet18', 'resnet34'\]"):
        realtime_fapn(backbone="resnet9")
    with pytest.raises(ValueError, match=r"unknown neck 'fam'; valid necks: \['fpn', 'fpn\+fam', "):
        realtime_fapn(neck="fam")


def test_backbone_weights_from_local_file(tmp_path: Path) -> None:
    reference = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    model = realtime_fapn(backbone="resnet18", neck="fpn", weights_backbone=path)
    torch.testing.assert_close(model.backbone.conv1.weight, reference.conv1.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.backbone.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)


def test_backbone_weights_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="backbone weights file not found"):
        realtime_fapn(weights_backbone=tmp_path / "nope.pth")


def test_backbone_weights_offline_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(
        FileNotFoundError, match=r"could not download resnet18 weights .* pass its path as weights_backbone"
    ):
        realtime_fapn(weights_backbone=torchvision.models.ResNet18_Weights.IMAGENET1K_V1)
    with pytest.raises(FileNotFoundError, match="could not download"):
        realtime_fapn(weights_backbone="DEFAULT")
    with pytest.raises(ValueError, match="unknown weights 'IMAGENET9K' for resnet18"):
        realtime_fapn(weights_backbone="IMAGENET9K")
