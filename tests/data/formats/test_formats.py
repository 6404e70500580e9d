"""``open_dataset`` and ``images_from_files``: layouts by name, single files for prediction."""

from __future__ import annotations

import pytest
from datafixtures import grey, paired, png

from diffuseg.data.formats import images_from_files, open_dataset
from diffuseg.errors import UserError


def test_images_from_files_are_unlabelled(tmp_path):
    files = [png(tmp_path / "a.png", grey(8)), png(tmp_path / "b.png", grey(8, 1))]
    reader = images_from_files(files)
    assert len(reader) == 2 and reader[0].masks.shape == (0, 8, 8)
    with pytest.raises(UserError, match="not found"):
        images_from_files([tmp_path / "missing.png"])


def test_unknown_layout_name(tmp_path):
    with pytest.raises(UserError, match="not one of"):
        open_dataset(paired(tmp_path), layout="dicom")


def test_links_that_move_a_whole_case_are_followed(tmp_path):
    from datafixtures import lidc

    store = lidc(tmp_path / "store", patients=2)
    root = tmp_path / "linked" / "LIDC-IDRI-slices"
    root.mkdir(parents=True)
    for patient in (store / "LIDC-IDRI-slices").iterdir():  # a dataset assembled from patient folders elsewhere
        (root / patient.name).symlink_to(patient, target_is_directory=True)
    reader = open_dataset(root)
    assert len(reader) == 4 and all(reader.check(i)[1] == [] for i in range(len(reader)))
    (tmp_path / "whole").symlink_to(store, target_is_directory=True)  # the dataset folder itself a link
    assert len(open_dataset(tmp_path / "whole")) == 4
