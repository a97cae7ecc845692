"""Run a model's deformable convolutions through one named backend for a while (e.g. during an export)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from torch import nn

from fapn.layers.deform_conv import ModulatedDeformConv2d

__all__ = ["deform_backend"]


@contextlib.contextmanager
def deform_backend(model: nn.Module, name: str) -> Iterator[nn.Module]:
    """Within the block, every :class:`~fapn.layers.ModulatedDeformConv2d` of ``model`` (and any call of
    :func:`fapn.ops.deform_conv2d` without ``backend=``) uses backend ``name``; restored afterwards.

    The exporters rely on it: ``torchvision::deform_conv2d`` is one op they can map to ONNX ``DeformConv`` or
    keep in a TorchScript / ExportedProgram graph, whereas other backends unroll into gathers.

    Example:
        >>> from fapn.models import realtime_fapn
        >>> model = realtime_fapn(num_classes=3)
        >>> with deform_backend(model, "torchvision"):
        ...     pass
    """
    layers = [m for m in model.modules() if isinstance(m, ModulatedDeformConv2d)]
    saved = [layer.backend for layer in layers]
    saved_env = os.environ.get("FAPN_DEFORM_BACKEND")
    try:
        for layer in layers:
            layer.backend = name
        os.environ["FAPN_DEFORM_BACKEND"] = name
        yield model
    finally:
        for layer, backend in zip(layers, saved):
            layer.backend = backend
        if saved_env is None:
            os.environ.pop("FAPN_DEFORM_BACKEND", None)
        else:
            os.environ["FAPN_DEFORM_BACKEND"] = saved_env
