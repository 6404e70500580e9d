"""The training data: the checked, cached datasets of a run and the resumable stream of batches over them.

Data order is a function of the global step: the training items form one endless stream of seeded
permutations (epoch e is permutation e), step s reads the next ``batch_size * world_size`` items of the
stream, and each item's augmentation and annotator are drawn from a generator seeded by (seed, epoch of
the stream, index). Resuming restarts the stream at the position stored in the checkpoint, so a resumed run sees
the very batches the uninterrupted run would have seen, and no sampler state is lost by ``kill -9``.
Under DDP each rank takes its own slice of every global batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from diffuseg.config import Config
from diffuseg.errors import UserError
from diffuseg.training.module import step_seed


class StreamItems(Dataset):
    """The training dataset keyed by ``(index, epoch)``: the item with that epoch's augmentation, crop and
    annotator draws (``data.dataset``: seeded from (seed, epoch, index)). Returns ``image`` and ``mask``."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        index, epoch = key
        self.dataset.set_epoch(epoch)  # each worker holds its own copy of the dataset
        item = self.dataset[index]
        return {"image": item["image"], "mask": item["mask"]}


class StreamBatchSampler(Sampler):
    """Batches of ``(index, epoch)`` from an endless stream of seeded permutations of ``n`` items.

    Yields the batches of steps ``start_step .. total_steps - 1``; ``__len__`` is ``total_steps`` so the
    length of the epoch does not change when a run is resumed. Rank and world size are read when iteration
    starts (after DDP has set up), and each rank takes its ``batch_size`` slice of the global batch.

    Args:
        n: training items.
        batch_size: items per rank and step.
        seed: ``train.seed``; epoch e of the stream is the permutation seeded from (seed, e).
        total_steps: the run's ``train.steps``.
        start_step: the first step to yield (the checkpoint's on resume, else 0).
        start_position: items of the stream all ranks consumed before ``start_step``.
    """

    def __init__(self, n: int, batch_size: int, seed: int, total_steps: int, start_step: int, start_position: int):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.total_steps, self.start_step, self.start_position = total_steps, start_step, start_position

    def __len__(self) -> int:
        return self.total_steps

    def _epoch(self, epoch: int) -> list[int]:
        gen = torch.Generator().manual_seed(step_seed(self.seed, 0xDA7A, epoch))
        return torch.randperm(self.n, generator=gen).tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        dist = torch.distributed
        rank, world = (
            (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)
        )
        position = self.start_position
        cached_epoch, order = -1, []
        for _ in range(self.start_step, self.total_steps):
            batch = []
            for p in range(position + rank * self.batch_size, position + (rank + 1) * self.batch_size):
                epoch = p // self.n
                if epoch != cached_epoch:
                    cached_epoch, order = epoch, self._epoch(epoch)
                batch.append((order[p % self.n], epoch))
            position += self.batch_size * world
            yield batch


def stream_loader(config: Config, train_set: Any, start_step: int, position: int) -> DataLoader:
    """The run's training batches from ``start_step`` on, the stream at ``position`` (``StreamBatchSampler``),
    read by ``data.num_workers`` worker processes."""
    t = config.train
    sampler = StreamBatchSampler(len(train_set), t.batch_size, t.seed, t.steps, start_step, position)
    return DataLoader(
        StreamItems(train_set),
        batch_sampler=sampler,
        num_workers=config.data.num_workers,
        persistent_workers=config.data.num_workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def build_datasets(config: Config, run_dir: Path) -> tuple[Any, Any]:
    """Split by patient, check every file and cache the data (``data.dataset.build_datasets``): (train, val).

    Prints where the split came from and records it in ``RUN/split.json`` (``data.splits``)."""
    from diffuseg.data.dataset import build_datasets as build
    from diffuseg.data.splits import split_record, write_split

    d = config.data
    workers = max(1, d.num_workers)
    train_set, val_set = build(d, cache_dir=run_dir / "cache", seed=config.train.seed, workers=workers)
    split, source = train_set.split, train_set.split.source
    print(f"data {d.root}: {len(train_set)} training and {len(val_set)} validation item(s), split by patient")
    t = config.train
    if not len(val_set) and t.val_every > 0 and t.val_cases > 0:
        why = f"none of the patients in {source.val_list} is in the data" if source.val_list else "too few patients"
        raise UserError(
            f"data {d.root}: no validation patients ({why}); train without validation with train.val_every=0, "
            "or choose them with data.val_patients=FILE or data.val_fraction"
        )
    path = write_split(run_dir, split_record(split, d.root, train_set, val_set))
    patients = f"{len(set(train_set.patients))} training and {len(set(val_set.patients))} validation patient(s)"
    print(f"split: {split.describe()}: {patients}, recorded in {path}")
    return train_set, val_set
