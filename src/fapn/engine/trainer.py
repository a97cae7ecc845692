"""The training skeleton every task shares: the run folder and its one resume rule, checkpoint contents, the RNG
state, logging, the start-up summary and the optimisation loop.

A task (:mod:`fapn.engine.semseg`, :mod:`fapn.engine.detection`) builds its data, model and optimiser, then
hands :class:`Trainer` a stream of batches and a ``step(batch) -> {name: loss}`` function; the trainer sums the
losses, steps the optimiser and scheduler, logs, validates, writes ``last.pt`` / ``best.pt`` and resumes.

The rules, the same for every task [ours]:

* a folder that holds a run (``last.pt``, ``log.jsonl``, ...) is continued with ``--resume`` or replaced with
  ``--overwrite``; anything else is an error, so no run is overwritten by accident;
* ``--resume`` without ``last.pt`` is an error (never a silent fresh start);
* a resumed run keeps its recipe: the config saved in ``last.pt`` is used, and a value that differs from it is
  an error naming the key, except the keys of :data:`RUNTIME_KEYS` (where and how the run executes);
* resuming is exact: the weights after ``N/2 + resume + N/2`` iterations equal those of ``N`` straight ones
  (data order from :mod:`fapn.data.sampler`, RNG state in the checkpoint, validation outside the RNG stream).

Example:
    >>> check_resume_config(
    ...     {"train": {"iterations": 10, "threads": 1}}, {"train": {"iterations": 10, "threads": 2}}, "last.pt"
    ... )  # threads may change
    >>> check_resume_config({"model": {"variant": "fapn"}}, {"model": {"variant": "fpn"}}, "runs/x/last.pt")
    Traceback (most recent call last):
    ...
    ValueError: cannot resume runs/x/last.pt with model.variant='fpn': the run was trained with model.variant='fapn' (a resumed run keeps its saved recipe; a different one is a new run, in another --output-dir)
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from fapn.checkpoint import TRAINING_STATE_KEYS, load_checkpoint, save_checkpoint
from fapn.config import config_from_dict, config_to_dict, load_config
from fapn.engine.distributed import DistributedContext, all_reduce_sum

__all__ = [
    "Trainer",
    "RunLogger",
    "prepare_output_dir",
    "check_resume_config",
    "load_resume_checkpoint",
    "resume_run_config",
    "saved_recipe",
    "rng_state",
    "set_rng_state",
    "startup_summary",
    "RUN_FILES",
    "RUNTIME_KEYS",
    "removed_if_start_fails",
]

_Config = TypeVar("_Config")

RUN_FILES = (
    "last.pt",
    "best.pt",
    "model_final.pt",
    "metrics.json",
    "log.jsonl",
    "skipped_files.txt",
    "tensorboard",
    "last_eval.json",  # what `fapn eval --weights RUN/NAME.pt` writes beside the checkpoints
    "best_eval.json",
    "model_final_eval.json",
)
"""What a training run writes into its folder (``--overwrite`` removes these and nothing else)."""

RUNTIME_KEYS = (
    "data.root",
    "data.num_workers",
    "data.skip_unreadable",
    "train.output_dir",
    "train.device",
    "train.threads",
    "train.log_period",
    "train.checkpoint_period",
    "train.eval_period",
    "train.time_budget_s",
)
"""Config keys that may differ on ``--resume``: where the data is and how the run executes, not what it computes.

``train.iterations`` is not among them: the learning-rate schedule is a function of it, so a longer run is a new
run. ``data.skip_unreadable`` is, so that a run stopped by a broken file can go on without it (the data order
after the resume then differs from an uninterrupted run's)."""


def _flatten(record: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def prepare_output_dir(
    output_dir: str | os.PathLike[str], *, resume: bool, overwrite: bool, is_main: bool = True
) -> Path:
    """Apply the run-folder rule (module docstring) and create the folder; returns it.

    Raises:
        ValueError: ``resume`` and ``overwrite`` together, or a folder holding a run without either.
        FileNotFoundError: ``resume`` without ``last.pt``.
    """
    out = Path(output_dir)
    if resume and overwrite:
        raise ValueError("--resume continues the run and --overwrite replaces it: give one of them")
    if resume:
        if not (out / "last.pt").is_file():
            raise FileNotFoundError(
                f"--resume: no checkpoint to resume from at {out / 'last.pt'}; start a new run without --resume"
            )
        return out
    if not is_main:  # rank 0 decides (and may already be writing the new run's files)
        return out
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found and not overwrite:
        if "last.pt" in found:
            what = "continue it with --resume, replace it with --overwrite"
        else:  # a run that stopped before its first checkpoint cannot be continued
            what = "it has no last.pt to --resume from: replace it with --overwrite"
        raise ValueError(f"{out} already holds a run ({', '.join(found)}): {what}, or choose another --output-dir")
    for name in found:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


@contextmanager
def removed_if_start_fails(output_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Around a run's start-up: when the block raises, remove the folders it created for ``output_dir`` (the
    run folder and the parents that did not exist before) that are still empty, so a failed start (offline
    weights, missing data, a bad recipe value) leaves nothing behind. A folder that existed, or holds anything,
    is kept.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "runs" / "new"
        >>> try:
        ...     with removed_if_start_fails(out):
        ...         out.mkdir(parents=True)
        ...         raise ValueError("no data")
        ... except ValueError:
        ...     pass
        >>> out.parent.exists()
        False
    """
    path = Path(output_dir).absolute()
    created = [folder for folder in (path, *path.parents) if not folder.exists()]  # deepest first
    try:
        yield
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()  # only an empty folder goes
            except OSError:
                break
        raise


def check_resume_config(saved: Mapping[str, Any], current: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Raise a ``ValueError`` naming the first key where ``current`` differs from the ``saved`` config, keys of
    :data:`RUNTIME_KEYS` aside."""
    old, new = _flatten(saved), _flatten(current)
    for key in sorted(set(old) | set(new)):
        if key in RUNTIME_KEYS or any(key.startswith(f"{k}.") for k in RUNTIME_KEYS):
            continue
        if old.get(key) != new.get(key):
            raise ValueError(
                f"cannot resume {path} with {key}={new.get(key)!r}: the run was trained with {key}={old.get(key)!r} "
                "(a resumed run keeps its saved recipe; a different one is a new run, in another --output-dir)"
            )


def _with_defaults(saved: dict[str, Any], cls: type) -> dict[str, Any]:
    """A saved config with the keys added to ``cls`` since it was written at their defaults (as saved when it no
    longer reads as ``cls``: the comparison then names the key)."""
    try:
        return config_to_dict(config_from_dict(saved, cls))
    except ValueError:
        return saved


def load_resume_checkpoint(output_dir: str | os.PathLike[str], cfg: Any, device: torch.device) -> dict[str, Any]:
    """``output_dir/last.pt`` for ``--resume``, once :func:`check_resume_config` has found ``cfg`` (a recipe
    dataclass) equal to the config saved in it; read before any data is.

    Raises:
        ValueError: an unreadable checkpoint, or a recipe that differs from the saved one (naming the key).
    """
    last = Path(output_dir) / "last.pt"
    checkpoint = load_checkpoint(last, map_location=device, require=TRAINING_STATE_KEYS)
    check_resume_config(_with_defaults(checkpoint["config"], type(cfg)), config_to_dict(cfg), last)
    return checkpoint


def resume_run_config(
    cls: type[_Config],
    config_path: str | os.PathLike[str],
    overrides: list[str],
    output_dir: str | os.PathLike[str] | None,
) -> _Config:
    """The ``cls`` config of the run to resume: the one saved in its ``last.pt``, with ``overrides`` applied (those
    that change the recipe then fail in :func:`check_resume_config`, naming the key). ``config_path`` (with
    ``overrides``) only says where the run is when ``output_dir`` is ``None``; every task's ``resume_config``.

    Raises:
        FileNotFoundError: no ``last.pt`` there.
        ValueError: an unreadable ``last.pt``.
    """
    recipe: Any = load_config(config_path, cls, overrides)
    last = Path(output_dir or recipe.train.output_dir) / "last.pt"
    if not last.is_file():
        raise FileNotFoundError(f"--resume: no checkpoint to resume from at {last}; start a new run without --resume")
    saved = load_checkpoint(last, require=TRAINING_STATE_KEYS)["config"]
    try:
        return config_from_dict(saved, cls, overrides)
    except ValueError as err:
        raise ValueError(f"{last}: its saved config: {err}") from None


def saved_recipe(weights: str | os.PathLike[str]) -> dict[str, Any]:
    """The recipe a checkpoint was trained with (the ``config`` that ``fapn train`` stores in every checkpoint),
    for commands given a checkpoint and no recipe: its data is the data the model was trained and validated on.

    Raises:
        FileNotFoundError: no such file.
        ValueError: an unreadable file, or a checkpoint that stores no recipe (weights only).
    """
    config = load_checkpoint(weights).get("config")
    if not isinstance(config, Mapping):
        raise ValueError(
            f"{weights} stores no recipe (only weights): name the recipe it was trained with, "
            f"e.g. fapn eval RECIPE --weights {weights}"
        )
    return dict(config)


def rng_state() -> dict[str, Any]:
    """Every random generator training draws from, as plain data: ``{"torch", "python", "cuda"}`` (``cuda``: one
    state per visible GPU, when CUDA is initialised)."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": [version, list(internal), gauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Any) -> None:
    """Restore :func:`rng_state`; also reads the older formats (a bare torch state, ``{"torch": ...}``)."""
    if isinstance(state, Tensor):
        torch.set_rng_state(state)
        return
    torch.set_rng_state(state["torch"])
    if state.get("python") is not None:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if state.get("cuda") is not None and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def startup_summary(
    *,
    task: str,
    name: str,
    model: str,
    datasets: Mapping[str, str],
    device: torch.device,
    amp: bool,
    world_size: int,
    output_dir: Path,
    start_iteration: int,
    iterations: int,
    resumed_from: Path | None,
) -> str:
    """The block printed when training starts: what trains on what, where, and from which iteration."""
    threads = torch.get_num_threads()
    lines = [
        f"fapn train: {name} ({task})",
        f"  model:   {model}",
        *(f"  {split + ':':8s} {text}" for split, text in datasets.items()),
        f"  device:  {device}, {threads} CPU thread{'s' if threads != 1 else ''}"
        + (f", {world_size} processes" if world_size > 1 else "")
        + (", mixed precision" if amp else ""),
        f"  output:  {output_dir}",
        (
            f"  start:   resumed from iteration {start_iteration} of {iterations} ({resumed_from})"
            if resumed_from is not None
            else f"  start:   new run, {iterations} iterations"
        ),
    ]
    return "\n".join(lines)


class RunLogger:
    """``log.jsonl`` and TensorBoard scalars (rank 0 only), plus one plain line per record on stdout when there
    is no progress bar (logs without carriage returns)."""

    def __init__(self, output_dir: Path, enabled: bool, echo: bool = False) -> None:
        self.enabled = enabled
        self.echo = echo and enabled
        self.output_dir = output_dir
        self.writer: Any = None
        self.jsonl: Any = None
        if not enabled:
            return
        self._open()

    def _open(self, purge_step: int | None = None) -> None:
        self.jsonl = open(self.output_dir / "log.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(self.output_dir / "tensorboard"), purge_step=purge_step)
        except ImportError:  # tensorboard is an optional dependency
            self.writer = None

    def forget_after(self, iteration: int) -> None:
        """Drop the records of the iterations after ``iteration`` (and a last line cut short): on resume from a
        checkpoint at ``iteration``, those iterations run again, and the log keeps one record per iteration, as
        an uninterrupted run's. TensorBoard drops its events after ``iteration`` too (``purge_step``)."""
        if not self.enabled:
            return
        self.close()
        path = self.output_dir / "log.jsonl"
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
            try:
                record = json.loads(line)
            except ValueError:  # a line the kill cut short
                continue
            if int(record.get("iteration", 0)) <= iteration:
                kept.append(line + "\n")
        tmp = path.with_name(".log.jsonl.tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)
        self._open(purge_step=iteration + 1)

    def log(self, iteration: int, record: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"iteration": iteration, **record}) + "\n")
        self.jsonl.flush()
        flat = _flatten(record)
        if self.writer is not None:
            for key, value in flat.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(key.replace(".", "/"), value, iteration)
        if self.echo:
            parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in flat.items()]
            print(f"iteration {iteration}: " + ", ".join(parts), flush=True)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self.writer is not None:
            self.writer.close()


@dataclass
class TrainResult:
    """What :meth:`Trainer.fit` reached."""

    iteration: int
    stopped: str | None
    """``None`` (all iterations done), ``"stop_after"`` or ``"time_budget"``."""
    seconds: float
    history: list[dict[str, Any]]


class Trainer:
    """The loop and bookkeeping of one training run; see the module docstring.

    Args:
        model: what ``step`` calls (DDP-wrapped under ``torchrun``).
        bare_model: the model itself (its state dict goes into checkpoints).
        optimizer, scheduler: stepped once per iteration (the scheduler after the optimiser).
        ctx: the process's place (:func:`fapn.engine.distributed.init_distributed`).
        output_dir: the run folder (prepared by :func:`prepare_output_dir`).
        iterations: the run's length.
        config: the whole recipe as plain data (saved in every checkpoint, compared on resume).
        extra: more checkpoint entries (``model_config``, ``dataset``).
        log_period, checkpoint_period, eval_period: every this many iterations (0: never; the last iteration
            always writes ``last.pt``).
        scaler: CUDA mixed-precision loss scaler (``None``: plain backward). Gradient clipping belongs to the
            optimiser (:func:`fapn.engine.optimizer.build_optimizer`), so it sees unscaled gradients.
        time_budget_s: stop once training has taken this long.
        progress: a tqdm bar on rank 0 (else one plain line per log record).
        train_mode: puts the model in training mode (default ``model.train()``; frozen batch norm overrides it).
        best_metric: ``metrics -> number`` to keep ``best.pt`` (higher is better); ``None``: no ``best.pt``.
        best_name: the key of that number in the checkpoint's ``metrics``.
        val_record: ``metrics -> dict`` logged for each validation (default: the scalar entries).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        bare_model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        ctx: DistributedContext,
        output_dir: Path,
        iterations: int,
        config: Mapping[str, Any],
        extra: Mapping[str, Any],
        log_period: int,
        checkpoint_period: int,
        eval_period: int = 0,
        scaler: torch.amp.GradScaler | None = None,
        time_budget_s: float | None = None,
        progress: bool = True,
        description: str = "train",
        train_mode: Callable[[], None] | None = None,
        best_metric: Callable[[Mapping[str, Any]], float | None] | None = None,
        best_name: str = "best",
        val_record: Callable[[Mapping[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.model, self.bare_model = model, bare_model
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.ctx = ctx
        self.output_dir = output_dir
        self.iterations = iterations
        self.config = dict(config)
        self.extra = dict(extra)
        self.log_period, self.checkpoint_period, self.eval_period = log_period, checkpoint_period, eval_period
        self.time_budget_s = time_budget_s
        self.progress = progress
        self.description = description
        self.train_mode = train_mode or model.train
        self.best_metric = best_metric
        self.best_name = best_name
        self.val_record = val_record or _headline
        self._rng_to_restore: Any = None
        self.iteration = 0
        self.best = -math.inf
        self.last_metrics: dict[str, Any] | None = None
        self.resumed_from: Path | None = None
        self.logger = RunLogger(output_dir, ctx.is_main, echo=not progress)

    # -- checkpoints ---------------------------------------------------------------------------------------------
    def checkpoint(self, training_state: bool = True) -> dict[str, Any]:
        """The checkpoint of the current state (``training_state=False``: weights, model config, dataset and
        metrics only, as ``model_final.pt``)."""
        checkpoint: dict[str, Any] = {
            "model": self.bare_model.state_dict(),
            **self.extra,
            "iteration": self.iteration,
            "config": self.config,
            "metrics": {"val": self.last_metrics, self.best_name: self.best if self.best > -math.inf else None},
        }
        if training_state:
            checkpoint["optimizer"] = self.optimizer.state_dict()
            checkpoint["scheduler"] = self.scheduler.state_dict()
            checkpoint["rng"] = rng_state()
            if self.scaler is not None and self.scaler.is_enabled():
                checkpoint["scaler"] = self.scaler.state_dict()
        return checkpoint

    def save(self, name: str, training_state: bool = True) -> None:
        if self.ctx.is_main:
            save_checkpoint(self.checkpoint(training_state), self.output_dir / name)

    def resume(self, checkpoint: Mapping[str, Any] | None = None) -> None:
        """Continue from ``checkpoint`` (default: read ``last.pt`` of the run folder): weights, optimiser,
        scheduler, scaler, iteration, best score and RNG state (restored by :meth:`fit`, after the data iterator
        is built). The task compares the saved recipe with its own first (:func:`check_resume_config`), before
        reading data.

        Raises:
            ValueError: an unreadable ``last.pt``, or weights of another model.
        """
        path = self.output_dir / "last.pt"
        if checkpoint is None:
            checkpoint = load_checkpoint(path, map_location=self.ctx.device, require=TRAINING_STATE_KEYS)
        for key in ("model_config",):
            saved, current = checkpoint.get(key), self.extra.get(key)
            if saved is not None and current is not None and saved != current:
                raise ValueError(f"cannot resume {path}: it holds model {saved}, the recipe builds {current}")
        try:
            self.bare_model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"cannot resume {path}: its weights do not fit the model ({first})") from None
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.scaler is not None and "scaler" in checkpoint:
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.iteration = int(checkpoint["iteration"])
        metrics = checkpoint.get("metrics") or {}
        best = metrics.get(self.best_name)
        self.best = float(best) if best is not None else -math.inf
        self.last_metrics = metrics.get("val")
        self._rng_to_restore = checkpoint["rng"]
        self.resumed_from = path
        self.logger.forget_after(self.iteration)  # iterations logged after the checkpoint run again

    # -- validation ----------------------------------------------------------------------------------------------
    def validate(self, evaluate: Callable[[int], dict[str, Any]]) -> dict[str, Any]:
        """Run ``evaluate(iteration)`` outside the training RNG stream, log it, keep ``best.pt`` when it
        improves."""
        with torch.random.fork_rng(devices=[]):
            scores = evaluate(self.iteration)
        self.last_metrics = scores
        self.logger.log(self.iteration, {"val": self.val_record(scores)})
        if self.best_metric is not None:
            value = self.best_metric(scores)
            if value is not None and value > self.best:
                self.best = value
                self.save("best.pt")
        return scores

    # -- the loop ------------------------------------------------------------------------------------------------
    def fit(
        self,
        batches: Iterator[Any],
        step: Callable[[Any], Mapping[str, Tensor]],
        evaluate: Callable[[int], dict[str, Any]] | None = None,
        stop_after: int | None = None,
    ) -> TrainResult:
        """Train from :attr:`iteration` to ``iterations``.

        Args:
            batches: the data stream positioned at :attr:`iteration` (created before this call: building an
                iterator may draw from the RNG, which is restored here afterwards when resuming).
            step: ``batch -> {name: loss}`` under the model's training mode; the sum is minimised.
            evaluate: ``iteration -> metrics`` run every ``eval_period`` iterations (not after the last one:
                the task evaluates at the end itself).
            stop_after: stop once this iteration is done and ``last.pt`` written, as an interrupted run would.

        Raises:
            FloatingPointError: a loss that is not finite (the iteration is named).
        """
        from tqdm.auto import tqdm

        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore)
            self._rng_to_restore = None
        history: list[dict[str, Any]] = []
        began = time.perf_counter()
        start = self.iteration
        self.train_mode()
        bar = tqdm(
            total=self.iterations,
            initial=start,
            desc=self.description,
            dynamic_ncols=True,
            disable=not self.progress or not self.ctx.is_main,
            file=sys.stderr,
        )
        stopped: str | None = None
        try:
            while self.iteration < self.iterations:
                losses = step(next(batches))
                loss = sum(losses.values())
                assert isinstance(loss, Tensor)
                if not torch.isfinite(loss):
                    values = {k: round(float(v), 4) for k, v in losses.items()}
                    raise FloatingPointError(
                        f"loss became {loss.item()} at iteration {self.iteration} {values}; lower optim.lr or check "
                        "the labels"
                    )
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler is not None and self.scaler.is_enabled():
                    self.scaler.scale(loss).backward()
                    self.scaler.step(self.optimizer)  # unscales the gradients before the optimiser's step
                    self.scaler.update()
                else:
                    loss.backward()
                    self.optimizer.step()
                lr = self.optimizer.param_groups[0]["lr"]
                self.scheduler.step()
                self.iteration += 1
                loss_value, parts = _mean_over_processes(loss, losses, self.ctx.world_size)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.3f}", lr=f"{lr:.2e}")
                if self.iteration % self.log_period == 0 or self.iteration == self.iterations:
                    record: dict[str, Any] = {"loss": loss_value, "lr": lr}
                    if len(losses) > 1:
                        record.update(parts)
                    history.append({"iteration": self.iteration, **record})
                    self.logger.log(self.iteration, {"train": record, "time": time.perf_counter() - began})
                if (
                    evaluate is not None
                    and self.eval_period
                    and self.iteration % self.eval_period == 0
                    and self.iteration < self.iterations
                ):
                    self.validate(evaluate)
                    self.train_mode()
                if stop_after is not None and self.iteration >= stop_after and self.iteration < self.iterations:
                    stopped = "stop_after"
                elif self.time_budget_s is not None and time.perf_counter() - began > self.time_budget_s:
                    stopped = "time_budget"
                if (self.checkpoint_period and self.iteration % self.checkpoint_period == 0) or (
                    self.iteration == self.iterations or stopped is not None
                ):
                    self.save("last.pt")
                if stopped is not None:
                    break
        finally:
            bar.close()
        return TrainResult(self.iteration, stopped, time.perf_counter() - began, history)

    def close(self) -> None:
        self.logger.close()


def _mean_over_processes(loss: Tensor, losses: Mapping[str, Tensor], world_size: int) -> tuple[float, dict[str, float]]:
    """The loss and its terms as one process logs them for the whole global batch: the mean over the processes.

    Under DDP each process holds the loss of its share of the batch (the semantic loss is scaled so that DDP's
    gradient averaging gives the one-process gradient), so one rank's value is not the run's loss; every process
    must call this at the same iterations (it all-reduces).
    """
    values = torch.stack([loss.detach().float(), *(v.detach().float() for v in losses.values())])
    if world_size > 1:
        values = all_reduce_sum(values) / world_size
    total, *terms = values.tolist()
    return total, dict(zip(losses, terms))


def _headline(scores: Mapping[str, Any]) -> dict[str, Any]:
    """The numbers of a validation worth a log line: top-level scalars and one level of nested scalars."""
    record: dict[str, Any] = {}
    for key, value in scores.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            record[key] = value
        elif isinstance(value, Mapping):
            nested = {k: v for k, v in value.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if nested:
                record[key] = nested
    return record
