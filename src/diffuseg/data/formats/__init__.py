"""Readers, one per on-disk layout, and ``open_dataset`` which detects the layout.

Layouts: ``lidc`` (LIDC-IDRI-slices, 4 annotators), ``brats`` (MedSegDiff's BraTS folders, NIfTI),
``nnunet`` (nnU-Net raw, several annotators as an extension; also an images folder alone, ``imagesTs``, of
files ``CASE_XXXX``), ``multi`` (one mask folder or suffix per
annotator), ``paired`` (images and masks by stem, incl. DDTI and NIfTI volumes; alias ``nifti``) and
``classes`` (one folder per class of images with suffixed masks, e.g. BUSI; lesion masks joined), ``ssl4mis``
(HDF5 files with ``image`` and ``label``, 2D slices and 3D volumes, e.g. ACDC), ``images`` (unlabelled
images, for prediction; DICOM series folders among them, ``dicom``; a series folder given alone is one case) and
``labels`` (a folder of label files alone, the ground truth ``evaluate`` takes:
``open_ground_truth``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from diffuseg.data.formats.base import Entry, Reader
from diffuseg.data.formats.brats import BraTSReader
from diffuseg.data.formats.classes import ClassFoldersReader
from diffuseg.data.formats.dicom import is_series_folder
from diffuseg.data.formats.files import HDF5_SUFFIXES, IMAGE_SUFFIXES, check_regular, is_image_file, suffix_of
from diffuseg.data.formats.labelmaps import LabelsReader
from diffuseg.data.formats.lidc import LIDCReader
from diffuseg.data.formats.multi import MultiAnnotatorReader
from diffuseg.data.formats.nnunet import NnUNetImagesReader, NnUNetReader, channel_cases
from diffuseg.data.formats.paired import IMAGE_DIRS, MASK_DIRS, ImagesReader, PairedReader, find_dir
from diffuseg.data.formats.ssl4mis import SSL4MISReader
from diffuseg.enums import Layout
from diffuseg.errors import UserError
from diffuseg.labels import ClassSpec

__all__ = ["Entry", "Layout", "Reader", "images_from_files", "open_dataset", "open_ground_truth", "open_input"]


READERS: dict[Layout, type[Reader]] = {
    Layout.NNUNET: NnUNetReader,
    Layout.LIDC: LIDCReader,
    Layout.BRATS: BraTSReader,
    Layout.MULTI: MultiAnnotatorReader,
    Layout.CLASSES: ClassFoldersReader,
    Layout.SSL4MIS: SSL4MISReader,
    Layout.PAIRED: PairedReader,
    Layout.NIFTI: PairedReader,
    Layout.IMAGES: ImagesReader,
    Layout.LABELS: LabelsReader,
}
# ``multi`` is a more specific ``paired`` (several mask folders or numbered suffixes): when both match, multi wins.
_SPECIFIC = (Layout.NNUNET, Layout.LIDC, Layout.BRATS, Layout.MULTI, Layout.CLASSES, Layout.SSL4MIS)


def detect_layout(root: Path) -> Layout:
    """The one layout ``root`` looks like; ``UserError`` when none or several match."""
    matches = [name for name in _SPECIFIC if READERS[name].detect(root)]
    if Layout.CLASSES in matches:  # a BUSI class folder's numbered masks are lesions, not multi's raters
        matches = [m for m in matches if m is not Layout.MULTI]
    # a class folder's suffixed masks look paired too: paired counts beside classes only by its own two folders
    beside = Layout.CLASSES not in matches or (find_dir(root, IMAGE_DIRS) and find_dir(root, MASK_DIRS))
    if Layout.MULTI not in matches and beside and PairedReader.detect(root):
        matches.append(Layout.PAIRED)
    if len(matches) > 1:
        raise UserError(
            f"{root}: the layout is ambiguous (it looks like {' and '.join(map(str, matches))}); "
            f"name it with --layout (data.layout), one of: {', '.join(m.value for m in Layout if m != Layout.AUTO)}"
        )
    if matches:
        return matches[0]
    if NnUNetImagesReader.detect(root):
        return Layout.NNUNET
    if ImagesReader.detect(root):
        return Layout.IMAGES
    raise UserError(
        f"{root}: no known dataset layout here (no images found); see docs/data.md for the layouts, "
        "or name one with --layout"
    )


def open_dataset(
    root: str | os.PathLike, layout: str = "auto", foreground: Sequence[int] = (), classes: Sequence[ClassSpec] = ()
) -> Reader:
    """Open the dataset at ``root`` (a folder) in ``layout`` (or detect it), its label maps read as ``classes``
    (``data.classes``; ``()`` = binary with ``foreground``, unless the dataset declares classes itself).

    Returns a ``Reader``: ``len()``, ``reader[i] -> Case``, ``reader.check(i) -> (case, problems)``,
    ``reader.entries`` (undecoded), ``reader.problems`` (structural problems found while scanning),
    ``reader.scheme`` (the ``LabelScheme`` its atom maps follow), ``reader.notes`` (choices made for the user,
    printed to stderr here). Raises ``UserError`` for a missing folder, an unknown or ambiguous layout, bad
    classes or classes that contradict the dataset's.
    """
    path = Path(root)
    if not path.exists():
        raise UserError(f"{path}: dataset folder not found")
    if path.is_file() or is_series_folder(path):  # one image file, or one DICOM series
        return images_from_files([path])
    try:
        chosen = Layout.parse(layout)
    except ValueError as err:
        raise UserError(f"layout: {err}") from None
    if chosen == Layout.AUTO:
        chosen = detect_layout(path)
    cls = READERS[chosen]
    if chosen == Layout.NNUNET and not NnUNetReader.detect(path) and NnUNetImagesReader.detect(path):  # imagesTs
        cls = NnUNetImagesReader
    try:
        reader = cls(path, foreground=foreground, classes=classes)
    except OSError as err:
        raise UserError(f"{path}: cannot read the folder ({err})") from None
    reader.layout = str(chosen)
    for note in reader.notes:
        print(f"note: {note}", file=sys.stderr)
    return reader


def open_ground_truth(
    root: str | os.PathLike, layout: str = "auto", foreground: Sequence[int] = (), classes: Sequence[ClassSpec] = ()
) -> Reader:
    """``open_dataset`` for ``evaluate``'s ground truth: a folder that holds image files alone (which
    ``open_dataset`` reads as unlabelled images) is read as the ``labels`` layout, each file a label map (nnU-Net's
    ``labelsTs``, a folder of mask PNGs or NIfTIs)."""
    path = Path(root)
    auto = str(layout).lower() == Layout.AUTO and path.is_dir() and not NnUNetReader.detect(path)
    if auto and detect_layout(path) in (Layout.IMAGES, Layout.NNUNET):  # NNUNET here: an imagesTs-like folder
        layout = Layout.LABELS.value
    return open_dataset(root, layout, foreground, classes)


def images_from_files(paths: Sequence[str | os.PathLike]) -> Reader:
    """Unlabelled cases (A = 0) from a list of image files (PNG, JPG, NIfTI, SSL4MIS HDF5, ...) or DICOM series
    folders, for ``predict`` (volumes sliced as their layouts slice them); files named as nnU-Net names channels
    (``CASE_0000``, ``CASE_0001``, ...; ``nnunet.channel_cases``) are grouped into cases."""
    files = [Path(p) for p in paths]
    for p in files:
        if not p.exists() and not p.is_symlink():
            raise UserError(f"{p}: input file not found")
        check_regular(p)
        if not (is_image_file(p) or suffix_of(p) in HDF5_SUFFIXES or is_series_folder(p)):
            known = ", ".join(f".{s}" for s in (*IMAGE_SUFFIXES, *HDF5_SUFFIXES))
            raise UserError(f"{p}: not an image file this tool reads (known: {known}, DICOM series folders)")
    root = files[0].parent if files else Path(".")
    if channel_cases(files) is not None:
        return NnUNetImagesReader(root, files=files)
    return ImagesReader(root, files=files)


def open_input(
    paths: Sequence[str | os.PathLike],
    layout: str = "auto",
    foreground: Sequence[int] = (),
    classes: Sequence[ClassSpec] = (),
) -> Reader:
    """A dataset folder (one path) or single image files (one or more) as ``predict`` receives them."""
    if len(paths) == 1 and Path(paths[0]).is_dir():
        return open_dataset(paths[0], layout, foreground, classes)
    return images_from_files(paths)
