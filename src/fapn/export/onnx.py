"""ONNX export with FaPN's deformable convolution as ONNX's native ``DeformConv`` (opset >= 19)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fapn.export.check import DEFAULT_CHECK_SHAPES, ExportCheck, compare_outputs, dynamic_image_axes, input_name
from fapn.ops import deform_backend

__all__ = ["export_onnx", "check_onnx", "deform_conv2d_translation", "onnx_op_counts", "MIN_OPSET"]

MIN_OPSET = 19
"""ONNX ``DeformConv`` exists from opset 19 on."""


def deform_conv2d_translation(opset: int = MIN_OPSET) -> Any:
    """An onnxscript function translating ``torchvision::deform_conv2d`` into ONNX ``DeformConv``.

    torchvision registers no ONNX translation for its op. Both share the offset layout
    (channel ``g * 2 * kh * kw + 2 * k + {0: dy, 1: dx}``) and the mask layout, so the inputs pass through
    unchanged; ``use_mask=False`` (DCNv1) simply omits the mask input.
    """
    import onnxscript

    op = getattr(onnxscript, f"opset{opset}", None) or onnxscript.opset19

    def deform_conv2d(
        input: Any,
        weight: Any,
        offset: Any,
        mask: Any,
        bias: Any,
        stride_h: int,
        stride_w: int,
        pad_h: int,
        pad_w: int,
        dil_h: int,
        dil_w: int,
        n_weight_grps: int,
        n_offset_grps: int,
        use_mask: bool,
    ) -> Any:
        attributes: dict[str, Any] = {
            "dilations": [dil_h, dil_w],
            "group": n_weight_grps,
            "offset_group": n_offset_grps,
            "pads": [pad_h, pad_w, pad_h, pad_w],
            "strides": [stride_h, stride_w],
        }
        if use_mask:
            return op.DeformConv(input, weight, offset, bias, mask, **attributes)
        return op.DeformConv(input, weight, offset, bias, **attributes)

    return deform_conv2d


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    example_shape: tuple[int, int, int, int] = (2, 3, 64, 96),
    opset: int = MIN_OPSET,
    dynamic: bool = True,
    metadata: Mapping[str, Any] | None = None,
    check: bool = True,
    check_shapes: Sequence[tuple[int, int, int, int]] = DEFAULT_CHECK_SHAPES,
    tolerance: float = 1e-4,
) -> ExportCheck | None:
    """Export an image -> logits model to ONNX (one self-contained file) and check it in onnxruntime.

    The deformable convolutions are exported through the torchvision backend whatever backend the model uses,
    and ``torchvision::deform_conv2d`` becomes ONNX ``DeformConv``. Input ``images`` ``[batch, 3, height,
    width]``, output ``logits``; batch, height and width are dynamic unless ``dynamic=False``.

    Args:
        model: maps ``[N, 3, H, W]`` float32 to a tensor.
        path: the ``.onnx`` file to write.
        example_shape: input shape used for tracing.
        opset: ONNX opset, at least 19.
        dynamic: dynamic batch, height and width.
        metadata: stored as the model's ``metadata_props`` (values JSON-encoded unless strings), e.g. the class
            names, palette, mean and std of a checkpoint.
        check: compare with PyTorch in onnxruntime on ``check_shapes`` (``example_shape`` if not dynamic).
        tolerance: largest relative difference for the check to pass.

    Returns:
        the :class:`~fapn.export.ExportCheck` (``None`` without ``check``).

    Example:
        >>> from fapn.models import realtime_fapn
        >>> report = export_onnx(realtime_fapn(num_classes=3).eval(), "fapn.onnx")  # doctest: +SKIP
        >>> report.passed  # doctest: +SKIP
        True
    """
    import onnx

    if opset < MIN_OPSET:
        raise ValueError(f"ONNX DeformConv needs opset >= {MIN_OPSET}, got opset {opset}")
    model = model.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(example_shape)
    dynamic_shapes = None
    if dynamic:  # keyed by the name of forward's input argument; H, W > 32 (a 1x1 C5 would be specialised)
        dynamic_shapes = {input_name(model): dynamic_image_axes(model)}
    with deform_backend("torchvision"), torch.no_grad():
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            opset_version=opset,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes=dynamic_shapes,
            custom_translation_table={torch.ops.torchvision.deform_conv2d.default: deform_conv2d_translation(opset)},
            optimize=True,
            verbose=False,
        )
    if program is None:  # torch returns None only for dynamo=False
        raise RuntimeError(f"torch.onnx.export returned no program for {path}")
    program.save(str(path), external_data=False)
    if metadata:
        proto = onnx.load(str(path))
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key = key
            entry.value = value if isinstance(value, str) else json.dumps(value)
        onnx.save(proto, str(path))
    if not check:
        return None
    return check_onnx(model, path, check_shapes if dynamic else [example_shape], tolerance)


def check_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    shapes: Sequence[tuple[int, int, int, int]] = DEFAULT_CHECK_SHAPES,
    tolerance: float = 1e-4,
) -> ExportCheck:
    """Compare an ONNX file run by onnxruntime (CPU) with ``model`` on random inputs."""
    import onnxruntime

    counts = onnx_op_counts(path)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(x: Tensor) -> Tensor:
        return torch.from_numpy(session.run(None, {input_name: x.numpy()})[0])

    with deform_backend("torchvision"):
        report = compare_outputs(model, run, "onnx", str(path), shapes, tolerance)
    report.notes.append(
        f"{counts.get('DeformConv', 0)} DeformConv nodes, opset {counts['opset']}, onnxruntime {onnxruntime.__version__}"
    )
    return report


def onnx_op_counts(path: str | os.PathLike[str]) -> dict[str, int]:
    """How often each op type occurs in an ONNX file's main graph, plus ``"opset"``: its default-domain opset."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    counts: dict[str, int] = {}
    for node in proto.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    counts["opset"] = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    return counts
