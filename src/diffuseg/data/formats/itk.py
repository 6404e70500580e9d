"""SimpleITK, the optional extra that reads and writes MetaImage, NRRD and DICOM series, and its geometry.

ITK holds an image as an array (Z,Y,X) with LPS spacing, origin and direction; diffuseg's volumes are arrays
indexed (X,Y,Z) with a RAS ``affine``, as nibabel gives NIfTI (``files``). ``itk_affine`` turns ITK's geometry into
that affine, ``itk_geometry`` turns it back when writing.
"""

from __future__ import annotations

import os

import numpy as np

from diffuseg.errors import UserError

ITK_EXTRA = "diffuseg[itk]"  # the optional dependencies that bring SimpleITK


def sitk_module(path: str | os.PathLike, what: str = ""):
    """SimpleITK, or a ``UserError`` naming ``path``, what it is (``what``, default ``.<ending> files``) and the
    extra that installs it."""
    try:
        import SimpleITK
    except ImportError:
        ending = os.path.basename(os.fspath(path)).lower().rsplit(".", 1)[-1]
        raise UserError(
            f"{path}: {what or f'.{ending} files'} are read and written through SimpleITK, which is not installed: "
            f"pip install '{ITK_EXTRA}'"
        ) from None
    return SimpleITK


def itk_affine(spacing, origin, direction) -> np.ndarray:
    """The 4x4 RAS affine of an ITK image's LPS geometry (``direction`` row-major, as SimpleITK gives it), for
    arrays indexed (X,Y,Z); 2D images get a third axis of spacing 1, and a 4D image (3D + time) the affine of its
    first three axes, as nibabel gives a 4D NIfTI."""
    n = min(len(spacing), 3)
    d = np.eye(3)
    d[:n, :n] = np.asarray(direction, dtype=np.float64).reshape(len(spacing), len(spacing))[:n, :n]
    s = np.ones(3)
    s[:n] = spacing[:n]
    o = np.zeros(3)
    o[:n] = origin[:n]
    lps = np.eye(4)
    lps[:3, :3] = d * s
    lps[:3, 3] = o
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def itk_geometry(affine: np.ndarray, dims: int) -> tuple[tuple, tuple, tuple]:
    """(spacing, origin, direction) of ``dims`` axes from a RAS ``affine`` (``itk_affine`` inverted)."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    columns = lps[:dims, :dims]
    spacing = np.linalg.norm(columns, axis=0)
    direction = columns / spacing
    return tuple(float(v) for v in spacing), tuple(float(v) for v in lps[:dims, 3]), tuple(direction.ravel().tolist())
