"""PointRend's point operations: bilinear sampling at normalised coordinates, uncertainty, point selection.

Coordinates are ``(x, y)`` in ``[0, 1] x [0, 1]`` over a map (or a box): ``(0, 0)`` is the top-left corner of
the top-left pixel, ``(1, 1)`` the bottom-right corner of the bottom-right pixel, so pixel ``i`` has its centre
at ``(i + 0.5) / W``. This is ``grid_sample`` with ``align_corners=False`` and the same convention as
detectron2's PointRend project [pointrend], whose selection rules are reproduced here:

* training (:func:`uncertain_points_with_randomness`): draw ``k * N`` uniform points (``k`` = oversample ratio,
  3), keep the ``beta * N`` most uncertain of them (``beta`` = importance ratio, 0.75), add ``(1 - beta) * N``
  fresh uniform points. The uncertainty is computed on the *sampled* logits (interpolating uncertainties
  instead would rank a point between logits -1 and 1 as certain);
* inference (:func:`uncertain_points_on_grid`): the ``N`` most uncertain cells of a regular grid.

Shapes: ``R`` maps (images or RoIs), ``C`` channels, ``P`` points.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "point_sample",
    "regular_grid_points",
    "uncertain_points_with_randomness",
    "uncertain_points_on_grid",
    "semantic_uncertainty",
    "mask_uncertainty",
    "boxes_points_to_image",
    "roi_point_features",
]


def point_sample(input: Tensor, coords: Tensor, mode: str = "bilinear") -> Tensor:
    """Sample ``input`` at normalised points (``grid_sample`` with ``align_corners=False``, zeros outside).

    Args:
        input: ``[R, C, H, W]``.
        coords: ``[R, P, 2]`` points ``(x, y)`` in ``[0, 1]`` (or ``[R, Hg, Wg, 2]``).
        mode: ``bilinear`` (features, logits) or ``nearest`` (labels).

    Returns:
        ``[R, C, P]`` (or ``[R, C, Hg, Wg]``).

    Example:
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> point_sample(x, torch.tensor([[[0.25, 0.25], [0.5, 0.5]]])).tolist()
        [[[0.0, 1.5]]]
    """
    if coords.dim() not in (3, 4) or coords.shape[-1] != 2:
        raise ValueError(f"coords must be [R, P, 2] or [R, H, W, 2], got {tuple(coords.shape)}")
    if input.shape[0] != coords.shape[0]:
        raise ValueError(f"input has {input.shape[0]} maps but coords {coords.shape[0]}")
    grid = 2.0 * coords.to(input.dtype) - 1.0
    if coords.dim() == 3:
        return F.grid_sample(input, grid.unsqueeze(2), mode=mode, align_corners=False).squeeze(3)
    return F.grid_sample(input, grid, mode=mode, align_corners=False)


def regular_grid_points(
    num_maps: int, side: int, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The centres of a ``side x side`` grid, row-major, ``[num_maps, side * side, 2]``.

    Example:
        >>> regular_grid_points(1, 2)[0].tolist()
        [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]
    """
    centres = (torch.arange(side, dtype=dtype, device=device) + 0.5) / side
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1).expand(num_maps, -1, -1)


def semantic_uncertainty(logits: Tensor) -> Tensor:
    """``second-best logit - best logit`` per location, ``[R, 1, ...]``; highest = most uncertain [pointrend].

    Example:
        >>> semantic_uncertainty(torch.tensor([[[3.0], [1.0], [2.5]]])).tolist()
        [[[-0.5]]]
    """
    top2 = torch.topk(logits, k=2, dim=1).values
    return (top2[:, 1] - top2[:, 0]).unsqueeze(1)


def mask_uncertainty(logits: Tensor, classes: Tensor) -> Tensor:
    """``-|logit|`` of each RoI's class (the given channel of ``[R, C, ...]``), ``[R, 1, ...]`` [pointrend].

    Args:
        logits: class-specific ``[R, C, ...]`` or class-agnostic ``[R, 1, ...]`` mask logits.
        classes: ``[R]`` channel index per RoI (ignored when there is one channel).
    """
    if logits.shape[1] == 1:
        chosen = logits
    else:
        chosen = logits[torch.arange(logits.shape[0], device=logits.device), classes].unsqueeze(1)
    return -chosen.abs()


def uncertain_points_with_randomness(
    coarse_logits: Tensor,
    uncertainty: Callable[[Tensor], Tensor],
    num_points: int,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Training points: the most uncertain of ``oversample_ratio * num_points`` random points, plus random ones.

    Args:
        coarse_logits: ``[R, C, H, W]``.
        uncertainty: logits at points ``[R, C, P]`` -> ``[R, 1, P]``, higher = more uncertain.
        num_points: points per map.
        oversample_ratio: ``k`` in the paper (>= 1).
        importance_sample_ratio: ``beta`` in the paper, in ``[0, 1]``.
        generator: random generator (``None``: torch's global one).

    Returns:
        ``[R, num_points, 2]``: ``int(beta * num_points)`` selected points first, then the random ones.
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0.0 <= importance_sample_ratio <= 1.0:
        raise ValueError(f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}")
    num_maps, device = coarse_logits.shape[0], coarse_logits.device
    num_sampled = int(num_points * oversample_ratio)
    candidates = torch.rand(num_maps, num_sampled, 2, device=device, generator=generator)
    scores = uncertainty(point_sample(coarse_logits, candidates))[:, 0]
    num_uncertain = int(importance_sample_ratio * num_points)
    index = torch.topk(scores, k=num_uncertain, dim=1).indices
    chosen = torch.gather(candidates, 1, index.unsqueeze(2).expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        extra = torch.rand(num_maps, num_random, 2, device=device, generator=generator)
        chosen = torch.cat([chosen, extra], dim=1)
    return chosen


def uncertain_points_on_grid(uncertainty_map: Tensor, num_points: int) -> tuple[Tensor, Tensor]:
    """The ``min(num_points, H * W)`` most uncertain cells of a grid.

    Args:
        uncertainty_map: ``[R, 1, H, W]``, higher = more uncertain.
        num_points: cells to select per map.

    Returns:
        ``(indices [R, P]`` into the flattened ``H * W`` grid, ``coords [R, P, 2]`` of the cell centres).
    """
    num_maps, _, height, width = uncertainty_map.shape
    num_points = min(height * width, num_points)
    indices = torch.topk(uncertainty_map.reshape(num_maps, height * width), k=num_points, dim=1).indices
    dtype = uncertainty_map.dtype if uncertainty_map.is_floating_point() else torch.float32
    columns = (indices % width).to(dtype)
    rows = torch.div(indices, width, rounding_mode="floor").to(dtype)
    coords = torch.stack([(columns + 0.5) / width, (rows + 0.5) / height], dim=2)
    return indices, coords


def boxes_points_to_image(boxes: Tensor, coords: Tensor) -> Tensor:
    """Box-normalised points ``[R, P, 2]`` of boxes ``[R, 4]`` (``x1, y1, x2, y2``) -> image pixel coordinates."""
    origin = boxes[:, None, :2]
    size = boxes[:, None, 2:] - boxes[:, None, :2]
    return origin + coords * size


def roi_point_features(feature: Tensor, boxes: Sequence[Tensor], coords: Tensor, stride: float) -> Tensor:
    """Features of an image-level map at box-normalised points, for the boxes of every image of the batch.

    For a regular grid of points this is RoIAlign with one sample per bin and ``aligned=True`` (detectron2's
    PointRend pools its coarse-head features this way [pointrend]).

    Args:
        feature: ``[N, C, Hf, Wf]`` map of stride ``stride`` over the (padded) batch.
        boxes: ``N`` tensors ``[R_i, 4]`` in image pixels.
        coords: ``[sum R_i, P, 2]`` box-normalised points.
        stride: the map's stride (4 for P2).

    Returns:
        ``[sum R_i, C, P]``.
    """
    if len(boxes) != feature.shape[0]:
        raise ValueError(f"got boxes for {len(boxes)} images but features for {feature.shape[0]}")
    counts = [len(b) for b in boxes]
    if sum(counts) != coords.shape[0]:
        raise ValueError(f"got {sum(counts)} boxes but points for {coords.shape[0]}")
    num_points = coords.shape[1]
    if sum(counts) == 0:
        return feature.new_zeros((0, feature.shape[1], num_points))
    height, width = feature.shape[-2:]
    scale = torch.tensor([width * stride, height * stride], dtype=coords.dtype, device=coords.device)
    image_points = boxes_points_to_image(torch.cat(list(boxes)).to(coords.dtype), coords) / scale
    outputs = []
    for index, points in enumerate(torch.split(image_points, counts)):
        if len(points) == 0:
            continue
        sampled = point_sample(feature[index : index + 1], points.reshape(1, -1, 2))  # [1, C, R_i * P]
        outputs.append(sampled.reshape(feature.shape[1], len(points), num_points).transpose(0, 1))
    return torch.cat(outputs)
