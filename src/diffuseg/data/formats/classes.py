"""Class folders (BUSI, the breast-ultrasound set, in its usual form): one folder per class at the dataset root
(``benign/``, ``malignant/``, ``normal/``), each holding images with suffixed masks beside them
(``benign (1).png`` + ``benign (1)_mask.png``).

The class is kept as case metadata (``Entry.category`` -> ``Geometry.category``; ``diffuseg verify`` counts
the cases per class). Every mask of one image (``X_mask.png``, ``X_mask_1.png``, ``X_mask_2.png``, ...) is
joined into ONE mask (their union): in BUSI the numbered masks are further lesions of the same image, not
other raters. Data whose numbered masks are raters belongs in the ``multi`` layout (one folder of one class,
``--layout multi``). Only raster images (PNG, JPG, ...) are looked for.

Pointed at one class folder (named ``benign``, ``malignant`` or ``normal``, or any folder with
``--layout classes``), the folder is that one class. Case ids depend only on the file: the stem when it starts
with its class's name (BUSI's ``benign (1)``), else ``<class>_<stem>``; so a case has the same id whether the
dataset root or its class folder is read, and stems repeated across classes stay apart.
"""

from __future__ import annotations

from pathlib import Path

from diffuseg.data.formats.base import Entry, Reader
from diffuseg.data.formats.files import RASTER_SUFFIXES, stem_of, suffix_of
from diffuseg.data.formats.paired import (
    IMAGE_DIRS,
    MASK_DIRS,
    MASK_SUFFIXES,
    PATIENT_RULE,
    image_files,
    match_masks,
    patient_of,
    split_suffix,
)


def _rasters(folder: Path) -> list[Path]:
    return [p for p in image_files(folder) if suffix_of(p) in RASTER_SUFFIXES]


BUSI_CLASSES = ("benign", "malignant", "normal")  # a folder of one of these names is read as that one class


def class_folders(root: Path) -> list[Path]:
    """The sub-folders of ``root`` that hold raster images (sorted; hidden folders skipped); ``[root]`` for a
    folder that holds images itself (one class)."""
    if not root.is_dir():
        return []
    if _rasters(root):
        return [root]
    return [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".") and _rasters(d)]


def _has_suffixed_masks(folder: Path) -> bool:
    return any(split_suffix(stem_of(p), MASK_SUFFIXES) for p in _rasters(folder))


def case_id_of(category: str, stem: str) -> str:
    """``benign (1)`` in ``benign`` stays ``benign (1)``; ``x`` in ``malignant`` is ``malignant_x``."""
    return stem if stem.lower().startswith(category.lower()) else f"{category}_{stem}"


class ClassFoldersReader(Reader):
    layout = "classes"
    patient_rule = PATIENT_RULE

    @staticmethod
    def detect(root: Path) -> bool:
        """A BUSI class folder (by its name) with suffixed masks; or no images at the root itself and a
        sub-folder with images and suffixed masks beside them, other than a paired layout's folders (beside
        ``images/`` + ``masks/`` such class folders make the layout ambiguous: ``detect_layout`` says so)."""
        if root.name.lower() in BUSI_CLASSES and _has_suffixed_masks(root):
            return True
        if image_files(root):
            return False
        paired = (*IMAGE_DIRS, *MASK_DIRS)
        return any(_has_suffixed_masks(d) for d in class_folders(root) if d.name.lower() not in paired)

    def scan(self) -> None:
        entries: list[Entry] = []
        taken: dict[str, Path] = {}
        for folder in class_folders(self.root):
            files = _rasters(folder)
            masks = [p for p in files if split_suffix(stem_of(p), MASK_SUFFIXES)]
            images = {stem_of(p): p for p in files if p not in set(masks)}
            groups, orphans = match_masks(set(images), masks, suffix=True)
            for m in orphans:
                self.problems.append(f"{m}: mask without an image (no image named {stem_of(m)}.* beside it)")
            for stem, path in images.items():
                found = groups.get(stem)
                if not found:
                    self.problems.append(f"{path}: image without a mask")
                    continue
                case_id = case_id_of(folder.name, stem)
                if case_id.casefold() in taken:  # e.g. X.png and x.png: one output file on some file systems
                    self.problems.append(f"{path}: same case id as {taken[case_id.casefold()]} ({case_id})")
                    continue
                taken[case_id.casefold()] = path
                union = (tuple(sorted(found)),)  # all lesion masks of the image: one annotator's mask
                entries.append(Entry(case_id, patient_of(case_id), (path,), union, category=folder.name))
        self.entries = entries
