"""The optimiser of a recipe: SGD (the FaPN recipes) or AdamW with a backbone learning-rate factor, no weight
decay on normalisation layers and embeddings, and full-model gradient clipping (MaskFormer's recipes)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["build_optimizer", "parameter_groups", "OPTIMIZERS"]

OPTIMIZERS = ("sgd", "adamw")

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
# Position tables of transformer encoders, without weight decay in MaskFormer's build_optimizer (Swin's names).
_NO_DECAY_NAMES = ("relative_position_bias_table", "absolute_pos_embed")


def parameter_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    backbone_lr_factor: float = 1.0,
    weight_decay_norm: float | None = None,
) -> list[dict[str, Any]]:
    """Trainable parameters in groups of equal learning rate and weight decay.

    The rules of MaskFormer's ``build_optimizer``: a parameter of a module whose name contains ``backbone``
    gets ``lr * backbone_lr_factor``; those of normalisation layers and embeddings (and Swin's position tables)
    get ``weight_decay_norm`` when it is not ``None``. With the defaults this is one group of every trainable
    parameter, so SGD recipes and their checkpoints are unchanged.

    Example:
        >>> model = nn.ModuleDict(
        ...     {"backbone": nn.Linear(2, 2), "head": nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))}
        ... )
        >>> [(len(g["params"]), g["lr"], g["weight_decay"]) for g in parameter_groups(model, 1.0, 0.1, 0.1, 0.0)]
        [(2, 0.1, 0.1), (2, 1.0, 0.1), (2, 1.0, 0.0)]
    """
    if backbone_lr_factor == 1.0 and weight_decay_norm is None:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr, "weight_decay": weight_decay}]
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    seen: set[int] = set()
    for module_name, module in model.named_modules():
        for name, parameter in module.named_parameters(recurse=False):
            if not parameter.requires_grad or id(parameter) in seen:
                continue
            seen.add(id(parameter))
            group_lr = lr * backbone_lr_factor if "backbone" in module_name else lr
            decay = weight_decay
            if weight_decay_norm is not None and (
                isinstance(module, (*_NORMS, nn.Embedding)) or any(n in name for n in _NO_DECAY_NAMES)
            ):
                decay = weight_decay_norm
            groups.setdefault((group_lr, decay), []).append(parameter)
    return [{"params": params, "lr": group_lr, "weight_decay": decay} for (group_lr, decay), params in groups.items()]


def _clipping(optimizer_class: type[torch.optim.Optimizer], max_norm: float) -> Callable[..., Any]:
    class FullModelClipping(optimizer_class):  # type: ignore[misc, valid-type]
        """Clips the gradient norm of all parameters together before each step (MaskFormer's recipes)."""

        def step(self, closure: Callable[[], float] | None = None) -> Any:
            params: Iterable[torch.Tensor] = [p for group in self.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_norm)
            return super().step(closure)

    FullModelClipping.__name__ = f"{optimizer_class.__name__}WithClipping"
    return FullModelClipping


def build_optimizer(
    model: nn.Module,
    name: str = "sgd",
    lr: float = 0.01,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    backbone_lr_factor: float = 1.0,
    weight_decay_norm: float | None = None,
    clip_grad_norm: float = 0.0,
) -> torch.optim.Optimizer:
    """SGD or AdamW over :func:`parameter_groups`, optionally clipping the whole model's gradient norm.

    Args:
        model: the model (parameters without ``requires_grad`` are left out).
        name: ``"sgd"`` (with ``momentum``) or ``"adamw"`` (torch's defaults for betas and eps, as MaskFormer).
        lr, weight_decay: base values.
        momentum: SGD's.
        backbone_lr_factor: learning-rate multiplier of the backbone (MaskFormer's ``BACKBONE_MULTIPLIER``).
        weight_decay_norm: weight decay of norm layers and embeddings (``None``: ``weight_decay``).
        clip_grad_norm: clip the L2 norm of all gradients together to this before each step (0: off;
            MaskFormer's ``CLIP_GRADIENTS`` ``full_model`` 0.01).

    Raises:
        ValueError: an unknown optimiser name.

    Example:
        >>> optimizer = build_optimizer(nn.Linear(2, 2), "adamw", lr=1e-4, weight_decay=1e-4, clip_grad_norm=0.01)
        >>> type(optimizer).__name__
        'AdamWWithClipping'
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid: {list(OPTIMIZERS)}")
    groups = parameter_groups(model, lr, weight_decay, backbone_lr_factor, weight_decay_norm)
    optimizer_class: Any = torch.optim.SGD if name == "sgd" else torch.optim.AdamW
    if clip_grad_norm > 0:
        optimizer_class = _clipping(optimizer_class, clip_grad_norm)
    if name == "sgd":
        return optimizer_class(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return optimizer_class(groups, lr=lr, weight_decay=weight_decay)
