"""Deployment: ONNX (deformable conv as ONNX ``DeformConv``), TorchScript and ``torch.export``, each checked
against PyTorch.

Example:
    >>> from fapn.export import export_onnx
    >>> from fapn.models import realtime_fapn
    >>> print(export_onnx(realtime_fapn(num_classes=19).eval(), "fapn.onnx").summary())  # doctest: +SKIP
    onnx check OK: max |exported - pytorch| = ...
"""

from fapn.export.check import DEFAULT_CHECK_SHAPES, ExportCheck, compare_outputs
from fapn.export.exported_program import export_program
from fapn.export.onnx import MIN_OPSET, check_onnx, deform_conv2d_translation, export_onnx, onnx_op_counts
from fapn.export.quantize import Int8Check, calibration_batches, compare_int8, quantize_onnx_int8
from fapn.export.torchscript import export_torchscript

__all__ = [
    "export_onnx",
    "check_onnx",
    "onnx_op_counts",
    "deform_conv2d_translation",
    "MIN_OPSET",
    "quantize_onnx_int8",
    "calibration_batches",
    "compare_int8",
    "Int8Check",
    "export_torchscript",
    "export_program",
    "ExportCheck",
    "compare_outputs",
    "DEFAULT_CHECK_SHAPES",
]
