"""timm encoders behind ``build_backbone("timm:<name>")``: channels and strides from timm's ``feature_info``,
NHWC transformer maps, padding for Swin, weights errors, and the models that take them."""

from __future__ import annotations

import pytest
import torch

timm = pytest.importorskip("timm")

from fapn.models import realtime_fapn  # noqa: E402
from fapn.models.backbones import TimmBackbone, build_backbone  # noqa: E402

# A two-block Swin-T shape (same code path as swin_tiny_patch4_window7_224, a few thousand parameters).
TINY_SWIN = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
SWIN = "swin_tiny_patch4_window7_224"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("resnet10t", {}), ("test_efficientnet", {}), ("convnext_atto", {}), (SWIN, TINY_SWIN)],
)
def test_channels_and_strides_match_timm_feature_info(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    body = build_backbone(f"timm:{name}", strides=(4, 8, 16, 32), **kwargs)
    reference = timm.create_model(name, features_only=True, **kwargs)
    info = {r: c for r, c in zip(reference.feature_info.reduction(), reference.feature_info.channels())}
    assert body.strides == [4, 8, 16, 32]
    assert body.channels == [info[s] for s in (4, 8, 16, 32)]
    features = body(torch.randn(2, 3, 64, 96))
    assert list(features) == ["c2", "c3", "c4", "c5"]
    for (key, feature), stride, channels in zip(features.items(), body.strides, body.channels):
        assert feature.shape == (2, channels, 64 // stride, 96 // stride), key


def test_nhwc_swin_maps_are_permuted_to_nchw_with_timm_values() -> None:
    torch.manual_seed(0)
    body = build_backbone(f"timm:{SWIN}", strides=(8, 16, 32), **TINY_SWIN).eval()
    assert body.nhwc
    x = torch.randn(1, 3, 64, 64)  # a multiple of 32: no padding, so timm's own maps must come out permuted
    reference = body.model(x)
    ours = list(body(x).values())
    for got, want in zip(ours, reference):
        torch.testing.assert_close(got, want.permute(0, 3, 1, 2), rtol=0, atol=0)


def test_swin_pads_any_size_and_crops_to_ceil() -> None:
    torch.manual_seed(0)
    body = build_backbone(f"timm:{SWIN}", strides=(4, 8, 16, 32), **TINY_SWIN).eval()
    x = torch.randn(1, 3, 97, 131)
    features = body(x)
    for feature, stride in zip(features.values(), body.strides):
        assert feature.shape[-2:] == (-(-97 // stride), -(-131 // stride))
    # The crop is of the padded image's maps: the same as running timm on the zero-padded image.
    padded = torch.nn.functional.pad(x, (0, 160 - 131, 0, 128 - 97))
    full = body.model(padded)
    torch.testing.assert_close(features["c5"], full[-1].permute(0, 3, 1, 2)[..., :4, :5], rtol=0, atol=0)


def test_fixed_size_encoder_gives_a_clear_error() -> None:
    body = build_backbone("timm:test_maxvit", strides=(8, 16, 32))
    assert isinstance(body, TimmBackbone) and body.fixed_size is not None
    with pytest.raises(ValueError, match=r"takes only 160x160 inputs"):
        body(torch.randn(1, 3, 96, 96))


def test_errors_unknown_name_missing_stride_and_missing_file(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown timm model 'convnext_nonexistent'"):
        build_backbone("timm:convnext_nonexistent")
    with pytest.raises(ValueError, match=r"strides \[16, 16, 16\], not \[8, 32\]"):
        build_backbone("timm:test_vit", strides=(8, 16, 32))
    with pytest.raises(FileNotFoundError, match="backbone weights file not found"):
        build_backbone("timm:resnet10t", weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="valid backbones"):
        build_backbone("resnet7")


def test_local_weights_file_is_loaded(tmp_path) -> None:
    torch.manual_seed(0)
    source = timm.create_model("resnet10t")
    path = tmp_path / "resnet10t.pth"
    torch.save(source.state_dict(), path)
    body = build_backbone("timm:resnet10t", weights=path, strides=(8, 16, 32))
    torch.testing.assert_close(body.model.layer4[0].conv1.weight, source.layer4[0].conv1.weight)


def test_offline_download_error_says_what_to_do(monkeypatch) -> None:
    import timm.models._builder as builder

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("Name or service not known")

    monkeypatch.setattr(builder, "load_pretrained", offline)
    with pytest.raises(FileNotFoundError, match=r"could not load timm weights for resnet10t.*pass its path"):
        build_backbone("timm:resnet10t", weights="DEFAULT")


def test_realtime_fapn_on_timm() -> None:
    torch.manual_seed(0)
    model = realtime_fapn(backbone="timm:convnext_atto", num_classes=5, channels=16, head_channels=8)
    out = model(torch.randn(1, 3, 70, 90))
    assert out.shape == (1, 5, 70, 90)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_semantic_fpn_and_detector_pyramids_on_timm() -> None:
    from torchvision.models.detection import FasterRCNN

    from fapn.models.pyramid import BackboneWithFaPN, resnet_pyramid
    from fapn.models.semantic_fpn import semantic_fpn

    torch.manual_seed(0)
    model = semantic_fpn("timm:test_convnext", num_classes=5, conv_dims=32).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 45, 70)).shape == (1, 5, 45, 70)
    pyramid = resnet_pyramid("timm:test_efficientnet", levels="p3-p7")
    assert isinstance(pyramid, BackboneWithFaPN) and pyramid.out_channels == 256
    with torch.no_grad():
        shapes = {k: tuple(v.shape[-2:]) for k, v in pyramid(torch.randn(1, 3, 64, 96)).items()}
    assert shapes == {"0": (8, 12), "1": (4, 6), "2": (2, 3), "p6": (1, 2), "p7": (1, 1)}
    detector = FasterRCNN(resnet_pyramid("timm:test_efficientnet"), num_classes=3, min_size=64, max_size=96)
    with torch.no_grad():
        assert set(detector.eval()([torch.rand(3, 64, 90)])[0]) == {"boxes", "labels", "scores"}


@pytest.mark.parametrize(
    ("args", "build"),
    [
        (["--backbone", "timm:convnext_atto"], lambda: realtime_fapn(backbone="timm:convnext_atto", num_classes=19)),
        (["--model", "maskformer_fapn", "--backbone", f"timm:{SWIN}", "--num-classes", "150"], None),
    ],
    ids=["cnn-realtime", "swin-maskformer"],
)
def test_fapn_profile_on_timm_encoders(args: list[str], build, capsys) -> None:
    import json

    from fapn.cli.main import main

    assert main(["profile", *args, "--input-size", "64x96", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["input_shape"] == [1, 3, 64, 96] and result["gmacs_full"] >= result["gmacs_paper"] > 0
    if build is not None:  # the meta-device count equals the real model's parameters
        assert result["params"] == sum(p.numel() for p in build().parameters())
    else:
        assert 45.0e6 < result["params"] < 45.8e6  # MaskFormer-FaPN on Swin-T: 45.41 M (docs/architecture.md)


def test_full_size_timm_models_build_and_run_on_the_meta_device() -> None:
    # the documented full-size examples; on the meta device: nothing allocated, shapes only
    from fapn.models.maskformer import maskformer_fapn

    with torch.device("meta"):
        realtime = realtime_fapn(backbone="timm:convnext_tiny", num_classes=19)
        convnext = timm.create_model("convnext_tiny", features_only=True)
        maskformer = maskformer_fapn(backbone=f"timm:{SWIN}", num_classes=150)
        realtime_out = realtime.eval()(torch.empty(1, 3, 512, 1024))
        maskformer_out = maskformer.eval()(torch.empty(1, 3, 500, 520))
    assert realtime.backbone.channels == convnext.feature_info.channels()[1:] == [192, 384, 768]
    assert realtime_out.shape == (1, 19, 512, 1024)
    assert maskformer.backbone.nhwc and maskformer.backbone.channels == [96, 192, 384, 768]
    assert (maskformer.predictor.num_queries, len(maskformer.predictor.layers)) == (100, 6)
    assert maskformer.predictor.class_embed.out_features == 151  # 150 classes + no object
    assert maskformer_out.shape == (1, 150, 500, 520)
