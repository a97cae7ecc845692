"""The authors' detectron2 FaPN checkpoints -> fapn's modules: every key mapping of the library, in one place.

The authors' neck (``FAN`` in their ``fan.py``; prefix ``backbone.``) names each module after the stage ``s`` of
its input (``res{s}``), so the mapping goes by name: for a neck over stages ``s_0 < ... < s_top`` (res2-res5 for
R-CNN, res3-res5 for RetinaNet), the merge of stage ``s`` is ``merges.{i}`` with ``i`` the position of ``s``:

=========================================================  ==================================================
authors                                                     fapn (:class:`fapn.necks.FaPN`)
=========================================================  ==================================================
``fan_align{s}.lateral_conv.conv_atten.weight``             ``merges.{i}.lateral.attention.weight``
``fan_align{s}.lateral_conv.conv.weight``                   ``merges.{i}.lateral.projection.weight``
``fan_align{s}.offset.weight`` (``.norm.*`` with a norm)    ``merges.{i}.offset_fuse.weight`` (``.norm.*``)
``fan_align{s}.dcpack_L2.weight`` / ``.bias``               ``merges.{i}.deform.weight`` / ``.bias``
``fan_align{s}.dcpack_L2.conv_offset_mask.weight/bias``     ``merges.{i}.offset_mask.weight`` / ``.bias``
``fpn_output{s}.weight`` / ``.bias`` / ``.norm.*``          ``output_convs.{i}.weight`` / ``.bias`` / ``.norm.*``
``fan_align{s_top}.weight`` / ``.bias`` / ``.norm.*``       ``top_lateral.weight`` / ``.bias`` / ``.norm.*``
``top_block.p6.*``, ``top_block.p7.*`` (RetinaNet)          ``extra_blocks.p6.*``, ``extra_blocks.p7.*``
=========================================================  ==================================================

The offset/mask layout of the authors' DCNv2 is torchvision's, so tensors are copied unchanged. The ResNet under
``backbone.bottom_up.`` (detectron2 names, :func:`convert_detectron2_resnet`) and the R-CNN heads
(:func:`convert_detectron2_rcnn`) map onto torchvision's names:

==============================================  ================================================
``stem.conv1.weight``                           ``body.conv1.weight`` (input channels reversed: BGR -> RGB)
``stem.conv1.norm.*``                           ``body.bn1.*``
``res{s}.{i}.conv{k}.weight`` / ``.norm.*``     ``body.layer{s-1}.{i}.conv{k}.weight`` / ``.bn{k}.*``
``res{s}.{i}.shortcut.weight`` / ``.norm.*``    ``body.layer{s-1}.{i}.downsample.0.weight`` / ``.1.*``
``proposal_generator.rpn_head.conv``            ``rpn.head.conv.0.0``
``proposal_generator.rpn_head.objectness_logits``  ``rpn.head.cls_logits``
``proposal_generator.rpn_head.anchor_deltas``   ``rpn.head.bbox_pred``
``roi_heads.box_head.fc1`` / ``fc2``            ``roi_heads.box_head.fc6`` / ``fc7``
``roi_heads.box_predictor.cls_score``           same name; background row moved from last to first
``roi_heads.box_predictor.bbox_pred``           same name; 4 zero rows prepended for background
``roi_heads.mask_head.mask_fcn{k}``             ``roi_heads.mask_head.{k-1}.0``
``roi_heads.mask_head.deconv``                  ``roi_heads.mask_predictor.conv5_mask``
``roi_heads.mask_head.predictor``               ``roi_heads.mask_predictor.mask_fcn_logits``; zero row prepended
==============================================  ================================================

The models these keys load into are :func:`fapn.models.detection.detectron2_fapn_rcnn` (R-CNN in the authors'
configuration) and any builder of :mod:`fapn.models.detection` (``backbone.fapn.*`` for the neck).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fapn.state_dict import read_torch_file

__all__ = [
    "load_detectron2_checkpoint",
    "convert_fapn_neck",
    "convert_detectron2_resnet",
    "convert_detectron2_rcnn",
    "neck_stages",
]

_NORM_LEAF = r"norm\.(?:weight|bias|running_mean|running_var|num_batches_tracked)"
_MERGE_PARTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), target)
    for pattern, target in (
        (r"lateral_conv\.conv_atten\.weight", "lateral.attention.weight"),
        (r"lateral_conv\.conv\.weight", "lateral.projection.weight"),
        (rf"offset\.(weight|{_NORM_LEAF})", r"offset_fuse.\1"),
        (r"dcpack_L2\.conv_offset_mask\.(weight|bias)", r"offset_mask.\1"),
        (r"dcpack_L2\.(weight|bias)", r"deform.\1"),
    )
)
"""The parts of one authors' ``FeatureAlign_V2`` -> ours, within ``merges.{i}``."""
_CONV_PART = re.compile(rf"(weight|bias|{_NORM_LEAF})")
_FAN_ALIGN = re.compile(r"fan_align(\d+)\.(.+)")
_FPN_OUTPUT = re.compile(r"fpn_output(\d+)\.(.+)")
_TOP_BLOCK = re.compile(r"top_block\.(p6|p7)\.(weight|bias)")


class _Refused(pickle.UnpicklingError):
    """A class :class:`_NumpyOnlyUnpickler` does not create."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles detectron2 ``.pkl`` model files (dicts of numpy arrays) and refuses any other class, so a
    file cannot run code."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("collections", "OrderedDict"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            if module.startswith("numpy.core"):
                module = module.replace("numpy.core", "numpy._core")
            return super().find_class(module, name)
        raise _Refused(f"refused to load {module}.{name}: a .pkl checkpoint may hold numpy arrays only")


def load_detectron2_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The model state dict of a detectron2 checkpoint: a ``.pth`` with ``{"model": ...}`` (read with
    ``weights_only=True``) or detectron2's ``.pkl`` (``{"model": {name: numpy array}}``, read allowing numpy only).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file holds no state dict, is not a checkpoint, or would create objects other than
            arrays and tensors (nothing from it runs); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".pkl":
        try:
            with path.open("rb") as handle:
                data: Any = _NumpyOnlyUnpickler(handle, encoding="latin1").load()
        except _Refused as err:
            raise ValueError(f"{path}: {err}; no code from the file ran") from None
        except Exception as err:  # the unpickler raises UnpicklingError, EOFError, KeyError, ... on garbage
            raise ValueError(f"{path}: not a detectron2 .pkl checkpoint (unreadable: {type(err).__name__})") from None
    else:
        data = read_torch_file(path, map_location="cpu")  # weights_only, every failure one line naming the file
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


def neck_stages(state_dict: Mapping[str, Tensor], prefix: str = "backbone.") -> list[int]:
    """The stages ``s`` of the authors' neck in a state dict (from its ``fan_align{s}`` keys), ascending.

    Example:
        >>> neck_stages(
        ...     {"backbone.fan_align3.offset.weight": torch.zeros(1), "backbone.fan_align5.bias": torch.zeros(1)}
        ... )
        [3, 5]
    """
    stages = {
        int(m[1]) for key in state_dict if key.startswith(prefix) and (m := _FAN_ALIGN.fullmatch(key[len(prefix) :]))
    }
    return sorted(stages)


def convert_fapn_neck(
    state_dict: Mapping[str, Tensor], prefix: str = "backbone.", stages: Sequence[int] | None = None
) -> tuple[dict[str, Tensor], list[str]]:
    """Map the authors' FaPN neck to the keys of :class:`fapn.necks.FaPN`, by stage name.

    Args:
        state_dict: the authors' model state dict (or only its neck).
        prefix: what precedes the neck's keys (``"backbone."`` in detectron2 models).
        stages: the stages of the neck's inputs, ascending (``[2, 3, 4, 5]`` for R-CNN, ``[3, 4, 5]`` for
            RetinaNet); default: those of the checkpoint's ``fan_align{s}`` keys. The last one is the top lateral.

    Returns:
        ``(mapped, unmapped)``: our neck keys -> the original tensors, and the keys under ``prefix`` that are
        neither the neck's nor the ResNet's (``bottom_up``), in input order.

    Example:
        >>> state = {f"backbone.fan_align{s}.offset.weight": torch.zeros(1) for s in (3, 4)}
        >>> state["backbone.fan_align5.weight"] = torch.zeros(1)
        >>> list(convert_fapn_neck(state)[0])
        ['merges.0.offset_fuse.weight', 'merges.1.offset_fuse.weight', 'top_lateral.weight']
    """
    order = list(stages) if stages is not None else neck_stages(state_dict, prefix)
    if order != sorted(set(order)):
        raise ValueError(f"stages must be distinct and ascending, got {order}")
    top = order[-1] if order else None
    mapped: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        local = key[len(prefix) :]
        if local.startswith("bottom_up."):
            continue
        target = _neck_target(local, order, top)
        if target is None:
            unmapped.append(key)
        else:
            mapped[target] = value
    return mapped, unmapped


def _neck_target(local: str, order: list[int], top: int | None) -> str | None:
    if match := _TOP_BLOCK.fullmatch(local):
        return f"extra_blocks.{match[1]}.{match[2]}"
    if match := _FPN_OUTPUT.fullmatch(local):
        stage, part = int(match[1]), match[2]
        if stage in order and stage != top and _CONV_PART.fullmatch(part):
            return f"output_convs.{order.index(stage)}.{part}"
        return None
    if match := _FAN_ALIGN.fullmatch(local):
        stage, part = int(match[1]), match[2]
        if stage not in order:
            return None
        if stage == top:
            return f"top_lateral.{part}" if _CONV_PART.fullmatch(part) else None
        for pattern, replacement in _MERGE_PARTS:
            if pattern.fullmatch(part):
                return f"merges.{order.index(stage)}.{pattern.sub(replacement, part)}"
    return None


_STEM = re.compile(r"^stem\.conv1\.(weight|norm\.(weight|bias|running_mean|running_var))$")
_BLOCK = re.compile(
    r"^res([2-5])\.(\d+)\.(conv[123]|shortcut)\.(weight|norm\.(?:weight|bias|running_mean|running_var))$"
)


def convert_detectron2_resnet(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Map a detectron2 ResNet state dict onto a torchvision ResNet's names
    (:func:`fapn.models.detection.detectron2_resnet`).

    Accepts keys with or without the ``backbone.bottom_up.`` prefix (the authors' whole checkpoints pass
    through: the keys that are not ResNet keys come back as unmapped). The stem conv's input channels are
    reversed (detectron2 reads BGR, this body RGB).

    Args:
        state_dict: detectron2 names, e.g. ``res2.0.conv1.norm.running_mean``.

    Returns:
        ``(mapped, unmapped)``: a state dict for ``detectron2_resnet(...)`` (load it with ``strict=False``:
        it has no ``fc``), and the input keys that are not ResNet body keys, in input order.

    Example:
        >>> mapped, unmapped = convert_detectron2_resnet(
        ...     {"res2.0.conv1.weight": torch.zeros(1), "pixel_mean": torch.zeros(1)}
        ... )
        >>> list(mapped), unmapped
        (['layer1.0.conv1.weight'], ['pixel_mean'])
    """
    mapped: dict[str, Tensor] = {}
    unmapped: list[str] = []
    for key, value in state_dict.items():
        name = key.removeprefix("backbone.bottom_up.")
        if match := _STEM.match(name):
            if match.group(1) == "weight":
                mapped["conv1.weight"] = value.flip(1)  # BGR -> RGB input channels
            else:
                mapped[f"bn1.{match.group(2)}"] = value
        elif match := _BLOCK.match(name):
            stage, index, conv, leaf = match.groups()
            prefix = f"layer{int(stage) - 1}.{index}"
            if conv == "shortcut":
                module = "downsample.0" if leaf == "weight" else "downsample.1"
            else:
                module = conv if leaf == "weight" else f"bn{conv[-1]}"
            mapped[f"{prefix}.{module}.{leaf.removeprefix('norm.')}"] = value
        else:
            unmapped.append(key)
    return mapped, unmapped


_HEAD_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), target)
    for pattern, target in (
        (r"proposal_generator\.rpn_head\.conv\.(weight|bias)", r"rpn.head.conv.0.0.\1"),
        (r"proposal_generator\.rpn_head\.objectness_logits\.(weight|bias)", r"rpn.head.cls_logits.\1"),
        (r"proposal_generator\.rpn_head\.anchor_deltas\.(weight|bias)", r"rpn.head.bbox_pred.\1"),
        (r"roi_heads\.box_head\.fc1\.(weight|bias)", r"roi_heads.box_head.fc6.\1"),
        (r"roi_heads\.box_head\.fc2\.(weight|bias)", r"roi_heads.box_head.fc7.\1"),
        (r"roi_heads\.mask_head\.deconv\.(weight|bias)", r"roi_heads.mask_predictor.conv5_mask.\1"),
        (r"roi_heads\.mask_head\.mask_fcn(\d)\.(weight|bias)", "mask_fcn"),
        (r"roi_heads\.box_predictor\.cls_score\.(weight|bias)", r"roi_heads.box_predictor.cls_score.\1"),
        (r"roi_heads\.box_predictor\.bbox_pred\.(weight|bias)", r"roi_heads.box_predictor.bbox_pred.\1"),
        (r"roi_heads\.mask_head\.predictor\.(weight|bias)", r"roi_heads.mask_predictor.mask_fcn_logits.\1"),
    )
)


def _background_first(value: Tensor) -> Tensor:
    """detectron2 puts background last in ``cls_score``; torchvision first."""
    return torch.cat([value[-1:], value[:-1]])


def _prepend_zeros(value: Tensor, rows: int) -> Tensor:
    return torch.cat([value.new_zeros((rows, *value.shape[1:])), value])


def _head_target(key: str, value: Tensor) -> tuple[str, Tensor] | None:
    for pattern, replacement in _HEAD_RULES:
        if match := pattern.fullmatch(key):
            if replacement == "mask_fcn":
                return f"roi_heads.mask_head.{int(match[1]) - 1}.0.{match[2]}", value
            target = pattern.sub(replacement, key)
            if ".cls_score." in key:
                return target, _background_first(value)
            if ".bbox_pred." in key:
                return target, _prepend_zeros(value, 4)
            if ".mask_head.predictor." in key:
                return target, _prepend_zeros(value, 1)
            return target, value
    return None


def convert_detectron2_rcnn(
    state_dict: Mapping[str, Tensor],
    neck_prefix: str = "backbone.fapn.",
    body_prefix: str = "backbone.body.",
    stages: Sequence[int] | None = None,
) -> tuple[dict[str, Tensor], list[str]]:
    """A detectron2 FaPN checkpoint without PointRend heads mapped onto fapn's models: ResNet body, neck (by
    stage, with RetinaNet's ``top_block``) and, when present, the R-CNN heads (RPN, box and mask heads;
    class-specific box regression and masks; background moved to index 0).

    :func:`fapn.convert.convert_detectron2_fapn` takes any checkpoint (PointRend ones too) and calls this for what
    is not a PointRend head; its docstring describes the arguments and the result.
    """
    body, body_unmapped = convert_detectron2_resnet(
        {k: v for k, v in state_dict.items() if k.startswith("backbone.bottom_up.")}
    )
    neck, neck_unmapped = convert_fapn_neck(state_dict, stages=stages)
    mapped = {body_prefix + key: value for key, value in body.items()}
    mapped.update({neck_prefix + key: value for key, value in neck.items()})
    left = set(body_unmapped) | set(neck_unmapped)
    unmapped: list[str] = []
    for key, value in state_dict.items():
        if key.startswith("backbone.") and key not in left:
            continue
        head = None if key.startswith("backbone.") else _head_target(key, value)
        if head is None:
            unmapped.append(key)
        else:
            mapped[head[0]] = head[1]
    return mapped, unmapped
