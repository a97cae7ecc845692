"""timm encoders as backbone bodies (``"timm:<name>"``), through timm's ``features_only`` interface; timm is an optional
extra, ``pip install 'fapn[timm]'``."""

from __future__ import annotations

import os
import urllib.error
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models import WeightsEnum

from fapn.layers.padding import ceil_div, pad_to_multiple
from fapn.models.backbones.resnet import BackboneWeights, default_names

__all__ = ["TIMM_PREFIX", "TimmBackbone", "timm_backbone"]


TIMM_PREFIX = "timm:"
"""Backbone names starting with this prefix are timm encoders: ``"timm:convnext_tiny"``."""


def _import_timm() -> Any:
    try:
        import timm
    except ImportError as err:
        raise ImportError(
            "timm backbones need the timm package: pip install 'fapn[timm]' (or pip install timm)"
        ) from err
    return timm


class TimmBackbone(nn.Module):
    """A timm ``features_only`` encoder returning an ``OrderedDict`` of NCHW maps, as the ResNet bodies do.

    Transformer encoders that emit NHWC maps (Swin) are permuted to NCHW. The image is zero-padded at the bottom
    and right to a multiple of the largest stride and every map cropped back to ``ceil(H / stride)`` rows and
    columns, the size a torchvision ResNet gives for the unpadded image. Swin needs it (its patch embedding
    takes multiples of 4 only), and it keeps every encoder's maps covering the whole image (ConvNeXt's
    patchify stem would otherwise drop the last ``H mod 4`` rows).

    Use :func:`timm_backbone` or :func:`build_backbone` to build one.

    Args:
        model: a timm model created with ``features_only=True``.
        channels: channels of each returned map.
        strides: stride of each returned map.
        names: the output keys.
        nhwc: whether ``model`` returns NHWC maps.
        size_divisibility: pad the input to a multiple of this (the largest stride; 1: no padding).
        fixed_size: the only ``(H, W)`` the encoder takes (after padding), or ``None``.
        name: the timm name, for error messages.
        window_attention: whether the encoder partitions its maps into attention windows (Swin); the exporters
            read it, since such encoders only export at a fixed input size.

    Attributes:
        channels, strides: as given; read by the models to size their necks.
    """

    def __init__(
        self,
        model: nn.Module,
        channels: Sequence[int],
        strides: Sequence[int],
        names: Sequence[str],
        nhwc: bool = False,
        size_divisibility: int = 1,
        fixed_size: tuple[int, int] | None = None,
        name: str = "",
        window_attention: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.channels = list(channels)
        self.strides = list(strides)
        self.names = list(names)
        self.nhwc = nhwc
        self.size_divisibility = size_divisibility
        self.fixed_size = fixed_size
        self.name = name
        self.window_attention = window_attention

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        """Args:
            x: normalised images ``[N, 3, H, W]``.

        Returns:
            ``OrderedDict`` name -> ``[N, C_i, ceil(H / s_i), ceil(W / s_i)]``, highest resolution first.
        """
        height, width = x.shape[-2:]
        x = pad_to_multiple(x, self.size_divisibility)
        if self.fixed_size is not None and tuple(x.shape[-2:]) != self.fixed_size:
            raise ValueError(
                f"timm:{self.name} takes only {self.fixed_size[0]}x{self.fixed_size[1]} inputs (fixed windows), "
                f"got {height}x{width}; resize or crop the images to that size, or pick another encoder"
            )
        features = self.model(x)
        out: OrderedDict[str, Tensor] = OrderedDict()
        for key, stride, feature in zip(self.names, self.strides, features):
            if self.nhwc:
                feature = feature.permute(0, 3, 1, 2)
            feature = feature[..., : ceil_div(height, stride), : ceil_div(width, stride)]
            out[key] = feature.contiguous() if self.nhwc else feature
        return out


def _timm_weights_file(weights: BackboneWeights) -> Path | None:
    """The local checkpoint ``weights`` names, or ``None`` when it is not a path."""
    if weights is None or isinstance(weights, WeightsEnum):
        return None
    text = str(weights)
    if Path(text).suffix in (".pth", ".pt", ".bin", ".safetensors") or Path(text).exists() or os.sep in text:
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights file not found: {path}")
        return path
    return None


def timm_backbone(
    name: str,
    weights: BackboneWeights = None,
    strides: Sequence[int] = (8, 16, 32),
    names: Sequence[str] | None = None,
    **timm_kwargs: Any,
) -> TimmBackbone:
    """A timm encoder (``features_only``) returning the maps of the requested strides.

    The channels and strides come from timm's ``feature_info``. Swin and other encoders with a fixed input
    size are built with ``dynamic_img_size=True`` when they accept it (then any input size works, padded to a
    multiple of the largest stride); otherwise the backbone raises a clear error on any other size.

    Args:
        name: a timm model name, optionally with a pretrained tag (``"convnext_tiny"``,
            ``"convnext_tiny.fb_in22k"``); ``timm.list_models()`` lists them.
        weights: ``None`` (random initialisation, offline), ``"DEFAULT"`` (timm's pretrained weights, downloaded
            or read from the Hugging Face cache), a pretrained tag (``"fb_in22k"``) or a local checkpoint file
            of the classification model (``.pth``, ``.bin``, ``.safetensors``).
        strides: strides of the maps to return (each must be one of the encoder's).
        names: output keys, ``c2..c5`` for strides 4..32 by default.
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``embed_dim``, ``depths`` for a small test model).

    Raises:
        ValueError: an unknown name, or strides the encoder does not have.
        FileNotFoundError: a weights path that does not exist.
        ValueError: a weights file that does not fit the encoder.
        FileNotFoundError: pretrained weights neither cached nor downloadable (offline), with what to do instead.

    Example:
        >>> body = timm_backbone("resnet10t", strides=(8, 16, 32))
        >>> body.channels, body.strides
        ([128, 256, 512], [8, 16, 32])
        >>> [tuple(v.shape) for v in body(torch.randn(1, 3, 64, 96)).values()]
        [(1, 128, 8, 12), (1, 256, 4, 6), (1, 512, 2, 3)]
    """
    timm = _import_timm()
    base, _, tag = name.partition(".")
    if not timm.is_model(base):
        close = timm.list_models(f"*{base[:6]}*")[:10]
        raise ValueError(f"unknown timm model {name!r}; similar names: {close} (timm.list_models() lists all)")
    if isinstance(weights, WeightsEnum):
        raise ValueError(
            f"a torchvision weights enum ({weights}) does not fit a timm encoder; pass 'DEFAULT' "
            "(timm's default pretrained weights), a pretrained tag such as 'in1k', or a local file"
        )
    weights_file = _timm_weights_file(weights)
    if weights is not None and weights_file is None and str(weights) != "DEFAULT":
        tag = str(weights)  # a pretrained tag given as the weights
    full_name = f"{base}.{tag}" if tag else base
    strides = list(strides)
    names = list(names) if names is not None else default_names(strides)
    if len(names) != len(strides):
        raise ValueError(f"got {len(names)} names for {len(strides)} strides")

    kwargs = dict(timm_kwargs)
    with torch.device("meta"):  # read feature_info and the input constraints without allocating weights
        probe = timm.create_model(full_name, features_only=True, pretrained=False, **kwargs)
    available = list(probe.feature_info.reduction())
    missing = [s for s in strides if s not in available]
    if missing:
        raise ValueError(
            f"timm:{name} has feature maps at strides {available}, not {missing}; the model needs strides "
            f"{strides} (single-scale encoders such as plain ViTs do not fit a pyramid)"
        )
    # The last map of each stride (ConvNeXt-style stems repeat a stride: take the deepest).
    out_indices = [max(i for i, r in enumerate(available) if r == s) for s in strides]
    fixed_input = bool(probe.pretrained_cfg.get("fixed_input_size", False))
    nhwc = str(getattr(getattr(probe, "output_fmt", None), "value", getattr(probe, "output_fmt", "NCHW"))) == "NHWC"
    del probe

    fixed_size = None
    if fixed_input and "dynamic_img_size" not in kwargs:
        kwargs["dynamic_img_size"] = True
        try:
            with torch.device("meta"):
                timm.create_model(full_name, features_only=True, pretrained=False, **kwargs)
        except TypeError:  # this family has no dynamic size: only its configured input size works
            del kwargs["dynamic_img_size"]
            input_size = kwargs.get("img_size") or timm.get_pretrained_cfg(full_name).input_size[1:]
            fixed_size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    if weights_file is not None:
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights_file)}
    try:
        model = timm.create_model(
            full_name, features_only=True, out_indices=out_indices, pretrained=weights is not None, **kwargs
        )
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        if weights_file is not None:
            raise ValueError(f"weights from {weights_file} do not fit timm:{full_name}: {err}") from err
        cfg = timm.get_pretrained_cfg(full_name)
        source = (getattr(cfg, "hf_hub_id", None) or getattr(cfg, "url", None) or full_name) if cfg else full_name
        hf_home = os.environ.get("HF_HOME", str(Path.home() / ".cache" / "huggingface"))
        raise FileNotFoundError(
            f"could not load timm weights for {full_name} from {source} ({type(err).__name__}: {err}). "
            "Without internet access, download the checkpoint on another machine and pass its path as "
            f"weights_backbone, or copy the Hugging Face cache ({Path(hf_home) / 'hub'}) over."
        ) from err
    channels = [model.feature_info.channels()[i] for i in range(len(out_indices))]
    windows = any(hasattr(module, "window_size") for module in model.modules())  # timm's Swin blocks and attention
    return TimmBackbone(model, channels, strides, names, nhwc, max(strides), fixed_size, full_name, windows)
