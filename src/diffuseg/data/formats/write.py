"""Writing arrays back as volumes of the input's own format with the input's geometry and header: NIfTI through
nibabel (the input's header copied: units, qform/sform and their codes, description, ...), MetaImage and NRRD
through SimpleITK (spacing, origin, direction, and the input's metadata), a DICOM series as a folder of slice files
through SimpleITK's GDCM (``write_dicom``). Arrays are indexed (X,Y[,Z]) with a RAS ``affine``, as
``files.read_file`` gives them.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from pathlib import Path

import numpy as np

from diffuseg.data.formats.dicom import DICOM_FORMAT, WHAT, gdcm, series_info, series_tags
from diffuseg.data.formats.files import NIFTI_SUFFIXES, suffix_of
from diffuseg.data.formats.itk import itk_geometry, sitk_module

# patient and study tags copied from the input series: SpecificCharacterSet, PatientName, PatientID,
# PatientBirthDate, PatientSex, StudyInstanceUID, StudyDate, StudyTime, StudyID, AccessionNumber,
# ReferringPhysicianName, StudyDescription, FrameOfReferenceUID
COPIED_TAGS = (
    "0008|0005",
    "0010|0010",
    "0010|0020",
    "0010|0030",
    "0010|0040",
    "0020|000d",
    "0008|0020",
    "0008|0030",
    "0020|0010",
    "0008|0050",
    "0008|0090",
    "0008|1030",
    "0020|0052",
)
UNCERTAINTY_SLOPE = 0.001  # a DICOM uncertainty map stores round(u / slope), 0..1000, with this RescaleSlope
_DS_LENGTH = 16  # the longest decimal string (DS) DICOM allows


def write_nifti(path: str | os.PathLike, array: np.ndarray, affine: np.ndarray, source: str | None = None) -> None:
    """Write ``array`` with ``affine`` to ``path``; with a NIfTI ``source``, a copy of its header (the data type
    and shape those of ``array``, no intensity scaling), so units, qform/sform codes and text fields carry over."""
    import nibabel as nib

    header = None
    if source is not None and suffix_of(source) in NIFTI_SUFFIXES and Path(source).is_file():
        header = nib.load(str(source)).header.copy()
        header.set_data_dtype(array.dtype)
        header.set_slope_inter(1.0, 0.0)
    image = nib.Nifti1Image(array, affine, header=header)
    if header is not None:  # the codes of the input, with its matrices (equal to affine, which they gave)
        image.set_qform(affine, code=int(header["qform_code"]))
        image.set_sform(affine, code=int(header["sform_code"]))
    nib.save(image, str(path))


def write_itk(
    path: str | os.PathLike, array: np.ndarray, affine: np.ndarray, source: str | None = None, ext: str = ""
) -> None:
    """Write ``array`` (X,Y[,Z]) as the MetaImage or NRRD file ``path`` (format by ``ext``, else the ending) with
    the spacing, origin and direction of ``affine``; with a ``source`` ITK file, its metadata keys too. A write
    that fails with less room left on the disk than the array takes is ``OSError`` ENOSPC (``files.disk_full``)."""
    sitk = sitk_module(path)
    dims = array.ndim
    image = sitk.GetImageFromArray(
        np.ascontiguousarray(np.moveaxis(array, tuple(range(dims)), tuple(reversed(range(dims)))))
    )
    spacing, origin, direction = itk_geometry(affine, dims)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    if source is not None and suffix_of(source) == suffix_of(f"x.{ext}" if ext else path) and Path(source).is_file():
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(source))
        reader.ReadImageInformation()
        for key in reader.GetMetaDataKeys():
            if not key.startswith(("ITK_", "NRRD_")):  # the file's own layout keys are the writer's to set
                image.SetMetaData(key, reader.GetMetaData(key))
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(path))
    writer.SetImageIO("MetaImageIO" if (ext or suffix_of(path)) == "mha" else "NrrdImageIO")
    writer.UseCompressionOn()
    _execute(writer, image, Path(path), array.nbytes)


def _execute(writer, image, path: Path, nbytes: int) -> None:
    """``writer.Execute(image)``; a write that fails with less room left on the disk than ``nbytes`` is ``OSError``
    ENOSPC (``files.disk_full``)."""
    try:
        writer.Execute(image)
    except RuntimeError:  # ITK says only that it could not write: a full disk is told by the room left
        if shutil.disk_usage(path.parent).free < nbytes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
        raise


def write_dicom(folder: str | os.PathLike, array: np.ndarray, affine: np.ndarray, source: str, role: str) -> None:
    """Write ``array`` (X,Y[,Z]) into the empty ``folder`` as a DICOM series of the input series ``source``, one
    file per slice of the third axis (``NNNN.dcm``, from 0).

    Each slice has its position and orientation from ``affine`` (ImagePositionPatient, ImageOrientationPatient,
    PixelSpacing; SliceThickness the input's, else the slice distance), the input's patient and study tags
    (``COPIED_TAGS``), Modality ``OT`` (a label-map image series, not a DICOM-SEG object), SeriesDescription
    ``diffuseg <role>`` (``mask``, ``uncertainty``, ``sample K``), and UIDs of the form ``2.25.<integer>`` (DICOM
    PS3.5 B.2) made from the input's series UID, ``role`` and the content, so equal writes give equal files.
    Integer arrays (masks, label maps) are stored as they are; float arrays (uncertainty in [0, 1]) as
    ``round(u / UNCERTAINTY_SLOPE)`` in 16 bits with RescaleSlope ``UNCERTAINTY_SLOPE``, which readers apply.
    """
    folder = Path(folder)
    sitk = sitk_module(folder, WHAT)
    volume = array[:, :, None] if array.ndim == 2 else array
    spacing, origin, direction = itk_geometry(affine, 3)
    columns = np.reshape(direction, (3, 3))
    source_uid = series_info(source).uid
    tags = series_tags(source, (*COPIED_TAGS, "0018|0050"))
    thickness = tags.pop("0018|0050", "") or _ds(spacing[2])
    digest = hashlib.sha256(np.ascontiguousarray(volume).tobytes()).hexdigest()
    series_uid = _uid(source_uid, role, digest)
    shared = {
        **tags,
        "0020|000d": tags.get("0020|000d") or _uid(source_uid, "study"),
        "0020|0052": tags.get("0020|0052") or _uid(source_uid, "frame of reference"),
        "0008|0060": "OT",
        "0008|0008": "DERIVED\\SECONDARY",
        "0008|103e": f"diffuseg {role}",
        "0020|000e": series_uid,
        "0020|0037": "\\".join(_ds(v) for v in (*columns[:, 0], *columns[:, 1])),
        "0028|0030": f"{_ds(spacing[1])}\\{_ds(spacing[0])}",  # row spacing (along Y), then column spacing (X)
        "0018|0050": thickness,
    }
    if volume.dtype.kind == "f":  # GDCM scales the floats to the stored 16-bit integers by the slope
        shared |= {"0028|0100": "16", "0028|0101": "16", "0028|0102": "15", "0028|0103": "0"}
        shared |= {"0028|1052": "0", "0028|1053": _ds(UNCERTAINTY_SLOPE)}
    with gdcm(sitk):
        _write_slices(sitk, folder, volume, shared, (spacing, origin, columns))


def _write_slices(sitk, folder: Path, volume: np.ndarray, shared: dict, geometry: tuple) -> None:
    """One file per slice of ``volume`` (X,Y,Z) with the tags ``shared`` and its own (``write_dicom``);
    ``geometry`` is (spacing, origin, direction columns) in LPS."""
    spacing, origin, columns = geometry
    floats = volume.dtype.kind == "f"
    width = max(4, len(str(volume.shape[2] - 1)))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()  # the UIDs set here, not new random ones
    writer.SetImageIO("GDCMImageIO")
    series_uid = shared["0020|000e"]
    for z in range(volume.shape[2]):
        plane = volume[:, :, z].T  # (Y,X), as SimpleITK holds a 2D image
        image = sitk.GetImageFromArray(np.ascontiguousarray(plane.astype(np.float32) if floats else plane))
        image.SetSpacing(spacing[:2])
        position = np.asarray(origin) + z * spacing[2] * columns[:, 2]
        for key, value in {
            **shared,
            "0008|0018": _uid(series_uid, str(z)),
            "0020|0013": str(z + 1),
            "0020|0032": "\\".join(_ds(v) for v in position),
        }.items():
            image.SetMetaData(key, value)
        path = folder / f"{z:0{width}d}.{DICOM_FORMAT}"
        writer.SetFileName(str(path))
        _execute(writer, image, path, plane.nbytes)


def _uid(*parts: str) -> str:
    """A UID under the ``2.25`` root (a UUID as one integer, DICOM PS3.5 B.2) from the SHA-256 of ``parts``."""
    return "2.25." + str(int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:16], "big"))


def _ds(value: float) -> str:
    """``value`` as a DICOM decimal string: the most significant digits that fit its 16 characters."""
    for digits in range(15, 0, -1):
        text = f"{float(value):.{digits}g}"
        if len(text) <= _DS_LENGTH:
            return text
    return "0"
