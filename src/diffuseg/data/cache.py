"""Decode a dataset once, at the model size, into memory-mapped arrays; later epochs and runs read those.

``cache_dir/<key>/`` holds ``images.npy`` (N,in_channels,S,S) float16 (``data.in_channels``, converted as
``transforms.match_channels`` says), ``masks.npy`` (N,A,S,ceil(S/8)) uint8 (bits packed along the last axis)
for binary atom maps, or (N,A,S,S) uint8 atom maps (``labels``) when the reader's scheme has L >= 2 atoms,
``counts.npy`` (N,) annotators per item, and ``meta.json`` (case and patient ids). ``key`` hashes the reader's
layout, foreground labels, size, annotator and channel count (and its label scheme when it is not binary, so a
binary key does not depend on the scheme's form; ``data.resize``, ``data.spacing`` and ``Reader.intensity`` when
not the defaults),
and every source file's path, size and modification time, so any change to the data or the settings builds a
new cache.
The folder is written under a temporary name and renamed, so a cache is never half-written. Building
decodes with ``workers`` processes and runs every ``verify`` check: any problem raises ``DatasetError``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffuseg.data.formats import Reader
from diffuseg.data.formats.dicom import input_stat
from diffuseg.data.transforms import STRETCH_FIT, Fit, resize_pair, single_thread
from diffuseg.data.verify import checked_case
from diffuseg.enums import Resize
from diffuseg.errors import DatasetError, UserError
from diffuseg.files import disk_full, no_space, readable_mode, temp_prefix

CACHE_VERSION = 2  # the stored arrays' version: masks resized by ``transforms.resize_pair``'s thresholded resize


@dataclass
class CachedArrays:
    """Preprocessed items; ``images`` and ``masks`` may be memory maps (read lazily)."""

    images: np.ndarray  # (N,in_channels,S,S) float16
    masks: np.ndarray  # (N,A,S,ceil(S/8)) uint8, packed bits; (N,A,S,S) uint8 atom maps when atoms >= 2
    counts: np.ndarray  # (N,) int: annotators of each item (masks beyond it are zero)
    case_ids: list[str]
    patients: list[str]
    size: int
    folder: Path | None = None  # the cache folder, when the arrays are memory maps of it
    atoms: int = 1  # the scheme's stored atoms (L, or L + 1 with an ignore label); 1 = binary, bits packed

    def __getstate__(self) -> dict:
        """Pickle memory maps by their folder (DataLoader workers started by spawn re-open them)."""
        state = dict(self.__dict__)
        if self.folder is not None:
            state["images"] = state["masks"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self.folder is not None:
            self.images = np.load(self.folder / "images.npy", mmap_mode="r")
            self.masks = np.load(self.folder / "masks.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self.case_ids)

    def item(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """image (in_channels,S,S) float32, masks (counts[i],S,S) uint8 atom maps of item ``i``."""
        image = torch.from_numpy(np.asarray(self.images[i], dtype=np.float32))
        if self.atoms >= 2:
            return image, torch.from_numpy(np.array(self.masks[i][: int(self.counts[i])], dtype=np.uint8))
        bits = np.unpackbits(np.asarray(self.masks[i]), axis=-1, count=self.size)[: int(self.counts[i])]
        return image, torch.from_numpy(np.ascontiguousarray(bits))


def cache_key(
    reader: Reader,
    indices: Sequence[int],
    size: int,
    annotators: int,
    in_channels: int = 1,
    fit: Fit = STRETCH_FIT,
) -> str:
    """Hex digest of the settings and every source file's (path, size, mtime).

    Args:
        reader: the dataset (its layout, foreground values, label scheme and entries).
        indices: the entries cached.
        size: S, the model size.
        annotators: A, the masks kept per item.
        in_channels: the image channels after ``transforms.match_channels``.
        fit: ``data.resize`` and ``data.spacing``.
    """
    h = hashlib.sha256()
    settings = [CACHE_VERSION, reader.layout, list(reader.foreground), size, annotators, in_channels]
    if not reader.scheme.binary or reader.scheme.ignore is not None:
        settings.append(reader.scheme.to_dict())
    if fit.mode != Resize.STRETCH:  # stretch and no window: the keys caches had before these settings existed
        settings.append(str(fit.mode))
    if fit.spacing:
        settings.append(list(fit.spacing))
    if reader.intensity:
        settings.append(list(reader.intensity))
    h.update(json.dumps(settings).encode())
    seen: set[str] = set()
    for i in indices:
        e = reader.entries[i]
        h.update(f"{e.case_id}|{e.slice_index}\n".encode())
        for p in (*e.images, *(m for files in e.masks for m in files)):
            s = str(p)
            if s in seen:
                continue
            seen.add(s)
            nbytes, mtime_ns, _ = input_stat(p)  # a DICOM series folder: its files'
            h.update(f"{s}|{nbytes}|{mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _decode_chunk(reader: Reader, indices: Sequence[int], size: int, annotators: int, in_channels: int, fit: Fit):
    with single_thread():
        return _decode(reader, indices, size, annotators, in_channels, fit)


def _decode(
    reader: Reader,
    indices: Sequence[int],
    size: int,
    annotators: int,
    in_channels: int,
    fit: Fit,
    progress: Callable[[int], object] | None = None,
):
    """Decode and resize ``indices`` (``decode_all``); ``progress(1)`` after each entry."""
    n = len(indices)
    atoms = reader.scheme.stored_atoms  # the ignore label stored as atom L + 1
    images = np.zeros((n, in_channels, size, size), dtype=np.float16)
    masks = np.zeros((n, annotators, size, size if atoms >= 2 else (size + 7) // 8), dtype=np.uint8)
    counts = np.zeros(n, dtype=np.int16)
    problems: list[str] = []
    for j, i in enumerate(indices):
        case, found = checked_case(reader, i, in_channels)  # verify's checks, channels made in_channels
        problems.extend(found)
        if progress is not None:
            progress(1)
        if case is None:
            continue
        try:
            image, mask = resize_pair(case.image, case.masks[:annotators], size, atoms, fit, case.geometry)
        except UserError as err:  # data.resize=spacing: no spacing, or too large to fit
            problems.append(str(err))
            continue
        images[j] = image.numpy()
        counts[j] = mask.shape[0]
        masks[j, : mask.shape[0]] = mask.numpy() if atoms >= 2 else np.packbits(mask.numpy().astype(bool), axis=-1)
    return images, masks, counts, problems


def decode_all(
    reader: Reader,
    indices: Sequence[int],
    size: int,
    annotators: int,
    workers: int = 1,
    chunk: int = 32,
    in_channels: int = 1,
    fit: Fit = STRETCH_FIT,
):
    """Decode and resize ``indices``; (images (N,in_channels,S,S), masks, counts (N,)) as ``CachedArrays``
    stores them, or ``DatasetError`` with every problem.

    Args:
        reader: the dataset.
        indices: the entries to decode.
        size: S, the model size.
        annotators: A, the masks kept per item.
        workers: decoding processes (1: this process).
        chunk: entries per task of a worker.
        in_channels: the image channels after ``transforms.match_channels``.
        fit: ``data.resize`` and ``data.spacing`` (``transforms.resize_pair``).
    """
    from tqdm import tqdm

    indices = list(indices)
    chunks = [indices[k : k + chunk] for k in range(0, len(indices), chunk)] or [[]]
    bar = tqdm(total=len(indices), desc="decode and cache", unit="item", leave=False, disable=None)  # a terminal
    if workers > 1 and len(chunks) > 1:
        subsets = [reader.subset(c) for c in chunks]  # each worker gets only its own entries
        local = [list(range(len(c))) for c in chunks]
        with ProcessPoolExecutor(workers) as pool:
            k = len(chunks)
            parts = []
            same = ([size] * k, [annotators] * k, [in_channels] * k, [fit] * k)
            for part in pool.map(_decode_chunk, subsets, local, *same):
                parts.append(part)
                bar.update(len(part[2]))
    else:
        with single_thread():
            parts = [_decode(reader, indices, size, annotators, in_channels, fit, bar.update)]
    bar.close()
    problems = list(dict.fromkeys([*reader.problems, *(p for part in parts for p in part[3])]))
    if problems:
        raise DatasetError(str(reader.root), problems)
    images = np.concatenate([p[0] for p in parts])
    return images, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])


def load_cached(
    reader: Reader,
    indices: Sequence[int],
    size: int,
    annotators: int,
    cache_dir: str | os.PathLike | None,
    workers: int = 1,
    in_channels: int = 1,
    fit: Fit = STRETCH_FIT,
) -> CachedArrays:
    """The cached arrays for ``indices`` of ``reader`` at ``size`` with ``in_channels`` channels, built on first use.

    Args:
        reader: the dataset.
        indices: the entries cached.
        size: S, the model size.
        annotators: A, the masks kept per item.
        cache_dir: the cache root; ``None`` keeps the arrays in memory only (no files written).
        workers: decoding processes when the cache is built.
        in_channels: the image channels after ``transforms.match_channels``.
        fit: ``data.resize`` and ``data.spacing`` (``transforms.resize_pair``).
    """
    case_ids = [reader.entries[i].case_id for i in indices]
    patients = [reader.entries[i].patient_id for i in indices]
    decoding = {"in_channels": in_channels, "fit": fit}
    if cache_dir is None:
        images, masks, counts = decode_all(reader, indices, size, annotators, workers, **decoding)
        return CachedArrays(images, masks, counts, case_ids, patients, size, atoms=reader.scheme.stored_atoms)
    folder = Path(cache_dir) / cache_key(reader, indices, size, annotators, in_channels, fit)
    if not (folder / "meta.json").is_file():
        images, masks, counts = decode_all(reader, indices, size, annotators, workers, **decoding)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=temp_prefix(folder.name)))
        readable_mode(tmp, folder=True)
        try:
            np.save(tmp / "images.npy", images)
            np.save(tmp / "masks.npy", masks)
            np.save(tmp / "counts.npy", counts)
            meta = {"version": CACHE_VERSION, "root": str(reader.root), "case_ids": case_ids, "patients": patients}
            (tmp / "meta.json").write_text(json.dumps(meta))
            os.replace(tmp, folder)
        except OSError as err:
            if no_space(err):
                raise disk_full(folder) from None
            if not (folder / "meta.json").is_file():  # another process won the race: keep its copy
                raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return CachedArrays(
        np.load(folder / "images.npy", mmap_mode="r"),
        np.load(folder / "masks.npy", mmap_mode="r"),
        np.load(folder / "counts.npy"),
        case_ids,
        patients,
        size,
        folder,
        reader.scheme.stored_atoms,
    )
