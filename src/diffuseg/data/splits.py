"""Splits by patient: from a seed or from lists of patient ids. No patient is ever on both sides."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from diffuseg.errors import UserError


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
    """One patient id per line; blank lines and ``#`` comments ignored."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: patient list not found")
    lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln]


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
