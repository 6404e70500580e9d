"""A folder of label files alone (the ``labels`` layout): the ground truth ``evaluate`` takes, as nnU-Net's
``evaluate_folder`` does: nnU-Net's ``labelsTs``, or any folder of mask PNGs, NIfTI label maps or DICOM series
folders (``dicom``: the folder's name is the case).

Each file is a case named by its stem (a volume sliced across its through-plane axis, as everywhere) and is its own
image as far as geometry goes (size, affine, spacing). Beside nnU-Net's ``dataset.json`` (in the parent folder, as
for ``labelsTs``) only files of its ``file_ending`` are read, with its ``labels`` and ignore label; elsewhere the
classes follow the policy of every layout (``base``): ``--classes``, else the label values found in the files.
"""

from __future__ import annotations

from pathlib import Path

from diffuseg.data.formats.base import Entry, Reader
from diffuseg.data.formats.files import name_of
from diffuseg.data.formats.nnunet import dataset_classes, dataset_ignore, declared_labels, read_meta
from diffuseg.data.formats.paired import PATIENT_RULE, image_files, patient_of
from diffuseg.data.formats.volumes import expand_volumes


class LabelsReader(Reader):
    layout = "labels"
    patient_rule = PATIENT_RULE
    infer_classes = True

    @staticmethod
    def detect(root: Path) -> bool:
        return bool(image_files(root))

    def scan(self) -> None:
        files = image_files(self.root)
        labels = None
        meta_path = self.root.parent / "dataset.json"
        if meta_path.is_file():
            meta = read_meta(meta_path)
            ending = str(meta.get("file_ending", ""))
            files = [p for p in files if p.name.endswith(ending)]
            classes = dataset_classes(meta, str(meta_path))
            if classes:
                self.use_dataset_classes(classes, str(meta_path))
            ignore = dataset_ignore(meta, str(meta_path))
            if ignore is not None:
                self.use_ignore(ignore, str(meta_path))
            labels = declared_labels(meta)
        entries, stems = [], {}
        for p in files:
            other = stems.setdefault(name_of(p), p)
            if other != p:
                self.problems.append(f"{other} and {p}: two label files with the stem {name_of(p)}; remove one")
                continue
            entries.append(Entry(name_of(p), patient_of(name_of(p)), (p,), ((p,),), labels=labels))
        self.entries = expand_volumes(entries)
