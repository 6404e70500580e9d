"""General multi-annotator layout: one mask folder, or one mask file suffix, per annotator.

Folders: ``images/`` beside two or more mask folders whose names start with ``mask``, ``label``,
``annotator``, ``rater`` or ``seg`` (``masks_1/``, ``masks_2/`` ...; sorted by name = annotator order), each
holding a mask per image with the image's stem. Suffixes: in one folder, ``case1.png`` beside
``case1_mask0.png``, ``case1_mask1.png`` ... (``_mask``, ``_seg``, ``_label``, ``_annotator`` or ``_rater``
followed by an optional ``_``/``-`` and the annotator number). Annotator folders of unequal length and
images missing some annotator's mask are problems.
"""

from __future__ import annotations

import re
from pathlib import Path

from diffuseg.data.formats.base import Entry, Reader, annotator_problems
from diffuseg.data.formats.files import stem_of
from diffuseg.data.formats.paired import IMAGE_DIRS, PATIENT_RULE, find_dir, image_files, patient_of
from diffuseg.data.formats.volumes import expand_volumes

PREFIXES = ("mask", "label", "annotator", "rater", "seg")
_SUFFIX = re.compile(r"^(.*)_(mask|seg|label|annotator|rater)[_-]?(\d+)$", re.IGNORECASE)


def annotator_dirs(root: Path) -> list[Path]:
    return sorted(
        p for p in (root.iterdir() if root.is_dir() else []) if p.is_dir() and p.name.lower().startswith(PREFIXES)
    )


class MultiAnnotatorReader(Reader):
    layout = "multi"
    patient_rule = PATIENT_RULE
    infer_classes = True

    @staticmethod
    def detect(root: Path) -> bool:
        if find_dir(root, IMAGE_DIRS) and len(annotator_dirs(root)) >= 2:
            return True
        files = image_files(find_dir(root, IMAGE_DIRS) or root)
        indices = {m.group(3) for m in (_SUFFIX.match(stem_of(p)) for p in files) if m}
        return len(indices) >= 2

    def scan(self) -> None:
        img_dir = find_dir(self.root, IMAGE_DIRS)
        dirs = annotator_dirs(self.root)
        if img_dir is not None and len(dirs) >= 2:
            images = {stem_of(p): p for p in image_files(img_dir)}
            per_annotator = [{stem_of(p): p for p in image_files(d)} for d in dirs]
            names = [d.name for d in dirs]
        else:
            files = image_files(img_dir or self.root)
            found: dict[str, dict[str, Path]] = {}
            for p in files:
                m = _SUFFIX.match(stem_of(p))
                if m:
                    found.setdefault(m.group(3), {})[m.group(1)] = p
            images = {stem_of(p): p for p in files if not _SUFFIX.match(stem_of(p))}
            keys = sorted(found, key=int)
            per_annotator = [found[k] for k in keys]
            names = [f"annotator {k}" for k in keys]
        self._pair(images, per_annotator, names)

    def _pair(self, images: dict[str, Path], per_annotator: list[dict[str, Path]], names: list[str]) -> None:
        self.problems += annotator_problems(self.root, images, per_annotator, names, "mask without an image")
        entries = []
        for stem, path in sorted(images.items()):
            missing = [n for n, masks in zip(names, per_annotator) if stem not in masks]
            if missing:
                self.problems.append(f"{path}: image without a mask from {', '.join(missing)}")
                continue
            entries.append(Entry(stem, patient_of(stem), (path,), tuple((m[stem],) for m in per_annotator)))
        self.entries = expand_volumes(entries)
