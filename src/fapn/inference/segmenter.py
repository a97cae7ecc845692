"""One-line inference: ``Segmenter.from_checkpoint(path).predict(image)``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, TypeAlias, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from fapn.checkpoint import build_model_from_checkpoint, load_checkpoint
from fapn.data.base import IMAGENET_MEAN, IMAGENET_STD, image_to_rgb
from fapn.inference.io import load_image
from fapn.inference.sliding_window import sliding_window_logits
from fapn.runtime import PRECISIONS, prepare_inference, resolve_device
from fapn.visualize import as_palette, colorize, overlay

__all__ = ["Segmenter", "ImageLike"]

ImageLike: TypeAlias = str | os.PathLike | np.ndarray | Image.Image | Tensor
"""A path, a PIL image, an ``[H, W, 3]`` uint8 RGB array, or a ``[3, H, W]`` tensor (uint8, or float in [0, 1])."""


def _to_uint8_chw(image: ImageLike) -> Tensor:
    if isinstance(image, (str, os.PathLike)):
        image = load_image(image)
    if isinstance(image, Image.Image):
        image = image_to_rgb(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an [H, W, 3] RGB array, got shape {image.shape}")
        if image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 RGB array, got dtype {image.dtype}")
        image = np.ascontiguousarray(image)
        if not image.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable memory
            image = image.copy()
        return torch.from_numpy(image).permute(2, 0, 1)
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a [3, H, W] image tensor, got shape {tuple(image.shape)}")
        if image.dtype == torch.uint8:
            return image
        if image.is_floating_point():
            return (image.clamp(0, 1) * 255).round().to(torch.uint8)
        raise ValueError(f"expected a uint8 or float image tensor, got dtype {image.dtype}")
    raise ValueError(
        f"expected an image path, PIL image, [H, W, 3] uint8 array or [3, H, W] tensor, got {type(image).__name__}"
    )


class Segmenter:
    """A trained segmentation model with everything needed to run it on images.

    Images go in as files, PIL images, uint8 arrays or tensors; label maps come out as ``[H, W]`` arrays of
    class indices at the input's size. Images larger than ``window`` run through sliding-window inference.

    Args:
        model: maps normalised ``[N, 3, H, W]`` images to ``[N, K, H, W]`` logits.
        num_classes: ``K``.
        mean: per-channel mean, on the ``[0, 1]`` scale (values above 1 are read as ``[0, 255]``).
        std: per-channel standard deviation, same scale as ``mean``.
        class_names: a name per class.
        palette: an ``[r, g, b]`` colour per class.
        ignore_index: the label that marks unlabelled pixels in ground truth.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` (see :func:`fapn.runtime.resolve_device`: a CUDA
            device torch does not see is a ``ValueError``).
        window: ``(height, width)``: images with a larger side are predicted window by window; ``None``: always
            the whole image.
        window_stride: step between windows (``None``: two thirds of the window).
        precision: ``"fp32"`` (default), ``"bf16"`` (CPU or CUDA) or ``"fp16"`` (CUDA): the dtype the model runs in
            (docs/benchmarks.md has its speed and its mIoU change on CamVid).
        channels_last: the model's memory layout; ``None``: the fastest for the device and precision, which
            computes the same labels (see :func:`fapn.runtime.prepare_inference`).

    Example:
        >>> seg = Segmenter.from_checkpoint("runs/camvid/best.pt")  # doctest: +SKIP
        >>> label = seg.predict("street.png")  # [H, W] uint8 class indices  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        *,
        class_names: Sequence[str] | None = None,
        palette: Sequence[Sequence[int]] | None = None,
        ignore_index: int = 255,
        device: str | torch.device = "cpu",
        window: tuple[int, int] | None = None,
        window_stride: tuple[int, int] | None = None,
        precision: str = "fp32",
        channels_last: bool | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.model = prepare_inference(model, self.device, precision, channels_last)
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        self.num_classes = num_classes
        scale = 255.0 if max(mean) > 1.0 or max(std) > 1.0 else 1.0
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) / scale
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) / scale
        self.class_names = list(class_names) if class_names is not None else [f"class {i}" for i in range(num_classes)]
        self.palette = as_palette(palette, num_classes)
        self.ignore_index = ignore_index
        self.window = window
        self.window_stride = window_stride

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        *,
        window: tuple[int, int] | None = None,
        window_stride: tuple[int, int] | None = None,
        deform_backend: str | None = None,
        precision: str = "fp32",
        channels_last: bool | None = None,
    ) -> Segmenter:
        """The model, classes, palette and normalisation stored in a ``fapn train`` checkpoint.

        Args:
            path: the checkpoint file.
            device: where to run.
            window: sliding-window size, see the class.
            window_stride: step between windows.
            deform_backend: deformable-conv backend (``None``: the default).
            precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (CUDA), see the class.
            channels_last: the memory layout (``None``: the fastest), see the class.
        """
        checkpoint = load_checkpoint(path)
        if deform_backend is not None:
            checkpoint = {
                **checkpoint,
                "model_config": {**(checkpoint.get("model_config") or {}), "deform_backend": deform_backend},
            }
        model = build_model_from_checkpoint(checkpoint)
        config: dict[str, Any] = checkpoint.get("model_config") or {}
        dataset: dict[str, Any] = checkpoint.get("dataset") or {}
        num_classes = int(config.get("num_classes", getattr(model, "num_classes", 0)) or len(dataset["class_names"]))
        return cls(
            model,
            num_classes,
            dataset.get("mean", IMAGENET_MEAN),
            dataset.get("std", IMAGENET_STD),
            class_names=dataset.get("class_names"),
            palette=dataset.get("palette"),
            ignore_index=int(dataset.get("ignore_index", 255)),
            device=device,
            window=window,
            window_stride=window_stride,
            precision=precision,
            channels_last=channels_last,
        )

    def preprocess(self, images: Sequence[ImageLike]) -> Tensor:
        """Same-size images as one normalised ``[N, 3, H, W]`` batch on the device, in the model's dtype."""
        tensors = [_to_uint8_chw(image) for image in images]
        sizes = {tuple(t.shape[-2:]) for t in tensors}
        if len(sizes) > 1:
            raise ValueError(f"images of one batch must have the same size, got {sorted(sizes)}")
        batch = torch.stack(tensors).to(self.device).float() / 255.0
        return ((batch - self.mean.to(self.device)) / self.std.to(self.device)).to(self.dtype)

    @torch.inference_mode()
    def logits(self, images: Sequence[ImageLike] | ImageLike) -> Tensor:
        """``[N, K, H, W]`` float32 logits (``N = 1`` for a single image)."""
        # a str or Tensor is one image although it is a Sequence; only lists and tuples are batches
        batch = self.preprocess(list(images) if isinstance(images, (list, tuple)) else [cast(ImageLike, images)])
        height, width = batch.shape[-2:]
        if self.window is not None and (height > self.window[0] or width > self.window[1]):
            return sliding_window_logits(self.model, batch, self.num_classes, self.window, self.window_stride)
        return self.model(batch).float()

    def predict_batch(self, images: Sequence[ImageLike]) -> list[np.ndarray]:
        """A label map per image (same-size images, run as one batch)."""
        labels = self.logits(list(images)).argmax(dim=1).cpu()
        dtype = torch.uint8 if self.num_classes <= 256 else torch.int32
        return [label.to(dtype).numpy() for label in labels]

    def predict(self, image: ImageLike) -> np.ndarray:
        """The ``[H, W]`` label map of one image (uint8 class indices when ``K <= 256``).

        Example:
            >>> Segmenter.from_checkpoint("best.pt").predict("street.png").shape  # doctest: +SKIP
            (360, 480)
        """
        return self.predict_batch([image])[0]

    def probabilities(self, image: ImageLike) -> Tensor:
        """``[K, H, W]`` softmax probabilities of one image."""
        return F.softmax(self.logits([image])[0], dim=0).cpu()

    def colorize(self, label: np.ndarray) -> np.ndarray:
        """``[H, W, 3]`` colour mask in this model's palette."""
        return colorize(label, self.palette, None)

    def overlay(self, image: ImageLike, label: np.ndarray, alpha: float = 0.5) -> np.ndarray:
        """The colour mask blended over the image."""
        rgb = _to_uint8_chw(image).permute(1, 2, 0).numpy()
        return overlay(rgb, label, self.palette, alpha, None)

    def __repr__(self) -> str:
        return (
            f"Segmenter({type(self.model).__name__}, num_classes={self.num_classes}, device={self.device}, "
            f"window={self.window}, precision={self.precision})"
        )
