"""``diffuseg verify``: read every file of a dataset, collect every problem, then fail once with the list.

Checks: unreadable or corrupt files, images without masks and masks without images, masks of another size
than their image, masks that are not binary or hold unknown labels (with classes, from ``data.classes`` or the dataset's
``dataset.json``: every file holding a label value no class declares), NaN or infinite intensities, an empty
dataset, annotator folders of unequal length, NIfTI image/label geometry (shape, affine) that differs, and
images whose channel count cannot be turned into ``data.in_channels`` (``transforms.match_channels``).
``checked_case`` is the one per-case check: training's cache (``data.cache``) decodes through it too, so a
dataset that verify accepts is one that training accepts, but for ``data.resize=spacing``, whose refusals (no
spacing, too large for the network) come from the run's settings at training. The summary gives the in-plane
pixel spacings where the files record them (``spacing.spacing_line``) and ends with the split training would use
(``splits.plan_split``): its source, the patient rule, and the patients and cases of each side.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Callable, Sequence

from diffuseg.config import DataConfig
from diffuseg.data.case import Case, Geometry
from diffuseg.data.formats import Reader, open_dataset
from diffuseg.data.formats.files import RASTER_SUFFIXES
from diffuseg.data.spacing import spacing_line
from diffuseg.data.splits import Split, case_names, plan_split
from diffuseg.data.transforms import match_channels
from diffuseg.errors import DatasetError
from diffuseg.labels import ClassSpec

DEFAULT_CHANNELS = DataConfig().in_channels  # what training uses when data.in_channels is not set


def is_colour(geometry: Geometry) -> bool:
    """Whether a case's channels are the colours of one raster picture (RGB PNG/JPG/...), not modalities."""
    return len(geometry.sources) <= 1 and geometry.format in RASTER_SUFFIXES


def checked_case(reader: Reader, index: int, in_channels: int) -> tuple[Case | None, list[str]]:
    """Decode entry ``index`` with every check, its image turned into (in_channels,H,W)."""
    case, problems = reader.check(index)
    if case is None:
        return None, problems
    where = case.geometry.sources[0] if case.geometry.sources else case.case_id
    try:
        image = match_channels(case.image, in_channels, where, is_colour(case.geometry))
    except ValueError as err:
        return None, [str(err)]
    return dataclasses.replace(case, image=image, extra={**case.extra, "stored_channels": case.image.shape[0]}), []


def collect_problems(
    reader: Reader,
    progress: Callable[[int], None] | None = None,
    in_channels: int = DEFAULT_CHANNELS,
    seen: Callable[[Case], None] | None = None,
) -> list[str]:
    """Decode every entry of ``reader``; every problem once, in the order met (scan problems first).
    ``seen`` is called with every case that passes (for a summary)."""
    problems = dict.fromkeys(reader.problems)
    for i in range(len(reader)):
        case, found = checked_case(reader, i, in_channels)
        problems.update(dict.fromkeys(found))
        if case is not None and seen is not None:
            seen(case)
        if progress is not None:
            progress(i)
    if not reader.entries and not problems:
        problems[f"{reader.root}: empty dataset (no usable image/mask pairs found)"] = None
    return list(problems)


def verify_dataset(
    root: str | os.PathLike,
    layout: str = "auto",
    foreground: Sequence[int] = (),
    in_channels: int | None = None,
    classes: Sequence[ClassSpec] = (),
    fold: int | None = None,
) -> str:
    """Check the whole dataset at ``root`` as training reads it; return a summary, or raise ``DatasetError``
    listing every problem.

    Args:
        root: the dataset folder.
        layout: ``data.layout`` (``auto``: detected).
        foreground: ``data.foreground``, the label values of a binary mask (``()``: any non-zero).
        in_channels: ``data.in_channels`` (``None``: the first case's channel count).
        classes: ``data.classes`` (``()``: binary, unless the dataset declares classes).
        fold: ``data.fold`` (``--fold``), the fold whose split is reported (``None``: the split without folds).
    """
    from tqdm import tqdm

    reader = open_dataset(root, layout, foreground, classes)
    channels = first_channels(reader) if in_channels is None else in_channels
    stats = _Stats()
    with tqdm(total=len(reader), desc="verify", unit="item", leave=False, disable=None) as bar:  # on a terminal
        problems = collect_problems(reader, progress=lambda _: bar.update(), in_channels=channels, seen=stats.add)
    if problems:
        raise DatasetError(str(root), problems)
    summary = summarize(reader, channels, stats)
    if not reader.annotators:  # unlabelled: nothing to split for training
        return summary
    split = plan_split(reader, DataConfig(root=str(root), layout=layout, fold=fold))
    return "\n".join([summary, *split_lines(reader, split)])


def split_lines(reader: Reader, split: Split) -> list[str]:
    """The summary's lines on the split: source, patient rule, and patients, cases and 2D items per side."""
    names = case_names(reader)

    def side(indices: list[int]) -> str:
        patients = len({reader.entries[i].patient_id for i in indices})
        return f"{patients} patient(s), {len({names[i] for i in indices})} case(s), {len(indices)} item(s)"

    return [
        f"  split: {split.describe()}",
        f"    patient id: {split.patient_rule}",
        f"    train: {side(split.train)}; val: {side(split.val)}",
    ]


def first_channels(reader: Reader) -> int:
    """The stored channel count of the first case that decodes (``DEFAULT_CHANNELS`` when none does)."""
    for i in range(len(reader)):
        case, _ = reader.check(i)
        if case is not None:
            return int(case.image.shape[0])
    return DEFAULT_CHANNELS


@dataclasses.dataclass
class _Stats:
    """What the summary reports beyond the entries: stored channel counts, empty masks, classes."""

    stored: Counter = dataclasses.field(default_factory=Counter)
    empty: int = 0
    labelled: int = 0
    classes: Counter = dataclasses.field(default_factory=Counter)
    planes: dict = dataclasses.field(default_factory=dict)  # volume or case id -> (in-plane (H,W), spacing mm)

    def add(self, case: Case) -> None:
        self.stored[case.extra.get("stored_channels", case.image.shape[0])] += 1
        if case.annotators:
            self.labelled += 1
            self.empty += int(not bool(case.masks.any()))
        if case.geometry.category:
            self.classes[case.geometry.category] += 1
        pixel = case.geometry.plane_spacing()
        if pixel:
            self.planes.setdefault(case.geometry.volume_id or case.case_id, (case.geometry.size, pixel))


def summarize(reader: Reader, in_channels: int = DEFAULT_CHANNELS, stats: _Stats | None = None) -> str:
    """A few lines: layout, cases, patients, annotators, classes, channels, empty masks and the first size."""
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
    ]
    if not reader.scheme.binary:
        kind = "exclusive" if reader.scheme.exclusive else "overlapping regions"
        listing = ", ".join(f"{c.name} {list(c.values)}" for c in reader.scheme.classes)
        lines.append(f"  label classes ({kind}, from {reader.classes_source}): {listing}")
    if stats is not None and stats.classes:
        lines.append("  classes: " + ", ".join(f"{k} ({n} cases)" for k, n in sorted(stats.classes.items())))
    stored = ""
    if stats is not None and set(stats.stored) - {in_channels}:
        stored = "; as stored: " + ", ".join(f"{c} ({n} cases)" for c, n in sorted(stats.stored.items()))
    lines.append(
        f"  channels: {in_channels} (checked as data.in_channels={in_channels}){stored}; first case size "
        f"{first.geometry.size[0]}x"
        f"{first.geometry.size[1]} ({first.geometry.format})"
    )
    if stats is not None and stats.labelled:
        lines.append(f"  cases whose mask is empty: {stats.empty} of {stats.labelled}")
    if stats is not None and stats.planes:  # what data.resize=spacing works with (docs/data.md)
        lines.append(spacing_line(list(stats.planes.values())))
    return "\n".join(lines)
