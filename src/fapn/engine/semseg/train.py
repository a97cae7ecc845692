"""Semantic segmentation training: SGD with poly / multi-step schedules, optional warmup, mixed precision,
frozen or synchronised batch norm, DDP, periodic validation, tqdm / TensorBoard / JSONL logging and exactly
resumable checkpoints (``last.pt`` and ``best.pt``, atomic, plain data).

Example:
    >>> from fapn.config import load_config
    >>> from fapn.engine.segmentation_config import SegmentationConfig
    >>> cfg = load_config("semseg/synthetic_r18_fapn", SegmentationConfig, ["train.iterations=2"])
    >>> result = train(cfg, output_dir="/tmp/fapn_doctest_run")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fapn.config import config_to_dict, load_config
from fapn.data.base import SegmentationDataset
from fapn.data.build import build_dataset
from fapn.data.sampler import StreamDataset, StreamSampler
from fapn.data.transforms import eval_transforms, train_transforms
from fapn.checkpoint import load_checkpoint, save_checkpoint
from fapn.engine.distributed import all_reduce_sum, init_distributed
from fapn.engine.lr_schedule import lr_multiplier
from fapn.engine.optimizer import build_optimizer
from fapn.engine.segmentation_config import SegmentationConfig
from fapn.engine.semseg_eval import evaluate
from fapn.runtime import autocast, set_threads

__all__ = [
    "train",
    "run_train",
    "build_segmentation_model",
    "build_datasets",
    "freeze_batch_norm",
    "model_config_of",
    "segmentation_loss",
    "ohem_targets",
]


SEMANTIC_FPN_BUILDERS = {"resnet50": "semantic_fpn_resnet50_fapn", "resnet101": "semantic_fpn_resnet101_fapn"}


def model_config_of(cfg: SegmentationConfig, num_classes: int) -> dict[str, Any]:
    """The checkpoint's ``model_config``: the builder name and its keyword arguments."""
    if cfg.model.name == "semantic_fpn":
        if cfg.model.backbone not in SEMANTIC_FPN_BUILDERS:
            raise ValueError(
                f"semantic_fpn needs a backbone in {sorted(SEMANTIC_FPN_BUILDERS)}, got {cfg.model.backbone!r}"
            )
        return {"name": SEMANTIC_FPN_BUILDERS[cfg.model.backbone], "num_classes": num_classes}
    if cfg.model.name != "realtime_fapn":
        raise ValueError(f"unknown model.name {cfg.model.name!r}; valid names: ['realtime_fapn', 'semantic_fpn']")
    return {
        "name": "realtime_fapn",
        "backbone": cfg.model.backbone,
        "num_classes": num_classes,
        "variant": cfg.model.variant,
    }


def build_segmentation_model(cfg: SegmentationConfig, num_classes: int) -> nn.Module:
    """The model the config describes (``realtime_fapn`` or ``semantic_fpn``), with ImageNet backbone weights
    when asked."""
    from fapn.checkpoint import model_builder

    config = model_config_of(cfg, num_classes)
    builder = model_builder(config.pop("name"))
    return builder(**config, weights_backbone=cfg.model.weights_backbone)


def build_datasets(cfg: SegmentationConfig) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The training split (augmented) and the validation split (whole images, normalised)."""
    data = cfg.data
    val_options = {**data.options, **data.val_options}
    probe = build_dataset(data.dataset, data.root, data.val_split, None, **val_options)
    train_set = build_dataset(
        data.dataset,
        data.root,
        data.train_split,
        train_transforms(data.crop_size, probe.ignore_index, data.scales, data.hflip, data.mean, data.std),
        **data.options,
    )
    val_set = build_dataset(
        data.dataset, data.root, data.val_split, eval_transforms(data.mean, data.std), **val_options
    )
    return train_set, val_set


def freeze_batch_norm(model: nn.Module) -> list[nn.Module]:
    """Stop every batch norm of ``model`` from learning (no gradient) and return them; callers put them in
    eval mode after each ``model.train()`` (see :func:`_set_train_mode`). The state dict keeps its layout."""
    frozen = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for module in frozen:
        for parameter in module.parameters():
            parameter.requires_grad_(False)
    return frozen


def _set_train_mode(model: nn.Module, frozen: list[nn.Module]) -> None:
    model.train()
    for module in frozen:
        module.eval()


def segmentation_loss(
    logits: Tensor,
    target: Tensor,
    ignore_index: int,
    class_weights: Tensor | None = None,
    world_size: int = 1,
) -> Tensor:
    """Pixel cross-entropy normalised by the (weighted) number of labelled pixels of the *global* batch,
    times ``world_size``: DDP's gradient averaging then yields exactly the single-process gradient, however
    the ignored pixels are spread over the processes."""
    loss_sum = F.cross_entropy(logits.float(), target, weight=class_weights, ignore_index=ignore_index, reduction="sum")
    valid = target != ignore_index
    if class_weights is None:
        weight_sum = valid.sum().to(torch.float32)
    else:
        weight_sum = class_weights[target[valid]].sum().to(torch.float32)
    weight_sum = all_reduce_sum(weight_sum.detach())
    return loss_sum * world_size / weight_sum.clamp(min=1.0)


def ohem_targets(logits: Tensor, target: Tensor, ignore_index: int, thresh: float, min_kept: int) -> Tensor:
    """Online hard example mining (OHEM) over pixels: ``target`` with the easy pixels set to ``ignore_index``.

    A labelled pixel is hard when the predicted probability of its true class is at most ``max(thresh, p_k)``,
    where ``p_k`` is the ``min_kept``-th smallest such probability in the batch: so at least ``min_kept``
    pixels (all labelled ones if fewer) are kept however confident the model is. This is the OHEM of
    BiSeNet and mmsegmentation's ``OHEMPixelSampler`` (threshold 0.7 there).

    Args:
        logits: ``[N, C, H, W]``.
        target: ``[N, H, W]`` class indices with ``ignore_index``.
        thresh: probability below which a pixel is always hard.
        min_kept: pixels kept at least, per call.

    Example:
        >>> logits = torch.tensor([[[[4.0, 0.0]], [[0.0, 0.0]]]])  # 2 classes, 1x2 pixels
        >>> ohem_targets(logits, torch.tensor([[[0, 0]]]), 255, thresh=0.7, min_kept=1).tolist()
        [[[255, 0]]]
    """
    with torch.no_grad():
        valid = target != ignore_index
        if not valid.any():
            return target
        probs = logits.detach().float().softmax(dim=1)
        true_prob = probs.gather(1, target.clamp(0, logits.shape[1] - 1).unsqueeze(1)).squeeze(1)
        valid_probs = true_prob[valid]
        threshold = thresh
        if valid_probs.numel() > min_kept > 0:
            kth = valid_probs.kthvalue(min_kept).values.item()
            threshold = max(thresh, kth)
        hard = valid & (true_prob <= threshold)
        return torch.where(hard, target, torch.full_like(target, ignore_index))


class _Loggers:
    """JSONL log and TensorBoard scalars, on rank 0 only."""

    def __init__(self, output_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        self.jsonl = open(output_dir / "log.jsonl", "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(output_dir / "tensorboard"))
        except ImportError:  # tensorboard is an optional dependency
            self.writer = None

    def log(self, iteration: int, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"iteration": iteration, **record}) + "\n")
        self.jsonl.flush()
        if self.writer is not None:
            for key, value in _flatten(record).items():
                if isinstance(value, (int, float)) and value is not None:
                    self.writer.add_scalar(key, value, iteration)

    def close(self) -> None:
        if self.enabled:
            self.jsonl.close()
            if self.writer is not None:
                self.writer.close()


def _flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}/"))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def train(
    cfg: SegmentationConfig,
    output_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train ``realtime_fapn`` with the recipe ``cfg``; returns the final validation scores.

    Launched by ``torchrun --nproc_per_node N``, each process takes ``batch_size / N`` samples of every global
    batch (same data as one process), gradients are averaged by DDP, rank 0 logs and writes checkpoints.

    Args:
        cfg: the recipe.
        output_dir: overrides ``cfg.train.output_dir``.
        resume: continue from ``output_dir/last.pt`` (exactly: same weights as an uninterrupted run).
        progress: show a tqdm bar.
        stop_after: stop once this iteration is done and its checkpoint written, as an interrupted run would
            (the schedule still targets ``cfg.train.iterations``); ``--resume`` continues it.

    Returns:
        ``{"iteration", "metrics" (last validation), "best_mIoU", "output_dir", "seconds"}``.
    """
    from tqdm.auto import tqdm

    if cfg.optim.loss not in ("ce", "ohem"):
        raise ValueError(f"optim.loss must be 'ce' or 'ohem', got {cfg.optim.loss!r}")
    ctx = init_distributed(cfg.train.device)
    set_threads(cfg.train.threads)
    out = Path(output_dir or cfg.train.output_dir)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.train.seed)

    train_set, val_set = build_datasets(cfg)
    info = train_set.info
    model = build_segmentation_model(cfg, info.num_classes).to(ctx.device)
    frozen = freeze_batch_norm(model) if cfg.model.frozen_bn else []
    if ctx.distributed and cfg.model.sync_bn and not cfg.model.frozen_bn:
        if ctx.device.type != "cuda":
            raise ValueError(
                "model.sync_bn=true needs CUDA (torch's SyncBatchNorm has no CPU kernel); on CPU use "
                "model.frozen_bn=true or plain batch norm"
            )
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    bare_model = model
    optimizer = build_optimizer(
        model, cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.momentum,
        cfg.optim.backbone_lr_factor, cfg.optim.weight_decay_norm, cfg.optim.clip_grad_norm,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lr_multiplier(
            cfg.optim.schedule, cfg.train.iterations, cfg.optim.power, cfg.optim.milestones, cfg.optim.gamma,
            cfg.optim.warmup_iters, cfg.optim.warmup_factor,
        ),
    )
    start_iteration, best_miou, last_metrics = 0, -math.inf, None
    if resume:
        last = out / "last.pt"
        if not last.is_file():
            raise FileNotFoundError(f"--resume: no checkpoint to resume from at {last}")
        checkpoint = load_checkpoint(last, map_location=ctx.device)
        bare_model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        start_iteration = int(checkpoint["iteration"])
        stored_best = (checkpoint.get("metrics") or {}).get("best_mIoU")
        best_miou = float(stored_best) if stored_best is not None else -math.inf
        last_metrics = (checkpoint.get("metrics") or {}).get("val")
        torch.set_rng_state(checkpoint["rng"]["torch"])
    if ctx.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None
        )

    global_batch = cfg.train.batch_size
    if global_batch % ctx.world_size:
        raise ValueError(f"train.batch_size={global_batch} is not divisible by {ctx.world_size} processes")
    loader = torch.utils.data.DataLoader(
        StreamDataset(train_set, cfg.train.seed),
        batch_size=global_batch // ctx.world_size,
        sampler=StreamSampler(global_batch, start_iteration, ctx.rank, ctx.world_size),
        num_workers=cfg.data.num_workers,
        pin_memory=ctx.device.type == "cuda",
        drop_last=True,
        persistent_workers=False,
    )
    class_weights = (
        torch.tensor(cfg.optim.class_weights, dtype=torch.float32, device=ctx.device)
        if cfg.optim.class_weights
        else None
    )
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.train.amp and ctx.device.type == "cuda")
    loggers = _Loggers(out, ctx.is_main)
    dataset_entry = info.to_dict(cfg.data.mean, cfg.data.std)
    model_config = model_config_of(cfg, info.num_classes)

    def checkpoint_dict(iteration: int) -> dict[str, Any]:
        return {
            "model": bare_model.state_dict(),
            "model_config": model_config,
            "dataset": dataset_entry,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "iteration": iteration,
            "rng": {"torch": torch.get_rng_state()},
            "config": config_to_dict(cfg),
            "metrics": {"val": last_metrics, "best_mIoU": best_miou if best_miou > -math.inf else None},
        }

    def validate(iteration: int) -> dict[str, Any]:
        nonlocal best_miou, last_metrics
        scores = evaluate(
            bare_model, val_set, ctx.device, cfg.eval.flip, cfg.eval.scales, cfg.eval.boundary_width,
            amp=cfg.train.amp, rank=ctx.rank, world_size=ctx.world_size, progress=progress,
        )
        last_metrics = scores
        loggers.log(iteration, {"val": {"mIoU": scores["mIoU"], "pixel_accuracy": scores["pixel_accuracy"],
                                        "boundary_mIoU": scores["boundary"]["mIoU"]}})
        miou = scores["mIoU"] if scores["mIoU"] is not None else -math.inf
        if miou > best_miou:
            best_miou = miou
            if ctx.is_main:
                save_checkpoint(checkpoint_dict(iteration), out / "best.pt")
        return scores

    start_time = time.perf_counter()
    _set_train_mode(model, frozen)
    bar = tqdm(total=cfg.train.iterations, initial=start_iteration, desc=f"train {cfg.name}",
               disable=not progress or not ctx.is_main, dynamic_ncols=True)
    data_iter = iter(loader)
    iteration = start_iteration
    while iteration < cfg.train.iterations:
        images, targets = next(data_iter)
        images = images.to(ctx.device, non_blocking=True)
        targets = targets.to(ctx.device, non_blocking=True).long()
        with autocast(ctx.device, cfg.train.amp):
            if getattr(bare_model, "computes_loss", False):
                # Models whose loss needs more than the logits (point heads, set prediction) take the
                # targets in training mode and return their losses, as torchvision's detectors do.
                losses = model(images, targets)
                loss = sum(losses.values())
            else:
                logits = model(images)
        if not getattr(bare_model, "computes_loss", False):
            if cfg.optim.loss == "ohem":
                targets = ohem_targets(logits, targets, info.ignore_index, cfg.optim.ohem_thresh,
                                       cfg.optim.ohem_min_kept)
            loss = segmentation_loss(logits, targets, info.ignore_index, class_weights, ctx.world_size)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} at iteration {iteration}; lower optim.lr or check the labels"
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step()
        iteration += 1
        loss_value = loss.item() / ctx.world_size
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}")
        if iteration % cfg.train.log_period == 0 or iteration == cfg.train.iterations:
            loggers.log(iteration, {"train": {"loss": loss_value, "lr": lr},
                                    "time": time.perf_counter() - start_time})
        if cfg.train.eval_period and iteration % cfg.train.eval_period == 0 and iteration < cfg.train.iterations:
            validate(iteration)
            _set_train_mode(model, frozen)
        interrupted = stop_after is not None and iteration >= stop_after
        if ctx.is_main and (
            iteration % cfg.train.checkpoint_period == 0 or iteration == cfg.train.iterations or interrupted
        ):
            save_checkpoint(checkpoint_dict(iteration), out / "last.pt")
        if interrupted and iteration < cfg.train.iterations:
            bar.close()
            loggers.close()
            return {"iteration": iteration, "metrics": last_metrics, "best_mIoU": best_miou,
                    "output_dir": str(out), "seconds": time.perf_counter() - start_time}
    bar.close()
    scores = validate(iteration) if iteration > start_iteration or last_metrics is None else last_metrics
    if ctx.is_main:
        save_checkpoint(checkpoint_dict(iteration), out / "last.pt")
        (out / "metrics.json").write_text(json.dumps(scores, indent=2))
    loggers.close()
    return {
        "iteration": iteration,
        "metrics": scores,
        "best_mIoU": best_miou,
        "output_dir": str(out),
        "seconds": time.perf_counter() - start_time,
    }


def run_train(config_path: str, overrides: list[str], output_dir: str | None, resume: bool) -> int:
    """``fapn train`` for semantic segmentation: load the recipe, train, print the final table."""
    import torch.distributed as dist

    from fapn.metrics import format_table

    cfg = load_config(config_path, SegmentationConfig, overrides)
    try:
        result = train(cfg, output_dir=output_dir, resume=resume)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_table(result["metrics"], result["metrics"]["boundary"]))
        print(f"checkpoints and logs: {result['output_dir']} ({result['seconds']:.0f} s)")
    return 0
