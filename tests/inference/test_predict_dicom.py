"""``diffuseg predict`` on DICOM series through the command line: a series folder, and a folder of series folders,
come back as DICOM series with the input's geometry and patient and study tags; a rerun resumes, a changed series
is predicted again, and a series folder no manifest records is never written over."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from diffuseg.cli import main
from diffuseg.errors import UserError
from diffuseg.inference.predict import predict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from datafixtures import dicom_series

sitk = pytest.importorskip("SimpleITK")
pytestmark = pytest.mark.usefixtures("one_thread")

HU = np.random.default_rng(0).integers(-1000, 1000, (4, 16, 16)).astype(np.int16)  # (Z,Y,X)
TAGS = ("0010|0010", "0010|0020", "0020|000d", "0008|0020", "0020|0052")  # patient, study, frame of reference


def _series(folder: Path):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    reader.MetaDataDictionaryArrayUpdateOn()
    return reader.Execute(), reader


def test_a_series_is_predicted_as_a_series_of_its_geometry(untrained_checkpoint: Path, tmp_path: Path) -> None:
    source = dicom_series(tmp_path / "scans" / "ct", HU)
    out = tmp_path / "pred"
    assert main(["predict", str(untrained_checkpoint), str(source), str(out)]) == 0
    assert sorted(p.name for p in (out / "ct").iterdir()) == ["0000.dcm", "0001.dcm", "0002.dcm", "0003.dcm"]
    before, source_tags = _series(source)
    mask, tags = _series(out / "ct")
    assert mask.GetSize() == before.GetSize()
    for got, want in (
        (mask.GetOrigin(), before.GetOrigin()),
        (mask.GetSpacing(), before.GetSpacing()),
        (mask.GetDirection(), before.GetDirection()),
    ):
        np.testing.assert_allclose(got, want, atol=1e-6)
    for key in TAGS:
        assert tags.GetMetaData(0, key).strip() == source_tags.GetMetaData(0, key).strip(), key
    assert tags.GetMetaData(0, "0008|0060").strip() == "OT"
    assert tags.GetMetaData(0, "0008|103e").strip() == "diffuseg mask"
    assert tags.GetMetaData(0, "0020|000e") != source_tags.GetMetaData(0, "0020|000e")
    values = sitk.GetArrayFromImage(mask)
    assert values.dtype == np.uint8 and set(np.unique(values)) <= {0, 1}
    uncertainty, unc_tags = _series(out / "ct_uncertainty")
    np.testing.assert_allclose(uncertainty.GetOrigin(), before.GetOrigin(), atol=1e-6)
    assert unc_tags.GetMetaData(0, "0008|103e").strip() == "diffuseg uncertainty"
    u = sitk.GetArrayFromImage(uncertainty)
    assert u.dtype.kind == "f" and u.min() >= 0.0 and u.max() <= 1.0


def test_a_folder_of_series_gives_one_case_each_and_resumes(
    untrained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    scans = tmp_path / "scans"
    dicom_series(scans / "a", HU)
    dicom_series(scans / "b", HU[:3], uid="1.2.826.0.1.3680043.8.498.13")
    out = tmp_path / "pred"
    argv = ["predict", str(untrained_checkpoint), str(scans), str(out)]
    assert main(argv) == 0
    assert {p.name for p in out.iterdir() if p.is_dir()} == {"a", "a_uncertainty", "b", "b_uncertainty"}
    assert _series(out / "b")[0].GetSize() == (16, 16, 3)
    first = {p.name: (p / "0000.dcm").stat().st_mtime_ns for p in out.iterdir() if p.is_dir()}
    capsys.readouterr()
    assert main(argv) == 0
    assert "resuming: 2 of 2 case(s) already done" in capsys.readouterr().err
    shutil.rmtree(scans / "b")
    dicom_series(scans / "b", HU[:3] + 1, uid="1.2.826.0.1.3680043.8.498.13")  # new content, the same names
    assert main(argv) == 0
    assert "changed since predicted" in capsys.readouterr().err
    now = {p.name: (p / "0000.dcm").stat().st_mtime_ns for p in out.iterdir() if p.is_dir()}
    assert now["a"] == first["a"] and now["b"] != first["b"]  # a kept, b written anew


def test_a_series_folder_no_manifest_records_is_not_written_over(
    untrained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    source = dicom_series(tmp_path / "scans" / "ct", HU)
    out = tmp_path / "pred"
    shutil.copytree(source, out / "ct")
    assert main(["predict", str(untrained_checkpoint), str(source), str(out)]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and f"{out / 'ct'}: exists, and no manifest" in err
    assert sorted(p.name for p in out.iterdir()) == ["ct"] and len(list((out / "ct").iterdir())) == 4


def test_dicom_predictions_and_their_samples_are_scored_against_label_series(
    untrained_checkpoint: Path, tmp_path: Path
) -> None:
    from diffuseg.data.formats.files import read_file
    from diffuseg.data.formats.write import write_dicom

    scans = tmp_path / "scans"
    for name, uid in (("a", "1.2.826.0.1.3680043.8.498.12"), ("b", "1.2.826.0.1.3680043.8.498.13")):
        source = dicom_series(scans / name, HU, uid=uid)
        volume = read_file(source)
        (tmp_path / "labels" / name).mkdir(parents=True)
        write_dicom(tmp_path / "labels" / name, (volume.array > 0).astype(np.uint8), volume.affine, str(source), "mask")
    out = tmp_path / "pred"
    assert main(["predict", str(untrained_checkpoint), str(scans), str(out), "--save-samples"]) == 0
    sample, tags = _series(out / "samples" / "a_s000")
    assert sample.GetSize() == (16, 16, 4) and tags.GetMetaData(0, "0008|103e").strip() == "diffuseg sample 0"
    assert main(["evaluate", str(out), str(tmp_path / "labels")]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["layout"] == "labels" and len(results["cases"]) == 8 and len(results["volumes"]) == 2


def test_without_simpleitk_one_error_names_the_extra_and_nothing_is_written(
    untrained_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = dicom_series(tmp_path / "scans" / "ct", HU)
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # import fails as when it is not installed
    assert main(["predict", str(untrained_checkpoint), str(source), str(tmp_path / "pred")]) == 2
    err = capsys.readouterr().err
    assert sum(line.startswith("error:") for line in err.splitlines()) == 1 and "Traceback" not in err
    assert f"{source}: DICOM series are read and written through SimpleITK" in err and "diffuseg[itk]" in err
    assert not (tmp_path / "pred").exists()


def _spacing_checkpoint(path: Path) -> Path:
    """An untrained binary checkpoint that reads its items at 1 x 1 mm per pixel into 16 x 16 px
    (``data.resize=spacing``)."""
    import torch

    from diffuseg.checkpoint import metadata, save_atomic
    from diffuseg.presets import load_config
    from diffuseg.training.module import DiffusionModule

    unet = "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1, time_dim: 16}"
    overrides = ["data.image_size=16", unet, "sample.steps=1", "sample.samples=1", "data.resize=spacing"]
    config = load_config("lidc-central", [*overrides, "data.spacing=[1, 1]"])
    torch.manual_seed(0)
    save_atomic({"state_dict": DiffusionModule(config).state_dict(), "diffuseg": metadata(config, 0, 0)}, path)
    return path


def test_a_series_of_anisotropic_pixels_predicts_at_its_own_spacing(tmp_path: Path) -> None:
    from diffuseg.data.formats import open_dataset
    from diffuseg.data.spacing import plane_headers

    checkpoint = _spacing_checkpoint(tmp_path / "last.ckpt")
    hu = np.random.default_rng(1).integers(-1000, 1000, (2, 16, 24)).astype(np.int16)  # (Z,Y,X): items 24 x 16
    source = dicom_series(tmp_path / "scans" / "ct", hu, spacing=(0.5, 1.0, 3.0))  # 0.5 mm rows, 1 mm columns
    reader = open_dataset(source)
    assert plane_headers(reader, range(len(reader))) == [(str(source), (24, 16), (0.5, 1.0))]  # 12 x 16 mm
    assert reader[0].geometry.plane_spacing() == (0.5, 1.0)  # the headers agree with the decoded series
    out = tmp_path / "pred"
    assert main(["predict", str(checkpoint), str(source), str(out)]) == 0
    mask, _ = _series(out / "ct")
    assert mask.GetSize() == (24, 16, 2)
    np.testing.assert_allclose(mask.GetSpacing(), (0.5, 1.0, 3.0), atol=1e-6)
    wide = dicom_series(tmp_path / "wide" / "ct", np.zeros((2, 16, 40), np.int16), spacing=(0.5, 1.0, 3.0))
    with pytest.raises(UserError, match=r"ct: 40 x 16 pixels of 0\.5 x 1 mm \(20 x 16 mm\) do not fit"):
        predict(checkpoint, wide, tmp_path / "pred-wide")  # 20 mm of rows at 1 mm: more than 16 px
    assert not (tmp_path / "pred-wide").exists()
