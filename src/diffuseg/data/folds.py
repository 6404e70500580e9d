"""Folds: a k-fold split of patients from a seed, and nnU-Net's ``splits_final.json`` read and written.

``splits_final.json`` (nnU-Net v2, ``nnUNet_preprocessed/DATASET/``) is a JSON list with one object per fold,
``{"train": [case names], "val": [case names]}``; a case name is what nnU-Net calls a case (``patient024_frame01``
for ``imagesTr/patient024_frame01_0000.nii.gz``), here ``splits.case_name`` of an entry.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from diffuseg.errors import UserError
from diffuseg.files import write_text_atomic

SPLITS_FINAL = "splits_final.json"
Fold = dict[str, list[str]]  # {"train": [case names], "val": [case names]}


def kfold_groups(patients: Sequence[str], folds: int, seed: int) -> list[list[str]]:
    """The sorted patient ids cut into ``folds`` groups (sizes differ by at most one) after a permutation
    seeded by ``seed``; group ``k`` is fold ``k``'s validation side. ``UserError`` for fewer patients than folds."""
    unique = sorted(set(patients))
    if folds < 2 or len(unique) < folds:
        raise UserError(
            f"data.folds={folds}: a k-fold split needs at least 2 folds and as many patients ({len(unique)} here)"
        )
    order = torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed)).tolist()
    shuffled = [unique[i] for i in order]
    groups, start = [], 0
    for k in range(folds):
        size = len(unique) // folds + (k < len(unique) % folds)
        groups.append(sorted(shuffled[start : start + size]))
        start += size
    return groups


def read_splits_final(path: str | os.PathLike) -> list[Fold]:
    """The folds of a ``splits_final.json``; ``UserError`` naming the file when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: splits file not found (data.splits_file)")
    try:
        folds = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(folds, list) or not folds:
        raise UserError(f'{path}: expected a list of folds, [{{"train": [...], "val": [...]}}, ...]')
    out = []
    for k, fold in enumerate(folds):
        sides = fold if isinstance(fold, dict) else {}
        if not all(
            isinstance(sides.get(s), list) and all(isinstance(n, str) for n in sides[s]) for s in ("train", "val")
        ):
            raise UserError(f'{path}: fold {k} is not {{"train": [case names], "val": [case names]}}')
        out.append({"train": list(sides["train"]), "val": list(sides["val"])})
    return out


def write_splits_final(folder: str | os.PathLike, folds: Sequence[Fold]) -> Path:
    """Write ``folder/splits_final.json`` atomically; returns its path."""
    path = Path(folder) / SPLITS_FINAL
    write_text_atomic(path, json.dumps([{"train": f["train"], "val": f["val"]} for f in folds], indent=1) + "\n")
    return path
