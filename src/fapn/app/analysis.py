"""One image through every model: the labels, each model's latency, the side-by-side figure, the disagreement
map, per-image scores against a ground truth, and each FAM's offsets and mask.

This is everything ``fapn app`` shows, without the web page: it takes arrays and returns arrays and numbers.

Example:
    >>> from fapn.inference import Segmenter
    >>> models = [("FPN", Segmenter.from_checkpoint("fpn.pt")), ("FaPN", Segmenter.from_checkpoint("fapn.pt"))]  # doctest: +SKIP
    >>> result = analyze(models, image, ground_truth)  # doctest: +SKIP
    >>> [(r.name, r.miou, r.boundary_miou) for r in result.results]  # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from fapn.inference import Segmenter
from fapn.inference.alignment import record_alignment
from fapn.metrics import DEFAULT_BOUNDARY_WIDTH, BoundaryConfusionMatrix, confusion_matrix, scores_from_confusion
from fapn.visualize import alignment_pictures, disagreement_map, image_grid, labelled_figure, overlay, resize_rgb

__all__ = ["ModelResult", "Analysis", "analyze", "score_image", "ground_truth_problem", "alignment_figure"]


@dataclass
class ModelResult:
    """One model's answer on one image.

    Attributes:
        name: the model's title.
        label: ``[H, W]`` class indices.
        latency_ms: wall time of :meth:`~fapn.inference.Segmenter.predict` on the image (one call).
        miou: mIoU on this image in percent (``None`` without a usable ground truth).
        boundary_miou: mIoU on the ground truth's boundary band, in percent.
        alignment: each FAM's offsets, arrows and mask in one figure (``None`` for a model without FAM).
        alignment_summary: one line per FAM: mean and largest displacement, mean mask.
    """

    name: str
    label: np.ndarray
    latency_ms: float
    miou: float | None = None
    boundary_miou: float | None = None
    alignment: np.ndarray | None = None
    alignment_summary: list[str] = field(default_factory=list)


@dataclass
class Analysis:
    """Everything shown for one image.

    Attributes:
        comparison: image | ground truth (when given) | each model's labels over the image, titled, with a legend
            of the classes shown.
        disagreement: where the models differ (:func:`~fapn.visualize.disagreement_map`); ``None`` for one model.
        disagreement_fraction: the share of pixels where they differ.
        results: one per model, in order.
        notes: what the page should say (class sets that differ, a ground truth that cannot be scored).
    """

    comparison: np.ndarray
    disagreement: np.ndarray | None
    disagreement_fraction: float | None
    results: list[ModelResult]
    notes: list[str] = field(default_factory=list)

    def table(self) -> str:
        """The results as a Markdown table: latency, and the scores when a ground truth was given."""
        scored = any(r.miou is not None for r in self.results)
        header = "| model | latency | mIoU | boundary mIoU |" if scored else "| model | latency |"
        lines = [header, "|" + "---|" * (header.count("|") - 1)]
        for r in self.results:
            row = f"| {r.name} | {r.latency_ms:.0f} ms |"
            if scored:
                row += f" {_pct(r.miou)} | {_pct(r.boundary_miou)} |"
            lines.append(row)
        return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def ground_truth_problem(ground_truth: np.ndarray, num_classes: int, ignore_index: int, name: str) -> str | None:
    """Why ``ground_truth`` cannot score model ``name`` (values that are neither one of its classes nor its ignore
    label, or no labelled pixel), else ``None``.

    Example:
        >>> ground_truth_problem(np.array([[0, 9], [255, 3]]), 8, 255, "FaPN")
        'the ground truth holds values 9 that are neither one of the 8 classes of FaPN (0..7) nor its ignore label 255: no scores for it'
        >>> ground_truth_problem(np.array([[0, 7]]), 8, 255, "FaPN") is None
        True
    """
    values = np.unique(ground_truth)
    unknown = [int(v) for v in values if (v < 0 or v >= num_classes) and v != ignore_index]
    if unknown:
        shown = ", ".join(map(str, unknown[:8])) + (", ..." if len(unknown) > 8 else "")
        return (
            f"the ground truth holds values {shown} that are neither one of the {num_classes} classes of {name} "
            f"(0..{num_classes - 1}) nor its ignore label {ignore_index}: no scores for it"
        )
    if np.all(values == ignore_index):
        return f"the ground truth labels no pixel (all are {name}'s ignore label {ignore_index}): no scores"
    return None


def score_image(
    label: np.ndarray,
    ground_truth: np.ndarray,
    num_classes: int,
    ignore_index: int = 255,
    boundary_width: int = DEFAULT_BOUNDARY_WIDTH,
) -> tuple[float | None, float | None]:
    """``(mIoU, boundary mIoU)`` of one label map in percent, as ``fapn eval`` / ``fapn score`` compute them over a
    dataset (classes absent from both maps are left out of the mean).

    Example:
        >>> miou, boundary = score_image(np.array([[0, 0, 1, 1]]), np.array([[0, 0, 1, 0]]), 2, boundary_width=1)
        >>> round(miou, 2), round(boundary, 2)  # class 0: 2/3, class 1: 1/2; on the band (the last 3 pixels): 1/2, 1/2
        (58.33, 50.0)
    """
    pred, target = torch.from_numpy(np.asarray(label).astype(np.int64)), torch.from_numpy(ground_truth)
    miou = scores_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))["mIoU"]
    boundary = BoundaryConfusionMatrix(num_classes, boundary_width, ignore_index)
    boundary.update(pred, target)
    return miou, boundary.compute()["mIoU"]


def alignment_figure(
    segmenter: Segmenter, image: np.ndarray, width: int = 480, step: int = 16
) -> tuple[np.ndarray, list[str]] | None:
    """Each FAM's offsets (flow colours with the colour wheel), arrows and mean mask on ``image``, one row per
    FAM, finest first, as ``fapn explain`` draws them; ``None`` for a model without FAM (the FPN baseline).

    Returns:
        ``(figure, one summary line per FAM)``.
    """
    try:
        _, records = record_alignment(segmenter.model, segmenter.preprocess([image]))
    except ValueError:  # no Feature Alignment Module
        return None
    shown = resize_rgb(image, width=min(width, image.shape[1]))
    cells, titles = [], []
    for record in records:
        pictures = alignment_pictures(shown, record.displacement, record.mask, step=step)
        cells += [pictures.offsets, pictures.arrows, pictures.mask]
        titles += list(pictures.titles(record.stride).values())
    return image_grid(cells, titles, columns=3), [record.summary() for record in records]


def analyze(
    models: Sequence[tuple[str, Segmenter]],
    image: np.ndarray,
    ground_truth: np.ndarray | None = None,
    *,
    panel_width: int = 480,
    boundary_width: int = DEFAULT_BOUNDARY_WIDTH,
    alignment: bool = True,
    arrow_step: int = 16,
) -> Analysis:
    """Run every model on ``image`` and draw what the app shows.

    Args:
        models: ``(title, segmenter)`` pairs, in column order; the first one's classes name the legend.
        image: ``[H, W, 3]`` uint8 RGB.
        ground_truth: ``[H, W]`` class indices of ``image`` (its ignore label is each model's), or ``None``.
        panel_width: width of each panel of the side-by-side figure (never above the image's).
        boundary_width: half-width in pixels of the band that boundary mIoU scores.
        alignment: also draw each FAM's offsets and mask (a second forward pass per FaPN model).
        arrow_step: spacing of the offset arrows, in pixels of the drawn picture.

    Returns:
        the :class:`Analysis`.
    """
    if not models:
        raise ValueError("analyze needs at least one model")
    if ground_truth is not None and ground_truth.shape != image.shape[:2]:
        raise ValueError(f"ground truth {ground_truth.shape} and image {image.shape[:2]} sizes differ")
    reference = models[0][1]
    notes: list[str] = []
    counts = [segmenter.num_classes for _, segmenter in models]
    if len(set(counts)) > 1:
        notes.append(
            "the models predict different class sets ("
            + ", ".join(f"{name}: {segmenter.num_classes} classes" for name, segmenter in models)
            + f"); colours and the legend follow {models[0][0]}'s"
        )
    results = []
    for name, segmenter in models:
        start = time.perf_counter()
        label = segmenter.predict(image)
        result = ModelResult(name, label, (time.perf_counter() - start) * 1000.0)
        if ground_truth is not None:
            problem = ground_truth_problem(ground_truth, segmenter.num_classes, segmenter.ignore_index, name)
            if problem is None:
                result.miou, result.boundary_miou = score_image(
                    label, ground_truth, segmenter.num_classes, segmenter.ignore_index, boundary_width
                )
            else:
                notes.append(problem)
        if alignment:
            drawn = alignment_figure(segmenter, image, panel_width, arrow_step)
            if drawn is not None:
                result.alignment, result.alignment_summary = drawn
        results.append(result)

    def shown(label: np.ndarray) -> np.ndarray:
        return overlay(image, label, reference.palette, 0.6, reference.ignore_index)

    panels, titles, labels = [image], ["image"], []
    if ground_truth is not None:
        panels.append(shown(ground_truth))
        titles.append("ground truth")
        labels.append(ground_truth)
    for result in results:
        panels.append(shown(result.label))
        if result.miou is not None:  # short enough for a narrow panel; the table has the latency too
            title = f"{result.name}: mIoU {result.miou:.1f}, boundary {_pct(result.boundary_miou)}"
        else:
            title = f"{result.name} ({result.latency_ms:.0f} ms)"
        titles.append(title)
        labels.append(result.label)
    width = min(panel_width, image.shape[1])
    panels = [resize_rgb(panel, width=width, nearest=i > 0) for i, panel in enumerate(panels)]
    comparison = labelled_figure(
        panels, titles, reference.class_names, reference.palette, labels, reference.ignore_index
    )
    disagreement, fraction = None, None
    if len(results) > 1:
        disagreement, fraction = disagreement_map(
            image, [r.label for r in results], [r.name for r in results], ground_truth, reference.ignore_index
        )
    return Analysis(comparison, disagreement, fraction, results, notes)
