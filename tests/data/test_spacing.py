"""``data.resize: spacing``: items resampled to ``data.spacing`` keep their physical shape, map back exactly, and
images without a spacing or too large for the network are refused by name."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datafixtures import nifti
from PIL import Image

from diffuseg.config import config_from_dict, read_yaml, save_config
from diffuseg.data.case import Geometry
from diffuseg.data.dataset import build_datasets
from diffuseg.data.formats import open_dataset
from diffuseg.data.spacing import check_fits, fitting_spacing, round_up
from diffuseg.data.transforms import Fit, resize_pair, unpad
from diffuseg.data.verify import verify_dataset
from diffuseg.enums import Resize
from diffuseg.errors import UserError
from diffuseg.presets import load_config

PIXEL = (0.5, 1.0, 3.0)  # rows 0.5 mm, columns 1 mm, slices 3 mm apart
ONE_MM = Fit(Resize.SPACING, (1.0, 1.0))


def _circle(shape: tuple[int, int], pixel=PIXEL, radius_mm: float = 10.0) -> np.ndarray:
    """A disc of ``radius_mm`` at the centre of an (H,W) grid of ``pixel`` mm, tested at pixel centres."""
    rows = (np.arange(shape[0]) + 0.5) * pixel[0]
    cols = (np.arange(shape[1]) + 0.5) * pixel[1]
    centre = (shape[0] * pixel[0] / 2, shape[1] * pixel[1] / 2)
    return ((rows[:, None] - centre[0]) ** 2 + (cols[None] - centre[1]) ** 2 <= radius_mm**2).astype(np.uint8)


def _volumes(root, shapes, pixel=PIXEL, first: int = 0):
    """Paired NIfTI volumes ``c<first>``, ... (H,W,3) of ``pixel`` mm holding a 10 mm disc on every slice, one per
    shape."""
    affine = np.diag([*pixel, 1.0])
    for i, shape in enumerate(shapes, first):
        mask = np.repeat(_circle(shape, pixel)[..., None], 3, axis=2)
        nifti(root / "images" / f"c{i}.nii.gz", (mask * 200 + 20).astype(np.int16), affine)
        nifti(root / "masks" / f"c{i}.nii.gz", mask, affine)
    return root


def _extent(mask: torch.Tensor) -> tuple[int, int]:
    rows, cols = mask.nonzero().unbind(1)
    return int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


def test_a_disc_of_anisotropic_pixels_is_a_disc_at_the_target_spacing(tmp_path):
    reader = open_dataset(_volumes(tmp_path / "d", [(80, 32)]), "paired")  # 40 x 32 mm
    case = reader[0]
    assert case.geometry.plane_spacing() == (0.5, 1.0) and _extent(case.masks[0]) == (40, 20)  # an ellipse in pixels
    assert ONE_MM.box(80, 32, 40, case.geometry) == (0, 4, 40, 32)  # 40 x 32 mm at 1 mm, 4 columns padded each side
    image, mask = resize_pair(case.image, case.masks, 40, fit=ONE_MM, geometry=case.geometry)
    assert image.shape == (1, 40, 40) and mask.shape == (1, 40, 40)
    assert _extent(mask[0]) == (20, 20)  # 10 mm radius at 1 mm: a disc
    assert abs(int(mask.sum()) - np.pi * 100) < 0.05 * np.pi * 100
    disc = mask[0].bool()
    assert (disc & disc.T).sum() / (disc | disc.T).sum() > 0.95  # centred at (20, 20): its own transpose
    _, padded = resize_pair(case.image, case.masks, 40, fit=Fit(Resize.PAD), geometry=case.geometry)
    assert _extent(padded[0]) == (20, 10)  # pad keeps the pixel grid's aspect: still an ellipse


def test_a_mask_at_the_target_spacing_maps_back_and_forth_unchanged():
    geometry = Geometry(size=(64, 32), format="nii.gz", sources=("x.nii.gz",), spacing=PIXEL)
    assert ONE_MM.box(64, 32, 40, geometry) == (4, 4, 32, 32)
    model = torch.zeros(1, 40, 40)
    model[0, 10:21, 8:30] = 1  # a rectangle inside the 32 x 32 part
    model[0, 25:33, 12:16] = 2  # and a second class
    for atoms, mask in ((1, (model > 0).float()), (2, model)):
        inner = unpad(mask, (64, 32), ONE_MM, geometry)
        assert inner.shape == (1, 32, 32)
        one_hot = F.one_hot(inner[0].long(), atoms + 1).movedim(-1, 0).float()[None]
        back = F.interpolate(one_hot, size=(64, 32), mode="bilinear", align_corners=False)[0].argmax(0)  # writers'
        assert back.shape == (64, 32)
        _, again = resize_pair(torch.zeros(1, 64, 32), back[None].to(torch.uint8), 40, atoms, ONE_MM, geometry)
        assert torch.equal(again.float(), mask)


def test_without_a_spacing_the_option_is_refused_naming_the_file(tmp_path):
    root = tmp_path / "png"
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 12), 255 * (folder == "masks"), np.uint8)).save(root / folder / f"c{i}.png")
    cfg = config_from_dict({"data": {"root": str(root), "layout": "paired", "image_size": 16, "resize": "spacing"}})
    with pytest.raises(
        UserError,
        match=r"c0\.png: data\.resize=spacing needs each image's pixel spacing in mm, and "
        r"it records none; use data\.resize=pad",
    ) as err:
        build_datasets(cfg.data)
    assert "\n" not in str(err.value)
    geometry = Geometry(size=(8, 12), format="nii.gz", sources=("bad.nii.gz",), spacing=(0.0, 1.0))
    with pytest.raises(UserError, match=r"bad\.nii\.gz: .* its header gives 0 x 1 mm"):
        ONE_MM.box(8, 12, 16, geometry)


def test_an_image_too_large_for_the_network_is_refused_not_cropped(tmp_path):
    reader = open_dataset(_volumes(tmp_path / "d", [(80, 32), (80, 32), (12, 8)]), "paired")
    with pytest.raises(UserError) as err:
        check_fits(reader, range(len(reader)), 16, (0.5, 0.5))
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 'd' / 'images' / 'c0.nii.gz'}: 80 x 32 pixels of 0.5 x 1 mm (40 x 32 mm)")
    assert "its 16 x 16 pixels cover 8 x 8 mm; nothing is cropped" in message
    assert "([2.5, 2.5] fits this image)" in message and message.endswith("(and 1 more file(s))")  # c2 (6 x 8 mm) fits
    check_fits(reader, range(len(reader)), 16, (2.5, 2.5))  # the advice fits


def test_the_spacing_left_empty_is_the_finest_that_fits_every_case(tmp_path):
    root = _volumes(tmp_path / "d", [(80, 32), (40, 48), (40, 32), (60, 20)])  # 40 x 32, 20 x 48, 20 x 32, 30 x 20 mm
    reader = open_dataset(root, "paired")
    assert fitting_spacing(reader, range(len(reader)), 16) == (3.0, 3.0)  # 48 mm over 16 px
    assert round_up(1.875) == 1.875 and round_up(2.00001) == 2.001 and round_up(0.1234501) == 0.1235
    cfg = config_from_dict({"data": {"root": str(root), "layout": "paired", "image_size": 16, "resize": "spacing"}})
    train, val = build_datasets(cfg.data)
    assert train.spacing == (3.0, 3.0) == val.spacing
    items = {item["case_id"].split("_")[0]: item["mask"][0] for item in (*train, *val)}
    for case in ("c0", "c1", "c2", "c3"):  # a 20 mm disc at 3 mm per pixel, whatever the case's own pixels
        height, width = _extent(items[case])
        assert min(height, width) >= 6 and max(height, width) <= 7
    assert build_datasets(dataclasses.replace(cfg.data, spacing=(2.5, 3.0)))[0].spacing == (2.5, 3.0)


def test_the_options_travel_with_the_config_and_bad_values_are_refused(tmp_path):
    config = load_config("unet", ["data.resize=spacing", "data.spacing=[0.5, 1]"])
    assert config.data.resize == Resize.SPACING and config.data.spacing == (0.5, 1.0)
    save_config(config, tmp_path / "config.yaml")
    assert config_from_dict(read_yaml(tmp_path / "config.yaml")) == config
    assert Fit.of(config.data) == Fit(Resize.SPACING, (0.5, 1.0))
    for bad in (
        ["data.resize=spacing", "data.spacing=[1]"],
        ["data.resize=spacing", "data.spacing=[0, 1]"],
        ["data.resize=pad", "data.spacing=[1, 1]"],
    ):
        with pytest.raises(UserError, match=r"data\.spacing must be \[row_mm, col_mm\] > 0, with data\.resize=spacing"):
            load_config("unet", bad)


def test_verify_reports_the_in_plane_spacings(tmp_path):
    root = _volumes(tmp_path / "d", [(80, 32), (40, 48)])
    _volumes(root, [(40, 40)], pixel=(0.8, 0.8, 3.0), first=2)
    summary = verify_dataset(root, "paired")
    assert (
        "  in-plane spacing (mm, rows x columns, 3 image(s) or volume(s)): min 0.5 x 0.8, median 0.5 x 1, "
        "max 0.8 x 1; largest extent 40 x 48 mm" in summary
    )
