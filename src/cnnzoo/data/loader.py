"""Data loaders whose batches depend only on (seed, epoch): same seed, same batches.

Shuffling draws from a ``torch.Generator`` seeded from (seed, epoch); each worker seeds Python,
NumPy and torch from (seed, epoch, worker id) before it loads anything, so augmentations are
reproducible and never repeat across workers or epochs. With ``num_workers=0`` augmentation
draws from the main process's torch generator, which the caller seeds (and a resumed run
restores).
"""

from __future__ import annotations

import functools
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers, through NumPy's SeedSequence hash: (1, 0) and (0, 1) give
    unrelated streams, which ``seed + epoch`` would not."""
    entropy = [v % 2**64 for v in values]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


def seed_worker(worker_id: int, *, seed: int, epoch: int) -> None:
    """``worker_init_fn``: seed Python, NumPy and torch in this worker from (seed, epoch, id)."""
    worker_seed = mix_seed(seed, epoch, worker_id)
    torch.manual_seed(worker_seed)
    random.seed(worker_seed)
    np.random.seed(worker_seed % 2**32)


def make_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    epoch: int,
    num_workers: int = 0,
    sampler: Sampler | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """A ``DataLoader`` for one epoch whose order and augmentations follow (seed, epoch).

    Make a new loader each epoch: the epoch is part of every seed.

    Args:
        dataset: a map-style dataset, e.g. ``bundle.train``.
        batch_size: images per batch.
        shuffle: shuffle with a generator seeded from (seed, epoch). Ignored when ``sampler`` is
            given: the sampler owns the order (a ``DistributedSampler`` is told the epoch here).
        seed: the run's seed.
        epoch: the epoch this loader serves, counted as the caller counts (the trainer from 1);
            it only has to differ between epochs.
        num_workers: worker processes; 0 loads in the main process.
        sampler: e.g. ``DistributedSampler``; its ``set_epoch(epoch)`` is called here when it
            has one, so the caller does not.
        drop_last: drop the last incomplete batch.
    """
    generator = torch.Generator()
    generator.manual_seed(mix_seed(seed, epoch))
    if sampler is not None and hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    init = functools.partial(seed_worker, seed=seed, epoch=epoch) if num_workers else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=init,
        generator=generator,
        drop_last=drop_last,
    )
