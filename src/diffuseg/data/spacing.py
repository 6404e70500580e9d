"""``data.resize: spacing``: each 2D item resampled to ``data.spacing`` (rows, columns; mm per pixel), keeping its
physical aspect, then padded to the S x S input as ``pad`` pads (``transforms.Fit``).

An item's pixel spacing is its file's (``case.Geometry.plane_spacing``: NIfTI's zooms, MetaImage's and NRRD's
spacing, a DICOM series' as SimpleITK reads its headers, ``formats.dicom``), along the two axes its volume is not
cut across (``formats.orientation``); PNG, JPEG, TIFF, ``.npy`` and HDF5 files record none and are refused.
Resampled, an (H,W) item is ``round(H * row / target_row) x round(W * col / target_col)`` pixels
(``resampled_shape``); one larger than S x S is refused, never cropped. ``data.spacing: []`` is computed from the
run's cases (``fitting_spacing``): the finest isotropic spacing at which the largest of them fits. The checks read
headers alone (``plane_headers``, through ``formats.orientation.volume_header``), so they run before anything is
decoded.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from diffuseg.data.case import Geometry
from diffuseg.data.formats import Reader
from diffuseg.data.formats.dicom import is_series_folder
from diffuseg.data.formats.files import ITK_SUFFIXES, NIFTI_SUFFIXES, suffix_of
from diffuseg.data.formats.orientation import volume_header
from diffuseg.errors import UserError

Plane = tuple[str, tuple[int, int], tuple[float, ...] | None]  # (file, in-plane (H,W), in-plane spacing in mm)


def round_up(value: float, digits: int = 4) -> float:
    """``value`` > 0 rounded up to ``digits`` significant digits (a spacing that still fits, written short)."""
    decimals = digits - 1 - math.floor(math.log10(value))
    return round(math.ceil(value * 10.0**decimals - 1e-6) / 10.0**decimals, decimals)


def resampled_shape(
    height: int, width: int, pixel: Sequence[float] | None, target: Sequence[float], size: int, where: str
) -> tuple[int, int]:
    """(h, w) of an (H,W) item of ``pixel`` mm per pixel (rows, columns; ``None``: unknown) resampled to
    ``target``; ``UserError`` naming ``where`` when its spacing is unknown or (h, w) does not fit in S x S.

    Args:
        height: H.
        width: W.
        pixel: the item's spacing (``Geometry.plane_spacing``).
        target: ``data.spacing``.
        size: S, ``data.image_size``.
        where: the file the messages name.
    """
    pixel = known_spacing(pixel, where)
    h, w = (max(1, round(n * p / t)) for n, p, t in zip((height, width), pixel, target))
    if max(h, w) > size:
        need = [max(t, round_up(n * p / size)) for n, p, t in zip((height, width), pixel, target)]
        fits = ", ".join(f"{v:g}" for v in (need if target[0] != target[1] else [max(need)] * 2))  # square stays square
        raise UserError(
            f"{where}: {height} x {width} pixels of {pixel[0]:g} x {pixel[1]:g} mm ({height * pixel[0]:g} x "
            f"{width * pixel[1]:g} mm) do not fit the network input at data.spacing [{target[0]:g}, {target[1]:g}]: "
            f"its {size} x {size} pixels cover {size * target[0]:g} x {size * target[1]:g} mm; nothing is cropped: "
            f"train with a coarser data.spacing ([{fits}] fits this image) or a larger data.image_size"
        )
    return h, w


def known_spacing(pixel: Sequence[float] | None, where: str) -> tuple[float, float]:
    """The item's (row, column) spacing, or ``UserError`` naming ``where`` when its file records none."""
    if pixel and len(pixel) >= 2 and min(pixel[:2]) > 0 and all(math.isfinite(p) for p in pixel[:2]):
        return float(pixel[0]), float(pixel[1])
    why = f"its header gives {pixel[0]:g} x {pixel[1]:g} mm" if pixel and len(pixel) >= 2 else "it records none"
    raise UserError(
        f"{where}: data.resize=spacing needs each image's pixel spacing in mm, and {why}; use data.resize=pad (the "
        "aspect ratio of the pixel grid), or give the images as NIfTI, MetaImage, NRRD or DICOM series with their "
        "spacing"
    )


def plane_headers(reader: Reader, indices: Iterable[int]) -> list[Plane]:
    """(first image file, in-plane (H,W), in-plane spacing or ``None``) of the 2D items ``indices``, once per file
    and slice axis, from headers alone; an item whose header does not parse is left out (decoding names it)."""
    planes: dict[tuple[str, int | None], Plane] = {}
    for i in indices:
        entry = reader.entries[i]
        path = str(entry.images[0])
        key = (path, entry.slice_axis)
        if key in planes:
            continue
        if suffix_of(path) not in (*NIFTI_SUFFIXES, *ITK_SUFFIXES) and not is_series_folder(path):
            planes[key] = (path, (0, 0), None)
            continue
        header = volume_header(path)
        if header is None:
            continue
        axis = 2 if entry.slice_axis is None else entry.slice_axis
        height, width = [n for k, n in enumerate(header.shape[:3]) if k != axis][:2]
        geometry = Geometry(
            size=(height, width), format=suffix_of(path), spacing=header.spacing, slice_axis=entry.slice_axis
        )
        planes[key] = (path, (height, width), geometry.plane_spacing())
    return list(planes.values())


def check_fits(reader: Reader, indices: Iterable[int], size: int, target: Sequence[float]) -> None:
    """``UserError`` naming the first item of ``indices`` without a pixel spacing, or too large for S x S at
    ``target`` (``resampled_shape``), and how many more files are."""
    problems = []
    for where, (height, width), pixel in plane_headers(reader, indices):
        try:
            resampled_shape(height, width, pixel, target, size, where)
        except UserError as err:
            problems.append(str(err))
    if problems:
        more = f" (and {len(problems) - 1} more file(s))" if len(problems) > 1 else ""
        raise UserError(problems[0] + more)


def fitting_spacing(reader: Reader, indices: Iterable[int], size: int) -> tuple[float, ...]:
    """``data.spacing: []``: the finest isotropic spacing (mm, rounded up to 4 digits) at which every item of
    ``indices`` fits in S x S, the largest extent in mm over S; ``UserError`` naming a file without a spacing;
    ``()`` when no header parses (decoding then names every file)."""
    planes = plane_headers(reader, indices)
    extents = [n * p for where, shape, pixel in planes for n, p in zip(shape, known_spacing(pixel, where))]
    if not extents:
        return ()
    finest = round_up(max(extents) / size)
    return finest, finest


def spacing_line(planes: Sequence[tuple[tuple[int, int], Sequence[float]]]) -> str:
    """``verify``'s summary line for items of in-plane (H,W) and spacing (row, column) in mm: the spacings' min,
    median and max per axis, and the largest extent in mm."""
    spacing = np.array([p[:2] for _, p in planes], dtype=np.float64)
    extent = np.array([(h * p[0], w * p[1]) for (h, w), p in planes], dtype=np.float64)
    low, mid, high, far = spacing.min(0), np.median(spacing, 0), spacing.max(0), extent.max(0)
    return (
        f"  in-plane spacing (mm, rows x columns, {len(planes)} image(s) or volume(s)): min {low[0]:.3g} x "
        f"{low[1]:.3g}, median {mid[0]:.3g} x {mid[1]:.3g}, max {high[0]:.3g} x {high[1]:.3g}; largest extent "
        f"{far[0]:.4g} x {far[1]:.4g} mm"
    )
