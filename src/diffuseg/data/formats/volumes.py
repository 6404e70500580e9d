"""3D volumes cut into the 2D entries every reader yields: their shapes read from headers, one entry per slice."""

from __future__ import annotations

from pathlib import Path

from diffuseg.data.formats.base import Entry
from diffuseg.data.formats.files import HDF5_SUFFIXES, suffix_of
from diffuseg.data.formats.orientation import through_plane_axis, volume_header


def hdf5_shape(path: Path) -> tuple[int, ...] | None:
    """Shape of an HDF5 file's ``image`` dataset, or ``None`` when it cannot be read (decoding reports it)."""
    import h5py

    if not path.is_file():  # a pipe would block: ``Reader`` names the file
        return None
    try:
        with h5py.File(path, "r") as f:
            image = f.get("image")
            return tuple(int(s) for s in image.shape) if isinstance(image, h5py.Dataset) else None
    except OSError:
        return None


def expand_volumes(entries: list[Entry]) -> list[Entry]:
    """Replace each entry whose first image is a 3D volume by one entry per slice: a NIfTI, MetaImage or NRRD
    volume (X,Y,Z) across its through-plane axis (``orientation.through_plane_axis``), an HDF5 ``image`` (D,H,W)
    along its first axis (as SSL4MIS cuts it)."""
    out: list[Entry] = []
    for e in entries:
        first = e.images[0]
        shape, axis = _volume(first)
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
                    slice_axis=axis,
                )
            )
    return out


def _volume(path: Path) -> tuple[tuple[int, ...] | None, int]:
    """(shape, the axis it is cut along) of a volume file; shape ``None`` for a file that is none."""
    if suffix_of(path) in HDF5_SUFFIXES:
        return hdf5_shape(path), 0
    header = volume_header(path)
    if header is None:
        return None, 2
    return header.shape, through_plane_axis(header.affine, header.shape)
