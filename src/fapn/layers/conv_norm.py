"""A convolution followed by an optional normalisation, laid out as detectron2's ``Conv2d`` (the authors' code)."""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

__all__ = ["Norm", "NORMS", "make_norm", "Conv2dNorm", "GN_GROUPS"]

Norm = Literal["GN", "BN"]
"""The normalisations the authors' neck can take (``cfg.MODEL.FPN.NORM``); ``None`` is none."""

NORMS: tuple[str, ...] = ("GN", "BN")
GN_GROUPS = 32
"""detectron2's ``get_norm("GN", C)`` is ``GroupNorm(32, C)``."""


def make_norm(norm: str | None, channels: int) -> nn.Module | None:
    """detectron2's ``get_norm`` for the names used here: ``"GN"`` is ``GroupNorm(32, C)``, ``"BN"``
    ``BatchNorm2d(C)``, ``None`` nothing.

    Raises:
        ValueError: an unknown name, or ``"GN"`` on a channel count that is not a multiple of 32.

    Example:
        >>> norm = make_norm("GN", 64)
        >>> type(norm).__name__, norm.num_groups, norm.num_channels
        ('GroupNorm', 32, 64)
    """
    if norm is None:
        return None
    if norm == "GN":
        if channels % GN_GROUPS != 0:
            raise ValueError(
                f"norm='GN' uses {GN_GROUPS} groups (detectron2's GroupNorm), so the channels must be a multiple of "
                f"{GN_GROUPS}; got {channels}"
            )
        return nn.GroupNorm(GN_GROUPS, channels)
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    raise ValueError(f"unknown norm {norm!r}; valid: None, {', '.join(repr(n) for n in NORMS)}")


class Conv2dNorm(nn.Conv2d):
    """``nn.Conv2d``, then the normalisation ``norm`` (a submodule named ``norm``) when one is given.

    The state dict is a plain ``Conv2d``'s without a norm and adds ``norm.*`` with one: detectron2's ``Conv2d``
    layout, so the authors' ``<conv>.norm.weight`` keys map one to one.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, bias: as ``nn.Conv2d``.
        norm: ``None``, ``"GN"`` or ``"BN"`` (see :func:`make_norm`).

    Example:
        >>> conv = Conv2dNorm(16, 32, 3, padding=1, bias=False, norm="GN")
        >>> sorted(conv.state_dict())
        ['norm.bias', 'norm.weight', 'weight']
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        bias: bool = True,
        norm: Norm | None = None,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self.norm = make_norm(norm, out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self._conv_forward(x, self.weight, self.bias)
        return x if self.norm is None else self.norm(x)
