"""Deterministic, resumable, distributed training data order.

The data is one infinite stream of positions ``0, 1, 2, ...``; position ``p`` is sample
``permutation(seed, epoch)[p % n]`` with ``epoch = p // n``, augmented under the seed ``(seed, p)``.
Iteration ``k`` of a run with global batch ``B`` consumes positions ``k*B .. k*B + B - 1``; rank ``r`` of ``W``
takes those congruent to ``r`` modulo ``W``. So the batches depend only on (seed, iteration, global batch):
resuming, or training on any number of processes, sees exactly the same data.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["StreamSampler", "StreamDataset"]


class StreamSampler(Sampler[int]):
    """Infinite stream positions for one rank, starting at iteration ``start_iteration``.

    Args:
        global_batch_size: samples per iteration over all ranks (divisible by ``world_size``).
        start_iteration: first iteration to produce (for resuming).
        rank, world_size: this process and the number of processes.

    Example:
        >>> it = iter(StreamSampler(4, start_iteration=1, rank=1, world_size=2))
        >>> [next(it) for _ in range(4)]
        [5, 7, 9, 11]
    """

    def __init__(self, global_batch_size: int, start_iteration: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if global_batch_size % world_size:
            raise ValueError(f"global batch {global_batch_size} is not divisible by {world_size} processes")
        self.start = start_iteration * global_batch_size + rank
        self.world_size = world_size

    def __iter__(self) -> Iterator[int]:
        position = self.start
        while True:
            yield position
            position += self.world_size


class StreamDataset(Dataset):
    """Maps stream positions to (shuffled, augmented) samples of ``dataset``; see the module docstring."""

    def __init__(self, dataset: Any, seed: int = 0) -> None:
        self.dataset = dataset
        self.seed = seed
        self._epoch = -1
        self._permutation: list[int] = []

    def __len__(self) -> int:
        return len(self.dataset)

    def index_at(self, position: int) -> int:
        n = len(self.dataset)
        epoch = position // n
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._permutation = torch.randperm(n, generator=generator).tolist()
            self._epoch = epoch
        return self._permutation[position % n]

    def __getitem__(self, position: int) -> Any:
        index = self.index_at(position)
        # The augmentation draws from torch's global generator: seed it per position, without disturbing
        # the caller's generator state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed * 1_000_003 + 7919 * position + 1)
            return self.dataset[index]
