"""What a training run says: the start-up summary printed before the first iteration, and the log records of
every task (a tqdm bar or plain lines, ``log.jsonl``, TensorBoard)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fapn.engine.run_dir import flatten_record

if TYPE_CHECKING:  # the trainer imports this module
    from fapn.engine.trainer import Trainer

__all__ = ["startup_summary", "print_startup_summary", "RunLogger"]


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


def print_startup_summary(
    trainer: Trainer, *, task: str, name: str, model: str, datasets: Mapping[str, str], amp: bool
) -> None:
    """Print :func:`startup_summary` of ``trainer``'s run (its device, processes, folder and first iteration) on
    the main process; the other processes print nothing."""
    if not trainer.ctx.is_main:
        return
    summary = startup_summary(
        task=task,
        name=name,
        model=model,
        datasets=datasets,
        device=trainer.ctx.device,
        amp=amp,
        world_size=trainer.ctx.world_size,
        output_dir=trainer.output_dir,
        start_iteration=trainer.iteration,
        iterations=trainer.iterations,
        resumed_from=trainer.resumed_from,
    )
    print(summary, flush=True)


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
        flat = flatten_record(record)
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
