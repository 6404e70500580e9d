"""``diffuseg verify``: read every file of a dataset, collect every problem, then fail once with the list.

Checks: unreadable or corrupt files, images without masks and masks without images, masks of another size
than their image, masks that are not binary or hold unknown labels, NaN or infinite intensities, an empty
dataset, annotator folders of unequal length, NIfTI image/label geometry (shape, affine) that differs.
Training runs the same checks while it builds its cache (``data.cache``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence

from diffuseg.data.formats import Reader, open_dataset
from diffuseg.errors import DatasetError


def collect_problems(reader: Reader, progress: Callable[[int], None] | None = None) -> list[str]:
    """Decode every entry of ``reader``; every problem once, in the order met (scan problems first)."""
    problems = dict.fromkeys(reader.problems)
    for i in range(len(reader)):
        _, found = reader.check(i)
        problems.update(dict.fromkeys(found))
        if progress is not None:
            progress(i)
    if not reader.entries and not problems:
        problems[f"{reader.root}: empty dataset (no usable image/mask pairs found)"] = None
    return list(problems)


def verify_dataset(root: str | os.PathLike, layout: str = "auto", foreground: Sequence[int] = ()) -> str:
    """Check the whole dataset at ``root``; return a summary, or raise ``DatasetError`` listing every problem."""
    reader = open_dataset(root, layout, foreground)
    problems = collect_problems(reader)
    if problems:
        raise DatasetError(str(root), problems)
    return summarize(reader)


def summarize(reader: Reader) -> str:
    """A few lines: layout, cases, patients, annotators, channels and sizes (from the entries' first case)."""
    patients = len(set(reader.patients))
    annotators = Counter(len(e.masks) for e in reader.entries)
    first = reader[0]
    volumes = len({e.volume_id for e in reader.entries if e.volume_id is not None})
    lines = [
        f"dataset {reader.root}: OK",
        f"  layout: {reader.layout}",
        f"  cases: {len(reader)} 2D item(s) from {patients} patient(s)"
        + (f", {volumes} volume(s) sliced" if volumes else ""),
        "  annotators per case: " + ", ".join(f"{k} ({n} cases)" for k, n in sorted(annotators.items())),
        f"  channels: {first.image.shape[0]}; first case size {first.geometry.size[0]}x{first.geometry.size[1]}"
        f" ({first.geometry.format})",
    ]
    return "\n".join(lines)
