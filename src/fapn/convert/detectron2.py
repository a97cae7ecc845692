"""The authors' detectron2 FaPN checkpoints -> fapn's modules.

Key names in the authors' neck (prefix ``backbone.``, levels ``s = 2, 3, 4`` for res2..res4):

=====================================================  ==================================================
authors                                                 fapn (:class:`fapn.necks.FaPN`, levels res2..res5)
=====================================================  ==================================================
``fan_align{s}.lateral_conv.conv_atten.weight``         ``merges.{s-2}.lateral.attention.weight``
``fan_align{s}.lateral_conv.conv.weight``               ``merges.{s-2}.lateral.projection.weight``
``fan_align{s}.offset.weight``                          ``merges.{s-2}.offset_fuse.weight``
``fan_align{s}.dcpack_L2.weight`` / ``.bias``           ``merges.{s-2}.deform.weight`` / ``.bias``
``fan_align{s}.dcpack_L2.conv_offset_mask.weight/bias`` ``merges.{s-2}.offset_mask.weight`` / ``.bias``
``fpn_output{s}.weight`` / ``.bias``                    ``output_convs.{s-2}.weight`` / ``.bias``
``fan_align5.weight`` / ``.bias``                       ``top_lateral.weight`` / ``.bias``
=====================================================  ==================================================

The offset/mask layout of the authors' DCNv2 is torchvision's, so tensors are copied unchanged. The ResNet
under ``backbone.bottom_up.`` is mapped by :func:`fapn.models.detection.convert_detectron2_resnet` when that
module is available.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "load_detectron2_checkpoint",
    "convert_fapn_neck",
    "convert_detectron2_fapn",
    "NECK_KEY_PATTERNS",
]

NECK_KEY_PATTERNS: tuple[tuple[str, Callable[[re.Match[str]], str]], ...] = (
    (r"fan_align([2-9])\.lateral_conv\.conv_atten\.weight", lambda m: f"merges.{int(m[1]) - 2}.lateral.attention.weight"),
    (r"fan_align([2-9])\.lateral_conv\.conv\.weight", lambda m: f"merges.{int(m[1]) - 2}.lateral.projection.weight"),
    (r"fan_align([2-9])\.offset\.weight", lambda m: f"merges.{int(m[1]) - 2}.offset_fuse.weight"),
    (r"fan_align([2-9])\.dcpack_L2\.conv_offset_mask\.(weight|bias)", lambda m: f"merges.{int(m[1]) - 2}.offset_mask.{m[2]}"),
    (r"fan_align([2-9])\.dcpack_L2\.(weight|bias)", lambda m: f"merges.{int(m[1]) - 2}.deform.{m[2]}"),
    (r"fpn_output([2-9])\.(weight|bias)", lambda m: f"output_convs.{int(m[1]) - 2}.{m[2]}"),
)
"""Authors' neck key (without ``backbone.``) -> ours, for every level below the top."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles detectron2 ``.pkl`` model files (dicts of numpy arrays) and refuses any other class, so a
    file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            if module.startswith("numpy.core"):
                module = module.replace("numpy.core", "numpy._core")
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a .pkl checkpoint (only numpy arrays)")


def load_detectron2_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The model state dict of a detectron2 checkpoint: a ``.pth`` with ``{"model": ...}`` (read with
    ``weights_only=True``) or detectron2's ``.pkl`` (``{"model": {name: numpy array}}``, read allowing numpy only).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds no state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".pkl":
        with path.open("rb") as handle:
            data: Any = _NumpyOnlyUnpickler(handle, encoding="latin1").load()
    else:
        data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, Mapping) and isinstance(data.get("model"), Mapping):
        data = data["model"]
    elif isinstance(data, Mapping) and isinstance(data.get("state_dict"), Mapping):
        data = data["state_dict"]
    if not isinstance(data, Mapping) or not data:
        raise ValueError(f"{path} holds no state dict (expected {{'model': {{name: tensor}}}} or a state dict)")
    state: dict[str, Tensor] = {}
    for key, value in data.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if isinstance(value, Tensor):
            state[str(key)] = value
    return state


def convert_fapn_neck(
    state_dict: Mapping[str, Tensor], prefix: str = "backbone.", top_level: int = 5
) -> tuple[dict[str, Tensor], list[str]]:
    """Map the authors' FaPN neck to the keys of :class:`fapn.necks.FaPN` (res2..res5 inputs).

    Args:
        state_dict: the authors' model state dict (or only its neck).
        prefix: what precedes the neck's keys (``"backbone."`` in detectron2 models).
        top_level: the level of the top lateral (``fan_align5``).

    Returns:
        ``(mapped, unmapped)``: our neck keys -> the original tensors, and the keys under ``prefix`` that are
        neither the neck's nor the ResNet's (``bottom_up``) and were left out.

    Example:
        >>> mapped, _ = convert_fapn_neck({"backbone.fan_align3.offset.weight": torch.zeros(1)})
        >>> list(mapped)
        ['merges.1.offset_fuse.weight']
    """
    mapped: dict[str, Tensor] = {}
    unmapped: list[str] = []
    top = re.compile(rf"fan_align{top_level}\.(weight|bias)")
    compiled = [(re.compile(p), f) for p, f in NECK_KEY_PATTERNS]
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        local = key[len(prefix) :]
        if local.startswith("bottom_up."):
            continue
        if match := top.fullmatch(local):
            mapped[f"top_lateral.{match[1]}"] = value
            continue
        for pattern, target in compiled:
            if match := pattern.fullmatch(local):
                mapped[target(match)] = value
                break
        else:
            unmapped.append(key)
    return mapped, unmapped


def _detection_converter(name: str) -> Callable[..., tuple[dict[str, Tensor], list[str]]] | None:
    try:
        from fapn.models import detection
    except ImportError:
        return None
    return getattr(detection, name, None)


def convert_detectron2_fapn(
    state_dict: Mapping[str, Tensor],
    neck_prefix: str = "backbone.fapn.",
    body_prefix: str = "backbone.body.",
) -> tuple[dict[str, Tensor], list[str]]:
    """A whole detectron2 FaPN checkpoint mapped onto fapn's models.

    An R-CNN checkpoint (with ``roi_heads.*`` keys) goes through
    :func:`fapn.models.detection.convert_detectron2_fapn_rcnn` when it is available (body, neck, RPN, heads).
    Otherwise the neck is mapped here and the ResNet body by
    :func:`fapn.models.detection.convert_detectron2_resnet` (if available), under ``neck_prefix`` and
    ``body_prefix`` (the names of :class:`fapn.models.detection.BackboneWithFaPN`).

    Args:
        state_dict: the authors' model state dict.
        neck_prefix: prefix of our neck's keys in the target model.
        body_prefix: prefix of the ResNet's keys.

    Returns:
        ``(mapped, unmapped)``: target keys -> tensors, and every source key that was not mapped, in input order.
    """
    rcnn = _detection_converter("convert_detectron2_fapn_rcnn")
    if rcnn is not None and any(key.startswith("roi_heads.") for key in state_dict):
        return rcnn(dict(state_dict))
    neck, neck_unmapped = convert_fapn_neck(state_dict)
    mapped = {neck_prefix + key: value for key, value in neck.items()}
    body_source = {k: v for k, v in state_dict.items() if k.startswith("backbone.bottom_up.")}
    resnet = _detection_converter("convert_detectron2_resnet")
    body_unmapped: set[str] = set(body_source)
    if resnet is not None and body_source:
        body_mapped, rest = resnet(body_source)
        mapped.update({body_prefix + key: value for key, value in body_mapped.items()})
        body_unmapped = set(rest)
    left = set(neck_unmapped) | body_unmapped
    unmapped = [key for key in state_dict if key in left or not key.startswith("backbone.")]
    return mapped, unmapped
