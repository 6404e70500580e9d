"""Splits by patient: from a seed or from lists of patient ids. No patient is ever on both sides.

Where the split comes from (``split_source``), first match wins:
1. ``data.train_patients`` and ``data.val_patients`` (both or neither);
2. ``train_patients.txt`` and ``val_patients.txt`` in the dataset root (``data.root``);
3. the same two files in the root's parent folder (e.g. ``--data lidc/LIDC-IDRI-slices`` finds ``lidc/*.txt``);
4. SSL4MIS's ``train.list`` and ``val.list`` in the dataset root (they name cases, ``patient038_frame01``; a
   case's patient, ``patient038``, goes to that side; ``test.list`` cases are on neither side);
5. a seeded split by patient (``data.val_fraction`` of the patients, ``data.split_seed``).
A training run writes what it used to ``RUN/split.json`` (``write_split``): the source and the train and
validation patient and case ids; ``split_cases`` reads it back for ``predict`` and ``evaluate --split``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from diffuseg.config import DataConfig
from diffuseg.enums import SplitKind
from diffuseg.errors import UserError
from diffuseg.files import write_text_atomic

LIST_NAMES = ("train_patients.txt", "val_patients.txt")
DATASET_LIST_NAMES = ("train.list", "val.list")  # SSL4MIS, one case name per line
SPLIT_FILE = "split.json"


@dataclass(frozen=True)
class SplitSource:
    """The rule that chose a split; ``train_list``/``val_list`` are set for the list kinds."""

    kind: SplitKind
    train_list: str = ""
    val_list: str = ""
    val_fraction: float = 0.0
    seed: int = 0

    def describe(self) -> str:
        if self.kind is SplitKind.SEED:
            return f"seeded split by patient (data.val_fraction={self.val_fraction}, data.split_seed={self.seed})"
        where = {
            SplitKind.CONFIG: "data.train_patients / data.val_patients",
            SplitKind.ROOT_LISTS: "found in the dataset folder",
            SplitKind.PARENT_LISTS: "found in the dataset's parent folder",
            SplitKind.DATASET_LISTS: "the dataset's own split, by patient",
        }[self.kind]
        if self.kind is SplitKind.DATASET_LISTS:
            return f"case lists {self.train_list} and {self.val_list} ({where})"
        return f"patient lists {self.train_list} and {self.val_list} ({where})"


def find_patient_lists(root: str | os.PathLike) -> tuple[SplitKind, Path, Path] | None:
    """``train_patients.txt`` and ``val_patients.txt`` in ``root``, else in its parent; None when neither has both."""
    root = Path(root).resolve()
    for kind, folder in ((SplitKind.ROOT_LISTS, root), (SplitKind.PARENT_LISTS, root.parent)):
        found = [folder / name for name in LIST_NAMES]
        if all(p.is_file() for p in found):
            return kind, found[0], found[1]
    return None


def split_source(cfg: DataConfig) -> SplitSource:
    """The split ``cfg`` asks for, by the rule in the module docstring; ``UserError`` for one list alone."""
    if cfg.train_patients or cfg.val_patients:
        if not (cfg.train_patients and cfg.val_patients):
            raise UserError("data.train_patients and data.val_patients must be given together")
        return SplitSource(SplitKind.CONFIG, str(cfg.train_patients), str(cfg.val_patients))
    found = find_patient_lists(cfg.root)
    if found is not None:
        return SplitSource(found[0], str(found[1]), str(found[2]))
    lists = [Path(cfg.root) / name for name in DATASET_LIST_NAMES]
    if all(p.is_file() for p in lists):
        return SplitSource(SplitKind.DATASET_LISTS, str(lists[0]), str(lists[1]))
    return SplitSource(SplitKind.SEED, val_fraction=cfg.val_fraction, seed=cfg.split_seed)


def split_record(source: SplitSource, data_root: str, train: Any, val: Any) -> dict[str, Any]:
    """The content of ``split.json``: ``train``/``val`` are datasets with ``patients`` and ``case_ids``."""

    def side(dataset: Any) -> dict[str, list[str]]:
        return {"patients": sorted(set(dataset.patients)), "cases": list(dataset.case_ids)}

    return {
        "data_root": str(data_root),
        "source": source.kind.value,
        "description": source.describe(),
        "train_list": source.train_list or None,
        "val_list": source.val_list or None,
        "val_fraction": source.val_fraction if source.kind is SplitKind.SEED else None,
        "split_seed": source.seed if source.kind is SplitKind.SEED else None,
        "train": side(train),
        "val": side(val),
    }


def write_split(run_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write ``RUN/split.json`` atomically; returns its path."""
    path = Path(run_dir) / SPLIT_FILE
    write_text_atomic(path, json.dumps(record, indent=1) + "\n")
    return path


def run_folder(run: str | os.PathLike | None, checkpoint: str | os.PathLike | None) -> Path:
    """The run folder: ``run`` when given, else the checkpoint's ``RUN`` in ``RUN/checkpoints/FILE.ckpt``."""
    if run:
        return Path(run)
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.parent.name == "checkpoints":
        return ckpt.parent.parent
    raise UserError(
        f"--split needs the run folder: give --run RUN_DIR (the checkpoint {ckpt} is not in RUN/checkpoints/)"
        if ckpt is not None
        else "--split needs the run folder: give --run RUN_DIR (the folder with split.json)"
    )


def split_cases(
    side: str, run: str | os.PathLike | None = None, checkpoint: str | os.PathLike | None = None
) -> set[str]:
    """Case ids of ``side`` (``train`` or ``val``) in the run's ``split.json``; ``UserError`` when it is missing."""
    if side not in ("train", "val"):
        raise UserError(f"--split {side!r}: expected train or val")
    path = run_folder(run, checkpoint) / SPLIT_FILE
    if not path.is_file():
        raise UserError(f"{path}: no split.json in the run folder (runs trained before it was recorded have none)")
    try:
        record = json.loads(path.read_text())
        cases = record[side]["cases"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a readable split record ({err})") from None
    if not cases:
        raise UserError(f"{path}: the {side} split of this run is empty")
    return set(cases)


def select_cases(reader: Any, cases: Collection[str] | None, where: str) -> Any:
    """``reader`` restricted to entries whose case id is in ``cases`` (all when None); ``UserError`` naming the
    cases it lacks (a few, then their count) when not every one is in it."""
    if cases is None:
        return reader
    keep = [i for i, e in enumerate(reader.entries) if e.case_id in cases]
    if not keep:
        example = next(iter(sorted(cases)))
        raise UserError(f"{where}: none of the {len(cases)} case(s) of the split (e.g. {example}) is in it")
    missing = sorted(set(cases) - {reader.entries[i].case_id for i in keep})
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise UserError(
            f"{where}: {len(missing)} of the {len(cases)} case(s) of the split are not in it ({shown}); "
            "give the whole dataset the run trained on"
        )
    return reader.subset(keep)


def split_by_patient(patients: Sequence[str], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (train, val) of items; ``round(val_fraction * n_patients)`` patients (at least one when the
    fraction is positive and there are two or more patients) go to validation, chosen by a seeded permutation
    of the sorted patient ids."""
    unique = sorted(set(patients))
    n_val = round(val_fraction * len(unique))
    if val_fraction > 0 and len(unique) > 1:
        n_val = min(max(n_val, 1), len(unique) - 1)
    order = torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed)).tolist()
    val_patients = {unique[i] for i in order[:n_val]}
    train = [i for i, p in enumerate(patients) if p not in val_patients]
    val = [i for i, p in enumerate(patients) if p in val_patients]
    return train, val


def read_id_list(path: str | os.PathLike) -> list[str]:
    """One patient id per line; blank lines and ``#`` comments ignored. An SSL4MIS ``.list`` file names cases
    (``patient038_frame01``): their patient ids (``patient038``) are returned."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: patient list not found")
    lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    ids = [ln for ln in lines if ln]
    if path.suffix == ".list":
        from diffuseg.data.formats.ssl4mis import patient_of

        return list(dict.fromkeys(patient_of(name) for name in ids))
    return ids


def split_from_lists(
    patients: Sequence[str], train_file: str | os.PathLike, val_file: str | os.PathLike
) -> tuple[list[int], list[int]]:
    """Indices (train, val) from two id lists; a patient named in both is a ``UserError``.

    Items whose patient is in neither list are left out of both sides.
    """
    train_ids, val_ids = set(read_id_list(train_file)), set(read_id_list(val_file))
    both = sorted(train_ids & val_ids)
    if both:
        raise UserError(f"{train_file} and {val_file} both list patient(s) {', '.join(both[:5])}")
    train = [i for i, p in enumerate(patients) if p in train_ids]
    val = [i for i, p in enumerate(patients) if p in val_ids]
    if not train:
        raise UserError(f"{train_file}: none of its patients is in the dataset")
    return train, val
