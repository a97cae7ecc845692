"""Detection, instance and panoptic evaluation: COCO box (and mask) AP with pycocotools, PQ/SQ/RQ for panoptic
(``fapn eval`` on a detection recipe)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fapn.engine.detection.config import DetectionConfig

__all__ = ["evaluate", "run_eval"]


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Any, cfg: DetectionConfig, progress: bool = True) -> dict[str, Any]:
    """COCO AP (``bbox``; ``segm`` and Boundary AP (``boundary``, :mod:`fapn.metrics.boundary_iou`) too for
    instance and panoptic), each with AP by object size (``APs``, ``APm``, ``APl``: pycocotools' own summary) and,
    for panoptic, PQ/SQ/RQ for all, things and stuff, and for things by size (``Things_small_pq``, ...;
    :class:`~fapn.metrics.panoptic.PanopticQuality` says how segments are bucketed).

    Args:
        model: a torchvision detector or :class:`~fapn.models.detection.PanopticFPN`.
        dataset: :class:`~fapn.data.coco_detection.CocoInstances` or
            :class:`~fapn.data.coco_panoptic.CocoPanoptic` (with ``instances_json`` for AP, or ``None``).
        cfg: the config (task, ``eval.max_images``, ``eval.mask_threshold``).
    """
    from pycocotools.coco import COCO
    from tqdm import tqdm

    from fapn.data.coco_panoptic import read_panoptic_png
    from fapn.metrics.coco import detections_to_coco_results, evaluate_coco
    from fapn.metrics.panoptic import PanopticQuality

    model.eval()
    device = next(model.parameters()).device
    count = len(dataset) if cfg.eval.max_images is None else min(cfg.eval.max_images, len(dataset))
    panoptic = cfg.task == "panoptic"
    label_to_category = dataset.label_to_thing if panoptic else dataset.label_to_category
    pq = PanopticQuality(dataset.categories) if panoptic else None
    results: list[dict[str, Any]] = []
    image_ids: list[int] = []
    with_masks = cfg.task in ("instance", "panoptic")
    for index in tqdm(range(count), desc="eval", disable=not progress, leave=False):
        image, target = dataset[index]
        output = model([image.to(device)])[0]
        image_id = int(target["image_id"])
        image_ids.append(image_id)
        detection = {k: output[k] for k in ("boxes", "labels", "scores", "masks") if k in output}
        if not with_masks:
            detection.pop("masks", None)
        results += detections_to_coco_results(
            image_id, detection, label_to_category, mask_threshold=cfg.eval.mask_threshold
        )
        if pq is not None:
            annotation = dataset.annotations[index]
            gt_ids = read_panoptic_png(dataset.panoptic_root / annotation["file_name"])
            segments = []
            for s in output["segments_info"]:
                category = (
                    dataset.label_to_thing[s["category_id"]]
                    if s["isthing"]
                    else dataset.label_to_stuff[s["category_id"]]
                )
                segments.append({"id": s["id"], "category_id": category})
            pq.update(gt_ids, annotation["segments_info"], output["panoptic_seg"].cpu().numpy(), segments)
    metrics: dict[str, Any] = {}
    instances_json = getattr(dataset, "instances_json", None)
    coco_gt = getattr(dataset, "coco", None)
    if coco_gt is None and instances_json is not None and Path(instances_json).is_file():
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = COCO(str(instances_json))
    if coco_gt is not None:
        iou_types = ("bbox", "segm") if with_masks else ("bbox",)
        metrics.update(evaluate_coco(coco_gt, results, iou_types, image_ids=image_ids))
        if with_masks:
            from fapn.metrics.boundary_iou import evaluate_boundary_ap

            metrics["boundary"] = evaluate_boundary_ap(coco_gt, results, image_ids=image_ids)
    if pq is not None:
        pq_metrics = pq.compute()
        per_class = pq_metrics.pop("per_class")
        metrics["panoptic"] = {
            **{f"{g}_{k}": v for g, d in pq_metrics.items() for k, v in d.items()},
            "per_class": {str(k): v for k, v in per_class.items()},
        }
    metrics["images"] = count
    return metrics


def run_eval(
    config_path: str | Mapping[str, Any],
    overrides: list[str],
    weights: str,
    *,
    device: str | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """``fapn eval`` for detection tasks: load ``weights`` (a fapn checkpoint or a state dict) and evaluate on the
    config's val split; returns the metrics of :func:`evaluate` (the command prints and writes them).

    Args:
        config_path: a recipe (shipped name or YAML file), or a recipe as a dict (the one a checkpoint stores,
            see :func:`fapn.engine.run_dir.saved_recipe`); ``overrides`` apply to either.
        device: ``auto``, ``cpu``, ``cuda``... (``None``: the recipe's ``train.device``).
        threads: torch CPU threads (``None``: the recipe's ``train.threads``, else torch's default, one per core).
        progress: a tqdm bar.

    Raises:
        FileNotFoundError: no ``weights`` file.
        ValueError: an unreadable file, or weights of another model.
    """
    from fapn.config import config_from_dict
    from fapn.engine.detection.config import load_detection_config
    from fapn.engine.detection.data import build_datasets
    from fapn.engine.detection.model import build_model
    from fapn.runtime import resolve_device, set_threads
    from fapn.state_dict import load_state_dict_file

    if isinstance(config_path, Mapping):
        cfg = config_from_dict(config_path, DetectionConfig, overrides)
    else:
        cfg = load_detection_config(config_path, overrides)
    set_threads(threads if threads is not None else cfg.train.threads)
    torch_device = resolve_device(device or cfg.train.device, "--device" if device else "train.device")
    state = load_state_dict_file(weights)
    dataset = build_datasets(cfg, ("val",))["val"]
    model, _ = build_model(cfg, dataset, with_weights=False)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{weights}: its weights do not fit the recipe's model ({first})") from None
    model.to(torch_device)
    return evaluate(model, dataset, cfg, progress=progress)
