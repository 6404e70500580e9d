"""DICOM series through SimpleITK: a folder of slice files is one volume with SimpleITK's geometry and Hounsfield
units; a folder of series folders one case per series; predictions written back as a series of the input's
geometry and patient and study tags. Refusals name the folder (``tests/hostile_layouts.DICOM`` runs them through the
command line). Without SimpleITK: one error naming the extra."""

from __future__ import annotations

import locale
import os
import re
import sys

import nibabel as nib
import numpy as np
import pytest
from datafixtures import CT_TAGS, dicom_series, oblique, png

from diffuseg.data.formats import open_dataset
from diffuseg.data.formats.dicom import input_files, is_series_folder, series_info
from diffuseg.data.formats.files import read_file
from diffuseg.data.formats.itk import itk_affine, itk_geometry
from diffuseg.data.formats.write import COPIED_TAGS, UNCERTAINTY_SLOPE, write_dicom
from diffuseg.errors import UserError

sitk = pytest.importorskip("SimpleITK")

HU = np.random.default_rng(0).integers(-1000, 1000, (4, 16, 16)).astype(np.int16)  # (Z,Y,X)
UID = re.compile(r"^2\.25\.\d{1,39}$")


def _sitk_series(folder):
    """SimpleITK's own reading of ``folder``: the image and the reader (its per-slice tags)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    reader.MetaDataDictionaryArrayUpdateOn()
    return reader.Execute(), reader


def _tag(reader, key: str, k: int = 0) -> str:
    return reader.GetMetaData(k, key).strip()


@pytest.mark.parametrize("ending", ["", ".dcm"])
def test_a_series_reads_with_simpleitks_geometry_in_hounsfield_units(tmp_path, ending):
    folder = dicom_series(tmp_path / "ct", HU, ending=ending)
    assert is_series_folder(folder)
    data = read_file(folder)
    image, _ = _sitk_series(folder)
    assert data.array.shape == (16, 16, 4) and data.array.min() < 0  # the intercept -1024 applied
    np.testing.assert_array_equal(data.array, np.moveaxis(HU, (0, 1, 2), (2, 1, 0)))
    np.testing.assert_allclose(data.affine, itk_affine(image.GetSpacing(), image.GetOrigin(), image.GetDirection()))
    spacing, origin, direction = itk_geometry(data.affine, 3)
    np.testing.assert_allclose(spacing, (0.7, 0.7, 2.5), atol=1e-6)
    np.testing.assert_allclose(origin, (10.0, -20.0, 30.0), atol=1e-6)
    np.testing.assert_allclose(np.reshape(direction, (3, 3)), oblique(), atol=1e-6)
    assert series_info(folder).shape == data.array.shape  # the headers alone agree with the pixels


def test_a_series_folder_is_one_volume_and_a_folder_of_series_one_case_each(tmp_path):
    dicom_series(tmp_path / "data" / "1.2.840.5", HU)  # a dotted name is kept whole
    dicom_series(tmp_path / "data" / "b", HU[:3], uid="1.2.826.0.1.3680043.8.498.13")
    reader = open_dataset(tmp_path / "data" / "1.2.840.5")
    assert [e.case_id for e in reader.entries] == [f"1.2.840.5_z{z:04d}" for z in range(4)]
    case = reader[2]
    assert case.geometry.format == "dcm" and case.geometry.volume_shape == (16, 16, 4)
    assert case.geometry.volume_id == "1.2.840.5" and case.geometry.slice_axis == 2
    reader.set_intensity((-1000.0, 1000.0))  # data.ct_window on the Hounsfield units
    np.testing.assert_allclose(reader[2].image[0].numpy(), (HU[2].T + 1000.0) / 2000.0, atol=1e-6)
    both = open_dataset(tmp_path / "data")
    assert both.layout == "images" and sorted({e.volume_id for e in both.entries}) == ["1.2.840.5", "b"]
    assert len(both) == 7


def test_a_paired_dataset_of_series_and_nifti_labels(tmp_path):
    folder = dicom_series(tmp_path / "images" / "ct", HU)
    labels = (np.moveaxis(HU, (0, 1, 2), (2, 1, 0)) > 0).astype(np.uint8)
    (tmp_path / "masks").mkdir()
    nib.save(nib.Nifti1Image(labels, read_file(folder).affine), tmp_path / "masks" / "ct.nii.gz")
    reader = open_dataset(tmp_path)
    assert reader.layout == "paired" and len(reader) == 4 and not reader.problems
    np.testing.assert_array_equal(reader[1].masks[0].numpy(), labels[:, :, 1])


def test_a_changed_series_is_read_again(tmp_path):
    folder = dicom_series(tmp_path / "ct", HU)
    assert series_info(folder).shape == (16, 16, 4)
    (folder / "IM0001").unlink()  # a slice lost after the first look
    with pytest.raises(UserError, match=r"ct: slices unevenly spaced .* between IM0000 and IM0002"):
        series_info(folder)


def test_what_is_a_series_folder(tmp_path):
    png(tmp_path / "pngs" / "a.png", np.zeros((4, 4), np.uint8))
    (tmp_path / "named" / "x.dcm").parent.mkdir()
    (tmp_path / "named" / "x.dcm").write_bytes(b"not DICOM")  # named so: read, and refused as no series
    assert not is_series_folder(tmp_path / "pngs") and is_series_folder(tmp_path / "named")
    assert not is_series_folder(tmp_path / "pngs" / "a.png") and not is_series_folder(tmp_path)


def test_a_subfolder_is_never_a_slice_and_the_files_hashed_are_the_files_read(tmp_path):
    (tmp_path / "only" / "x.dcm").mkdir(parents=True)  # a folder named like a slice
    assert not is_series_folder(tmp_path / "only")
    folder = dicom_series(tmp_path / "ct", HU)
    (folder / "y.dcm").mkdir()
    (folder / ".hidden").write_bytes(b"not DICOM")
    read = sorted(os.path.basename(f) for f in series_info(folder).files)
    assert [p.name for p in input_files(folder)] == read == [f"IM{z:04d}" for z in range(4)]
    if hasattr(os, "mkfifo"):  # a pipe among the slices: refused, and never hashed (it would block)
        os.mkfifo(folder / "IM0004")
        with pytest.raises(UserError, match=r"ct: IM0004 is not a regular file"):
            series_info(folder)
        assert [p.name for p in input_files(folder)] == read


def _written(tmp_path, array, role, spacing=(0.7, 0.8, 2.5)):
    source = dicom_series(tmp_path / "ct", HU, spacing=spacing)
    affine = read_file(source).affine
    out = tmp_path / role
    out.mkdir()
    write_dicom(out, array, affine, str(source), role)
    return source, out


def test_a_written_series_keeps_the_geometry_and_the_patient_and_study(tmp_path):
    labels = (np.arange(16 * 16 * 4).reshape(16, 16, 4) % 301).astype(np.uint16)  # label values above 255
    encoding = locale.getpreferredencoding(False)
    source, out = _written(tmp_path, labels, "mask")
    assert locale.getpreferredencoding(False) == encoding  # GDCM's writer sets the C locale: put back
    before, source_reader = _sitk_series(source)
    after, reader = _sitk_series(out)
    assert sorted(p.name for p in out.iterdir()) == ["0000.dcm", "0001.dcm", "0002.dcm", "0003.dcm"]
    for got, want in ((after.GetOrigin(), before.GetOrigin()), (after.GetSpacing(), before.GetSpacing())):
        np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(after.GetDirection(), before.GetDirection(), atol=1e-6)
    np.testing.assert_allclose(after.GetSpacing(), (0.7, 0.8, 2.5), atol=1e-6)  # X then Y: PixelSpacing's order
    np.testing.assert_array_equal(read_file(out).array, labels)
    for key in COPIED_TAGS:  # PatientName, PatientID, StudyInstanceUID, StudyDate, FrameOfReferenceUID, ...
        if source_reader.HasMetaDataKey(0, key):
            assert _tag(reader, key) == _tag(source_reader, key), key
    assert set(CT_TAGS) - {"0008|0060"} <= set(COPIED_TAGS)
    assert _tag(reader, "0008|0060") == "OT" and _tag(reader, "0008|103e") == "diffuseg mask"
    series = _tag(reader, "0020|000e")
    assert UID.match(series) and series != _tag(source_reader, "0020|000e")
    sops = {_tag(reader, "0008|0018", k) for k in range(4)}
    assert len(sops) == 4 and all(UID.match(s) for s in sops)
    for k in range(4):  # each slice where the input's slice lies
        position = [float(v) for v in _tag(reader, "0020|0032", k).split("\\")]
        np.testing.assert_allclose(position, before.TransformIndexToPhysicalPoint((0, 0, k)), atol=1e-6)
        assert float(_tag(reader, "0018|0050", k)) == 2.5
    assert [float(v) for v in _tag(reader, "0028|0030").split("\\")] == [0.8, 0.7]  # row spacing (Y), column (X)
    again = tmp_path / "again"
    again.mkdir()
    write_dicom(again, labels, read_file(source).affine, str(source), "mask")
    assert _tag(_sitk_series(again)[1], "0020|000e") == series  # the same write, the same UIDs


def test_an_uncertainty_series_stores_thousandths_with_a_rescale_slope(tmp_path):
    u = np.random.default_rng(1).random((16, 16, 4)).astype(np.float32)
    u[0, 0, 0], u[1, 0, 0] = 0.0, 1.0
    _, out = _written(tmp_path, u, "uncertainty")
    _, reader = _sitk_series(out)
    assert float(_tag(reader, "0028|1053")) == UNCERTAINTY_SLOPE and _tag(reader, "0028|0100") == "16"
    assert _tag(reader, "0008|103e") == "diffuseg uncertainty"
    back = read_file(out).array
    assert back.dtype.kind == "f" and np.abs(back - u).max() <= UNCERTAINTY_SLOPE / 2 + 1e-6
    assert back.min() == 0.0 and back.max() == pytest.approx(1.0)


def test_without_simpleitk_one_error_names_the_extra(tmp_path, monkeypatch):
    folder = dicom_series(tmp_path / "ct", HU)
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # import fails as when it is not installed
    with pytest.raises(UserError, match=r"ct: DICOM series are read and written through SimpleITK.*diffuseg\[itk\]"):
        read_file(folder)
