"""FaPN as a segmentation_models_pytorch (SMP) model: SMP's encoders and heads, fapn's decoder.

:class:`FaPN` is an SMP ``SegmentationModel``: any SMP encoder (``"resnet34"``, ``"efficientnet-b0"``, the
``"tu-"`` timm ones, ...), the decoder of the supplementary's real-time network -- FSM on the deepest map, then
at each step down a FAM (nearest upsampling, deformable alignment) whose output is concatenated with the FSM of
the finer map and fused by a 1x1 conv, down to the finest map the decoder uses -- a 3x3 conv + BN + ReLU, SMP's
segmentation head and SMP's optional auxiliary classification head. The decoder is fapn's own neck
(:func:`fapn.models.realtime.realtime_neck`, built from :class:`fapn.layers.FeatureSelectionModule` and
:class:`fapn.layers.FeatureAlignModule`): on a ResNet encoder it computes what :func:`fapn.models.realtime_fapn`
computes on the same weights.

It trains in SMP's usual loop and saves and loads through SMP's hub mixin (``model.save_pretrained(folder)``,
``FaPN.from_pretrained(folder_or_repo_id)``). SMP's own name lookups (``smp.create_model("fapn", ...)``,
``smp.from_pretrained(folder)``) read SMP's module-level table; importing this module does not patch it.
:func:`register` adds FaPN there when asked (see its docstring for why it is not automatic).

Needs the ``smp`` extra: ``pip install "fapn[smp]"``.

Example:
    >>> import torch
    >>> from fapn.smp import FaPN
    >>> model = FaPN(encoder_name="resnet18", encoder_weights=None, classes=5).eval()
    >>> model(torch.randn(1, 3, 64, 96)).shape
    torch.Size([1, 5, 64, 96])
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from typing import Any

from torch import Tensor, nn

try:
    import segmentation_models_pytorch as smp
    from segmentation_models_pytorch.base import ClassificationHead, SegmentationHead, SegmentationModel
    from segmentation_models_pytorch.base import initialization as smp_init
    from segmentation_models_pytorch.base.hub_mixin import supports_config_loading
    from segmentation_models_pytorch.encoders import get_encoder
except ImportError as err:  # pragma: no cover - the message is the point
    raise ImportError(
        f'fapn.smp needs segmentation_models_pytorch ({err.name} is missing): pip install "fapn[smp]"'
    ) from None

from fapn.models.realtime import NECKS, realtime_neck

__all__ = ["FaPN", "FaPNDecoder", "register"]


class FaPNDecoder(nn.Module):
    """The FaPN decoder on SMP's encoder features, returning the finest pyramid map after a 3x3 conv + BN + ReLU.

    Args:
        encoder_channels: ``encoder.out_channels`` (the input image first, then each stage).
        decoder_depth: how many of the deepest encoder maps the decoder uses (3: strides 8, 16, 32 on a 5-stage
            encoder, the real-time network's C3-C5).
        channels: pyramid width (128 in the paper's real-time network).
        segmentation_channels: width of the 3x3 conv after the pyramid (64: the real-time network's head).
        neck: ``"fapn"``, ``"fpn"``, or one of Table 1's necks between the two (``"fpn+fam"``,
            ``"fpn+fam+fsm"``); see :data:`fapn.models.realtime.NECKS`.
        deform_backend: deformable-conv backend, ``None`` for the default.
    """

    def __init__(
        self,
        encoder_channels: list[int],
        decoder_depth: int = 3,
        channels: int = 128,
        segmentation_channels: int = 64,
        neck: str = "fapn",
        deform_backend: str | None = None,
    ) -> None:
        super().__init__()
        stages = len(encoder_channels) - 1  # the first "feature" is the input image
        if not 1 <= decoder_depth <= stages:
            raise ValueError(f"decoder_depth must be in [1, encoder_depth={stages}], got {decoder_depth}")
        self.levels = decoder_depth
        self.neck = realtime_neck(list(encoder_channels[-decoder_depth:]), channels, neck, deform_backend)
        conv = nn.Conv2d(channels, segmentation_channels, kernel_size=3, padding=1, bias=False)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        self.block = nn.Sequential(conv, nn.BatchNorm2d(segmentation_channels), nn.ReLU(inplace=True))
        self.out_channels = segmentation_channels

    def forward(self, features: list[Tensor]) -> Tensor:
        maps = features[-self.levels :]
        pyramid = self.neck(OrderedDict((str(i), f) for i, f in enumerate(maps)))
        return self.block(next(iter(pyramid.values())))


class FaPN(SegmentationModel):
    """FaPN (Huang et al., ICCV 2021) for segmentation_models_pytorch: SMP encoder, FaPN decoder, SMP heads.

    Args:
        encoder_name: an SMP encoder (``smp.encoders.get_encoder_names()``, or ``"tu-<timm name>"``).
        encoder_depth: encoder stages used, 3 to 5.
        encoder_weights: ``"imagenet"`` (and the encoder's other weight names), ``None`` for random
            initialisation; for ``tu-`` encoders ``True`` / ``None`` (SMP's convention).
        decoder_depth: how many of the deepest encoder maps the decoder fuses; the output stride is
            ``2 ** (encoder_depth - decoder_depth + 1)`` (8 with the defaults, as in the real-time network).
        decoder_channels: pyramid width.
        decoder_segmentation_channels: width of the 3x3 conv after the pyramid.
        decoder_neck: the decoder's neck: ``"fapn"``, ``"fpn"``, or one of Table 1's necks between the two
            (``"fpn+fam"``, ``"fpn+fam+fsm"``). ``decoder_variant``, its name in earlier releases, still works
            (a ``FutureWarning``; folders saved with it load).
        decoder_deform_backend: deformable-conv backend (``None``: fapn's default).
        in_channels: input channels.
        classes: output channels.
        activation: SMP's head activation (``None``, ``"sigmoid"``, ``"softmax"``, ...).
        aux_params: SMP's auxiliary classification head on the deepest map (``{"classes": ..., "pooling": ...,
            "dropout": ..., "activation": ...}``), or ``None``.
        kwargs: passed to the encoder (timm encoders).

    Inputs must have height and width divisible by the encoder's output stride (32 by default), as in SMP's FPN.
    """

    _is_torch_scriptable = False  # the deformable conv dispatches on Python-level backends

    @supports_config_loading
    def __init__(
        self,
        encoder_name: str = "resnet34",
        encoder_depth: int = 5,
        encoder_weights: str | bool | None = "imagenet",
        decoder_depth: int = 3,
        decoder_channels: int = 128,
        decoder_segmentation_channels: int = 64,
        decoder_neck: str = "fapn",
        decoder_deform_backend: str | None = None,
        in_channels: int = 3,
        classes: int = 1,
        activation: str | None = None,
        aux_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if "decoder_variant" in kwargs:
            decoder_neck = self._renamed_decoder_variant(kwargs.pop("decoder_variant"), decoder_neck)
        if decoder_neck not in NECKS:
            raise ValueError(f"unknown decoder_neck {decoder_neck!r}; valid necks: {list(NECKS)}")
        self.encoder = get_encoder(
            encoder_name, in_channels=in_channels, depth=encoder_depth, weights=encoder_weights, **kwargs
        )
        self.decoder = FaPNDecoder(
            list(self.encoder.out_channels),
            decoder_depth=decoder_depth,
            channels=decoder_channels,
            segmentation_channels=decoder_segmentation_channels,
            neck=decoder_neck,
            deform_backend=decoder_deform_backend,
        )
        self.segmentation_head = SegmentationHead(
            in_channels=self.decoder.out_channels,
            out_channels=classes,
            activation=activation,
            kernel_size=1,
            upsampling=2 ** (encoder_depth - decoder_depth + 1),
        )
        self.classification_head = (
            ClassificationHead(in_channels=self.encoder.out_channels[-1], **aux_params)
            if aux_params is not None
            else None
        )
        self.name = f"fapn-{encoder_name}"
        self.initialize()

    def _renamed_decoder_variant(self, variant: str, neck: str) -> str:
        """``decoder_variant`` of earlier releases as ``decoder_neck``, and so in the config the hub mixin
        recorded for ``save_pretrained``."""
        # a folder saved by an earlier release records decoder_neck at its default beside decoder_variant, so
        # only a decoder_neck other than the default can be a contradiction
        if neck != "fapn" and neck != variant:
            raise ValueError(
                f"decoder_variant={variant!r} and decoder_neck={neck!r} differ: decoder_variant is now "
                "decoder_neck, give decoder_neck only"
            )
        warnings.warn(
            "FaPN(): the keyword decoder_variant= is now decoder_neck= (decoder_variant= will be removed in a "
            "future release)",
            FutureWarning,
            stacklevel=4,
        )
        config = getattr(self, "_hub_mixin_config", None)
        if isinstance(config, dict):
            config.pop("decoder_variant", None)
            config["decoder_neck"] = variant
        return variant

    def __prepare_scriptable__(self) -> FaPN:
        # torch.jit.script calls this first: one clear error instead of TorchScript's frontend trace (SMP's
        # convention for models with _is_torch_scriptable = False is a RuntimeError)
        raise RuntimeError(
            "fapn.smp.FaPN cannot be scripted (its deformable conv picks a backend in Python); "
            "use torch.export, torch.jit.trace or torch.compile"
        )

    def initialize(self) -> None:
        """SMP's initialisation of the heads; the decoder keeps fapn's (zero-initialised FAM offsets: SMP's
        decoder initialisation would start every FAM with random offsets)."""
        smp_init.initialize_head(self.segmentation_head)
        if self.classification_head is not None:
            smp_init.initialize_head(self.classification_head)


def register() -> None:
    """Add :class:`FaPN` to SMP's name lookups: ``smp.create_model("fapn", ...)`` and ``smp.from_pretrained(folder)``
    of a folder saved from a FaPN.

    Not done on ``import fapn.smp``: it writes into another library's module (``smp.MODEL_ARCHITECTURES_MAPPING``
    and the ``smp`` namespace), which a module import should not do behind the caller's back, and it would not
    make SMP find FaPN on its own anyway -- ``smp.from_pretrained`` of a FaPN folder still needs fapn imported
    first. The documented path is the class's own ``fapn.smp.FaPN.from_pretrained(folder_or_repo_id)``; call this
    when code (SMP's test suite, a training script driven by architecture names) looks models up by name.
    Calling it again does nothing.

    Raises:
        ValueError: SMP already has a different architecture named ``fapn``.
    """
    existing = smp.MODEL_ARCHITECTURES_MAPPING.get("fapn", FaPN)
    if existing is not FaPN or getattr(smp, "FaPN", FaPN) is not FaPN:
        raise ValueError("segmentation_models_pytorch already has an architecture named 'fapn'; not replacing it")
    smp.MODEL_ARCHITECTURES_MAPPING["fapn"] = FaPN
    smp.FaPN = FaPN
