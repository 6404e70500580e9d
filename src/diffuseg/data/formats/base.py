"""What every layout reader shares: entries found on disk, and decoding an entry into a ``Case``.

A reader only *finds* files (``scan``); decoding, slicing of volumes, turning label maps into atom maps
(``labels``: binary {0,1}, or one atom per declared label value) and every per-file check live
here, so all layouts report problems the same way.

Classes, one policy for every layout: ``data.classes`` (``--classes RV=1,Myo=2,LV=3``) when given; else those the
dataset declares (nnU-Net's ``dataset.json``); else, for a layout whose files say nothing of their classes
(``Reader.infer_classes``: paired and NIfTI folders, multi, SSL4MIS, label folders), the label values found in
its label files (``classes_from_values``): two to ``MAX_INFERRED`` distinct positive integers (255 not among them:
the foreground of 0/255 masks, a void label or an anti-aliased edge) become exclusive classes ``class_V``, with a
note; else the masks are binary (``data.foreground``, default any non-zero value).
"""

from __future__ import annotations

import copy
import os
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffuseg.data.case import Case, Geometry
from diffuseg.data.formats.containment import Containment, drop_unreadable
from diffuseg.data.formats.files import (
    LOSSY_SUFFIXES,
    FileData,
    fixed_intensity,
    format_of,
    label_values,
    normalize_intensity,
    read_file,
    suffix_of,
)
from diffuseg.data.progress import progress
from diffuseg.errors import UserError
from diffuseg.labels import ClassSpec, LabelScheme, label_scheme

MAX_INFERRED = 64  # at most this many distinct label values are read as classes when none are declared


@dataclass(frozen=True)
class Entry:
    """One 2D item on disk, not yet decoded.

    ``images`` holds one file per channel (BraTS: one per modality) or a single file holding all channels;
    ``masks`` one tuple per annotator of the files whose union is that annotator's mask (several lesions
    of one image). ``slice_index`` selects a slice of a 3D volume along ``slice_axis`` (``None``: the format's,
    the third axis of a NIfTI/ITK volume, the first of an HDF5 one; ``orientation``). ``labels`` are the label
    values the layout allows (``None``: a binary mask, any single non-zero value).
    """

    case_id: str
    patient_id: str
    images: tuple[Path, ...]
    masks: tuple[tuple[Path, ...], ...] = ()
    slice_index: int | None = None
    volume_id: str | None = None
    volume_shape: tuple[int, ...] | None = None
    labels: tuple[int, ...] | None = None
    category: str = ""  # class folder (``classes`` layout), kept in ``Geometry.category``
    slice_axis: int | None = None


class _FileCache:
    """The last few decoded files, so the slices of one volume decode it once."""

    def __init__(self, size: int = 8, intensity: tuple[float, ...] = ()):
        self.size = size
        self.intensity = intensity  # ``Reader.set_intensity``: () = each file's percentiles
        self.items: OrderedDict[tuple[Path, bool], tuple[FileData, np.ndarray | None, int]] = OrderedDict()

    def get(self, path: Path, as_mask: bool) -> tuple[FileData, np.ndarray | None, int]:
        """(decoded file, normalised float32 array for images, count of non-finite values)."""
        key = (path, as_mask)
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        data = read_file(path, as_mask=as_mask)
        bad = int(data.array.size - np.isfinite(data.array).sum()) if data.array.dtype.kind == "f" else 0
        normalised = None
        if not as_mask and self.intensity:
            normalised = fixed_intensity(data.array, self.intensity)
        elif not as_mask and data.prescaled:
            normalised = data.array.astype(np.float32)
        elif not as_mask:
            channel_axis = _channel_axis(data)
            normalised = normalize_intensity(data.array, channel_axis)
        self.items[key] = (data, normalised, bad)
        while len(self.items) > self.size:
            self.items.popitem(last=False)
        return self.items[key]


def _channel_axis(data: FileData) -> int | None:
    a = data.array
    if data.affine is not None:  # NIfTI: (X,Y), (X,Y,Z) or (X,Y,Z,channels)
        return 3 if a.ndim == 4 else None
    if data.slice_axis == 0:  # HDF5 volume (D,H,W): one channel
        return None
    return 2 if a.ndim == 3 else None  # rasters (H,W,channels); .npy (H,W,channels) too


def _axis(data: FileData, entry: Entry) -> int:
    """The array axis the entry's slice is taken along: its own, else its format's (HDF5 0, NIfTI/ITK 2)."""
    if entry.slice_axis is not None:
        return entry.slice_axis
    return 0 if data.slice_axis == 0 else 2


def _plane(data: FileData, array: np.ndarray, entry: Entry) -> np.ndarray:
    """The 2D plane (H,W) or (H,W,channels) of an entry: slice ``slice_index`` (default 0) along ``_axis`` of a
    NIfTI/ITK volume (X,Y,Z[,channels]) or an HDF5 volume (D,H,W)."""
    z = 0 if entry.slice_index is None else entry.slice_index
    if data.slice_axis == 0 and array.ndim == 3:
        return array[z]
    if data.affine is not None and array.ndim >= 3:
        return np.take(array, z, axis=_axis(data, entry))
    return array


def _slice_problem(path: Path, data: FileData, entry: Entry, expected: str) -> str | None:
    """Why the entry's plane cannot be taken from file ``path``: it asks for a slice the file lacks, or it is a 2D
    entry (no ``slice_index``: a layout that does not cut files, LIDC's, or the label of a 2D image) and the file a
    volume of several slices, whose first slice alone would drop the rest unsaid (``expected`` says what was)."""
    a = data.array
    if entry.slice_index is None:
        several = data.affine is not None and a.ndim >= 3 and a.shape[2] > 1
        return f"{path}: a volume of {a.shape[2]} slices ({_shape(a.shape)}) {expected}" if several else None
    if a.ndim < 3 or entry.slice_index >= a.shape[_axis(data, entry)]:
        return f"{path}: has no slice {entry.slice_index} (shape {a.shape})"
    return None


class Reader:
    """A dataset on disk in one layout: ``entries`` plus the structural ``problems`` met while scanning.

    A layout defines ``detect(root) -> bool`` (does ``root`` look like this layout?) and ``scan()``, which
    fills ``entries`` and ``problems``; construction scans.

    ``classes`` (``data.classes``) and ``foreground`` make the ``scheme`` (``labels.label_scheme``) that
    turns label maps into atom maps. A layout whose files declare classes (nnU-Net's ``dataset.json``) sets
    them in ``scan`` through ``use_dataset_classes``; ``notes`` holds what a reader chose on the user's behalf.
    """

    layout = "base"
    patient_rule = "the case name (each case its own patient)"  # how ``scan`` names patients, for ``verify``
    infer_classes = False  # whether undeclared classes are read from the label values (module docstring)
    contained = True  # images must lie in the dataset folder (not for image files named one by one)
    intensity: tuple[float, ...] = ()  # ``set_intensity``

    def __init__(self, root: str | os.PathLike, foreground: Sequence[int] = (), classes: Sequence[ClassSpec] = ()):
        self.root = Path(root)
        self.foreground = tuple(int(v) for v in foreground)
        self.scheme: LabelScheme = label_scheme(classes, self.foreground)
        self.classes_source = "data.classes"  # where the scheme's classes come from (a file, for dataset classes)
        self.entries: list[Entry] = []
        self.problems: list[str] = []
        self.notes: list[str] = []
        self._files = _FileCache()
        self.containment = Containment(self.root)
        self.scan()
        self.problems += name_clashes(self.entries)
        self.entries, dropped = drop_unreadable(self.entries, self.containment if self.contained else None)
        self.problems += dropped
        if self.infer_classes and self.scheme.binary and not self.foreground:
            self.classes_from_values()

    def classes_from_values(self) -> None:
        """Without declared classes: the distinct label values of the label files (JPEG skipped, entries whose
        layout fixes their labels skipped) become classes ``class_V`` when they pass the module docstring's rule,
        with a note; the scheme stays binary otherwise."""
        found_in = {p: e.images[0] for e in self.entries if e.labels is None for f in e.masks for p in f}
        files = [  # a label linked from outside is never read: decoding its entry reports it
            p
            for p, image in found_in.items()
            if suffix_of(p) not in LOSSY_SUFFIXES and not self.containment.outside(p, image)
        ]
        found: set = set()
        for path in progress(files, "label values", "file"):
            try:
                found.update(label_values(read_file(path, as_mask=True).array))
            except UserError:
                continue  # decoding the entry reports the file
        values = sorted(v for v in found if v != 0)
        if (
            not 2 <= len(values) <= MAX_INFERRED
            or 255 in values
            or not all(v > 0 and float(v).is_integer() for v in values)
        ):
            return
        classes = [ClassSpec(f"class_{int(v)}", (int(v),)) for v in values]
        self.use_dataset_classes(classes, str(self.root))
        self.classes_source = "the label values found in the files"
        example = ",".join(f"{c.name}={c.values[0]}" for c in classes[:3]) + (",..." if len(classes) > 3 else "")
        self.notes.append(
            f"{self.root}: no classes declared; the label values {', '.join(str(int(v)) for v in values)} of its "
            f"label files are taken as classes {', '.join(c.name for c in classes)} (name them with --classes "
            f"{example} or data.classes; --foreground V makes the masks binary)"
        )

    def use_dataset_classes(self, classes: Sequence[ClassSpec], where: str) -> None:
        """Take the classes the dataset declares (file ``where``) unless the config declares its own, which must
        then match them, names up to case (``LabelScheme.same_classes``; else ``UserError`` naming ``where`` and
        the override that fixes it). Binary by ``data.foreground`` wins over them."""
        if self.foreground:
            return
        found = label_scheme(classes, (), where=where)
        if self.scheme.binary:
            self.scheme, self.classes_source = found, where
        elif not self.scheme.same_classes(found):
            listed = ", ".join(f"{{name: {c.name}, values: {list(c.values)}}}" for c in found.classes)
            raise UserError(
                f"{where}: its labels {_describe_classes(found)} do not match data.classes "
                f"{_describe_classes(self.scheme)} (names are compared without case, values in order); take the "
                f"dataset's with 'data.classes=[]', or declare them as it does: 'data.classes=[{listed}]'"
            )

    def use_ignore(self, value: int, where: str) -> None:
        """Take the ignore label the dataset declares (nnU-Net's ``"ignore"`` in the file ``where``): its pixels
        become the scheme's ignore atom (``labels``); ``UserError`` naming ``where`` unless it is the highest
        label value."""
        try:
            self.scheme = label_scheme(self.scheme.classes, self.scheme.foreground, ignore=value)
        except UserError as err:
            raise UserError(f"{where}: {err}") from None

    @staticmethod
    def detect(root: Path) -> bool:
        """Whether the folder ``root`` looks like this layout."""
        raise NotImplementedError

    def scan(self) -> None:
        """Find the layout's items on disk: set ``entries``, append structural problems to ``problems``."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Case:
        return self.load(index)

    @property
    def patients(self) -> list[str]:
        return [e.patient_id for e in self.entries]

    @property
    def annotators(self) -> int:
        """The largest annotator count among the entries (0 for unlabelled data)."""
        return max((len(e.masks) for e in self.entries), default=0)

    def subset(self, indices: Sequence[int]) -> Reader:
        """A reader of the same layout over ``indices`` only (scan problems are kept)."""
        out = copy.copy(self)
        out.entries = [self.entries[i] for i in indices]
        out._files = _FileCache(intensity=self.intensity)
        return out

    def set_intensity(self, params: Sequence[float]) -> None:
        """Read images through one intensity mapping for every file (``files.fixed_intensity`` of ``params``,
        ``DataConfig.intensity``: a CT window or nnU-Net's CT statistics) instead of each file's percentiles
        (``files.normalize_intensity``); ``()`` restores those."""
        self.intensity = tuple(float(v) for v in params)
        self._files = _FileCache(intensity=self.intensity)

    def load(self, index: int) -> Case:
        """Decode entry ``index``; raises ``UserError`` listing its problems."""
        case, problems = self.check(index)
        if problems:
            raise UserError("; ".join(problems))
        assert case is not None  # check() returns a case whenever it reports no problem
        return case

    def check(self, index: int) -> tuple[Case | None, list[str]]:
        """Decode entry ``index`` and return it with every problem found in its files."""
        entry = self.entries[index]
        problems: list[str] = []
        planes, first = [], None
        for path in entry.images:
            try:
                data, normalised, bad = self._files.get(path, as_mask=False)
            except UserError as err:
                problems.append(str(err))
                continue
            if bad:
                problems.append(f"{path}: {bad} NaN or infinite intensity value(s)")
            unsliced = f"where the {self.layout} layout reads one 2D image a file; save each slice as its own file"
            problem = _slice_problem(path, data, entry, unsliced)
            if problem:
                problems.append(problem)
                continue
            plane = _plane(data, normalised, entry)
            if plane.ndim not in (2, 3) or 0 in plane.shape:
                problems.append(
                    f"{path}: not a 2D image (array shape {data.array.shape}; expected (H,W) or (H,W,C), "
                    "or a NIfTI volume)"
                )
                continue
            plane = plane[..., None] if plane.ndim == 2 else plane
            if first is None:
                first = (path, data)
            elif plane.shape[:2] != planes[0].shape[:2] or not _same_geometry(first[1], data):
                problems.append(
                    f"{path}: channel geometry {_describe(data)} differs from {first[0].name} {_describe(first[1])}"
                )
                continue
            planes.append(plane)
        if first is None or problems:
            return None, problems
        image = np.concatenate(planes, axis=2).transpose(2, 0, 1)
        masks = [self._mask(entry, files, image.shape[1:], first, problems) for files in entry.masks]
        if problems:
            return None, problems
        geometry = self._geometry(entry, first[1], image.shape[1:])
        mask_t = torch.from_numpy(np.stack(masks)) if masks else torch.zeros((0, *image.shape[1:]), dtype=torch.uint8)
        return Case(
            torch.from_numpy(np.ascontiguousarray(image)), mask_t, entry.case_id, entry.patient_id, geometry
        ), []

    def _mask(self, entry: Entry, files: tuple[Path, ...], size: tuple[int, int], first, problems: list[str]):
        out = np.zeros(size, dtype=np.uint8)
        for path in files:
            outside = self.containment.outside_problem(path, entry.images[0], "labels")
            if outside is not None:
                problems.append(outside)
                continue
            try:
                data, _, bad = self._files.get(path, as_mask=True)
            except UserError as err:
                problems.append(str(err))
                continue
            if bad:
                problems.append(f"{path}: {bad} NaN or infinite value(s) in a mask")
                continue
            if data.affine is not None and first[1].affine is not None and not _same_geometry(first[1], data):
                problems.append(
                    f"{path}: label geometry {_describe(data)} differs from image {first[0].name} {_describe(first[1])}"
                )
                continue
            if entry.slice_index is not None and data.array.shape[:3] != first[1].array.shape[:3]:
                problems.append(  # one text for every slice: reported once
                    f"{path}: label shape {_shape(data.array.shape[:3])} differs from the image volume's "
                    f"{_shape(first[1].array.shape[:3])} ({first[0].name}); a label volume has its image's shape"
                )
                continue
            problem = _slice_problem(path, data, entry, f"as the label of the 2D image {entry.images[0].name}")
            plane = None if problem else _plane(data, data.array, entry)
            plane = plane[..., 0] if plane is not None and plane.ndim == 3 and plane.shape[2] == 1 else plane
            if plane is not None and plane.ndim != 2:  # several components or time points
                problem = f"{path}: {plane.shape[-1]} values a pixel ({_shape(data.array.shape)}), not one label value"
            if problem:
                problems.append(problem)
                continue
            if plane.shape != tuple(size):
                problems.append(
                    f"{path}: mask size {'x'.join(map(str, plane.shape))} differs from image size "
                    f"{'x'.join(map(str, size))} ({entry.images[0].name})"
                )
                continue
            where = f"{path}" if entry.slice_index is None else f"{path} (slice {entry.slice_index})"
            if self.scheme.binary:
                binary = self._binarise(path, where, plane, entry.labels, problems)
                if binary is not None:
                    np.maximum(out, binary, out=out)  # the union; an ignore atom (2) wins
                continue
            atoms = self._atoms(path, where, plane, problems)
            if atoms is not None:  # several files of one annotator (lesions): later files win where they label
                out = np.where(atoms > 0, atoms, out)
        return out

    def _atoms(self, path: Path, where: str, plane: np.ndarray, problems: list[str]) -> np.ndarray | None:
        """Atom map (H,W) uint8 of one label map (file ``path``, ``where`` naming the slice) under a multi-class
        ``scheme``; ``None`` with a problem when a value is not declared or the file cannot hold exact values."""
        if suffix_of(path) in LOSSY_SUFFIXES:
            problems.append(f"{path}: a JPEG label map cannot hold exact class values; store it as PNG")
            return None
        unknown = self.scheme.undeclared(label_values(plane))
        if unknown:
            problems.append(
                f"{where}: label value(s) {_values(sorted(unknown))} not declared in {self.classes_source} "
                f"{_describe_classes(self.scheme)}"
            )
            return None
        return self.scheme.encode(plane)

    def _binarise(self, path: Path, where: str, plane: np.ndarray, labels, problems: list[str]) -> np.ndarray | None:
        """Foreground of one label map (file ``path``, ``where`` naming the slice): the chosen ``foreground``
        labels, or any non-zero value."""
        if suffix_of(path) in LOSSY_SUFFIXES:  # JPEG masks are never exactly binary: threshold at half
            return (plane >= (128 if plane.dtype == np.uint8 else 0.5)).astype(np.uint8)
        values = label_values(plane)
        ignore = self.scheme.ignore
        nonzero = [v for v in values if v != 0 and v != ignore]
        if labels is not None:
            unknown = sorted(set(nonzero) - set(labels))
            if unknown:
                problems.append(f"{where}: unknown label value(s) {_values(unknown)} (allowed: {_values(labels)})")
                return None
        elif not self.foreground and len(nonzero) > 1:
            problems.append(
                f"{where}: mask is not binary (values {_values(values)}); declare its classes with --classes "
                "NAME=V,... (data.classes, e.g. --classes RV=1,Myo=2,LV=3), or choose the foreground values with "
                "--foreground V,... (data.foreground)"
            )
            return None
        binary = (np.isin(plane, self.foreground) if self.foreground else plane != 0).astype(np.uint8)
        if ignore is not None:
            binary[plane == ignore] = self.scheme.ignore_atom
        return binary

    def _geometry(self, entry: Entry, data: FileData, size) -> Geometry:
        affine = tuple(tuple(float(v) for v in row) for row in data.affine) if data.affine is not None else None
        return Geometry(
            size=(int(size[0]), int(size[1])),
            format=format_of(entry.images[0]),
            sources=tuple(str(p) for p in entry.images),
            mask_sources=tuple(tuple(str(p) for p in files) for files in entry.masks),
            affine=affine,
            spacing=data.spacing,
            volume_id=entry.volume_id,
            slice_index=entry.slice_index,
            volume_shape=entry.volume_shape,
            slice_axis=entry.slice_axis,
            layout=self.layout,
            category=entry.category,
        )


def _same_geometry(a: FileData, b: FileData) -> bool:
    if a.affine is None or b.affine is None:
        return True
    return a.array.shape[:3] == b.array.shape[:3] and bool(np.allclose(a.affine, b.affine, atol=1e-3))


def _shape(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def _describe(data: FileData) -> str:
    shape = "x".join(map(str, data.array.shape[:3]))
    if data.affine is None:
        return shape
    origin = ", ".join(f"{v:g}" for v in data.affine[:3, 3])
    return f"{shape}, spacing {data.spacing}, origin ({origin})"


def _describe_classes(scheme: LabelScheme) -> str:
    return "{" + ", ".join(f"{c.name}: {list(c.values)}" for c in scheme.classes) + "}" if scheme.classes else "{}"


def _values(values) -> str:
    shown = [f"{v:g}" if isinstance(v, float) else str(v) for v in list(values)[:8]]
    return "{" + ", ".join(shown) + (", ..." if len(values) > 8 else "") + "}"


def name_clashes(entries: Sequence[Entry]) -> list[str]:
    """One problem per case (or volume) whose name differs from an earlier one's only in case (``A`` and ``a``):
    ``predict`` would write both to one file where file names ignore case (macOS, Windows). Slices of one volume
    share their volume's name."""
    owners: dict[str, tuple[str, Path]] = {}  # folded output name -> (unit, first image file)
    problems = []
    for e in entries:
        unit = f"volume {e.volume_id}" if e.volume_id is not None else f"case {e.case_id}"
        name = e.volume_id if e.volume_id is not None else e.case_id
        first = owners.setdefault(name.casefold(), (unit, e.images[0]))
        if first[0] != unit:
            problems.append(
                f"{first[1]} and {e.images[0]}: both would be predicted as {name}.* (names that differ only in "
                "case are one file on macOS and Windows); rename one of them"
            )
    return problems


def annotator_problems(
    where: Path, images: Collection[str], per_annotator: Sequence[Mapping[str, Path]], names: Sequence[str], orphan: str
) -> list[str]:
    """The structural problems of one mask set per annotator (stem -> file): sets of unequal size, and
    masks whose stem is no image's (``"<file>: <orphan> (<annotator name>)"``).

    Args:
        where: the folder the unequal-size problem names.
        images: the image stems.
        per_annotator: per annotator, its masks by stem.
        names: per annotator, the name the problems give it.
        orphan: the problem of a mask without an image, e.g. ``"mask without an image"``.
    """
    problems = []
    counts = [len(found) for found in per_annotator]
    if len(set(counts)) > 1:
        listing = ", ".join(f"{n}: {c}" for n, c in zip(names, counts))
        problems.append(f"{where}: annotator folders of unequal length ({listing})")
    for name, found in zip(names, per_annotator):
        for stem in sorted(set(found) - set(images)):
            problems.append(f"{found[stem]}: {orphan} ({name})")
    return problems
