"""Training and evaluation for detection, instance and panoptic segmentation (``fapn train`` / ``fapn eval``).

``fapn train CONFIG`` and ``fapn eval CONFIG --weights W`` call :func:`run_train` and :func:`run_eval` for
YAML configs whose ``task`` is ``detection``, ``instance`` or ``panoptic`` (:class:`DetectionConfig`).
Metrics: COCO box AP (and mask AP for ``instance``/``panoptic`` with an instances JSON) with pycocotools,
and PQ/SQ/RQ for ``panoptic``.

Example:
    >>> run_train("detection/synthetic_mask_rcnn_R_18_FaPN", ["train.iterations=2"], "/tmp/run", False)  # doctest: +SKIP
    0
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fapn.engine.detection.config import DetectionConfig
from fapn.runtime import resolve_device, set_threads

__all__ = [
    "run_train",
    "run_eval",
    "load_detection_config",
    "build_datasets",
    "build_model",
    "train",
    "evaluate",
    "model_kwargs",
]


def load_detection_config(path_or_name: str, overrides: list[str] | tuple[str, ...] = ()) -> DetectionConfig:
    """A :class:`DetectionConfig` from a YAML path or shipped name (``detection/mask_rcnn_R_50_FaPN_1x``)."""
    from fapn.config import load_config

    return load_config(path_or_name, DetectionConfig, overrides)


def _data_root(cfg: DetectionConfig) -> Path:
    data = cfg.data
    if data.root is not None:
        return Path(os.path.expandvars(os.path.expanduser(data.root)))
    if data.format == "synthetic":
        s = data.synthetic
        tag = "_".join(f"{k}{s[k]}" for k in sorted(s)) or "default"
        return Path(tempfile.gettempdir()) / "fapn-synthetic-coco" / tag
    base = os.environ.get("FAPN_DATA")
    if base is None:
        raise FileNotFoundError(
            "data.root is not set and FAPN_DATA is not defined: set data.root=/path/to/coco "
            "(holding train2017/, val2017/, annotations/) or export FAPN_DATA"
        )
    return Path(base) / "coco"


def _synthetic_paths(cfg: DetectionConfig, split: str) -> dict[str, Path]:
    from fapn.data.synthetic_coco import make_synthetic_coco

    options = dict(cfg.data.synthetic)
    num_train = int(options.pop("num_train", 64))
    num_val = int(options.pop("num_val", 16))
    seed = int(options.pop("seed", 0))
    root = _data_root(cfg) / split
    marker = root / "annotations" / "panoptic.json"
    count = num_train if split == "train" else num_val
    if not marker.is_file():
        return make_synthetic_coco(root, count, seed=seed + (0 if split == "train" else 1000), **options)
    return {"images": root / "images", "instances": root / "annotations" / "instances.json",
            "panoptic_json": marker, "panoptic_root": root / "annotations" / "panoptic"}


def build_datasets(cfg: DetectionConfig, splits: tuple[str, ...] = ("train", "val")) -> dict[str, Dataset[Any]]:
    """The train/val datasets the config names: :class:`~fapn.data.coco_detection.CocoInstances` or
    :class:`~fapn.data.coco_panoptic.CocoPanoptic` (for ``task: panoptic``). Each gets ``instances_json``
    (or ``None``) for AP evaluation."""
    from fapn.data.coco_detection import CocoInstances
    from fapn.data.coco_panoptic import CocoPanoptic

    datasets: dict[str, Dataset[Any]] = {}
    for split in splits:
        train = split == "train"
        if cfg.data.format == "synthetic":
            paths = _synthetic_paths(cfg, split)
            images, instances = paths["images"], paths["instances"]
            panoptic_json, panoptic_root = paths["panoptic_json"], paths["panoptic_root"]
        else:
            root = _data_root(cfg)
            images = root / (cfg.data.train_images if train else cfg.data.val_images)
            annotations = cfg.data.train_annotations if train else cfg.data.val_annotations
            instances = root / annotations if annotations else None
            pj = cfg.data.train_panoptic_json if train else cfg.data.val_panoptic_json
            pr = cfg.data.train_panoptic_root if train else cfg.data.val_panoptic_root
            panoptic_json = root / pj if pj else None
            panoptic_root = root / pr if pr else None
        dataset: Any
        if cfg.task == "panoptic":
            if panoptic_json is None or panoptic_root is None:
                raise ValueError(f"task panoptic needs data.{split}_panoptic_json and data.{split}_panoptic_root")
            dataset = CocoPanoptic(images, panoptic_json, panoptic_root, train=train)
        else:
            if instances is None:
                raise ValueError(f"task {cfg.task} needs data.{split}_annotations (an instances JSON)")
            dataset = CocoInstances(images, instances, train=train, masks=cfg.task == "instance")
        dataset.instances_json = instances
        datasets[split] = dataset
    return datasets


def model_kwargs(cfg: DetectionConfig, num_classes: int, num_stuff_classes: int = 0) -> dict[str, Any]:
    """Keyword arguments of :func:`~fapn.models.detection.build_detection_model` for this config."""
    m = cfg.model
    detector = m.detector
    if cfg.task == "panoptic" and detector != "panoptic_fpn":
        raise ValueError(f"task panoptic needs model.detector=panoptic_fpn, got {detector!r}")
    if cfg.task == "instance" and detector not in ("maskrcnn",):
        raise ValueError(f"task instance needs model.detector=maskrcnn, got {detector!r}")
    kwargs: dict[str, Any] = {
        "detector": detector,
        "backbone": m.backbone,
        "neck": m.neck,
        "num_classes": num_classes,
        "weights_backbone": m.weights_backbone,
        "trainable_backbone_layers": m.trainable_backbone_layers,
        # recorded so a checkpoint rebuilds with the same norm layers without loading ImageNet weights again
        "frozen_batch_norm": m.weights_backbone is not None,
        "min_size": tuple(m.min_size),
        "max_size": m.max_size,
        **m.options,
    }
    if m.fapn:
        kwargs["fapn_kwargs"] = dict(m.fapn)
    if detector == "panoptic_fpn":
        kwargs["num_stuff_classes"] = num_stuff_classes
        kwargs["panoptic_kwargs"] = dict(m.panoptic)
    return kwargs


def build_model(cfg: DetectionConfig, dataset: Any, with_weights: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The model for ``cfg`` sized for ``dataset``; returns ``(model, builder kwargs)``."""
    from fapn.models.detection import build_detection_model

    kwargs = model_kwargs(cfg, dataset.num_classes, getattr(dataset, "num_stuff_classes", 0))
    if not with_weights:
        kwargs["weights_backbone"] = None
    return build_detection_model(**kwargs), kwargs


def _param_groups(model: nn.Module, weight_decay: float, weight_decay_norm: float) -> list[dict[str, Any]]:
    norm_types = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.SyncBatchNorm)
    decay, no_decay = [], []
    for module in model.modules():
        for param in module.parameters(recurse=False):
            if param.requires_grad:
                (no_decay if isinstance(module, norm_types) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": weight_decay_norm}]


def _batches(dataset: Dataset[Any], batch_size: int, num_workers: int, seed: int) -> Iterator[Any]:
    from fapn.data.coco_detection import collate_detection

    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, collate_fn=collate_detection,
                        num_workers=num_workers, drop_last=len(dataset) >= batch_size,  # type: ignore[arg-type]
                        generator=generator, persistent_workers=num_workers > 0)
    while True:
        yield from loader


def _to_device(images: list[torch.Tensor], targets: list[dict[str, Any]], device: torch.device) -> tuple[Any, Any]:
    images = [img.to(device) for img in images]
    targets = [{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in t.items()} for t in targets]
    return images, targets


def _dataset_meta(dataset: Any, cfg: DetectionConfig, model: nn.Module) -> dict[str, Any]:
    transform = getattr(model, "transform", None) or getattr(getattr(model, "detector", None), "transform", None)
    names = list(getattr(dataset, "class_names", []))
    if not names and hasattr(dataset, "label_to_thing"):
        names = [dataset.categories[c]["name"] for c in dataset.label_to_thing.values()]
    gen = torch.Generator().manual_seed(1)
    palette = torch.randint(0, 256, (len(names) + 1, 3), generator=gen).tolist()
    return {
        "name": cfg.name,
        "class_names": ["__background__", *names],
        "palette": palette,
        "ignore_index": 255,
        "mean": list(transform.image_mean) if transform is not None else [],
        "std": list(transform.image_std) if transform is not None else [],
    }


def train(
    cfg: DetectionConfig, output_dir: str | os.PathLike[str], resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train ``cfg`` and evaluate at the end; write ``last.pt``, ``model_final.pt`` and ``metrics.json``.

    Returns:
        the final metrics, plus ``iterations`` done and ``train_seconds``.
    """
    from tqdm import tqdm

    from fapn.config import config_to_dict
    from fapn.checkpoint import load_checkpoint, save_checkpoint
    from fapn.engine.lr_schedule import lr_multiplier

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    random.seed(cfg.train.seed)
    device = resolve_device(cfg.train.device, "train.device")
    datasets = build_datasets(cfg)
    model, kwargs = build_model(cfg, datasets["train"])
    model.to(device)
    o = cfg.optim
    optimizer = torch.optim.SGD(_param_groups(model, o.weight_decay, o.weight_decay_norm), lr=o.lr,
                                momentum=o.momentum)
    factor = lr_multiplier("multistep", cfg.train.iterations, milestones=o.milestones, gamma=o.gamma,
                           warmup_iters=o.warmup_iters, warmup_factor=o.warmup_factor)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    start = 0
    last = output / "last.pt"
    if resume and last.is_file():
        state = load_checkpoint(last)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start = int(state["iteration"])
    meta = _dataset_meta(datasets["train"], cfg, model)
    model_config = {"name": "build_detection_model", **{k: (list(v) if isinstance(v, tuple) else v)
                                                        for k, v in kwargs.items()}}

    def checkpoint(iteration: int, metrics: dict[str, Any] | None = None) -> dict[str, Any]:
        return {"model": model.state_dict(), "model_config": model_config, "dataset": meta,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "iteration": iteration, "rng": torch.get_rng_state(), "config": config_to_dict(cfg),
                "metrics": metrics or {}}

    batches = _batches(datasets["train"], cfg.train.batch_size, cfg.data.num_workers, cfg.train.seed + start)
    model.train()
    began = time.perf_counter()
    iteration = start
    bar = tqdm(range(start, cfg.train.iterations), desc=f"train {cfg.name}", disable=not progress,
               initial=start, total=cfg.train.iterations)
    history: list[dict[str, float]] = []
    for iteration in bar:
        images, targets = _to_device(*next(batches), device)
        losses = model(images, targets)
        loss = sum(losses.values())
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {float(loss)} at iteration {iteration}: {losses}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if o.clip_grad_norm:
            nn.utils.clip_grad_norm_(model.parameters(), o.clip_grad_norm)
        optimizer.step()
        scheduler.step()
        if (iteration + 1) % cfg.train.log_period == 0 or iteration == start:
            record = {"iteration": iteration + 1, "loss": loss.item(), "lr": optimizer.param_groups[0]["lr"],
                      **{k: v.item() for k, v in losses.items()}}
            history.append(record)
            bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}")
        if cfg.train.checkpoint_period and (iteration + 1) % cfg.train.checkpoint_period == 0:
            save_checkpoint(checkpoint(iteration + 1), last)
        periodic_eval = cfg.train.eval_period and (iteration + 1) % cfg.train.eval_period == 0
        if periodic_eval and iteration + 1 < cfg.train.iterations:  # the final evaluation follows anyway
            evaluate(model, datasets["val"], cfg, progress=progress)
            model.train()
        if cfg.train.time_budget_s is not None and time.perf_counter() - began > cfg.train.time_budget_s:
            iteration += 1
            break
    else:
        iteration = cfg.train.iterations
    bar.close()
    train_seconds = time.perf_counter() - began
    metrics = evaluate(model, datasets["val"], cfg, progress=progress)
    metrics["iterations"] = iteration
    metrics["train_seconds"] = train_seconds
    save_checkpoint(checkpoint(iteration, metrics), last)
    final = checkpoint(iteration, metrics)
    for key in ("optimizer", "scheduler", "rng"):
        final.pop(key)
    save_checkpoint(final, output / "model_final.pt")
    (output / "metrics.json").write_text(json.dumps({"metrics": metrics, "history": history}, indent=2))
    return metrics


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Any, cfg: DetectionConfig, progress: bool = True) -> dict[str, Any]:
    """COCO AP (``bbox``; ``segm`` too for instance and panoptic) and, for panoptic, PQ/SQ/RQ.

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
    for index in tqdm(range(count), desc="eval", disable=not progress):
        image, target = dataset[index]
        output = model([image.to(device)])[0]
        image_id = int(target["image_id"])
        image_ids.append(image_id)
        detection = {k: output[k] for k in ("boxes", "labels", "scores", "masks") if k in output}
        if not with_masks:
            detection.pop("masks", None)
        results += detections_to_coco_results(image_id, detection, label_to_category,
                                              mask_threshold=cfg.eval.mask_threshold)
        if pq is not None:
            annotation = dataset.annotations[index]
            gt_ids = read_panoptic_png(dataset.panoptic_root / annotation["file_name"])
            segments = []
            for s in output["segments_info"]:
                category = (dataset.label_to_thing[s["category_id"]] if s["isthing"]
                            else dataset.label_to_stuff[s["category_id"]])
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
    if pq is not None:
        pq_metrics = pq.compute()
        per_class = pq_metrics.pop("per_class")
        metrics["panoptic"] = {**{f"{g}_{k}": v for g, d in pq_metrics.items() for k, v in d.items()},
                               "per_class": {str(k): v for k, v in per_class.items()}}
    metrics["images"] = count
    return metrics


def _print_metrics(metrics: dict[str, Any]) -> None:
    for key in ("bbox", "segm"):
        if key in metrics:
            print(f"{key}: " + ", ".join(f"{k} {v:.2f}" for k, v in metrics[key].items()))
    if "panoptic" in metrics:
        p = metrics["panoptic"]
        for group in ("All", "Things", "Stuff"):
            print(f"{group:6s} PQ {p[f'{group}_pq']:.2f}  SQ {p[f'{group}_sq']:.2f}  RQ {p[f'{group}_rq']:.2f}  "
                  f"(n={p[f'{group}_n']})")


def run_train(config_path: str, overrides: list[str], output_dir: str | None, resume: bool) -> int:
    """``fapn train`` for detection tasks: train, evaluate, print the metrics. Returns the exit code."""
    cfg = load_detection_config(config_path, overrides)
    metrics = train(cfg, output_dir or cfg.train.output_dir, resume=resume)
    _print_metrics(metrics)
    print(f"trained {metrics['iterations']} iterations in {metrics['train_seconds']:.0f} s; "
          f"checkpoint: {Path(output_dir or cfg.train.output_dir) / 'model_final.pt'}")
    return 0


def run_eval(config_path: str, overrides: list[str], weights: str, output: str | None) -> int:
    """``fapn eval`` for detection tasks: load ``weights`` (a fapn checkpoint or a state dict), evaluate on the
    config's val split, print the metrics and write them as JSON to ``output`` if given."""
    cfg = load_detection_config(config_path, overrides)
    set_threads(cfg.train.threads)
    dataset = build_datasets(cfg, ("val",))["val"]
    model, _ = build_model(cfg, dataset, with_weights=False)
    if not Path(weights).is_file():
        raise FileNotFoundError(f"weights not found: {weights}")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    model.load_state_dict(state)
    model.to(resolve_device(cfg.train.device, "train.device"))
    metrics = evaluate(model, dataset, cfg)
    _print_metrics(metrics)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(metrics, indent=2))
    return 0
