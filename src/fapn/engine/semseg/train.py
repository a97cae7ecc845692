"""Semantic segmentation training: SGD with poly / multi-step schedules, optional warmup, mixed precision,
frozen or synchronised batch norm, DDP, periodic validation, tqdm / TensorBoard / JSONL logging and exactly
resumable checkpoints (``last.pt`` and ``best.pt``, atomic, plain data), on the skeleton of
:mod:`fapn.engine.trainer` (run-folder and resume rules, start-up summary).

Example:
    >>> from fapn.config import load_config
    >>> from fapn.engine.semseg.config import SegmentationConfig
    >>> cfg = load_config("semseg/synthetic_r18_fapn", SegmentationConfig, ["train.iterations=2"])
    >>> result = train(cfg, output_dir="/tmp/fapn_doctest_run")  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fapn.checkpoint import model_builder
from fapn.config import config_from_dict, config_to_dict, load_config
from fapn.data.base import SampleError, SegmentationDataset
from fapn.data.build import build_dataset
from fapn.data.sampler import StreamDataset, StreamSampler
from fapn.data.scan import BadFile, check_files, check_headers, format_bad_files, without_samples, write_report
from fapn.data.transforms import eval_transforms, train_transforms
from fapn.engine.distributed import all_reduce_sum, init_distributed
from fapn.engine.lr_schedule import lr_multiplier
from fapn.engine.optimizer import build_optimizer
from fapn.engine.semseg.config import ModelConfig, SegmentationConfig
from fapn.engine.semseg.eval import evaluate
from fapn.engine.trainer import (
    Trainer,
    load_resume_checkpoint,
    prepare_output_dir,
    removed_if_start_fails,
    resume_run_config,
    startup_summary,
)
from fapn.runtime import autocast, loader_workers, set_threads

__all__ = [
    "train",
    "run_train",
    "check_data",
    "build_segmentation_model",
    "build_datasets",
    "freeze_batch_norm",
    "model_config_of",
    "segmentation_loss",
    "ohem_targets",
    "resume_config",
]

# Builder arguments the engine fills from the recipe when the builder's signature has them.
_OPTIONAL_ARGUMENTS = ("backbone", "variant", "ignore_index")


def _registry_name(cfg: SegmentationConfig) -> str:
    """The registry name of the recipe's model."""
    from fapn.models import list_models

    name = cfg.model.name
    if name not in list_models():
        raise ValueError(
            f"unknown model.name {name!r}; registered semantic segmentation models: {list_models(task='semseg')}"
        )
    return name


def model_config_of(cfg: SegmentationConfig, num_classes: int, ignore_index: int = 255) -> dict[str, Any]:
    """The checkpoint's ``model_config``: the registry name and the builder's keyword arguments (the recipe's
    ``num_classes``, ``backbone`` / ``variant`` / ``ignore_index`` where the builder takes them, and
    ``model.options``).

    Raises:
        ValueError: an unknown model name, or an option the builder does not take.
    """
    name = _registry_name(cfg)
    parameters = inspect.signature(model_builder(name)).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    recipe = {"backbone": cfg.model.backbone, "variant": cfg.model.variant, "ignore_index": ignore_index}
    config: dict[str, Any] = {"name": name}
    defaults = ModelConfig()
    for key in _OPTIONAL_ARGUMENTS:
        if key in parameters:
            config[key] = recipe[key]
        elif key != "ignore_index" and recipe[key] != getattr(defaults, key):
            # a value the builder cannot take would otherwise be dropped and the run train something else
            raise ValueError(
                f"model.{key}={recipe[key]}: {name} takes no {key} (its encoder and neck are fixed by its name); "
                f"pick a model.name that does (fapn.models.list_models(task='semseg'))"
            )
    config["num_classes"] = num_classes
    if "frozen_batch_norm" in parameters and "frozen_batch_norm" not in cfg.model.options:
        # recorded, as the detection engine does: the checkpoint then rebuilds with the same norm layers
        # although it is rebuilt without loading ImageNet weights again
        config["frozen_batch_norm"] = cfg.model.weights_backbone is not None
    for key, value in cfg.model.options.items():
        if key not in parameters and not takes_any:
            raise ValueError(
                f"model.options.{key}: {name} takes no argument {key!r}; its arguments: {sorted(parameters)}"
            )
        config[key] = value
    if "backbone" in config:  # keep the key order of earlier checkpoints: name, backbone, num_classes, variant
        config = {"name": name, "backbone": config.pop("backbone"), **{k: v for k, v in config.items() if k != "name"}}
    return config


def build_segmentation_model(cfg: SegmentationConfig, num_classes: int, ignore_index: int = 255) -> nn.Module:
    """The model the recipe describes, through the registry, with ImageNet backbone weights when asked."""
    config = model_config_of(cfg, num_classes, ignore_index)
    return model_builder(config.pop("name"))(**config, weights_backbone=cfg.model.weights_backbone)


def _check_config(cfg: SegmentationConfig) -> None:
    """Every value against its type (``Literal`` choices too, for configs built in Python rather than loaded) and
    the model name against the registry: before any data is read."""
    try:
        config_from_dict(config_to_dict(cfg), SegmentationConfig)
    except ValueError as err:
        raise ValueError(f"recipe {cfg.name!r}: {err}") from None
    _registry_name(cfg)


def build_datasets(cfg: SegmentationConfig) -> tuple[SegmentationDataset, SegmentationDataset]:
    """The training split (augmented) and the validation split (whole images, normalised)."""
    data = cfg.data
    val_options = {**data.options, **data.val_options}
    probe = build_dataset(data.dataset, data.root, data.val_split, None, **val_options)
    train_set = build_dataset(
        data.dataset,
        data.root,
        data.train_split,
        train_transforms(
            data.crop_size,
            probe.ignore_index,
            data.scales,
            data.hflip,
            data.mean,
            data.std,
            short_edges=data.short_edges,
            max_size=data.max_size,
            single_category_max_area=data.single_category_max_area,
            color_aug_ssd=data.color_aug_ssd,
        ),
        **data.options,
    )
    val_set = build_dataset(
        data.dataset, data.root, data.val_split, eval_transforms(data.mean, data.std), **val_options
    )
    return train_set, val_set


def check_data(cfg: SegmentationConfig, progress: bool = True) -> dict[str, list[BadFile]]:
    """Read every file of the training and validation splits fully; returns the bad ones per split
    (``fapn train --check-data``)."""
    train_set, val_set = build_datasets(cfg)
    return {
        cfg.data.train_split: check_files(train_set, progress, f"check {cfg.data.train_split}"),
        cfg.data.val_split: check_files(val_set, progress, f"check {cfg.data.val_split}"),
    }


def _scan(
    cfg: SegmentationConfig,
    train_set: SegmentationDataset,
    val_set: SegmentationDataset,
    out: Path,
    is_main: bool,
    progress: bool,
) -> tuple[SegmentationDataset, SegmentationDataset, dict[str, int]]:
    """The start-up check: headers of every file (a bad one stops the run before it starts), or with
    ``data.skip_unreadable`` a full read that drops the bad samples and lists them in ``skipped_files.txt``."""
    splits = {cfg.data.train_split: train_set, cfg.data.val_split: val_set}
    skipped: dict[str, int] = {}
    if not cfg.data.skip_unreadable:
        bad = {split: check_headers(ds) for split, ds in splits.items()}
        count = sum(len(b) for b in bad.values())
        if count:
            listing = "\n".join(f"{split}:\n{format_bad_files(b)}" for split, b in bad.items() if b)
            raise SampleError(
                f"{count} unreadable file(s) in {cfg.data.dataset} ({cfg.data.root}):\n{listing}\nfix or remove them, "
                "or train without them with --set data.skip_unreadable=true (they are then listed in "
                "skipped_files.txt of the run folder)"
            )
        return train_set, val_set, skipped
    kept = {}
    for split, ds in splits.items():
        bad_files = check_files(ds, progress and is_main, f"check {split}")
        kept[split] = without_samples(ds, bad_files)
        skipped[split] = len(bad_files)
        if bad_files and is_main:
            write_report(bad_files, out / "skipped_files.txt", split)
            print(
                f"fapn train: skipping {len(bad_files)} unreadable {split} sample(s) (data.skip_unreadable), "
                f"listed in {out / 'skipped_files.txt'}:\n{format_bad_files(bad_files)}",
                file=sys.stderr,
                flush=True,
            )
    return kept[cfg.data.train_split], kept[cfg.data.val_split], skipped


def freeze_batch_norm(model: nn.Module) -> list[nn.Module]:
    """Stop every batch norm of ``model`` from learning (no gradient) and return them; callers put them in
    eval mode after each ``model.train()`` (see :func:`_set_train_mode`). The state dict keeps its layout."""
    frozen: list[nn.Module] = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
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


def _describe(split: str, dataset: SegmentationDataset, cfg: SegmentationConfig, skipped: dict[str, int]) -> str:
    where = f", {cfg.data.root}" if cfg.data.root else ""
    text = f"{cfg.data.dataset} {split}, {len(dataset)} images, {dataset.num_classes} classes{where}"
    if skipped.get(split):
        text += f" ({skipped[split]} unreadable skipped, see skipped_files.txt)"
    return text


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
            must equal the config saved there, keys of :data:`fapn.engine.trainer.RUNTIME_KEYS` aside (see
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
    _check_config(cfg)
    ctx = init_distributed(cfg.train.device)
    set_threads(cfg.train.threads)
    out = prepare_output_dir(
        output_dir or cfg.train.output_dir, resume=resume, overwrite=overwrite, is_main=ctx.is_main
    )
    # read and compare the saved recipe before any data is read
    checkpoint = load_resume_checkpoint(out, cfg, ctx.device) if resume else None
    torch.manual_seed(cfg.train.seed)

    train_set, val_set = build_datasets(cfg)
    train_set, val_set, skipped = _scan(cfg, train_set, val_set, out, ctx.is_main, progress)
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
        iterations=cfg.train.iterations,
        config=config_to_dict(cfg),
        extra={"model_config": model_config, "dataset": info.to_dict(cfg.data.mean, cfg.data.std)},
        log_period=cfg.train.log_period,
        checkpoint_period=cfg.train.checkpoint_period,
        eval_period=cfg.train.eval_period,
        progress=progress,
        description=f"train {cfg.name}",
        train_mode=lambda: _set_train_mode(model, frozen),
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
    if ctx.is_main:
        print(
            startup_summary(
                task="semseg",
                name=cfg.name,
                model=" ".join(f"{k}={v}" for k, v in model_config.items() if k != "num_classes"),
                datasets={
                    "train": _describe(cfg.data.train_split, train_set, cfg, skipped),
                    "val": _describe(cfg.data.val_split, val_set, cfg, skipped),
                },
                device=ctx.device,
                amp=cfg.train.amp,
                world_size=ctx.world_size,
                output_dir=out,
                start_iteration=trainer.iteration,
                iterations=cfg.train.iterations,
                resumed_from=trainer.resumed_from,
            ),
            flush=True,
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


def _print_bad_files(bad: dict[str, list[BadFile]]) -> int:
    count = sum(len(b) for b in bad.values())
    for split, files in bad.items():
        print(f"{split}: {len(files)} unreadable file(s)" + (":" if files else ""))
        for b in files:
            print(f"  {b}")
    return count


def run_train(
    config_path: str,
    overrides: list[str],
    output_dir: str | None,
    resume: bool,
    *,
    overwrite: bool = False,
    progress: bool = True,
    check_data_only: bool = False,
) -> int:
    """``fapn train`` for semantic segmentation: load the recipe (the saved one with ``resume``), train, print the
    final table. With ``check_data_only``, read every file and report the bad ones instead (exit code 1 if any)."""
    import torch.distributed as dist

    from fapn.metrics import format_table

    if check_data_only:
        bad = check_data(load_config(config_path, SegmentationConfig, overrides), progress=progress)
        count = _print_bad_files(bad)
        print(f"{count} unreadable file(s)" if count else "every file reads")
        return 1 if count else 0
    if resume:
        cfg = resume_config(config_path, overrides, output_dir)
    else:
        cfg = load_config(config_path, SegmentationConfig, overrides)
    try:
        result = train(cfg, output_dir=output_dir, resume=resume, progress=progress, overwrite=overwrite)
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_table(result["metrics"], result["metrics"]["boundary"]))
        print(f"checkpoints and logs: {result['output_dir']} ({result['seconds']:.0f} s)")
    return 0
