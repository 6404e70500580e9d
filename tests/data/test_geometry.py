"""``data.resize: pad`` (aspect ratio kept, predictions un-padded), ``data.ct_window`` (a fixed HU window) and
``data.normalize: ct`` (nnU-Net's CT normalisation with the training foreground's statistics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from datafixtures import nifti

from diffuseg.config import DataConfig
from diffuseg.data.cache import cache_key
from diffuseg.data.dataset import build_datasets
from diffuseg.data.formats import open_dataset
from diffuseg.data.formats.files import ct_intensity, window_intensity
from diffuseg.data.intensity import ct_statistics
from diffuseg.data.transforms import Fit, model_input, pad_box, resize_pair, unpad
from diffuseg.enums import Normalize, Resize
from diffuseg.errors import UserError
from diffuseg.presets import load_config


def test_pad_box_keeps_the_aspect_ratio_and_centres():
    assert pad_box(30, 60, 16) == (4, 0, 8, 16)  # 2:1 -> 8 x 16, 4 rows of padding above and below
    assert pad_box(60, 30, 16) == (0, 4, 16, 8)
    assert pad_box(20, 20, 16) == (0, 0, 16, 16)
    assert pad_box(17, 64, 16) == (6, 0, 4, 16)  # round(4.25) = 4 rows, the odd padding row below


def test_pad_then_unpad_gives_the_original_geometry_and_a_rectangle_keeps_its_shape():
    image = torch.zeros(1, 60, 120)
    mask = torch.zeros(1, 60, 120, dtype=torch.uint8)
    mask[0, 15:45, 30:90] = 1  # a 30 x 60 rectangle: aspect 1:2, on the 15-pixel grid of the 2/15 scale
    image[mask.bool()] = 1.0
    img, msk = resize_pair(image, mask, 16, fit=Fit(Resize.PAD))
    assert img.shape == (1, 16, 16) and msk.shape == (1, 16, 16)
    assert img[:, :4].abs().max() == 0 and img[:, 12:].abs().max() == 0  # zero padding above and below
    assert msk[:, :4].max() == 0 and msk[:, 12:].max() == 0  # background padding
    rows, cols = msk[0].nonzero().unbind(1)
    height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
    assert (height, width) == (4, 8)  # 1:2 kept (stretch makes it 8 x 8)
    _, stretched = resize_pair(image, mask, 16)
    r, c = stretched[0].nonzero().unbind(1)
    assert (int(r.max() - r.min() + 1), int(c.max() - c.min() + 1)) == (8, 8)
    inner = unpad(msk.float(), (60, 120), Fit(Resize.PAD))
    assert inner.shape == (1, 8, 16)
    back = torch.nn.functional.interpolate(inner[None], size=(60, 120), mode="bilinear")[0] >= 0.5
    assert back.shape == mask.shape
    r, c = back[0].nonzero().unbind(1)
    box = (int(r.min()), int(r.max()) + 1, int(c.min()), int(c.max()) + 1)
    assert np.allclose(box, (15, 45, 30, 90), atol=1)  # the rectangle comes back in place, to a pixel
    assert torch.equal(unpad(msk, (60, 120), Fit(Resize.STRETCH)), msk)


def test_pad_keeps_atom_maps_and_the_model_input_matches_training():
    masks = torch.zeros(2, 20, 40, dtype=torch.uint8)
    masks[:, 5:15, 10:20] = 2
    masks[:, 5:15, 20:30] = 1
    _, out = resize_pair(torch.zeros(1, 20, 40), masks, 16, atoms=2, fit=Fit(Resize.PAD))
    assert set(out.unique().tolist()) == {0, 1, 2} and out[:, :4].max() == 0
    image = torch.rand(3, 20, 40, generator=torch.Generator().manual_seed(0))
    padded, _ = resize_pair(image, masks, 16, fit=Fit(Resize.PAD))
    assert torch.allclose(model_input(image, 16, 3, fit=Fit(Resize.PAD)), padded)


def test_window_clips_and_scales_hounsfield_units():
    hu = np.array([-2000.0, -1000.0, -300.0, 400.0, 3000.0, np.nan])
    assert window_intensity(hu, (-1000.0, 400.0)).tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0, 1000 / 1400])


def test_ct_window_replaces_the_per_file_percentiles(tmp_path):
    root = tmp_path / "ct"
    rng = np.random.default_rng(0)
    for i, scale in enumerate((1.0, 3.0)):  # a second scan of another contrast: percentiles would hide it
        hu = (rng.uniform(-1000, 400, (8, 8, 2)) * scale).astype(np.int16)
        nifti(root / "images" / f"c{i}.nii.gz", hu)
        nifti(root / "masks" / f"c{i}.nii.gz", (hu > 0).astype(np.uint8))
    reader = open_dataset(root, "paired")
    before = reader[0].image
    reader.set_intensity((-1000.0, 400.0))
    key = cache_key(reader, range(len(reader)), 16, 1)
    case = reader[0]
    raw = np.asarray(__import__("nibabel").load(root / "images" / "c0.nii.gz").dataobj)
    plane = np.take(raw, int(reader.entries[0].slice_index), axis=2)
    expected = window_intensity(plane, (-1000.0, 400.0))
    assert np.allclose(case.image[0].numpy(), expected, atol=1e-6)
    assert not torch.allclose(before, case.image)
    assert reader.subset([1])[0].image.max() <= 1.0 and reader.subset([1]).intensity == (-1000.0, 400.0)
    reader.set_intensity(())
    assert key != cache_key(reader, range(len(reader)), 16, 1)  # the window builds its own cache
    assert cache_key(reader, range(len(reader)), 16, 1, fit=Fit(Resize.PAD)) != cache_key(
        reader, range(len(reader)), 16, 1
    )


def test_the_defaults_are_todays_behaviour_and_bad_windows_are_refused():
    assert DataConfig().resize == Resize.STRETCH and DataConfig().ct_window == ()
    config = load_config("lidc-central", ["data.resize=pad", "data.ct_window=[-1000, 400]"])
    assert config.data.resize == Resize.PAD and config.data.intensity == (-1000.0, 400.0)
    for bad in ("[400, -1000]", "[1]"):
        with pytest.raises(UserError, match="ct_window"):
            load_config("lidc-central", [f"data.ct_window={bad}"])


def _ct_volumes(root, n: int = 3):
    """``n`` CT volumes (8,8,4) in HU: air -1000 around a foreground block of 0..99 HU (label 1)."""
    for i in range(n):
        hu = np.full((8, 8, 4), -1000, np.int16)
        hu[2:6, 2:6, :] = (np.arange(64).reshape(4, 4, 4) + 36 * i).astype(np.int16)  # case i: 36 i .. 36 i + 63
        nifti(root / "images" / f"c{i}.nii.gz", hu)
        nifti(root / "masks" / f"c{i}.nii.gz", (hu > -1000).astype(np.uint8))
    return root


def test_ct_statistics_are_the_training_foregrounds_percentiles_mean_and_std(tmp_path):
    reader = open_dataset(_ct_volumes(tmp_path / "ct"), "paired")
    train = [i for i, e in enumerate(reader.entries) if e.volume_id in ("c0", "c1")]  # every slice of 2 cases
    low, high, mean, std = ct_statistics(reader, train, samples=200_000)
    foreground = np.concatenate([np.arange(64), np.arange(64) + 36]).astype(float)  # c2 left out, air left out
    assert low == pytest.approx(np.percentile(foreground, 0.5), abs=1.0)
    assert high == pytest.approx(np.percentile(foreground, 99.5), abs=1.0)
    assert mean == pytest.approx(foreground.mean(), abs=0.5) and std == pytest.approx(foreground.std(), abs=0.5)
    assert ct_statistics(reader, train, samples=200_000) == (low, high, mean, std)  # seeded draws


def test_ct_normalisation_clips_and_z_scores_with_the_given_statistics(tmp_path):
    hu = np.array([-1000.0, 0.0, 50.0, 100.0, 3000.0])
    assert ct_intensity(hu, (0.0, 100.0, 50.0, 25.0)).tolist() == [-2.0, -2.0, 0.0, 2.0, 2.0]
    config = DataConfig(normalize=Normalize.CT, ct_stats=(0.0, 100.0, 50.0, 25.0), ct_window=())
    assert config.intensity == (0.0, 100.0, 50.0, 25.0) and DataConfig(ct_window=(-1.0, 1.0)).intensity == (-1, 1)
    with pytest.raises(UserError, match="ct_window"):
        load_config("lidc-central", ["data.normalize=ct", "data.ct_window=[-1000, 400]"])


def test_build_datasets_computes_the_statistics_on_the_training_cases_only(tmp_path):
    root = _ct_volumes(tmp_path / "ct", 4)
    cfg = DataConfig(
        root=str(root), layout="paired", image_size=8, normalize=Normalize.CT, val_fraction=0.25, augment=False
    )
    train, val = build_datasets(cfg)
    patients = sorted(set(train.patients))
    reader = open_dataset(root, "paired")
    ours = ct_statistics(reader, [i for i, e in enumerate(reader.entries) if e.patient_id in patients])
    assert train.ct_stats == pytest.approx(ours) and val.ct_stats == train.ct_stats
    everything = ct_statistics(reader, range(len(reader)))
    assert train.ct_stats != pytest.approx(everything)  # the validation case is not looked at
    low, _, mean, std = train.ct_stats
    item = train[0]["image"]
    assert float(item.min()) == pytest.approx((low - mean) / std, abs=1e-2)  # air clipped to low, then z-scored
