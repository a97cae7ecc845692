"""What each Feature Alignment Module of a model does on an image: its offsets, mask and features."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fapn.layers.fam import FeatureAlignModule
from fapn.visualize.flow import mean_displacement

__all__ = ["AlignmentRecord", "record_alignment"]


@dataclass
class AlignmentRecord:
    """One FAM's intermediates for one image (batch dimension removed).

    Attributes:
        index: position in ``model.neck.merges``.
        stride: input pixels per feature pixel at this level.
        selected: ``s``, the lateral (FSM) feature, ``[C, H, W]``.
        upsampled: ``up``, the coarse feature before alignment.
        aligned: ``a``, after the deformable conv.
        offset: ``[2*G*9, H, W]`` in torchvision's layout, feature pixels.
        mask: ``[G*9, H, W]``.
        displacement: ``[2, H, W]`` mask-weighted mean ``(dx, dy)`` per pixel, feature pixels.
    """

    index: int
    stride: float
    selected: Tensor
    upsampled: Tensor
    aligned: Tensor
    offset: Tensor
    mask: Tensor
    displacement: Tensor

    def summary(self) -> str:
        length = torch.linalg.vector_norm(self.displacement, dim=0)
        return (
            f"FAM {self.index} (stride {self.stride:g}): mean |displacement| {float(length.mean()):.3f} px "
            f"(max {float(length.max()):.3f}) of the feature map = {float(length.mean()) * self.stride:.2f} "
            f"input px; mean mask {float(self.mask.mean()):.3f}; |offset| per tap up to "
            f"{float(self.offset.abs().max()):.2f} px"
        )


@torch.no_grad()
def record_alignment(model: nn.Module, images: Tensor) -> tuple[Tensor, list[AlignmentRecord]]:
    """Run ``model`` on a normalised ``[1, 3, H, W]`` batch and record every FAM of ``model.neck.merges``.

    The FAMs' inputs are caught by forward hooks and replayed through
    :meth:`~fapn.layers.FeatureAlignModule.align`, which returns each intermediate.

    Returns:
        ``(logits, records)``, the records finest level first.

    Raises:
        ValueError: the model has no FAM (e.g. the ``fpn`` neck).
    """
    merges = getattr(getattr(model, "neck", None), "merges", None)
    fams = [(i, m) for i, m in enumerate(merges or []) if isinstance(m, FeatureAlignModule)]
    if not fams:
        raise ValueError(
            f"{type(model).__name__} has no Feature Alignment Module (model.neck.merges): nothing to explain; "
            "use a neck with FAM (fpn+fam, fpn+fam+fsm, fapn), not the FPN baseline"
        )
    inputs: dict[int, tuple[Tensor, Tensor]] = {}
    handles = [
        module.register_forward_pre_hook(lambda _m, args, i=i: inputs.__setitem__(i, (args[0], args[1])))
        for i, module in fams
    ]
    try:
        logits = model(images)
    finally:
        for handle in handles:
            handle.remove()
    records = []
    for i, module in fams:
        parts = {name: t.float() for name, t in module.align(*inputs[i]).items()}  # float32 pictures, any dtype
        records.append(
            AlignmentRecord(
                index=i,
                stride=images.shape[-1] / parts["out"].shape[-1],
                selected=parts["selected"][0],
                upsampled=parts["upsampled"][0],
                aligned=parts["aligned"][0],
                offset=parts["offset"][0],
                mask=parts["mask"][0],
                displacement=mean_displacement(
                    parts["offset"], parts["mask"], module.offset_groups, module.deform.taps
                )[0],
            )
        )
    return logits, records
