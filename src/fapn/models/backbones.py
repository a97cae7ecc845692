"""Backbone bodies returning an ``OrderedDict`` of feature maps: torchvision ResNets and any timm encoder.

:func:`build_backbone` is the one entry point the models call: ``"resnet18"`` .. ``"resnet101"`` (torchvision,
ImageNet weights from torchvision or a local file) or ``"timm:<name>"`` (any pyramid encoder of timm through its
``features_only`` interface; timm is an optional extra, ``pip install 'fapn[timm]'``).
"""

from __future__ import annotations

import math
import os
import urllib.error
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import WeightsEnum
from torchvision.models._utils import IntermediateLayerGetter

from fapn.layers.padding import ceil_div, pad_to_multiple

__all__ = [
    "RESNETS",
    "resnet_body",
    "load_resnet_weights",
    "BackboneWeights",
    "TIMM_PREFIX",
    "TimmBackbone",
    "timm_backbone",
    "build_backbone",
    "ResNetBody",
]

RESNETS: dict[str, Callable[..., torchvision.models.ResNet]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
    "resnet101": torchvision.models.resnet101,
}
_WEIGHT_ENUMS: dict[str, type[WeightsEnum]] = {
    "resnet18": torchvision.models.ResNet18_Weights,
    "resnet34": torchvision.models.ResNet34_Weights,
    "resnet50": torchvision.models.ResNet50_Weights,
    "resnet101": torchvision.models.ResNet101_Weights,
}

BackboneWeights: TypeAlias = WeightsEnum | str | os.PathLike[str] | None
"""``None`` (random), a torchvision weight enum, its name (``"IMAGENET1K_V1"``, ``"DEFAULT"``) or a local file."""


def _state_dict_from_file(path: Path) -> dict[str, torch.Tensor]:
    obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a ResNet state dict")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_resnet_weights(model: torchvision.models.ResNet, name: str, weights: BackboneWeights) -> None:
    """Load ImageNet weights into ``model`` (a torchvision ResNet ``name``) in place.

    Args:
        model: the ResNet to fill.
        name: its architecture name, a key of :data:`RESNETS`.
        weights: see :data:`BackboneWeights`. A path is read locally; an enum is downloaded by torchvision (or
            read from its cache under ``$TORCH_HOME``).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: weights that do not fit ``name`` (another network's), naming the keys or shapes.
        FileNotFoundError: torchvision weights neither in torch's cache nor downloadable (offline), with what to
            do instead.
    """
    if weights is None:
        return
    if isinstance(weights, (str, os.PathLike)) and (
        Path(weights).suffix in (".pth", ".pt", ".bin") or Path(weights).exists() or os.sep in str(weights)
    ):
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"backbone weights file not found: {path}")
        state_dict = _state_dict_from_file(path)
        source = str(path)
    else:
        enum_type = _WEIGHT_ENUMS[name]
        enum_weights: Any = weights  # a torchvision WeightsEnum member from here on
        if isinstance(weights, str):
            try:
                enum_weights = enum_type[weights] if weights != "DEFAULT" else enum_type.DEFAULT
            except KeyError:
                valid = ["DEFAULT", *enum_type.__members__]
                raise ValueError(
                    f"unknown weights {weights!r} for {name}; valid names: {valid}, or a path to a .pth file"
                ) from None
        try:
            state_dict = enum_weights.get_state_dict(progress=True, check_hash=True)
        except (urllib.error.URLError, OSError, RuntimeError) as err:
            raise FileNotFoundError(
                f"could not download {name} weights {enum_weights} from {enum_weights.url} ({err}). "
                "Without internet access, download that file on another machine and pass its path as "
                "weights_backbone, or copy it into torch's cache "
                f"({Path(torch.hub.get_dir()) / 'checkpoints'})."
            ) from err
        source = str(enum_weights)
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as err:  # tensors of another shape: another network's weights
        detail = " ".join(str(err).split("\n", 1)[-1].split())
        raise ValueError(f"weights from {source} do not fit {name}: {detail[:300]}") from None
    missing = [k for k in missing if not k.startswith("fc.")]
    unexpected = [k for k in unexpected if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(f"weights from {source} do not fit {name}: missing {missing[:5]}, unexpected {unexpected[:5]}")


def resnet_body(
    name: str,
    return_layers: dict[str, str],
    weights: BackboneWeights = None,
    norm_layer: Callable[[int], nn.Module] | None = None,
) -> IntermediateLayerGetter:
    """A torchvision ResNet cut after its last requested stage, returning an ``OrderedDict`` of stages.

    Args:
        name: ``"resnet18"``, ``"resnet34"``, ``"resnet50"`` or ``"resnet101"``.
        return_layers: torchvision stage name -> output name, e.g. ``{"layer2": "c3", "layer3": "c4"}``.
        weights: ImageNet weights, see :data:`BackboneWeights`.
        norm_layer: normalisation layer (e.g. ``torchvision.ops.FrozenBatchNorm2d``); BatchNorm2d if ``None``.

    Example:
        >>> body = resnet_body("resnet18", {"layer2": "c3", "layer4": "c5"})
        >>> [tuple(v.shape) for v in body(torch.randn(1, 3, 64, 64)).values()]
        [(1, 128, 8, 8), (1, 512, 2, 2)]
    """
    if name not in RESNETS:
        raise ValueError(f"unknown backbone {name!r}; valid backbones: {sorted(RESNETS)}")
    kwargs: dict[str, Any] = {"weights": None}
    if norm_layer is not None:
        kwargs["norm_layer"] = norm_layer
    model = RESNETS[name](**kwargs)
    load_resnet_weights(model, name, weights)
    return IntermediateLayerGetter(model, return_layers=return_layers)


# ---------------------------------------------------------------------------------------------------------------
# One entry point for the models: ResNet or timm, returning (body -> OrderedDict, channels, strides)
# ---------------------------------------------------------------------------------------------------------------


class ResNetBody(IntermediateLayerGetter):
    """A torchvision ResNet cut after its last requested stage (``IntermediateLayerGetter``, same state dict), with
    the ``channels`` and ``strides`` of the maps it returns, as :class:`TimmBackbone` has them.

    Args:
        model: the ResNet.
        return_layers: stage name -> output name.
        channels, strides: of each returned map.
    """

    def __init__(
        self, model: nn.Module, return_layers: dict[str, str], channels: list[int], strides: list[int]
    ) -> None:
        super().__init__(model, return_layers=return_layers)
        self.channels = list(channels)
        self.strides = list(strides)


TIMM_PREFIX = "timm:"
"""Backbone names starting with this prefix are timm encoders: ``"timm:convnext_tiny"``."""

_RESNET_STAGES = {4: "layer1", 8: "layer2", 16: "layer3", 32: "layer4"}
_RESNET_CHANNELS = {
    "resnet18": {4: 64, 8: 128, 16: 256, 32: 512},
    "resnet34": {4: 64, 8: 128, 16: 256, 32: 512},
    "resnet50": {4: 256, 8: 512, 16: 1024, 32: 2048},
    "resnet101": {4: 256, 8: 512, 16: 1024, 32: 2048},
}


def _default_names(strides: Sequence[int]) -> list[str]:
    # c2..c5 for strides 4..32, the names the models of this package use.
    return [f"c{int(math.log2(s))}" for s in strides]


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
    names = list(names) if names is not None else _default_names(strides)
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


def build_backbone(
    name: str,
    weights: BackboneWeights = None,
    strides: Sequence[int] = (8, 16, 32),
    names: Sequence[str] | None = None,
    norm_layer: Callable[[int], nn.Module] | None = None,
    **timm_kwargs: Any,
) -> ResNetBody | TimmBackbone:
    """The backbone body of every model here: a torchvision ResNet or ``timm:<name>``.

    The body maps ``[N, 3, H, W]`` images to an ``OrderedDict`` of maps at ``strides`` (keys ``names``,
    ``c2..c5`` by default) and has the attributes ``channels`` and ``strides``.

    Args:
        name: ``"resnet18"``, ``"resnet34"``, ``"resnet50"``, ``"resnet101"`` or ``"timm:<timm name>"``.
        weights: ImageNet weights, see :data:`BackboneWeights` (ResNet) and :func:`timm_backbone` (timm).
        strides: strides of the returned maps, from 4, 8, 16, 32 (ResNet) or any the timm encoder has.
        names: output keys.
        norm_layer: ResNet only: normalisation layer (e.g. ``FrozenBatchNorm2d``).
        **timm_kwargs: timm only: passed to ``timm.create_model``.

    Example:
        >>> body = build_backbone("resnet18", strides=(8, 16, 32))
        >>> body.channels, list(body(torch.randn(1, 3, 64, 64)))
        ([128, 256, 512], ['c3', 'c4', 'c5'])
    """
    if name.startswith(TIMM_PREFIX):
        if norm_layer is not None:
            raise ValueError("norm_layer applies to torchvision ResNets only, not to timm encoders")
        return timm_backbone(name[len(TIMM_PREFIX) :], weights, strides, names, **timm_kwargs)
    if timm_kwargs:
        raise ValueError(f"timm options {sorted(timm_kwargs)} given for the torchvision backbone {name!r}")
    if name not in RESNETS:
        raise ValueError(
            f"unknown backbone {name!r}; valid backbones: {sorted(RESNETS)} or 'timm:<name>' (any timm encoder)"
        )
    strides = list(strides)
    bad = [s for s in strides if s not in _RESNET_STAGES]
    if bad:
        raise ValueError(f"{name} has stages at strides {sorted(_RESNET_STAGES)}, not {bad}")
    names = list(names) if names is not None else _default_names(strides)
    kwargs: dict[str, Any] = {"weights": None}
    if norm_layer is not None:
        kwargs["norm_layer"] = norm_layer
    model = RESNETS[name](**kwargs)
    load_resnet_weights(model, name, weights)
    return_layers = {_RESNET_STAGES[s]: n for s, n in zip(strides, names)}
    return ResNetBody(model, return_layers, [_RESNET_CHANNELS[name][s] for s in strides], strides)
