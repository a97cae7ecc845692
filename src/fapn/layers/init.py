"""Weight initialisations used by the authors' code."""

from __future__ import annotations

from torch import nn

__all__ = ["c2_xavier_fill"]


def c2_xavier_fill(module: nn.Conv2d) -> None:
    """detectron2's ``c2_xavier_fill``: ``kaiming_uniform_(a=1)`` on the weight, zero bias.

    Used by the authors for the FSM convs, the offset conv, the lateral and the output convs.

    Args:
        module: the convolution to initialise in place.
    """
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
