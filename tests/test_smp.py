"""FaPN in segmentation_models_pytorch (``fapn.smp``): the same computation as fapn's real-time network, SMP's
save/load, SMP's name lookups on request, SMP's training loop.

SMP's own model test suite is run against ``fapn.smp.FaPN`` by ``benchmarks/smp_model_tests.py`` (a documented
command, not part of this suite: it needs SMP's source checkout); see docs/deploy.md for what passed.
"""

from __future__ import annotations

import importlib.util
import json
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

pytest.importorskip("segmentation_models_pytorch", reason='needs the smp extra (pip install "fapn[smp]")')

import segmentation_models_pytorch as smp

from fapn.models import realtime_fapn
from fapn.smp import FaPN, register

HAS_TIMM = importlib.util.find_spec("timm") is not None


def _tiny(**kwargs: object) -> FaPN:
    torch.manual_seed(0)
    options: dict[str, object] = dict(encoder_name="resnet18", encoder_weights=None, classes=5)
    options.update(kwargs)
    return FaPN(**options)  # type: ignore[arg-type]


def _perturb(model: nn.Module) -> None:
    """Batch-norm statistics and the zero-initialised offset convs off their initial values."""
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for key, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.randn(tensor.shape, generator=g) * 1e-2
                tensor.add_(noise.abs() if key.endswith("running_var") else noise)


def test_decoder_computes_what_realtime_fapn_computes_on_the_same_weights() -> None:
    torch.manual_seed(0)
    reference = realtime_fapn(backbone="resnet18", num_classes=5, neck="fapn")
    _perturb(reference)
    model = _tiny()
    state = reference.state_dict()
    mapped = {f"encoder.{k[len('backbone.') :]}": v for k, v in state.items() if k.startswith("backbone.")}
    mapped |= {f"decoder.{k}": v for k, v in state.items() if k.startswith("neck.")}
    mapped |= {
        f"decoder.block.{i}.{k[len(f'head.{i}.') :]}": v
        for i in (0, 1)
        for k, v in state.items()
        if k.startswith(f"head.{i}.")
    }
    mapped |= {f"segmentation_head.0.{k[len('head.3.') :]}": v for k, v in state.items() if k.startswith("head.3.")}
    missing, unexpected = model.load_state_dict(mapped, strict=False)
    assert missing == [] and unexpected == []  # every SMP weight came from the real-time network
    reference.eval(), model.eval()
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = reference.features(x)
        features = model.encoder(x)
        got = model.decoder.neck(OrderedDict((str(i), f) for i, f in enumerate(features[-3:])))
        for a, b in zip(got.values(), expected.values()):  # P3, P4, P5
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        # and the logits at stride 8: SMP's 1x1 head conv is the real-time head's classifier
        logits = model.segmentation_head[0](model.decoder(features))
        torch.testing.assert_close(logits, reference.head(next(iter(expected.values()))), rtol=0, atol=0)
    assert model(x).shape == (2, 5, 64, 96)


@pytest.mark.parametrize("neck", ["fpn", "fpn+fam", "fpn+fam+fsm"])
def test_ablation_necks_build_and_run(neck: str) -> None:
    model = _tiny(decoder_neck=neck).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5, 64, 64)
    shapes = {k: v.shape for k, v in realtime_fapn(num_classes=5, neck=neck).neck.state_dict().items()}
    assert {k: v.shape for k, v in model.decoder.neck.state_dict().items()} == shapes  # the same neck


def test_decoder_variant_of_earlier_releases_is_decoder_neck(tmp_path: Path) -> None:
    with pytest.warns(FutureWarning, match="decoder_variant= is now decoder_neck="):
        model = _tiny(decoder_variant="fpn")
    assert model._hub_mixin_config["decoder_neck"] == "fpn" and "decoder_variant" not in model._hub_mixin_config
    assert type(model.decoder.neck.merges[0]).__name__ == "FPNMerge"
    # a folder an earlier release saved: decoder_variant in config.json (and decoder_neck absent)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["decoder_variant"] = config.pop("decoder_neck")
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.warns(FutureWarning, match="decoder_variant= is now decoder_neck="):
        loaded = FaPN.from_pretrained(tmp_path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="decoder_variant='fpn' and decoder_neck='fpn\\+fam' differ"):
        _tiny(decoder_variant="fpn", decoder_neck="fpn+fam")


def test_decoder_depth_sets_the_output_stride() -> None:
    model = _tiny(decoder_depth=4).eval()
    assert model.segmentation_head[1].scale_factor == 4
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5, 64, 64)
    with pytest.raises(ValueError, match=r"decoder_depth must be in \[1, encoder_depth=3\], got 4"):
        _tiny(encoder_depth=3, decoder_depth=4)
    with pytest.raises(ValueError, match="unknown decoder_neck 'fapn2'"):
        _tiny(decoder_neck="fapn2")


def test_fam_offsets_start_at_zero() -> None:
    # SMP's decoder initialisation would randomise them; fapn's FAM starts as plain (unaligned) upsampling
    model = _tiny()
    for merge in model.decoder.neck.merges:
        assert torch.count_nonzero(merge.offset_mask.weight) == 0


def test_aux_classification_head() -> None:
    model = _tiny(aux_params={"classes": 3, "dropout": 0.1}).eval()
    with torch.no_grad():
        masks, labels = model(torch.randn(2, 3, 64, 64))
    assert masks.shape == (2, 5, 64, 64) and labels.shape == (2, 3)


def test_smp_hub_mixin_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _tiny(decoder_channels=32, decoder_segmentation_channels=16)
    _perturb(model)
    model.eval()
    model.save_pretrained(tmp_path, dataset="camvid", metrics={"mIoU": 0.5})
    assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in tmp_path.iterdir()}
    loaded = FaPN.from_pretrained(tmp_path).eval()
    assert loaded.decoder.neck.out_channels == 32
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    # SMP's generic loader finds the class only once it is registered; importing fapn.smp did not patch SMP
    assert "fapn" not in smp.MODEL_ARCHITECTURES_MAPPING and not hasattr(smp, "FaPN")
    monkeypatch.setattr(smp, "MODEL_ARCHITECTURES_MAPPING", dict(smp.MODEL_ARCHITECTURES_MAPPING))
    monkeypatch.setattr(smp, "FaPN", FaPN, raising=False)  # undone after the test
    monkeypatch.delattr(smp, "FaPN")
    register()
    register()  # idempotent
    generic = smp.from_pretrained(str(tmp_path)).eval()
    assert type(generic) is FaPN
    with torch.no_grad():
        torch.testing.assert_close(generic(x), model(x), rtol=0, atol=0)
    assert type(smp.create_model("fapn", encoder_name="resnet18", encoder_weights=None)) is FaPN


def test_trains_in_smps_usual_loop() -> None:
    """SMP's README loop: SMP loss, an optimiser, a few steps on one batch; the loss falls."""
    model = _tiny(classes=1, decoder_channels=32, decoder_segmentation_channels=16).train()
    loss_fn = smp.losses.DiceLoss(smp.losses.BINARY_MODE, from_logits=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 64, 64, generator=g)
    masks = (images[:, :1] > 0).float()
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = loss_fn(model(images), masks)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    stats = smp.metrics.get_stats(model.eval()(images).sigmoid() > 0.5, masks.long(), mode="binary")
    assert smp.metrics.iou_score(*stats, reduction="micro").item() > 0


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_scripting_is_refused_in_one_line() -> None:
    with pytest.raises(RuntimeError, match=r"cannot be scripted .*use torch\.export, torch\.jit\.trace"):
        torch.jit.script(_tiny())


@pytest.mark.skipif(not HAS_TIMM, reason="needs timm")
def test_timm_universal_encoder() -> None:
    model = _tiny(encoder_name="tu-test_resnet").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 5, 64, 64)
