"""The LIDC-IDRI-slices layout, 4 annotators."""

from __future__ import annotations

import shutil

import pytest
from datafixtures import lidc, shared

from diffuseg.data.formats import open_dataset


def test_lidc_layout(tmp_path):
    reader = open_dataset(lidc(tmp_path))
    assert reader.layout == "lidc" and len(reader) == 4
    case = reader[3]
    assert case.case_id == "LIDC-IDRI-0001_nodule-0_slice-1" and case.patient_id == "LIDC-IDRI-0001"
    assert case.masks.shape == (4, 16, 16)


@pytest.mark.realdata
def test_real_lidc_patients(tmp_path):
    source = shared("lidc") / "LIDC-IDRI-slices"
    for patient in ("LIDC-IDRI-0001", "LIDC-IDRI-0003"):
        shutil.copytree(source / patient, tmp_path / "LIDC-IDRI-slices" / patient)
    reader = open_dataset(tmp_path)
    assert reader.layout == "lidc" and not reader.problems
    case = reader[0]
    assert case.image.shape == (1, 128, 128) and case.masks.shape == (4, 128, 128)
    assert set(reader.patients) == {"LIDC-IDRI-0001", "LIDC-IDRI-0003"}
