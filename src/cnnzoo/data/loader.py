"""Data loaders whose batches depend only on (seed, epoch): same seed, same batches.

The epoch's order is drawn up front (:func:`epoch_order`): shuffling from a ``torch.Generator``
seeded from (seed, epoch), exactly as torch's ``RandomSampler`` draws it, or a sampler's own
order (a ``DistributedSampler``'s). A loader can start at any batch of that order
(``start``), which is how a run resumed mid-epoch goes on without loading again the batches it
already trained on. Inside a worker process, each batch seeds Python, NumPy and torch from
(seed, epoch, batch number) before it loads anything, so augmentations are reproducible, never
repeat across batches or epochs, and do not depend on which worker loads a batch or on where
the loader started. With ``num_workers=0`` augmentation draws from the main process's torch
generator, which the caller seeds (and a resumed run restores).
"""

from __future__ import annotations

import functools
import random
import signal
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers, through NumPy's SeedSequence hash: (1, 0) and (0, 1) give
    unrelated streams, which ``seed + epoch`` would not."""
    entropy = [v % 2**64 for v in values]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)


def seed_everything_from(*values: int) -> None:
    """Seed Python, NumPy and torch from :func:`mix_seed` of ``values``."""
    seed = mix_seed(*values)
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def seed_worker(worker_id: int, *, seed: int, epoch: int) -> None:
    """``worker_init_fn``: seed Python, NumPy and torch in this worker from (seed, epoch, id),
    and leave SIGINT and SIGTERM to the main process. A terminal's Ctrl-C and a scheduler's
    SIGTERM reach every process of the job; a worker that died of them would make the main
    process fail mid-step instead of finishing it and saving (the trainer's signal handling).
    The worker ends with its parent, as every DataLoader worker does."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seed_everything_from(seed, epoch, worker_id)


def epoch_order(
    size: int, *, shuffle: bool, seed: int, epoch: int, sampler: Sampler | None = None
) -> list[int]:
    """The indices of one epoch in the order the loader serves them.

    ``sampler`` (e.g. a ``DistributedSampler``) owns the order when given; it is told the epoch
    here (``set_epoch``). Otherwise a shuffled order is drawn as a ``DataLoader`` with
    ``shuffle=True`` and a generator seeded from (seed, epoch) draws it: one 64-bit draw for the
    loader's base seed, then ``randperm``, so runs keep the batches they always had.
    """
    if sampler is not None:
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        return [int(i) for i in sampler]
    if not shuffle:
        return list(range(size))
    generator = torch.Generator().manual_seed(mix_seed(seed, epoch))
    torch.empty((), dtype=torch.int64).random_(generator=generator)  # the loader's base seed
    return torch.randperm(size, generator=generator).tolist()


class NumberedBatches(Sampler[list[tuple[int, int]]]):
    """Batches of ``order`` from batch ``start`` on, each index paired with its batch number
    (counted from 0 at the epoch's start), so that a worker can seed each batch."""

    def __init__(
        self, order: Sequence[int], batch_size: int, start: int = 0, drop_last: bool = False
    ) -> None:
        self.order, self.batch_size, self.start = order, batch_size, start
        self.batches = len(order) // batch_size if drop_last else -(-len(order) // batch_size)

    def __len__(self) -> int:
        return max(self.batches - self.start, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for b in range(self.start, self.batches):
            chunk = self.order[b * self.batch_size : (b + 1) * self.batch_size]
            yield [(b, int(i)) for i in chunk]


class _SeededBatches(Dataset):
    """``dataset`` read a batch at a time (``NumberedBatches``): inside a worker, each batch
    first seeds the generators from (seed, epoch, batch number)."""

    def __init__(self, dataset: Dataset, seed: int, epoch: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        return self.dataset[item[1]]

    def __getitems__(self, items: list[tuple[int, int]]) -> list[Any]:
        if torch.utils.data.get_worker_info() is not None:
            seed_everything_from(self.seed, self.epoch, items[0][0])
        return [self.dataset[i] for _, i in items]


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
    start: int = 0,
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
        start: the first batch to serve (the batches before it are neither loaded nor
            augmented): where a run resumed mid-epoch goes on. ``len(loader)`` counts the
            batches left.
    """
    size = len(dataset)  # type: ignore[arg-type]
    order = epoch_order(size, shuffle=shuffle, seed=seed, epoch=epoch, sampler=sampler)
    generator = torch.Generator()
    generator.manual_seed(mix_seed(seed, epoch))
    init = functools.partial(seed_worker, seed=seed, epoch=epoch) if num_workers else None
    return DataLoader(
        _SeededBatches(dataset, seed, epoch),
        batch_sampler=NumberedBatches(order, batch_size, start, drop_last),
        num_workers=num_workers,
        worker_init_fn=init,
        generator=generator,
    )
