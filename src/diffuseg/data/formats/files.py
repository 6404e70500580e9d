"""Decoding one file: 2D rasters (PNG, JPG, GIF, TIFF, BMP), NumPy arrays, NIfTI images, MetaImage (``.mha``) and
NRRD (``.nrrd``) images through SimpleITK (the optional extra ``diffuseg[itk]``), and SSL4MIS HDF5 files; and one
folder, a DICOM series (``dicom``), decoded as one volume file is.

Volumes keep one convention whatever their format: the array is indexed (X,Y[,Z][,channels]) and ``affine`` maps
those indices to RAS millimetres, as nibabel gives NIfTI. SimpleITK's arrays (Z,Y,X) and LPS geometry (spacing,
origin, direction) are turned into it (``itk.itk_affine``) and back when writing (``itk.itk_geometry``).

Every reader goes through here, so every format error ends as a ``UserError`` naming the file.
Arrays keep their stored dtype; intensity scaling is ``normalize_intensity``'s job.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffuseg.data.formats.dicom import DICOM_FORMAT, is_series_folder, read_series, series_info
from diffuseg.data.formats.itk import itk_affine, sitk_module
from diffuseg.errors import UserError

RASTER_SUFFIXES = ("png", "jpg", "jpeg", "gif", "tif", "tiff", "bmp")
NIFTI_SUFFIXES = ("nii", "nii.gz")
ITK_SUFFIXES = ("mha", "nrrd")  # single-file formats SimpleITK reads and writes, geometry included
VOLUME_SUFFIXES = (*NIFTI_SUFFIXES, *ITK_SUFFIXES)  # formats with an affine, sliced along their third axis
IMAGE_SUFFIXES = (*RASTER_SUFFIXES, "npy", *VOLUME_SUFFIXES)
LOSSY_SUFFIXES = ("jpg", "jpeg")
HDF5_SUFFIXES = ("h5", "hdf5")  # SSL4MIS: datasets ``image`` and ``label`` in one file (``formats.ssl4mis``)
NUMERIC_KINDS = "biuf"  # the dtype kinds an image or a mask may hold: bool, signed and unsigned integers, floats
_NUMBER = re.compile(r"(\d+)")


def suffix_of(path: str | os.PathLike) -> str:
    """Lower-case suffix without the dot; ``nii.gz`` counts as one suffix."""
    name = os.path.basename(os.fspath(path)).lower()
    if name.endswith(".nii.gz"):
        return "nii.gz"
    return name.rsplit(".", 1)[-1] if "." in name else ""


def stem_of(path: str | os.PathLike) -> str:
    """File name without its (possibly double) suffix."""
    name = os.path.basename(os.fspath(path))
    suffix = suffix_of(name)
    return name[: -len(suffix) - 1] if suffix else name


def name_of(path: Path) -> str:
    """The name of an input: a file's stem (``stem_of``), a DICOM series folder's whole name."""
    return path.name if path.is_dir() and is_series_folder(path) else stem_of(path)


def format_of(path: Path) -> str:
    """The format of an input: its ending (``suffix_of``), ``dcm`` for a DICOM series folder."""
    return DICOM_FORMAT if path.is_dir() else suffix_of(path)


def natural_key(name: str) -> tuple:
    """Sort key that orders the numbers inside names by value: ``slice-2`` before ``slice-10``."""
    return tuple(int(t) if t.isdigit() else t for t in _NUMBER.split(name))


def is_image_file(path: Path) -> bool:
    """Whether ``path`` is named like an image this tool reads (not hidden, a known suffix), whatever it is on
    disk: a dangling link, a folder, a pipe or a device so named is kept, so that reading it names the problem
    (``check_regular``) instead of leaving it out unsaid."""
    return not path.name.startswith(".") and suffix_of(path) in IMAGE_SUFFIXES


_KINDS = {
    stat.S_IFDIR: "a folder named like an image file",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


def check_regular(path: str | os.PathLike) -> None:
    """``UserError`` naming ``path`` unless it is a regular file or a link to one: a dangling link, a folder named
    like an image, a named pipe, a device or a socket (reading a pipe or ``/dev/zero`` would block or never
    end). Only the file's status is read, never its bytes."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        if path.is_symlink():
            raise UserError(f"{path}: a link to {os.readlink(path)}, which does not exist (a dangling link)") from None
        raise UserError(f"{path}: not found") from None
    except OSError as err:
        raise UserError(f"{path}: cannot be read ({err.strerror or err})") from None
    if stat.S_ISREG(mode) or (stat.S_ISDIR(mode) and is_series_folder(path)):
        return
    via = f"a link to {path.resolve()}, " if path.is_symlink() else ""
    kind = _KINDS.get(stat.S_IFMT(mode), "not a file")
    raise UserError(f"{path}: {via}{kind}, not a regular file (images and masks are read from regular files only)")


# the first bytes of each format, and the ending that names it (NIfTI's magic: ``check_ending``)
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\x00", "tif"),
    (b"MM\x00*", "tif"),
    (b"BM", "bmp"),
    (b"\x93NUMPY", "npy"),
    (b"\x89HDF\r\n\x1a\n", "h5"),
    (b"\x1f\x8b", "nii.gz"),
    (b"NRRD000", "nrrd"),
    (b"ObjectType = Image", "mha"),  # MetaImage's first header line as SimpleITK writes it
)
_SAME = {"jpeg": "jpg", "tiff": "tif", "hdf5": "h5"}  # endings that name one format


def check_ending(path: str | os.PathLike) -> None:
    """``UserError`` naming ``path`` when its first bytes are those of another format than its ending names (PNG
    bytes named ``.nii.gz``, a JPEG named ``.png``): decoders would fail with a riddle, or, worse, read a lossy
    JPEG as if it were an exact PNG label map. Bytes of no known format are left to the decoder."""
    path = Path(path)
    with path.open("rb") as fh:
        head = fh.read(352)
    found = next((ending for magic, ending in _SIGNATURES if head.startswith(magic)), None)
    if found is None and (head[344:348] == b"n+1\x00" or head[4:8] == b"n+2\x00"):  # NIfTI-1, NIfTI-2
        found = "nii"
    suffix = suffix_of(path)
    if found is not None and found != _SAME.get(suffix, suffix):
        raise UserError(
            f"{path}: holds {found.upper()} data but is named .{suffix} (its ending contradicts its content); "
            f"rename it to .{found}"
        )


@dataclass(frozen=True)
class FileData:
    """A decoded file. ``array`` is (H,W), (H,W,channels) for rasters; (X,Y), (X,Y,Z) or (X,Y,Z,channels) for
    NIfTI."""

    array: np.ndarray
    affine: np.ndarray | None = None  # 4x4, indices to RAS mm: NIfTI, MetaImage, NRRD
    spacing: tuple[float, ...] | None = None
    slice_axis: int | None = None  # the axis 2D items are cut along: 2 for NIfTI/ITK, 0 for HDF5 volumes (D,H,W)
    prescaled: bool = False  # intensities already in [0, 1] (SSL4MIS scales each volume): kept as stored


def read_file(path: str | os.PathLike, *, as_mask: bool = False) -> FileData:
    """Decode ``path``; raises ``UserError`` naming it when it is missing, not a regular file (``check_regular``),
    of another format than its ending says (``check_ending``), of several frames (``single_frame``), unreadable or
    corrupt."""
    path = Path(path)
    if is_series_folder(path):
        array, affine, spacing = read_series(path)
        check_values(path, array.dtype, array.shape)
        return FileData(array, affine=affine, spacing=spacing, slice_axis=2)
    suffix = suffix_of(path)
    if suffix not in (*IMAGE_SUFFIXES, *HDF5_SUFFIXES):
        raise UserError(f"{path}: unsupported file type .{suffix} (known: {', '.join(IMAGE_SUFFIXES)}, h5)")
    check_regular(path)
    try:
        check_ending(path)
        if suffix in NIFTI_SUFFIXES:
            data = _read_nifti(path)
        elif suffix in ITK_SUFFIXES:
            data = _read_itk(path)
        elif suffix == "npy":
            data = FileData(np.load(path, allow_pickle=False))
        elif suffix in HDF5_SUFFIXES:
            data = _read_hdf5(path, as_mask)
        else:
            data = FileData(_read_raster(path, as_mask))
    except UserError:
        raise
    except Exception as err:  # decoders raise many types; report, never crash, and say what the header shows
        if suffix in IMAGE_SUFFIXES:
            check_header(path)  # a precise reason (truncated, 0 wide, ...) when the header shows one
        raise UserError(f"{path}: unreadable or corrupt ({_reason(err)})") from None
    check_values(path, data.array.dtype, data.array.shape)
    return data


def check_values(path: str | os.PathLike, dtype: np.dtype, shape: tuple[int, ...], what: str = "") -> None:
    """``UserError`` naming ``path`` (and ``what``, e.g. an HDF5 dataset) when an array of ``dtype`` and ``shape``
    cannot be an image or a mask: no values at all, or values that are not numbers (text, complex, records)."""
    where = f"{path}: {what} " if what else f"{path}: "
    if np.dtype(dtype).kind not in NUMERIC_KINDS:
        raise UserError(f"{where}holds {np.dtype(dtype)} values, not numbers (an image or mask holds numbers)")
    if 0 in shape:
        raise UserError(f"{where}holds no values (shape {'x'.join(map(str, shape)) or '()'})")


def hdf5_dataset(f, key: str, path: str | os.PathLike):
    """The dataset ``key`` of the open HDF5 file ``f`` (read from ``path``), checked: ``UserError`` when it is
    missing, a group, a link to another file (``ExternalLink``) or a virtual dataset mapped from other files
    (data are read from the file itself, never from outside the dataset), or holds no numbers."""
    import h5py

    link = f.get(key, getlink=True)
    if link is None:
        raise UserError(f"{path}: no dataset {key!r} (found: {', '.join(sorted(f)) or 'none'})")
    if isinstance(link, h5py.ExternalLink):
        raise UserError(
            f"{path}: {key!r} is an external link to {link.filename}:{link.path}; data are read only from the "
            "file itself, never from outside the dataset"
        )
    obj = f.get(key)
    if obj is None:
        raise UserError(f"{path}: {key!r} is a link to nothing ({getattr(link, 'path', '')})")
    if not isinstance(obj, h5py.Dataset):
        raise UserError(f"{path}: {key!r} is a {type(obj).__name__.lower()}, not a dataset (an array)")
    if obj.is_virtual:
        raise UserError(
            f"{path}: dataset {key!r} is a virtual dataset mapped from other files; data are read only from the "
            "file itself, never from outside the dataset"
        )
    check_values(path, obj.dtype, obj.shape, f"dataset {key!r}")
    return obj


def check_header(path: str | os.PathLike) -> None:
    """``UserError`` naming ``path`` when a cheap look shows the image cannot be decoded: a header that does not
    parse, no pixels (0 wide), a decompression bomb (Pillow's limit), a file shorter than its header says (a
    PNG's chunks up to IEND with their checksums, a ``.npy`` or ``.nii`` against its data size, a ``.nii.gz``
    against the size gzip records; JPEG and GIF by their end markers), an HDF5 ``image`` that is no dataset of the
    file, several frames (``single_frame``), no regular file (``check_regular``) or bytes of another format than
    its ending names (``check_ending``); for a DICOM series folder, ``dicom.series_info``'s refusals. Reads headers
    and ends, not pixels, except for a file whose ending is in doubt (then it is decoded)."""
    path = Path(path)
    if is_series_folder(path):
        series_info(path)
        return
    suffix = suffix_of(path)
    check_regular(path)
    try:
        check_ending(path)
        if suffix in RASTER_SUFFIXES:
            _raster_header(path)
        elif suffix == "npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)  # maps the data: a short file fails here
            check_values(path, array.dtype, array.shape)
        elif suffix in NIFTI_SUFFIXES:
            _nifti_header(path)
        elif suffix in ITK_SUFFIXES:
            itk_shape(path)
        elif suffix in HDF5_SUFFIXES:
            import h5py

            with h5py.File(path, "r") as f:
                hdf5_dataset(f, "image", path)
    except UserError:
        raise
    except Exception as err:  # decoders raise many types; report, never crash
        raise UserError(f"{path}: unreadable or corrupt ({_reason(err)})") from None


def _reason(err: BaseException) -> str:
    """A decoder's exception on one line: its type and message, runs of white space (newlines) made one space."""
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


_END_MARKERS = {"JPEG": (b"\xff\xd9",), "GIF": (b"\x3b",)}  # the last bytes of a complete file


def _raster_header(path: Path) -> None:
    from PIL import Image

    with Image.open(path) as im:  # parses the header; Pillow refuses a decompression bomb here
        width, height = im.size
        check_values(path, np.uint8, (height, width))
        single_frame(path, im)
        if im.format == "PNG":
            im.verify()  # every chunk up to IEND, checksums included, without inflating the pixels
            return
        markers = _END_MARKERS.get(str(im.format))
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - 64))
        tail = fh.read().rstrip(b"\x00\r\n ")
    if markers is None or not tail.endswith(markers):
        _read_raster(path, as_mask=False)  # no end marker to trust: decode it


def single_frame(path: Path, im) -> None:
    """``UserError`` naming ``path`` when the open Pillow image ``im`` holds several frames (a multi-page TIFF, an
    animated GIF or PNG): no layout reads frames as slices, and taking the first one alone would drop the rest
    unsaid."""
    frames = int(getattr(im, "n_frames", 1))
    if frames > 1:
        raise UserError(
            f"{path}: holds {frames} frames (a multi-page or animated {im.format}); only single-frame images are "
            "read: save each frame as its own file, or a volume as NIfTI"
        )


def _nifti_header(path: Path) -> None:
    import nibabel as nib

    img = nib.load(str(path))  # the header only
    dtype, shape = img.get_data_dtype(), tuple(int(s) for s in img.shape)
    check_values(path, dtype, shape)
    size = int(img.dataobj.offset) + int(np.prod(shape)) * dtype.itemsize
    if suffix_of(path) == "nii":
        if path.stat().st_size < size:
            raise UserError(f"{path}: truncated ({path.stat().st_size} bytes; its header needs {size})")
        return
    with path.open("rb") as fh:  # gzip ends with the uncompressed size modulo 2**32
        fh.seek(-4, os.SEEK_END)
        recorded = int.from_bytes(fh.read(4), "little")
    if recorded != size % 2**32:
        np.asanyarray(img.dataobj)  # several gzip members, or trailing bytes: decode it to be sure


def _read_raster(path: Path, as_mask: bool) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        single_frame(path, im)
        im.load()
        mode = im.mode
        if mode == "P":
            # palette images: a mask keeps its indices (label values); an image shows its colours
            im = im if as_mask else im.convert("RGB")
        elif mode in ("RGBA", "LA", "CMYK", "YCbCr", "HSV", "LAB"):
            im = im.convert("RGB" if mode != "LA" else "L")
        elif mode == "1":
            im = im.convert("L")
        array = np.array(im)
    if array.ndim == 3 and as_mask:
        array = array.max(axis=2)  # an RGB mask: foreground wherever any channel is set
    if (
        array.ndim == 3
        and array.shape[2] == 3
        and np.array_equal(array[..., 0], array[..., 1])
        and np.array_equal(array[..., 0], array[..., 2])
    ):
        array = array[..., 0]  # grey stored as RGB
    return array


def _read_nifti(path: Path) -> FileData:
    import nibabel as nib

    img = nib.load(str(path))
    array = np.asanyarray(img.dataobj)
    return FileData(array, affine=np.asarray(img.affine, dtype=np.float64), spacing=nifti_spacing(img), slice_axis=2)


def nifti_spacing(image) -> tuple[float, ...]:
    """The voxel sizes (mm) of a nibabel image's first (up to three) axes: its header's zooms."""
    return tuple(float(z) for z in image.header.get_zooms()[: min(3, len(image.shape))])


def itk_shape(path: Path) -> tuple[int, ...]:
    """(X,Y[,Z]) of an ITK image from its header alone (``UserError`` when it does not parse)."""
    sitk = sitk_module(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    size = tuple(int(v) for v in reader.GetSize())
    check_values(path, np.uint8, size)
    return size


def _read_itk(path: Path) -> FileData:
    """An ``.mha`` / ``.nrrd`` image as (X,Y[,Z][,channels]) with its RAS affine (module docstring); a 2D image
    with several components becomes (X,Y,1,channels), as a one-slice volume, and a 4D image (X,Y,Z,T) keeps its
    fourth axis as channels, as a 4D NIfTI and nnU-Net's SimpleITK reader do."""
    sitk = sitk_module(path)
    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    dims = image.GetDimension()
    array = np.moveaxis(array, tuple(range(dims)), tuple(reversed(range(dims))))  # (Z,Y,X,...) -> (X,Y,Z,...)
    if image.GetNumberOfComponentsPerPixel() > 1 and dims == 2:
        array = array[:, :, None, :]
    affine = itk_affine(image.GetSpacing(), image.GetOrigin(), image.GetDirection())
    spacing = tuple(float(v) for v in image.GetSpacing()[:3])
    return FileData(array, affine=affine, spacing=spacing, slice_axis=2)


def _read_hdf5(path: Path, as_mask: bool) -> FileData:
    """Dataset ``label`` (``as_mask``) or ``image`` of an SSL4MIS file: (H,W) a slice, (D,H,W) a volume."""
    import h5py

    key = "label" if as_mask else "image"
    with h5py.File(path, "r") as f:
        array = np.asarray(hdf5_dataset(f, key, path)[()])
    floats = array.dtype.kind == "f" and array.size > 0 and bool(np.isfinite(array).all())
    prescaled = not as_mask and floats and float(array.min()) >= 0.0 and float(array.max()) <= 1.0
    return FileData(array, slice_axis=0 if array.ndim == 3 else None, prescaled=prescaled)


def label_values(plane: np.ndarray) -> list:
    """The distinct values of a label map, sorted (``bincount`` for small unsigned integers: fast)."""
    if plane.dtype in (np.uint8, np.uint16, np.bool_):
        counts = np.bincount(plane.ravel().astype(np.intp, copy=False))
        return np.flatnonzero(counts).tolist()
    return np.unique(plane).tolist()


def normalize_intensity(array: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """Scale intensities to [0, 1] per channel (modality); returns float32 of the same shape.

    uint8 data is divided by 255 (the value scale is fixed). Anything else (CT, MRI, floats) is
    clipped to its 0.5th and 99.5th percentile per channel and scaled to [0, 1], computed over the
    whole file, so all slices of a volume share one scale. NaN and inf are set to 0 here (``verify``
    reports them).
    """
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    data = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if array.dtype == bool:
        return data
    moved = np.moveaxis(data, channel_axis, 0) if channel_axis is not None else data[None]
    out = np.empty_like(moved)
    for c, channel in enumerate(moved):
        lo, hi = np.percentile(channel, (0.5, 99.5))
        if hi <= lo:
            lo, hi = float(channel.min()), float(channel.max())
        out[c] = (np.clip(channel, lo, hi) - lo) / (hi - lo) if hi > lo else np.zeros_like(channel)
    return np.moveaxis(out, 0, channel_axis) if channel_axis is not None else out[0]


def window_intensity(array: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip to a fixed intensity window (low, high), e.g. CT Hounsfield units, and scale it to [0, 1]; float32 of
    the same shape, every channel alike.

    Unlike ``normalize_intensity`` the scale does not depend on the file, so one HU value maps to one input value
    in every scan. NaN and inf are set to 0 HU here (``verify`` reports them).
    """
    low, high = float(window[0]), float(window[1])
    data = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return (np.clip(data, low, high) - low) / (high - low)


def ct_intensity(array: np.ndarray, stats: Sequence[float]) -> np.ndarray:
    """nnU-Net's CT normalisation (Isensee et al., Nature Methods 2021): clip to (low, high), the 0.5th and
    99.5th percentiles of the training set's foreground intensities, then subtract their ``mean`` and divide by
    their ``std``; ``stats`` = (low, high, mean, std) (``data.intensity.ct_statistics``). float32 of the same
    shape, every channel alike; NaN and inf are set to 0 first (``verify`` reports them)."""
    low, high, mean, std = (float(v) for v in stats)
    data = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    return (np.clip(data, low, high) - mean) / max(std, 1e-8)


def fixed_intensity(array: np.ndarray, params: Sequence[float]) -> np.ndarray:
    """The intensity mapping that is the same for every file (``DataConfig.intensity``): ``window_intensity`` for
    two numbers (low, high), ``ct_intensity`` for four (low, high, mean, std)."""
    if len(params) == 2:
        return window_intensity(array, (params[0], params[1]))
    return ct_intensity(array, params)
