"""The LIDC-IDRI-slices layout: ``PATIENT/nodule-J/{images,mask-0,...,mask-3}/slice-N.png``, 4 annotators.

``root`` may be the ``LIDC-IDRI-slices`` folder or a folder holding it (next to ``train_patients.txt`` and
``val_patients.txt``, which ``dataset.build_datasets`` then uses as the split). Case ids are
``PATIENT_nodule-J_slice-N``; the patient id is the patient folder's name.
"""

from __future__ import annotations

from pathlib import Path

from diffuseg.data.formats.base import Entry, Reader
from diffuseg.data.formats.files import is_image_file, natural_key, stem_of
from diffuseg.data.progress import progress

SLICES_DIR = "LIDC-IDRI-slices"


def slices_root(root: Path) -> Path:
    return root / SLICES_DIR if (root / SLICES_DIR).is_dir() else root


def _nodules(patient: Path) -> list[Path]:
    return sorted(
        (p for p in patient.iterdir() if p.is_dir() and p.name.startswith("nodule")), key=lambda p: natural_key(p.name)
    )


class LIDCReader(Reader):
    layout = "lidc"
    patient_rule = "the patient folder's name (LIDC-IDRI-0001)"

    @staticmethod
    def detect(root: Path) -> bool:
        base = slices_root(root)
        if not base.is_dir():
            return False
        for patient in sorted(base.iterdir())[:5]:
            if patient.is_dir() and any((n / "images").is_dir() for n in _nodules(patient)):
                return True
        return False

    def scan(self) -> None:
        base = slices_root(self.root)
        patients = sorted((p for p in base.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name))
        for patient in progress(patients, "scan", "patient"):
            for nodule in _nodules(patient):
                self._scan_nodule(patient.name, nodule)

    def _scan_nodule(self, patient: str, nodule: Path) -> None:
        images_dir = nodule / "images"
        mask_dirs = sorted(
            (d for d in nodule.iterdir() if d.is_dir() and d.name.startswith("mask")), key=lambda p: natural_key(p.name)
        )
        if not images_dir.is_dir():
            self.problems.append(f"{nodule}: no images/ folder")
            return
        if not mask_dirs:
            self.problems.append(f"{nodule}: no mask-* annotator folders")
        images = {stem_of(p): p for p in images_dir.iterdir() if is_image_file(p)}
        masks = [{stem_of(p): p for p in d.iterdir() if is_image_file(p)} for d in mask_dirs]
        counts = [len(images), *map(len, masks)]
        if len(set(counts)) > 1:
            listing = ", ".join(f"{d.name} {n}" for d, n in zip([images_dir, *mask_dirs], counts))
            self.problems.append(f"{nodule}: annotator folders of unequal length ({listing})")
        for found in masks:
            for stem in sorted(set(found) - set(images), key=natural_key):
                self.problems.append(f"{found[stem]}: mask without an image (no {images_dir.name}/{stem}.*)")
        for stem in sorted(images, key=natural_key):
            missing = [d for d, found in zip(mask_dirs, masks) if stem not in found]
            if missing:
                names = ", ".join(d.name for d in missing)
                self.problems.append(f"{images[stem]}: image without a mask in {names}")
                continue
            self.entries.append(
                Entry(
                    case_id=f"{patient}_{nodule.name}_{stem}",
                    patient_id=patient,
                    images=(images[stem],),
                    masks=tuple((found[stem],) for found in masks),
                )
            )
