"""Class folders (BUSI, the breast-ultrasound set, in its usual form): one folder per class at the dataset root
(``benign/``, ``malignant/``, ``normal/``), each holding images with suffixed masks beside them
(``benign (1).png`` + ``benign (1)_mask.png``).

The class is kept as case metadata (``Entry.category`` -> ``Geometry.category``; ``diffuseg verify`` counts
the cases per class). Every mask of one image (``X_mask.png``, ``X_mask_1.png``, ``X_mask_2.png``, ...) is
joined into ONE mask (their union): in BUSI the numbered masks are further lesions of the same image, not
other raters. Data whose numbered masks are raters belongs in the ``multi`` layout (one folder of one class,
``--layout multi``). Only raster images (PNG, JPG, ...) are looked for; case ids are the file stems, prefixed
with the class (``malignant-X``) where two classes hold the same stem.
"""

from __future__ import annotations

from pathlib import Path

from diffuseg.data.formats.base import Entry, Reader
from diffuseg.data.formats.files import RASTER_SUFFIXES, stem_of, suffix_of
from diffuseg.data.formats.paired import (
    IMAGE_DIRS,
    MASK_SUFFIXES,
    find_dir,
    image_files,
    match_masks,
    patient_of,
    split_suffix,
)


def _rasters(folder: Path) -> list[Path]:
    return [p for p in image_files(folder) if suffix_of(p) in RASTER_SUFFIXES]


def class_folders(root: Path) -> list[Path]:
    """The sub-folders of ``root`` that hold raster images (sorted; hidden folders skipped)."""
    if not root.is_dir():
        return []
    return [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".") and _rasters(d)]


class ClassFoldersReader(Reader):
    layout = "classes"

    @staticmethod
    def detect(root: Path) -> bool:
        """No images at the root itself, and a sub-folder with images and suffixed masks beside them."""
        if image_files(root) or find_dir(root, IMAGE_DIRS):
            return False
        return any(split_suffix(stem_of(p), MASK_SUFFIXES) for d in class_folders(root) for p in _rasters(d))

    def scan(self) -> None:
        entries: list[Entry] = []
        taken: set[str] = set()
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
                case_id = stem if stem not in taken else f"{folder.name}-{stem}"
                taken.add(case_id)
                union = (tuple(sorted(found)),)  # all lesion masks of the image: one annotator's mask
                entries.append(Entry(case_id, patient_of(case_id), (path,), union, category=folder.name))
        self.entries = entries
