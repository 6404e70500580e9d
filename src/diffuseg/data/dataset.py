"""The torch ``Dataset`` for training and validation, and ``build_datasets(config.data)``.

Each item is a dict:
- ``image`` (in_channels,S,S) float32, intensities in [0, 1] per channel (see ``formats.files.normalize_intensity``;
  ``data.ct_window`` or ``data.normalize: ct``: ``formats.files.fixed_intensity``), resized as ``data.resize`` says
  (``spacing``: to ``data.spacing``, or to the finest spacing that fits every case when that is empty),
- ``masks`` (A,S,S) float32 atom maps: every annotator's mask (A fixed within a dataset; missing ones are 0);
  binary {0,1}, else 0..L (``labels``: the model turns them into ``scheme.one_hot(mask[:, 0])``),
- ``mask`` (1,S,S) float32 atoms: the mask of annotator ``annotator``, drawn at random per item and per
  step for training (the ambiguity paper's training on a random annotator); for validation drawn once per
  item from (seed, index), so it never changes,
- ``annotator`` int, ``index`` int, ``case_id`` str, ``patient_id`` str.
Augmentation (training only) and the random crop use a generator seeded from (seed, epoch, index): the
training loop (``training.run``) passes the epoch with every index (its sampler yields ``(index, epoch)``
and ``set_epoch`` is called in the worker before each item), so workers may persist; results do not depend
on the number of workers.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from diffuseg.config import DataConfig
from diffuseg.data.cache import CachedArrays, load_cached
from diffuseg.data.formats import Reader, open_dataset
from diffuseg.data.intensity import ct_statistics
from diffuseg.data.spacing import check_fits, fitting_spacing
from diffuseg.data.splits import Split, plan_split
from diffuseg.data.transforms import Augment, Fit, random_crop, single_thread
from diffuseg.data.verify import first_channels
from diffuseg.enums import Normalize, Resize
from diffuseg.errors import DatasetError, UserError
from diffuseg.labels import LabelScheme, label_scheme


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator seeded from (seed, epoch, index), independent of worker and batch layout."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & ((1 << 63) - 1))


class SegmentationDataset(Dataset):
    """Items of ``arrays`` at ``indices`` (see module doc for the item dict). ``scheme`` is the label scheme the
    atom maps follow (the reader's: ``data.classes``, or classes the dataset declares; binary by default)."""

    def __init__(
        self,
        arrays: CachedArrays,
        indices: Sequence[int],
        *,
        annotators: int,
        train: bool,
        augment: Augment | None = None,
        random_crop: bool = False,
        seed: int = 0,
        scheme: LabelScheme | None = None,
        split: Split | None = None,
        ct_stats: tuple[float, ...] = (),
        spacing: tuple[float, ...] = (),
    ):
        self.arrays = arrays
        self.split = split  # the split the items come from (``splits.plan_split``), for split.json
        self.ct_stats = ct_stats  # ``data.normalize: ct``'s (low, high, mean, std), for the run's config
        self.spacing = spacing  # ``data.resize: spacing``'s target (rows, columns) mm, for the run's config
        self.scheme = scheme if scheme is not None else label_scheme()
        self.indices = list(indices)
        self.annotators = annotators
        self.train = train
        self.augment = augment if train else None
        self.random_crop = random_crop
        self.seed = seed
        self.epoch = 0

    @property
    def in_channels(self) -> int:
        """The image channels of the items (``data.in_channels``, or the data's own when that is 0)."""
        return int(self.arrays.images.shape[1])

    def __len__(self) -> int:
        return len(self.indices)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def case_ids(self) -> list[str]:
        return [self.arrays.case_ids[i] for i in self.indices]

    @property
    def patients(self) -> list[str]:
        return [self.arrays.patients[i] for i in self.indices]

    def __getitem__(self, index: int) -> dict:
        with single_thread():  # small per-item tensors: torch's thread pool only slows them down
            return self._item(index)

    def _item(self, index: int) -> dict:
        j = self.indices[index]
        image, masks = self.arrays.item(j)
        g = item_generator(self.seed, self.epoch + 1 if self.train else 0, index)  # validation: fixed draws
        if self.random_crop:
            # validation crops are fixed per item; training crops change every epoch
            image, masks = random_crop(image, masks, g)
        if self.augment is not None:
            image, masks = self.augment(image, masks, g)
        count = max(1, masks.shape[0])
        annotator = int(torch.randint(0, count, (), generator=g))
        full = torch.zeros((self.annotators, *image.shape[-2:]), dtype=torch.float32)
        full[: masks.shape[0]] = masks[: self.annotators].float()
        return {
            "image": image.float(),
            "masks": full,
            "mask": full[annotator : annotator + 1].clone(),
            "annotator": annotator,
            "index": index,
            "case_id": self.arrays.case_ids[j],
            "patient_id": self.arrays.patients[j],
        }


def build_datasets(
    cfg: DataConfig,
    cache_dir: str | os.PathLike | None = None,
    seed: int = 0,
    workers: int = 1,
) -> tuple[SegmentationDataset, SegmentationDataset]:
    """Open ``cfg.root``, split by patient (``splits.plan_split``), decode (or read the cache) and return (train, val).

    Only labelled items are used; ``cfg.in_channels`` 0 takes the channels of the first case (the datasets'
    ``in_channels`` says what was used). ``cfg.cache_dir`` wins over ``cache_dir``; with neither, the decoded
    arrays stay in memory. ``cfg.max_cases`` caps the training items (validation gets its share by
    ``val_fraction``, at least one). Every ``verify`` check runs while decoding: a problem raises
    ``DatasetError`` listing them all. ``seed`` seeds augmentation and annotator draws.
    """
    if not cfg.root:
        raise UserError("data.root is empty: give the dataset folder (--data DIR)")
    reader = open_dataset(cfg.root, cfg.layout, cfg.foreground, cfg.classes)
    if not reader.entries and reader.problems:  # every case left out for a problem: those are the news
        raise DatasetError(str(cfg.root), reader.problems)
    if not reader.entries:
        hint = f"; data.layout={cfg.layout} (a preset's choice): try data.layout=auto" if cfg.layout != "auto" else ""
        raise UserError(f"{cfg.root}: no cases found in the {reader.layout} layout{hint}")
    try:
        split = plan_split(reader, cfg)
    except UserError as err:
        if reader.problems:  # a case left out for a problem may be what the split misses: say both
            raise DatasetError(str(cfg.root), [*reader.problems, str(err)]) from None
        raise
    train, val = split.train, split.val
    labelled = {i for i, e in enumerate(reader.entries) if e.masks}
    train, val = [i for i in train if i in labelled], [i for i in val if i in labelled]
    if cfg.max_cases:
        n_val = max(1, round(cfg.max_cases * max(cfg.val_fraction, 0.1))) if val else 0
        train, val = _spread(train, cfg.max_cases), _spread(val, n_val)
    if not train:
        raise UserError(f"{cfg.root}: no labelled cases for training")
    annotators = cfg.annotators or reader.annotators
    ct_stats = tuple(cfg.ct_stats)
    if cfg.normalize == Normalize.CT and not ct_stats:  # from the training cases only, recorded by the run
        ct_stats = ct_statistics(reader, train)
    reader.set_intensity(ct_stats if cfg.normalize == Normalize.CT else cfg.ct_window)
    cache = cfg.cache_dir or cache_dir
    in_channels = cfg.in_channels or first_channels(reader)  # 0: as the data's first case has them
    fit = _fit(cfg, reader, train + val)
    arrays = load_cached(reader, train + val, cfg.image_size, annotators, cache, workers, in_channels, fit)
    n = len(train)
    if not any(arrays.masks[i].any() for i in range(n)):  # stops at the first item with foreground
        print(
            f"warning: {cfg.root}: every training mask is empty ({n} cases): the model can only learn to predict "
            "empty masks; check data.foreground (label values counted as foreground) and the mask files",
            file=sys.stderr,
        )
    common = {
        "annotators": annotators,
        "random_crop": cfg.random_crop,
        "seed": seed,
        "scheme": reader.scheme,
        "split": split,
        "ct_stats": ct_stats,
        "spacing": fit.spacing,
    }
    train_set = SegmentationDataset(arrays, range(n), train=True, augment=Augment() if cfg.augment else None, **common)
    val_set = SegmentationDataset(arrays, range(n, n + len(val)), train=False, **common)
    return train_set, val_set


def _fit(cfg: DataConfig, reader: Reader, indices: list[int]) -> Fit:
    """``data.resize`` with its target spacing: ``data.spacing``, else the finest that fits every case the run reads
    (``spacing.fitting_spacing``; geometry alone, no label is looked at); ``UserError`` naming a case without a
    spacing or too large for it, before anything is decoded."""
    if cfg.resize != Resize.SPACING:
        return Fit(cfg.resize)
    target = tuple(cfg.spacing) or fitting_spacing(reader, indices, cfg.image_size)
    check_fits(reader, indices, cfg.image_size, target)
    return Fit(cfg.resize, target)


def _spread(indices: list[int], n: int) -> list[int]:
    """``n`` items spread evenly over ``indices`` (so a capped validation set covers many patients)."""
    if n >= len(indices):
        return indices
    step = len(indices) / n
    return [indices[int(k * step)] for k in range(n)]
