"""Semantic segmentation training: SGD with poly / multi-step schedules, optional warmup, mixed precision,
frozen or synchronised batch norm, DDP, periodic validation, tqdm / TensorBoard / JSONL logging and exactly
resumable checkpoints (``last.pt`` and ``best.pt``, atomic, plain data), on the skeleton of
:mod:`fapn.engine.trainer` (run-folder and resume rules in :mod:`fapn.engine.run_dir`, start-up summary in
:mod:`fapn.engine.run_log`).

Example:
    >>> from fapn.config import load_config
    >>> from fapn.engine.semseg.config import SegmentationConfig
    >>> cfg = load_config("semseg/synthetic_r18_fapn", SegmentationConfig, ["train.iterations=2"])
    >>> result = train(cfg, output_dir="/tmp/fapn_doctest_run")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from fapn.config import load_config
from fapn.data.base import SampleError
from fapn.data.sampler import StreamDataset, StreamSampler
from fapn.engine.distributed import init_distributed
from fapn.engine.lr_schedule import lr_multiplier
from fapn.engine.optimizer import build_optimizer
from fapn.engine.run_dir import load_resume_checkpoint, prepare_output_dir, removed_if_start_fails, resume_run_config
from fapn.engine.run_log import print_startup_summary
from fapn.engine.semseg.config import SegmentationConfig
from fapn.engine.semseg.data import build_datasets, describe_split, scan_splits
from fapn.engine.semseg.eval import evaluate
from fapn.engine.semseg.loss import ohem_targets, segmentation_loss
from fapn.engine.semseg.model import (
    build_segmentation_model,
    check_config,
    freeze_batch_norm,
    model_config_of,
    set_train_mode,
)
from fapn.engine.trainer import Trainer, recipe_settings
from fapn.runtime import autocast, loader_workers, set_threads

__all__ = ["train", "run_train", "resume_config"]


def _data_stream(loader: torch.utils.data.DataLoader, trainer: Trainer) -> Iterator[Any]:
    """The loader's batches; a sample that fails mid-run stops the run with its file named and what to do."""
    batches = iter(loader)
    while True:
        try:
            yield next(batches)
        except SampleError as err:  # from a worker, the message holds its traceback: keep the last line
            lines = [line for line in str(err).strip().splitlines() if line.strip()]
            problem = lines[-1].split("SampleError: ", 1)[-1] if lines else "unreadable sample"
            raise SampleError(
                f"{problem}; training stopped at iteration {trainer.iteration} ({trainer.output_dir / 'last.pt'} "
                "holds the last checkpoint): find every bad file with --check-data, or continue without them "
                "with --resume --set data.skip_unreadable=true"
            ) from None


def train(
    cfg: SegmentationConfig,
    output_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    overwrite: bool = False,
    keep_best: bool = True,
) -> dict[str, Any]:
    """Train the recipe's model; returns the final validation scores.

    Launched by ``torchrun --nproc_per_node N``, each process takes ``batch_size / N`` samples of every global
    batch (same data as one process), gradients are averaged by DDP, rank 0 logs and writes checkpoints.

    Args:
        cfg: the recipe (checked before any data is read).
        output_dir: overrides ``cfg.train.output_dir``.
        resume: continue from ``output_dir/last.pt`` (exactly: same weights as an uninterrupted run); ``cfg``
            must equal the config saved there, keys of :data:`fapn.engine.run_dir.RUNTIME_KEYS` aside (see
            :func:`resume_config` to get it).
        progress: show a tqdm bar (else one plain line per log record).
        stop_after: stop once this iteration is done and its checkpoint written, as an interrupted run would
            (the schedule still targets ``cfg.train.iterations``); ``--resume`` continues it.
        overwrite: replace a run already in ``output_dir`` (without it, and without ``resume``, that is an error).
        keep_best: keep ``best.pt``, the checkpoint of the best validation mIoU (``False``: only ``last.pt``, for
            runs that validate once, at the end, where the two would be the same file).

    Returns:
        ``{"iteration", "metrics" (last validation), "best_mIoU", "output_dir", "seconds"}``.

    Raises:
        ValueError: a bad recipe, a folder holding a run, a resume with a different recipe, unreadable data.
        FileNotFoundError: missing data, or ``resume`` without ``last.pt``.
    """
    with removed_if_start_fails(output_dir or cfg.train.output_dir):  # a failed start leaves no empty folder
        return _train(cfg, output_dir, resume, progress, stop_after, overwrite, keep_best)


def _train(
    cfg: SegmentationConfig,
    output_dir: str | os.PathLike[str] | None,
    resume: bool,
    progress: bool,
    stop_after: int | None,
    overwrite: bool,
    keep_best: bool,
) -> dict[str, Any]:
    check_config(cfg)
    ctx = init_distributed(cfg.train.device)
    set_threads(cfg.train.threads)
    out = prepare_output_dir(
        output_dir or cfg.train.output_dir, resume=resume, overwrite=overwrite, is_main=ctx.is_main
    )
    # read and compare the saved recipe before any data is read
    checkpoint = load_resume_checkpoint(out, cfg, ctx.device) if resume else None
    torch.manual_seed(cfg.train.seed)

    train_set, val_set = build_datasets(cfg)
    train_set, val_set, skipped = scan_splits(cfg, train_set, val_set, out, ctx.is_main, progress)
    info = train_set.info
    model = build_segmentation_model(cfg, info.num_classes, info.ignore_index).to(ctx.device)
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
        model,
        cfg.optim.name,
        cfg.optim.lr,
        cfg.optim.weight_decay,
        cfg.optim.momentum,
        cfg.optim.backbone_lr_factor,
        cfg.optim.weight_decay_norm,
        cfg.optim.clip_grad_norm,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lr_multiplier(
            cfg.optim.schedule,
            cfg.train.iterations,
            cfg.optim.power,
            cfg.optim.milestones,
            cfg.optim.gamma,
            cfg.optim.warmup_iters,
            cfg.optim.warmup_factor,
        ),
    )
    if ctx.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.local_rank] if ctx.device.type == "cuda" else None
        )
    global_batch = cfg.train.batch_size
    if global_batch % ctx.world_size:
        raise ValueError(f"train.batch_size={global_batch} is not divisible by {ctx.world_size} processes")
    model_config = model_config_of(cfg, info.num_classes, info.ignore_index)
    trainer = Trainer(
        model=model,
        bare_model=bare_model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=torch.amp.GradScaler("cuda", enabled=cfg.train.amp and ctx.device.type == "cuda"),
        ctx=ctx,
        output_dir=out,
        extra={"model_config": model_config, "dataset": info.to_dict(cfg.data.mean, cfg.data.std)},
        progress=progress,
        **recipe_settings(cfg),
        train_mode=lambda: set_train_mode(model, frozen),
        best_metric=(lambda scores: scores["mIoU"]) if keep_best else None,
        best_name="best_mIoU",
        val_record=lambda scores: {
            "mIoU": scores["mIoU"],
            "pixel_accuracy": scores["pixel_accuracy"],
            "boundary_mIoU": scores["boundary"]["mIoU"],
        },
    )
    if checkpoint is not None:
        trainer.resume(checkpoint)
        del checkpoint
    print_startup_summary(
        trainer,
        task="semseg",
        name=cfg.name,
        model=" ".join(f"{k}={v}" for k, v in model_config.items() if k != "num_classes"),
        datasets={
            "train": describe_split(cfg.data.train_split, train_set, cfg, skipped),
            "val": describe_split(cfg.data.val_split, val_set, cfg, skipped),
        },
        amp=cfg.train.amp,
    )

    loader = torch.utils.data.DataLoader(
        StreamDataset(train_set, cfg.train.seed),
        batch_size=global_batch // ctx.world_size,
        sampler=StreamSampler(global_batch, trainer.iteration, ctx.rank, ctx.world_size),
        num_workers=loader_workers(cfg.data.num_workers),
        pin_memory=ctx.device.type == "cuda",
        drop_last=True,
        persistent_workers=False,
        # its own generator: creating the iterator draws no number from the training RNG
        generator=torch.Generator().manual_seed(cfg.train.seed),
    )
    class_weights = (
        torch.tensor(cfg.optim.class_weights, dtype=torch.float32, device=ctx.device)
        if cfg.optim.class_weights
        else None
    )
    computes_loss = getattr(bare_model, "computes_loss", False)

    def step(batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        images, targets = batch
        images = images.to(ctx.device, non_blocking=True)
        targets = targets.to(ctx.device, non_blocking=True).long()
        with autocast(ctx.device, cfg.train.amp):
            if computes_loss:
                # Models whose loss needs more than the logits (point heads, set prediction) take the
                # targets in training mode and return their losses, as torchvision's detectors do.
                return dict(model(images, targets))
            logits = model(images)
        if cfg.optim.loss == "ohem":
            targets = ohem_targets(logits, targets, info.ignore_index, cfg.optim.ohem_thresh, cfg.optim.ohem_min_kept)
        return {"loss": segmentation_loss(logits, targets, info.ignore_index, class_weights, ctx.world_size)}

    def validate(iteration: int) -> dict[str, Any]:
        return evaluate(
            bare_model,
            val_set,
            ctx.device,
            cfg.eval.flip,
            cfg.eval.scales,
            cfg.eval.boundary_width,
            amp=cfg.train.amp,
            rank=ctx.rank,
            world_size=ctx.world_size,
            progress=progress,
        )

    start_iteration = trainer.iteration
    try:
        result = trainer.fit(_data_stream(loader, trainer), step, validate, stop_after=stop_after)
        if result.stopped == "stop_after":
            return {
                "iteration": trainer.iteration,
                "metrics": trainer.last_metrics,
                "best_mIoU": trainer.best,
                "output_dir": str(out),
                "seconds": result.seconds,
            }
        if trainer.iteration > start_iteration or trainer.last_metrics is None:
            trainer.validate(validate)
        scores = trainer.last_metrics
        assert scores is not None
        trainer.save("last.pt")
        if ctx.is_main:
            (out / "metrics.json").write_text(json.dumps(scores, indent=2))
    finally:
        trainer.close()
    return {
        "iteration": trainer.iteration,
        "metrics": scores,
        "best_mIoU": trainer.best,
        "output_dir": str(out),
        "seconds": result.seconds,
    }


def resume_config(
    config_path: str | os.PathLike[str], overrides: list[str], output_dir: str | os.PathLike[str] | None
) -> SegmentationConfig:
    """The config of the run to resume: the one saved in its ``last.pt``, with ``overrides`` applied (those that
    change the recipe then fail in :func:`train`, naming the key). ``config_path`` (with ``overrides``) only
    says where the run is when ``output_dir`` is ``None``.

    Raises:
        FileNotFoundError: no ``last.pt`` there.
        ValueError: an unreadable ``last.pt``.
    """
    return resume_run_config(SegmentationConfig, config_path, overrides, output_dir)


def run_train(
    config_path: str,
    overrides: list[str],
    output_dir: str | None,
    resume: bool,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """``fapn train`` for semantic segmentation: load the recipe (the saved one with ``resume``) and train.

    Returns:
        the result of :func:`train` (``metrics``, ``output_dir``, ``seconds``, ...); the command prints it.
    """
    import torch.distributed as dist

    if resume:
        cfg = resume_config(config_path, overrides, output_dir)
    else:
        cfg = load_config(config_path, SegmentationConfig, overrides)
    try:
        return train(cfg, output_dir=output_dir, resume=resume, progress=progress, overwrite=overwrite)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
