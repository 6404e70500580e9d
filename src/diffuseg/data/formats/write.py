"""Writing arrays back as volumes of the input's own format with the input's geometry and header: NIfTI through
nibabel (the input's header copied: units, qform/sform and their codes, description, ...), MetaImage and NRRD
through SimpleITK (spacing, origin, direction, and the input's metadata). Arrays are indexed (X,Y[,Z]) with a RAS
``affine``, as ``files.read_file`` gives them.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np

from diffuseg.data.formats.files import NIFTI_SUFFIXES, itk_geometry, sitk_module, suffix_of


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
    try:
        writer.Execute(image)
    except RuntimeError:  # ITK says only that it could not write: a full disk is told by the room left
        if shutil.disk_usage(Path(path).parent).free < array.nbytes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
        raise
