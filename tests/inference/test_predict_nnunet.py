"""nnU-Net's round trip: ``imagesTs`` of two-channel cases predicted as ``CASE.nii.gz``, scored against
``labelsTs`` alone with nnU-Net's ``summary.json``; a failed run leaves nothing new in OUTPUT."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from diffuseg.errors import UserError
from diffuseg.evaluation.evaluate import evaluate
from diffuseg.inference.predict import predict
from diffuseg.inference.writers import PredictionWriter
from diffuseg.presets import load_config

TINY = [
    "data.image_size=16",
    "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1, time_dim: 16}",
    "sample.steps=2",
    "sample.samples=2",
    "sample.batch_size=2",
]
CLASSES = "data.classes=[{name: RV, values: [1]}, {name: Myo, values: [2]}, {name: LV, values: [3]}]"
AFFINE = np.array([[0.0, 0.0, 2.5, 3.0], [0.0, 0.8, 0.0, -1.0], [0.7, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 1.0]])


def _checkpoint(folder: Path, *overrides: str) -> Path:
    from diffuseg.checkpoint import metadata, save_atomic
    from diffuseg.training.module import DiffusionModule

    config = load_config("lidc-central", [*TINY, *overrides])
    torch.manual_seed(0)
    module = DiffusionModule(config)
    path = folder / "last.ckpt"
    save_atomic({"state_dict": module.state_dict(), "diffuseg": metadata(config, 0, 0)}, path)
    return path


@pytest.fixture(scope="module")
def two_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("ckpt2"), "data.in_channels=2", CLASSES)


@pytest.fixture(scope="module")
def one_channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("ckpt1"))


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, AFFINE), str(path))


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """An nnU-Net v2 raw dataset's test side: imagesTs (2 channels, 2 cases of 12x10x2) and labelsTs (3 classes)."""
    root = tmp_path / "Dataset001_Heart"
    meta = {
        "channel_names": {"0": "cine", "1": "T2"},
        "labels": {"background": 0, "RV": 1, "Myo": 2, "LV": 3},
        "file_ending": ".nii.gz",
    }
    root.mkdir()
    (root / "dataset.json").write_text(json.dumps(meta))
    rng = np.random.default_rng(0)
    for case in ("heart_001", "heart_002"):
        for channel in range(2):
            _save(root / "imagesTs" / f"{case}_{channel:04d}.nii.gz", rng.random((12, 10, 2)).astype(np.float32))
        _save(root / "labelsTs" / f"{case}.nii.gz", rng.integers(0, 4, (12, 10, 2)).astype(np.uint8))
    return root


def test_images_ts_round_trip(two_channel: Path, dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    predict(two_channel, dataset / "imagesTs", out)
    assert sorted(p.name for p in out.glob("heart_*.nii.gz") if "_uncertainty" not in p.name) == [
        "heart_001.nii.gz",
        "heart_002.nii.gz",
    ]
    mask = nib.load(out / "heart_001.nii.gz")
    assert mask.shape == (12, 10, 2) and np.allclose(mask.affine, AFFINE)
    assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2, 3}
    results = evaluate(out, dataset / "labelsTs", quiet=True)
    assert results["layout"] == "labels" and results["class_names"] == ["RV", "Myo", "LV"]
    assert len(results["cases"]) == 4 and not results["missing"]["predictions"]
    summary = json.loads((out / "summary.json").read_text())
    assert [c["prediction_file"] for c in summary["metric_per_case"]] == [
        str(out / "heart_001.nii.gz"),
        str(out / "heart_002.nii.gz"),
    ]
    assert set(summary["mean"]) == {"1", "2", "3"}
    truth = np.asarray(nib.load(dataset / "labelsTs" / "heart_002.nii.gz").dataobj)
    pred = np.asarray(nib.load(out / "heart_002.nii.gz").dataobj)
    counts = summary["metric_per_case"][1]["metrics"]["2"]
    tp, fp = int(((pred == 2) & (truth == 2)).sum()), int(((pred == 2) & (truth != 2)).sum())
    fn = int(((pred != 2) & (truth == 2)).sum())
    assert (counts["TP"], counts["FP"], counts["FN"]) == (tp, fp, fn)
    assert math.isclose(counts["Dice"], 2 * tp / (2 * tp + fp + fn))
    assert counts["TN"] + tp + fp + fn == truth.size


def test_a_model_of_other_channels_is_refused_before_anything_is_written(
    one_channel: Path, dataset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pred"
    with pytest.raises(
        UserError, match=r"has 2 channel\(s\) \(2 file\(s\): heart_001_0000.nii.gz, heart_001_0001"
    ) as err:
        predict(one_channel, dataset / "imagesTs", out)
    assert str(err.value).startswith(f"{dataset / 'imagesTs' / 'heart_001'}: the input has")  # the case, no slice
    assert not out.exists()
    four_d = dataset / "4d" / "z.nii.gz"  # one file of two channels (X,Y,Z,channels)
    _save(four_d, np.random.default_rng(1).random((12, 10, 2, 2)).astype(np.float32))
    with pytest.raises(UserError) as err:
        predict(one_channel, four_d.parent, out)
    assert str(err.value).startswith(f"{four_d}: the input has 2 channel(s) but the model reads 1 ")
    assert not out.exists()


@pytest.mark.parametrize("existed", [False, True])
def test_a_failed_run_leaves_nothing_new(
    two_channel: Path, dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existed: bool
) -> None:
    out = tmp_path / "pred"
    if existed:
        out.mkdir()
        (out / "notes.txt").write_text("mine")

    def failing(self, case, *args):
        raise UserError(f"{case.case_id}: cannot be written")

    monkeypatch.setattr(PredictionWriter, "write", failing)
    with pytest.raises(UserError, match="cannot be written"):
        predict(two_channel, dataset / "imagesTs", out, save_samples=True)
    assert (sorted(p.name for p in out.iterdir()) == ["notes.txt"]) if existed else not out.exists()


def test_split_test_and_a_case_list_through_the_cli(
    two_channel: Path, dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from diffuseg.cli import main

    out = tmp_path / "test"
    assert main(["predict", str(two_channel), str(dataset), str(out), "--split", "test"]) == 0
    assert f"nnU-Net's {dataset / 'imagesTs'}" in capsys.readouterr().out
    assert (out / "heart_001.nii.gz").is_file() and (out / "heart_002.nii.gz").is_file()
    assert main(["evaluate", str(out), str(dataset), "--split", "test"]) == 0
    assert json.loads((out / "results.json").read_text())["gt"] == str((dataset / "labelsTs").resolve())
    listed = tmp_path / "cases.txt"
    listed.write_text("heart_002  # the second volume\n")
    one = tmp_path / "one"
    assert main(["predict", str(two_channel), str(dataset / "imagesTs"), str(one), "--cases", str(listed)]) == 0
    assert sorted(p.name for p in one.glob("*.nii.gz")) == ["heart_002.nii.gz", "heart_002_uncertainty.nii.gz"]
    assert (
        main(["predict", str(two_channel), str(dataset), str(tmp_path / "x"), "--split", "val", "--cases", str(listed)])
        == 2
    )
    assert "--split val and --cases both choose" in capsys.readouterr().err


@pytest.mark.parametrize("shape", [(3, 12, 10), (12, 10)])
def test_a_single_hdf5_file(one_channel: Path, tmp_path: Path, shape: tuple[int, ...]) -> None:
    import h5py

    source = tmp_path / "patient001_frame01.h5"
    with h5py.File(source, "w") as f:
        f.create_dataset("image", data=np.random.default_rng(0).random(shape).astype(np.float32))
    out = tmp_path / "pred"
    assert predict(one_channel, [source], out) == 1  # a volume counts once
    with h5py.File(out / "patient001_frame01.h5", "r") as f:
        assert f["label"].shape == shape


@pytest.mark.parametrize("ext", ["mha", "nrrd", "nii.gz"])
def test_volumes_come_back_in_their_format_with_geometry_and_header(
    one_channel: Path, tmp_path: Path, ext: str
) -> None:
    sitk = pytest.importorskip("SimpleITK")
    image = sitk.GetImageFromArray(np.random.default_rng(0).random((2, 12, 10)).astype(np.float32))
    image.SetSpacing((0.7, 0.8, 2.5))
    image.SetOrigin((10.0, -5.0, 3.0))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    source = tmp_path / f"scan.{ext}"
    sitk.WriteImage(image, str(source))
    out = tmp_path / "pred"
    assert predict(one_channel, [source], out) == 1
    mask = sitk.ReadImage(str(out / f"scan.{ext}"))
    assert mask.GetSize() == image.GetSize() and np.allclose(mask.GetSpacing(), image.GetSpacing())
    assert np.allclose(mask.GetOrigin(), image.GetOrigin()) and np.allclose(mask.GetDirection(), image.GetDirection())
    if ext == "nii.gz":  # nibabel reads the input's header fields back
        before, after = nib.load(source).header, nib.load(out / f"scan.{ext}").header
        assert after.get_xyzt_units() == before.get_xyzt_units() and after["sform_code"] == before["sform_code"]
