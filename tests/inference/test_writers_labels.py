"""Writers with several classes: label maps in the dataset's own values, the input's format and geometry."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from datafixtures import ACDC, grey, h5, label_map, nifti, png, ssl4mis

from diffuseg.data.formats import open_dataset
from diffuseg.data.transforms import resize_pair
from diffuseg.inference.writers import PredictionWriter, prediction_paths, read_prediction
from diffuseg.labels import ClassSpec, label_scheme


def test_png_label_values_round_trip_through_the_model_size(tmp_path):
    png(tmp_path / "in" / "images" / "a.png", grey(16))
    png(tmp_path / "in" / "masks" / "a.png", label_map(16) * 10)  # 0 / 10 / 20 / 30
    classes = [ClassSpec("a", (10,)), ClassSpec("b", (20,)), ClassSpec("c", (30,))]
    reader = open_dataset(tmp_path / "in", classes=classes)
    case = reader[0]
    atoms = resize_pair(case.image, case.masks, 8, atoms=3)[1][0]  # what a sampler returns at the model size
    out = tmp_path / "out"
    with PredictionWriter(out, [tmp_path / "in"], save_samples=True, scheme=reader.scheme) as w:
        w.write(case, atoms, torch.full((8, 8), 0.5), torch.stack([atoms, torch.zeros_like(atoms)]))
    written = np.array(Image.open(out / "a.png"))
    assert written.dtype == np.uint8 and written.tolist() == (label_map(16) * 10).tolist()
    assert np.array(Image.open(out / "samples" / "a_s001.png")).max() == 0
    assert torch.equal(torch.from_numpy(read_prediction(out, case, scheme=reader.scheme)), case.masks[0])


def test_png_values_above_255_are_16_bit(tmp_path):
    png(tmp_path / "in" / "images" / "a.png", grey(8))
    png(tmp_path / "in" / "masks" / "a.png", (label_map(8) > 0).astype(np.uint8))
    case = open_dataset(tmp_path / "in")[0]
    scheme = label_scheme([{"name": "x", "values": [300]}, {"name": "y", "values": [7]}])
    with PredictionWriter(tmp_path / "out", [tmp_path / "in"], scheme=scheme) as w:
        w.write(case, case.masks[0].long() * 2)  # atom 2 = value 7
        w.write(case, case.masks[0].long())  # atom 1 = value 300 (same file, rewritten)
    assert np.array(Image.open(tmp_path / "out" / "a.png")).max() == 300


def test_nifti_volume_brats_values_keep_affine(tmp_path):
    label = np.zeros((8, 8, 3), np.uint8)
    label[2:6, 2:6, :] = 2
    label[3:5, 3:5, 1:] = 1
    label[4, 4, 2] = 4
    affine = np.array([[0.5, 0, 0, 1], [0, 0.5, 0, 2], [0, 0, 2.0, 3], [0, 0, 0, 1]])
    nifti(
        tmp_path / "in" / "images" / "v.nii.gz", np.random.default_rng(0).random((8, 8, 3)).astype(np.float32), affine
    )
    nifti(tmp_path / "in" / "labels" / "v.nii.gz", label, affine)
    regions = [ClassSpec("WT", (1, 2, 4)), ClassSpec("TC", (1, 4)), ClassSpec("ET", (4,))]
    reader = open_dataset(tmp_path / "in", classes=regions)
    scheme = reader.scheme
    out = tmp_path / "out"
    with PredictionWriter(out, [tmp_path / "in"], scheme=scheme) as w:
        for i in reversed(range(len(reader))):
            case = reader[i]
            soft = scheme.one_hot(case.masks[0])  # (3, H, W) regions, decoded as a sampler does
            w.write(case, scheme.decode(soft[None])[0])
    import nibabel as nib

    img = nib.load(str(out / "v.nii.gz"))
    assert np.allclose(img.affine, affine) and img.get_data_dtype() == np.uint8
    assert np.asarray(img.dataobj).tolist() == label.tolist()


def test_hdf5_in_hdf5_out_volume_and_slice(tmp_path):
    root = ssl4mis(tmp_path / "in")
    reader = open_dataset(root, classes=ACDC)
    out = tmp_path / "out"
    with PredictionWriter(out, [root], scheme=reader.scheme) as w:
        for i in range(len(reader)):
            case = reader[i]
            w.write(case, case.masks[0], torch.full(case.masks.shape[-2:], 0.25))
    with h5py.File(out / "patient003_frame01.h5") as f, h5py.File(root / "data" / "patient003_frame01.h5") as src:
        assert list(f) == ["label"] and f["label"].dtype == np.uint8  # the image is not copied
        assert f["label"][()].tolist() == src["label"][()].tolist()  # (D,H,W) reassembled along the first axis
    with h5py.File(out / "patient001_frame01_slice_2.h5") as f:
        assert f["label"][()].tolist() == label_map(16, 2).tolist()
    case = reader[[e.case_id for e in reader.entries].index("patient003_frame01_z0002")]
    assert prediction_paths(out, case)["mask"].name == "patient003_frame01.h5"
    assert read_prediction(out, case, scheme=reader.scheme).tolist() == label_map(16, 2).tolist()
    assert np.allclose(read_prediction(out, case, "uncertainty"), 0.25)


def test_hdf5_binary_writes_zero_one(tmp_path):
    h5(tmp_path / "in" / "data" / "a_slice_1.h5", np.zeros((8, 8), np.float32), (label_map(8) > 1).astype(np.uint8))
    reader = open_dataset(tmp_path / "in")
    case = reader[0]
    with PredictionWriter(tmp_path / "out", [tmp_path / "in"], scheme=reader.scheme) as w:
        w.write(case, case.masks[0].float())
    with h5py.File(tmp_path / "out" / "a_slice_1.h5") as f:
        assert f["label"][()].tolist() == (label_map(8) > 1).astype(np.uint8).tolist()
    assert read_prediction(tmp_path / "out", case).tolist() == case.masks[0].tolist()


def test_binary_scheme_keeps_png_scaling(tmp_path):
    png(tmp_path / "in" / "images" / "a.png", grey(8))
    png(tmp_path / "in" / "masks" / "a.png", (label_map(8) > 0).astype(np.uint8) * 255)
    reader = open_dataset(tmp_path / "in")
    case = reader[0]
    with PredictionWriter(tmp_path / "out", [tmp_path / "in"], scheme=reader.scheme) as w:
        w.write(case, case.masks[0].float())
    assert np.array(Image.open(tmp_path / "out" / "a.png")).tolist() == ((label_map(8) > 0) * 255).tolist()
