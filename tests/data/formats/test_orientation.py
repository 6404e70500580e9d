"""The through-plane axis a volume is cut along, from its affine."""

from __future__ import annotations

import numpy as np
import pytest
from datafixtures import nifti

from diffuseg.data.formats.orientation import through_plane_axis, volume_axis


def _affine(columns: list[list[float]]) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = np.array(columns, dtype=np.float64).T  # one column per array axis
    return out


@pytest.mark.parametrize(
    ("columns", "axis"),
    [
        ([[1, 0, 0], [0, 1, 0], [0, 0, 1]], 2),  # identity: the third axis, as always before
        ([[0.7, 0, 0], [0, 0.7, 0], [0, 0, 2.5]], 2),  # axial slices 2.5 mm apart
        ([[3.0, 0, 0], [0, 0.8, 0], [0, 0, 0.8]], 0),  # thick sagittal slices on the first axis
        ([[0, 0.9, 0], [0, 0, 4.0], [-0.9, 0, 0]], 1),  # coronal slices 4 mm apart on the second axis
        ([[0, 0, 1.0], [1.0, 0, 0], [0, 1.0, 0]], 0),  # isotropic, the first axis runs superior-inferior
        ([[1.0, 0, 0], [0, 1.1, 0], [0, 0, 1.2]], 2),  # nearly isotropic: the axis closest to S-I
    ],
)
def test_through_plane_axis(columns, axis):
    assert through_plane_axis(_affine(columns), (8, 9, 10)) == axis


def test_a_singleton_axis_keeps_the_third(tmp_path):
    assert through_plane_axis(_affine([[3.0, 0, 0], [0, 1, 0], [0, 0, 1]]), (1, 9, 10)) == 2
    path = nifti(tmp_path / "v.nii.gz", np.zeros((4, 6, 6), np.float32), _affine([[3.0, 0, 0], [0, 1, 0], [0, 0, 1]]))
    assert volume_axis(path) == 0 and volume_axis(tmp_path / "missing.nii.gz") == 2
