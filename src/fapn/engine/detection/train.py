"""Detection, instance and panoptic training on torchvision's detectors (``fapn train`` for recipes whose
``task`` is ``detection``, ``instance`` or ``panoptic``), on the skeleton of :mod:`fapn.engine.trainer`: the same
run-folder and resume rules, checkpoint contents, RNG state and logs as semantic segmentation; resuming is exact.

Example:
    >>> metrics = run_train(
    ...     "detection/synthetic_mask_rcnn_R_18_FaPN", ["train.iterations=2"], "/tmp/run", False
    ... )  # doctest: +SKIP
    >>> metrics["iterations"]  # doctest: +SKIP
    2
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sized
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from fapn.engine.detection.config import DetectionConfig, load_detection_config
from fapn.engine.detection.data import build_datasets
from fapn.engine.detection.eval import evaluate, run_eval
from fapn.engine.detection.model import build_model, model_kwargs

__all__ = [
    "run_train",
    "run_eval",
    "load_detection_config",
    "build_datasets",
    "build_model",
    "train",
    "evaluate",
    "model_kwargs",
    "resume_config",
]


def _to_device(images: list[torch.Tensor], targets: list[dict[str, Any]], device: torch.device) -> tuple[Any, Any]:
    images = [img.to(device) for img in images]
    targets = [{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in t.items()} for t in targets]
    return images, targets


def _dataset_meta(dataset: Any, cfg: DetectionConfig, model: nn.Module) -> dict[str, Any]:
    from fapn.data.base import default_palette

    transform = getattr(model, "transform", None) or getattr(getattr(model, "detector", None), "transform", None)
    names = list(getattr(dataset, "class_names", []))
    if not names and hasattr(dataset, "label_to_thing"):
        names = [dataset.categories[c]["name"] for c in dataset.label_to_thing.values()]
    meta: dict[str, Any] = {
        "name": cfg.name,
        "class_names": ["__background__", *names],
        "palette": [list(c) for c in default_palette(len(names) + 1)],
        "ignore_index": 255,
        "mean": list(transform.image_mean) if transform is not None else [],
        "std": list(transform.image_std) if transform is not None else [],
    }
    if hasattr(dataset, "label_to_stuff"):  # panoptic: the semantic head's labels, 0 = things
        meta["stuff_names"] = ["__things__", *(dataset.categories[c]["name"] for c in dataset.label_to_stuff.values())]
    return meta


def train(
    cfg: DetectionConfig,
    output_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train ``cfg`` and evaluate at the end; write ``last.pt``, ``model_final.pt`` (weights and model config
    only) and ``metrics.json``.

    Args:
        cfg: the recipe.
        output_dir: the run folder (default ``cfg.train.output_dir``).
        resume: continue exactly from ``output_dir/last.pt`` (``cfg`` must equal its saved config, keys of
            :data:`fapn.engine.run_dir.RUNTIME_KEYS` aside).
        progress: a tqdm bar (else one plain line per log record).
        overwrite: replace a run already in ``output_dir``.
        stop_after: stop once this iteration is done and ``last.pt`` written, without the final evaluation.

    Returns:
        the final metrics, plus ``iterations`` done and ``train_seconds``.
    """
    from fapn.engine.run_dir import removed_if_start_fails

    with removed_if_start_fails(output_dir or cfg.train.output_dir):  # a failed start leaves no empty folder
        return _train(cfg, output_dir, resume, progress, overwrite, stop_after)


def _train(
    cfg: DetectionConfig,
    output_dir: str | os.PathLike[str] | None,
    resume: bool,
    progress: bool,
    overwrite: bool,
    stop_after: int | None,
) -> dict[str, Any]:
    from fapn.config import config_from_dict, config_to_dict
    from fapn.data.coco_detection import collate_detection
    from fapn.data.sampler import StreamDataset, StreamSampler
    from fapn.engine.distributed import init_distributed
    from fapn.engine.lr_schedule import lr_multiplier
    from fapn.engine.optimizer import build_optimizer
    from fapn.engine.run_dir import load_resume_checkpoint, prepare_output_dir
    from fapn.engine.run_log import print_startup_summary
    from fapn.engine.trainer import Trainer, recipe_settings
    from fapn.runtime import loader_workers, set_threads

    config_from_dict(config_to_dict(cfg), DetectionConfig)  # every value checked, before any data is read
    ctx = init_distributed(cfg.train.device)
    if ctx.distributed:
        raise ValueError("detection training runs in one process; start it without torchrun")
    set_threads(cfg.train.threads)
    out = prepare_output_dir(output_dir or cfg.train.output_dir, resume=resume, overwrite=overwrite)
    checkpoint = load_resume_checkpoint(out, cfg, ctx.device) if resume else None
    torch.manual_seed(cfg.train.seed)
    random.seed(cfg.train.seed)
    datasets = build_datasets(cfg)
    model, kwargs = build_model(cfg, datasets["train"])
    model.to(ctx.device)
    o = cfg.optim
    # no weight decay on norm layers (detectron2's WEIGHT_DECAY_NORM), clipping of the whole model's gradient
    optimizer = build_optimizer(
        model,
        "sgd",
        o.lr,
        o.weight_decay,
        o.momentum,
        weight_decay_norm=o.weight_decay_norm,
        clip_grad_norm=o.clip_grad_norm or 0.0,
    )
    factor = lr_multiplier(
        "multistep",
        cfg.train.iterations,
        milestones=o.milestones,
        gamma=o.gamma,
        warmup_iters=o.warmup_iters,
        warmup_factor=o.warmup_factor,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    model_config = {
        "name": "build_detection_model",
        **{k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()},
    }
    trainer = Trainer(
        model=model,
        bare_model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        ctx=ctx,
        output_dir=out,
        extra={"model_config": model_config, "dataset": _dataset_meta(datasets["train"], cfg, model)},
        time_budget_s=cfg.train.time_budget_s,
        progress=progress,
        **recipe_settings(cfg),
    )
    if checkpoint is not None:
        trainer.resume(checkpoint)
        del checkpoint
    print_startup_summary(
        trainer,
        task=cfg.task,
        name=cfg.name,
        model=f"{cfg.model.detector} {cfg.model.backbone} + {cfg.model.neck}, {kwargs['num_classes']} classes",
        datasets={split: f"{cfg.data.format} {split}, {len(cast(Sized, ds))} images" for split, ds in datasets.items()},
        amp=False,
    )
    loader = torch.utils.data.DataLoader(
        StreamDataset(datasets["train"], cfg.train.seed),
        batch_size=cfg.train.batch_size,
        sampler=StreamSampler(cfg.train.batch_size, trainer.iteration),
        collate_fn=collate_detection,
        num_workers=loader_workers(cfg.data.num_workers),
        drop_last=True,
        generator=torch.Generator().manual_seed(cfg.train.seed),  # the iterator draws nothing from the training RNG
    )
    batches = iter(loader)

    def step(batch: Any) -> dict[str, torch.Tensor]:
        images, targets = _to_device(batch[0], batch[1], ctx.device)
        return model(images, targets)

    def validate(iteration: int) -> dict[str, Any]:
        return evaluate(model, datasets["val"], cfg, progress=progress)

    try:
        result = trainer.fit(batches, step, validate, stop_after=stop_after)
        if result.stopped == "stop_after":
            return {"iterations": trainer.iteration, "train_seconds": result.seconds}
        metrics = trainer.validate(validate)
        metrics["iterations"] = trainer.iteration
        metrics["train_seconds"] = result.seconds
        trainer.save("last.pt")
        trainer.save("model_final.pt", training_state=False)
        (out / "metrics.json").write_text(json.dumps({"metrics": metrics, "history": result.history}, indent=2))
    finally:
        trainer.close()
    return metrics


def resume_config(config_path: str, overrides: list[str], output_dir: str | None) -> DetectionConfig:
    """The saved config of the run to resume, with ``overrides`` applied (see
    :func:`fapn.engine.semseg.train.resume_config`)."""
    from fapn.engine.run_dir import resume_run_config

    return resume_run_config(DetectionConfig, config_path, overrides, output_dir)


def run_train(
    config_path: str,
    overrides: list[str],
    output_dir: str | None,
    resume: bool,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """``fapn train`` for detection tasks: load the recipe (the saved one with ``resume``), train and evaluate.

    Returns:
        the final metrics of :func:`train` plus ``output_dir``; the command prints them.
    """
    cfg = resume_config(config_path, overrides, output_dir) if resume else load_detection_config(config_path, overrides)
    out = Path(output_dir or cfg.train.output_dir)
    metrics = train(cfg, out, resume=resume, progress=progress, overwrite=overwrite)
    return {**metrics, "output_dir": str(out)}
