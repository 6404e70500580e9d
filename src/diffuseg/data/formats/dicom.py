"""DICOM series: a folder holding the slice files of one series (named ``*.dcm`` or with no ending at all) is one
volume, read through SimpleITK's GDCM (``itk``); ``write.write_dicom`` writes predictions back as such a folder.

The slices of a series folder are its entries other than hidden ones and folders, in name order
(``_slice_entries``): regular files are slices; a pipe, a device, a socket or a dangling link among them is refused
by ``series_info`` and left out of ``input_files``; a subfolder is never a slice, whatever its name. A folder is a
series folder (``is_series_folder``) when one of its slices is named ``.dcm``, or its first regular file begins as
DICOM files do (``DICM`` at byte 128). ``series_info`` reads the headers of its slices and refuses, with one
``UserError`` naming the folder: no DICOM series in it; several (their SeriesInstanceUIDs listed: one series per
folder is read); a file that is no slice of the series (not DICOM, unreadable, truncated, or not a regular file);
slices of different sizes; slices not evenly spaced along their normal (a slice missing, two at one position, a
tilted gantry); several multi-frame files. GDCM sorts the slices along their normal; ``read_series`` reads the
pixels with SimpleITK's geometry (spacing, origin, direction), the arrays indexed (X,Y,Z) with a RAS affine as every
volume here (``itk.itk_affine``), and the rescale slope and intercept applied (CT in Hounsfield units).
"""

from __future__ import annotations

import contextlib
import functools
import locale
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffuseg.data.formats.itk import itk_affine, sitk_module
from diffuseg.errors import UserError

DICOM_FORMAT = "dcm"  # ``Geometry.format`` of a series, and the ending of the slice files written
WHAT = "DICOM series"
SPACING_TOLERANCE = 0.01  # neighbouring slices may differ from the mean slice distance by this fraction of it
_SHOWN = 3  # files named in one error


def is_series_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder read as one DICOM series (module docstring); reads at most 132 bytes of one
    file."""
    try:
        entries = _slice_entries(path)
    except OSError:  # not a folder, or not readable
        return False
    if any(e.name.lower().endswith(f".{DICOM_FORMAT}") for e in entries):
        return True
    first = next((e for e in entries if e.is_file()), None)  # follows links; a pipe would block
    if first is None:
        return False
    try:
        with open(first.path, "rb") as fh:
            return fh.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _slice_entries(folder: str | os.PathLike) -> list[os.DirEntry]:
    """The entries of ``folder`` that stand for its slices (module docstring): all but hidden ones and folders
    (a link is followed), in name order; ``OSError`` when the folder cannot be read."""
    entries = (e for e in os.scandir(folder) if not e.name.startswith(".") and not e.is_dir())
    return sorted(entries, key=lambda e: e.name)


def input_files(path: str | os.PathLike) -> list[Path]:
    """The files an input stands for: a file itself; a folder (a series) the regular files of its slices
    (``_slice_entries``: what ``series_info`` reads, when it reads the folder at all)."""
    path = Path(path)
    if not path.is_dir():
        return [path]
    return [Path(e.path) for e in _slice_entries(path) if e.is_file()]


def input_stat(path: str | os.PathLike) -> tuple[int, int, int]:
    """(size, mtime_ns, ctime_ns) of an input: a file's, or for a folder the sum of its files' sizes and the latest
    times of the folder and its files (a slice added, removed or rewritten changes them)."""
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size, st.st_mtime_ns, st.st_ctime_ns
    stats = [st, *(os.stat(p) for p in input_files(path))]
    return (
        sum(s.st_size for s in stats[1:]),
        max(s.st_mtime_ns for s in stats),
        max(s.st_ctime_ns for s in stats),
    )


@dataclass(frozen=True)
class Series:
    """One series as its headers give it: ``files`` in GDCM's order along the slice normal, ``shape`` (X,Y,Z) and
    SimpleITK's LPS geometry."""

    uid: str
    files: tuple[str, ...]
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @property
    def affine(self) -> np.ndarray:
        return itk_affine(self.spacing, self.origin, self.direction)


def series_info(folder: str | os.PathLike) -> Series:
    """The series of ``folder`` from its slices' headers; ``UserError`` naming the folder for every refusal of
    the module docstring. Cached while the folder's files keep their names, sizes and times."""
    folder = Path(folder)
    try:
        entries = _slice_entries(folder)
    except OSError as err:
        raise UserError(f"{folder}: cannot read the folder ({err.strerror or err})") from None
    stamp = []
    for entry in entries:
        try:
            st = os.stat(entry.path)
        except OSError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            kind = "a dangling link" if st is None else "not a regular file (a pipe, a device or a socket)"
            raise UserError(f"{folder}: {entry.name} is {kind}; the slices of a DICOM series are regular files")
        stamp.append((entry.name, st.st_size, st.st_mtime_ns))
    if not stamp:
        raise UserError(f"{folder}: no DICOM files in this folder")
    return _series_info(str(folder), tuple(stamp))


@contextlib.contextmanager
def gdcm(sitk) -> Iterator[None]:
    """Around SimpleITK's GDCM calls: ITK's warnings off (it prints them to the terminal: no series found, uneven
    slices, ...; every refusal here is a ``UserError`` of its own), and the process's locale kept (GDCM's writer
    sets the C locale, after which Python would read and write text files as ASCII)."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    kept = locale.setlocale(locale.LC_ALL)
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)
        locale.setlocale(locale.LC_ALL, kept)


@functools.lru_cache(maxsize=64)
def _series_info(folder: str, stamp: tuple) -> Series:
    sitk = sitk_module(folder, WHAT)
    with gdcm(sitk):
        return _headers_series(sitk, folder, stamp)


def _headers_series(sitk, folder: str, stamp: tuple) -> Series:
    uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder)
    if not uids:
        raise UserError(f"{folder}: no DICOM series here ({len(stamp)} file(s), none a readable DICOM image)")
    if len(uids) > 1:
        raise UserError(
            f"{folder}: holds {len(uids)} DICOM series (SeriesInstanceUID {', '.join(uids)}); one series per folder "
            "is read: move each series into a folder of its own"
        )
    files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(folder, uids[0]))
    others = sorted({name for name, *_ in stamp} - {os.path.basename(f) for f in files})
    if others:
        raise UserError(
            f"{folder}: {_names(others)} {'is' if len(others) == 1 else 'are'} not part of series {uids[0]} (not "
            "DICOM, unreadable or truncated); a series folder holds the slices of its series alone"
        )
    headers = [_header(sitk, folder, f) for f in files]
    size = headers[0][0]
    odd = next((f for f, h in zip(files, headers) if h[0][:2] != size[:2]), None)
    if odd is not None:
        there = "x".join(map(str, next(h[0][:2] for h in headers if h[0][:2] != size[:2])))
        raise UserError(
            f"{folder}: slices of different sizes ({os.path.basename(files[0])}: {size[0]}x{size[1]}, "
            f"{os.path.basename(odd)}: {there}); a series holds slices of one size"
        )
    _, spacing, origin, direction = headers[0]
    if len(files) == 1:
        return Series(uids[0], files, (size[0], size[1], size[2]), spacing, origin, direction)
    frames = [os.path.basename(f) for f, h in zip(files, headers) if h[0][2] > 1]
    if frames:
        raise UserError(
            f"{folder}: {len(frames)} of its {len(files)} files are multi-frame ({_names(frames)}); a series is read "
            "as one multi-frame file or as single-frame slices"
        )
    step = _slice_step(folder, files, np.array([h[2] for h in headers]), np.reshape(direction, (3, 3))[:, 2])
    return Series(uids[0], files, (size[0], size[1], len(files)), (spacing[0], spacing[1], step), origin, direction)


def _header(sitk, folder: str, file: str) -> tuple[tuple[int, ...], tuple, tuple, tuple]:
    """(size, spacing, origin, direction) of one slice file from its header."""
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(file)
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise UserError(f"{folder}: slice {os.path.basename(file)} unreadable ({_reason(err)})") from None
    size = tuple(int(v) for v in reader.GetSize()) + (1,) * (3 - reader.GetDimension())
    return size, tuple(reader.GetSpacing()), tuple(reader.GetOrigin()), tuple(reader.GetDirection())


def _slice_step(folder: str, files: tuple[str, ...], positions: np.ndarray, normal: np.ndarray) -> float:
    """The distance between neighbouring slices at ``positions`` (their ImagePositionPatient, in order), which
    must be one, along the slice ``normal``; ``UserError`` naming the folder otherwise."""
    steps = np.diff(positions, axis=0)
    along = steps @ normal
    mean = float(along.mean())
    if mean <= 0:
        raise UserError(f"{folder}: all {len(files)} slices lie at one position (ImagePositionPatient)")
    worst = int(np.argmax(np.abs(along - mean)))
    if abs(along[worst] - mean) > SPACING_TOLERANCE * mean:
        pair = f"{os.path.basename(files[worst])} and {os.path.basename(files[worst + 1])}"
        raise UserError(
            f"{folder}: slices unevenly spaced ({float(along.min()):g} to {float(along.max()):g} mm apart, "
            f"{float(along[worst]):g} mm between {pair}): a slice is missing, or two share a position; every "
            "slice of the series is needed"
        )
    across = np.linalg.norm(steps - np.outer(along, normal), axis=1)
    if float(across.max()) > SPACING_TOLERANCE * mean:
        raise UserError(
            f"{folder}: the slices are not stacked along their normal (they shift by up to "
            f"{float(across.max()):g} mm across it: a tilted gantry?); such a series is not read as a volume"
        )
    return mean


def read_series(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
    """(array (X,Y,Z[,channels]), RAS affine, spacing) of the series in ``folder``, checked by ``series_info``."""
    info = series_info(folder)
    sitk = sitk_module(folder, WHAT)
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames(info.files)
    try:
        with gdcm(sitk):
            image = reader.Execute()
    except RuntimeError as err:
        raise UserError(f"{folder}: unreadable DICOM series ({_reason(err)})") from None
    array = np.moveaxis(sitk.GetArrayFromImage(image), (0, 1, 2), (2, 1, 0))  # (Z,Y,X,...) -> (X,Y,Z,...)
    spacing = tuple(float(v) for v in image.GetSpacing())
    return array, itk_affine(spacing, image.GetOrigin(), image.GetDirection()), spacing


def series_tags(folder: str | os.PathLike, tags: tuple[str, ...]) -> dict[str, str]:
    """The values of ``tags`` (``"gggg|eeee"``) that the first slice of ``folder``'s series holds."""
    sitk = sitk_module(folder, WHAT)
    reader = sitk.ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(series_info(folder).files[0])
    reader.ReadImageInformation()
    return {t: reader.GetMetaData(t).strip() for t in tags if reader.HasMetaDataKey(t)}


def _names(names: list[str]) -> str:
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return ", ".join(names[:_SHOWN]) + more


def _reason(err: BaseException) -> str:
    """SimpleITK's message on one line, without the source location it starts with."""
    text = " ".join(str(err).split())
    return text.split(": ", 2)[-1] if text.count(": ") >= 2 else text
