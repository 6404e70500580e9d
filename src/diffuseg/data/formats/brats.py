"""The BraTS layout MedSegDiff reads: one folder per case holding one NIfTI file per modality.

``ROOT/[training|testing/]CASE/<prefix>_{flair,t1,t1ce,t2}[_SSS_w].nii.gz`` with an optional
``<prefix>_seg[...].nii.gz``. Works for MedSegDiff's 2D slice files (``brats_train_001_flair_083_w.nii.gz``)
and for 3D volumes (``BraTS2021_00000_flair.nii.gz``; sliced along the last axis). The four modalities are
the channels in the order flair, t1, t1ce, t2 (t1ce also matches ``t1Gd``). Labels {0,1,2,3,4}: the mask is
the whole tumour (any non-zero label) by default; sub-regions are chosen with ``foreground``, e.g.
tumour core ``(1, 4)`` (BraTS 2023 labels: ``(1, 3)``) or enhancing tumour ``(4,)``. All labels at once:
declare ``data.classes``, e.g. the regions ``BRATS_REGIONS`` (WT, TC, ET; written back as 0/1/2/4) or exclusive
classes (NCR 1, ED 2, ET 4); undeclared values are then problems naming the file. Cases without ``seg``
(the testing folder) are unlabelled (A = 0). The patient id is the file prefix before the modality.
"""

from __future__ import annotations

import re
from pathlib import Path

from diffuseg.data.formats.base import Entry, Reader
from diffuseg.data.formats.files import NIFTI_SUFFIXES, stem_of, suffix_of
from diffuseg.data.formats.volumes import expand_volumes
from diffuseg.labels import ClassSpec

MODALITIES = ("flair", "t1", "t1ce", "t2")
# nnU-Net's BraTS regions, labels up to 2021 (2023: NCR 1, ED 2, ET 3)
BRATS_REGIONS = (ClassSpec("WT", (1, 2, 4)), ClassSpec("TC", (1, 4)), ClassSpec("ET", (4,)))
LABELS = (1, 2, 3, 4)
_FILE = re.compile(r"^(?P<prefix>.*?)_(?P<mod>flair|t1ce|t1gd|t1|t2|seg)(?P<rest>(_.*)?)$", re.IGNORECASE)


def _parse(path: Path) -> tuple[str, str] | None:
    if suffix_of(path) not in NIFTI_SUFFIXES:
        return None
    m = _FILE.match(stem_of(path))
    if not m:
        return None
    mod = m.group("mod").lower()
    return m.group("prefix"), "t1ce" if mod == "t1gd" else mod


def case_dirs(root: Path) -> list[Path]:
    """Folders directly holding BraTS files: ROOT/CASE or ROOT/SPLIT/CASE."""
    out = []
    for level1 in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        children = sorted(level1.iterdir())
        if any(_parse(p) for p in children if p.is_file()):
            out.append(level1)
        else:
            out.extend(c for c in children if c.is_dir() and any(_parse(p) for p in c.iterdir() if p.is_file()))
    return out


class BraTSReader(Reader):
    layout = "brats"
    patient_rule = "the file prefix before the modality (brats_train_001)"

    @staticmethod
    def detect(root: Path) -> bool:
        return bool(case_dirs(root))

    def scan(self) -> None:
        dirs = case_dirs(self.root)
        names = [d.name for d in dirs]
        entries = []
        for d in dirs:
            found: dict[str, Path] = {}
            prefix = d.name
            for p in sorted(d.iterdir()):
                parsed = _parse(p)  # a pipe or dangling link so named is kept: ``Reader`` names it
                if parsed:
                    prefix, mod = parsed
                    if mod in found:
                        self.problems.append(f"{p}: second {mod} file in {d} (also {found[mod].name})")
                    found[mod] = p
            missing = [m for m in MODALITIES if m not in found]
            if missing:
                self.problems.append(f"{d}: missing modality file(s) {', '.join(missing)}")
                continue
            case_id = d.name if names.count(d.name) == 1 else f"{d.parent.name}_{d.name}"
            masks = ((found["seg"],),) if "seg" in found else ()
            entries.append(Entry(case_id, prefix, tuple(found[m] for m in MODALITIES), masks, labels=LABELS))
        self.entries = expand_volumes(entries)
