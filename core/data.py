"""Where training is in the data: an endless, resumable batch order and its DataLoader.

The batch order depends only on ``(seed, step)``: epoch ``e`` is a permutation seeded by
``seed * SEED_STRIDE + e`` and batches are cut from it without replacement (``drop_last``), so a
run resumed at step ``s`` continues with exactly the batches an uninterrupted run would see, on
any number of processes. A checkpoint records the position as ``(epoch, batch)``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler

from .sample_job import SEED_STRIDE


def data_position(step: int, dataset_len: int, batch_size: int) -> list[int]:
    """``[epoch, batch within the epoch]`` of training step ``step`` (full batches only)."""
    return list(divmod(step, dataset_len // batch_size))


class ResumableBatchSampler(Sampler[list[int]]):
    """Endless batches; epoch e is a permutation seeded by (seed, e). Starts at any step.

    Under torch.distributed, rank r of W yields the r-th contiguous chunk of each global batch,
    so W processes together consume exactly the batches a single process would.
    """

    def __init__(self, dataset_len: int, batch_size: int, seed: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1):
        if dataset_len < batch_size:
            raise ValueError(f"dataset has {dataset_len} items, fewer than train.batch_size={batch_size}")
        if batch_size % world_size:
            raise ValueError(f"train.batch_size={batch_size} (global) must be divisible by the {world_size} processes")
        self.n, self.batch_size, self.seed, self.start_step = dataset_len, batch_size, seed, start_step
        self.local = batch_size // world_size
        self.offset = rank * self.local
        self.batches_per_epoch = dataset_len // batch_size  # drop_last: every batch is full

    def __iter__(self):
        epoch, offset = divmod(self.start_step, self.batches_per_epoch)
        while True:
            g = torch.Generator().manual_seed(self.seed * SEED_STRIDE + epoch)
            perm = torch.randperm(self.n, generator=g).tolist()
            for b in range(offset, self.batches_per_epoch):
                start = b * self.batch_size + self.offset
                yield perm[start:start + self.local]
            epoch, offset = epoch + 1, 0


def resumable_loader(dataset, batch_size: int, seed: int, start_step: int, rank: int = 0, world_size: int = 1,
                     num_workers: int = 0, pin_memory: bool = False, spool_dir: Path | None = None) -> DataLoader:
    """A DataLoader over :class:`ResumableBatchSampler` starting at ``start_step``.

    ``spool_dir``: with workers, files that break inside a worker are recorded in the worker's
    copy of the dataset; ``skipped_in_workers_rank<r>.jsonl`` there carries them back to the
    report (core.io_utils.SkipLog).
    """
    batches = ResumableBatchSampler(len(dataset), batch_size, seed, start_step, rank, world_size)
    skipped = getattr(dataset, "skipped", None)
    if num_workers > 0 and spool_dir is not None and hasattr(skipped, "spool"):
        skipped.spool = str(Path(spool_dir) / f"skipped_in_workers_rank{rank}.jsonl")
    # A private generator keeps DataLoader's base-seed draw out of the global (saved) RNG.
    return DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed))
