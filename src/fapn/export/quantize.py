"""INT8 ONNX for CPU deployment: onnxruntime's static quantization of an exported float model.

:func:`quantize_onnx_int8` takes a float ONNX file written by :func:`fapn.export.export_onnx` and writes a QDQ model
(``QuantizeLinear`` / ``DequantizeLinear`` pairs around the quantized ops): activations as unsigned 8 bits with one
scale per tensor, weights as signed 8 bits with one scale per output channel, ranges calibrated on real images.
onnxruntime fuses each QDQ pair with its ``Conv`` into an integer convolution (VNNI where the CPU has it).

``DeformConv`` stays float: onnxruntime has no integer kernel for it and its quantizer does not list it, so the
tool puts a ``DequantizeLinear`` before it and a ``QuantizeLinear`` after it. Everything else the quantizer knows
(``Conv``, ``Add``, ``Concat``, ``Resize``, ...) runs on 8-bit tensors.

On x86 CPUs without VNNI (AVX2 and AVX-512 before Cascade Lake / Zen 4), onnxruntime's u8 x s8 integer
multiply-add can saturate; onnxruntime's documentation prescribes 7-bit weights there (``reduce_range``), which
:func:`quantize_onnx_int8` sets by itself from the CPU's flags (``reduce_range=None``).

Example:
    >>> import numpy as np
    >>> batches = [np.random.randn(1, 3, 64, 96).astype(np.float32) for _ in range(4)]
    >>> quantize_onnx_int8("fapn.onnx", "fapn_int8.onnx", batches)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "quantize_onnx_int8",
    "calibration_batches",
    "compare_int8",
    "Int8Check",
    "cpu_has_vnni",
    "onnx_normalisation",
]


def cpu_has_vnni() -> bool:
    """Whether this CPU has an 8-bit dot-product instruction (AVX512-VNNI or AVX-VNNI), from ``/proc/cpuinfo``.

    ``False`` where it cannot be read (not Linux): the safe side, 7-bit weights.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return bool({"avx512_vnni", "avx_vnni"} & set(flags.split()))


def onnx_normalisation(path: str | os.PathLike[str]) -> tuple[list[float], list[float]]:
    """The ``mean`` and ``std`` stored in an exported model's metadata (ImageNet's when absent), on the 0..1 scale."""
    import json

    import onnx

    from fapn.data.base import IMAGENET_MEAN, IMAGENET_STD

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    mean = [float(v) for v in json.loads(props["mean"])] if "mean" in props else list(IMAGENET_MEAN)
    std = [float(v) for v in json.loads(props["std"])] if "std" in props else list(IMAGENET_STD)
    scale = 255.0 if max(mean) > 1.0 or max(std) > 1.0 else 1.0
    return [m / scale for m in mean], [s / scale for s in std]


def calibration_batches(
    images: Sequence[str | os.PathLike[str]],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    size: tuple[int, int] | None = None,
) -> Iterator[np.ndarray]:
    """Each image as a normalised ``[1, 3, H, W]`` float32 array, the model's input.

    Args:
        images: image files.
        mean: per-channel mean on the 0..1 scale.
        std: per-channel standard deviation on the 0..1 scale.
        size: ``(height, width)`` to resize to (bilinear); ``None`` keeps each image's size.
    """
    from PIL import Image

    from fapn.inference.io import load_image

    m = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1)
    for path in images:
        rgb = load_image(path)
        if size is not None and rgb.shape[:2] != tuple(size):
            rgb = np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.Resampling.BILINEAR))
        x = rgb.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
        yield np.ascontiguousarray((x - m) / s)


class _Reader:
    """onnxruntime's ``CalibrationDataReader`` protocol over arrays."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]) -> None:
        self._batches = iter(batches)
        self._name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._name: batch}

    def rewind(self) -> None:  # part of the protocol; one pass is all MinMax calibration needs
        pass


def quantize_onnx_int8(
    model_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    calibration: Iterable[np.ndarray],
    *,
    per_channel: bool = True,
    reduce_range: bool | None = None,
) -> Path:
    """Write an INT8 (QDQ) copy of a float ONNX model, its ranges calibrated on ``calibration``.

    Args:
        model_path: float model from :func:`fapn.export.export_onnx`.
        out_path: the INT8 model to write.
        calibration: the model's inputs (normalised ``[N, 3, H, W]`` float32 arrays), e.g.
            :func:`calibration_batches`; at least one.
        per_channel: one weight scale per output channel (else per tensor).
        reduce_range: 7-bit weights; ``None``: only where the CPU has no VNNI (see the module docstring).

    Returns:
        ``out_path``.

    Raises:
        ValueError: no calibration input.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = list(calibration)
    if not batches:
        raise ValueError("no calibration input: give at least one image")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    input_name = onnx.load(str(model_path), load_external_data=False).graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # onnxruntime's recommended pre-pass (shape inference + graph optimisation); its symbolic shape inference
        # does not know DeformConv, so ONNX's own shape inference is used.
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer logs a pre-processing hint through the root logger
        try:
            quant_pre_process(str(model_path), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(out_path),
                _Reader(input_name, batches),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                reduce_range=(not cpu_has_vnni()) if reduce_range is None else reduce_range,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        finally:
            root.setLevel(level)
    return out_path


@dataclass
class Int8Check:
    """The INT8 model against the float model on the same inputs."""

    images: int
    pixel_agreement: float
    """fraction of pixels whose argmax class is the same in both"""
    relative_error: float
    """``||int8 - float|| / ||float||`` of the logits over all inputs"""

    def summary(self) -> str:
        return (
            f"int8 vs float32 on {self.images} calibration images: {100 * self.pixel_agreement:.2f}% of pixels "
            f"same class, logits relative error {self.relative_error:.3f}"
        )


def compare_int8(
    float_path: str | os.PathLike[str],
    int8_path: str | os.PathLike[str],
    batches: Iterable[np.ndarray],
    *,
    threads: int | None = None,
) -> Int8Check:
    """Run both models in onnxruntime on ``batches`` and compare their outputs.

    Args:
        float_path: the float model.
        int8_path: its INT8 copy.
        batches: model inputs.
        threads: onnxruntime intra-op threads (``None``: its default).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    sessions = [
        onnxruntime.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
        for p in (float_path, int8_path)
    ]
    name = sessions[0].get_inputs()[0].name
    same = total = 0
    diff_sq = ref_sq = 0.0
    count = 0
    for batch in batches:
        reference, quantized = (s.run(None, {name: batch})[0] for s in sessions)
        same += int((reference.argmax(1) == quantized.argmax(1)).sum())
        total += reference.shape[0] * reference.shape[2] * reference.shape[3]
        diff_sq += float(np.square(quantized.astype(np.float64) - reference).sum())
        ref_sq += float(np.square(reference.astype(np.float64)).sum())
        count += batch.shape[0]
    if not count:
        raise ValueError("no input to compare on")
    return Int8Check(count, same / total, (diff_sq / max(ref_sq, 1e-30)) ** 0.5)
