"""``formats.files``: the cheap header check passes every good file and every format, and refuses bad ones."""

from __future__ import annotations

import numpy as np
import pytest
from datafixtures import grey, h5, label_map, nifti, png
from PIL import Image

from diffuseg.data.formats.files import check_header, read_file
from diffuseg.errors import UserError


@pytest.mark.parametrize("suffix", ["png", "jpg", "gif", "tif", "bmp"])
def test_good_rasters_pass(tmp_path, suffix):
    path = tmp_path / f"a.{suffix}"
    Image.fromarray(grey(24)).save(path)
    check_header(path)


def test_good_arrays_volumes_and_hdf5_pass(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((8, 8), np.float32))
    check_header(tmp_path / "a.npy")
    for name in ("v.nii", "v.nii.gz"):
        check_header(nifti(tmp_path / name, np.random.default_rng(0).random((8, 8, 3)).astype(np.float32)))
    check_header(h5(tmp_path / "a.h5", np.zeros((8, 8), np.float32), label_map(8)))


def test_a_file_with_bytes_after_its_end_marker_is_decoded_not_refused(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(grey(24)).save(path)
    path.write_bytes(path.read_bytes() + b"camera trailer")
    check_header(path)  # no end marker at the end: decoded, and it decodes
    gz = nifti(tmp_path / "v.nii.gz", np.zeros((8, 8, 2), np.float32))
    gz.write_bytes(gz.read_bytes() + gz.read_bytes())  # two gzip members: still one valid file
    check_header(gz)
    assert read_file(gz).array.shape == (8, 8, 2)


def test_a_16_bit_png_with_a_cut_chunk_is_refused(tmp_path):
    path = png(tmp_path / "a.png", (np.arange(64 * 64).reshape(64, 64) * 7).astype(np.uint16))
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(UserError, match=r"a\.png: unreadable or corrupt"):
        check_header(path)
