"""The hostile-input corpus of the nnU-Net and SSL4MIS layouts, of DICOM series, and of MetaImage / NRRD files
whose content is not the 2D image a layout expects there (``hostile`` has the paired one and the helpers):
name -> ``(build, problem, commands)``, as there. The DICOM builders write one series into the dataset folder
itself (a series folder is read as one case); ``datafixtures`` (``tests/data``) writes them."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
from datafixtures import dicom_series

from hostile import ALL, LABELS, SIZE, Build, disc, elsewhere, encoded, fifo, grey, h5, link, nifti, png, written


# ----------------------------------------------------------------------------------------------------- nnU-Net
def nnunet(root: Path, labels: dict | str | None = None, ending: str = ".png", **extra) -> Path:
    """Two 2D PNG cases ``c0``, ``c1``; ``dataset.json`` with ``labels`` (default binary), ``ending``; returns it."""
    meta = {"channel_names": {"0": "US"}, "labels": labels or {"background": 0, "lesion": 1}, "file_ending": ending}
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(meta if isinstance(labels, str) else json.dumps({**meta, **extra}))
    for i in range(2):
        png(root / "imagesTr" / f"c{i}_0000.png", grey(i))
        png(root / "labelsTr" / f"c{i}.png", (disc(3 + i) > 0).astype(np.uint8))
    return root / "dataset.json"


def nnunet_volume(root: Path, label_shape: tuple[int, ...]) -> Path:
    """One NIfTI case of shape 16x16x3 whose label has ``label_shape``; returns the label file."""
    root.mkdir(parents=True, exist_ok=True)
    meta = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "lesion": 1}, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    nifti(root / "imagesTr" / "v_0000.nii.gz", np.random.default_rng(0).random((SIZE, SIZE, 3)).astype(np.float32))
    return nifti(root / "labelsTr" / "v.nii.gz", np.zeros(label_shape, np.uint8))


def _dataset_json(root: Path, text: str) -> Path:
    path = nnunet(root)
    path.write_text(text)
    return path


def _png_named_nii(root: Path) -> Path:
    nnunet(root, ending=".nii.gz")
    for p in sorted((root / "imagesTr").iterdir()):
        p.rename(p.with_name(p.name.replace(".png", ".nii.gz")))
    for p in sorted((root / "labelsTr").iterdir()):
        p.rename(p.with_name(p.name.replace(".png", ".nii.gz")))
    return root / "imagesTr" / "c0_0000.nii.gz"


def _rater_outside(root: Path) -> Path:
    nnunet(root)
    rater = elsewhere(root) / "rater1"
    for i in range(2):
        png(rater / f"c{i}.png", (disc(3) > 0).astype(np.uint8))
    link(root / "labelsTr_rater1", rater)
    return root / "labelsTr_rater1" / "c0.png"


def _nn_image_outside(root: Path) -> Path:
    nnunet(root)
    target = png(elsewhere(root) / "c0_0000.png", grey(5))
    path = root / "imagesTr" / "c0_0000.png"
    path.unlink()
    return link(path, target)


def _itk_case(root: Path, ending: str) -> Path:
    """An nnU-Net dataset of ``ending`` (``.mha``, ``.nrrd``) with one 16x16x3 case ``v``; returns its image."""
    import SimpleITK as sitk

    root.mkdir(parents=True, exist_ok=True)
    meta = {"channel_names": {"0": "MRI"}, "labels": {"background": 0, "lesion": 1}, "file_ending": ending}
    (root / "dataset.json").write_text(json.dumps(meta))
    for folder, name, values in (("imagesTr", "v_0000", grey()), ("labelsTr", "v", disc(3) > 0)):
        (root / folder).mkdir(exist_ok=True)
        volume = np.repeat(np.asarray(values, np.uint8)[None], 3, axis=0)  # (Z, Y, X) as SimpleITK holds it
        sitk.WriteImage(sitk.GetImageFromArray(volume), str(root / folder / f"{name}{ending}"))
    return root / "imagesTr" / f"v_0000{ending}"


def _itk_fifo(root: Path) -> Path:
    path = _itk_case(root, ".mha")
    path.unlink()
    return fifo(path)


def _nrrd_named_mha(root: Path) -> Path:
    path = _itk_case(root, ".mha")
    nrrd = _itk_case(root / "other", ".nrrd")
    path.write_bytes(nrrd.read_bytes())
    return path


REGIONS_SMALL_FIRST = {"background": 0, "ET": [3], "TC": [2, 3], "WT": [1, 2, 3]}
NNUNET: dict[str, tuple[Build, str, tuple[str, ...]]] = {
    "nnunet file_ending lies": (
        lambda r: nnunet(r, ending=".nii.gz"),
        "file_ending '.nii.gz' matches no file in imagesTr/",
        ALL,
    ),
    "nnunet file_ending a path": (lambda r: nnunet(r, ending="/../../x.png"), "is not a file ending", ALL),
    "nnunet png named .nii.gz": (_png_named_nii, "holds PNG data but is named .nii.gz", ALL),
    "nnunet mha fifo": (_itk_fifo, "a named pipe (FIFO), not a regular file", ALL),
    "nnunet nrrd named .mha": (_nrrd_named_mha, "holds NRRD data but is named .mha", ALL),
    "nnunet label named twice": (
        lambda r: _dataset_json(r, '{"labels": {"background": 0, "RV": 1, "RV": 2}}'),
        "the key 'RV' appears twice",
        ALL,
    ),
    "nnunet two names one value": (
        lambda r: nnunet(r, {"background": 0, "RV": 1, "right ventricle": 1, "LV": 2}),
        "two names for one class",
        ALL,
    ),
    "nnunet ignore label not the highest": (  # the ignore label itself is read (tests/training/test_ignore_label.py)
        lambda r: nnunet(r, {"background": 0, "RV": 1, "ignore": 2, "LV": 3}),
        "the ignore label must be above every label value (3)",
        ALL,
    ),
    "nnunet ignore label of two values": (
        lambda r: nnunet(r, {"background": 0, "lesion": 1, "ignore": [2, 3]}),
        "labels entry 'ignore': [2, 3] is not one label value",
        ALL,
    ),
    "nnunet regions small to large": (
        lambda r: nnunet(r, REGIONS_SMALL_FIRST, regions_class_order=[3, 2, 1]),
        "region 'ET' can never be written",
        ALL,
    ),
    "nnunet dataset.json not json": (lambda r: _dataset_json(r, "{labels: "), "not valid JSON", ALL),
    "nnunet dataset.json a list": (lambda r: _dataset_json(r, "[1, 2]"), "expected a JSON object", ALL),
    "nnunet labels not values": (
        lambda r: nnunet(r, {"background": 0, "RV": "one", "LV": 2}),
        "is not a label value",
        ALL,
    ),
    "nnunet rater folder outside": (_rater_outside, "outside the dataset folder", LABELS),
    "nnunet image linked from outside": (_nn_image_outside, "images are never read from outside", ALL),
    "nnunet 2D label of a 3D image": (lambda r: nnunet_volume(r, (SIZE, SIZE)), "label geometry 16x16", LABELS),
    "nnunet label volume a slice short": (
        lambda r: nnunet_volume(r, (SIZE, SIZE, 2)),
        "label geometry 16x16x2",
        LABELS,
    ),
    "nnunet annotator folder ..": (
        lambda r: nnunet(r, annotator_folders=["labelsTr", "../x"]),
        "annotator_folders entry '../x' is outside the dataset folder",
        ALL,
    ),
}


# ----------------------------------------------------------------------------------------------------- SSL4MIS
def ssl4mis(root: Path) -> Path:
    """Two labelled 2D slice files and ``train.list``, which lists a third patient, p2, for the test to write
    (training reads only listed cases); returns the data folder."""
    for i in range(2):
        h5(root / "data" / f"p{i}_frame01_slice_1.h5", grey(i) / 255.0, (disc(3) > 0).astype(np.uint8))
    (root / "train.list").write_text("p0_frame01\np1_frame01\np2_frame01\n")
    return root / "data"


def _external(root: Path, key: str) -> Path:
    data = ssl4mis(root)
    other = h5(elsewhere(root) / "x.h5", grey() / 255.0, (disc(3) > 0).astype(np.uint8))
    path = data / "p2_frame01_slice_1.h5"
    with h5py.File(path, "w") as f:
        for k in ("image", "label"):
            f[k] = h5py.ExternalLink(str(other), f"/{k}") if k == key else other_data(other, k)
    return path


def other_data(path: Path, key: str) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return np.asarray(f[key][()])


def _volume(root: Path, label_shape: tuple[int, ...]) -> Path:
    data = ssl4mis(root)
    return h5(data / "p2_frame01.h5", np.random.default_rng(0).random((3, SIZE, SIZE)), np.zeros(label_shape, np.uint8))


def _group_image(root: Path) -> Path:
    path = ssl4mis(root) / "p2_frame01_slice_1.h5"
    with h5py.File(path, "w") as f:
        f.create_group("image")
        f.create_dataset("label", data=np.zeros((SIZE, SIZE), np.uint8))
    return path


def _listed(root: Path, line: str) -> Path:
    ssl4mis(root)
    (root / "train.list").write_text(f"p0_frame01\np1_frame01\n{line}\n")
    return root / "train.list"


SSL4MIS: dict[str, tuple[Build, str, tuple[str, ...]]] = {
    "hdf5 dangling link": (lambda r: link(ssl4mis(r) / "p2_frame01_slice_1.h5", r / "gone.h5"), "a dangling link", ALL),
    "hdf5 fifo": (lambda r: fifo(ssl4mis(r) / "p2_frame01_slice_1.h5"), "a named pipe (FIFO)", ALL),
    "hdf5 png bytes": (
        lambda r: written(ssl4mis(r) / "p2_frame01_slice_1.h5", encoded("PNG")),
        "holds PNG data but is named .h5",
        ALL,
    ),
    "hdf5 image external link": (lambda r: _external(r, "image"), "'image' is an external link to", ALL),
    "hdf5 label external link": (lambda r: _external(r, "label"), "'label' is an external link to", LABELS),
    "hdf5 image a group": (_group_image, "'image' is a group, not a dataset", ALL),
    "hdf5 image empty": (
        lambda r: h5(ssl4mis(r) / "p2_frame01.h5", np.zeros((0, SIZE, SIZE)), np.zeros((0, SIZE, SIZE), np.uint8)),
        "holds no values",
        ALL,
    ),
    "hdf5 image of text": (
        lambda r: h5(ssl4mis(r) / "p2_frame01_slice_1.h5", np.array([b"ab"] * SIZE), disc()),
        "holds |S2 values, not numbers",
        ALL,
    ),
    "hdf5 without label": (
        lambda r: h5(ssl4mis(r) / "p2_frame01_slice_1.h5", grey() / 255.0),
        "no dataset 'label', while the other files",
        ALL,
    ),
    "hdf5 2D label of a 3D image": (
        lambda r: _volume(r, (SIZE, SIZE)),
        "label shape 16x16 differs from the image volume's 3x16x16",
        LABELS,
    ),
    "hdf5 label volume a slice short": (
        lambda r: _volume(r, (2, SIZE, SIZE)),
        "label shape 2x16x16 differs from the image volume's 3x16x16",
        LABELS,
    ),
    "ssl4mis list entry without a file": (lambda r: _listed(r, "ghost_frame01"), "ghost_frame01", ("verify", "train")),
    "ssl4mis list entry ..": (lambda r: _listed(r, "../../etc/passwd"), "../../etc/passwd", ("verify", "train")),
}


# ------------------------------------------------------------------------------------------------ DICOM series
OTHER_SERIES = "1.2.826.0.1.3680043.8.498.99"


def _hu(slices: int = 4, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(0).integers(-1000, 1000, (slices, size, size)).astype(np.int16)


def _series_slice(root: Path, change) -> Path:
    """A 4-slice series in ``root`` whose third slice file ``change(path)`` spoils; returns ``root``."""
    change(dicom_series(root, _hu()) / "IM0002")
    return root


def _to_fifo(path: Path) -> None:
    path.unlink()
    fifo(path)


DICOM: dict[str, tuple[Build, str, tuple[str, ...]]] = {
    "dicom slice missing": (
        lambda r: dicom_series(r, _hu(), positions=[0, 1, 3, 4]),
        "slices unevenly spaced (2.5 to 5 mm apart, 5 mm between IM0001 and IM0002): a slice is missing",
        ("verify", "predict"),
    ),
    "dicom slices of two sizes": (
        lambda r: dicom_series(dicom_series(r, _hu(3)), _hu(1, 8), start=3),
        "slices of different sizes (IM0000: 16x16, IM0003: 8x8)",
        ("verify", "predict"),
    ),
    "dicom slice truncated": (
        lambda r: _series_slice(r, lambda p: written(p, p.read_bytes()[:-300])),
        "IM0002 is not part of series",
        ("verify", "predict"),
    ),
    "dicom slice not DICOM": (
        lambda r: _series_slice(r, lambda p: written(p, encoded("PNG"))),
        "IM0002 is not part of series",
        ("verify", "predict"),
    ),
    "dicom slice a fifo": (lambda r: _series_slice(r, _to_fifo), "IM0002 is not a regular file", ("verify", "predict")),
    "dicom two series": (
        lambda r: dicom_series(dicom_series(r, _hu(2)), _hu(2), uid=OTHER_SERIES, start=2),
        f"holds 2 DICOM series (SeriesInstanceUID 1.2.826.0.1.3680043.8.498.12, {OTHER_SERIES})",
        ("verify", "predict"),
    ),
    "dicom tilted gantry": (
        lambda r: dicom_series(r, _hu(), shear=1.0),
        "the slices are not stacked along their normal",
        ("verify", "predict"),
    ),
    "dicom no series": (
        lambda r: written(r / "a.dcm", b"not DICOM").parent,
        "no DICOM series here (1 file(s), none a readable DICOM image)",
        ("verify", "predict"),
    ),
}


# ------------------------------------------------------------------------ MetaImage / NRRD where 2D is expected
def itk(path: Path, array: np.ndarray, vector: bool = False) -> Path:
    """``array`` (SimpleITK's order: (Z,Y,X), (Y,X,components) with ``vector``) written as ``path``."""
    import SimpleITK as sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(sitk.GetImageFromArray(np.asarray(array), isVector=vector), str(path))
    return path


def _slices(k: int = 3) -> np.ndarray:
    return np.stack([grey(z) for z in range(k)])  # (Z,Y,X)


def _discs(k: int = 3) -> np.ndarray:
    return np.repeat((disc(3) > 0).astype(np.uint8)[None], k, axis=0)


def _paired_with(root: Path) -> Path:
    """A paired dataset of two good PNG cases and the PNG image of case ``z``; returns where its mask goes."""
    for i, stem in enumerate(("0_a", "1_a", "z")):
        png(root / "images" / f"{stem}.png", grey(i))
        if stem != "z":
            png(root / "masks" / f"{stem}.png", disc(3 + i))
    return root / "masks"


def _time_points(root: Path) -> Path:
    """Case ``z`` of a paired dataset: a 3D NRRD of 2 time points (read as 2 channels, as a 4D NIfTI) with a good
    3D label; returns the image (``predict`` refuses it as any input of another channel count than the model's,
    naming the item and the file's name)."""
    import SimpleITK as sitk

    _paired_with(root)
    (root / "images" / "z.png").unlink()
    itk(root / "masks" / "z.nrrd", _discs())
    path = root / "images" / "z.nrrd"
    sitk.WriteImage(sitk.JoinSeries([sitk.GetImageFromArray(_slices()) for _ in range(2)]), str(path))
    return path


def lidc(root: Path, image: Callable[[Path], Path] | None = None, mask: Callable[[Path], Path] | None = None) -> Path:
    """``LIDC-IDRI-slices/`` with two good patients and a third whose slice image / 4 masks ``image(folder)`` /
    ``mask(folder)`` write (PNG when not given); returns the file of the third patient the refusal must name."""
    for p in range(3):
        nodule = root / "LIDC-IDRI-slices" / f"LIDC-IDRI-000{p}" / "nodule-0"
        third = p == 2
        named = image(nodule / "images") if third and image else png(nodule / "images" / "slice-0.png", grey(p))
        for k in range(4):
            folder = nodule / f"mask-{k}"
            written_mask = mask(folder) if third and mask else png(folder / "slice-0.png", disc(3))
            named = written_mask if third and mask and k == 0 else named
    return named


SHAPES: dict[str, tuple[Build, str, tuple[str, ...]]] = {
    "lidc image mha volume": (
        lambda r: lidc(r, image=lambda f: itk(f / "slice-0.mha", _slices())),
        "a volume of 3 slices (16x16x3) where the lidc layout reads one 2D image a file",
        ALL,
    ),
    "lidc mask nrrd volume": (
        lambda r: lidc(r, mask=lambda f: itk(f / "slice-0.nrrd", _discs())),
        "a volume of 3 slices (16x16x3) as the label of the 2D image slice-0.png",
        LABELS,
    ),
    "mha volume as the mask of a 2D image": (
        lambda r: itk(_paired_with(r) / "z.mha", _discs()),
        "a volume of 3 slices (16x16x3) as the label of the 2D image z.png",
        LABELS,
    ),
    "nrrd mask of 3 components": (
        lambda r: itk(_paired_with(r) / "z.nrrd", np.stack([disc(3)] * 3, axis=-1), vector=True),
        "3 values a pixel (16x16x1x3), not one label value",
        LABELS,
    ),
    "nrrd of 2 time points": (_time_points, "images have 2 channels but data.in_channels is 1", LABELS),
}
