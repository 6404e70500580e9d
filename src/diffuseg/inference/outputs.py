"""The prediction folder: what ``diffuseg predict`` writes and ``evaluate`` and ``report`` read back.

``OUTPUT/`` holds, per case (or per 3D volume, whose 2D slices are written as one file):

- ``<name>.<ext>``: the fused mask. Binary: {0, 1}, written as {0, 255} in PNG. Several classes: the label map
  in the dataset's own values (``labels.LabelScheme.to_values``; no scaling in PNG either), uint8, or uint16
  for values above 255.
- ``<name>_uncertainty.<ext>`` (``UNCERTAINTY``): the uncertainty map, ``u`` in [0, 1]; 16-bit PNG holds
  ``round(u * UNCERTAINTY_SCALE)``, DICOM ``round(u * 1000)`` with RescaleSlope 0.001 (``formats.write``), the
  other formats float32. HDF5 keeps it in the dataset ``uncertainty`` and, with several classes, one dataset per
  class (``class_uncertainty_dataset``).
- ``samples/<name>_sNNN.<ext>`` (``SAMPLES``, ``prediction_files``): every member, as the fused mask.
- ``config.yaml`` (``CONFIG_NAME``): the resolved config of the run; ``prediction.json``
  (``inference.provenance``) and ``manifest*.json`` (``inference.manifest``).

``<name>`` is the case id, or the volume id for the slices of a 3D volume (``output_name``); ``<ext>`` is the
input's own format for NIfTI, MetaImage, NRRD, ``.npy`` and HDF5, else ``png`` (``output_format``). A DICOM series
input gives DICOM series: folders ``<name>/``, ``<name>_uncertainty/`` and ``samples/<name>_sNNN/`` without an
ending, one file per slice (``formats.write.write_dicom``). A volume is
stacked along the axis it was cut along: the through-plane axis of its affine (NIfTI, MetaImage, NRRD: (X,Y,Z);
``formats.orientation``) or its first (HDF5 (D,H,W)): ``slice_axis``.

``find_predictions`` indexes such a folder (also the looser layouts other tools write: ``samples/<case>/*``,
``samples/<case>_<k>.<ext>``); ``read_mask``, ``read_uncertainty`` and ``plane`` read the files back.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffuseg.data.case import Geometry
from diffuseg.data.formats.dicom import DICOM_FORMAT, is_series_folder
from diffuseg.data.formats.files import (
    HDF5_SUFFIXES,
    LOSSY_SUFFIXES,
    VOLUME_SUFFIXES,
    is_image_file,
    label_values,
    name_of,
    natural_key,
    read_file,
    suffix_of,
)
from diffuseg.data.formats.orientation import volume_axis
from diffuseg.errors import UserError
from diffuseg.labels import LabelScheme

UNCERTAINTY = "_uncertainty"
SAMPLES = "samples"
CONFIG_NAME = "config.yaml"
UNCERTAINTY_SCALE = 65535
MASK_DATASET = "label"  # the SSL4MIS dataset ``data.formats`` reads masks from
UNCERTAINTY_DATASET = "uncertainty"
_SAMPLE_INDEX = re.compile(r"^(.*?)[_-](?:sample|s)?[_-]?(\d+)$")


def output_format(geometry: Geometry) -> str:
    """Format of the written files: ``png``, ``npy``, ``nii``, ``nii.gz``, ``mha``, ``nrrd``, ``h5``/``hdf5``, or
    ``dcm`` (DICOM series folders)."""
    kept = (*VOLUME_SUFFIXES, "npy", *HDF5_SUFFIXES, DICOM_FORMAT)
    return geometry.format if geometry.format in kept else "png"


def output_name(geometry: Geometry, case_id: str) -> str:
    """Stem of a case's files: the volume id for slices of a 3D volume, else the case id."""
    return geometry.volume_id if geometry.volume_id is not None else case_id


def slice_axis(geometry: Geometry) -> int:
    """The volume axis a case's 2D slice lies across: its own (``Geometry.slice_axis``), else 0 for HDF5 (D,H,W)
    and 2 for NIfTI, MetaImage and NRRD."""
    if geometry.slice_axis is not None:
        return geometry.slice_axis
    return 0 if geometry.format in HDF5_SUFFIXES else 2


def file_slice_axis(path: Path) -> int:
    """The axis a predicted volume file is cut along: 0 for HDF5, else the through-plane axis of its header's
    affine (``formats.orientation.volume_axis``; the writer keeps the input's affine, so the input's axis)."""
    return 0 if suffix_of(path) in HDF5_SUFFIXES else volume_axis(path)


def class_uncertainty_dataset(name: str) -> str:
    """The HDF5 dataset of class ``name``'s uncertainty map."""
    return f"{UNCERTAINTY_DATASET}_{name.replace('/', '_')}"


@dataclass
class PredictionFiles:
    """The files of one predicted case: fused mask, uncertainty map (optional) and samples (maybe none)."""

    fused: Path
    uncertainty: Path | None = None
    samples: list[Path] = field(default_factory=list)


def prediction_files(folder: str | os.PathLike, name: str, ext: str, samples: int = 0) -> PredictionFiles:
    """Where ``predict`` writes the files of ``name`` in format ``ext`` (DICOM: folders without an ending), with
    ``samples`` members."""
    root = Path(folder)
    ending = "" if ext == DICOM_FORMAT else f".{ext}"
    return PredictionFiles(
        root / f"{name}{ending}",
        root / f"{name}{UNCERTAINTY}{ending}",
        [root / SAMPLES / f"{name}_s{k:03d}{ending}" for k in range(samples)],
    )


def _is_prediction_file(path: Path) -> bool:
    """An image file, an HDF5 file (``predict`` writes HDF5 for SSL4MIS input) or a DICOM series folder."""
    return is_image_file(path) or (path.is_file() and suffix_of(path) in HDF5_SUFFIXES) or is_series_folder(path)


def find_predictions(folder: str | os.PathLike) -> dict[str, PredictionFiles]:
    """Index a prediction folder by case id (the fused mask's stem). ``UserError`` when it has none."""
    root = Path(folder)
    if not root.is_dir():
        raise UserError(f"{root}: prediction folder not found")
    top = sorted(p for p in root.iterdir() if _is_prediction_file(p))
    found = {name_of(p): PredictionFiles(p) for p in top if not name_of(p).endswith(UNCERTAINTY)}
    if not found:
        raise UserError(f"{root}: no predicted masks here (expected <case>.png, <case>.nii.gz, ... as predict writes)")
    for p in top:
        stem = name_of(p)
        if stem.endswith(UNCERTAINTY) and stem[: -len(UNCERTAINTY)] in found:
            found[stem[: -len(UNCERTAINTY)]].uncertainty = p
    samples_dir = root / SAMPLES
    if samples_dir.is_dir():
        for p in sorted(samples_dir.rglob("*"), key=lambda q: natural_key(str(q))):
            if not _is_prediction_file(p):
                continue
            case = _sample_case(p, samples_dir, found)
            if case is None:
                raise UserError(f"{p}: sample of no predicted case (expected samples/<case>/... or <case>_<k>)")
            found[case].samples.append(p)
    return found


def _sample_case(path: Path, samples_dir: Path, known: dict[str, PredictionFiles]) -> str | None:
    rel = path.relative_to(samples_dir)
    if len(rel.parts) > 1 and rel.parts[0] in known:
        return rel.parts[0]
    stem = name_of(path)
    candidates = [c for c in known if stem.startswith(c) and re.fullmatch(r"[_.-].*", stem[len(c) :])]
    if candidates:
        return max(candidates, key=len)
    m = _SAMPLE_INDEX.match(stem)
    return m.group(1) if m and m.group(1) in known else None


def plane(array: np.ndarray, path: Path, slice_index: int | None) -> np.ndarray:
    """Slice ``slice_index`` of a predicted volume read from ``path`` (``file_slice_axis``); ``array`` itself for
    ``None``. ``UserError`` when the file has no such slice."""
    if slice_index is None:
        return array
    axis = file_slice_axis(path)
    if array.ndim != 3 or slice_index >= array.shape[axis]:
        raise UserError(f"{path}: has no slice {slice_index} (shape {'x'.join(map(str, array.shape))})")
    return np.ascontiguousarray(np.take(array, slice_index, axis=axis))


def read_mask(path: Path, scheme: LabelScheme, slice_index: int | None = None) -> np.ndarray:
    """A predicted mask as the atom map uint8 of ``scheme`` (``plane`` ``slice_index`` of a volume).

    Binary: {0, 1} from any 0/non-zero file (JPEG thresholded at half its range); ``UserError`` for several
    non-zero values (a probability or label map). Several classes: the label map in the dataset's values;
    ``UserError`` for a lossy file, a non-integer value or a value the scheme does not declare."""
    data = read_file(path, as_mask=True)
    array = _squeeze(data.array, data.affine)
    atoms = _binary_atoms(array, path) if scheme.binary else _label_atoms(array, path, scheme)
    return plane(atoms, path, slice_index)


def _squeeze(array: np.ndarray, affine) -> np.ndarray:
    """A 2D NIfTI image (H,W,1) as (H,W)."""
    return array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 and affine is not None else array


def _binary_atoms(array: np.ndarray, path: Path) -> np.ndarray:
    if suffix_of(path) in LOSSY_SUFFIXES:  # JPEG is never exactly binary: threshold at half, as the readers do
        return (array >= (128 if array.dtype == np.uint8 else 0.5)).astype(np.uint8)
    nonzero = [v for v in label_values(array) if v != 0]
    if len(nonzero) > 1 or (array.dtype.kind == "f" and nonzero and nonzero != [1]):
        shown = ", ".join(f"{v:g}" for v in nonzero[:5]) + (", ..." if len(nonzero) > 5 else "")
        raise UserError(
            f"{path}: predicted mask is not binary (non-zero values {shown}); evaluate scores 0/1 masks "
            "as `diffuseg predict` writes them, not probability or label maps"
        )
    return (array != 0).astype(np.uint8)


def _label_atoms(array: np.ndarray, path: Path, scheme: LabelScheme) -> np.ndarray:
    if suffix_of(path) in LOSSY_SUFFIXES:
        raise UserError(f"{path}: a label map cannot be scored from a lossy JPEG; write it as PNG (predict does)")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise UserError(f"{path}: predicted label map holds non-integer values (a probability map?)")
        array = array.astype(np.int64)
    unknown = scheme.undeclared(label_values(array))
    if unknown:
        shown = ", ".join(str(v) for v in sorted(unknown)[:5]) + (", ..." if len(unknown) > 5 else "")
        declared = ", ".join(f"{c.name}={'+'.join(map(str, c.values))}" for c in scheme.classes)
        raise UserError(f"{path}: label value(s) {shown} not declared by the classes ({declared})")
    return scheme.encode(array)


def read_uncertainty(path: Path, slice_index: int | None = None) -> np.ndarray:
    """An uncertainty map as float64 in [0, 1] (``plane`` ``slice_index`` of a volume): 8- and 16-bit PNGs
    hold ``round(u * 255)`` or ``round(u * UNCERTAINTY_SCALE)``; HDF5 the dataset ``uncertainty``."""
    if suffix_of(path) in HDF5_SUFFIXES:
        return plane(_read_hdf5(path, UNCERTAINTY_DATASET), path, slice_index).astype(np.float64)
    data = read_file(path)
    array = plane(_squeeze(data.array, data.affine), path, slice_index).astype(np.float64)
    return array / {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): float(UNCERTAINTY_SCALE)}.get(data.array.dtype, 1.0)


def _read_hdf5(path: Path, key: str) -> np.ndarray:
    """The dataset ``key`` of an HDF5 file; ``UserError`` naming the file when it is unreadable or missing."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return np.asarray(f[key][()])
    except (OSError, KeyError) as err:
        raise UserError(f"{path}: no readable dataset {key!r} ({err})") from None
