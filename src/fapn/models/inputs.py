"""The inputs of the semantic models: a bad batch or target is a one-line ``ValueError`` naming what was expected,
and both are padded to the network's size divisibility here (the model crops its output back)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fapn.layers.padding import pad_to_multiple

__all__ = ["check_image_batch", "padded_images", "padded_targets"]


def _weight_dtype(model: nn.Module) -> torch.dtype | None:
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def check_image_batch(x: Tensor, model: nn.Module | None = None, *, in_channels: int = 3, min_size: int = 1) -> None:
    """Raise ``ValueError`` unless ``x`` is a non-empty float ``[N, in_channels, H, W]`` batch with
    ``H, W >= min_size`` in the dtype of ``model``'s weights.

    A float64 batch is fine for a float64 model (``model.double()``); a dtype that differs from the weights' is
    refused here rather than deep inside a convolution.

    Args:
        x: the batch.
        model: the model that will read it (its weights' dtype is checked), or ``None``.
        in_channels: expected channels.
        min_size: smallest height and width (the network's total stride).

    Example:
        >>> check_image_batch(torch.zeros(0, 3, 64, 64))
        Traceback (most recent call last):
            ...
        ValueError: expected at least one image, got an empty batch of shape (0, 3, 64, 64)
    """
    if not isinstance(x, Tensor):
        raise ValueError(f"expected a torch.Tensor image batch, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"expected a 4-D image batch [N, {in_channels}, H, W], got a {x.dim()}-D tensor of shape "
            f"{tuple(x.shape)}" + (" (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else "")
        )
    if x.shape[1] != in_channels:
        raise ValueError(f"expected {in_channels} input channels [N, {in_channels}, H, W], got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"expected at least one image, got an empty batch of shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(
            f"expected a floating-point image batch (normalised float32), got dtype {x.dtype}; "
            "convert uint8 images with x.float() / 255 and normalise them"
        )
    weight_dtype = None if model is None else _weight_dtype(model)
    # autocast computes in its own dtype whatever the input's: only eager mismatches are an error
    if weight_dtype is not None and x.dtype != weight_dtype and not torch.is_autocast_enabled(x.device.type):
        raise ValueError(
            f"input dtype {x.dtype} differs from the model's weights ({weight_dtype}); convert the input "
            f"(x.to({weight_dtype})) or the model (model.to({x.dtype}))"
        )
    if x.shape[-2] < min_size or x.shape[-1] < min_size:
        raise ValueError(
            f"input of {x.shape[-2]}x{x.shape[-1]} pixels is smaller than the network's stride; "
            f"height and width must be at least {min_size}"
        )


def padded_images(images: Tensor, model: nn.Module, size_divisibility: int, *, min_size: int = 1) -> Tensor:
    """``images`` checked by :func:`check_image_batch` (not while tracing or compiling, where the checks would be
    recorded as constants) and zero-padded at the bottom and right to a multiple of ``size_divisibility``.

    Example:
        >>> padded_images(torch.zeros(1, 3, 30, 33), nn.Identity(), 32).shape
        torch.Size([1, 3, 32, 64])
    """
    if not torch.jit.is_tracing() and not torch.compiler.is_compiling():
        check_image_batch(images, model, min_size=min_size)
    return pad_to_multiple(images, size_divisibility)


def padded_targets(
    targets: Tensor | None, images: Tensor, size_divisibility: int, ignore_index: int, model_name: str
) -> Tensor:
    """Training targets ``[N, H, W]`` of ``images`` checked and padded like them, with ``ignore_index``.

    Raises:
        ValueError: no targets (``model_name`` needs them in training mode), or not of the images' size.

    Example:
        >>> padded_targets(torch.zeros(1, 30, 30, dtype=torch.long), torch.zeros(1, 3, 30, 30), 32, 255, "m")[0, -1, -1]
        tensor(255)
    """
    if targets is None:
        raise ValueError(f"in training mode {model_name} needs targets [N, H, W] to compute its losses")
    expected = (images.shape[0], *images.shape[-2:])
    if tuple(targets.shape) != expected:
        raise ValueError(f"expected targets of shape {expected}, got {tuple(targets.shape)}")
    return pad_to_multiple(targets, size_divisibility, value=ignore_index)
