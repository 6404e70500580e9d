"""Which array axis a volume is cut along into 2D items: the through-plane axis its affine says.

``through_plane_axis(affine, shape)``: for arrays indexed (X,Y,Z) with a RAS ``affine`` (NIfTI, MetaImage, NRRD,
DICOM series; ``files``, ``dicom``), the voxel spacings are the affine's column norms. A volume whose largest
spacing is at least ``ANISOTROPY`` times its smallest is cut across that axis (its slices are the acquired planes:
a thick-slice sagittal MRI gives sagittal items); an isotropic one across the axis closest to the superior-inferior
direction (axial items). With every axis of one spacing and none closer to S-I than another (an identity affine),
or a singleton axis, it is the third axis, as before the affine was read. HDF5 volumes (D,H,W) carry no affine and
are cut along their first axis (``files``). Predictions are written with their input's affine, so ``volume_axis``
of a predicted file finds the same axis. ``volume_header`` reads a volume's shape, affine and spacing from its
header alone, for the axis here and for ``data.spacing``'s checks.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from diffuseg.data.formats.dicom import is_series_folder, series_info
from diffuseg.data.formats.files import ITK_SUFFIXES, NIFTI_SUFFIXES, nifti_spacing, suffix_of
from diffuseg.data.formats.itk import itk_affine, sitk_module

ANISOTROPY = 1.5  # spacing ratio above which the coarse axis is the through-plane axis


def through_plane_axis(affine: np.ndarray, shape: tuple[int, ...]) -> int:
    """The array axis (0, 1 or 2) a volume of ``shape`` (X,Y,Z,...) with RAS ``affine`` is cut along (module
    docstring)."""
    if len(shape) < 3 or min(shape[:3]) <= 1:
        return 2
    columns = np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    if spacing.min() > 0 and spacing.max() >= ANISOTROPY * spacing.min():
        coarse = np.flatnonzero(np.isclose(spacing, spacing.max()))
        return 2 if 2 in coarse else int(coarse[-1])
    towards_si = np.abs(columns[2]) / np.where(spacing > 0, spacing, 1.0)
    best = np.flatnonzero(np.isclose(towards_si, towards_si.max()))
    return 2 if 2 in best else int(best[-1])


class VolumeHeader(NamedTuple):
    """A volume as its header gives it: ``shape`` (X,Y[,Z,...]), its RAS ``affine`` (4x4) and ``spacing`` (mm per
    voxel along the first up to three axes, as its reader gives it: ``files.nifti_spacing``, SimpleITK's,
    ``dicom.series_info``'s)."""

    shape: tuple[int, ...]
    affine: np.ndarray
    spacing: tuple[float, ...]


def volume_header(path: str | os.PathLike) -> VolumeHeader | None:
    """The header of a NIfTI, MetaImage or NRRD file, or a DICOM series folder, read alone; ``None`` for another
    format, a path that is no regular file or series folder, or a header that does not parse (decoding reports
    the file)."""
    suffix = suffix_of(path)
    try:
        if is_series_folder(path):
            series = series_info(path)
            return VolumeHeader(series.shape, series.affine, series.spacing)
        if not Path(path).is_file():  # a pipe would block: ``Reader`` names the file
            return None
        if suffix in NIFTI_SUFFIXES:
            import nibabel as nib

            image = nib.load(str(path))
            shape = tuple(int(s) for s in image.shape)
            return VolumeHeader(shape, np.asarray(image.affine, dtype=np.float64), nifti_spacing(image))
        if suffix in ITK_SUFFIXES:
            reader = sitk_module(path).ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            shape = tuple(int(s) for s in reader.GetSize())
            affine = itk_affine(reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())
            return VolumeHeader(shape, affine, tuple(float(s) for s in reader.GetSpacing()))
    except Exception:  # corrupt, or SimpleITK missing: the entry is kept and decoding reports the file
        return None
    return None


def volume_axis(path: str | os.PathLike) -> int:
    """``through_plane_axis`` of the volume file ``path`` from its header (the third axis when it has none)."""
    p = Path(path)
    try:
        stamp = p.stat().st_mtime_ns
    except OSError:
        return 2
    return _cached_axis(str(p.resolve()), stamp)


@functools.lru_cache(maxsize=256)
def _cached_axis(path: str, stamp: int) -> int:
    header = volume_header(path)
    return 2 if header is None else through_plane_axis(header.affine, header.shape)
