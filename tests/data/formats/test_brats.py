"""The BraTS layout: 3D volumes, sub-regions by ``foreground``, all labels by declared regions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datafixtures import nifti, shared

from diffuseg.data.formats import open_dataset
from diffuseg.data.formats.brats import BRATS_REGIONS


def test_brats_3d_volumes_and_subregions(tmp_path):
    case_dir = tmp_path / "BraTS2021_00001"
    rng = np.random.default_rng(1)
    for m in ("flair", "t1", "t1ce", "t2"):
        nifti(case_dir / f"BraTS2021_00001_{m}.nii.gz", rng.random((8, 8, 3)).astype(np.float32))
    seg = np.zeros((8, 8, 3), np.uint8)
    seg[1, 1, :], seg[2, 2, :], seg[3, 3, :] = 1, 2, 4
    nifti(case_dir / "BraTS2021_00001_seg.nii.gz", seg)
    whole = open_dataset(tmp_path)
    assert whole.layout == "brats" and len(whole) == 3
    assert whole[0].image.shape == (4, 8, 8) and int(whole[0].masks.sum()) == 3
    core = open_dataset(tmp_path, foreground=(1, 4))
    assert int(core[0].masks.sum()) == 2
    assert core[0].patient_id == "BraTS2021_00001"


@pytest.mark.realdata
def test_real_brats_sample():
    reader = open_dataset(shared("brats_sample"))
    assert reader.layout == "brats" and len(reader) == 8
    labelled = [reader[i] for i in range(len(reader)) if reader.entries[i].masks]
    assert len(labelled) == 6
    case = labelled[0]
    assert case.image.shape == (4, 240, 240) and case.masks.shape == (1, 240, 240)
    assert case.geometry.affine is not None and case.masks.sum() > 0


@pytest.mark.realdata
def test_brats_all_labels_with_declared_regions():
    root = shared("brats_sample")
    reader = open_dataset(root, classes=BRATS_REGIONS)
    labelled = [i for i, e in enumerate(reader.entries) if e.masks]
    case = reader[labelled[0]]
    import nibabel as nib

    seg = np.asarray(nib.load(case.geometry.mask_sources[0][0]).dataobj)
    seg = seg[:, :, 0] if seg.ndim == 3 else seg
    assert torch.equal(reader.scheme.to_values(case.masks[0]), torch.from_numpy(seg.astype(np.int64)))
    assert open_dataset(root).scheme.binary  # BraTS without classes: the whole tumour
