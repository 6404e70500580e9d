"""The nnU-Net raw layout (v1 and v2), 2D and 3D, extended to several annotators.

``dataset.json`` beside ``imagesTr/CASE_XXXX.<ext>`` (one file per channel, ``_0000``, ``_0001``, ...) and
``labelsTr/CASE.<ext>``. The channel count comes from ``channel_names`` (v2) or ``modality`` (v1), the file
ending from ``file_ending`` (default ``.nii.gz``), the allowed labels from ``labels``. 3D volumes are sliced
across their through-plane axis (``orientation.through_plane_axis``).

An images folder alone (``imagesTs/``, what ``nnUNetv2_predict -i`` takes; ``NnUNetImagesReader``) is read the
same way, unlabelled: its files ``CASE_XXXX.<ext>`` grouped into one case ``CASE`` per name, the channels in
order, so predictions are written as ``CASE.<ext>`` as nnU-Net writes them. A folder is such a folder when every
image file in it is named ``CASE_XXXX`` and every case has the channels ``_0000`` .. ``_{n-1}``, n the same for
all (``channel_cases``); the channel count of ``dataset.json`` beside it (in its parent folder) is checked when
there is one. ``--layout images`` reads each file as its own image instead.

Patients: a case's patient is its name without ACDC's ``_frameNN`` (``patient024_frame01`` -> ``patient024``),
so two frames of one subject stay on one side of a split; ``data.patient_regex`` sets another rule. The split of
nnU-Net's ``splits_final.json`` is read by ``data.splits`` (beside ``dataset.json``, or ``data.splits_file``).

Classes: ``labels`` with two or more foreground labels makes the dataset multi-class (``dataset_classes``):
v2 ``{"background": 0, "RV": 1, ...}``, v1 / Medical Segmentation Decathlon ``{"0": "background", "1": ...}``,
and nnU-Net v2 regions ``{"whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}`` with
``regions_class_order`` (the label written for each region, in order). v2's ``"ignore"`` (the highest value) is
no class but the ignore label (``dataset_ignore``, ``labels``): its pixels are left out of losses and metrics.
``data.classes``, when given, must match them; ``data.foreground`` keeps the dataset binary (the chosen labels as
foreground). One foreground label: binary.

Several annotators (our extension, ignored by nnU-Net itself): annotator 0 is ``labelsTr/``; annotators 1..
are sibling folders named ``labelsTr_<anything>`` taken in sorted order (``labelsTr_rater1``, ...), or the
folders listed in order under the key ``"annotator_folders"`` of ``dataset.json``. Each holds ``CASE.<ext>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from diffuseg.data.formats.base import Entry, Reader, annotator_problems
from diffuseg.data.formats.files import stem_of, suffix_of
from diffuseg.data.formats.paired import GivenImagesReader, image_files
from diffuseg.data.formats.ssl4mis import patient_of
from diffuseg.data.formats.volumes import expand_volumes
from diffuseg.errors import UserError
from diffuseg.labels import ClassSpec

_CHANNEL = re.compile(r"^(.*)_(\d{4})$")
_ENDING = re.compile(r"\.[A-Za-z0-9][A-Za-z0-9._-]*")  # ``.nii.gz``, ``.png``: no path, no pattern


def _unique_keys(pairs: list[tuple[str, object]], path: Path) -> dict:
    """A JSON object as a dict; ``UserError`` naming ``path`` for a key given twice (``json`` keeps the last one
    unsaid: ``{"RV": 1, "RV": 2}`` would lose a label)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise UserError(f"{path}: the key {key!r} appears twice in one object ({out[key]!r} and {value!r})")
        out[key] = value
    return out


def channel_groups(paths: Sequence[Path]) -> tuple[dict[str, dict[int, Path]], list[Path]]:
    """Files named ``CASE_XXXX.<ext>`` grouped by ``CASE`` (channel number -> file), and the files not so named."""
    cases: dict[str, dict[int, Path]] = {}
    others = []
    for p in paths:
        m = _CHANNEL.match(stem_of(p))
        if m:
            cases.setdefault(m.group(1), {})[int(m.group(2))] = Path(p)
        else:
            others.append(Path(p))
    return cases, others


def channel_cases(paths: Sequence[Path]) -> dict[str, tuple[Path, ...]] | None:
    """The cases of image files named as nnU-Net names them (``CASE_0000``, ``CASE_0001``, ...), each with its
    channel files in order; ``None`` unless there are files, every one is so named and every case has the channels
    ``0 .. n-1``, n the same for all."""
    cases, others = channel_groups(paths)
    counts = {len(files) for files in cases.values()}
    if not cases or others or len(counts) != 1:
        return None
    n = counts.pop()
    if any(sorted(files) != list(range(n)) for files in cases.values()):
        return None
    return {case: tuple(files[c] for c in range(n)) for case, files in sorted(cases.items())}


def is_images_folder(root: Path) -> bool:
    """Whether ``root`` holds image files named as nnU-Net names them (``channel_cases``), e.g. ``imagesTs``."""
    return channel_cases(image_files(root)) is not None


def read_meta(path: Path) -> dict:
    """The ``dataset.json`` at ``path`` as a dict; ``UserError`` naming it when it is not a JSON object."""
    try:
        meta = json.loads(path.read_text(), object_pairs_hook=lambda pairs: _unique_keys(pairs, path))
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: expected a JSON object")
    return meta


def channel_count(meta: dict) -> int:
    """The channels a case has: the entries of ``channel_names`` (v2) or ``modality`` (v1); 1 without either."""
    channels = meta.get("channel_names") or meta.get("modality") or {"0": "image"}
    return len(channels) if isinstance(channels, dict) else 1


def declared_labels(meta: dict) -> tuple[int, ...] | None:
    labels = meta.get("labels")
    if not isinstance(labels, dict):
        return None
    values = set()
    for k, v in labels.items():
        for item in v if isinstance(v, list) else [v, k]:  # v2 {"name": value}, v1 {"value": "name"}
            try:
                values.add(int(item))
            except (TypeError, ValueError):
                continue
    return tuple(sorted(v for v in values if v != 0)) or None


IGNORE_KEY = "ignore"  # nnU-Net v2's name of the ignore label in ``labels``


def dataset_ignore(meta: dict, where: str) -> int | None:
    """The ignore label of a v2 ``dataset.json`` (``labels["ignore"]``: unannotated pixels, left out of the loss and
    the metrics; nnU-Net requires it to be the highest label value), or ``None``; ``UserError`` naming ``where``
    for one that is not a single label value."""
    labels = meta.get("labels")
    value = labels.get(IGNORE_KEY) if isinstance(labels, dict) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{where}: labels entry 'ignore': {value!r} is not one label value (an integer >= 1)")
    return value


def dataset_classes(meta: dict, where: str) -> list[ClassSpec] | None:
    """The classes ``labels`` of a ``dataset.json`` declares (module docstring), or ``None`` for a binary dataset
    (at most one foreground label) or one without ``labels``; ``UserError`` naming ``where`` for labels that are
    not label values or a ``regions_class_order`` that does not give one label per region. ``ignore`` is no class
    (``dataset_ignore``)."""
    labels = meta.get("labels")
    if not isinstance(labels, dict):
        return None
    v1 = all(str(k).strip().lstrip("-").isdigit() and isinstance(v, str) for k, v in labels.items())
    pairs = [(str(v), k) for k, v in labels.items()] if v1 else [(str(k), v) for k, v in labels.items()]
    specs: list[tuple[str, list]] = []
    for name, value in pairs:
        values = value if isinstance(value, list) else [value]
        try:
            numbers = [int(v) for v in values]
        except (TypeError, ValueError):
            raise UserError(f"{where}: labels entry {name!r}: {value!r} is not a label value or list of them") from None
        if numbers == [0] or name.lower() == "background" or name == IGNORE_KEY:
            continue
        specs.append((name, numbers))
    if len(specs) < 2:
        return None
    regions = any(isinstance(v, list) for _, v in pairs)
    order = meta.get("regions_class_order")
    if regions and order is not None:
        if not isinstance(order, list) or len(order) != len(specs):
            raise UserError(
                f"{where}: regions_class_order {order!r} must list one label per region ({len(specs)} regions)"
            )
        return [ClassSpec(name, tuple(values), int(label)) for (name, values), label in zip(specs, order)]
    return [ClassSpec(name, tuple(values)) for name, values in specs]


class NnUNetReader(Reader):
    layout = "nnunet"
    patient_rule = "the case name without ACDC's _frameNN (patient024_frame01 -> patient024)"

    @staticmethod
    def detect(root: Path) -> bool:
        return (root / "dataset.json").is_file() and (root / "imagesTr").is_dir()

    def _meta(self) -> dict:
        path = self.root / "dataset.json"
        if not path.is_file():
            raise UserError(
                f"{path}: not found (the nnunet layout needs dataset.json and imagesTr/ in {self.root}, or a folder "
                "of images named CASE_XXXX.<ext> such as imagesTs/)"
            )
        return read_meta(path)

    def label_dirs(self, meta: dict) -> list[Path]:
        listed = meta.get("annotator_folders")
        if isinstance(listed, list) and listed:
            return [self._inside(str(name)) for name in listed]
        extra = sorted(p for p in self.root.iterdir() if p.is_dir() and p.name.startswith("labelsTr_"))
        return [self.root / "labelsTr", *extra]

    def _inside(self, name: str) -> Path:
        """``root/name`` for an ``annotator_folders`` entry; ``UserError`` for one that leads out of the dataset
        (an absolute path, ``..``, a link elsewhere): labels are read only from inside it."""
        folder = self.root / name
        root = self.root.resolve()
        if (
            Path(name).is_absolute()
            or ".." in Path(name).parts
            or root not in (folder.resolve(), *folder.resolve().parents)
        ):
            raise UserError(
                f"{self.root / 'dataset.json'}: annotator_folders entry {name!r} is outside the dataset folder; "
                'list folders inside it, e.g. "labelsTr_rater1"'
            )
        return folder

    def _ending(self, meta: dict) -> str:
        """``file_ending`` (default ``.nii.gz``); ``UserError`` naming ``dataset.json`` for one that is not a file
        ending (a path, a pattern: files are looked for only in the dataset's own folders)."""
        ending = meta.get("file_ending", ".nii.gz")
        if not isinstance(ending, str) or not _ENDING.fullmatch(ending):
            raise UserError(
                f'{self.root / "dataset.json"}: file_ending {ending!r} is not a file ending like ".nii.gz" or ".png"'
            )
        return ending

    def _check_ending_matches(self, ending: str) -> None:
        """A problem naming ``dataset.json`` when no file of ``imagesTr/`` ends in ``ending`` but others are there
        (a ``file_ending`` that does not say what the files are)."""
        others = sorted({suffix_of(p) for p in (self.root / "imagesTr").iterdir() if not p.name.startswith(".")})
        if others:
            listing = ", ".join(f".{s}" if s else "(no ending)" for s in others)
            self.problems.append(
                f"{self.root / 'dataset.json'}: file_ending {ending!r} matches no file in imagesTr/, whose files end "
                f"in {listing}; set file_ending to the files' ending"
            )

    def scan(self) -> None:
        meta = self._meta()
        ending = self._ending(meta)
        n_channels = channel_count(meta)
        labels = declared_labels(meta)
        where = str(self.root / "dataset.json")
        classes = dataset_classes(meta, where)
        if classes:
            self.use_dataset_classes(classes, where)
        ignore = dataset_ignore(meta, where)
        if ignore is not None:
            self.use_ignore(ignore, where)
        cases, unnamed = channel_groups(sorted((self.root / "imagesTr").glob(f"*{ending}")))
        self.problems += [f"{p}: image name lacks the _XXXX channel suffix" for p in unnamed]
        if not cases:
            self._check_ending_matches(ending)
        label_dirs = [d for d in self.label_dirs(meta) if d.is_dir()]
        per_annotator = [{stem_of(p): p for p in sorted(d.glob(f"*{ending}"))} for d in label_dirs]
        names = [d.name for d in label_dirs]
        self.problems += annotator_problems(
            self.root, cases, per_annotator, names, "label without an image in imagesTr/"
        )
        entries = []
        for case, files in sorted(cases.items()):
            missing = [f"_{c:04d}" for c in range(n_channels) if c not in files]
            if missing:
                self.problems.append(f"{self.root / 'imagesTr'}/{case}: missing channel file(s) {', '.join(missing)}")
                continue
            images = tuple(files[c] for c in range(n_channels))
            absent = [d.name for d, found in zip(label_dirs, per_annotator) if case not in found]
            if label_dirs and absent:
                self.problems.append(f"{images[0]}: image without a label in {', '.join(absent)}")
                continue
            masks = tuple((found[case],) for found in per_annotator)
            entries.append(Entry(case, patient_of(case), images, masks, labels=labels))
        self.entries = expand_volumes(entries)


class NnUNetImagesReader(GivenImagesReader):
    """An nnU-Net images folder alone (``imagesTs``; module docstring), or such files given one by one: unlabelled
    cases, one per ``CASE`` of the files ``CASE_XXXX.<ext>``, their channels in order."""

    layout = "nnunet"
    patient_rule = NnUNetReader.patient_rule

    @staticmethod
    def detect(root: Path) -> bool:
        return is_images_folder(root)

    def scan(self) -> None:
        paths = list(self._given) if self._given is not None else image_files(self.root)
        cases, unnamed = channel_groups(paths)
        self.problems += [f"{p}: image name lacks nnU-Net's _XXXX channel suffix" for p in unnamed]
        meta_path = self.root.parent / "dataset.json"
        expected = channel_count(read_meta(meta_path)) if self._given is None and meta_path.is_file() else None
        n = expected if expected is not None else max((len(f) for f in cases.values()), default=0)
        where = f"{meta_path} declares" if expected is not None else "other cases have"
        entries = []
        for case, files in sorted(cases.items()):
            missing = [f"_{c:04d}" for c in range(n) if c not in files]
            extra = [f"_{c:04d}" for c in sorted(files) if c >= n]
            if missing or extra:
                names = ", ".join(missing or extra)
                self.problems.append(
                    f"{self.root}/{case}: {'missing' if missing else 'extra'} channel file(s) {names} ({where} {n})"
                )
                continue
            entries.append(Entry(case, patient_of(case), tuple(files[c] for c in range(n))))
        self.entries = expand_volumes(entries)
        if n > 1:
            self.notes.append(
                f"{self.root}: {len(paths)} file(s) named CASE_XXXX read as {len(entries)} case(s) of {n} channels "
                "each (nnU-Net's naming; --layout images reads each file as an image of its own)"
            )
