"""3D volumes cut into the 2D entries every reader yields: their shapes read from headers, one entry per slice."""

from __future__ import annotations

from pathlib import Path

from diffuseg.data.formats.base import Entry
from diffuseg.data.formats.files import HDF5_SUFFIXES, ITK_SUFFIXES, NIFTI_SUFFIXES, itk_shape, suffix_of
from diffuseg.errors import UserError


def nifti_slices(path: Path) -> tuple[int, ...] | None:
    """Shape of a NIfTI file from its header alone, or ``None`` when the header cannot be read."""
    import nibabel as nib

    try:
        return tuple(int(s) for s in nib.load(str(path)).shape)
    except Exception:  # a corrupt header: the entry is kept and decoding reports the file
        return None


def itk_slices(path: Path) -> tuple[int, ...] | None:
    """Shape (X,Y[,Z]) of an ``.mha`` / ``.nrrd`` file from its header, or ``None`` when it cannot be read
    (decoding reports it)."""
    try:
        return itk_shape(path)
    except (UserError, RuntimeError):
        return None


def hdf5_shape(path: Path) -> tuple[int, ...] | None:
    """Shape of an HDF5 file's ``image`` dataset, or ``None`` when it cannot be read (decoding reports it)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            image = f.get("image")
            return tuple(int(s) for s in image.shape) if isinstance(image, h5py.Dataset) else None
    except OSError:
        return None


def expand_volumes(entries: list[Entry]) -> list[Entry]:
    """Replace each entry whose first image is a 3D volume by one entry per slice: a NIfTI, MetaImage or NRRD
    volume along its third array axis (X,Y,Z), an HDF5 ``image`` (D,H,W) along its first (as SSL4MIS cuts it)."""
    out: list[Entry] = []
    for e in entries:
        first = e.images[0]
        suffix = suffix_of(first)
        readers = {**dict.fromkeys(NIFTI_SUFFIXES, nifti_slices), **dict.fromkeys(ITK_SUFFIXES, itk_slices)}
        shape = readers.get(suffix, hdf5_shape if suffix in HDF5_SUFFIXES else lambda _: None)(first)
        axis = 0 if suffix in HDF5_SUFFIXES else 2
        if shape is None or len(shape) < 3 or (axis == 0 and len(shape) != 3) or shape[axis] <= 1:
            out.append(e)
            continue
        for z in range(shape[axis]):
            out.append(
                Entry(
                    case_id=f"{e.case_id}_z{z:04d}",
                    patient_id=e.patient_id,
                    images=e.images,
                    masks=e.masks,
                    slice_index=z,
                    volume_id=e.case_id,
                    volume_shape=shape[:3],
                    labels=e.labels,
                    category=e.category,
                )
            )
    return out
