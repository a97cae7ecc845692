"""Learning-rate schedules as multipliers of the base rate: poly and multi-step, with optional linear warmup."""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["lr_multiplier"]


def lr_multiplier(
    schedule: str,
    max_iterations: int,
    power: float = 0.9,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    warmup_iters: int = 0,
    warmup_factor: float = 0.1,
) -> Callable[[int], float]:
    """``iteration -> factor`` for ``torch.optim.lr_scheduler.LambdaLR``.

    ``poly``: ``(1 - it / max_it) ** power`` (the paper's ``0.01 * (1 - iter / maxiters) ** 0.9``);
    ``multistep``: ``gamma ** (number of milestones passed)``. A linear warmup from ``warmup_factor`` over the
    first ``warmup_iters`` iterations multiplies either.

    Example:
        >>> f = lr_multiplier("poly", 100)
        >>> round(f(0), 4), round(f(50), 4), f(100)
        (1.0, 0.5359, 0.0)
    """
    if schedule not in ("poly", "multistep"):
        raise ValueError(f"optim.schedule must be 'poly' or 'multistep', got {schedule!r}")
    if max_iterations < 1:
        raise ValueError(f"train.iterations must be positive, got {max_iterations}")
    milestones = sorted(milestones)

    def factor(iteration: int) -> float:
        if schedule == "poly":
            value = max(0.0, 1.0 - iteration / max_iterations) ** power
        else:
            value = gamma ** sum(iteration >= m for m in milestones)
        if iteration < warmup_iters:
            alpha = iteration / warmup_iters
            value *= warmup_factor * (1 - alpha) + alpha
        return value

    return factor
