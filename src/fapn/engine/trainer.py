"""The optimisation loop every task shares: checkpoint contents, the RNG state and the loop.

A task (:mod:`fapn.engine.semseg`, :mod:`fapn.engine.detection`) builds its data, model and optimiser, then
hands :class:`Trainer` a stream of batches and a ``step(batch) -> {name: loss}`` function; the trainer sums the
losses, steps the optimiser and scheduler, logs (:mod:`fapn.engine.run_log`), validates, writes ``last.pt`` /
``best.pt`` and resumes, by the run-folder rules of :mod:`fapn.engine.run_dir`.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from fapn.checkpoint import TRAINING_STATE_KEYS, load_checkpoint, save_checkpoint
from fapn.config import config_to_dict
from fapn.engine.distributed import DistributedContext
from fapn.engine.run_log import RunLogger
from fapn.models.registry import rename_legacy_keywords
from fapn.runtime import all_reduce_sum

__all__ = ["Trainer", "TrainResult", "recipe_settings", "rng_state", "set_rng_state"]


def recipe_settings(cfg: Any) -> dict[str, Any]:
    """The :class:`Trainer` arguments every task fills the same way from its recipe: the iterations, the periods
    of its ``train`` section, the recipe itself (saved in each checkpoint) and the progress-bar description."""
    return {
        "iterations": cfg.train.iterations,
        "config": config_to_dict(cfg),
        "log_period": cfg.train.log_period,
        "checkpoint_period": cfg.train.checkpoint_period,
        "eval_period": cfg.train.eval_period,
        "description": f"train {cfg.name}",
    }


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
            if isinstance(saved, Mapping) and isinstance(saved.get("name"), str):  # keywords of earlier releases
                saved = rename_legacy_keywords(saved["name"], saved)  # under their new names (variant: neck)
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
