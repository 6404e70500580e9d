"""Writers: the input's format and geometry, atomic files, and refusing to touch the input; with several classes,
label maps in the dataset's own values. Files are read back by ``inference.outputs``, as ``evaluate`` reads them."""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from datafixtures import ACDC, disc, grey, h5, label_map, lidc, nifti, paired, png, ssl4mis

from diffuseg.data.formats import images_from_files, open_dataset
from diffuseg.data.formats.files import read_file
from diffuseg.data.transforms import resize_pair
from diffuseg.errors import UserError
from diffuseg.inference.outputs import (
    find_predictions,
    output_format,
    output_name,
    prediction_files,
    read_mask,
    read_uncertainty,
)
from diffuseg.inference.writers import PredictionWriter
from diffuseg.labels import ClassSpec, LabelScheme, label_scheme


def prediction_paths(output: Path, case) -> dict[str, Path]:
    """Where the writer puts ``case``'s fused mask and uncertainty map."""
    files = prediction_files(output, output_name(case.geometry, case.case_id), output_format(case.geometry))
    return {"mask": files.fused, "uncertainty": files.uncertainty}


def read_prediction(output: Path, case, kind: str = "mask", scheme: LabelScheme | None = None) -> np.ndarray:
    """``case``'s written ``mask`` (atom map) or ``uncertainty`` (in [0, 1]), found and read as ``evaluate`` does."""
    files = find_predictions(output)[output_name(case.geometry, case.case_id)]
    z = case.geometry.slice_index
    if kind == "mask":
        return read_mask(files.fused, scheme or LabelScheme(), z)
    return read_uncertainty(files.uncertainty, z)


def _model_size(case, size=16):
    return resize_pair(case.image, case.masks, size)[1][0].float()


def test_png_back_at_original_size_with_uncertainty_and_samples(tmp_path):
    root = paired(tmp_path / "in", n=2, size=40)
    case = open_dataset(root)[1]
    out = tmp_path / "out"
    soft = F.interpolate(case.masks[None].float(), size=(20, 20), mode="bilinear", antialias=True)[0, 0]
    with PredictionWriter(out, [root], save_samples=True) as w:
        files = w.write(case, soft, torch.full((20, 20), 0.25), torch.stack([soft.round()] * 3))
    assert sorted(p.name for p in files) == [
        "1_a.png",
        "1_a_s000.png",
        "1_a_s001.png",
        "1_a_s002.png",
        "1_a_uncertainty.png",
    ]
    mask = read_prediction(out, case)
    assert mask.shape == (40, 40)
    dice = 2 * (mask & case.masks[0].numpy()).sum() / (mask.sum() + case.masks[0].numpy().sum())
    assert dice > 0.9
    unc = read_prediction(out, case, "uncertainty")
    assert np.allclose(unc, 0.25, atol=1 / 65535)
    assert (out / "samples" / "1_a_s002.png").is_file()
    assert not list(out.glob(".*"))  # no temporary files left


def test_nifti_keeps_affine_and_volumes_are_reassembled(tmp_path):
    vol = np.random.default_rng(0).random((10, 8, 4)).astype(np.float32)
    label = np.zeros((10, 8, 4), np.uint8)
    label[3:7, 2:6, 1:3] = 1
    affine = np.array([[0.7, 0, 0, -5], [0, 0.7, 0, 3], [0, 0, 3.0, 10], [0, 0, 0, 1]])
    nifti(tmp_path / "in" / "images" / "v.nii.gz", vol, affine)
    nifti(tmp_path / "in" / "labels" / "v.nii.gz", label, affine)
    reader = open_dataset(tmp_path / "in")
    out = tmp_path / "out"
    with PredictionWriter(out, [tmp_path / "in"]) as w:
        for i in reversed(range(len(reader))):
            case = reader[i]
            w.write(case, case.masks[0].float(), torch.rand(10, 8) * 0.2)
    import nibabel as nib

    written = nib.load(str(out / "v.nii.gz"))
    assert np.allclose(written.affine, affine)
    assert np.array_equal(np.asarray(written.dataobj), label)
    assert nib.load(str(out / "v_uncertainty.nii.gz")).get_data_dtype() == np.float32
    assert prediction_paths(out, reader[0])["mask"] == out / "v.nii.gz"
    assert np.array_equal(read_prediction(out, reader[2]), label[:, :, 2])


def test_lidc_cases_get_flat_names(tmp_path):
    root = lidc(tmp_path / "in", patients=1, slices=1)
    case = open_dataset(root)[0]
    with PredictionWriter(tmp_path / "out", [root]) as w:
        (path,) = w.write(case, case.masks[1].float())
    assert path.name == "LIDC-IDRI-0000_nodule-0_slice-0.png"


def test_refuses_output_inside_input_and_overwriting_inputs(tmp_path):
    root = paired(tmp_path / "in")
    with pytest.raises(UserError, match="inside the input"):
        PredictionWriter(root / "pred", [root])
    with pytest.raises(UserError, match="inside the input"):
        PredictionWriter(root, [root])
    single = png(tmp_path / "solo" / "scan.png", grey(8))
    case = images_from_files([single])[0]
    writer = PredictionWriter(tmp_path / "solo", [single])  # a file's folder is allowed as output ...
    with pytest.raises(UserError, match="overwrite an input file"):
        writer.write(case, torch.zeros(8, 8))  # ... but never over the file itself
    assert np.array_equal(np.array(__import__("PIL.Image").Image.open(single)), grey(8))


def test_npy_in_npy_out(tmp_path):
    (tmp_path / "in" / "images").mkdir(parents=True)
    np.save(tmp_path / "in" / "images" / "a.npy", grey(12).astype(np.float32))
    png(tmp_path / "in" / "masks" / "a.png", disc(12, 3))
    case = open_dataset(tmp_path / "in")[0]
    with PredictionWriter(tmp_path / "out", [tmp_path / "in"]) as w:
        w.write(case, _model_size(case, 12), torch.zeros(12, 12))
    assert np.array_equal(np.load(tmp_path / "out" / "a.npy"), case.masks[0].numpy())


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


@pytest.mark.parametrize("ext", ["nii.gz", "mha"])
def test_a_volume_cut_across_its_first_axis_is_reassembled_there(tmp_path, ext):
    """A thick-slice sagittal volume (spacing 3 x 0.8 x 0.8 mm) is cut across axis 0 (``formats.orientation``),
    and each slice's prediction goes back to its place on that axis; evaluate slices it the same way."""
    from diffuseg.data.formats.write import write_itk, write_nifti
    from diffuseg.evaluation.evaluate import evaluate

    vol = np.random.default_rng(0).random((4, 12, 10)).astype(np.float32)
    label = np.zeros((4, 12, 10), np.uint8)
    label[1:3, 3:9, 2:7] = 1
    label[3, 0, 0] = 1  # one voxel on the last sagittal slice only
    affine = np.array([[3.0, 0, 0, -5], [0, 0.8, 0, 3], [0, 0, 0.8, 10], [0, 0, 0, 1]])
    write = write_itk if ext == "mha" else write_nifti
    if ext == "mha":
        pytest.importorskip("SimpleITK")
    for folder in ("images", "labels"):
        (tmp_path / "in" / folder).mkdir(parents=True)
    write(tmp_path / "in" / "images" / f"v.{ext}", vol, affine)
    write(tmp_path / "in" / "labels" / f"v.{ext}", label, affine)
    reader = open_dataset(tmp_path / "in")
    assert len(reader) == 4 and reader[0].image.shape == (1, 12, 10) and reader[0].geometry.slice_axis == 0
    assert np.allclose(reader[0].geometry.plane_spacing(), (0.8, 0.8))
    out = tmp_path / "out"
    with PredictionWriter(out, [tmp_path / "in"]) as w:
        for i in range(len(reader)):
            case = reader[i]
            w.write(case, case.masks[0].float(), torch.rand(12, 10) * 0.2)
    written = read_file(out / f"v.{ext}")
    assert np.allclose(written.affine, affine) and np.array_equal(written.array, label)
    results = evaluate(out, tmp_path / "in", quiet=True)
    dice = {c["case"]: c["dice"] for c in results["cases"]}
    assert len(dice) == 4 and all(dice[f"v_z{z:04d}"] == 1.0 for z in (1, 2, 3))  # slice 0: both empty
    assert results["spacing_unit"] == "mm" and results["volumes"][0]["dice"] == 1.0
