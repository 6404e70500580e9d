"""The SSL4MIS HDF5 layout (Luo et al.'s semi-supervised segmentation code; its ACDC release).

``ROOT/data/*.h5`` (also ``ROOT/data/slices/*.h5``, or ``*.h5`` in ``ROOT`` itself), each file holding the
datasets ``image`` (float, SSL4MIS scales each volume to [0, 1]; kept as stored when it is in [0, 1], else
normalised as every other format) and, when labelled, ``label`` (integer label map of the same shape). A 2D
file (H,W) is one item, its stem the case id (``patient003_frame01_slice_1``). A 3D file (D,H,W) is a volume
cut along its first axis into D items ``<stem>_z0000`` ... with ``Geometry.volume_id`` / ``slice_index`` /
``volume_shape`` (D,H,W), which writers use to reassemble it. The patient id is the stem without
``_slice_N`` and ``_frameNN`` (``patient003``), so both cardiac phases of a patient stay on one side of a split.

Splits: ``train.list`` / ``val.list`` / ``test.list`` beside ``data/`` name the cases (volumes,
``patient038_frame01``) of each side; ``data.splits`` reads them by patient (``read_list``: one name a line) and
refuses an entry that names no case or leads out of the folder. ``test.list``'s patients are never trained on.
``train_slices.list`` names the 2D slices of the training cases (not read: the slices on disk are). When a case
is stored both as a volume and as slices, the slices are read for a case of ``train.list`` and the volume
otherwise; ``case_of`` gives the case a slice file belongs to.

Classes: the files say nothing about what the label values mean (ACDC: 1 right ventricle, 2 myocardium,
3 left ventricle). Declare them in ``data.classes`` (the ACDC presets do); without them the label values found
are the classes, as for every layout whose files do not declare them (``base.Reader.classes_from_values``).
"""

from __future__ import annotations

import re
from pathlib import Path

from diffuseg.data.formats.base import Entry, Reader
from diffuseg.data.formats.files import check_ending, check_regular, hdf5_dataset, natural_key, stem_of
from diffuseg.data.progress import progress
from diffuseg.errors import UserError

LISTS = ("train.list", "val.list", "test.list")
SLICE_LIST = "train_slices.list"
_SLICE = re.compile(r"^(?P<volume>.+)_slice_(?P<z>\d+)$")
_PATIENT = re.compile(r"^(?P<patient>.+?)(_frame\d+)?(_slice_\d+)?$")


def patient_of(name: str) -> str:
    """``patient003_frame01_slice_1`` and ``patient003_frame02`` -> ``patient003``."""
    m = _PATIENT.match(name)
    return m.group("patient") if m else name


def case_of(stem: str) -> str:
    """The case a 2D slice file belongs to: ``patient003_frame01_slice_1`` -> ``patient003_frame01``."""
    m = _SLICE.match(stem)
    return m.group("volume") if m else stem


def hdf5_files(root: Path) -> list[Path]:
    """The ``.h5`` files of the layout: ``root/data/``, ``root/data/slices/`` or ``root`` itself."""
    folders = [root / "data", root / "data" / "slices"] if (root / "data").is_dir() else [root]
    found = [p for f in folders if f.is_dir() for p in f.iterdir() if p.suffix.lower() == ".h5"]
    return sorted(found, key=lambda p: natural_key(p.name))


def read_list(path: Path) -> list[tuple[int, str]]:
    """(line number from 1, case name) of each non-blank line of an SSL4MIS list file; ``[]`` when it is absent."""
    lines = path.read_text().splitlines() if path.is_file() else []
    return [(n, ln.strip()) for n, ln in enumerate(lines, 1) if ln.strip()]


class SSL4MISReader(Reader):
    layout = "ssl4mis"
    patient_rule = "the file stem without _slice_N and _frameNN (patient003_frame01_slice_1 -> patient003)"
    infer_classes = True

    @staticmethod
    def detect(root: Path) -> bool:
        return bool(hdf5_files(root)) and ((root / "data").is_dir() or any((root / n).is_file() for n in LISTS))

    def scan(self) -> None:
        import h5py

        train = {name for _, name in read_list(self.root / "train.list")}
        shapes: dict[Path, tuple[tuple[int, ...], bool]] = {}
        files = hdf5_files(self.root)
        for p in progress(files, "scan", "file"):
            try:
                check_regular(p)  # a pipe would block, a dangling link be "corrupt"
                check_ending(p)
                with h5py.File(p, "r") as f:
                    image = hdf5_dataset(f, "image", p)
                    shapes[p] = (tuple(int(s) for s in image.shape), f.get("label", getlink=True) is not None)
            except OSError as err:
                self.problems.append(f"{p}: unreadable or corrupt HDF5 file ({err})")
            except UserError as err:
                self.problems.append(str(err))
        sliced = {case_of(stem_of(p)) for p in shapes if _SLICE.match(stem_of(p))}
        volumes = {stem_of(p) for p, (shape, _) in shapes.items() if len(shape) == 3}
        entries: list[Entry] = []
        for p, (shape, labelled) in shapes.items():
            stem = stem_of(p)
            masks = ((p,),) if labelled else ()
            volume = case_of(stem)
            if len(shape) == 3:
                if stem in sliced and stem in train:
                    continue  # a training case stored both ways: its slices are read
                entries += [
                    Entry(f"{stem}_z{z:04d}", patient_of(stem), (p,), masks, z, stem, shape) for z in range(shape[0])
                ]
            elif len(shape) == 2:
                if volume not in train and volume in volumes:
                    continue  # a case outside train.list stored both ways: its volume is read
                entries.append(Entry(stem, patient_of(stem), (p,), masks))
            else:
                self.problems.append(f"{p}: image of shape {shape}; expected (H,W) or a volume (D,H,W)")
        self.entries = entries
        if any(labelled for _, labelled in shapes.values()):  # a labelled dataset: each file needs its label
            for p, (_, labelled) in shapes.items():
                if not labelled:
                    self.problems.append(f"{p}: no dataset 'label', while the other files of the dataset have one")
