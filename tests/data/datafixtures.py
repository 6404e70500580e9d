"""Builders for the data tests: tiny datasets written on the fly, and the bad-input corpus.

The corpus (``CORPUS``) is generated, not committed: each entry builds a small dataset folder with one kind
of problem, with the text that ``verify`` must report for it and the file that text must name.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from diffuseg.labels import ClassSpec

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def shared(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        pytest.skip(f"real data {path} is absent")
    return path


def png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path)
    return path


def nifti(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(array), np.eye(4) if affine is None else affine), str(path))
    return path


ACDC = (ClassSpec("RV", (1,)), ClassSpec("Myo", (2,)), ClassSpec("LV", (3,)))


def label_map(size: int = 16, seed: int = 0) -> np.ndarray:
    """Quadrants 0 / 1 / 2 / 3 (top-left, top-right, bottom-left, bottom-right)."""
    out = np.zeros((size, size), np.uint8)
    h = size // 2
    out[:h, h:], out[h:, :h], out[h:, h:] = 1, 2, 3
    return np.roll(out, seed, axis=1)


def h5(path, image, label=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image)
        if label is not None:
            f.create_dataset("label", data=label)
    return path


def ssl4mis(root, size: int = 16):
    """Two training patients as 2D slices, one validation patient as a 3D volume (D=3), SSL4MIS lists."""
    for p in (1, 2):
        for z in (1, 2):
            h5(root / "data" / f"patient00{p}_frame01_slice_{z}.h5", grey(size, p + z) / 255.0, label_map(size, z))
    volume = np.stack([label_map(size, z) for z in range(3)])
    h5(root / "data" / "patient003_frame01.h5", np.random.default_rng(0).random((3, size, size)), volume)
    (root / "train.list").write_text("patient001_frame01\npatient002_frame01\n")
    (root / "val.list").write_text("patient003_frame01\n")
    names = [f"patient00{p}_frame01_slice_{z}" for p in (1, 2) for z in (1, 2)]
    (root / "train_slices.list").write_text("\n".join(names))
    return root


def frames(patients: int, frames_of: tuple[int, ...] = (1, 12)) -> list[str]:
    """ACDC case names: ``patient001_frame01``, ``patient001_frame12``, ... (two frames of each patient)."""
    return [f"patient{p:03d}_frame{f:02d}" for p in range(1, patients + 1) for f in frames_of]


def ssl4mis_cases(root: Path, cases: list[str], lists: dict[str, list[str]], size: int = 8) -> Path:
    """An SSL4MIS folder with one 2D slice file ``CASE_slice_1.h5`` per case and the ``lists`` (file name ->
    the lines it holds)."""
    for i, case in enumerate(cases):
        h5(root / "data" / f"{case}_slice_1.h5", grey(size, i) / 255.0, (disc(size, 2) > 0).astype(np.uint8))
    for name, lines in lists.items():
        (root / name).write_text("".join(f"{line}\n" for line in lines))
    return root


def nnunet_cases(root: Path, cases: list[str], size: int = 8) -> Path:
    """An nnU-Net raw dataset of 2D PNG cases (``imagesTr/CASE_0000.png``, ``labelsTr/CASE.png``), binary."""
    meta = {"channel_names": {"0": "US"}, "labels": {"background": 0, "lesion": 1}, "file_ending": ".png"}
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(meta))
    for i, case in enumerate(cases):
        png(root / "imagesTr" / f"{case}_0000.png", grey(size, i))
        png(root / "labelsTr" / f"{case}.png", (disc(size, 2) > 0).astype(np.uint8))
    return root


def nnunet(root, labels: dict, values: np.ndarray, **extra):
    """An nnU-Net raw dataset of one 2-slice volume whose ``dataset.json`` declares ``labels``."""
    (root / "imagesTr").mkdir(parents=True)
    meta = {"channel_names": {"0": "MRI"}, "labels": labels, "file_ending": ".nii.gz", **extra}
    (root / "dataset.json").write_text(json.dumps(meta))
    nifti(root / "imagesTr" / "c1_0000.nii.gz", np.random.default_rng(0).random((16, 16, 2)).astype(np.float32))
    nifti(root / "labelsTr" / "c1.nii.gz", values)
    return root


def disc(size: int, radius: float, value: int = 255) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) <= radius**2).astype(np.uint8) * value


def grey(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)


def paired(root: Path, n: int = 3, size: int = 20) -> Path:
    for i in range(n):
        png(root / "images" / f"{i}_a.png", grey(size, i))
        png(root / "masks" / f"{i}_a.png", disc(size, 3 + i))
    return root


def lidc(root: Path, patients: int = 2, slices: int = 2, size: int = 16) -> Path:
    for p in range(patients):
        for s in range(slices):
            base = root / "LIDC-IDRI-slices" / f"LIDC-IDRI-{p:04d}" / "nodule-0"
            png(base / "images" / f"slice-{s}.png", grey(size, p * 10 + s))
            for k in range(4):
                png(base / f"mask-{k}" / f"slice-{s}.png", disc(size, k + 1))
    return root


def _corrupt(root: Path) -> None:
    paired(root)
    (root / "images" / "1_a.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")


def _truncated(root: Path) -> None:
    paired(root)
    path = root / "masks" / "2_a.png"
    path.write_bytes(path.read_bytes()[:40])


def _image_without_mask(root: Path) -> None:
    paired(root)
    png(root / "images" / "9_a.png", grey(20))


def _mask_without_image(root: Path) -> None:
    paired(root)
    png(root / "masks" / "8_b.png", disc(20, 3))


def _size_mismatch(root: Path) -> None:
    paired(root)
    png(root / "masks" / "0_a.png", disc(16, 3))


def _non_binary(root: Path) -> None:
    paired(root)
    png(root / "masks" / "1_a.png", (disc(20, 6, 1) + disc(20, 3, 1)).astype(np.uint8))


def _unknown_label(root: Path) -> None:
    case = root / "training" / "000001"
    for m in ("flair", "t1", "t1ce", "t2"):
        nifti(case / f"brats_train_001_{m}_080_w.nii.gz", np.random.default_rng(0).random((12, 12)))
    seg = disc(12, 3, 2).astype(np.float64)
    seg[0, 0] = 7
    nifti(case / "brats_train_001_seg_080_w.nii.gz", seg)


def _nan(root: Path) -> None:
    (root / "images").mkdir(parents=True)
    image = np.random.default_rng(0).random((10, 10)).astype(np.float32)
    image[2, 3] = np.nan
    image[4, 4] = np.inf
    np.save(root / "images" / "scan.npy", image)
    png(root / "masks" / "scan.png", disc(10, 2))


def _empty(root: Path) -> None:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)


def _unequal_annotators(root: Path) -> None:
    lidc(root)
    (root / "LIDC-IDRI-slices" / "LIDC-IDRI-0001" / "nodule-0" / "mask-3" / "slice-1.png").unlink()


def _nifti_geometry(root: Path) -> None:
    vol = np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)
    nifti(root / "images" / "vol.nii.gz", vol)
    shifted = np.eye(4)
    shifted[:3, 3] = (5.0, 0.0, 0.0)
    nifti(root / "labels" / "vol.nii.gz", (vol > 0.5).astype(np.uint8), shifted)


def _dataset_json_mismatch(root: Path) -> None:
    (root / "imagesTr").mkdir(parents=True)
    labels = {"background": 0, "RV": 1, "Myo": 2, "LV": 3}
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": labels}))
    nifti(root / "imagesTr" / "c1_0000.nii.gz", np.random.default_rng(0).random((12, 12)).astype(np.float32))
    nifti(root / "labelsTr" / "c1.nii.gz", label_map(12) * 2)  # values 2, 4, 6: 4 and 6 are not in dataset.json


def _hdf5_label_size(root: Path) -> None:
    h5(root / "data" / "p1_frame01_slice_1.h5", np.zeros((16, 16), np.float32), label_map(16) // 3)  # binary:
    h5(root / "data" / "p1_frame01_slice_2.h5", np.zeros((16, 16), np.float32), label_map(8) // 3)  # no note


def _outside(root: Path) -> Path:
    """A folder beside the dataset ``root``, outside it."""
    out = root.parent / f"{root.name}-elsewhere"
    out.mkdir(exist_ok=True)
    return out


def _hdf5_pair(root: Path) -> None:
    h5(root / "data" / "a_slice_1.h5", np.zeros((16, 16), np.float32), label_map(16) // 3)


def _hdf5_without_label(root: Path) -> None:  # listed for training, silently dropped before
    _hdf5_pair(root)
    h5(root / "data" / "b_slice_1.h5", np.zeros((16, 16), np.float32))
    (root / "train.list").write_text("a\nb\n")


def _hdf5_group_image(root: Path) -> None:
    _hdf5_pair(root)
    with h5py.File(root / "data" / "b_slice_1.h5", "w") as f:
        f.create_group("image")
        f.create_dataset("label", data=label_map(16) // 3)


def _hdf5_zero_size(root: Path) -> None:
    _hdf5_pair(root)
    h5(root / "data" / "b.h5", np.zeros((0, 16, 16), np.float32), np.zeros((0, 16, 16), np.uint8))


def _hdf5_zero_size_label(root: Path) -> None:
    _hdf5_pair(root)
    h5(root / "data" / "b_slice_1.h5", np.zeros((16, 16), np.float32), np.zeros((0,), np.uint8))


def _hdf5_text_image(root: Path) -> None:
    _hdf5_pair(root)
    h5(root / "data" / "b_slice_1.h5", np.array([b"ab"] * 16), label_map(16) // 3)


def _hdf5_external_link(root: Path) -> None:
    _hdf5_pair(root)
    elsewhere = h5(_outside(root) / "labels.h5", np.zeros((16, 16), np.float32), label_map(16) // 3)
    with h5py.File(root / "data" / "b_slice_1.h5", "w") as f:
        f.create_dataset("image", data=np.zeros((16, 16), np.float32))
        f["label"] = h5py.ExternalLink(str(elsewhere), "/label")


def _npy_text_image(root: Path) -> None:
    paired(root, n=2)
    np.save(root / "images" / "1_a.npy", np.full((20, 20), "x"))
    (root / "images" / "1_a.png").unlink()


def _npy_empty_image(root: Path) -> None:
    paired(root, n=2)
    np.save(root / "images" / "1_a.npy", np.zeros((0, 20), np.float32))
    (root / "images" / "1_a.png").unlink()


def _label_link_outside(root: Path) -> None:
    paired(root, n=2)
    target = png(_outside(root) / "mask.png", disc(20, 4))
    (root / "masks" / "1_a.png").unlink()
    (root / "masks" / "1_a.png").symlink_to(target)


def _label_folder_link_outside(root: Path) -> None:
    nnunet(root, {"background": 0, "tumour": 1}, np.zeros((16, 16, 2), np.uint8))
    rater = _outside(root) / "rater1"
    nifti(rater / "c1.nii.gz", np.zeros((16, 16, 2), np.uint8))
    (root / "labelsTr_rater1").symlink_to(rater, target_is_directory=True)


def _ids_differ_only_in_case(root: Path) -> None:  # predict refuses them: one file on macOS and Windows
    paired(root, n=1)
    png(root / "images" / "Scan.png", grey(20))
    png(root / "masks" / "Scan.png", disc(20, 3))
    png(root / "images" / "scan.png", grey(20, 1))
    png(root / "masks" / "scan.png", disc(20, 4))


# name -> (builder, text every report must contain, file the problem line must name)
CORPUS = {
    "corrupt": (_corrupt, "unreadable or corrupt", "images/1_a.png"),
    "truncated": (_truncated, "unreadable or corrupt", "masks/2_a.png"),
    "image_without_mask": (_image_without_mask, "image without a mask", "images/9_a.png"),
    "mask_without_image": (_mask_without_image, "mask without an image", "masks/8_b.png"),
    "size_mismatch": (_size_mismatch, "mask size 16x16 differs from image size 20x20", "masks/0_a.png"),
    "non_binary": (_non_binary, "not binary (values {0, 1, 2})", "masks/1_a.png"),
    "unknown_label": (_unknown_label, "unknown label value(s) {7}", "seg_080_w.nii.gz"),
    "nan": (_nan, "2 NaN or infinite intensity value(s)", "images/scan.npy"),
    "empty": (_empty, "empty dataset", ""),
    "unequal_annotators": (_unequal_annotators, "annotator folders of unequal length", "LIDC-IDRI-0001/nodule-0"),
    "nifti_geometry": (_nifti_geometry, "label geometry", "labels/vol.nii.gz"),
    "dataset_json_mismatch": (_dataset_json_mismatch, "label value(s) {4, 6} not declared in", "labelsTr/c1.nii.gz"),
    "hdf5_label_size": (_hdf5_label_size, "mask size 8x8 differs from image size 16x16", "p1_frame01_slice_2.h5"),
    "hdf5_without_label": (_hdf5_without_label, "no dataset 'label', while the other files", "data/b_slice_1.h5"),
    "hdf5_group_image": (_hdf5_group_image, "'image' is a group, not a dataset", "data/b_slice_1.h5"),
    "hdf5_zero_size": (_hdf5_zero_size, "dataset 'image' holds no values (shape 0x16x16)", "data/b.h5"),
    "hdf5_zero_size_label": (_hdf5_zero_size_label, "dataset 'label' holds no values (shape 0)", "b_slice_1.h5"),
    "hdf5_text_image": (_hdf5_text_image, "dataset 'image' holds |S2 values, not numbers", "data/b_slice_1.h5"),
    "hdf5_external_link": (_hdf5_external_link, "'label' is an external link to", "data/b_slice_1.h5"),
    "npy_text_image": (_npy_text_image, "holds <U1 values, not numbers", "images/1_a.npy"),
    "npy_empty_image": (_npy_empty_image, "holds no values (shape 0x20)", "images/1_a.npy"),
    "label_link_outside": (_label_link_outside, "outside the dataset folder", "masks/1_a.png"),
    "ids_differ_only_in_case": (_ids_differ_only_in_case, "both would be predicted as scan.*", "images/Scan.png"),
    "label_folder_link_outside": (
        _label_folder_link_outside,
        "outside the dataset folder",
        "labelsTr_rater1/c1.nii.gz",
    ),
}


def busi(root: Path, size: int = 20) -> Path:
    """A tiny BUSI-like set: class folders; RGB and grey PNGs mixed; a second-lesion mask; a normal image
    whose mask is all zero; one stem in two classes."""
    rng = np.random.default_rng(7)
    colour = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)  # true colour: channels differ
    lesion = np.zeros((size, size), np.uint8)
    lesion[2:6, 2:6] = 255
    second = np.zeros((size, size), np.uint8)
    second[12:16, 12:16] = 255
    png(root / "benign" / "benign (1).png", colour)
    png(root / "benign" / "benign (1)_mask.png", lesion)
    png(root / "benign" / "benign (1)_mask_1.png", second)
    png(root / "benign" / "benign (2).png", grey(size, 1))
    png(root / "benign" / "benign (2)_mask.png", disc(size, 4))
    png(root / "malignant" / "malignant (1).png", np.repeat(grey(size, 2)[..., None], 3, axis=2))  # grey as RGB
    png(root / "malignant" / "malignant (1)_mask.png", disc(size, 5))
    png(root / "malignant" / "benign (2).png", grey(size, 3))  # same stem as in benign/
    png(root / "malignant" / "benign (2)_mask.png", disc(size, 3))
    png(root / "normal" / "normal (1).png", colour[::-1].copy())
    png(root / "normal" / "normal (1)_mask.png", np.zeros((size, size), np.uint8))
    return root


def oblique(x_degrees: float = 20.0, z_degrees: float = 30.0) -> np.ndarray:
    """A 3x3 direction (columns: the X, Y, Z axes in LPS): a turn about x, then about z."""
    a, b = np.radians(x_degrees), np.radians(z_degrees)
    turn_x = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    turn_z = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return turn_z @ turn_x


CT_TAGS = {  # PatientName, PatientID, StudyInstanceUID, StudyDate, FrameOfReferenceUID, Modality
    "0010|0010": "Doe^Jane",
    "0010|0020": "anon-7",
    "0020|000d": "1.2.826.0.1.3680043.8.498.10",
    "0008|0020": "20240102",
    "0020|0052": "1.2.826.0.1.3680043.8.498.11",
    "0008|0060": "CT",
}


def dicom_series(
    folder: Path,
    hu: np.ndarray,
    spacing: tuple[float, float, float] = (0.7, 0.7, 2.5),
    origin: tuple[float, float, float] = (10.0, -20.0, 30.0),
    direction: np.ndarray | None = None,
    uid: str = "1.2.826.0.1.3680043.8.498.12",
    positions: list[float] | None = None,
    ending: str = "",
    start: int = 0,
    shear: float = 0.0,
) -> Path:
    """A CT-like DICOM series in ``folder`` written with SimpleITK: one file ``IMnnnn<ending>`` per slice of ``hu``
    (Z,Y,X) int16 Hounsfield units, stored with RescaleIntercept -1024. Slice k is number n = ``start`` + k, at
    ``origin`` + ``positions[k]`` (default n) slice distances along the normal of ``direction`` (default
    ``oblique()``), shifted by n * ``shear`` mm along its rows (a tilted gantry). Returns ``folder``."""
    import SimpleITK as sitk

    from diffuseg.data.formats.dicom import gdcm

    d = oblique() if direction is None else np.asarray(direction)
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")
    for k, plane in enumerate(np.asarray(hu, np.int16)):
        n = start + k
        image = sitk.GetImageFromArray(plane)
        image.SetSpacing(spacing[:2])
        along = n if positions is None else positions[k]
        at = np.asarray(origin) + along * spacing[2] * d[:, 2] + n * shear * d[:, 0]
        tags = {
            **CT_TAGS,
            "0020|000e": uid,
            "0008|0018": f"{uid}.{n + 1}",
            "0020|0013": str(n + 1),
            "0020|0032": "\\".join(f"{v:.10g}" for v in at),
            "0020|0037": "\\".join(f"{v:.10g}" for v in (*d[:, 0], *d[:, 1])),
            "0018|0050": f"{spacing[2]:g}",
            "0028|1052": "-1024",
            "0028|1053": "1",
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"IM{n:04d}{ending}"))
        with gdcm(sitk):  # GDCM's writer sets the C locale: put back
            writer.Execute(image)
    return folder
