"""Paired folders: images and masks matched by file stem (one annotator).

Either two folders (``images/`` + ``masks/``, or DDTI's ``cropped/`` + ``mask/``; names below), or one folder
whose mask files carry a suffix (``case1.png`` + ``case1_mask.png``; suffixes below). Any image format of
``files.IMAGE_SUFFIXES``, and DICOM series folders (``dicom``; a folder's stem is its whole name); volumes are
sliced across their through-plane axis (``orientation``). In the two-folder form, several
masks of one image (one per lesion: ``masks/case1_1.png``, ``masks/case1_2.png``) are joined into one. (In
the one-folder form numbered suffixes, ``case1_mask_1.png``, mean annotators: the ``multi`` layout.)
A folder of images without masks is the ``images`` layout (unlabelled, for ``predict``; a repeated stem gets
a numbered case id, ``unique_ids``). Two images of one stem in a labelled layout (``x.png`` and ``x.bmp``)
are a problem naming both.

Patient ids: the stem's prefix before the first ``_`` when that prefix is a number (DDTI's
``{patient}_{image}(k)``), otherwise the whole stem (each image its own patient).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from diffuseg.data.formats.base import Entry, Reader
from diffuseg.data.formats.dicom import is_series_folder
from diffuseg.data.formats.files import is_image_file, name_of
from diffuseg.data.formats.volumes import expand_volumes

IMAGE_DIRS = ("images", "image", "imgs", "img", "cropped", "inputs", "input", "data")
MASK_DIRS = ("masks", "mask", "labels", "label", "gt", "groundtruth", "ground_truth", "segmentations", "annotations")
MASK_SUFFIXES = ("_mask", "_masks", "_segmentation", "_seg", "_label", "_labels", "_gt", "_annotation")
_PART = re.compile(r"^(.*?)[_-](\d+)$")


def image_files(folder: Path) -> list[Path]:
    """The image files of ``folder`` and its DICOM series folders (``dicom.is_series_folder``), by name."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if is_image_file(p) or is_series_folder(p))


def find_dir(root: Path, names: tuple[str, ...]) -> Path | None:
    for p in sorted(root.iterdir()) if root.is_dir() else []:
        if p.is_dir() and p.name.lower() in names:
            return p
    return None


PATIENT_RULE = "the stem's number before the first _ (DDTI: 12_3 -> 12), else the whole stem"


def patient_of(stem: str) -> str:
    head = stem.split("_", 1)[0]
    return head if "_" in stem and head.isdigit() else stem


def split_suffix(stem: str, suffixes: tuple[str, ...]) -> tuple[str, str] | None:
    """``("case1", "_mask")`` for ``case1_mask`` or ``case1_mask_2``; ``None`` when no suffix matches."""
    low = stem.lower()
    for s in sorted(suffixes, key=len, reverse=True):
        i = low.rfind(s)
        if i > 0 and re.fullmatch(r"([_-]?\d+)?", low[i + len(s) :]):
            return stem[:i], s
    return None


def match_masks(
    image_stems: set[str], mask_files: list[Path], suffix: bool
) -> tuple[dict[str, list[Path]], list[Path]]:
    """Group mask files by the image stem they belong to; returns (stem -> files, orphan masks)."""
    groups: dict[str, list[Path]] = {}
    orphans: list[Path] = []
    for m in mask_files:
        stem = name_of(m)
        base = stem
        if suffix:
            parts = split_suffix(stem, MASK_SUFFIXES)
            if parts is None:
                orphans.append(m)
                continue
            base = parts[0]
        if base not in image_stems:
            part = _PART.match(base)
            base = part.group(1) if part and part.group(1) in image_stems else None
        if base is None:
            orphans.append(m)
        else:
            groups.setdefault(base, []).append(m)
    return groups, orphans


class PairedReader(Reader):
    layout = "paired"
    patient_rule = PATIENT_RULE
    infer_classes = True

    @staticmethod
    def detect(root: Path) -> bool:
        if find_dir(root, IMAGE_DIRS) and find_dir(root, MASK_DIRS):
            return True
        files = image_files(find_dir(root, IMAGE_DIRS) or root)
        return any(split_suffix(name_of(p), MASK_SUFFIXES) for p in files)

    def scan(self) -> None:
        img_dir = find_dir(self.root, IMAGE_DIRS)
        msk_dir = find_dir(self.root, MASK_DIRS)
        if img_dir is not None and msk_dir is not None:
            images, masks, suffix = image_files(img_dir), image_files(msk_dir), False
        else:
            folder = img_dir or self.root
            files = image_files(folder)
            masks = [p for p in files if split_suffix(name_of(p), MASK_SUFFIXES)]
            images = [p for p in files if p not in set(masks)]
            suffix = True
        stems: dict[str, Path] = {}
        for p in images:
            other = stems.setdefault(name_of(p), p)
            if other != p:
                self.problems.append(f"{other} and {p}: two images with the stem {name_of(p)}; rename or remove one")
        groups, orphans = match_masks(set(stems), masks, suffix)
        for m in orphans:
            self.problems.append(f"{m}: mask without an image (no image named {name_of(m)}.* beside it)")
        entries = []
        for stem, path in stems.items():
            files = groups.get(stem)
            if not files:
                self.problems.append(f"{path}: image without a mask")
                continue
            entries.append(Entry(stem, patient_of(stem), (path,), (tuple(sorted(files)),)))
        self.entries = expand_volumes(entries)


class GivenImagesReader(Reader):
    """A reader of unlabelled images from a folder, or from files named one by one (``files``), which may lie
    anywhere; the subclass's ``scan`` lists ``self._given`` or the folder."""

    def __init__(self, root, foreground=(), classes=(), files: Sequence[Path] | None = None):
        self._given = files  # explicit image files (``images_from_files``), else the folder is listed
        self.contained = files is None  # files named one by one may lie anywhere
        super().__init__(root, foreground, classes)


class ImagesReader(GivenImagesReader):
    """Unlabelled images: a folder of image files, or a list of files (A = 0), for ``predict``."""

    layout = "images"
    patient_rule = PATIENT_RULE

    @staticmethod
    def detect(root: Path) -> bool:
        return bool(image_files(find_dir(root, IMAGE_DIRS) or root))

    def scan(self) -> None:
        paths = self._given if self._given is not None else image_files(find_dir(self.root, IMAGE_DIRS) or self.root)
        entries = []
        for p, case_id in zip(paths, unique_ids([name_of(Path(p)) for p in paths]), strict=True):
            entries.append(Entry(case_id, patient_of(name_of(Path(p))), (Path(p),)))
        self.entries = expand_volumes(entries)


def unique_ids(stems: list[str]) -> list[str]:
    """The stems as case ids, a repeated stem (``a.png``, ``a.bmp``; files of two folders) numbered ``a_2``,
    ``a_3``, ... skipping every number another stem already has (``a_2.png``) and ignoring case."""
    taken = {s.casefold() for s in stems}
    seen: set[str] = set()
    out = []
    for stem in stems:
        case_id, n = stem, 1
        while case_id.casefold() in seen or (n > 1 and case_id.casefold() in taken):
            n += 1
            case_id = f"{stem}_{n}"
        seen.add(case_id.casefold())
        out.append(case_id)
    return out
