"""MetaImage and NRRD through SimpleITK: read with their geometry (checked against nibabel reading the same image
as NIfTI), written back in their own format with spacing, origin, direction and metadata; the NIfTI writer keeps
the input's header. Without SimpleITK: one error naming the extra."""

from __future__ import annotations

import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from datafixtures import label_map

from diffuseg.data.formats import open_dataset, open_input
from diffuseg.data.formats.files import read_file
from diffuseg.data.formats.write import write_itk, write_nifti
from diffuseg.errors import UserError

sitk = pytest.importorskip("SimpleITK")

SPACING = (0.7, 0.8, 2.5)
ORIGIN = (10.0, -5.0, 3.0)
DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # a 90-degree turn in plane


def _itk(path, array_zyx: np.ndarray, **meta: str):
    image = sitk.GetImageFromArray(array_zyx)
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(DIRECTION)
    for key, value in meta.items():
        image.SetMetaData(key, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return image


@pytest.mark.parametrize("ext", ["mha", "nrrd"])
def test_geometry_is_that_nibabel_reads_from_the_same_image(tmp_path, ext):
    volume = np.random.default_rng(0).random((3, 12, 10)).astype(np.float32)  # (Z, Y, X)
    image = _itk(tmp_path / f"x.{ext}", volume)
    sitk.WriteImage(image, str(tmp_path / "x.nii.gz"))  # SimpleITK's own conversion to NIfTI
    ours, reference = read_file(tmp_path / f"x.{ext}"), nib.load(tmp_path / "x.nii.gz")
    assert ours.array.shape == reference.shape == (10, 12, 3)
    np.testing.assert_allclose(ours.affine, reference.affine, atol=1e-5)
    np.testing.assert_array_equal(ours.array, np.asarray(reference.dataobj))
    assert np.allclose(ours.spacing, SPACING)


@pytest.mark.parametrize("ext", ["mha", "nrrd"])
def test_a_4d_image_reads_as_a_4d_nifti_its_fourth_axis_channels(tmp_path, ext):
    rng = np.random.default_rng(1)
    frames = [_itk(tmp_path / f"t{k}.{ext}", rng.random((3, 12, 10)).astype(np.float32)) for k in range(2)]
    image = sitk.JoinSeries(frames)  # (T, Z, Y, X): 3D + 2 time points, with each frame's geometry
    sitk.WriteImage(image, str(tmp_path / f"x.{ext}"))
    sitk.WriteImage(image, str(tmp_path / "x.nii.gz"))
    ours, reference = read_file(tmp_path / f"x.{ext}"), nib.load(tmp_path / "x.nii.gz")
    assert ours.array.shape == reference.shape == (10, 12, 3, 2)
    np.testing.assert_allclose(ours.affine, reference.affine, atol=1e-5)
    np.testing.assert_array_equal(ours.array, np.asarray(reference.dataobj))
    assert np.allclose(ours.spacing, SPACING)
    reader = open_input([tmp_path / f"x.{ext}"])  # predict's single file: a volume of 3 items of 2 channels
    assert len(reader) == 3 and reader[1].image.shape == (2, 10, 12)
    assert not torch.equal(reader[1].image[0], reader[1].image[1])


@pytest.mark.parametrize("ext", ["mha", "nrrd"])
def test_a_paired_folder_of_itk_volumes_slices_and_writes_back(tmp_path, ext):
    labels = np.stack([label_map(12, z)[:, :10] for z in range(3)])  # (Z, Y, X)
    _itk(tmp_path / "images" / f"v.{ext}", np.random.default_rng(0).random((3, 12, 10)).astype(np.float32))
    _itk(tmp_path / "masks" / f"v.{ext}", labels, PatientID="anon-7")
    reader = open_dataset(tmp_path)
    assert len(reader) == 3 and reader.scheme.names == ("class_1", "class_2", "class_3")
    case = reader[1]
    assert case.geometry.volume_shape == (10, 12, 3) and case.geometry.format == ext
    assert case.masks[0].numpy().tolist() == labels[1].T.tolist()
    out = tmp_path / f"out.{ext}"
    volume = read_file(tmp_path / "masks" / f"v.{ext}")
    write_itk(out, volume.array.astype(np.uint8), volume.affine, str(tmp_path / "masks" / f"v.{ext}"))
    back = sitk.ReadImage(str(out))
    assert np.allclose(back.GetSpacing(), SPACING) and np.allclose(back.GetOrigin(), ORIGIN)
    assert np.allclose(back.GetDirection(), DIRECTION) and back.GetMetaData("PatientID") == "anon-7"
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), labels)


def test_the_nifti_writer_keeps_the_input_header(tmp_path):
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    affine[:3, 3] = ORIGIN
    source = nib.Nifti1Image(np.random.default_rng(0).random((6, 5, 2)).astype(np.float32), affine)
    header = source.header
    header.set_xyzt_units("mm", "msec")
    header["descrip"] = b"cine MRI, scanner 3"
    header.set_slope_inter(2.0, -1.0)
    source.set_qform(affine, code=1)
    source.set_sform(affine, code=4)
    nib.save(source, tmp_path / "in.nii.gz")
    labels = np.arange(60, dtype=np.uint8).reshape(6, 5, 2) % 4
    write_nifti(tmp_path / "out.nii.gz", labels, affine, str(tmp_path / "in.nii.gz"))
    before, after = nib.load(tmp_path / "in.nii.gz").header, nib.load(tmp_path / "out.nii.gz")
    for field in ("qform_code", "sform_code", "xyzt_units", "descrip", "pixdim", "quatern_b", "srow_x"):
        np.testing.assert_array_equal(after.header[field], before[field])
    assert after.get_data_dtype() == np.uint8 and np.array_equal(np.asarray(after.dataobj), labels)  # not scaled
    write_nifti(tmp_path / "plain.nii.gz", labels, affine)  # no source: a header of its own
    assert nib.load(tmp_path / "plain.nii.gz").header.get_xyzt_units() == ("unknown", "unknown")


def test_without_simpleitk_one_error_names_the_extra(tmp_path, monkeypatch):
    _itk(tmp_path / "x.mha", np.zeros((2, 4, 4), np.float32))
    monkeypatch.setitem(sys.modules, "SimpleITK", None)  # import fails as when it is not installed
    with pytest.raises(UserError, match=r"x.mha: .mha files are read and written through SimpleITK.*diffuseg\[itk\]"):
        read_file(tmp_path / "x.mha")


def test_a_full_disk_while_writing_itk_is_enospc_and_disk_full_through_atomic_path(tmp_path, monkeypatch):
    import errno
    import shutil
    from collections import namedtuple

    from diffuseg.files import atomic_path

    def refuse(self, image):
        raise RuntimeError("ITK ERROR: Could not write file")

    monkeypatch.setattr(sitk.ImageFileWriter, "Execute", refuse)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 100, 100))
    array = np.zeros((8, 8, 4), np.uint8)  # 256 bytes, more than the 100 left
    with pytest.raises(OSError) as err:
        write_itk(tmp_path / "x.mha", array, np.eye(4))
    assert err.value.errno == errno.ENOSPC
    with (
        pytest.raises(UserError, match=r"no space left on device writing .*y\.nrrd"),
        atomic_path(tmp_path / "y.nrrd") as tmp,
    ):
        write_itk(tmp, array, np.eye(4), ext="nrrd")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # the temporary is gone
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 0, 10**9))
    with pytest.raises(RuntimeError, match="Could not write"):  # room left: ITK's own error stands
        write_itk(tmp_path / "x.mha", array, np.eye(4))
